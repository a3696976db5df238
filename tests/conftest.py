"""Shared fixtures: the bundled real data (never ../shared) and the golden reference outputs."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
GOLDEN = DATA / "golden"
COCO_VAL_GT = DATA / "coco_mini" / "annotations" / "instances_val2017.json"
COCO_TRAIN_GT = DATA / "coco_mini" / "annotations" / "instances_train2017.json"
LVIS_RAW = DATA / "lvis" / "lvis_val_100.json"
LVIS_MAPPING = DATA / "lvis" / "coco_to_synset.json"
LVIS_COCOFIED = GOLDEN / "lvis_val_100_cocofied.json"
PREDS_A = GOLDEN / "preds_A.json"
PREDS_A_LVIS = GOLDEN / "preds_A_lvis.json"


def _load(p: Path):
    with open(p) as f:
        return json.load(f)


@pytest.fixture(scope="session")
def golden() -> dict:
    return _load(GOLDEN / "golden_A.json")


@pytest.fixture(scope="session")
def _coco_gt():
    return _load(COCO_VAL_GT)


@pytest.fixture
def coco_gt(_coco_gt):
    """A fresh deep copy of the bundled COCO val ground truth (tests may mutate it)."""
    return copy.deepcopy(_coco_gt)


@pytest.fixture(scope="session")
def _lvis_gt():
    return _load(LVIS_COCOFIED)


@pytest.fixture
def lvis_gt(_lvis_gt):
    return copy.deepcopy(_lvis_gt)


@pytest.fixture(scope="session")
def _preds_a():
    return _load(PREDS_A)


@pytest.fixture
def preds_a(_preds_a):
    return copy.deepcopy(_preds_a)


@pytest.fixture(scope="session")
def _preds_a_lvis():
    return _load(PREDS_A_LVIS)


@pytest.fixture
def preds_a_lvis(_preds_a_lvis):
    return copy.deepcopy(_preds_a_lvis)

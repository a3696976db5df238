"""Shared fixtures: the bundled real data (never ../shared) and the golden reference outputs.

Paths and helper functions live in ``tests/helpers.py``."""

from __future__ import annotations

import copy

import pytest

import baselines  # noqa: F401  (registers the PointRend and HTC presets and builders, as the rmbench CLI does)
from tests.helpers import COCO_VAL_GT, GOLDEN, LVIS_COCOFIED, PREDS_A, PREDS_A_LVIS, _load


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

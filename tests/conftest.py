"""Shared fixtures: the bundled real data (never ../shared) and the golden reference outputs."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

import baselines  # noqa: F401  (registers the PointRend and HTC presets and builders, as the rmbench CLI does)

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


def load_coco_sample(split: str, img_id: int, min_area: float = 0.0, max_anns: int | None = None):
    """One real bundled image as a model input plus its training target (non-crowd annotations).

    Returns:
        (image uint8 tensor (3, H, W) RGB in [0, 255], target dict with ``boxes`` (G, 4) x1y1x2y2 pixels,
        ``labels`` (G,) contiguous 0..79, ``masks`` (G, H, W) uint8).
    """
    import contextlib
    import io

    import numpy as np
    import torch
    from PIL import Image
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(DATA / "coco_mini" / "annotations" / f"instances_{split}2017.json"))
    info = coco.loadImgs(img_id)[0]
    img = torch.from_numpy(np.array(Image.open(DATA / "coco_mini" / f"{split}2017" / info["file_name"]).convert("RGB")))
    cat_to_label = {c: i for i, c in enumerate(sorted(coco.getCatIds()))}
    anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=img_id, iscrowd=False)) if a["area"] > min_area]
    anns = anns[:max_anns] if max_anns is not None else anns
    target = {
        "boxes": torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                               for a in anns], dtype=torch.float32),
        "labels": torch.tensor([cat_to_label[a["category_id"]] for a in anns]),
        "masks": torch.from_numpy(np.stack([coco.annToMask(a) for a in anns])),
    }
    return img.permute(2, 0, 1), target

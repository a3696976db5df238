"""Helpers shared by the tests: the bundled data's paths (never ../shared), a loader for one real training
sample, and the mmdetection parity tests' matching and comparison functions."""

from __future__ import annotations

import json
from pathlib import Path

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



def mmdet_meta(batch):
    """An mmdet ``DetDataSample`` describing our preprocessed ``ImageBatch`` (sizes in pixels, (h, w) order)."""
    from mmdet.structures import DetDataSample

    (h, w), (h0, w0), (sx, sy) = batch.image_sizes[0], batch.original_sizes[0], batch.scale_factors[0]
    hp, wp = batch.tensors.shape[-2:]
    return DetDataSample(metainfo=dict(img_id=0, img_shape=(h, w), ori_shape=(h0, w0), scale_factor=(sx, sy),
                                       batch_input_shape=(hp, wp), pad_shape=(hp, wp)))


def linf(a, b) -> float:
    """Max absolute difference of two tensors (0 for empty ones)."""
    return float((a - b).abs().max()) if a.numel() else 0.0


def mask_iou(a, b) -> float:
    """IoU of two boolean masks (1.0 when both are empty)."""
    inter = (a & b).sum().item()
    union = (a | b).sum().item()
    return 1.0 if union == 0 else inter / union


def match_detections(mm_res, ours_res):
    """Greedy: each mmdet detection (score order) → the unused detection of ours with the same label and the
    smallest box L∞. Returns [(i_mm, i_ours, box_linf, dscore)]."""
    used = set()
    pairs = []
    for i in range(len(mm_res["scores"])):
        best, best_d = None, float("inf")
        for j in range(len(ours_res["scores"])):
            if j in used or int(ours_res["labels"][j]) != int(mm_res["labels"][i]):
                continue
            d = linf(ours_res["boxes"][j], mm_res["boxes"][i])
            if d < best_d:
                best, best_d = j, d
        if best is not None:
            used.add(best)
            pairs.append((i, best, best_d, abs(float(ours_res["scores"][best]) - float(mm_res["scores"][i]))))
    return pairs

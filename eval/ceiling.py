"""Mask-resolution ceiling: how good can a mask head of output size S×S be, with no training at all?

Each ground-truth mask is resampled to S×S inside its box, as a mask head's target is made, and pasted back
at image resolution, as every model's output is; the pasted masks, scored 1.0, are then evaluated against the
original ground truth. Whatever is lost is lost to the output resolution alone: this is the upper bound a
mask head of that size faces, the trend of the paper's Table 3 (RefineMask's stages 28 → 224) without
training (paper Sec. 4.3, Table 3; Sec. 1: "RoIAlign ... loses details").

Resampling (documented choice, pure OpenCV so the evaluator never needs torch):
1. box = the tight pixel box of the GT mask (what a perfect detector would return; the json ``bbox`` is not
   used because a few real LVIS v0.5 annotations, e.g. ids 184-187 and 215 of the bundled cocofied file, carry
   a ``bbox`` that does not enclose their mask), widened to whole pixels: x0 = floor(x), y0 = floor(y),
   x1 = ceil(x + w), y1 = ceil(y + h), clipped to the image (the Table 12 golden crop rule);
2. target = ``cv2.resize(crop, (S, S), INTER_AREA) >= 0.5`` when shrinking (area averaging ≈ RoIAlign with
   adaptive sampling, then the 0.5 binarisation of mmdetection's ``mask_target``), ``INTER_LINEAR`` when
   enlarging;
3. paste = ``cv2.resize(target, (x1 - x0, y1 - y0), INTER_LINEAR) >= 0.5`` written into the box (bilinear
   paste + the shared 0.5 threshold, as ``grid_sample`` pasting does).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable

import cv2
import numpy as np
from tqdm.auto import tqdm

from .masks import ann_to_mask, mask_to_rle

log = logging.getLogger(__name__)

DEFAULT_SIZES = (14, 28, 56, 112, 224)


def box_window(bbox, height: int, width: int) -> tuple[int, int, int, int]:
    """Whole-pixel window (x0, y0, x1, y1) covering a float COCO box (x, y, w, h), clipped to the image."""
    x, y, w, h = bbox
    x0, y0 = max(int(math.floor(x)), 0), max(int(math.floor(y)), 0)
    x1, y1 = min(int(math.ceil(x + w)), width), min(int(math.ceil(y + h)), height)
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)


def resample_mask(mask: np.ndarray, bbox, size: int) -> np.ndarray:
    """Resample a full-image binary mask (H, W) to ``size``×``size`` inside ``bbox`` and paste it back.

    Args:
        mask: (H, W) binary array.
        bbox: COCO box (x, y, w, h) in pixels.
        size: S, the mask-head output side in pixels.

    Returns:
        (H, W) ``uint8`` binary mask: what a perfect S×S mask head would produce after pasting.
    """
    h_img, w_img = mask.shape
    x0, y0, x1, y1 = box_window(bbox, h_img, w_img)
    crop = mask[y0:y1, x0:x1].astype(np.float32)
    bw, bh = x1 - x0, y1 - y0
    interp = cv2.INTER_AREA if (bw >= size and bh >= size) else cv2.INTER_LINEAR
    target = (cv2.resize(crop, (size, size), interpolation=interp) >= 0.5).astype(np.float32)
    pasted = cv2.resize(target, (bw, bh), interpolation=cv2.INTER_LINEAR) >= 0.5
    out = np.zeros_like(mask, dtype=np.uint8)
    out[y0:y1, x0:x1] = pasted.reshape(bh, bw)
    return out


def resampled_results(gt: dict, size: int, progress: bool = False) -> list[dict]:
    """COCO results made of every non-crowd GT mask resampled at ``size`` inside its tight box (score 1.0)."""
    images = {im["id"]: im for im in gt["images"]}
    out = []
    anns = [a for a in gt["annotations"] if not a.get("iscrowd", 0)]
    for a in tqdm(anns, desc=f"resample S={size}", disable=not progress, leave=False):
        im = images[a["image_id"]]
        m = ann_to_mask(a, im["height"], im["width"])
        bbox = _mask_bbox(m)
        out.append({"image_id": a["image_id"], "category_id": a["category_id"], "score": 1.0,
                    "segmentation": mask_to_rle(resample_mask(m, bbox, size))})
    return out


def _mask_bbox(m: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(m)
    if xs.size == 0:
        return [0.0, 0.0, 1.0, 1.0]
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


def mask_resolution_ceiling(gt: dict | None, lvis_gt: dict | None = None, sizes: Iterable[int] = DEFAULT_SIZES,
                            tolerances: tuple[int, ...] = (1, 3), progress: bool = True) -> list[dict]:
    """Score GT masks resampled at each S against the original GT.

    Args:
        gt: validated COCO ground truth (AP and F_npx) or None.
        lvis_gt: validated cocofied LVIS ground truth (AP*) or None.
        sizes: mask-head output sides S.
        tolerances: F_npx radii in pixels.
        progress: show a tqdm bar.

    Returns:
        One row per S: ``{"S", "AP", "AP*", "F1px", "F3px", "num_gt"}`` (fractions; keys absent when the GT that
        defines them is not given).
    """
    from .boundary_f import boundary_f
    from .coco import coco_mask_ap
    from .lvis_ap import lvis_ap

    rows = []
    for s in tqdm(list(sizes), desc="mask-resolution ceiling", disable=not progress):
        row: dict = {"S": int(s)}
        if gt is not None:
            res = resampled_results(gt, s)
            row["AP"] = coco_mask_ap(gt, res)["summary"]["AP"]
            bf = boundary_f(gt, res, tolerances=tolerances)
            for n in tolerances:
                row[f"F{n}px"] = bf[f"F{n}px"]
            row["num_gt"] = bf["num_gt"]
        if lvis_gt is not None:
            row["AP*"] = lvis_ap(lvis_gt, resampled_results(lvis_gt, s))["summary"]["AP"]
        log.info("ceiling S=%d: %s", s, row)
        rows.append(row)
    return rows

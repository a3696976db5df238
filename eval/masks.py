"""Mask conversions shared by every metric: COCO polygons / RLE -> pycocotools RLE -> binary arrays.

All rasterisation goes through pycocotools' mask API (``frPyObjects`` + ``merge``), so our masks are
bit-identical to the ones COCOeval, LVISEval and boundary-iou-api see (docs/evaluation.md §1 "Polygon -> mask").
Masks are full-image ``uint8`` arrays of shape (H, W) with values in {0, 1}; sizes are in pixels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from .errors import UsageError


def segm_to_rle(segm: Any, height: int, width: int) -> dict:
    """Convert a COCO ``segmentation`` (polygon list, uncompressed or compressed RLE) to compressed RLE.

    Args:
        segm: a list of polygons ``[[x0, y0, x1, y1, ...], ...]`` in pixels, or an RLE dict
            ``{"size": [h, w], "counts": str | bytes | list[int]}``.
        height, width: the image size in pixels (used for polygons and uncompressed RLE).

    Returns:
        A compressed RLE dict ``{"size": [h, w], "counts": bytes}`` (pycocotools' form).

    Source: pycocotools ``COCO.annToRLE`` (same branches, same result).
    """
    if isinstance(segm, list):
        rles = mask_utils.frPyObjects(segm, height, width)
        return mask_utils.merge(rles)
    if isinstance(segm, dict) and isinstance(segm.get("counts"), list):
        return mask_utils.frPyObjects(segm, *segm["size"])
    if isinstance(segm, dict) and isinstance(segm.get("counts"), str):
        return {"size": list(segm["size"]), "counts": segm["counts"].encode("ascii")}
    return segm


def rle_to_mask(rle: dict) -> np.ndarray:
    """Decode a compressed RLE to a ``uint8`` array of shape (H, W) with values in {0, 1}."""
    return mask_utils.decode(rle)


def masks_to_rles(masks: np.ndarray) -> list[dict]:
    """Encode binary masks (N, H, W) (bool or uint8) as compressed RLEs with JSON-safe ``str`` ``counts``.

    The one RLE encoder of the harness: the models' results (``refinemask.detection.encode_rle``) and the
    evaluator's own masks go through it. Source: ``pycocotools.mask.encode`` on a Fortran-ordered (H, W, N) array.

    Raises:
        UsageError: ``masks`` is not 3-D.
    """
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise UsageError(f"expected (N, H, W) masks, got shape {masks.shape}")
    if masks.shape[0] == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    for r in rles:
        r["counts"] = r["counts"].decode("ascii")
    return rles


def mask_to_rle(mask: np.ndarray) -> dict:
    """Encode one binary (H, W) array as compressed RLE with a JSON-safe ``str`` ``counts``."""
    return masks_to_rles(np.asarray(mask)[None])[0]


def ann_to_mask(ann: dict, height: int, width: int) -> np.ndarray:
    """Full-image binary mask (H, W) of a COCO/LVIS annotation or result record."""
    return rle_to_mask(segm_to_rle(ann["segmentation"], height, width))

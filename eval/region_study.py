"""Table 12 study: IoU between the distance-defined and the convolution boundary regions.

RefineMask appendix A.1 / Table 12 reports the mean IoU between the Eq. 1 boundary region and its
convolutional approximation at the mask-head output sizes (28x28: 0.76, 56x56: 0.75, 112x112: 0.80)
without stating d, the masks, or the border rule. This module reproduces the study exactly as
``data/golden/README.md`` §5 defines it:

- masks: the non-crowd GT annotations sorted by id; ``numpy.random.default_rng(seed).choice(n,
  num_masks, replace=False)`` (then sorted) picks ``num_masks`` of them (n = 619 on coco_mini);
- each full-image GT mask is cropped to x0 = max(floor(x), 0), y0 = max(floor(y), 0),
  x1 = min(ceil(x + w), W), y1 = min(ceil(y + h), H) of its ``bbox`` and resized with
  ``cv2.resize(crop as float32, (S, S), INTER_LINEAR) >= 0.5`` for every size S;
- per mask and width d: IoU(conv region A_d, distance region B_d) (1.0 if both empty); the table
  value is the mean over the masks.

Variants (``VARIANTS``; names as in the golden file):

========================================= ======= ========== ================== =========
variant                                   frame   half-pixel conv padding        threshold
========================================= ======= ========== ================== =========
primary                                   yes     no         pad then invert    D > 0
conv_invert_then_zero_pad                 yes     no         invert then pad    D > 0
conv_refinemask_code_threshold            yes     no         pad then invert    D/K² > 0.1
dist_no_frame                             no      no         pad then invert    D > 0
dist_no_frame_conv_invert_then_zero_pad   no      no         invert then pad    D > 0
dist_half_pixel_contour                   yes     yes        pad then invert    D > 0
========================================= ======= ========== ================== =========

Closest to the paper: **dist_no_frame** (EDT on the bare S x S array, so the array edge is not a
contour; convolution as in RefineMask's code with the outside as background). On coco_mini (200
masks, seed 2021) it gives 0.717 / 0.747 / 0.769 at d = 1 and 0.734 / 0.749 / 0.765 at d = 2 for
28 / 56 / 112, mean absolute difference to the paper's 0.76 / 0.75 / 0.80 of 0.025 (d = 1) and
0.021 (d = 2); ``primary`` follows with 0.032 / 0.033, all others are >= 0.14 away (see
:func:`compare_variants_to_paper`). Which d the paper used remains unknown: the two d give
similar distances.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Any

import cv2
import numpy as np

from eval.boundary import conv_boundary_region, distance_boundary_region, region_iou
from eval.errors import UsageError
from eval.masks import ann_to_mask

__all__ = [
    "VARIANTS",
    "select_table12_masks",
    "region_ious_for_mask",
    "table12_from_masks",
    "table12_study",
    "compare_variants_to_paper",
]

logger = logging.getLogger(__name__)

VARIANTS: dict[str, dict[str, Any]] = {
    "primary": {"frame": True, "half_pixel_contour": False, "invert_then_pad": False, "threshold": 0.0},
    "conv_invert_then_zero_pad": {
        "frame": True,
        "half_pixel_contour": False,
        "invert_then_pad": True,
        "threshold": 0.0,
    },
    "conv_refinemask_code_threshold": {
        "frame": True,
        "half_pixel_contour": False,
        "invert_then_pad": False,
        "threshold": 0.1,
    },
    "dist_no_frame": {"frame": False, "half_pixel_contour": False, "invert_then_pad": False, "threshold": 0.0},
    "dist_no_frame_conv_invert_then_zero_pad": {
        "frame": False,
        "half_pixel_contour": False,
        "invert_then_pad": True,
        "threshold": 0.0,
    },
    "dist_half_pixel_contour": {
        "frame": True,
        "half_pixel_contour": True,
        "invert_then_pad": False,
        "threshold": 0.0,
    },
}
"""Variant name -> parameters of :func:`distance_boundary_region` / :func:`conv_boundary_region`."""
"""RefineMask Table 12 (mean IoU per output size; d not stated)."""


def _check_variant(variant: str) -> dict[str, Any]:
    if variant not in VARIANTS:
        raise UsageError(f"unknown variant {variant!r}; expected one of {sorted(VARIANTS)}")
    return VARIANTS[variant]


def select_table12_masks(
    gt: dict,
    sizes: Iterable[int] = (28, 56, 112),
    num_masks: int = 200,
    seed: int = 2021,
) -> list[dict]:
    """Pick and resize the Table 12 masks (data/golden/README.md §5).

    Parameters
    ----------
    gt : dict
        Parsed COCO-format GT json (``images`` with ``height``/``width``, ``annotations`` with
        ``bbox`` and ``segmentation``).
    sizes : iterable of int
        Output sizes S in pixels (square S x S).
    num_masks : int
        Number of masks drawn without replacement from the non-crowd annotations sorted by id.
    seed : int
        Seed of ``numpy.random.default_rng``.

    Returns
    -------
    list of dict
        In ascending annotation-id order: ``gt_id``, ``image_id``, ``crop_xyxy`` ([x0, y0, x1, y1],
        pixels, end-exclusive) and ``masks``: {S: bool array (S, S)}.

    Raises
    ------
    ValueError
        If ``num_masks`` exceeds the number of non-crowd annotations, a size is not a positive
        integer, or a crop is empty.
    """
    sizes = [int(s) for s in sizes]
    if not sizes or any(s < 1 for s in sizes):
        raise UsageError(f"sizes must be positive integers, got {sizes!r}")
    anns = sorted((a for a in gt["annotations"] if not a.get("iscrowd", 0)), key=lambda a: a["id"])
    if not 0 < num_masks <= len(anns):
        raise UsageError(f"num_masks must be in 1..{len(anns)} (non-crowd annotations), got {num_masks}")
    idx = np.sort(np.random.default_rng(seed).choice(len(anns), num_masks, replace=False))
    imgs = {im["id"]: im for im in gt["images"]}
    out = []
    for i in idx:
        ann = anns[int(i)]
        im = imgs[ann["image_id"]]
        hh, ww = int(im["height"]), int(im["width"])
        full = ann_to_mask(ann, hh, ww)
        x, y, w, h = ann["bbox"]
        x0, y0 = max(math.floor(x), 0), max(math.floor(y), 0)
        x1, y1 = min(math.ceil(x + w), ww), min(math.ceil(y + h), hh)
        if x1 <= x0 or y1 <= y0:
            raise UsageError(f"annotation {ann['id']} has an empty crop {[x0, y0, x1, y1]}")
        crop = full[y0:y1, x0:x1].astype(np.float32)
        masks = {s: cv2.resize(crop, (s, s), interpolation=cv2.INTER_LINEAR) >= 0.5 for s in sizes}
        out.append({"gt_id": ann["id"], "image_id": ann["image_id"], "crop_xyxy": [x0, y0, x1, y1], "masks": masks})
    return out


def region_ious_for_mask(mask: np.ndarray, width: int, variant: str = "primary") -> float:
    """IoU between the conv region A_w and the distance region B_w of one mask for a variant.

    Parameters
    ----------
    mask : np.ndarray
        Binary mask (S, S) (any 2-D shape works).
    width : int
        d = w in pixels.
    variant : str
        A key of :data:`VARIANTS`.

    Raises
    ------
    ValueError
        Unknown variant, non-2-D mask or invalid width.
    """
    p = _check_variant(variant)
    a = conv_boundary_region(mask, width, threshold=p["threshold"], invert_then_pad=p["invert_then_pad"])
    b = distance_boundary_region(mask, width, frame=p["frame"], half_pixel_contour=p["half_pixel_contour"])
    return region_iou(a, b)


def table12_from_masks(
    masks: list[dict[int, np.ndarray]],
    widths: Iterable[int] = (1, 2),
    variant: str = "primary",
) -> dict:
    """Per-mask IoUs and mean IoUs for masks already at their output sizes.

    Parameters
    ----------
    masks : list of dict
        One dict per mask: {S: (S, S) binary array}; all dicts must have the same sizes.
    widths : iterable of int
        Widths d (pixels).
    variant : str
        A key of :data:`VARIANTS`.

    Returns
    -------
    dict
        ``mean_iou``: {"SxS": {"d=w": mean}}, ``per_mask_iou``: list of {"S_dw": IoU} (golden
        naming, e.g. "28_d1"), ``variant``, ``params``, ``widths``, ``sizes``, ``num_masks``.
    """
    params = _check_variant(variant)
    widths = [int(w) for w in widths]
    if not masks:
        raise UsageError("masks must not be empty")
    sizes = sorted(masks[0])
    per_mask = []
    for m in masks:
        if sorted(m) != sizes:
            raise UsageError(f"all masks need the same sizes {sizes}, got {sorted(m)}")
        per_mask.append({f"{s}_d{w}": region_ious_for_mask(m[s], w, variant) for s in sizes for w in widths})
    mean_iou = {
        f"{s}x{s}": {f"d={w}": float(np.mean([r[f"{s}_d{w}"] for r in per_mask])) for w in widths} for s in sizes
    }
    return {
        "variant": variant,
        "params": dict(params),
        "sizes": sizes,
        "widths": widths,
        "num_masks": len(masks),
        "mean_iou": mean_iou,
        "per_mask_iou": per_mask,
    }


def table12_study(
    gt: dict,
    sizes: tuple[int, ...] = (28, 56, 112),
    widths: tuple[int, ...] = (1, 2),
    num_masks: int = 200,
    seed: int = 2021,
    variant: str = "primary",
    paper: dict[int, float] | None = None,
) -> dict:
    """RefineMask Table 12 on a COCO-format GT file (data/golden/README.md §5).

    Parameters
    ----------
    gt : dict
        Parsed COCO-format GT json.
    sizes : tuple of int
        Mask-head output sizes S (pixels).
    widths : tuple of int
        Boundary widths d = w (pixels).
    num_masks, seed : int
        Mask selection (``default_rng(seed).choice(n_noncrowd, num_masks, replace=False)``).
    variant : str
        A key of :data:`VARIANTS` ("primary" = golden primary definitions).
    paper : dict of int to float, optional
        The paper's Table 12 {S: mean IoU} to compare with (its home is ``reports/paper/table12.csv``;
        ``reports.tables.paper_table12()`` reads it). None: no comparison.

    Returns
    -------
    dict
        ``mean_iou`` {"28x28": {"d=1": ..., "d=2": ...}, ...}, ``per_mask`` (list of ``gt_id``,
        ``image_id``, ``crop_xyxy``, ``iou`` {"28_d1": ...}), ``paper`` {"28x28": 0.76, ...},
        ``mean_abs_diff_to_paper`` {"d=1": ..., ...} (over the sizes the paper reports), ``variant``,
        ``params``, ``sizes``, ``widths``, ``num_masks``, ``seed``.

    Raises
    ------
    ValueError
        Unknown variant or invalid selection parameters.
    """
    _check_variant(variant)
    sel = select_table12_masks(gt, sizes, num_masks, seed)
    return _study_from_selection(sel, widths, variant, seed, paper or {})


def _study_from_selection(sel: list[dict], widths: Iterable[int], variant: str, seed: int,
                          paper_by_size: dict[int, float]) -> dict:
    res = table12_from_masks([s["masks"] for s in sel], widths, variant)
    per_mask = [
        {"gt_id": s["gt_id"], "image_id": s["image_id"], "crop_xyxy": s["crop_xyxy"], "iou": ious}
        for s, ious in zip(sel, res.pop("per_mask_iou"))
    ]
    paper = {f"{s}x{s}": v for s, v in paper_by_size.items() if s in res["sizes"]}
    mad = {
        f"d={w}": (
            float(np.mean([abs(res["mean_iou"][k][f"d={w}"] - v) for k, v in paper.items()]))
            if paper
            else float("nan")
        )
        for w in res["widths"]
    }
    res.update({"per_mask": per_mask, "paper": paper, "mean_abs_diff_to_paper": mad, "seed": seed})
    return res


def compare_variants_to_paper(
    gt: dict,
    paper: dict[int, float],
    sizes: tuple[int, ...] = (28, 56, 112),
    widths: tuple[int, ...] = (1, 2),
    num_masks: int = 200,
    seed: int = 2021,
    variants: Iterable[str] | None = None,
) -> dict:
    """Run :func:`table12_study` for several variants (one mask selection) and rank them against ``paper``,
    the paper's Table 12 {S: mean IoU} (``reports.tables.paper_table12()``).

    Returns
    -------
    dict
        ``studies`` {variant: table12_study result}, ``ranking``: list of (variant, score) sorted by
        score = mean over widths of the mean absolute difference to the paper's Table 12, and
        ``closest``: the best variant name.
    """
    names = list(VARIANTS) if variants is None else list(variants)
    for n in names:
        _check_variant(n)
    sel = select_table12_masks(gt, sizes, num_masks, seed)
    studies = {n: _study_from_selection(sel, widths, n, seed, paper) for n in names}
    ranking = sorted(
        ((n, float(np.mean(list(s["mean_abs_diff_to_paper"].values())))) for n, s in studies.items()),
        key=lambda t: t[1],
    )
    logger.info("Table 12 variants ranked by distance to the paper: %s", ranking)
    return {"studies": studies, "ranking": ranking, "closest": ranking[0][0]}

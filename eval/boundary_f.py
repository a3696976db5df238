"""Per-instance boundary F-score F_npx (RefineMask appendix A.2).

Protocol (``shared/golden/README.md`` §3.1, eval-spec §6.2): for every **non-crowd** GT annotation,
in GT-file order, the candidates are the results of the same image and category with
``score >= score_thr`` (0.05); the one with the highest mask IoU (pycocotools
``mask.iou(cand_rles, [gt_rle], [0])``; exact ties -> first in results-list order) is the *positive
prediction* if its IoU is ``>= iou_thr`` (0.5), otherwise the GT is skipped (not counted as 0). No
one-to-one matching: one prediction may serve several GTs. The boundary F of each pair is DAVIS
``f_measure(pred, gt, bound_th=n)`` with n = 1, 3, 5 absolute pixels; the reported value is the plain
mean over the evaluated instances (one pooled mean, not per class).

Windows:

- ``window="full"`` (golden ``main`` / ``lvis_full_image``): full-image H x W masks. For speed each
  pair is evaluated on the union bounding box of both masks enlarged by one pixel, which is provably
  identical (see ``eval.boundary._tight_window``).
- ``window="crop"`` (golden ``coco_crop_variant`` / ``lvis_crop_variant``): the window of RefineMask's
  ``tools/boundary_f1_score.py``: (x, y, w, h) = ``int()`` of the GT bbox with w, h >= 1, rows
  [max(y - h//2, 0), min(y + h + h//2, H)), columns likewise; windows with <= 1 row or column are
  skipped (``num_skipped_degenerate_crop``). F is computed on the cropped masks, so prediction pixels
  outside the window are ignored and the window edge is never a contour.

Masks go through :mod:`eval.masks` (pycocotools), every GT and prediction RLE is built once and every
mask is decoded once per image.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from eval.boundary import f_measure_multi
from eval.errors import UsageError
from eval.masks import rle_to_mask, segm_to_rle

__all__ = [
    "match_positive_predictions",
    "refinemask_window",
    "boundary_f",
    "tolerance_key",
]

logger = logging.getLogger(__name__)

MATCH_KEYS = ("gt_id", "image_id", "category_id", "pred_index", "score", "mask_iou")


# --------------------------------------------------------------------------------------------
# matching
# --------------------------------------------------------------------------------------------
def _image_sizes(gt: dict) -> dict[int, tuple[int, int]]:
    """image id -> (height, width) from a COCO-format GT dict."""
    if not isinstance(gt, dict) or "images" not in gt or "annotations" not in gt:
        raise UsageError("gt must be a parsed COCO-format dict with 'images' and 'annotations'")
    sizes: dict[int, tuple[int, int]] = {}
    for img in gt["images"]:
        try:
            sizes[img["id"]] = (int(img["height"]), int(img["width"]))
        except KeyError as exc:
            raise UsageError(f"gt image record {img.get('id')!r} lacks {exc.args[0]!r}") from None
    return sizes


def _noncrowd_annotations(gt: dict) -> list[dict]:
    """Non-crowd GT annotations in file order (a missing ``iscrowd`` counts as 0, as in LVIS)."""
    return [a for a in gt["annotations"] if not a.get("iscrowd", 0)]


def _group_results(results: list[dict], score_thr: float) -> dict[tuple[int, int], list[int]]:
    """(image_id, category_id) -> indices into ``results`` with score >= score_thr, in list order."""
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, r in enumerate(results):
        try:
            if r["score"] >= score_thr:
                groups[(r["image_id"], r["category_id"])].append(i)
        except KeyError as exc:
            raise UsageError(f"result {i} lacks the key {exc.args[0]!r}") from None
    return groups


def _match(
    gt: dict, results: list[dict], score_thr: float, iou_thr: float
) -> tuple[list[dict], list[int], dict[int, dict], dict[int, dict], dict[int, tuple[int, int]], list[dict]]:
    """Matching core; also returns the RLE caches so callers decode without re-encoding.

    Returns (matches, skipped_gt_ids, gt_rles[gt_id], pred_rles[pred_index], image sizes,
    non-crowd annotations).
    """
    sizes = _image_sizes(gt)
    anns = _noncrowd_annotations(gt)
    groups = _group_results(results, score_thr)
    pred_rles: dict[int, dict] = {}
    gt_rles: dict[int, dict] = {}
    matches: list[dict] = []
    skipped: list[int] = []
    for ann in anns:
        img_id = ann["image_id"]
        if img_id not in sizes:
            raise UsageError(f"annotation {ann.get('id')!r} refers to unknown image {img_id!r}")
        h, w = sizes[img_id]
        cand = groups.get((img_id, ann["category_id"]))
        if not cand:
            skipped.append(ann["id"])
            continue
        g_rle = segm_to_rle(ann["segmentation"], h, w)
        cand_rles = []
        for i in cand:
            rle = pred_rles.get(i)
            if rle is None:
                rle = segm_to_rle(results[i]["segmentation"], h, w)
                pred_rles[i] = rle
            cand_rles.append(rle)
        ious = np.asarray(mask_utils.iou(cand_rles, [g_rle], [0]), dtype=np.float64).reshape(-1)
        best = int(np.argmax(ious))  # first maximum = first in results-list order
        if not ious[best] >= iou_thr:
            skipped.append(ann["id"])
            continue
        gt_rles[ann["id"]] = g_rle
        pi = cand[best]
        matches.append(
            {
                "gt_id": ann["id"],
                "image_id": img_id,
                "category_id": ann["category_id"],
                "pred_index": pi,
                "score": float(results[pi]["score"]),
                "mask_iou": float(ious[best]),
            }
        )
    return matches, skipped, gt_rles, pred_rles, sizes, anns


def match_positive_predictions(
    gt: dict,
    results: list[dict],
    score_thr: float = 0.05,
    iou_thr: float = 0.5,
) -> tuple[list[dict], list[int]]:
    """Max-IoU positive prediction of every non-crowd GT instance (RefineMask appendix A.2).

    Parameters
    ----------
    gt : dict
        Parsed COCO-format GT json (``images`` with ``height``/``width`` in pixels, ``annotations``,
        ``categories``); cocofied LVIS files work too (missing ``iscrowd`` = 0).
    results : list of dict
        COCO results: ``image_id``, ``category_id``, ``score`` and ``segmentation`` as compressed RLE
        (``counts`` str or bytes), uncompressed RLE or polygons (rasterised at the image size).
    score_thr : float, default 0.05
        Candidates need ``score >= score_thr``.
    iou_thr : float, default 0.5
        A best candidate is accepted if its mask IoU is ``>= iou_thr``.

    Returns
    -------
    (matches, skipped_gt_ids)
        ``matches``: one dict per matched GT, in GT-file order, with keys ``gt_id``, ``image_id``,
        ``category_id``, ``pred_index`` (0-based position in ``results``), ``score``, ``mask_iou``.
        ``skipped_gt_ids``: ids of non-crowd GTs without a positive prediction, in file order.

    Raises
    ------
    ValueError
        If ``gt`` is not a COCO-format dict, an image lacks its size, an annotation refers to an
        unknown image, or a result lacks a required key.

    Notes
    -----
    Results are grouped by (image_id, category_id) once; each result's RLE is built once. Mask IoU
    is pycocotools ``mask.iou(cand_rles, [gt_rle], [0])``; ties go to the first result in list order.
    Source: golden README §3.1; RefineMask ``tools/boundary_f1_score.py`` (plus the 0.05 score rule).
    """
    matches, skipped, *_ = _match(gt, results, score_thr, iou_thr)
    return matches, skipped


# --------------------------------------------------------------------------------------------
# windows
# --------------------------------------------------------------------------------------------
def refinemask_window(bbox: Iterable[float], height: int, width: int) -> tuple[slice, slice]:
    """Crop window of RefineMask's boundary-F tool: the GT box enlarged by half its size per side.

    (x, y, w, h) = ``int()`` of ``bbox`` (COCO [x, y, w, h] in pixels), w, h = max(1, .); rows
    [max(y - h//2, 0), min(y + h + h//2, height)), columns [max(x - w//2, 0), min(x + w + w//2, width)).

    Returns
    -------
    (row_slice, col_slice) : tuple of slice
        May hold <= 1 row or column (RefineMask skips such windows for F).

    Source: zhanggang001/RefineMask ``tools/boundary_f1_score.py::compute_f_score``; eval-spec §6.2.
    """
    x, y, w, h = (int(v) for v in bbox)
    w, h = max(1, w), max(1, h)
    r0 = max(y - h // 2, 0)
    r1 = min(max(y + h + h // 2, 0), int(height))
    c0 = max(x - w // 2, 0)
    c1 = min(max(x + w + w // 2, 0), int(width))
    return slice(r0, max(r1, r0)), slice(c0, max(c1, c0))


def _gt_bbox(ann: dict, rle: dict) -> list[float]:
    bbox = ann.get("bbox")
    if bbox is None:
        bbox = mask_utils.toBbox(rle).tolist()
    return bbox


def tolerance_key(t: float) -> str:
    """Key fragment of a tolerance: ``1 -> "1"``, ``3.0 -> "3"``, ``0.008 -> "0.008"``."""
    t = float(t)
    return str(int(t)) if t.is_integer() else f"{t:g}"


def _iter_by_image(matches: list[dict]) -> dict[Any, list[int]]:
    by_img: dict[Any, list[int]] = defaultdict(list)
    for k, m in enumerate(matches):
        by_img[m["image_id"]].append(k)
    return by_img


# --------------------------------------------------------------------------------------------
# boundary F
# --------------------------------------------------------------------------------------------
def boundary_f(
    gt: dict,
    results: list[dict],
    tolerances: tuple[float, ...] = (1, 3, 5),
    window: str = "full",
    score_thr: float = 0.05,
    iou_thr: float = 0.5,
) -> dict:
    """RefineMask F_npx: mean DAVIS boundary F between each GT and its positive prediction.

    Parameters
    ----------
    gt, results
        As in :func:`match_positive_predictions`.
    tolerances : tuple of float, default (1, 3, 5)
        DAVIS ``bound_th`` values: >= 1 = radius in pixels (F_1px, F_3px, F_5px), < 1 = fraction of
        the diagonal of the evaluated array (full image or crop window).
    window : {"full", "crop"}, default "full"
        "full": full-image masks (golden main protocol). "crop": RefineMask tool window
        (:func:`refinemask_window`), degenerate windows (<= 1 row/column) skipped.
    score_thr, iou_thr : float
        Positive-prediction rule (score >= 0.05, mask IoU >= 0.5).

    Returns
    -------
    dict
        ``"F{n}px"`` for each tolerance (e.g. ``F1px``, ``F3px``, ``F5px``): mean F over evaluated
        instances (NaN with a ``RuntimeWarning`` if none); ``num_matched`` (evaluated instances),
        ``num_gt`` (non-crowd GTs), ``num_positive`` (GTs with a positive prediction),
        ``num_skipped_no_positive``, ``num_skipped_degenerate_crop`` (0 for "full"), ``window``,
        ``tolerances``, ``score_thr``, ``iou_thr``, ``skipped_gt_ids``, ``degenerate_gt_ids`` and
        ``per_instance``: list of dicts (GT-file order) with ``gt_id``, ``image_id``,
        ``category_id``, ``pred_index``, ``score``, ``mask_iou``, ``F_{n}px``, ``P_{n}px``,
        ``R_{n}px`` for each tolerance, ``n_boundary_pred``, ``n_boundary_gt`` (seg2bmap pixels).

    Raises
    ------
    ValueError
        For an unknown ``window``, an empty or non-positive ``tolerances``, or malformed inputs
        (see :func:`match_positive_predictions`).

    Source: RefineMask appendix A.2; golden README §3.1 / §3.3; DAVIS ``f_measure``.
    """
    if window not in ("full", "crop"):
        raise UsageError(f"window must be 'full' or 'crop', got {window!r}")
    tols = tuple(tolerances)
    if not tols or any(not np.isfinite(t) or t <= 0 for t in tols):
        raise UsageError(f"tolerances must be a non-empty sequence of positive numbers, got {tolerances!r}")
    keys = [tolerance_key(t) for t in tols]
    if len(set(keys)) != len(keys):
        raise UsageError(f"tolerances must be distinct, got {tolerances!r}")

    matches, skipped, gt_rles, pred_rles, sizes, anns = _match(gt, results, score_thr, iou_thr)
    ann_by_id = {a["id"]: a for a in anns}

    rows: list[dict | None] = [None] * len(matches)
    degenerate: list[int] = []
    for img_id, ks in _iter_by_image(matches).items():
        h, w = sizes[img_id]
        pred_cache: dict[int, np.ndarray] = {}
        for k in ks:
            m = matches[k]
            g_rle = gt_rles[m["gt_id"]]
            g_mask = rle_to_mask(g_rle)
            pi = m["pred_index"]
            p_mask = pred_cache.get(pi)
            if p_mask is None:
                p_mask = rle_to_mask(pred_rles[pi])
                pred_cache[pi] = p_mask
            if window == "crop":
                rs, cs = refinemask_window(_gt_bbox(ann_by_id[m["gt_id"]], g_rle), h, w)
                if rs.stop - rs.start <= 1 or cs.stop - cs.start <= 1:
                    degenerate.append(m["gt_id"])
                    continue
                res, nbp, nbg = f_measure_multi(p_mask[rs, cs], g_mask[rs, cs], tols)
            else:
                res, nbp, nbg = f_measure_multi(p_mask, g_mask, tols)
            row = dict(m)
            for key, (f, p, r) in zip(keys, res):
                row[f"F_{key}px"] = f
                row[f"P_{key}px"] = p
                row[f"R_{key}px"] = r
            row["n_boundary_pred"] = nbp
            row["n_boundary_gt"] = nbg
            rows[k] = row
    per_instance = [r for r in rows if r is not None]

    out: dict[str, Any] = {}
    n_eval = len(per_instance)
    if n_eval == 0:
        warnings.warn(
            "boundary_f: no GT instance has a positive prediction; means are NaN", RuntimeWarning, stacklevel=2
        )
    for key in keys:
        out[f"F{key}px"] = (
            math.fsum(r[f"F_{key}px"] for r in per_instance) / n_eval if n_eval else float("nan")
        )
    out.update(
        {
            "num_matched": n_eval,
            "num_gt": len(anns),
            "num_positive": len(matches),
            "num_skipped_no_positive": len(skipped),
            "num_skipped_degenerate_crop": len(degenerate),
            "window": window,
            "tolerances": list(tols),
            "score_thr": score_thr,
            "iou_thr": iou_thr,
            "skipped_gt_ids": skipped,
            "degenerate_gt_ids": degenerate,
            "per_instance": per_instance,
        }
    )
    logger.info(
        "boundary_f(%s): %d/%d GTs evaluated, %s",
        window,
        n_eval,
        len(anns),
        ", ".join(f"F{k}px={out[f'F{k}px']:.4f}" for k in keys),
    )
    return out

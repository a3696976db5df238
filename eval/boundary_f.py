"""Per-instance boundary F-score F_npx (RefineMask appendix A.2).

Protocol (``data/golden/README.md`` §3.1, docs/evaluation.md §6.2): every non-crowd GT is paired with its
positive prediction by :func:`eval.matching.match` (same image and class, score >= 0.05, maximum mask IoU >= 0.5,
first on ties, no one-to-one matching; unmatched GTs are skipped, not counted as 0).
The boundary F of each pair is DAVIS
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

Masks go through :mod:`eval.masks` (pycocotools), every GT and prediction RLE is built once, and each pair's two
masks are decoded once, only inside the window they need (:mod:`eval.pair_pass`, in parallel over images).
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any

import numpy as np

from eval.errors import UsageError
from eval.matching import Matches, match
from eval.pair_pass import PairMeasures, measure_pairs

__all__ = ["boundary_f", "tolerance_key"]

logger = logging.getLogger(__name__)



# --------------------------------------------------------------------------------------------
# boundary F
# --------------------------------------------------------------------------------------------
def tolerance_key(t: float) -> str:
    """Key fragment of a tolerance: ``1 -> "1"``, ``3.0 -> "3"``, ``0.008 -> "0.008"``."""
    t = float(t)
    return str(int(t)) if t.is_integer() else f"{t:g}"


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
    matches: Matches | None = None,
    measures: PairMeasures | None = None,
    jobs: int | None = None,
) -> dict:
    """RefineMask F_npx: mean DAVIS boundary F between each GT and its positive prediction.

    Parameters
    ----------
    gt, results
        As in :func:`eval.matching.match`.
    tolerances : tuple of float, default (1, 3, 5)
        DAVIS ``bound_th`` values: >= 1 = radius in pixels (F_1px, F_3px, F_5px), < 1 = fraction of
        the diagonal of the evaluated array (full image or crop window).
    window : {"full", "crop"}, default "full"
        "full": full-image masks (golden main protocol). "crop": RefineMask tool window
        (:func:`refinemask_window`), degenerate windows (<= 1 row/column) skipped.
    score_thr, iou_thr : float
        Positive-prediction rule (score >= 0.05, mask IoU >= 0.5).
    matches : Matches, optional
        The result of ``eval.matching.match(gt, results, score_thr, iou_thr)`` when the caller already has it
        (the evaluator shares one matching between boundary F and boundary accuracy).
    measures : PairMeasures, optional
        The pair pass (:func:`eval.pair_pass.measure_pairs`) with these tolerances and window, when the caller
        already ran it (the evaluator runs one pass for boundary F and boundary accuracy together).
    jobs : int, optional
        Worker processes of the pair pass (default: the usable CPUs; results do not depend on it).

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
        (see :func:`eval.matching.match`).

    Source: RefineMask appendix A.2; data/golden/README.md §3.1 / §3.3; DAVIS ``f_measure``.
    """
    if window not in ("full", "crop"):
        raise UsageError(f"window must be 'full' or 'crop', got {window!r}")
    tols = tuple(tolerances)
    if not tols or any(not np.isfinite(t) or t <= 0 for t in tols):
        raise UsageError(f"tolerances must be a non-empty sequence of positive numbers, got {tolerances!r}")
    keys = [tolerance_key(t) for t in tols]
    if len(set(keys)) != len(keys):
        raise UsageError(f"tolerances must be distinct, got {tolerances!r}")

    mt = matches if matches is not None else match(gt, results, score_thr, iou_thr)
    matches, skipped, anns = mt.pairs, mt.skipped_gt_ids, mt.annotations

    if measures is None or tuple(measures.tolerances) != tuple(float(t) for t in tols) or measures.f_window != window:
        measures = measure_pairs(mt, tolerances=tols, f_window=window, jobs=jobs)
    rows: list[dict | None] = [None] * len(matches)
    degenerate: list[int] = []
    for k, m in enumerate(matches):
        f_out = measures.f[k]
        if f_out is None:  # a degenerate RefineMask crop (<= 1 row or column)
            degenerate.append(m["gt_id"])
            continue
        res, nbp, nbg = f_out
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
            "score_thr": mt.score_thr,
            "iou_thr": mt.iou_thr,
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

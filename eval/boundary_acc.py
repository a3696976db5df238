"""Boundary-region and non-boundary accuracy of instance masks (RefineMask Figure 1).

The paper (Fig. 1 caption, Sec. 3.3 Eq. 1) defines the boundary region as the pixels whose Euclidean
distance to the mask contour is at most d_hat and reports the accuracy of predicted masks inside and
outside that region over COCO. No code was published; this module is our precise reading
(docs/evaluation.md §7), labelled as such:

- **Instances**: every non-crowd GT with a positive prediction, chosen exactly as for F_npx
  (:func:`eval.matching.match`: same image and class, score >= 0.05, max mask
  IoU >= 0.5, first on ties, no one-to-one matching).
- **Window** W: the crop window of RefineMask's boundary-F tool
  (:func:`eval.matching.refinemask_window`: the int GT box enlarged by half its size on each side,
  clipped to the image). Unlike the F tool, windows with a single row/column are *not* skipped
  (accuracy is well defined there); empty windows are skipped.
- **Band** B: :func:`eval.boundary.distance_boundary_region` of the **full-image** GT mask (two-sided,
  the image exterior counts as background, i.e. ``frame=True``), restricted to W. Default
  **d_hat = 2 pixels at original image resolution** (the paper's training value d_hat = 2). For speed
  the band is evaluated on W enlarged by floor(d) + 1 pixels (zero-filled beyond the image) by
  dilation with the Euclidean disk of radius d, which gives exactly the full-image EDT band inside W
  (:func:`window_band`): every pixel within distance d of W lies in the enlarged window.
- **Accuracy**: boundary = fraction of pixels of B ∩ W where prediction == GT; non-boundary likewise
  on W \\ B. ``boundary`` / ``non_boundary`` are micro averages (pixels pooled over the dataset, the
  headline values); ``boundary_macro`` / ``non_boundary_macro`` are means over instances (instances
  whose region is empty are left out of that mean).

Pitfall (docs/evaluation.md §7): an all-background prediction still scores about the background share of the
two-sided band (~0.5); show these numbers next to a boundary F / Boundary AP.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np

from eval.boundary import _pair_counts, window_band
from eval.errors import UsageError
from eval.matching import Matches, match, refinemask_window
from eval.pair_pass import PairMeasures, measure_pairs

__all__ = ["boundary_accuracy", "boundary_accuracy_multi", "pair_accuracy", "window_band"]

logger = logging.getLogger(__name__)


def pair_accuracy(
    pred_mask: np.ndarray,
    gt_mask: np.ndarray,
    d: float = 2.0,
    bbox: Iterable[float] | None = None,
) -> dict[str, float | int]:
    """Boundary / non-boundary accuracy of one (prediction, GT) pair of full-image masks.

    Parameters
    ----------
    pred_mask, gt_mask : np.ndarray
        Binary masks of the same shape (H, W).
    d : float, default 2.0
        Band half-width in pixels.
    bbox : [x, y, w, h] or None
        GT box (pixels) defining the RefineMask window (:func:`eval.matching.refinemask_window`);
        None = the whole image.

    Returns
    -------
    dict
        ``boundary``, ``non_boundary`` (NaN if the region is empty), ``n_boundary``,
        ``correct_boundary``, ``n_non_boundary``, ``correct_non_boundary`` (pixel counts).

    Raises
    ------
    ValueError
        Non-2-D inputs, different shapes, or a negative ``d``.
    """
    p = np.asarray(pred_mask)
    g = np.asarray(gt_mask)
    if p.ndim != 2 or g.ndim != 2:
        raise UsageError(f"pred_mask and gt_mask must be 2-D (H, W) arrays, got {p.shape} and {g.shape}")
    if p.shape != g.shape:
        raise UsageError(f"pred_mask and gt_mask must have the same shape, got {p.shape} and {g.shape}")
    if not np.isfinite(d) or d < 0:
        raise UsageError(f"d must be a finite non-negative number of pixels, got {d!r}")
    if bbox is None:
        rs, cs = slice(0, g.shape[0]), slice(0, g.shape[1])
    else:
        rs, cs = refinemask_window(bbox, *g.shape)
    nb, cb, nn, cn = (int(v) for v in _pair_counts(p, g, rs, cs, [float(d)])[0])
    return {
        "boundary": cb / nb if nb else float("nan"),
        "non_boundary": cn / nn if nn else float("nan"),
        "n_boundary": nb,
        "correct_boundary": cb,
        "n_non_boundary": nn,
        "correct_non_boundary": cn,
    }


def boundary_accuracy_multi(
    gt: dict,
    results: list[dict],
    ds: Iterable[float] = (1.0, 2.0, 3.0, 5.0),
    score_thr: float = 0.05,
    iou_thr: float = 0.5,
    matches: Matches | None = None,
    measures: PairMeasures | None = None,
    jobs: int | None = None,
) -> dict[float, dict]:
    """:func:`boundary_accuracy` for several d_hat values with one matching / decoding pass.

    ``matches``: the result of ``eval.matching.match(gt, results, score_thr, iou_thr)`` when the caller already has
    it (shared with boundary F by the evaluator). ``measures``: the pair pass of :func:`eval.pair_pass.measure_pairs`
    with these ``acc_ds`` when the caller already ran it (the evaluator runs one for F and accuracy together).
    ``jobs``: worker processes of the pair pass (default: the usable CPUs).

    Returns
    -------
    dict
        ``{d: result_dict}`` with the keys of :func:`boundary_accuracy` for each d.
    """
    d_list = [float(d) for d in ds]
    if not d_list or any(not np.isfinite(d) or d < 0 for d in d_list):
        raise UsageError(f"ds must be a non-empty sequence of finite numbers >= 0, got {ds!r}")
    mt = matches if matches is not None else match(gt, results, score_thr, iou_thr)
    if measures is None or tuple(measures.acc_ds) != tuple(d_list):
        measures = measure_pairs(mt, acc_ds=tuple(d_list), jobs=jobs)
    anns = mt.annotations
    # counts[k, j] = (n_band, correct_band, n_non, correct_non) for match k and d_list[j]
    counts, valid = measures.acc, measures.acc_valid
    counts = counts[valid]
    num_matched = int(valid.sum())
    if num_matched == 0:
        warnings.warn(
            "boundary_accuracy: no GT instance has a positive prediction; accuracies are NaN",
            RuntimeWarning,
            stacklevel=2,
        )
    out: dict[float, dict] = {}
    for j, d in enumerate(d_list):
        c = counts[:, j, :]
        tot = c.sum(axis=0)

        def _ratio(num: int, den: int) -> float:
            return num / den if den else float("nan")

        def _macro(num: np.ndarray, den: np.ndarray) -> float:
            sel = den > 0
            return float(np.mean(num[sel] / den[sel])) if sel.any() else float("nan")

        out[d] = {
            "boundary": _ratio(int(tot[1]), int(tot[0])),
            "non_boundary": _ratio(int(tot[3]), int(tot[2])),
            "boundary_macro": _macro(c[:, 1], c[:, 0]),
            "non_boundary_macro": _macro(c[:, 3], c[:, 2]),
            "num_matched": num_matched,
            "num_gt": len(anns),
            "d": d,
            "num_boundary_pixels": int(tot[0]),
            "num_non_boundary_pixels": int(tot[2]),
            "window": "refinemask_crop",
        }
        logger.info(
            "boundary_accuracy(d=%g): boundary %.4f, non-boundary %.4f over %d instances",
            d,
            out[d]["boundary"],
            out[d]["non_boundary"],
            num_matched,
        )
    return out


def boundary_accuracy(
    gt: dict,
    results: list[dict],
    d: float = 2.0,
    score_thr: float = 0.05,
    matches: Matches | None = None,
    measures: PairMeasures | None = None,
    jobs: int | None = None,
) -> dict[str, Any]:
    """Boundary / non-boundary accuracy (RefineMask Fig. 1) over all matched GT instances.

    Parameters
    ----------
    gt : dict
        Parsed COCO-format GT json (cocofied LVIS works too).
    results : list of dict
        COCO results (RLE with str/bytes counts, or polygons) with ``score``.
    d : float, default 2.0
        Band half-width d_hat in pixels at original image resolution (Eq. 1, two-sided).
    score_thr : float, default 0.05
        Positive predictions need ``score >= score_thr`` (and mask IoU >= 0.5).

    Returns
    -------
    dict
        ``boundary``, ``non_boundary`` (micro, pixel-pooled), ``boundary_macro``,
        ``non_boundary_macro`` (mean over instances), ``num_matched`` (instances evaluated),
        ``num_gt`` (non-crowd GTs), ``d``, plus ``num_boundary_pixels``,
        ``num_non_boundary_pixels`` and ``window`` ("refinemask_crop"). Values are NaN (with a
        ``RuntimeWarning``) when nothing is matched.

    Raises
    ------
    ValueError
        For a negative / non-finite ``d`` or malformed inputs.

    Source: RefineMask Fig. 1 and Sec. 3.3 Eq. 1; docs/evaluation.md §7 (window and d_hat: module docstring).
    """
    return boundary_accuracy_multi(gt, results, ds=(d,), score_thr=score_thr, matches=matches, measures=measures,
                                   jobs=jobs)[float(d)]

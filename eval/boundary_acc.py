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
import math
import warnings
from collections.abc import Iterable
from typing import Any

import cv2
import numpy as np

from eval.errors import UsageError
from eval.masks import rle_to_mask
from eval.matching import Matches, gt_bbox, match, refinemask_window

__all__ = ["boundary_accuracy", "boundary_accuracy_multi", "pair_accuracy", "window_band"]

logger = logging.getLogger(__name__)


def window_band(gt_mask: np.ndarray, rows: slice, cols: slice, d: float) -> np.ndarray:
    """Eq. 1 band of a full-image GT mask, restricted to the window ``gt_mask[rows, cols]``.

    Equal to ``distance_boundary_region(gt_mask, d, frame=True)[rows, cols]`` (tested) but computed
    on the window enlarged by ``floor(d) + 1`` pixels (zero-filled outside the image) with two
    ``cv2.dilate`` calls instead of two distance transforms: a pixel is in the band iff a pixel of
    the other label lies at an integer offset with ``sqrt(dx^2 + dy^2) <= d``.

    Parameters
    ----------
    gt_mask : np.ndarray
        Full-image binary mask, shape (H, W).
    rows, cols : slice
        Window with non-negative ``start <= stop`` inside the image (no steps).
    d : float
        Band half-width in pixels.

    Returns
    -------
    np.ndarray
        Boolean band, shape (rows.stop - rows.start, cols.stop - cols.start).

    Raises
    ------
    ValueError
        If ``gt_mask`` is not 2-D, ``d`` is negative, or the window is not inside the image.
    """
    g = np.asarray(gt_mask)
    if g.ndim != 2:
        raise UsageError(f"gt_mask must be a 2-D (H, W) array, got shape {g.shape}")
    if not np.isfinite(d) or d < 0:
        raise UsageError(f"d must be a finite non-negative number of pixels, got {d!r}")
    hh, ww = g.shape
    r0, r1, c0, c1 = rows.start, rows.stop, cols.start, cols.stop
    if not (0 <= r0 <= r1 <= hh and 0 <= c0 <= c1 <= ww):
        raise UsageError(f"window rows {r0}:{r1}, cols {c0}:{c1} is not inside the {hh}x{ww} mask")
    m = int(math.floor(d)) + 1
    er0, er1 = max(r0 - m, 0), min(r1 + m, hh)
    ec0, ec1 = max(c0 - m, 0), min(c1 + m, ww)
    ext = np.zeros((r1 - r0 + 2 * m, c1 - c0 + 2 * m), dtype=bool)
    ext[er0 - (r0 - m) : er1 - (r0 - m), ec0 - (c0 - m) : ec1 - (c0 - m)] = g[er0:er1, ec0:ec1] != 0
    # dist(p) <= d  <=>  a pixel of the other label lies at an offset with sqrt(dx^2 + dy^2) <= d
    # (the same float64 sqrt scipy's EDT evaluates), i.e. band = dil(fg) & dil(bg) with that disk.
    kern = _euclidean_disk(d)
    ext8 = ext.view(np.uint8)
    band = cv2.dilate(ext8, kern).view(bool) & cv2.dilate(1 - ext8, kern).view(bool)
    return band[m : m + (r1 - r0), m : m + (c1 - c0)]


def _euclidean_disk(d: float) -> np.ndarray:
    """uint8 kernel of the integer offsets with ``sqrt(dx^2 + dy^2) <= d`` (float64, as in EDT)."""
    r = int(math.floor(d))
    ax = np.arange(-r, r + 1, dtype=np.int64)
    sq = (ax[:, None] ** 2 + ax[None, :] ** 2).astype(np.float64)
    return (np.sqrt(sq) <= d).astype(np.uint8)


def _pair_counts(p_mask: np.ndarray, g_mask: np.ndarray, rs: slice, cs: slice, d_list: list[float]) -> np.ndarray:
    """(len(d_list), 4) int64: n_band, correct_band, n_non_band, correct_non_band inside the window."""
    correct = (p_mask[rs, cs] != 0) == (g_mask[rs, cs] != 0)
    n_all = correct.size
    c_all = int(np.count_nonzero(correct))
    out = np.zeros((len(d_list), 4), dtype=np.int64)
    for j, d in enumerate(d_list):
        band = window_band(g_mask, rs, cs, d)
        nb = int(np.count_nonzero(band))
        cb = int(np.count_nonzero(correct & band))
        out[j] = (nb, cb, n_all - nb, c_all - cb)
    return out


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
) -> dict[float, dict]:
    """:func:`boundary_accuracy` for several d_hat values with one matching / decoding pass.

    ``matches``: the result of ``eval.matching.match(gt, results, score_thr, iou_thr)`` when the caller already has
    it (shared with boundary F by the evaluator).

    Returns
    -------
    dict
        ``{d: result_dict}`` with the keys of :func:`boundary_accuracy` for each d.
    """
    d_list = [float(d) for d in ds]
    if not d_list or any(not np.isfinite(d) or d < 0 for d in d_list):
        raise UsageError(f"ds must be a non-empty sequence of finite numbers >= 0, got {ds!r}")
    mt = matches if matches is not None else match(gt, results, score_thr, iou_thr)
    matches, gt_rles, pred_rles, sizes, anns = mt.pairs, mt.gt_rles, mt.pred_rles, mt.image_sizes, mt.annotations
    # counts[k, j] = (n_band, correct_band, n_non, correct_non) for match k and d_list[j]
    counts = np.zeros((len(matches), len(d_list), 4), dtype=np.int64)
    valid = np.zeros(len(matches), dtype=bool)
    for img_id, ks in mt.by_image().items():
        h, w = sizes[img_id]
        pred_cache: dict[int, np.ndarray] = {}
        for k in ks:
            pair = matches[k]
            g_rle = gt_rles[pair["gt_id"]]
            rs, cs = refinemask_window(gt_bbox(mt.annotation(pair["gt_id"]), g_rle), h, w)
            if rs.stop <= rs.start or cs.stop <= cs.start:
                continue
            g_mask = rle_to_mask(g_rle)
            pi = pair["pred_index"]
            p_mask = pred_cache.get(pi)
            if p_mask is None:
                p_mask = rle_to_mask(pred_rles[pi])
                pred_cache[pi] = p_mask
            counts[k] = _pair_counts(p_mask, g_mask, rs, cs, d_list)
            valid[k] = True
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
    return boundary_accuracy_multi(gt, results, ds=(d,), score_thr=score_thr, matches=matches)[float(d)]

"""One pass over the matched (GT, prediction) pairs for boundary F and boundary accuracy: crops, once, in parallel.

Given the matching of :func:`eval.matching.match`, each pair needs two masks in a window only:

- boundary F, ``window="full"``: the union box of both masks enlarged by one pixel (identical to the full image,
  :func:`eval.boundary._tight_window`; found from the RLEs' boxes, ``pycocotools.mask.toBbox``, without decoding);
- boundary F, ``window="crop"``: RefineMask's enlarged GT box (:func:`eval.matching.refinemask_window`);
- boundary accuracy: that window, and for the GT mask the same window enlarged by floor(d) + 1 pixels, so that the
  Eq. 1 band inside the window is the full-image band (:func:`eval.boundary_acc.window_band`).

Each mask of a pair is decoded once, only inside the union of the windows it needs (:func:`eval.masks.rle_crop`),
so the work per pair is proportional to the object, not to the image, and no full-image mask is ever held. Images
are independent: with ``jobs > 1`` they are measured in worker processes (``fork``, or ``spawn`` once torch is loaded,
so a training loop's threads are safe), results merged in GT-file order; the numbers do not depend on ``jobs``
(tested).
"""

from __future__ import annotations

import logging
import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from tqdm.auto import tqdm

from .boundary import _pair_counts, f_measure_multi
from .engines import usable_cpus
from .errors import UsageError
from .masks import crop_from_runs, decode_counts_batch
from .matching import Matches, gt_bbox, refinemask_window

__all__ = ["PairMeasures", "measure_pairs"]

log = logging.getLogger(__name__)

#: fewer matched pairs than this are measured in-process (starting workers costs more than it saves)
PARALLEL_MIN_PAIRS = 2000


@dataclass
class PairMeasures:
    """Per matched pair (index ``k`` into ``Matches.pairs``) what boundary F and boundary accuracy need.

    Attributes:
        f: k -> ``(results, n_boundary_pred, n_boundary_gt)`` of :func:`eval.boundary.f_measure_multi` for
            ``tolerances``; None where the RefineMask crop window is degenerate (``f_window="crop"``).
        acc: (K, len(acc_ds), 4) int64 pixel counts ``n_band, correct_band, n_non_band, correct_non_band``.
        acc_valid: (K,) bool, False where the accuracy window is empty.
    """

    tolerances: tuple[float, ...]
    f_window: str
    acc_ds: tuple[float, ...]
    f: list[Any] = field(default_factory=list)
    acc: np.ndarray | None = None
    acc_valid: np.ndarray | None = None


def _union(a: tuple[int, int, int, int] | None, b: tuple[int, int, int, int] | None):
    if a is None:
        return b
    if b is None:
        return a
    return min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3])


def _box_rows_cols(box) -> tuple[int, int, int, int] | None:
    """(r0, r1, c0, c1) half-open pixel ranges of a toBbox box, None for an empty mask."""
    x, y, w, h = (int(v) for v in box)
    if w == 0 or h == 0:
        return None
    return y, y + h, x, x + w


def _measure_image(h: int, w: int, items: list[tuple], tolerances: tuple[float, ...], f_window: str,
                   acc_ds: tuple[float, ...]) -> list[tuple]:
    """Measure the pairs of one image: items are ``(k, gt_rle, pred_rle, gt_box)``; returns ``(k, f, acc)``."""
    margin = int(math.floor(max(acc_ds))) + 1 if acc_ds else 0
    out = []
    # the run lengths of every mask of the image, parsed in one vectorised pass (validated input: nothing is bad)
    raws = [r["counts"] if isinstance(r["counts"], bytes) else r["counts"].encode() for it in items for r in it[1:3]]
    _, cnts, first, _ = decode_counts_batch(raws)
    runs = np.split(cnts, first[1:])
    all_boxes = mask_utils.toBbox([r for it in items for r in it[1:3]])
    for j, (k, _g_rle, _p_rle, g_box) in enumerate(items):
        boxes = all_boxes[2 * j: 2 * j + 2]
        need = None
        f_win = acc_win = None
        f_res: Any = None
        if tolerances:
            if f_window == "full":
                u = _union(_box_rows_cols(boxes[0]), _box_rows_cols(boxes[1]))
                if u is None:  # both empty: what f_measure_multi returns for two empty arrays
                    f_res = ([(1.0, 1.0, 1.0) for _ in tolerances], 0, 0)
                else:
                    f_win = (max(u[0] - 1, 0), min(u[1] + 1, h), max(u[2] - 1, 0), min(u[3] + 1, w))
            else:
                rs, cs = refinemask_window(g_box, h, w)
                if rs.stop - rs.start > 1 and cs.stop - cs.start > 1:
                    f_win = (rs.start, rs.stop, cs.start, cs.stop)
            need = _union(need, f_win)
        if acc_ds:
            rs, cs = refinemask_window(g_box, h, w)
            if rs.stop > rs.start and cs.stop > cs.start:
                acc_win = (rs.start, rs.stop, cs.start, cs.stop)
                need = _union(need, (max(rs.start - margin, 0), min(rs.stop + margin, h),
                                     max(cs.start - margin, 0), min(cs.stop + margin, w)))
        acc = None
        if need is not None:
            r0, _, c0, _ = need
            region = (slice(need[0], need[1]), slice(need[2], need[3]))
            g = crop_from_runs(runs[2 * j], h, *region)
            p = crop_from_runs(runs[2 * j + 1], h, *region)
            if f_win is not None:
                sub = (slice(f_win[0] - r0, f_win[1] - r0), slice(f_win[2] - c0, f_win[3] - c0))
                f_res = f_measure_multi(p[sub], g[sub], tolerances, shape=(h, w) if f_window == "full" else None)
            if acc_win is not None:
                acc = _pair_counts(p, g, slice(acc_win[0] - r0, acc_win[1] - r0),
                                   slice(acc_win[2] - c0, acc_win[3] - c0), list(acc_ds))
        out.append((k, f_res, acc))
    return out


def _measure_chunk(args) -> list[tuple]:
    images, tolerances, f_window, acc_ds = args
    out = []
    for h, w, items in images:
        out += _measure_image(h, w, items, tolerances, f_window, acc_ds)
    return out


def _mp_context():
    """``fork`` (cheap, works from scripts without a main guard) unless torch is loaded in this process: forking
    a process with live OpenMP / intra-op threads can deadlock the child, so then ``spawn``."""
    import sys

    if sys.platform == "linux" and "torch" not in sys.modules:
        return get_context("fork")
    return get_context("spawn")


def measure_pairs(mt: Matches, tolerances: tuple[float, ...] = (), f_window: str = "full",
                  acc_ds: tuple[float, ...] = (), jobs: int | None = None) -> PairMeasures:
    """Boundary F (``tolerances``) and boundary-accuracy counts (``acc_ds``) of every matched pair, in one pass.

    Args:
        mt: the matching (:func:`eval.matching.match`).
        tolerances: DAVIS ``bound_th`` values (>= 1: pixels); empty: no F. f_window: ``"full"`` or ``"crop"``.
        acc_ds: band half-widths d̂ in pixels; empty: no accuracy.
        jobs: worker processes (default :func:`eval.engines.usable_cpus`; 1 = in this process).

    Returns:
        :class:`PairMeasures`, equal to full-image evaluation of each pair (tests/test_pair_pass.py).

    Raises:
        UsageError: ``jobs`` < 1 or an unknown ``f_window``.
    """
    if f_window not in ("full", "crop"):
        raise UsageError(f"f_window must be 'full' or 'crop', got {f_window!r}")
    jobs = usable_cpus() if jobs is None else jobs
    if not isinstance(jobs, int) or jobs < 1:
        raise UsageError(f"jobs must be a positive integer, got {jobs!r}")
    tolerances, acc_ds = tuple(float(t) for t in tolerances), tuple(float(d) for d in acc_ds)
    n = len(mt.pairs)
    res = PairMeasures(tolerances, f_window, acc_ds, f=[None] * n,
                       acc=np.zeros((n, len(acc_ds), 4), dtype=np.int64), acc_valid=np.zeros(n, dtype=bool))
    images = []
    for img_id, ks in mt.by_image().items():
        h, w = mt.image_sizes[img_id]
        items = []
        for k in ks:
            pair = mt.pairs[k]
            g_rle = mt.gt_rles[pair["gt_id"]]
            items.append((k, g_rle, mt.pred_rles[pair["pred_index"]], gt_bbox(mt.annotation(pair["gt_id"]), g_rle)))
        images.append((h, w, items))
    if jobs == 1 or n < PARALLEL_MIN_PAIRS or len(images) < 2:
        parts = [_measure_chunk((images, tolerances, f_window, acc_ds))]
    else:
        n_chunks = min(len(images), jobs * 8)
        chunks = [images[i::n_chunks] for i in range(n_chunks)]
        log.info("measuring %d pairs of %d images in %d processes", n, len(images), jobs)
        with ProcessPoolExecutor(max_workers=jobs, mp_context=_mp_context()) as pool:
            parts = list(tqdm(pool.map(_measure_chunk, [(c, tolerances, f_window, acc_ds) for c in chunks]),
                              total=len(chunks), desc="boundary pairs", leave=False, disable=None))
    for part in parts:
        for k, f_res, acc in part:
            res.f[k] = f_res
            if acc is not None:
                res.acc[k] = acc
                res.acc_valid[k] = True
    return res

"""COCO / LVIS AP re-accumulated from per-image evaluations, with integer image weights (the paired bootstrap).

pycocotools' ``COCOeval.evaluate()`` (and lvis-api's ``LVISEval.evaluate()``) match detections to GTs per (image,
category, area range) once; ``accumulate()`` then concatenates those per-image records in image-id order, sorts them
by score (stable mergesort), and turns cumulative TP/FP counts into the interpolated precision at 101 recall points.
Resampling images with replacement only changes *which records are concatenated how many times*, so a bootstrap
resample needs no new matching: :class:`APRecords` keeps the per-image records flattened, and
:meth:`APRecords.precision` re-runs exactly the reference ``accumulate()`` for any image weights.

Exactness (``tests/test_compare.py``):

- weights all 1 give the reference ``eval['precision']`` bit for bit (pycocotools segm, boundary-iou-api Boundary
  AP, lvis-api AP*), and the summary numbers equal the references';
- integer weights w give exactly the precision of the reference run on the *resampled dataset* in which image i
  appears w_i times as consecutive copies (new image ids in draw order): the concatenation order is
  (image, copy, position in the image's score-sorted list), which this module reproduces with one ``lexsort``.

Per-image records come from vernier's ``EvalGrid.eval_imgs()`` (strict parity; equal to pycocotools' and lvis-api's
``evalImgs`` field by field, tested) so the COCO, Boundary AP and LVIS paths share one source.
Source: pycocotools 2.0.11 ``cocoeval.py`` ``accumulate``/``summarize``; lvis 0.5.3 ``eval.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["APRecords", "records_from_eval_imgs", "coco_summary", "lvis_summary", "REC_THRS", "IOU_THRS"]

#: pycocotools ``Params``: IoU thresholds 0.50:0.05:0.95 and 101 recall points (their exact linspace values)
IOU_THRS = np.linspace(.5, 0.95, int(np.round((0.95 - .5) / .05)) + 1, endpoint=True)
REC_THRS = np.linspace(.0, 1.00, int(np.round((1.00 - .0) / .01)) + 1, endpoint=True)
#: the area ranges of both libraries, in their order
AREAS = ("all", "small", "medium", "large")


@dataclass
class _Flat:
    """Every (category, area) group's records, concatenated group by group, each group in image order."""

    group: np.ndarray        # (E,) group index of each detection entry (non-decreasing)
    img: np.ndarray          # (E,) image index of each entry
    pos: np.ndarray          # (E,) position of the entry in its (group, image) record
    score: np.ndarray        # (E,) float64
    tp: np.ndarray           # (T, E) bool: matched and not ignored
    fp: np.ndarray           # (T, E) bool: unmatched and not ignored
    rec_group: np.ndarray    # (P,) group of each per-image record
    rec_img: np.ndarray      # (P,) image of each record
    rec_npig: np.ndarray     # (P,) non-ignored GTs of each record
    group_k: np.ndarray      # (G,) category index of each group
    group_a: np.ndarray      # (G,) area index of each group


@dataclass
class APRecords:
    """Per-image evaluation records of one model on one ground truth, ready for weighted re-accumulation.

    Attributes:
        image_ids: the N evaluated image ids in the reference's (sorted) order; weights index this axis.
        cat_ids: the K category ids in order. n_iou: T (10).
        flat: the records of every non-empty (category, area) group, flattened.
        max_det: detections per image kept (100 COCO, 300 LVIS: already applied by the per-image records).
    """

    image_ids: list
    cat_ids: list
    n_iou: int
    flat: _Flat = field(repr=False)
    max_det: int = 100

    def precision(self, weights: np.ndarray | None = None) -> np.ndarray:
        """Interpolated precision [T, R=101, K, A=4] (-1 where a slice has no GT) as the reference ``accumulate()``.

        All groups at once: one ``lexsort`` (group, -score, image, copy, position), one cumulative sum, a segmented
        right-to-left maximum and a segmented ``searchsorted``, both made exact by dense integer ranks (no float
        offsets), so the result is the reference's float for float.

        Args:
            weights: (N,) non-negative integers, how many times each image is drawn (None: every image once).

        Raises:
            ValueError: weights of the wrong shape, negative, or not integers.
        """
        n_img = len(self.image_ids)
        if weights is None:
            weights = np.ones(n_img, dtype=np.int64)
        weights = np.asarray(weights)
        if weights.shape != (n_img,) or not np.issubdtype(weights.dtype, np.integer) or (weights < 0).any():
            raise ValueError(f"weights must be ({n_img},) non-negative integers, got {weights.dtype} {weights.shape}")
        f = self.flat
        n_t, n_r, n_g = self.n_iou, len(REC_THRS), len(f.group_k)
        out = -np.ones((n_t, n_r, len(self.cat_ids), len(AREAS)))
        if n_g == 0:
            return out
        rw = weights[f.rec_img]
        present = np.bincount(f.rec_group, weights=rw, minlength=n_g) > 0
        npig = np.bincount(f.rec_group, weights=rw * f.rec_npig, minlength=n_g)  # integer-valued, exact
        valid = present & (npig > 0)  # the reference's `len(E) == 0` / `npig == 0: continue`
        rep = weights[f.img] * valid[f.group]
        idx = np.repeat(np.arange(len(f.img)), rep)
        copy = np.arange(len(idx)) - np.repeat(np.cumsum(rep) - rep, rep)
        # the resampled dataset's concatenation order (image, copy, position), then the stable sort by score
        order = idx[np.lexsort((f.pos[idx], copy, f.img[idx], -f.score[idx], f.group[idx]))]
        vg = np.flatnonzero(valid)
        q = np.zeros((n_t, n_r, len(vg)))
        n = len(order)
        if n:
            seg = f.group[order]
            lengths = np.bincount(seg, minlength=n_g)
            starts = np.cumsum(lengths) - lengths
            tp_c = np.cumsum(f.tp[:, order], axis=1)
            fp_c = np.cumsum(f.fp[:, order], axis=1)
            before = np.where(starts > 0, starts - 1, 0)
            tp_sum = (tp_c - np.where(starts > 0, tp_c[:, before], 0)[:, seg]).astype(float)
            fp_sum = (fp_c - np.where(starts > 0, fp_c[:, before], 0)[:, seg]).astype(float)
            rc = tp_sum / npig[seg]
            pr = tp_sum / (fp_sum + tp_sum + np.spacing(1))
            pr = _segmented_reverse_cummax(pr, seg, n_g)
            # first index of each (t, group) segment with rc >= threshold, by one searchsorted on dense ranks
            vals = np.unique(np.concatenate([rc.ravel(), REC_THRS]))
            m = len(vals)
            key = (np.arange(n_t)[:, None] * n_g + seg[None, :]) * m + np.searchsorted(vals, rc)
            thr_rank = np.searchsorted(vals, REC_THRS)
            qkey = ((np.arange(n_t)[:, None, None] * n_g + vg[None, None, :]) * m + thr_rank[None, :, None])
            hit = np.searchsorted(key.ravel(), qkey.ravel(), side="left").reshape(n_t, n_r, len(vg))
            local = hit - (np.arange(n_t)[:, None, None] * n + starts[vg][None, None, :])
            ok = local < lengths[vg][None, None, :]
            q[ok] = pr.ravel()[hit[ok]]
        out[:, :, f.group_k[vg], f.group_a[vg]] = q
        return out


def _segmented_reverse_cummax(pr: np.ndarray, seg: np.ndarray, n_seg: int) -> np.ndarray:
    """Right-to-left running maximum of each row of ``pr`` (T, n) restarted at every segment of ``seg`` (sorted):
    the reference's ``if pr[i] > pr[i-1]: pr[i-1] = pr[i]``. Exact: values are replaced by dense integer ranks and
    offset by segment, so no float is ever rounded."""
    vals, inv = np.unique(pr, return_inverse=True)
    inv = inv.reshape(pr.shape).astype(np.int64)
    off = (n_seg - 1 - seg).astype(np.int64) * len(vals)  # later-processed (earlier) segments rank above
    key = (inv + off[None, :])[:, ::-1]
    key = np.maximum.accumulate(key, axis=1)[:, ::-1]
    return vals[key - off[None, :]]


def records_from_eval_imgs(eval_imgs: list, image_ids: list, cat_ids: list, n_areas: int = 4,
                           max_det: int = 100) -> APRecords:
    """Flatten reference-shaped per-image records into :class:`APRecords`.

    Args:
        eval_imgs: K·A·N entries in the references' layout (index ``k·A·N + a·N + i``), each None or a dict with
            pycocotools keys (``dtScores``, ``dtMatches`` [T, D], ``dtIgnore`` [T, D], ``gtIgnore`` [G]) or lvis-api
            keys (``dt_scores``, ``dt_matches``, ``dt_ignore``, ``gt_ignore``).
        image_ids, cat_ids: the N image ids and K category ids of that layout.
        n_areas: A (4). max_det: detections kept per record (pycocotools slices ``[:maxDet]``).

    Raises:
        ValueError: ``eval_imgs`` does not have K·A·N entries.
    """
    n_img, n_cat = len(image_ids), len(cat_ids)
    if len(eval_imgs) != n_cat * n_areas * n_img:
        raise ValueError(f"eval_imgs has {len(eval_imgs)} entries, expected K*A*N = {n_cat}*{n_areas}*{n_img}")
    n_iou = len(IOU_THRS)
    cols: dict[str, list] = {k: [] for k in ("group", "img", "pos", "score", "tp", "fp", "rec_group", "rec_img",
                                              "rec_npig", "group_k", "group_a")}
    for k in range(n_cat):
        for a in range(n_areas):
            base = k * n_areas * n_img + a * n_img
            g = len(cols["group_k"])
            found = False
            for i in range(n_img):
                e = eval_imgs[base + i]
                if e is None:
                    continue
                found = True
                s = np.asarray(e.get("dtScores", e.get("dt_scores")), dtype=float)[:max_det]
                m = np.asarray(e.get("dtMatches", e.get("dt_matches")))
                ig = np.asarray(e.get("dtIgnore", e.get("dt_ignore")), dtype=bool)
                gi = np.asarray(e.get("gtIgnore", e.get("gt_ignore")))
                d = len(s)
                matched = (m.reshape(n_iou, -1)[:, :max_det] != 0) if d else np.zeros((n_iou, 0), bool)
                ig = ig.reshape(n_iou, -1)[:, :max_det] if d else np.zeros((n_iou, 0), bool)
                cols["rec_group"].append(g)
                cols["rec_img"].append(i)
                cols["rec_npig"].append(int(np.count_nonzero(gi == 0)))
                cols["group"].append(np.full(d, g, dtype=np.int64))
                cols["img"].append(np.full(d, i, dtype=np.int64))
                cols["pos"].append(np.arange(d, dtype=np.int64))
                cols["score"].append(s)
                cols["tp"].append(matched & ~ig)
                cols["fp"].append(~matched & ~ig)
            if found:
                cols["group_k"].append(k)
                cols["group_a"].append(a)

    def cat(name, dtype, axis=0, empty=(0,)):
        return np.concatenate(cols[name], axis=axis) if cols[name] else np.zeros(empty, dtype=dtype)

    flat = _Flat(group=cat("group", np.int64), img=cat("img", np.int64), pos=cat("pos", np.int64),
                 score=cat("score", float), tp=cat("tp", bool, 1, (n_iou, 0)), fp=cat("fp", bool, 1, (n_iou, 0)),
                 rec_group=np.asarray(cols["rec_group"], dtype=np.int64),
                 rec_img=np.asarray(cols["rec_img"], dtype=np.int64),
                 rec_npig=np.asarray(cols["rec_npig"], dtype=np.int64),
                 group_k=np.asarray(cols["group_k"], dtype=np.int64),
                 group_a=np.asarray(cols["group_a"], dtype=np.int64))
    return APRecords(image_ids=list(image_ids), cat_ids=list(cat_ids), n_iou=n_iou, flat=flat, max_det=max_det)


def _mean_defined(p: np.ndarray) -> float:
    p = p[p > -1]
    return float(np.mean(p)) if p.size else float("nan")


def coco_summary(precision: np.ndarray) -> dict[str, float]:
    """AP, AP50, AP75, APs, APm, APl (maxDets 100) of a [T, R, K, A] precision as ``COCOeval.summarize`` (NaN for
    the reference's -1)."""
    return {"AP": _mean_defined(precision[:, :, :, 0]), "AP50": _mean_defined(precision[0, :, :, 0]),
            "AP75": _mean_defined(precision[5, :, :, 0]), "APs": _mean_defined(precision[:, :, :, 1]),
            "APm": _mean_defined(precision[:, :, :, 2]), "APl": _mean_defined(precision[:, :, :, 3])}


def lvis_summary(precision: np.ndarray, cat_ids: list, frequency: dict) -> dict[str, float]:
    """AP .. APl, APr, APc, APf of a [T, R, K, A] precision as lvis-api ``LVISEval.summarize`` (category
    ``frequency`` id -> "r"/"c"/"f")."""
    out = coco_summary(precision)
    for f in ("r", "c", "f"):
        idx = [k for k, c in enumerate(cat_ids) if frequency.get(c) == f]
        out[f"AP{f}"] = _mean_defined(precision[:, :, idx, 0]) if idx else float("nan")
    return out

"""Two result sets on one ground truth: every metric of each, Δ = B − A, and a paired bootstrap over images.

Method (docs/evaluation.md §15):

1. Each result set is evaluated once by :class:`eval.evaluator.InstanceSegEvaluator` (the same numbers as
   ``rmbench eval``: the point estimates ``a`` and ``b`` are the engine's, which the tests hold equal to pycocotools,
   boundary-iou-api and lvis-api on the full set).
2. The per-image pieces every metric is a function of are kept: the per-image matching records of COCO mask AP,
   Boundary AP and AP* (:mod:`eval.accumulate`, from vernier's ``eval_imgs``), and per image the sums of F_npx over
   its matched pairs with their count, and the four pixel counts of boundary accuracy.
3. A resample draws as many images as the union of the ground truths' images, uniformly with replacement, **the same
   draw for A and B** (paired); each metric is re-accumulated with the draw's image counts as weights (no matching
   is redone, so a resample costs a sort and a cumulative sum per category, not an evaluation). Boundary F of a
   resample is Σ w_i·S_i / Σ w_i·C_i over images, boundary accuracy Σ w_i·correct_i / Σ w_i·n_i.
4. ``ci95`` is the percentile interval [2.5 %, 97.5 %] of the resampled Δ; ``p_le_0`` is the fraction of resamples
   with Δ ≤ 0 (a one-sided bootstrap p-value for "B is better"). A resample where a metric is undefined (no GT of a
   size range drawn) is left out of that metric's interval; ``defined`` counts the ones used.

Re-accumulation is exact: with weights w it gives the reference's numbers on the dataset in which image i appears
w_i times (tests/test_compare.py checks it against pycocotools run on such a dataset, built by brute force).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from .accumulate import APRecords, coco_summary, lvis_summary, records_from_eval_imgs
from .coco import AP_KEYS
from .engines import vernier_eval_imgs
from .errors import UsageError
from .evaluator import EvalParams, InstanceSegEvaluator
from .lvis_ap import LVIS_AP_KEYS, is_cocofied

__all__ = ["compare", "ModelPieces", "model_pieces", "COMPARE_METRICS", "bootstrap_deltas"]

log = logging.getLogger(__name__)

#: the metrics a comparison reports, in table order (``group.key``); AP* ones only with an LVIS ground truth
COMPARE_METRICS = tuple(f"coco.{k}" for k in AP_KEYS) + tuple(f"ap_star.{k}" for k in LVIS_AP_KEYS) + tuple(
    f"boundary_ap.{k}" for k in AP_KEYS) + ("boundary_f.F1px", "boundary_f.F3px", "boundary_f.F5px",
                                            "boundary_acc.boundary", "boundary_acc.non_boundary")


@dataclass
class ModelPieces:
    """What one result set contributes to a comparison.

    Attributes:
        metrics: ``{"group.key": value}`` on the full set (the evaluator's numbers).
        coco, boundary_ap, ap_star: per-image AP records (None where the group is not evaluated).
        lvis_frequency: category id -> "r" / "c" / "f" of the LVIS ground truth.
        f_sums: (N, n_tol) per-image sums of F over matched pairs; f_counts: (N,) their count;
        acc_sums: (N, 4) per-image boundary-accuracy pixel counts (n_band, correct_band, n_non, correct_non);
            all indexed by ``image_ids`` (the COCO ground truth's images, sorted).
        tolerances: the F_npx tolerances (pixels).
        empty: no detection at all; every metric is then 0 on every resample, as :meth:`InstanceSegEvaluator.evaluate`
            reports an empty results list.
    """

    metrics: dict[str, float]
    image_ids: list = field(default_factory=list)
    coco: APRecords | None = None
    boundary_ap: APRecords | None = None
    ap_star: APRecords | None = None
    lvis_frequency: dict = field(default_factory=dict)
    f_sums: np.ndarray | None = None
    f_counts: np.ndarray | None = None
    acc_sums: np.ndarray | None = None
    tolerances: tuple = (1, 3, 5)
    empty: bool = False


def model_pieces(gt: dict | None, results: list[dict], lvis_gt: dict | None = None,
                 lvis_results: list[dict] | None = None, params: EvalParams | None = None,
                 source=None) -> ModelPieces:
    """Evaluate one result set and keep its per-image pieces (see the module docstring).

    Raises:
        EvalInputError: as :meth:`InstanceSegEvaluator.process` (bad detections, unknown images).
        UsageError: a raw (not cocofied) LVIS ground truth: a comparison reports AP* (COCO results on cocofied LVIS).
    """
    params = params or EvalParams()
    if lvis_gt is not None and not is_cocofied(lvis_gt):
        raise UsageError("rmbench compare reports AP* against a cocofied LVIS file (rmbench cocofy-lvis); a raw LVIS "
                         "file is for LVIS-trained models, which compare does not cover yet")
    groups = (["coco", "boundary_f", "boundary_acc", "boundary_ap"] if gt is not None else []) + (
        ["ap_star"] if lvis_gt is not None else [])
    ev = InstanceSegEvaluator(gt, lvis_gt, groups, params)
    ev.process(results, source=source, lvis_results=lvis_results)
    out = ev.evaluate()
    metrics = {f"{g}.{k}": v for g, vals in out.metrics.items() for k, v in vals.items()
               if isinstance(v, float) or (isinstance(v, int) and not isinstance(v, bool))}
    pieces = ModelPieces(metrics=metrics, tolerances=tuple(params.boundary_f_tolerances),
                         empty=not ev._coco_results and not ev._lvis_results)
    jobs = params.jobs
    if gt is not None:
        pieces.image_ids = sorted(im["id"] for im in gt["images"])
        if ev._coco_results:
            pieces.coco = records_from_eval_imgs(*_eval_imgs(gt, ev._coco_results, "segm", False, params, jobs))
            pieces.boundary_ap = records_from_eval_imgs(*_eval_imgs(gt, ev._coco_results, "boundary", False, params,
                                                                    jobs))
        _pair_sums(pieces, ev, params)
    if lvis_gt is not None:
        pieces.lvis_frequency = {c["id"]: c.get("frequency") for c in lvis_gt["categories"]}
        if ev._lvis_results:
            pieces.ap_star = records_from_eval_imgs(*_eval_imgs(lvis_gt, ev._lvis_results, "segm", True, params, jobs))
    return pieces


def _eval_imgs(gt, results, iou, lvis, params, jobs):
    eval_imgs, img_ids, cat_ids, max_det = vernier_eval_imgs(gt, results, iou=iou, lvis=lvis,
                                                             dilation_ratio=params.boundary_dilation_ratio,
                                                             num_threads=jobs)
    return eval_imgs, img_ids, cat_ids, 4, max_det


def _pair_sums(pieces: ModelPieces, ev: InstanceSegEvaluator, params: EvalParams) -> None:
    """Per-image sums of F over matched pairs and of boundary-accuracy pixel counts (shape notes in
    :class:`ModelPieces`)."""
    index = {im: i for i, im in enumerate(pieces.image_ids)}
    n = len(index)
    n_tol = len(params.boundary_f_tolerances)
    pieces.f_sums, pieces.f_counts = np.zeros((n, n_tol)), np.zeros(n, dtype=np.int64)
    pieces.acc_sums = np.zeros((n, 4), dtype=np.int64)
    if not ev._coco_results:
        return
    mt, ms = ev.matches(), ev.pair_measures()
    for k, pair in enumerate(mt.pairs):
        i = index[pair["image_id"]]
        if ms.f and ms.f[k] is not None:
            res = ms.f[k][0]
            pieces.f_sums[i] += [r[0] for r in res]
            pieces.f_counts[i] += 1
        if ms.acc is not None and ms.acc_valid[k]:
            pieces.acc_sums[i] += ms.acc[k, 0]


def _ratio(num: float, den: float) -> float:
    return num / den if den else float("nan")


def resampled_metrics(p: ModelPieces, w_coco: np.ndarray | None, w_lvis: np.ndarray | None) -> dict[str, float]:
    """Every metric of ``p`` on a resample given by per-image weights (None: the full set, each image once).

    ``w_coco`` indexes ``p.image_ids`` (the COCO ground truth's images), ``w_lvis`` the LVIS records' images.
    """
    if p.empty:
        return {k: 0.0 for k in p.metrics if not k.endswith(("num_matched", "num_gt"))}
    out: dict[str, float] = {}
    if p.coco is not None:
        out.update({f"coco.{k}": v for k, v in coco_summary(p.coco.precision(w_coco)).items()})
    if p.boundary_ap is not None:
        out.update({f"boundary_ap.{k}": v for k, v in coco_summary(p.boundary_ap.precision(w_coco)).items()})
    if p.ap_star is not None:
        s = lvis_summary(p.ap_star.precision(w_lvis), p.ap_star.cat_ids, p.lvis_frequency)
        out.update({f"ap_star.{k}": s[k] for k in LVIS_AP_KEYS})
    if p.f_sums is not None:
        w = np.ones(len(p.image_ids), dtype=np.int64) if w_coco is None else w_coco
        fs, fc = w @ p.f_sums, int(w @ p.f_counts)
        for j, t in enumerate(p.tolerances):
            out[f"boundary_f.F{_tol(t)}px"] = _ratio(float(fs[j]), fc)
        acc = w @ p.acc_sums
        out["boundary_acc.boundary"] = _ratio(int(acc[1]), int(acc[0]))
        out["boundary_acc.non_boundary"] = _ratio(int(acc[3]), int(acc[2]))
    return out


def _tol(t) -> str:
    t = float(t)
    return str(int(t)) if t.is_integer() else f"{t:g}"


def bootstrap_deltas(a: ModelPieces, b: ModelPieces, resamples: int, seed: int,
                     progress: bool = True) -> tuple[dict[str, np.ndarray], list]:
    """The paired bootstrap: for each resample, the same image draw for A and B, and Δ = B − A per metric.

    Returns:
        ({metric: (resamples,) Δ values, NaN where undefined}, the unit images drawn from (sorted ids)).
    """
    coco_ids = list(a.image_ids)
    lvis_ids = list(a.ap_star.image_ids) if a.ap_star is not None else (
        list(b.ap_star.image_ids) if b.ap_star is not None else [])
    universe = sorted(set(coco_ids) | set(lvis_ids))
    pos = {im: i for i, im in enumerate(universe)}
    coco_idx = np.asarray([pos[i] for i in coco_ids], dtype=np.int64)
    lvis_idx = np.asarray([pos[i] for i in lvis_ids], dtype=np.int64)
    rng = np.random.default_rng(seed)
    deltas: dict[str, list[float]] = {}
    n = len(universe)
    for _ in tqdm(range(resamples), desc="bootstrap", unit="resample", disable=not progress or resamples < 50):
        w = np.bincount(rng.integers(0, n, n), minlength=n)
        wc = w[coco_idx] if len(coco_idx) else None
        wl = w[lvis_idx] if len(lvis_idx) else None
        ma = resampled_metrics(a, wc, wl)
        mb = resampled_metrics(b, wc, wl)
        for k in ma.keys() & mb.keys():
            deltas.setdefault(k, []).append(mb[k] - ma[k])
    return {k: np.asarray(v, dtype=float) for k, v in deltas.items()}, universe


def compare(gt: dict | None, results_a: list[dict], results_b: list[dict], lvis_gt: dict | None = None,
            names: tuple[str, str] = ("a", "b"), resamples: int = 1000, seed: int = 0,
            params: EvalParams | None = None, sources: tuple = (None, None), progress: bool = True) -> dict:
    """Compare two result sets on the same ground truth(s) with a paired bootstrap over images.

    Args:
        gt: validated COCO ground truth (coco, Boundary AP, boundary F / accuracy) or None.
        results_a, results_b: the two parsed results lists (validated here against each ground truth).
        lvis_gt: validated *cocofied* LVIS ground truth for AP* (each detection goes to the ground truth of its
            image, as in ``rmbench eval``), or None.
        names: display names of A and B. resamples: bootstrap resamples (0: point estimates only). seed: the
            generator's seed (numpy ``default_rng``). params: :class:`EvalParams` of both evaluations.

    Returns:
        ``{"metrics": {"coco.AP": {"a", "b", "delta", "ci95": [lo, hi], "p_le_0", "defined"}, ...},
        "names": {"a", "b"}, "bootstrap": {"resamples", "seed", "unit": "image", "images", "method", "seconds"}}``;
        fractions in [0, 1] (Δ in [-1, 1]); ``ci95``/``p_le_0`` are None without resamples or when no resample
        defines the metric.

    Raises:
        UsageError: negative ``resamples``, equal names, no ground truth.
        EvalInputError: bad results (see :func:`eval.io.validate_results`).
    """
    if not isinstance(resamples, int) or isinstance(resamples, bool) or resamples < 0:
        raise UsageError(f"--bootstrap must be a non-negative integer, got {resamples!r}")
    if names[0] == names[1]:
        raise UsageError(f"the two result sets need different names, got {names[0]!r} twice (use --names a,b)")
    if gt is None and lvis_gt is None:
        raise UsageError("give at least one ground truth: --gt (COCO json) and/or --lvis-gt (cocofied LVIS json)")
    params = params or EvalParams()
    log.info("evaluating %s", names[0])
    pa = model_pieces(gt, results_a, lvis_gt, params=params, source=sources[0])
    log.info("evaluating %s", names[1])
    pb = model_pieces(gt, results_b, lvis_gt, params=params, source=sources[1])
    t0 = time.perf_counter()
    deltas, universe = bootstrap_deltas(pa, pb, resamples, seed, progress) if resamples else ({}, [])
    seconds = time.perf_counter() - t0
    table: dict[str, dict] = {}
    for key in COMPARE_METRICS:
        if key not in pa.metrics or key not in pb.metrics:
            continue
        va, vb = pa.metrics[key], pb.metrics[key]
        d = deltas.get(key, np.zeros(0))
        d = d[np.isfinite(d)]
        row = {"a": va, "b": vb, "delta": vb - va if _finite(va) and _finite(vb) else float("nan"),
               "ci95": None, "p_le_0": None, "defined": int(d.size)}
        if d.size:
            lo, hi = np.percentile(d, [2.5, 97.5])
            row["ci95"] = [float(lo), float(hi)]
            row["p_le_0"] = float(np.mean(d <= 0))
        table[key] = row
    return {"metrics": table, "names": {"a": names[0], "b": names[1]},
            "counts": {"a": {k: v for k, v in pa.metrics.items() if k.endswith(("num_matched", "num_gt"))},
                       "b": {k: v for k, v in pb.metrics.items() if k.endswith(("num_matched", "num_gt"))}},
            "bootstrap": {"resamples": resamples, "seed": seed, "unit": "image", "images": len(universe),
                          "interval": "percentile [2.5, 97.5] of the resampled delta",
                          "method": "paired: one image draw (uniform, with replacement, as many as the images) "
                                    "per resample for both sets; per-image matching kept, metrics re-accumulated",
                          "seconds": round(seconds, 3)}}


def _finite(v) -> bool:
    try:
        return isinstance(v, (int, float)) and math.isfinite(v)
    except OverflowError:  # an integer beyond float range
        return False

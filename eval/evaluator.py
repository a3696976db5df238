"""The unified evaluator: one object, every metric group, one metrics.json.

Follows detectron2's ``DatasetEvaluator`` contract (``reset()``, ``process(results)`` per batch,
``evaluate() -> dict``) so the training loop can stream detections into it and the CLI can feed it a file.
It never imports a model: any COCO results list (detectron2, mmdetection, ours) is scored the same way.

Metric groups (names used by ``--metrics`` and as metrics.json keys; every value a fraction in [0, 1]):

========================  =========================  ==================================================
group                     scored against             keys
========================  =========================  ==================================================
``coco``                  ``gt`` (COCO json)         AP, AP50, AP75, APs, APm, APl (as pycocotools)
``ap_star``               ``lvis_gt`` (cocofied)     AP .. APl, APr, APc, APf (as lvis-api LVISEval)
``lvis``                  ``lvis_gt`` (raw LVIS)     same keys, for LVIS-trained results
``boundary_f``            ``gt``                     F1px, F3px, F5px, num_matched, num_gt (appendix A.2)
``boundary_acc``          ``gt``                     boundary, non_boundary (Fig. 1, Sec. 3.3 Eq. 1)
``boundary_ap``           ``gt``                     AP .. APl with Boundary IoU (as boundary-iou-api)
``cityscapes``            ``gt`` + gtFine dir        AP, AP50 (official cityscapesscripts)
========================  =========================  ==================================================

``coco``, ``ap_star``, ``lvis`` and ``boundary_ap`` are computed by the engine of :attr:`EvalParams.engine`
(:mod:`eval.engines`: vernier in strict parity by default, the reference libraries with ``"reference"``).
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import io as eio
from .coco import AP_KEYS, boundary_ap, coco_mask_ap
from .detections import Detections
from .engines import DEFAULT_ENGINE, check_engine
from .errors import UsageError
from .lvis_ap import LVIS_AP_KEYS, is_cocofied, lvis_ap

log = logging.getLogger(__name__)

GROUPS = ("coco", "ap_star", "lvis", "boundary_f", "boundary_acc", "boundary_ap", "cityscapes")
#: a ground truth whose annotated images the results cover less than this fraction of gets a warning
COVERAGE_WARN_FRACTION = 0.5


class CoverageWarning(UserWarning):
    """The results cover only a small part of a ground truth's images (see ``InstanceSegEvaluator``)."""


def _refuse_coco_ids_on_raw_lvis(results, lvis_gt: dict, source, gt_path) -> None:
    """COCO-trained results (COCO category ids 1..90) scored against a raw LVIS file would silently score 0: refuse.

    ``results``: a parsed results list, or :class:`eval.detections.Detections`.

    Raises:
        EvalInputError: at least 20 detections, all with COCO ids, against an LVIS file of more than 90 categories.
    """
    if isinstance(results, Detections):
        ids = set(np.unique(results.category_id).tolist())
    else:
        ids = {r.get("category_id") for r in results if isinstance(r, dict) and isinstance(r.get("category_id"), int)}
    if len(results) >= 20 and len(lvis_gt.get("categories", [])) > 90 and ids <= eio.COCO_CATEGORY_IDS:
        raise eio.EvalInputError(
            source, f"every detection's category_id is a COCO id but {Path(gt_path).name if gt_path else '--lvis-gt'} "
            f"is a raw LVIS file ({len(lvis_gt['categories'])} categories): COCO-trained results would score 0 "
            f"against LVIS category ids",
            "for AP* make the cocofied ground truth with `rmbench cocofy-lvis lvis_v0.5_val.json OUT.json` and pass "
            "OUT.json as --lvis-gt (a raw LVIS file is for results of an LVIS-trained model)")
COCO_GT_GROUPS = ("coco", "boundary_f", "boundary_acc", "boundary_ap")


@dataclass
class EvalParams:
    """Parameters of every group; all recorded in metrics.json's provenance.

    Attributes:
        boundary_f_tolerances: n of F_npx, absolute radii in image pixels (appendix A.2: 1 and 3; we add 5).
        boundary_f_window: ``"full"`` (full image) or ``"crop"`` (RefineMask tool's enlarged GT box).
        boundary_acc_d: d̂ of the Fig. 1 boundary band, in image pixels (Sec. 3.3 Eq. 1).
        score_thr: positive predictions for boundary F / accuracy need score >= this (appendix A.2).
        boundary_dilation_ratio: Boundary IoU's d as a fraction of the image diagonal (0.02 COCO/LVIS).
        lvis_max_dets: detections per image for AP*/LVIS AP (300, lvis-api).
        keep_bbox: keep ``bbox`` in results (detection areas from boxes, RefineMask-compatible APs/m/l).
        engine: who computes ``coco``, ``boundary_ap``, ``ap_star`` and ``lvis``: ``"vernier"`` (strict parity,
            default) or ``"reference"`` (pycocotools, faster-coco-eval, lvis-api); :mod:`eval.engines`.
        jobs: worker processes of boundary F / boundary accuracy, threads of vernier and of the RLE check when
            reading results files (None: the usable CPUs).
    """

    boundary_f_tolerances: tuple[int, ...] = (1, 3, 5)
    boundary_f_window: str = "full"
    boundary_acc_d: float = 2.0
    score_thr: float = 0.05
    boundary_dilation_ratio: float = 0.02
    lvis_max_dets: int = 300
    keep_bbox: bool = False
    engine: str = DEFAULT_ENGINE
    jobs: int | None = None


@dataclass
class EvalOutput:
    """What :meth:`InstanceSegEvaluator.evaluate` returns.

    Attributes:
        metrics: ``{group: {key: value}}`` in metrics.json's shape.
        details: per-category AP and the extra summary numbers (AR, LVIS AR@300, ...) per group.
        per_instance: one row per non-crowd GT of ``gt`` (matched prediction, IoU, F values, accuracies).
        warnings: messages about the inputs (empty results, ...).
        timings: seconds per group, in evaluation order (the shared matching and pair pass count to the first
            group that needs them, ``boundary_f`` when it is evaluated).
    """

    metrics: dict[str, dict[str, Any]]
    details: dict[str, Any] = field(default_factory=dict)
    per_instance: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def available_groups(gt: dict | None, lvis_gt: dict | None, cityscapes_gt_dir=None) -> list[str]:
    """The groups the given inputs allow, in :data:`GROUPS` order."""
    out = []
    if gt is not None:
        out += ["coco", "boundary_f", "boundary_acc", "boundary_ap"]
    if lvis_gt is not None:
        out.append("ap_star" if is_cocofied(lvis_gt) else "lvis")
    if gt is not None and cityscapes_gt_dir is not None:
        out.append("cityscapes")
    return [g for g in GROUPS if g in out]


class InstanceSegEvaluator:
    """Streams COCO-format detections and scores them with every requested metric group.

    Args:
        gt: validated COCO ground truth (``coco``, boundary groups, ``cityscapes``) or None.
        lvis_gt: validated LVIS-format ground truth (``ap_star`` if cocofied, else ``lvis``) or None.
        metrics: group names; default every group the inputs allow (:func:`available_groups`).
        params: :class:`EvalParams`.
        gt_path, lvis_gt_path: for messages.
        cityscapes_gt_dir: a ``gtFine`` folder for the official Cityscapes AP (``cityscapes_split`` below it).

    Raises:
        ValueError: an unknown group, or a group whose ground truth was not given.
    """

    def __init__(self, gt: dict | None = None, lvis_gt: dict | None = None, metrics: list[str] | None = None,
                 params: EvalParams | None = None, gt_path=None, lvis_gt_path=None, cityscapes_gt_dir=None,
                 cityscapes_split: str = "val"):
        if gt is None and lvis_gt is None:
            raise UsageError("give at least one ground truth: a COCO json (--gt) or an LVIS json (--lvis-gt)")
        self.gt, self.lvis_gt = gt, lvis_gt
        self.gt_path, self.lvis_gt_path = gt_path, lvis_gt_path
        self.cityscapes_gt_dir, self.cityscapes_split = cityscapes_gt_dir, cityscapes_split
        self.params = params or EvalParams()
        check_engine(self.params.engine)
        if self.params.jobs is not None and (not isinstance(self.params.jobs, int) or self.params.jobs < 1):
            raise UsageError(f"jobs must be a positive integer, got {self.params.jobs!r}")
        allowed = available_groups(gt, lvis_gt, cityscapes_gt_dir)
        metrics = list(metrics) if metrics else allowed
        for m in metrics:
            if m not in GROUPS:
                raise UsageError(f"unknown metric group {m!r}; choose from {', '.join(GROUPS)}")
            if m not in allowed:
                need = {"ap_star": "--lvis-gt (a cocofied LVIS file)", "lvis": "--lvis-gt (a raw LVIS file)",
                        "cityscapes": "--gt (Cityscapes-as-COCO json) and --cityscapes-gt-dir"}.get(
                            m, "--gt (a COCO json)")
                raise UsageError(f"metric group {m!r} needs {need}")
        self.metrics = [g for g in GROUPS if g in metrics]
        self.reset()

    def reset(self) -> None:
        """Forget every processed detection."""
        self._coco_parts: list[Detections] = []
        self._lvis_parts: list[Detections] = []
        self._n = 0
        self._matches = None
        self._measures = None

    @property
    def _coco_results(self) -> Detections:
        """Every validated detection scored against ``gt`` (one :class:`Detections`, the batches concatenated)."""
        if len(self._coco_parts) != 1:
            self._coco_parts = [Detections.concat(self._coco_parts)]
        return self._coco_parts[0]

    @property
    def _lvis_results(self) -> Detections:
        """Every validated detection scored against ``lvis_gt``."""
        if len(self._lvis_parts) != 1:
            self._lvis_parts = [Detections.concat(self._lvis_parts)]
        return self._lvis_parts[0]

    def _uses(self) -> tuple[bool, bool]:
        return (any(g in self.metrics for g in COCO_GT_GROUPS + ("cityscapes",)),
                any(g in self.metrics for g in ("ap_star", "lvis")))

    def process_file(self, path, lvis_path=None) -> None:
        """Read, validate and store a COCO results json file: :meth:`process` of its contents (``lvis_path``: of
        ``lvis_results``), with the same refusals, at a fraction of the time and memory (:func:`eval.io.read_results`:
        typed decoding and column-wise checks; a file it cannot vouch for goes through the reference path).

        Raises:
            EvalInputError: as :meth:`process`, and for an unreadable or malformed file.
        """
        uses_gt, uses_lvis = self._uses()
        if lvis_path is None and uses_gt and uses_lvis:  # one file, two ground truths: split by image id
            self.process(eio.load_json(path, "results"), source=path)
            return
        if uses_gt:
            self._read_into(path, lvis=False)
        if uses_lvis:
            self._read_into(lvis_path if lvis_path is not None else path, lvis=True)

    def _read_into(self, path, lvis: bool) -> None:
        gt, gt_path = (self.lvis_gt, self.lvis_gt_path) if lvis else (self.gt, self.gt_path)
        raw_lvis = lvis and not is_cocofied(self.lvis_gt)
        cats = eio.COCO_CATEGORY_IDS if lvis and is_cocofied(self.lvis_gt) else None
        try:
            with warnings.catch_warnings():  # an empty list: evaluate() says it once
                warnings.simplefilter("ignore", eio.EmptyResultsWarning)
                dets = eio.read_results(path, gt, gt_path=gt_path, keep_bbox=self.params.keep_bbox,
                                        category_ids=cats, threads=self.params.jobs)
        except eio.EvalInputError:
            if raw_lvis:  # COCO-trained results against a raw LVIS file: say that, not "unknown category"
                parsed = eio.load_json(path, "results")
                if isinstance(parsed, list):
                    _refuse_coco_ids_on_raw_lvis(parsed, self.lvis_gt, path, self.lvis_gt_path)
            raise
        if raw_lvis:
            _refuse_coco_ids_on_raw_lvis(dets, self.lvis_gt, path, self.lvis_gt_path)
        if not lvis or not self._uses()[0]:
            self._n += len(dets)
        if len(dets):
            self._matches = self._measures = None
            (self._lvis_parts if lvis else self._coco_parts).append(dets)

    def process(self, results: list[dict], source=None, lvis_results: list[dict] | None = None) -> None:
        """Validate and store a batch of COCO-format detections.

        Each detection goes to every ground truth that holds its image (COCO val2017 and LVIS v0.5 val share
        images). ``lvis_results``, if given, are used for the LVIS groups instead of ``results``.

        Raises:
            EvalInputError: see :func:`eval.io.validate_results`; a detection whose image is in no ground truth.
        """
        if not isinstance(results, list):
            eio.validate_results(results, self.gt or self.lvis_gt, source)  # raises the not-a-list error
        self._n += len(results)
        uses_gt, uses_lvis = self._uses()
        split = lvis_results is None and uses_gt and uses_lvis
        if split:
            coco_part, lvis_part = self._route(results, source)
        else:
            coco_part = results if uses_gt else []
            lvis_part = (lvis_results if lvis_results is not None else results) if uses_lvis else []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", eio.EmptyResultsWarning)
            if uses_gt and coco_part:
                self._matches = self._measures = None
                self._coco_parts.append(Detections.from_records(eio.validate_results(
                    coco_part, self.gt, source, gt_path=self.gt_path, keep_bbox=self.params.keep_bbox)))
            if uses_lvis and lvis_part:
                if not is_cocofied(self.lvis_gt):
                    _refuse_coco_ids_on_raw_lvis(lvis_part, self.lvis_gt, source, self.lvis_gt_path)
                cats = eio.COCO_CATEGORY_IDS if is_cocofied(self.lvis_gt) else None
                self._lvis_parts.append(Detections.from_records(eio.validate_results(
                    lvis_part, self.lvis_gt, source, gt_path=self.lvis_gt_path, keep_bbox=self.params.keep_bbox,
                    category_ids=cats)))

    def _route(self, results: list, source) -> tuple[list, list]:
        """Split one results list between the COCO and the LVIS ground truth by image id."""
        coco_imgs = {im["id"] for im in self.gt["images"]}
        lvis_imgs = {im["id"] for im in self.lvis_gt["images"]}
        coco_part, lvis_part, unknown = [], [], None
        for i, r in enumerate(results):
            img = r.get("image_id") if isinstance(r, dict) else None
            if not isinstance(r, dict):
                raise eio.EvalInputError(source, "detection is not an object",
                                         "write {image_id, category_id, score, segmentation}", f"results[{i}]")
            if not isinstance(img, int) or isinstance(img, bool):
                raise eio.EvalInputError(source, f"image_id {img!r} is not an integer",
                                         "write image_id as an integer", f"results[{i}]")
            if img in coco_imgs:
                coco_part.append(r)
            if img in lvis_imgs:
                lvis_part.append(r)
            if img not in coco_imgs and img not in lvis_imgs and unknown is None:
                unknown = i
        if unknown is not None:
            if not (coco_part or lvis_part):  # nothing known anywhere: report it as a results file of another split
                eio.validate_results(results, self.gt, source, gt_path=self.gt_path)
            raise eio.EvalInputError(source,
                                     f"image_id {results[unknown].get('image_id')!r} is in neither ground truth",
                                     "drop detections of images outside the evaluated split", f"results[{unknown}]")
        return coco_part, lvis_part

    def evaluate(self) -> EvalOutput:
        """Score everything processed so far. Empty inputs give zeros and a warning, never a crash."""
        out = EvalOutput(metrics={})
        if self._n == 0 or (not self._coco_results and not self._lvis_results):
            msg = "the results list is empty: every metric is reported as 0"
            warnings.warn(msg, eio.EmptyResultsWarning, stacklevel=2)
            out.warnings.append(msg)
        empty = not self._coco_results and not self._lvis_results
        if not empty:
            coverage = self._coverage_warnings()
            out.warnings += coverage
            for msg in coverage:
                warnings.warn(msg, CoverageWarning, stacklevel=2)
        with warnings.catch_warnings():
            if empty:  # already warned once above; the per-group "nothing matched" warnings add nothing
                warnings.simplefilter("ignore", RuntimeWarning)
            self._evaluate_groups(out)
        if self._n == 0:
            for vals in out.metrics.values():
                for k, v in vals.items():
                    if isinstance(v, float) and math.isnan(v) and not k.startswith("num"):
                        vals[k] = 0.0
        return out

    def _coverage_warnings(self) -> list[str]:
        """A warning for each ground truth whose images the results mostly do not cover: every GT instance of an
        uncovered image counts as missed, so AP there measures the coverage, not the model (e.g. the bundled LVIS
        sample shares one image with coco_mini val: perfect COCO predictions then score AP* ≈ 0.5)."""
        out = []
        for gt, results, path, groups in ((self.gt, self._coco_results, self.gt_path, COCO_GT_GROUPS),
                                          (self.lvis_gt, self._lvis_results, self.lvis_gt_path, ("ap_star", "lvis"))):
            if gt is None or not any(g in self.metrics for g in groups):
                continue
            with_gt = {a["image_id"] for a in gt["annotations"]}
            covered = with_gt & set(np.unique(results.image_id).tolist())
            if with_gt and len(covered) < COVERAGE_WARN_FRACTION * len(with_gt):
                name = Path(path).name if path is not None else "the ground truth"
                out.append(f"the results cover {len(covered)} of the {len(with_gt)} images with annotations in {name} "
                           f"({', '.join(g for g in groups if g in self.metrics)}): every instance of the other images "
                           f"counts as missed, so these numbers measure the coverage, not the model. Fix: evaluate "
                           f"results for every image of the ground truth (or a ground truth of the images you ran)")
        return out

    def _evaluate_groups(self, out: EvalOutput) -> None:
        self._matches = self._measures = None
        for g in self.metrics:
            log.info("evaluating %s", g)
            t0 = time.perf_counter()
            metrics, details, rows = GROUP_FUNCS[g](self)
            out.timings[g] = time.perf_counter() - t0
            out.metrics[g] = metrics
            out.details[g] = details
            if rows:
                _merge_rows(out.per_instance, rows)

    def matches(self):
        """The positive prediction of every non-crowd GT (:func:`eval.matching.match`), computed once per
        :meth:`evaluate` and shared by boundary F and boundary accuracy."""
        if self._matches is None:
            from .matching import match

            self._matches = match(self.gt, self._coco_results, score_thr=self.params.score_thr, jobs=self.params.jobs)
        return self._matches

    def pair_measures(self):
        """The one pass over the matched pairs (:func:`eval.pair_pass.measure_pairs`) that boundary F and boundary
        accuracy share: each pair's masks decoded once, in crops, over ``params.jobs`` processes."""
        if self._measures is None:
            from .pair_pass import measure_pairs

            p = self.params
            self._measures = measure_pairs(
                self.matches(), tolerances=p.boundary_f_tolerances if "boundary_f" in self.metrics else (),
                f_window=p.boundary_f_window, acc_ds=(p.boundary_acc_d,) if "boundary_acc" in self.metrics else (),
                jobs=p.jobs)
        return self._measures


# -- the metric groups: name -> function(evaluator) -> (metrics, details, per-instance rows) ---------------------
def _coco(ev: InstanceSegEvaluator):
    r = coco_mask_ap(ev.gt, ev._coco_results, engine=ev.params.engine, num_threads=ev.params.jobs)
    return {k: r["summary"][k] for k in AP_KEYS}, r, []


def _boundary_ap(ev: InstanceSegEvaluator):
    r = boundary_ap(ev.gt, ev._coco_results, dilation_ratio=ev.params.boundary_dilation_ratio,
                    engine=ev.params.engine, num_threads=ev.params.jobs)
    return {k: r["summary"][k] for k in AP_KEYS}, r, []


def _lvis(ev: InstanceSegEvaluator):
    r = lvis_ap(ev.lvis_gt, ev._lvis_results, max_dets=ev.params.lvis_max_dets, engine=ev.params.engine,
                num_threads=ev.params.jobs)
    return {k: r["summary"][k] for k in LVIS_AP_KEYS}, r, []


def _boundary_f(ev: InstanceSegEvaluator):
    from .boundary_f import boundary_f

    p = ev.params
    r = boundary_f(ev.gt, ev._coco_results, tolerances=p.boundary_f_tolerances, window=p.boundary_f_window,
                   score_thr=p.score_thr, matches=ev.matches(), measures=ev.pair_measures())
    rows = r.pop("per_instance")
    keys = [f"F{n}px" for n in p.boundary_f_tolerances] + ["num_matched", "num_gt"]
    return ({k: r[k] for k in keys}, r,
            [{k: v for k, v in row.items() if not k.startswith(("P_", "R_"))} for row in rows])


def _boundary_acc(ev: InstanceSegEvaluator):
    from .boundary_acc import boundary_accuracy

    r = boundary_accuracy(ev.gt, ev._coco_results, d=ev.params.boundary_acc_d, score_thr=ev.params.score_thr,
                          matches=ev.matches(), measures=ev.pair_measures())
    rows = r.pop("per_instance", [])
    return {"boundary": r["boundary"], "non_boundary": r["non_boundary"]}, r, rows


def _cityscapes(ev: InstanceSegEvaluator):
    from .cityscapes import cityscapes_official_ap

    r = cityscapes_official_ap(ev.cityscapes_gt_dir, ev.gt, ev._coco_results, split=ev.cityscapes_split)
    return {"AP": r["AP"], "AP50": r["AP50"]}, r, []


#: metric group -> how it is computed (the order of :data:`GROUPS` is the order of evaluation)
GROUP_FUNCS = {
    "coco": _coco,
    "ap_star": _lvis,
    "lvis": _lvis,
    "boundary_f": _boundary_f,
    "boundary_acc": _boundary_acc,
    "boundary_ap": _boundary_ap,
    "cityscapes": _cityscapes,
}
assert tuple(GROUP_FUNCS) == GROUPS


def _merge_rows(rows: list[dict], new: list[dict]) -> None:
    """Merge per-instance rows keyed by ``gt_id`` (the first group's row order wins)."""
    index = {r["gt_id"]: r for r in rows}
    for r in new:
        if r["gt_id"] in index:
            index[r["gt_id"]].update(r)
        else:
            rows.append(dict(r))
            index[r["gt_id"]] = rows[-1]

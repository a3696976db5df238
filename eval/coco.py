"""COCO mask AP (pycocotools) and Boundary AP (boundary-iou-api), by vernier or by the references themselves.

Both run on the validated inputs of :mod:`eval.io` through the engine chosen in :mod:`eval.engines`: vernier in
strict parity (default) or the reference implementations (pycocotools, faster-coco-eval's boundary-iou-api port);
nothing here re-implements matching or interpolation, so the numbers are the references' numbers
(docs/evaluation.md §2, §9).
Values are fractions in [0, 1]; a slice that the reference marks undefined (-1: no GT in it) is NaN here
and ``null`` in metrics.json.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math

import numpy as np

from .engines import DEFAULT_ENGINE, check_engine, vernier_coco

log = logging.getLogger(__name__)

#: summary keys in COCOeval.stats order (docs/evaluation.md §2.2, data/golden/README.md §2)
COCO_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs100", "ARm100", "ARl100")
#: the keys metrics.json keeps for the ``coco`` and ``boundary_ap`` groups
AP_KEYS = COCO_STATS[:6]


def _undefined_to_nan(v: float) -> float:
    return float("nan") if v == -1 else float(v)


def pycocotools_coco(ds: dict):
    """A pycocotools ``COCO`` object built from an in-memory dataset dict (no file re-read).

    The annotation records are shallow copies: ``COCOeval._prepare`` replaces each GT's ``segmentation`` by its
    RLE in place, which must not leak into the caller's dict (the next metric group would see bytes RLEs).
    """
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = dict(ds, annotations=[dict(a) for a in ds["annotations"]])
        coco.createIndex()
    return coco


def _per_category(precision: np.ndarray, cat_ids: list[int]) -> dict[int, float]:
    """Per-category AP at area 'all', maxDets 100 (mean over IoU thresholds and recall points of defined entries)."""
    out = {}
    for k, c in enumerate(cat_ids):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        out[int(c)] = float(np.mean(p)) if p.size else float("nan")
    return out


def _summary(stats, precision, cat_ids) -> dict:
    summary = {k: _undefined_to_nan(v) for k, v in zip(COCO_STATS, stats)}
    return {"summary": summary, "per_category": _per_category(precision, cat_ids)}


def _zeros(cat_ids) -> dict:
    return {"summary": {k: 0.0 for k in COCO_STATS}, "per_category": {int(c): 0.0 for c in cat_ids}}


def coco_mask_ap(gt: dict, results: list[dict], engine: str = DEFAULT_ENGINE,
                 num_threads: int | None = None) -> dict:
    """COCO mask AP as pycocotools ``COCOeval(iouType='segm')`` with default ``Params`` computes it.

    Args:
        gt: validated COCO ground truth (:func:`eval.io.validate_gt`).
        results: validated results (:func:`eval.io.validate_results`): RLE masks at image size.
        engine: ``"vernier"`` (strict parity, :mod:`eval.engines`) or ``"reference"`` (pycocotools itself).
        num_threads: vernier's threads (default: the usable CPUs); the reference is single-threaded.

    Returns:
        ``{"summary": {AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs100, ARm100, ARl100},
        "per_category": {category_id: AP}}``, fractions. An empty results list gives zeros
        (pycocotools itself would raise).

    Source: pycocotools 2.0.11 ``cocoeval.py`` (IoU 0.50:0.05:0.95, 101 recall points, maxDets 1/10/100,
    inclusive area ranges 32² / 96²); docs/evaluation.md §2.
    """
    cat_ids = sorted(c["id"] for c in gt["categories"])
    if not results:
        return _zeros(cat_ids)
    if check_engine(engine) == "vernier":
        return _summary(*vernier_coco(gt, results, "segm", num_threads=num_threads))
    from pycocotools.cocoeval import COCOeval

    coco_gt = pycocotools_coco(gt)
    with contextlib.redirect_stdout(io.StringIO()) as buf:
        coco_dt = coco_gt.loadRes([dict(r) for r in results])
        ev = COCOeval(coco_gt, coco_dt, iouType="segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    log.debug("pycocotools summary:\n%s", buf.getvalue())
    return _summary(ev.stats, ev.eval["precision"], ev.params.catIds)


def boundary_ap(gt: dict, results: list[dict], dilation_ratio: float = 0.02, engine: str = DEFAULT_ENGINE,
                num_threads: int | None = None) -> dict:
    """Boundary AP (Cheng et al., CVPR 2021) through faster-coco-eval ``COCOeval_faster(iouType='boundary')``.

    The matching IoU of a (detection, non-crowd GT) pair is min(mask IoU, Boundary IoU), the boundary band
    being the pixels within d = max(1, round(ratio · image diagonal)) of the contour (chessboard distance,
    image border counted as contour); crowd GTs keep the crowd mask IoU. Everything else is COCO AP.

    Args:
        gt, results: as :func:`coco_mask_ap`.
        dilation_ratio: 0.02 for COCO/LVIS (boundary-iou-api default), 0.005 for Cityscapes.
        engine: ``"vernier"`` (strict parity with boundary-iou-api, :mod:`eval.engines`) or ``"reference"``
            (faster-coco-eval's port). num_threads: as :func:`coco_mask_ap`.

    Returns:
        Same shape as :func:`coco_mask_ap`.

    Source: bowenc0221/boundary-iou-api ``coco_instance_api``; faster-coco-eval 1.8.0 reproduces it to 1e-16
    (data/golden/README.md §4, docs/evaluation.md §9).
    """
    cat_ids = sorted(c["id"] for c in gt["categories"])
    if not results:
        return _zeros(cat_ids)
    if check_engine(engine) == "vernier":
        return _summary(*vernier_coco(gt, results, "boundary", dilation_ratio, num_threads=num_threads))
    from faster_coco_eval import COCO as FCOCO
    from faster_coco_eval import COCOeval_faster

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = FCOCO(dict(gt, annotations=[dict(a) for a in gt["annotations"]]))  # it too rewrites GT masks
        coco_dt = coco_gt.loadRes([dict(r) for r in results])
        ev = COCOeval_faster(coco_gt, coco_dt, iouType="boundary", boundary_dilation_ratio=dilation_ratio,
                             print_function=log.debug)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return _summary(ev.stats[:12], ev.eval["precision"], ev.params.catIds)


def is_nan(v) -> bool:
    return isinstance(v, float) and math.isnan(v)

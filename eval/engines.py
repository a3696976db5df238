"""Which implementation computes COCO mask AP, Boundary AP, AP* and LVIS AP: ``vernier`` (default) or ``reference``.

``reference`` runs the original libraries: pycocotools 2.0.11 ``COCOeval(iouType='segm')`` for COCO mask AP,
faster-coco-eval 1.8.0 ``COCOeval_faster(iouType='boundary')`` (the boundary-iou-api port) for Boundary AP and
lvis-api 0.5.3 ``LVISEval`` for AP* / LVIS AP. ``vernier`` runs vernier 0.5.4's Rust core in
``parity_mode="strict"``, which reproduces those libraries' matching, sorting, interpolation and summary
(its quirks survey: docs/engineering/pycocotools-quirks.md upstream) at a fraction of their time and memory.

How the two agree is not taken on trust: ``tests/test_eval_engines.py`` runs both on every test run (golden set A,
its bbox-area variant, AP*, a raw LVIS file with r/c/f classes, and constructed sets with score ties, crowds,
polygons, uncompressed RLE, > 100 / > 300 detections per image, empty images and classes) and requires every
summary stat, every per-category AP and the whole precision array to agree to 1e-12 (they agree to 0.0 on
every set so far; faster-coco-eval itself is 1.1e-16 off boundary-iou-api on set A, vernier 0.0).
docs/evaluation.md §2.5 lists what is checked, and the one place the references disagree with each other (Boundary
IoU on 1-pixel-high images: faster-coco-eval differs from boundary-iou-api there, vernier does not).

Conventions reproduced for the vernier calls (each one a reference's, not ours):

- detection area: pycocotools ``loadRes`` takes it from the mask (``mask.area``) unless the first result has a
  ``bbox``, in which case from the box (w·h) — vernier ``dt_area="mask"`` / ``"bbox"``;
- vernier's native API wants a ``bbox`` per detection: without ``--keep-bbox`` it gets ``mask.toBbox`` of the
  mask, which is what ``loadRes`` would store (and segm IoU never reads it);
- LVIS: ``LVISResults`` keeps the top 300 detections per image *before* the federated filter — vernier
  ``max_dets_per_image=300`` on a dataset from ``CocoDataset.from_lvis_json`` — and the 13-number LVIS summary
  (``summarize_lvis``), not COCO's 12-number one.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import msgspec
import numpy as np

from .errors import UsageError

log = logging.getLogger(__name__)

#: ``--engine`` choices
ENGINES = ("vernier", "reference")
DEFAULT_ENGINE = "vernier"
#: the pinned release whose strict parity the tests establish (pyproject.toml pins the same)
VERNIER_VERSION = "0.5.4"

_COCO_MAX_DETS = [1, 10, 100]


def check_engine(engine: str) -> str:
    """Return ``engine`` if it is usable here.

    Raises:
        UsageError: an unknown name, or ``vernier`` when the package is not importable (the fix names both ways
            out: install the pinned release, or ``--engine reference``).
    """
    if engine not in ENGINES:
        raise UsageError(f"unknown --engine {engine!r}; choose from {', '.join(ENGINES)}")
    if engine == "vernier":
        try:
            import vernier  # noqa: F401
        except ImportError as exc:
            raise UsageError(f"--engine vernier needs the vernier package ({exc}). Fix: pip install "
                             f"vernier=={VERNIER_VERSION} (it is a dependency of this project: `make setup`), or "
                             f"pass --engine reference to run pycocotools / lvis-api / faster-coco-eval") from None
    return engine


def engine_versions(engine: str) -> dict[str, str]:
    """The versions of the libraries an engine runs (for provenance)."""
    from importlib import metadata

    names = ["vernier"] if engine == "vernier" else ["pycocotools", "lvis", "faster-coco-eval"]
    out = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = "not installed"
    return out


def usable_cpus() -> int:
    """The CPUs this process may use: the default of ``--jobs`` (vernier's threads, the pair pass's and the
    matching's worker processes)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


# -- datasets ------------------------------------------------------------------------------------------------------
_DATASETS: list[tuple[Any, bool, Any]] = []  # (gt dict, lvis?, vernier CocoDataset), most recent last


def vernier_dataset(gt: dict, lvis: bool = False):
    """vernier's parsed handle of a validated GT dict, built once per dict (the same object) and reused.

    ``lvis=True`` parses it with the federated fields (``neg_category_ids``, ``not_exhaustive_category_ids``,
    category ``frequency``) as lvis-api reads them.
    """
    from vernier.instance import CocoDataset

    for g, lv, handle in _DATASETS:
        if g is gt and lv == lvis:
            return handle
    # msgspec: the same json as json.dumps (numbers round-trip; the validated GT has no NaN) at ~7x its speed
    payload = msgspec.json.encode(_with_gt_boxes(gt))
    handle = CocoDataset.from_lvis_json(payload) if lvis else CocoDataset.from_json(payload)
    _DATASETS.append((gt, lvis, handle))
    del _DATASETS[:-2]  # the GT of a COCO and an LVIS group at most; the dicts stay alive while cached
    return handle


def _with_gt_boxes(gt: dict) -> dict:
    """``gt`` with a ``bbox`` on every annotation: vernier's parser requires one, pycocotools' segm and boundary
    evaluation never reads it (tests/test_eval_engines.py checks that boxes far off the masks change nothing), so a
    missing one gets the mask's tight box."""
    if all("bbox" in a for a in gt["annotations"]):
        return gt
    from pycocotools import mask as mask_utils

    from .masks import segm_to_rle

    sizes = {im["id"]: (im["height"], im["width"]) for im in gt["images"]}
    anns = [a if "bbox" in a else dict(a, bbox=mask_utils.toBbox(segm_to_rle(a["segmentation"], *sizes[a["image_id"]]))
                                       .tolist()) for a in gt["annotations"]]
    return dict(gt, annotations=anns)


def _detections(results) -> tuple[list[dict] | list[dict[str, Any]], str]:
    """vernier detections from validated results and the area rule ``loadRes`` would apply to them.

    :class:`eval.detections.Detections` go as one array batch per image (:meth:`~eval.detections.Detections.
    image_batches`: boxes, scores, labels, RLE bytes; no per-detection dict), with the masks' toBbox boxes computed
    while validating; a plain list of normalised dicts as result dicts with a ``bbox``. Either way vernier sees
    each image's detections in list order, which is all pycocotools' stable sorts depend on; detection ids are not
    carried by the batches, so :func:`vernier_eval_imgs` (whose records name them) uses :func:`_detection_dicts`.
    """
    from .detections import Detections

    if isinstance(results, Detections):
        return results.image_batches(), "bbox" if results.bbox is not None else "mask"
    return _detection_dicts(results)


def _detection_dicts(results) -> tuple[list[dict], str]:
    """vernier result dicts (ids 1..N by list position, as ``loadRes`` assigns them) and the area rule."""
    from pycocotools import mask as mask_utils

    from .detections import Detections

    if isinstance(results, Detections):
        boxes = (results.bbox if results.bbox is not None else results.mask_box).tolist()
        dicts = [dict(r, bbox=b) for r, b in zip(results, boxes)]
        return dicts, "bbox" if results.bbox is not None else "mask"
    if "bbox" in results[0]:  # --keep-bbox: loadRes takes its bbox branch (area = w * h)
        return results, "bbox"
    boxes = mask_utils.toBbox([r["segmentation"] for r in results])
    return [dict(r, bbox=b) for r, b in zip(results, boxes.tolist())], "mask"


def vernier_coco(gt: dict, results: list[dict], iou: str = "segm", dilation_ratio: float = 0.02,
                 num_threads: int | None = None) -> tuple[list[float], np.ndarray, list[int]]:
    """COCO mask AP (``iou="segm"``) or Boundary AP (``iou="boundary"``) through vernier in strict parity.

    Args:
        gt: validated COCO ground truth. results: validated, non-empty results (:func:`eval.io.validate_results`).
        dilation_ratio: Boundary IoU's band as a fraction of the image diagonal.
        num_threads: vernier worker threads (default: :func:`usable_cpus`).

    Returns:
        (the 12 COCOeval stats, ``precision`` [T=10, R=101, K, A=4, M=3] as pycocotools ``eval['precision']``,
        the K category ids in sorted order).
    """
    from vernier import _core

    ds = vernier_dataset(gt)
    dts, dt_area = _detections(results)
    kw = dict(parity_mode="strict", max_dets_per_image=_COCO_MAX_DETS[-1], use_cats=True, dt_area=dt_area,
              num_threads=num_threads or usable_cpus())
    if iou == "segm":
        grid = _core.evaluate_segm_grid(ds, dts, **kw)
    elif iou == "boundary":
        grid = _core.evaluate_boundary_grid(ds, dts, dilation_ratio=dilation_ratio, **kw)
    else:
        raise UsageError(f"iou must be 'segm' or 'boundary', got {iou!r}")
    acc = grid.accumulate(_COCO_MAX_DETS)
    stats = list(acc.summarize(_COCO_MAX_DETS).stats)
    return stats, np.asarray(acc.precision), sorted(c["id"] for c in gt["categories"])


def vernier_lvis(lvis_gt: dict, results: list[dict], max_dets: int = 300,
                 num_threads: int | None = None) -> tuple[list[float], np.ndarray, list[int]]:
    """AP* / LVIS AP through vernier in strict parity with lvis-api 0.5.3 (federated rules, top ``max_dets`` per
    image kept before the federated filter, the LVIS summary).

    Returns:
        (the 13 LVISEval stats in :data:`eval.lvis_ap.LVIS_ALL_KEYS` order, ``precision`` [T, R, K, A] as lvis-api
        ``eval['precision']``, the K category ids in sorted order).
    """
    from vernier import _core

    ds = vernier_dataset(lvis_gt, lvis=True)
    dts, dt_area = _detections(results)
    grid = _core.evaluate_segm_grid(ds, dts, parity_mode="strict", max_dets_per_image=max_dets, use_cats=True,
                                    dt_area=dt_area, num_threads=num_threads or usable_cpus())
    acc = grid.accumulate([max_dets])
    stats = list(acc.summarize_lvis(ds, [max_dets]).stats)
    return stats, np.asarray(acc.precision)[..., 0], sorted(c["id"] for c in lvis_gt["categories"])


def vernier_eval_imgs(gt: dict, results: list[dict], iou: str = "segm", lvis: bool = False,
                      dilation_ratio: float = 0.02, num_threads: int | None = None) -> tuple[list, list, list, int]:
    """Per-image evaluation records in the references' layout, for re-accumulation (:mod:`eval.accumulate`).

    vernier in strict parity with ``retain_meta=True``; its ``eval_imgs()`` equals pycocotools' ``evalImgs`` (segm),
    lvis-api's ``eval_imgs`` (``lvis=True``) field by field (tests/test_compare.py).

    Args:
        gt, results: validated ground truth and non-empty results. iou: ``"segm"`` or ``"boundary"`` (COCO only).
        lvis: federated LVIS rules, 300 detections per image.

    Returns:
        (eval_imgs [K·A·N entries, None or a dict with ``dtScores``, ``dtMatches``, ``dtIgnore``, ``gtIgnore``, ...],
        the N image ids in sorted order, the K category ids in sorted order, detections kept per image).
    """
    from vernier import _core

    ds = vernier_dataset(gt, lvis=lvis)
    dts, dt_area = _detection_dicts(results)
    max_det = 300 if lvis else _COCO_MAX_DETS[-1]
    kw = dict(parity_mode="strict", max_dets_per_image=max_det, use_cats=True, dt_area=dt_area,
              num_threads=num_threads or usable_cpus(), retain_meta=True)
    if iou == "segm":
        grid = _core.evaluate_segm_grid(ds, dts, **kw)
    elif iou == "boundary" and not lvis:
        grid = _core.evaluate_boundary_grid(ds, dts, dilation_ratio=dilation_ratio, **kw)
    else:
        raise UsageError(f"iou must be 'segm' or 'boundary' (COCO only), got {iou!r}")
    return (grid.eval_imgs(), sorted(im["id"] for im in gt["images"]), sorted(c["id"] for c in gt["categories"]),
            max_det)

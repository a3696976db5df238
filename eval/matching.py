"""The one matching step of our own boundary metrics: each GT instance's positive prediction.

RefineMask appendix A.2 (docs/evaluation.md §6.2): for every **non-crowd** GT annotation, in GT-file order, the
candidates are the results of the same image and category with ``score >= score_thr`` (0.05); the one with the
highest mask IoU (pycocotools ``mask.iou(cand_rles, [gt_rle], [0])``; exact ties -> first in results-list order)
is the *positive prediction* if its IoU is ``>= iou_thr`` (0.5), otherwise the GT is skipped (not counted as 0).
No one-to-one matching: one prediction may serve several GTs.

:func:`match` computes this once per evaluation as a :class:`Matches`; boundary F (:mod:`eval.boundary_f`),
boundary accuracy (:mod:`eval.boundary_acc`) and the evaluator share it, with the RLEs it built, so every GT and
prediction RLE is built once.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from eval.detections import Detections
from eval.engines import usable_cpus
from eval.errors import UsageError
from eval.masks import segm_to_rle

__all__ = ["Matches", "match", "match_positive_predictions", "refinemask_window", "gt_bbox", "MATCH_KEYS"]

#: keys of one matched pair (``Matches.pairs``)
MATCH_KEYS = ("gt_id", "image_id", "category_id", "pred_index", "score", "mask_iou")


@dataclass
class Matches:
    """The positive prediction of every non-crowd GT (the output of :func:`match`).

    Attributes:
        pairs: one dict per matched GT, in GT-file order, with :data:`MATCH_KEYS` (``pred_index`` = 0-based position
            in the results list; ``mask_iou`` a fraction).
        skipped_gt_ids: ids of non-crowd GTs without a positive prediction, in file order.
        annotations: the non-crowd GT annotations, in file order.
        image_sizes: image id -> (height, width) in pixels.
        gt_rles: gt id -> compressed RLE of each matched GT.
        pred_rles: result index -> compressed RLE of every candidate prediction that was compared.
        score_thr, iou_thr: the rule used.
    """

    pairs: list[dict[str, Any]]
    skipped_gt_ids: list[int]
    annotations: list[dict]
    image_sizes: dict[Any, tuple[int, int]]
    gt_rles: dict[Any, dict] = field(repr=False)
    pred_rles: dict[int, dict] = field(repr=False)
    score_thr: float = 0.05
    iou_thr: float = 0.5

    def by_image(self) -> dict[Any, list[int]]:
        """image id -> indices into :attr:`pairs`, in pair order."""
        out: dict[Any, list[int]] = defaultdict(list)
        for k, m in enumerate(self.pairs):
            out[m["image_id"]].append(k)
        return out

    def annotation(self, gt_id: Any) -> dict:
        """The GT annotation of ``gt_id`` (one of :attr:`annotations`)."""
        if not hasattr(self, "_ann_by_id"):
            self._ann_by_id = {a["id"]: a for a in self.annotations}
        return self._ann_by_id[gt_id]


def _image_sizes(gt: dict) -> dict[Any, tuple[int, int]]:
    if not isinstance(gt, dict) or "images" not in gt or "annotations" not in gt:
        raise UsageError("gt must be a parsed COCO-format dict with 'images' and 'annotations'")
    sizes: dict[Any, tuple[int, int]] = {}
    for img in gt["images"]:
        try:
            sizes[img["id"]] = (int(img["height"]), int(img["width"]))
        except KeyError as exc:
            raise UsageError(f"gt image record {img.get('id')!r} lacks {exc.args[0]!r}") from None
    return sizes


def _group_results(results, score_thr: float) -> dict[tuple[Any, Any], list[int]]:
    """(image_id, category_id) -> indices into ``results`` with score >= score_thr, in list order."""
    if isinstance(results, Detections):  # the columns: one stable sort instead of a loop over dicts
        keep = np.flatnonzero(results.score >= score_thr)
        keys = np.stack([results.image_id[keep], results.category_id[keep]], axis=1)
        order = np.lexsort((keep, keys[:, 1], keys[:, 0]))
        keys, keep = keys[order], keep[order]
        if not keep.size:
            return {}
        starts = np.flatnonzero(np.concatenate(([True], (keys[1:] != keys[:-1]).any(axis=1))))
        return {(int(keys[a, 0]), int(keys[a, 1])): idx.tolist()
                for a, idx in zip(starts, np.split(keep, starts[1:]))}
    groups: dict[tuple[Any, Any], list[int]] = defaultdict(list)
    for i, r in enumerate(results):
        try:
            if r["score"] >= score_thr:
                groups[(r["image_id"], r["category_id"])].append(i)
        except KeyError as exc:
            raise UsageError(f"result {i} lacks the key {exc.args[0]!r}") from None
    return groups


#: fewer results than this are matched in-process by default (starting workers costs more than it saves)
PARALLEL_MIN_RESULTS = 50_000
_SHARED: tuple | None = None  # what forked matching workers read (inherited, never pickled)


def _match_chunk(ann_idx: list[int]) -> tuple[dict, dict, dict]:
    """Match the annotations ``ann_idx`` of :data:`_SHARED`: (index -> pair dict or None, gt RLEs, pred RLEs).

    One ``mask_utils.iou`` call per (image, category): the candidates × GT matrix, each mask decoded once (a call
    per GT decoded every candidate again for every GT of its class). Column j of the matrix holds exactly the
    IoUs a call for GT j alone returns, so the choice below is the same.
    """
    anns, groups, results, sizes, iou_thr = _SHARED
    columns = isinstance(results, Detections)
    outcome: dict[int, Any] = {}
    gt_rles: dict[Any, dict] = {}
    pred_rles: dict[int, dict] = {}
    by_group: dict[tuple[Any, Any], list[int]] = defaultdict(list)
    for j in ann_idx:
        by_group[(anns[j]["image_id"], anns[j]["category_id"])].append(j)
    for key, js in by_group.items():
        cand = groups.get(key)
        if not cand:
            outcome.update((j, None) for j in js)
            continue
        img_id = key[0]
        h, w = sizes[img_id]
        g_rles = [segm_to_rle(anns[j]["segmentation"], h, w) for j in js]
        cand_rles = []
        for i in cand:
            rle = results.rle(i) if columns else segm_to_rle(results[i]["segmentation"], h, w)
            pred_rles[i] = rle
            cand_rles.append(rle)
        ious = np.asarray(mask_utils.iou(cand_rles, g_rles, [0] * len(js)), dtype=np.float64)
        ious = ious.reshape(len(cand), len(js))
        for col, j in enumerate(js):
            best = int(np.argmax(ious[:, col]))  # first maximum = first in results-list order
            if not ious[best, col] >= iou_thr:
                outcome[j] = None
                continue
            ann = anns[j]
            gt_rles[ann["id"]] = g_rles[col]
            pi = cand[best]
            outcome[j] = {"gt_id": ann["id"], "image_id": img_id, "category_id": ann["category_id"],
                          "pred_index": pi, "score": float(results.score[pi] if columns else results[pi]["score"]),
                          "mask_iou": float(ious[best, col])}
    return outcome, gt_rles, pred_rles


def _match_parallel(anns, groups, results, sizes, iou_thr, jobs) -> list[tuple[dict, dict, dict]]:
    """:func:`_match_chunk` over all annotations: in this process, or in ``jobs`` forked workers, split by image."""
    import sys

    global _SHARED
    if jobs is None:
        jobs = usable_cpus()
    _SHARED = (anns, groups, results, sizes, iou_thr)
    try:
        fork_ok = sys.platform == "linux" and "torch" not in sys.modules
        if jobs <= 1 or not fork_ok or len(anns) < 2:
            return [_match_chunk(list(range(len(anns))))]
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import get_context

        by_image: dict[Any, list[int]] = defaultdict(list)
        for j, a in enumerate(anns):
            by_image[a["image_id"]].append(j)
        images = list(by_image.values())
        n_chunks = min(len(images), jobs * 8)
        chunks = [[j for im in images[c::n_chunks] for j in im] for c in range(n_chunks)]
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("fork")) as pool:
            return list(pool.map(_match_chunk, chunks))
    finally:
        _SHARED = None


def match(gt: dict, results: list[dict], score_thr: float = 0.05, iou_thr: float = 0.5,
          jobs: int | None = None) -> Matches:
    """The positive prediction of every non-crowd GT instance (RefineMask appendix A.2).

    Args:
        gt: parsed COCO-format GT (``images`` with ``height``/``width`` in pixels, ``annotations``); cocofied LVIS
            files work too (a missing ``iscrowd`` counts as 0).
        results: COCO results with ``image_id``, ``category_id``, ``score`` and ``segmentation`` (compressed RLE
            with str/bytes counts, uncompressed RLE or polygons, rasterised at the image size).
        score_thr: candidates need ``score >= score_thr``. iou_thr: the best candidate needs mask IoU ``>= iou_thr``.
        jobs: worker processes (forked, split by image; in-process once torch is loaded or for fewer than
            :data:`PARALLEL_MIN_RESULTS` results unless given). The result does not depend on it.

    Raises:
        UsageError: ``gt`` is not a COCO-format dict, an image lacks its size, an annotation refers to an unknown
            image, or a result lacks a required key.
    """
    sizes = _image_sizes(gt)
    anns = [a for a in gt["annotations"] if not a.get("iscrowd", 0)]
    for ann in anns:
        if ann["image_id"] not in sizes:
            raise UsageError(f"annotation {ann.get('id')!r} refers to unknown image {ann['image_id']!r}")
    groups = _group_results(results, score_thr)
    jobs = 1 if jobs is None and len(results) < PARALLEL_MIN_RESULTS else jobs
    parts = _match_parallel(anns, groups, results, sizes, iou_thr, jobs)
    pred_rles: dict[int, dict] = {}
    gt_rles: dict[Any, dict] = {}
    pairs: list[dict[str, Any]] = []
    skipped: list[int] = []
    outcome: dict[int, Any] = {}
    for part_outcome, part_gt, part_pred in parts:
        outcome.update(part_outcome)
        gt_rles.update(part_gt)
        pred_rles.update(part_pred)
    for j, ann in enumerate(anns):  # GT-file order, whatever the split
        o = outcome[j]
        if o is None:
            skipped.append(ann["id"])
        else:
            pairs.append(o)
    return Matches(pairs, skipped, anns, sizes, gt_rles, pred_rles, score_thr, iou_thr)


def match_positive_predictions(gt: dict, results: list[dict], score_thr: float = 0.05,
                               iou_thr: float = 0.5) -> tuple[list[dict], list[int]]:
    """``(pairs, skipped_gt_ids)`` of :func:`match` (the two lists, for callers that need nothing else)."""
    m = match(gt, results, score_thr, iou_thr)
    return m.pairs, m.skipped_gt_ids


def refinemask_window(bbox: Iterable[float], height: int, width: int) -> tuple[slice, slice]:
    """Crop window of RefineMask's boundary-F tool: the GT box enlarged by half its size per side.

    (x, y, w, h) = ``int()`` of ``bbox`` (COCO [x, y, w, h] in pixels), w, h = max(1, .); rows
    [max(y - h//2, 0), min(y + h + h//2, height)), columns [max(x - w//2, 0), min(x + w + w//2, width)).

    Returns:
        (row_slice, col_slice); may hold <= 1 row or column (RefineMask skips such windows for F).

    Source: zhanggang001/RefineMask ``tools/boundary_f1_score.py::compute_f_score``; docs/evaluation.md §6.2.
    """
    x, y, w, h = (int(v) for v in bbox)
    w, h = max(1, w), max(1, h)
    r0 = max(y - h // 2, 0)
    r1 = min(max(y + h + h // 2, 0), int(height))
    c0 = max(x - w // 2, 0)
    c1 = min(max(x + w + w // 2, 0), int(width))
    return slice(r0, max(r1, r0)), slice(c0, max(c1, c0))


def gt_bbox(ann: dict, rle: dict) -> list[float]:
    """The annotation's ``bbox`` ([x, y, w, h] pixels), or the tight box of its RLE when it has none."""
    bbox = ann.get("bbox")
    if bbox is None:
        bbox = mask_utils.toBbox(rle).tolist()
    return bbox

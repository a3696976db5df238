"""Why a model scores what it scores: error decomposition, good box / bad mask, distributions, tables, PR curves.

:func:`analyze` evaluates one result set (the same numbers as ``rmbench eval``) and adds (docs/evaluation.md §16):

- **TIDE error decomposition** of mask AP (Bolya et al., ECCV 2020) by vernier's ``error_decomposition`` with the segm
  kernel in strict parity: each detection that is not a true positive at the foreground threshold t_f = 0.5 is put in
  one bin — classification (IoU ≥ t_f with a GT of another class), localisation (right class, t_b ≤ IoU < t_f),
  both, duplicate (its GT already taken by a higher-scoring detection), background (IoU < t_b with every GT) — and
  missed GTs in a sixth; ΔAP of a bin is the COCO mask AP (0.50:0.95) after fixing every error of that bin minus the
  baseline AP. t_b = 0.1 (vernier's segm default, the TIDE paper's box value). Thresholds are recorded in the output.
  **Known limitation (found here, pinned by tests/test_analysis.py):** vernier 0.5.4's segm kernel lets a
  detection's *box* decide its bin when the box matches a GT at t_f — a mask that fails inside a correct box (a
  ring, a hollow or shifted mask with the right extent) lands in no bin, so TIDE's bins under-count mask failures.
  The good box / bad mask count below is computed on masks and sees exactly those; read the two together.
- **Good box, bad mask** (no other tool separates it): detections that are false positives of mask AP at IoU 0.5
  (pycocotools matching, not ignored) whose **box** overlaps a same-class non-crowd GT box with IoU ≥ 0.5 while
  its **mask** has IoU < 0.5 with that GT's mask — the detector found the object, the mask head failed it (a false
  positive whose mask does match is a duplicate, TIDE's bin, not a bad mask). Boxes are the results' ``bbox`` when
  every detection has one
  (detectron2, mmdetection and ``rmbench infer`` write it), else the mask's tight box (recorded as ``box_source``).
  ΔAP: mask AP after the TIDE-style fix (each such detection gets its GT's mask, in score order; one whose GT is
  already taken by a higher-scoring true positive or an earlier fixed detection is removed, as TIDE removes a fixed
  duplicate) minus the baseline.
- **Distributions** over matched pairs (the boundary-F matching: each non-crowd GT and its positive prediction):
  mask IoU and F_1px, histograms and quantiles, by GT size (COCO areas: small < 32², medium < 96², large).
- **Per-category and per-size tables**: AP, Boundary AP, F_1px, worst categories first; r/c/f for LVIS.
- **PR curves**: precision at the 101 recall points, mean over the categories defined there, per IoU threshold
  (area all) and per area range (mean over IoU thresholds), from the exact re-accumulation of :mod:`eval.accumulate`.
- **Worst boundaries**: the matched pairs of lowest F_1px, for a gallery (``reports.analysis``).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from .accumulate import AREAS, IOU_THRS, REC_THRS, coco_summary, records_from_eval_imgs
from .coco import coco_mask_ap
from .engines import _detection_dicts, engine_versions, usable_cpus, vernier_dataset, vernier_eval_imgs
from .errors import UsageError
from .evaluator import EvalParams, InstanceSegEvaluator
from .io import _check_bbox
from .masks import segm_to_rle

__all__ = ["analyze", "tide_decomposition", "good_box_bad_mask", "size_of_area", "TIDE_BINS", "SIZE_NAMES"]

log = logging.getLogger(__name__)

#: TIDE's six error bins, in its order, with their names
TIDE_BINS = {"cls": "classification", "loc": "localisation", "both": "both (cls + loc)", "dupe": "duplicate",
             "bkg": "background", "missed": "missed GT"}
SIZE_NAMES = ("small", "medium", "large")
#: histogram edges of the distributions (mask IoU of matched pairs is >= 0.5 by the matching rule)
IOU_EDGES = np.round(np.arange(0.5, 1.0001, 0.05), 2)
F_EDGES = np.round(np.arange(0.0, 1.0001, 0.1), 1)


def size_of_area(area: float) -> str:
    """COCO's size class of an area in pixels² (pycocotools areaRng: small [0, 32²], medium (32², 96²], large >
    96²; the boundaries inclusive as in its ``aRng[0] <= area <= aRng[1]``, small wins a tie)."""
    return "small" if area <= 32 ** 2 else ("medium" if area <= 96 ** 2 else "large")


def tide_decomposition(gt: dict, results: list[dict], t_f: float = 0.5, t_b: float = 0.1) -> dict:
    """TIDE's six ΔAP bins of COCO mask AP through vernier ``error_decomposition`` (segm kernel, strict parity).

    Returns:
        ``{"baseline_ap", "delta": {bin: ΔAP}, "delta_all_fp_removed", "t_f", "t_b", "kernel": "segm",
        "ap": "COCO mask AP 0.50:0.95, maxDets 100", "library": "vernier X"}`` (fractions).
    """
    from vernier._tide import error_decomposition
    from vernier.instance import Segm

    if not results:
        return {"baseline_ap": 0.0, "delta": {b: 0.0 for b in TIDE_BINS}, "delta_all_fp_removed": 0.0, "t_f": t_f,
                "t_b": t_b, "kernel": "segm", "ap": "COCO mask AP 0.50:0.95, maxDets 100",
                "library": f"vernier {engine_versions('vernier')['vernier']}"}
    dts, _ = _detection_dicts(results)
    rep = error_decomposition(vernier_dataset(gt), dts, iou=Segm(), t_f=t_f, t_b=t_b, max_dets_per_image=100,
                              parity_mode="strict")
    return {"baseline_ap": rep.baseline_map, "delta": {b: float(rep.delta[b]) for b in TIDE_BINS},
            "delta_all_fp_removed": rep.delta_all_fp_removed, "t_f": rep.config.t_f, "t_b": rep.config.t_b,
            "kernel": rep.config.kernel, "ap": "COCO mask AP 0.50:0.95, maxDets 100",
            "library": f"vernier {engine_versions('vernier')['vernier']}"}


def _detection_boxes(raw: list, results: list[dict], source) -> tuple[np.ndarray, str]:
    """(D, 4) xywh boxes of the detections: the results' own ``bbox`` if every raw record has a valid one, else
    the tight box of each mask (pycocotools ``toBbox``)."""
    from pycocotools import mask as mask_utils

    if raw and all(isinstance(r, dict) and "bbox" in r for r in raw):
        for i, r in enumerate(raw):
            _check_bbox(r["bbox"], source, f"results[{i}]", "detection")
        return np.asarray([r["bbox"] for r in raw], dtype=float).reshape(-1, 4), "results bbox"
    if not results:
        return np.zeros((0, 4)), "mask box"
    return np.asarray(mask_utils.toBbox([r["segmentation"] for r in results]), dtype=float).reshape(-1, 4), "mask box"


def good_box_bad_mask(gt: dict, results: list[dict], boxes: np.ndarray, eval_imgs: list, image_ids: list,
                      cat_ids: list, box_iou_thr: float = 0.5, ap: float | None = None) -> dict:
    """Detections the box finds and the mask fails (see the module docstring), and the ΔAP of fixing them.

    Args:
        gt, results: validated inputs. boxes: (D, 4) xywh detection boxes (pixels), one per result.
        eval_imgs, image_ids, cat_ids: the segm per-image records of :func:`eval.engines.vernier_eval_imgs`
            (detection ids are 1 + the index in ``results``, as pycocotools ``loadRes`` numbers them).
        box_iou_thr: the box overlap that counts as "good box" (0.5).
        ap: the results' COCO mask AP when the caller has it (else computed here).

    Returns:
        ``{"count", "mask_false_positives", "fraction_of_false_positives", "by_size": {small, medium, large},
        "delta_ap", "ap_fixed", "ap", "box_iou_thr", "mask_iou_thr": 0.5, "detections": [result indices]}``.
    """
    from pycocotools import mask as mask_utils

    n_img, n_area = len(image_ids), len(AREAS)
    gt_by = {}
    for a in gt["annotations"]:
        gt_by.setdefault((a["image_id"], a["category_id"]), []).append(a)
    sizes = {im["id"]: (im["height"], im["width"]) for im in gt["images"]}
    found: list[tuple[float, int, Any]] = []  # (score, result index, the GT its box matches)
    n_fp = 0
    taken: dict[Any, float] = {}  # gt id -> score of the true positive that took it at IoU 0.5
    for k, c in enumerate(cat_ids):
        for i in range(n_img):
            e = eval_imgs[k * n_area * n_img + i]  # area 'all'
            if e is None:
                continue
            dt_ids = list(e["dtIds"])
            m0 = np.asarray(e["dtMatches"])[0] if dt_ids else np.zeros(0)
            ig0 = np.asarray(e["dtIgnore"])[0] if dt_ids else np.zeros(0)
            for j, d in enumerate(dt_ids):
                if m0[j] != 0 and not ig0[j]:
                    taken[int(m0[j])] = max(taken.get(int(m0[j]), -1.0), results[d - 1]["score"])
            fp = [j for j in range(len(dt_ids)) if m0[j] == 0 and not ig0[j]]
            n_fp += len(fp)
            cand = [a for a in gt_by.get((image_ids[i], c), []) if not a.get("iscrowd", 0)]
            if not fp or not cand:
                continue
            h, w = sizes[image_ids[i]]
            gt_boxes = [a["bbox"] if "bbox" in a else mask_utils.toBbox(segm_to_rle(a["segmentation"], h, w)).tolist()
                        for a in cand]
            det_idx = [dt_ids[j] - 1 for j in fp]
            ious = np.asarray(mask_utils.iou(boxes[det_idx].tolist(), gt_boxes, [0] * len(cand))).reshape(
                len(det_idx), len(cand))
            for row, d in enumerate(det_idx):
                best = int(np.argmax(ious[row]))
                if ious[row, best] < box_iou_thr:
                    continue
                g_rle = segm_to_rle(cand[best]["segmentation"], h, w)
                m_iou = float(np.asarray(mask_utils.iou([results[d]["segmentation"]], [g_rle], [0])).ravel()[0])
                if m_iou < 0.5:  # a mask that does match its box's GT is a duplicate, not a bad mask
                    found.append((results[d]["score"], d, cand[best]["id"]))
    ann = {a["id"]: a for a in gt["annotations"]}
    by_size = {s: 0 for s in SIZE_NAMES}
    for _, _, g in found:
        by_size[size_of_area(float(ann[g].get("area", 0.0)))] += 1
    base = ap if ap is not None else coco_mask_ap(gt, results)["summary"]["AP"]
    fixed = [dict(r) for r in results]
    drop = set()
    for score, d, g in sorted(found, key=lambda t: (-t[0], t[1])):
        if g in taken and taken[g] >= score:  # TIDE: a fix that would duplicate a better true positive is removed
            drop.add(d)
            continue
        taken[g] = score
        h, w = sizes[results[d]["image_id"]]
        rle = segm_to_rle(ann[g]["segmentation"], h, w)
        counts = rle["counts"]
        fixed[d]["segmentation"] = {"size": [h, w], "counts": counts.decode() if isinstance(counts, bytes) else counts}
    fixed = [r for i, r in enumerate(fixed) if i not in drop]
    ap_fixed = coco_mask_ap(gt, fixed)["summary"]["AP"] if fixed else 0.0
    return {"count": len(found), "mask_false_positives": n_fp,
            "fraction_of_false_positives": len(found) / n_fp if n_fp else float("nan"), "by_size": by_size,
            "ap": base, "ap_fixed": ap_fixed, "delta_ap": ap_fixed - base, "box_iou_thr": box_iou_thr,
            "mask_iou_thr": 0.5, "detections": sorted(d for _, d, _ in found)}


def _hist(values: list[float], edges: np.ndarray) -> dict:
    v = np.asarray(values, dtype=float)
    counts, _ = np.histogram(v, bins=edges)
    qs = {f"p{q}": float(np.quantile(v, q / 100)) for q in (10, 25, 50, 75, 90)} if v.size else {}
    return {"edges": edges.tolist(), "counts": counts.astype(int).tolist(), "n": int(v.size),
            "mean": float(v.mean()) if v.size else float("nan"), **qs}


def _mean(v: list[float]) -> float:
    return math.fsum(v) / len(v) if v else float("nan")


def _pr_curves(precision: np.ndarray) -> dict:
    """Mean precision over categories at each recall point: per IoU threshold (area all) and per area (mean over
    the IoU thresholds). -1 (undefined) entries are left out; a recall point with none is null."""
    def mean_over(p: np.ndarray, axis: int) -> list:
        defined = p > -1
        n = defined.sum(axis=axis)
        s = np.where(defined, p, 0.0).sum(axis=axis)
        return [float(a / b) if b else None for a, b in zip(s, n)]

    return {"recall": REC_THRS.tolist(), "iou_thresholds": [round(float(t), 2) for t in IOU_THRS],
            "by_iou": {f"{t:.2f}": mean_over(precision[i, :, :, 0], 1) for i, t in enumerate(IOU_THRS)},
            "by_area": {a: mean_over(precision[:, :, :, j].transpose(1, 0, 2).reshape(len(REC_THRS), -1), 1)
                        for j, a in enumerate(AREAS)}}


def analyze(gt: dict, results_raw: list, lvis_gt: dict | None = None, lvis_results_raw: list | None = None,
            params: EvalParams | None = None, source=None, worst: int = 12, t_b: float = 0.1) -> dict:
    """Everything of the module docstring for one result set, as one json-ready dict.

    Args:
        gt: validated COCO ground truth. results_raw: the parsed results list (validated here).
        lvis_gt: validated LVIS ground truth (cocofied: AP*, raw: LVIS AP with r/c/f) or None;
            lvis_results_raw: its results if they differ.
        params: :class:`EvalParams`. worst: how many worst-boundary instances to keep. t_b: TIDE's background
            threshold.

    Returns:
        ``{"metrics", "tide", "good_box_bad_mask", "distributions", "per_category", "per_size", "lvis_frequency",
        "pr_curves", "worst_boundary", "thresholds", "warnings"}`` (fractions in [0, 1]), and ``"_results"``: the
        validated results the analysis ran on (not json: callers pop it; the gallery reads its masks).

    Raises:
        EvalInputError: bad results (see :func:`eval.io.validate_results`). UsageError: ``worst`` < 0.
    """
    if not isinstance(worst, int) or worst < 0:
        raise UsageError(f"--worst must be a non-negative integer, got {worst!r}")
    params = params or EvalParams()
    groups = ["coco", "boundary_f", "boundary_acc", "boundary_ap"]
    ev = InstanceSegEvaluator(gt, lvis_gt, groups + ([("ap_star" if _cocofied(lvis_gt) else "lvis")]
                                                     if lvis_gt is not None else []), params)
    ev.process(results_raw, source=source, lvis_results=lvis_results_raw)
    out = ev.evaluate()
    results = ev._coco_results
    log.info("TIDE decomposition")
    tide = tide_decomposition(gt, results, t_b=t_b)
    pr = None
    gbbm: dict = {"count": 0, "mask_false_positives": 0, "detections": []}
    if results:
        eval_imgs, image_ids, cat_ids, max_det = vernier_eval_imgs(gt, results, num_threads=params.jobs or
                                                                   usable_cpus())
        rec = records_from_eval_imgs(eval_imgs, image_ids, cat_ids, max_det=max_det)
        precision = rec.precision()
        pr = _pr_curves(precision)
        pr["ap_check"] = coco_summary(precision)["AP"]
        gt_imgs = {im["id"] for im in gt["images"]}
        raw_coco = [r for r in results_raw if isinstance(r, dict) and r.get("image_id") in gt_imgs]
        boxes, box_source = _detection_boxes(raw_coco if len(raw_coco) == len(results) else [], results, source)
        log.info("good box / bad mask (%s)", box_source)
        gbbm = good_box_bad_mask(gt, results, boxes, eval_imgs, image_ids, cat_ids, ap=out.metrics["coco"]["AP"])
        gbbm["box_source"] = box_source
    ann = {a["id"]: a for a in gt["annotations"]}
    rows = [r for r in out.per_instance if r.get("F_1px") is not None and r.get("mask_iou") is not None]
    by_size_rows: dict[str, list] = {s: [] for s in SIZE_NAMES}
    for r in rows:
        by_size_rows[size_of_area(float(ann[r["gt_id"]].get("area", 0.0)))].append(r)
    dist = {"mask_iou": {"all": _hist([r["mask_iou"] for r in rows], IOU_EDGES),
                         **{s: _hist([r["mask_iou"] for r in v], IOU_EDGES) for s, v in by_size_rows.items()}},
            "F1px": {"all": _hist([r["F_1px"] for r in rows], F_EDGES),
                     **{s: _hist([r["F_1px"] for r in v], F_EDGES) for s, v in by_size_rows.items()}}}
    names = {c["id"]: c.get("name", str(c["id"])) for c in gt["categories"]}
    n_gt: dict = {}
    for a in gt["annotations"]:
        if not a.get("iscrowd", 0):
            n_gt[a["category_id"]] = n_gt.get(a["category_id"], 0) + 1
    f_by_cat: dict = {}
    for r in rows:
        f_by_cat.setdefault(r["category_id"], []).append(r["F_1px"])
    ap_cat = out.details.get("coco", {}).get("per_category", {})
    bap_cat = out.details.get("boundary_ap", {}).get("per_category", {})
    per_cat = [{"category_id": c, "name": names[c], "num_gt": n_gt.get(c, 0), "AP": ap_cat.get(c, float("nan")),
                "boundary_AP": bap_cat.get(c, float("nan")), "F1px": _mean(f_by_cat.get(c, [])),
                "num_matched": len(f_by_cat.get(c, []))} for c in sorted(names) if n_gt.get(c, 0)]
    per_cat.sort(key=lambda r: (math.inf if math.isnan(r["AP"]) else r["AP"], r["category_id"]))
    m = out.metrics
    per_size = [{"size": s, "AP": m["coco"][f"AP{s[0]}"], "boundary_AP": m["boundary_ap"][f"AP{s[0]}"],
                 "F1px": _mean([r["F_1px"] for r in by_size_rows[s]]), "num_matched": len(by_size_rows[s]),
                 "num_gt": sum(1 for a in gt["annotations"] if not a.get("iscrowd", 0)
                               and size_of_area(float(a.get("area", 0.0))) == s)} for s in SIZE_NAMES]
    lvis_freq = None
    lv = m.get("ap_star") or m.get("lvis")
    if lv is not None:
        counts = {f: sum(1 for c in lvis_gt["categories"] if c.get("frequency") == f) for f in "rcf"}
        lvis_freq = {f: {"AP": lv[f"AP{f}"], "num_categories": counts[f]} for f in "rcf"}
    images = {im["id"]: im for im in gt["images"]}
    worst_rows = sorted(rows, key=lambda r: (r["F_1px"], r["gt_id"]))[:worst]
    worst_out = [{"gt_id": r["gt_id"], "image_id": r["image_id"], "file_name": images[r["image_id"]].get("file_name"),
                  "category_id": r["category_id"], "category": names[r["category_id"]], "pred_index": r["pred_index"],
                  "score": r["score"], "mask_iou": r["mask_iou"], "F1px": r["F_1px"],
                  "gt_bbox": ann[r["gt_id"]].get("bbox")} for r in worst_rows]
    return {"metrics": m, "tide": tide, "good_box_bad_mask": gbbm, "distributions": dist, "per_category": per_cat,
            "per_size": per_size, "lvis_frequency": lvis_freq, "pr_curves": pr, "worst_boundary": worst_out,
            "thresholds": {"tide_t_f": tide["t_f"], "tide_t_b": tide["t_b"], "good_box_iou": 0.5, "bad_mask_iou": 0.5,
                           "positive_score": params.score_thr, "matched_pair_iou": 0.5},
            "warnings": out.warnings, "_results": results}


def _cocofied(lvis_gt) -> bool:
    from .lvis_ap import is_cocofied

    return lvis_gt is not None and is_cocofied(lvis_gt)

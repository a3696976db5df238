"""Inference loop → COCO results (RLE masks) → the unified evaluator (``eval/``).

:func:`inference_on_dataset` runs a detector over an :class:`~refinemask.data.InstanceDataset` one image at a
time (the test pipeline of docs/models.md §6: batch size 1, the model's own keep-ratio resize / normalise / pad),
converts every detection to a COCO result record and, under torchrun, shards the images contiguously across
ranks and gathers the records on every rank in dataset order (each image exactly once).

A COCO result record: ``image_id``, ``category_id`` (the dataset's id, mapped back from the contiguous
label), ``bbox`` [x, y, w, h] in original pixels, ``score`` (float), ``segmentation`` (compressed RLE at the
original image size, ``counts`` as str).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from eval.errors import UsageError
from refinemask.config import run_info
from refinemask.data import InstanceDataset, collate, inference_shard
from refinemask.detection.masks import encode_rle

from . import distributed as du
from .checkpoint import unwrap_model

log = logging.getLogger(__name__)

__all__ = ["detections_to_coco", "inference_on_dataset", "evaluate_results", "oracle_boxes", "run_info",
           "set_test_cfg", "shape_batches"]


def detections_to_coco(det: dict[str, torch.Tensor], image_id: int,
                       label_to_cat_id: Sequence[int | None]) -> list[dict]:
    """One image's model output → COCO result records.

    Args:
        det: ``boxes`` (N, 4) x1, y1, x2, y2 original pixels, ``scores`` (N,), ``labels`` (N,) in 0..C−1,
            ``masks`` (N, H, W) bool at the original size (optional: box-only records without it).
        image_id: the dataset's image id. label_to_cat_id: category id of each contiguous label; None drops that
            label's detections (a label of the model's space that is no category of the dataset, e.g.
            torchvision's unused COCO ids).
    Raises:
        UsageError: a label outside ``label_to_cat_id`` (the checkpoint belongs to another preset).
    """
    boxes = det["boxes"].detach().float().cpu()
    scores = det["scores"].detach().float().cpu().tolist()
    labels = det["labels"].detach().cpu().tolist()
    rles = encode_rle(det["masks"]) if "masks" in det else [None] * len(scores)
    out = []
    for b, s, lab, rle in zip(boxes.tolist(), scores, labels, rles):
        if not 0 <= lab < len(label_to_cat_id):
            raise UsageError(f"model predicted label {lab} but the dataset has {len(label_to_cat_id)} classes; "
                             f"use the preset the checkpoint was trained with")
        cat = label_to_cat_id[lab]
        if cat is None:
            continue
        r = {"image_id": image_id, "category_id": int(cat),
             "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": float(s)}
        if rle is not None:
            r["segmentation"] = rle
        out.append(r)
    return out


def oracle_boxes(dataset: InstanceDataset, index: int, cat_to_label: dict[int, int]) -> tuple[list[dict], dict]:
    """The GT-box oracle's input for image ``index``: its non-crowd annotations whose category is in the model's
    label space, and ``{"boxes": (n, 4) x1, y1, x2, y2 original pixels, "labels": (n,)}`` for
    ``TwoStageDetector(..., boxes=)``.

    Raises:
        UsageError: an annotation without a 4-number ``bbox`` (names the file and the annotation id).
    """
    anns = [a for a in dataset.non_crowd_annotations(index) if a.get("category_id") in cat_to_label]
    rows = []
    for a in anns:
        b = a.get("bbox")
        if not (isinstance(b, (list, tuple)) and len(b) == 4 and all(isinstance(v, (int, float)) for v in b)):
            raise UsageError(f"{dataset.json_path}: annotation id {a.get('id')} has no valid bbox [x, y, w, h] "
                             f"(got {b!r}); the GT-box oracle needs one. Fix: repair the annotation")
        rows.append([float(b[0]), float(b[1]), float(b[0]) + float(b[2]), float(b[1]) + float(b[3])])
    boxes = torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)
    labels = torch.tensor([cat_to_label[a["category_id"]] for a in anns], dtype=torch.long)
    return anns, {"boxes": boxes, "labels": labels}


def shape_batches(dataset: InstanceDataset, indices: Sequence[int], batch_size: int,
                  input_size) -> list[list[int]]:
    """Batches of at most ``batch_size`` dataset indices that share one padded input size.

    Images of one batch are padded to a common size; an image padded further than its own test size would see
    extra zero border in every convolution, and its outputs would differ from batch 1. Grouping by
    ``input_size(h, w)`` (:meth:`~refinemask.detection.DetectionTransform.test_input_size`) keeps every output
    equal to batch-1 inference; groups are filled in dataset order.
    """
    if batch_size < 1:
        raise UsageError(f"--batch must be >= 1, got {batch_size}")
    if batch_size == 1:
        return [[i] for i in indices]
    groups: dict[tuple[int, int], list[int]] = {}
    order: list[list[int]] = []
    for i in indices:
        im = dataset.images[i]
        key = input_size(int(im["height"]), int(im["width"]))
        g = groups.get(key)
        if g is None or len(g) == batch_size:
            g = groups[key] = []
            order.append(g)
        g.append(i)
    return order


def set_test_cfg(model: nn.Module, score_thresh: float | None = None, max_dets: int | None = None) -> None:
    """Override the RoI heads' test score threshold / detections per image (default: the preset's)."""
    import dataclasses

    heads = unwrap_model(model).roi_heads
    cfg = getattr(heads, "cfg", None)
    if cfg is None or not dataclasses.is_dataclass(cfg):
        if score_thresh is not None or max_dets is not None:
            log.warning("%s has no dataclass cfg: --score-thr / --max-dets ignored", type(heads).__name__)
        return
    changes = {}
    if score_thresh is not None:
        changes["score_thresh"] = float(score_thresh)
    if max_dets is not None:
        changes["detections_per_img"] = int(max_dets)
    if changes:
        heads.cfg = dataclasses.replace(cfg, **changes)


@torch.no_grad()
def inference_on_dataset(
    model: nn.Module,
    dataset: InstanceDataset,
    *,
    device: torch.device | str | None = None,
    label_to_cat_id: Sequence[int | None] | None = None,
    num_workers: int = 0,
    amp: bool = False,
    progress: bool = True,
    distributed: bool | None = None,
    batch_size: int = 1,
    gt_boxes: bool = False,
) -> list[dict]:
    """Run ``model`` (eval mode) over ``dataset`` and return COCO result records, gathered over ranks.

    Args:
        model: a detector (DDP wrapper accepted; inference uses the inner module, no gradient sync).
        dataset: ``InstanceDataset(..., with_masks=False)`` in its natural order (no flips).
        device: default: the model's device.
        label_to_cat_id: default ``dataset.label_to_cat_id``; None entries drop that label's detections.
        num_workers: data-loader workers (image decoding, overlapped with compute; ``pin_memory`` on CUDA).
        amp: autocast to float16 on CUDA.
        distributed: shard over ranks and gather (default: when a process group of > 1 ranks exists); False
            runs every image in this process (a single-process reference inside a DDP job).
        batch_size: images per forward pass, grouped by padded input size (:func:`shape_batches`) so that the
            records equal batch-1 inference's; the official RefineMask protocol is 1.
        gt_boxes: the GT-box oracle: instead of detecting, predict a mask for every non-crowd GT box of a category
            in the label space, with its class; records carry the GT's ``bbox`` exactly, ``score`` 1.0 and
            ``gt_id`` (the annotation id) — one record per such annotation.
    Returns:
        records of all images, in dataset order, on every rank. Timing is logged.
    """
    model = unwrap_model(model)
    was_training = model.training
    model.eval()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    label_to_cat_id = list(label_to_cat_id if label_to_cat_id is not None else dataset.label_to_cat_id)
    cat_to_label = {c: k for k, c in enumerate(label_to_cat_id) if c is not None}
    dist_on = du.is_distributed() if distributed is None else (distributed and du.is_distributed())
    rank, world = (du.get_rank(), du.get_world_size()) if dist_on else (0, 1)
    shard = inference_shard(len(dataset), rank, world)
    batches = shape_batches(dataset, list(shard), batch_size, model.transform.test_input_size)
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=num_workers, collate_fn=collate,
                        pin_memory=device.type == "cuda")
    per_image: list[tuple[int, list[dict]]] = []
    t0 = time.perf_counter()
    bar = tqdm(total=len(shard), desc="oracle inference" if gt_boxes else "inference", unit="img",
               disable=not progress or rank != 0, dynamic_ncols=True, leave=False)
    try:
        for idxs, (images, targets) in zip(batches, loader):
            images = [im.to(device, non_blocking=True) for im in images]
            given = [oracle_boxes(dataset, i, cat_to_label) for i in idxs] if gt_boxes else None
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp and device.type == "cuda"):
                outputs = model(images, boxes=[g for _, g in given]) if gt_boxes else model(images)
            for j, (i, t, out) in enumerate(zip(idxs, targets, outputs)):
                if gt_boxes:
                    recs = _oracle_records(out, given[j][0], t["image_id"])
                else:
                    recs = detections_to_coco(out, t["image_id"], label_to_cat_id)
                per_image.append((i, recs))
            bar.update(len(idxs))
    finally:
        bar.close()
        model.train(was_training)
    dt = time.perf_counter() - t0
    log.info("inference: %d images on rank %d/%d in %.1f s (%.2f s/image, batch %d)", len(shard), rank, world, dt,
             dt / max(len(shard), 1), batch_size)
    gathered = du.all_gather_object(per_image) if dist_on else [per_image]
    merged = sorted((item for part in gathered for item in part), key=lambda x: x[0])
    seen = [i for i, _ in merged]
    if seen != list(range(len(dataset))):
        raise RuntimeError(f"sharded inference covered images {seen[:10]}... instead of each of the {len(dataset)} "
                           f"images exactly once")
    return [r for _, recs in merged for r in recs]


def _oracle_records(out: dict[str, torch.Tensor], anns: list[dict], image_id: int) -> list[dict]:
    """One record per given GT annotation: its category and bbox verbatim, score 1.0, the predicted mask."""
    rles = encode_rle(out["masks"]) if "masks" in out else [None] * len(anns)
    if len(rles) != len(anns):
        raise RuntimeError(f"oracle inference returned {len(rles)} masks for {len(anns)} boxes")
    recs = []
    for a, rle in zip(anns, rles):
        r = {"image_id": image_id, "category_id": int(a["category_id"]), "bbox": [float(v) for v in a["bbox"]],
             "score": 1.0, "gt_id": a.get("id")}
        if rle is not None:
            r["segmentation"] = rle
        recs.append(r)
    return recs


def evaluate_results(
    results: list[dict],
    gt_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    run: dict[str, Any],
    metrics: Sequence[str] = ("coco",),
    inputs: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    device: str | None = None,
    title: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Score ``results`` with :class:`eval.evaluator.InstanceSegEvaluator` and write metrics.json / .md / csv.

    metrics.json gets the evaluator's groups, ``details``, ``provenance`` (inputs with sha256, parameters,
    versions, git) and a top-level ``"run"`` block (:func:`run_info`). Returns the metrics dict. An LVIS-format
    ground truth is scored with the ``lvis`` group (LVIS AP, APr/APc/APf) instead of the COCO groups.
    """
    import warnings

    from eval.evaluator import EvalParams, InstanceSegEvaluator
    from eval.io import EmptyResultsWarning, is_lvis_dataset, load_json, validate_gt, write_json
    from eval.output import provenance, write_evaluation

    raw = load_json(gt_path, "ground truth")
    if isinstance(raw, dict) and is_lvis_dataset(raw):  # LVIS val: LVIS AP (lvis-api) instead of COCO AP
        lvis_gt = validate_gt(raw, gt_path, expect="lvis")
        groups = ["lvis"] + [m for m in metrics if m not in ("coco", "lvis", "boundary_f", "boundary_acc",
                                                               "boundary_ap")]
        ev = InstanceSegEvaluator(None, lvis_gt, metrics=groups, params=EvalParams(), lvis_gt_path=gt_path)
    else:
        gt = validate_gt(raw, gt_path, expect="coco")
        ev = InstanceSegEvaluator(gt, metrics=list(metrics), params=EvalParams(), gt_path=gt_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmptyResultsWarning)
        ev.process(results, source=inputs.get("results") if inputs else None)
        out = ev.evaluate()
    if not results:
        log.warning("no detections: every metric is 0 (model untrained or score threshold too high)")
    prov = provenance({"gt": gt_path, **(inputs or {})}, params={**(params or {}), "metrics": ev.metrics},
                      device=device)
    paths = write_evaluation(out_dir, out.metrics, prov, out.per_instance, out.details,
                             title=title or f"Evaluation of {run.get('preset', 'model')}")
    import json

    with open(paths["json"], encoding="utf-8") as f:
        doc = json.load(f)
    from eval.output import split_info

    run = {**run, "eval_set": split_info(gt_path, raw, sha256=prov["inputs"]["gt"]["sha256"])}
    write_json(paths["json"], {"run": run, **doc})
    return out.metrics

"""``rmbench bench-eval``: time the whole metric suite against pycocotools-only mask AP, in one run.

The input is COCO-val-sized and built from the bundled real masks: the 79 annotated coco_mini val2017 images
are tiled to ``--images`` images (5000 by default, as COCO val2017) with fresh image and annotation ids,
instances subsampled to ``--instances`` (36k by default, ~36.8k in val2017), and ``--dets`` detections per image
(100 by default: perturbed copies of the image's GT masks — shifted, eroded, dilated — plus shifted masks of
other classes, with scores drawn uniformly). Everything is seeded.

Both timings include loading the same json files from disk; the ratio (suite / pycocotools) is what to quote,
together with the machine (speed is a feature we measure, never assert in tests).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm.auto import tqdm

from .masks import ann_to_mask, mask_to_rle

log = logging.getLogger(__name__)


def build_coco_val_sized(gt: dict, n_images: int = 5000, n_instances: int = 36000, dets_per_image: int = 100,
                         seed: int = 0) -> tuple[dict, list[dict]]:
    """Tile the bundled GT to ``n_images`` images and make ``dets_per_image`` detections for each.

    Returns:
        (ground-truth dict, results list); results carry compressed RLE with ``str`` counts at image size.
    """
    rng = np.random.default_rng(seed)
    images = {im["id"]: im for im in gt["images"]}
    by_img: dict[int, list[dict]] = {}
    for a in gt["annotations"]:
        by_img.setdefault(a["image_id"], []).append(a)
    base_ids = sorted(i for i in by_img)
    # detections of each base image, made once and reused by all its tiles
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    base_dets: dict[int, list[tuple[int, dict]]] = {}
    for i in tqdm(base_ids, desc="make detections", leave=False):
        im = images[i]
        masks = [(a["category_id"], ann_to_mask(a, im["height"], im["width"])) for a in by_img[i] if not a["iscrowd"]]
        if not masks:
            continue
        dets = []
        for k in range(dets_per_image):
            cat, m = masks[k % len(masks)]
            op = rng.integers(0, 4)
            if op == 0:
                m = np.roll(m, tuple(rng.integers(-4, 5, size=2)), axis=(0, 1))
            elif op == 1:
                m = cv2.erode(m, kernel)
            elif op == 2:
                m = cv2.dilate(m, kernel)
            else:  # a false positive: another class, shifted far
                cat = masks[rng.integers(len(masks))][0] if rng.random() < 0.5 else cat
                m = np.roll(m, tuple(rng.integers(20, 80, size=2)), axis=(0, 1))
            dets.append((cat, mask_to_rle(m)))
        base_dets[i] = dets
    base_ids = [i for i in base_ids if i in base_dets]
    out_images, out_anns, results = [], [], []
    for new_id in range(1, n_images + 1):
        b = base_ids[(new_id - 1) % len(base_ids)]
        out_images.append({**images[b], "id": new_id})
        for a in by_img[b]:
            out_anns.append({**a, "image_id": new_id})
        for cat, rle in base_dets[b]:
            results.append({"image_id": new_id, "category_id": cat, "segmentation": rle,
                            "score": round(float(rng.uniform(0.05, 1.0)), 3)})
    if len(out_anns) > n_instances:  # subsample to the requested instance count, keeping file order
        keep = np.sort(rng.choice(len(out_anns), n_instances, replace=False))
        out_anns = [out_anns[k] for k in keep]
    for k, a in enumerate(out_anns):
        a["id"] = k + 1
    ds = {"images": out_images, "annotations": out_anns, "categories": gt["categories"]}
    return ds, results


def time_pycocotools(gt_path: Path, res_path: Path) -> float:
    """Seconds for pycocotools alone: load both files, loadRes, evaluate, accumulate, summarize."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    t = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(gt_path))
        ev = COCOeval(coco, coco.loadRes(str(res_path)), "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return time.perf_counter() - t


def time_suite(gt_path: Path, res_path: Path, metrics: list[str]) -> tuple[float, dict[str, float], dict]:
    """Seconds for our evaluator (validation + every group), with a per-group breakdown."""
    from .evaluator import InstanceSegEvaluator
    from .io import load_gt, load_json

    t0 = time.perf_counter()
    gt = load_gt(gt_path)
    ev = InstanceSegEvaluator(gt, None, metrics)
    ev.process(load_json(res_path, "results"), source=res_path)
    t_load = time.perf_counter() - t0
    per_group = {"load+validate": t_load}
    metrics_out = {}
    for g in ev.metrics:
        sub = InstanceSegEvaluator(gt, None, [g])
        sub._coco_results, sub._n = ev._coco_results, ev._n
        t = time.perf_counter()
        metrics_out[g] = sub.evaluate().metrics[g]
        per_group[g] = time.perf_counter() - t
    return time.perf_counter() - t0, per_group, metrics_out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="rmbench bench-eval", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    return run(p.parse_args(argv))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--images", type=int, default=5000,
                   help="images of the tiled input (default 5000, COCO val2017's count)")
    p.add_argument("--instances", type=int, default=36000,
                   help="GT instances spread over them, copied from the bundled real masks (default 36000, about "
                   "COCO val2017's)")
    p.add_argument("--dets", type=int, default=100,
                   help="detections per image: perturbed copies of the GT masks plus false positives (default 100)")
    p.add_argument("--metrics", default="coco,boundary_f,boundary_acc,boundary_ap",
                   help="metric groups to time, comma-separated (default coco,boundary_f,boundary_acc,boundary_ap)")
    p.add_argument("--seed", type=int, default=0, help="seed of the tiling and the perturbations (default 0)")
    p.add_argument("--json", type=Path, help="also write the figures (seconds per group, ratio) to this json")


def run(args) -> int:
    from eval.paths import bundled

    from .io import load_json, write_json

    gt = load_json(bundled("coco_mini", "annotations", "instances_val2017.json"), "COCO ground truth")
    ds, results = build_coco_val_sized(gt, args.images, args.instances, args.dets, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        gt_path, res_path = Path(tmp) / "gt.json", Path(tmp) / "results.json"
        gt_path.write_text(json.dumps(ds))
        res_path.write_text(json.dumps(results))
        log.info("input: %d images, %d GT instances, %d detections", len(ds["images"]), len(ds["annotations"]),
                 len(results))
        t_ref = time_pycocotools(gt_path, res_path)
        t_suite, per_group, metrics = time_suite(gt_path, res_path, args.metrics.split(","))
    fig = {"images": len(ds["images"]), "gt_instances": len(ds["annotations"]), "detections": len(results),
           "pycocotools_s": t_ref, "suite_s": t_suite, "ratio": t_suite / t_ref, "per_group_s": per_group,
           "metrics": metrics, "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}"}
    print(f"input: {fig['images']} images, {fig['gt_instances']} GT instances, {fig['detections']} detections")
    print(f"pycocotools mask AP only: {t_ref:8.1f} s")
    print(f"rmbench eval suite:       {t_suite:8.1f} s  ({', '.join(f'{k} {v:.1f}s' for k, v in per_group.items())})")
    print(f"ratio suite / pycocotools: {fig['ratio']:.2f}")
    if args.json:
        write_json(args.json, fig)
    return 0

"""``rmbench bench-eval``: time and peak memory of each engine beside the reference libraries, in one run.

COCO input (default): COCO-val-sized, built from the bundled real masks — the 79 annotated coco_mini val2017 images
tiled to ``--images`` images (5000 by default, as COCO val2017) with fresh ids, instances subsampled to
``--instances`` (36k by default, ~36.8k in val2017), ``--dets`` detections per image (100: perturbed copies of the
image's GT masks — shifted, eroded, dilated — plus shifted masks of other classes, uniform scores). Measured:
pycocotools segm AP alone (the one number people compute today), and the whole COCO-side suite (coco, boundary_f,
boundary_acc, boundary_ap: load, validation, every group) with each engine.

LVIS input (``--lvis``): LVIS-v1-like, the bundled raw LVIS sample (100 images, 1,230 v0.5 classes with r/c/f
frequencies, federated lists) tiled to ``--images`` images with ``--dets`` detections per image (300 by default,
as LVIS's cap: perturbed GT copies, and detections of negative, not-exhaustive and unverified classes). Measured:
lvis-api's LVISEval (segm) against ``rmbench eval``'s ``lvis`` group with each engine.

Every measurement runs in a fresh process (``python -m eval.benchmark --measure``), so its peak RSS
(``ru_maxrss``) is its own; all read the same json files from disk. The ratios are what to quote, with the machine
(speed is a feature we measure, never assert in tests). Everything is seeded.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm.auto import tqdm

from .errors import UsageError
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


def build_lvis_sized(lvis_gt: dict, n_images: int = 2000, dets_per_image: int = 300,
                     seed: int = 0) -> tuple[dict, list[dict]]:
    """Tile a raw LVIS file to ``n_images`` images with ``dets_per_image`` detections each (seeded).

    Per base image: a perturbed copy (shift, erode, dilate) of each GT mask first, then detections of the image's
    ``neg_category_ids``, ``not_exhaustive_category_ids`` and of unverified classes on shifted GT masks, cycled
    to the count. Returns (ground-truth dict, results list with ``str`` RLE counts).
    """
    rng = np.random.default_rng(seed)
    by_img: dict[int, list[dict]] = {}
    for a in lvis_gt["annotations"]:
        by_img.setdefault(a["image_id"], []).append(a)
    cat_ids = [c["id"] for c in lvis_gt["categories"]]
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    base = [im for im in lvis_gt["images"] if im["id"] in by_img]
    base_dets: dict[int, list[tuple[int, dict]]] = {}
    for im in tqdm(base, desc="make LVIS detections", leave=False):
        masks = [(a["category_id"], ann_to_mask(a, im["height"], im["width"])) for a in by_img[im["id"]]]
        others = list(im["neg_category_ids"]) + list(im["not_exhaustive_category_ids"])
        dets = []
        for k in range(dets_per_image):
            cat, m = masks[k % len(masks)]
            if k >= len(masks):  # beyond one copy per GT: other classes on shifted masks
                cat = int(rng.choice(others)) if others and rng.random() < 0.5 else int(rng.choice(cat_ids))
                m = np.roll(m, tuple(rng.integers(-30, 31, size=2)), axis=(0, 1))
            op = rng.integers(0, 3)
            m = np.roll(m, tuple(rng.integers(-3, 4, size=2)), axis=(0, 1)) if op == 0 else (
                cv2.erode(m, kernel) if op == 1 else cv2.dilate(m, kernel))
            dets.append((cat, mask_to_rle(m)))
        base_dets[im["id"]] = dets
    images, anns, results = [], [], []
    for new_id in range(1, n_images + 1):
        b = base[(new_id - 1) % len(base)]
        images.append({**b, "id": new_id})
        for a in by_img[b["id"]]:
            anns.append({**a, "image_id": new_id, "id": len(anns) + 1})
        for cat, rle in base_dets[b["id"]]:
            results.append({"image_id": new_id, "category_id": cat, "segmentation": rle,
                            "score": round(float(rng.uniform(0.01, 1.0)), 3)})
    ds = {k: v for k, v in lvis_gt.items() if k not in ("images", "annotations")}
    ds.update(images=images, annotations=anns)
    return ds, results


# -- measurements, each in its own process ----------------------------------------------------------------------------
def _measure(kind: str, gt_path: Path, res_path: Path, metrics: str, jobs: int | None) -> dict:
    """Run one measurement in this process: ``{"seconds", "peak_rss_mib", "metrics"?, "per_group_s"?}``."""
    t0 = time.perf_counter()
    out: dict = {}
    if kind == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(str(gt_path))
            ev = COCOeval(coco, coco.loadRes(str(res_path)), "segm")
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        out["metrics"] = {"coco": {"AP": float(ev.stats[0])}}
    elif kind == "lvis-api":
        from lvis import LVIS, LVISEval, LVISResults

        from .lvis_ap import lvis_numpy_shim

        logging.getLogger("lvis").setLevel(logging.WARNING)
        with lvis_numpy_shim():
            gt = LVIS(str(gt_path))
            ev = LVISEval(gt, LVISResults(gt, str(res_path)), "segm")
            ev.run()
        out["metrics"] = {"lvis": {"AP": float(ev.get_results()["AP"])}}
    elif kind.startswith("suite-"):
        from .evaluator import EvalParams, InstanceSegEvaluator
        from .io import load_gt

        lvis = metrics == "lvis"
        gt = load_gt(gt_path, "lvis" if lvis else "coco")
        params = EvalParams(engine=kind.removeprefix("suite-"), jobs=jobs)
        ev = InstanceSegEvaluator(None if lvis else gt, gt if lvis else None, None if lvis else metrics.split(","),
                                  params)
        ev.process_file(res_path)
        t_load = time.perf_counter() - t0
        res = ev.evaluate()
        out["metrics"] = res.metrics
        out["per_group_s"] = {"load+validate": t_load, **res.timings}
    else:
        raise ValueError(f"unknown measurement {kind!r}")
    out["seconds"] = time.perf_counter() - t0
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    return out


def measure_in_subprocess(kind: str, gt_path: Path, res_path: Path, metrics: str, jobs: int | None) -> dict:
    """:func:`_measure` in a fresh interpreter, so that its peak RSS is its own."""
    cmd = [sys.executable, "-m", "eval.benchmark", "--measure", kind, str(gt_path), str(res_path), metrics,
           str(jobs or 0)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
    if proc.returncode != 0:
        raise RuntimeError(f"measurement {kind} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--measure"]:  # the child side of measure_in_subprocess
        kind, gt_path, res_path, metrics, jobs = argv[1:6]
        print(json.dumps(_measure(kind, Path(gt_path), Path(res_path), metrics, int(jobs) or None)))
        return 0
    p = argparse.ArgumentParser(prog="rmbench bench-eval", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    return run(p.parse_args(argv))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lvis", action="store_true",
                   help="LVIS-v1-like input (tiled bundled LVIS sample, 300 detections per image): lvis-api against "
                   "the lvis group with each engine")
    p.add_argument("--images", type=int, default=None,
                   help="images of the tiled input (default 5000, COCO val2017's count; 2000 with --lvis — LVIS v1 "
                   "val has 19.8k, pass --images 19809 where memory allows)")
    p.add_argument("--instances", type=int, default=36000,
                   help="COCO: GT instances spread over them, copied from the bundled real masks (default 36000, "
                   "about COCO val2017's)")
    p.add_argument("--dets", type=int, default=None,
                   help="detections per image (default 100; 300 with --lvis)")
    p.add_argument("--metrics", default="coco,boundary_f,boundary_acc,boundary_ap",
                   help="COCO: metric groups of the suite, comma-separated (default coco,boundary_f,boundary_acc,"
                   "boundary_ap)")
    p.add_argument("--engines", default="vernier,reference",
                   help="engines to measure, comma-separated (default vernier,reference)")
    p.add_argument("--jobs", type=int, default=None, help="--jobs of the suite (default: the usable CPUs)")
    p.add_argument("--seed", type=int, default=0, help="seed of the tiling and the perturbations (default 0)")
    p.add_argument("--json", type=Path, help="also write the figures (seconds, peak RSS, ratios) to this json")


def run(args) -> int:
    from eval.paths import bundled

    from .engines import ENGINES
    from .io import load_json, write_json

    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    for e in engines:
        if e not in ENGINES:
            raise UsageError(f"unknown engine {e!r} in --engines; choose from {', '.join(ENGINES)}")
    if args.lvis:
        n_images, dets = args.images or 2000, args.dets or 300
        lv = load_json(bundled("lvis", "lvis_val_100.json"), "LVIS ground truth")
        ds, results = build_lvis_sized(lv, n_images, dets, args.seed)
        reference, metrics = "lvis-api", "lvis"
    else:
        n_images, dets = args.images or 5000, args.dets or 100
        gt = load_json(bundled("coco_mini", "annotations", "instances_val2017.json"), "COCO ground truth")
        ds, results = build_coco_val_sized(gt, n_images, args.instances, dets, args.seed)
        reference, metrics = "pycocotools", args.metrics
    runs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        gt_path, res_path = Path(tmp) / "gt.json", Path(tmp) / "results.json"
        gt_path.write_text(json.dumps(ds))
        res_path.write_text(json.dumps(results))
        log.info("input: %d images, %d GT instances, %d detections", len(ds["images"]), len(ds["annotations"]),
                 len(results))
        for kind in tqdm([reference] + [f"suite-{e}" for e in engines], desc="bench-eval", leave=False):
            runs[kind] = measure_in_subprocess(kind, gt_path, res_path, metrics, args.jobs)
    ref = runs[reference]
    for r in runs.values():
        r["time_ratio"] = r["seconds"] / ref["seconds"]
        r["rss_ratio"] = r["peak_rss_mib"] / ref["peak_rss_mib"]
    fig = {"input": "lvis" if args.lvis else "coco", "images": len(ds["images"]),
           "gt_instances": len(ds["annotations"]), "detections": len(results), "reference": reference,
           "metrics_timed": metrics, "runs": runs, "jobs": args.jobs,
           "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}"}
    print(f"input: {fig['images']} images, {fig['gt_instances']} GT instances, {fig['detections']} detections "
          f"({fig['input']}, {fig['machine']})")
    what = {"pycocotools": "pycocotools segm AP only", "lvis-api": "lvis-api LVISEval segm"}
    for kind, r in runs.items():
        name = what.get(kind, f"rmbench eval {metrics} --engine {kind.removeprefix('suite-')}")
        groups = r.get("per_group_s")
        extra = f"  ({', '.join(f'{k} {v:.1f}s' for k, v in groups.items())})" if groups else ""
        print(f"{name:<72} {r['seconds']:8.1f} s  {r['peak_rss_mib']:8.0f} MiB  ×{r['time_ratio']:.2f} time  "
              f"×{r['rss_ratio']:.2f} RSS{extra}")
    if args.json:
        write_json(args.json, fig)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Evaluator commands: ``eval``, ``cocofy-lvis``, ``cityscapes-to-coco``, ``bench-eval`` (no torch import)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from eval.errors import UsageError

from .command import Command

__all__ = ["COMMANDS"]


def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gt", type=Path, help="COCO-format ground truth json (instances_val2017.json, Cityscapes-as-COCO)")
    p.add_argument("--lvis-gt", type=Path, help="cocofied LVIS v0.5 json for AP* (rmbench cocofy-lvis), or a raw LVIS "
                   "json for LVIS AP")
    p.add_argument("--results", type=Path, required=True, help="COCO results json (RLE or polygon masks)")
    p.add_argument("--lvis-results", type=Path, help="results for the LVIS groups if they differ from --results")
    p.add_argument("--metrics", help="comma-separated groups: coco, ap_star, lvis, boundary_f, boundary_acc, "
                   "boundary_ap, cityscapes (default: every group the inputs allow)")
    p.add_argument("--out", type=Path, required=True, help="output folder (metrics.json, metrics.md, per_instance.csv)")
    p.add_argument("--cityscapes-gt-dir", type=Path, help="Cityscapes gtFine folder (holding <split>/<city>/"
                   "*_gtFine_instanceIds.png) for the official cityscapesscripts AP; --gt is then its "
                   "Cityscapes-as-COCO json")
    p.add_argument("--cityscapes-split", default="val", help="split folder under --cityscapes-gt-dir (default val)")
    p.add_argument("--boundary-f-window", choices=("full", "crop"), default="full",
                   help="F_npx on the full image (default) or the RefineMask tool's enlarged GT box")
    p.add_argument("--boundary-acc-d", type=float, default=2.0, help="d̂ of the Fig. 1 boundary band, pixels")
    p.add_argument("--score-thr", type=float, default=0.05, help="positive-prediction score for boundary F/accuracy")
    p.add_argument("--preset", help="the preset that made the results: writes the run block (preset, method, "
                   "backbone, schedule, evaluation set) so `rmbench report` can place the run in the paper's tables")
    p.add_argument("--checkpoint", type=Path, help="with --preset: the `rmbench train` checkpoint that made the "
                   "results; its training record (data, iterations, backbone weights) goes into run.train")
    p.add_argument("--trained-as-paper", action="store_true",
                   help="with --preset: declare that the model was trained elsewhere with the paper's protocol "
                   "(full training set and schedule, ImageNet backbone); recorded as such in run.train")
    p.add_argument("--engine", choices=("vernier", "reference"), default="vernier",
                   help="who computes coco, boundary_ap, ap_star and lvis: vernier in strict parity (default, checked "
                   "equal to the references on every test run) or the reference libraries themselves (pycocotools, "
                   "faster-coco-eval, lvis-api)")
    p.add_argument("--jobs", type=_positive_int, default=None,
                   help="worker processes for boundary F / boundary accuracy, threads for vernier and for the RLE "
                   "check of the results file (default: the usable CPUs; the numbers do not depend on it)")
    p.add_argument("--keep-bbox", action="store_true", help="keep `bbox` in results: detection areas from boxes "
                   "(RefineMask-compatible APs/APm/APl); default pops it as detectron2 and mmdet 3.x do")


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return v


def run_eval(args) -> int:
    from eval.evaluator import EvalParams, InstanceSegEvaluator
    from eval.io import load_gt
    from eval.output import metrics_markdown, provenance, write_evaluation

    if args.gt is None and args.lvis_gt is None:
        raise UsageError("give at least one ground truth: --gt (COCO json) and/or --lvis-gt (LVIS json)")
    if (args.trained_as_paper or args.checkpoint) and not args.preset:
        raise UsageError("--trained-as-paper / --checkpoint describe how a preset was trained: give --preset too")
    if args.trained_as_paper and args.checkpoint:
        raise UsageError("give --checkpoint (trained here) or --trained-as-paper (trained elsewhere), not both")
    if args.preset:
        from refinemask.registry import get_preset

        get_preset(args.preset)  # refuses an unknown name (with the closest ones) before any work
    from eval.io import check_output_dir

    check_output_dir(args.out)
    gt = load_gt(args.gt, "coco") if args.gt else None
    lvis_gt = load_gt(args.lvis_gt, "lvis") if args.lvis_gt else None
    params = EvalParams(boundary_f_window=args.boundary_f_window, boundary_acc_d=args.boundary_acc_d,
                        score_thr=args.score_thr, keep_bbox=args.keep_bbox, engine=args.engine, jobs=args.jobs)
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    ev = InstanceSegEvaluator(gt, lvis_gt, metrics, params, gt_path=args.gt, lvis_gt_path=args.lvis_gt,
                              cityscapes_gt_dir=args.cityscapes_gt_dir, cityscapes_split=args.cityscapes_split)
    ev.process_file(args.results, lvis_path=args.lvis_results)
    out = ev.evaluate()
    prov = provenance({"gt": args.gt, "lvis_gt": args.lvis_gt, "results": args.results,
                       "lvis_results": args.lvis_results},
                      params={**vars(params), "metrics": ev.metrics,
                              "dt_area_source": "bbox" if args.keep_bbox else "mask"})
    run = _run_block(args, gt, lvis_gt, prov) if args.preset else None
    paths = write_evaluation(args.out, out.metrics, prov, out.per_instance, out.details,
                             title=f"Evaluation of {args.results.name}", run=run, warnings=out.warnings)
    for w in out.warnings:
        print(f"rmbench eval: warning: {w}", file=sys.stderr)
    print(metrics_markdown(out.metrics))
    print(f"wrote {paths['json']}, {paths['md']}, {paths['csv']}")
    return 0


def _run_block(args, gt: dict | None, lvis_gt: dict | None, prov: dict) -> dict:
    """The metrics.json ``run`` block of ``rmbench eval --preset P`` (reports/protocol.py reads it)."""
    from eval.output import split_info
    from refinemask.config import run_info
    from refinemask.registry import get_preset

    run = run_info(get_preset(args.preset))
    if args.gt is not None:
        run["eval_set"] = split_info(args.gt, gt, sha256=prov["inputs"]["gt"]["sha256"])
    if args.lvis_gt is not None:
        run["lvis_eval_set"] = split_info(args.lvis_gt, lvis_gt, sha256=prov["inputs"]["lvis_gt"]["sha256"])
    if args.trained_as_paper:
        run["train"] = {"declared": "trained outside this harness with the paper's protocol (rmbench eval "
                                    "--trained-as-paper)"}
    if args.checkpoint:
        from refinemask.engine.checkpoint import check_preset, load_checkpoint

        ckpt = load_checkpoint(args.checkpoint)  # weights_only; names the file when it is not a checkpoint
        check_preset(ckpt, args.preset, args.checkpoint)
        train = (ckpt.get("run") or {}).get("train") if isinstance(ckpt.get("run"), dict) else None
        run["train"] = train if isinstance(train, dict) else {"checkpoint": str(args.checkpoint), "note": "the "
                                                              "checkpoint records no training (a bare state dict)"}
        run["checkpoint"] = str(args.checkpoint)
    return run


def add_cocofy_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", type=Path, help="lvis_v0.5_val.json")
    p.add_argument("output", type=Path, help="where to write lvis_v0.5_val_cocofied.json")
    p.add_argument("--mapping", type=Path, default=None,
                   help="coco_to_synset.json (default: the bundled copy from lvis-api)")


def run_cocofy(args) -> int:
    from eval.lvis_ap import cocofy_lvis_file
    from eval.paths import bundled

    mapping = args.mapping or bundled("lvis", "coco_to_synset.json")
    s = cocofy_lvis_file(args.input, args.output, mapping)
    print(f"wrote {args.output}: {s['images']} images, {s['annotations']} annotations, {s['categories']} categories")
    return 0


def add_cityscapes_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("gt_fine_dir", type=Path, help="the gtFine folder")
    p.add_argument("output", type=Path, help="where to write the json")
    p.add_argument("--split", default="val")


def run_cityscapes(args) -> int:
    from eval.cityscapes import instance_ids_to_coco

    ds = instance_ids_to_coco(args.gt_fine_dir, args.output, split=args.split)
    print(f"wrote {args.output}: {len(ds['images'])} images, {len(ds['annotations'])} instances")
    return 0


def _bench_eval_arguments(p: argparse.ArgumentParser) -> None:
    from eval.benchmark import add_arguments

    add_arguments(p)


def _bench_eval_run(args) -> int:
    from eval.benchmark import run

    return run(args)


COMMANDS = [
    Command("eval", "evaluate a COCO results json",
            "Score COCO-format instance-segmentation results. At least one ground truth: `coco` and the boundary "
            "groups use --gt, `ap_star` (or `lvis`) uses --lvis-gt.", add_eval_arguments, run_eval),
    Command("cocofy-lvis", "build the cocofied LVIS v0.5 file (AP* ground truth)",
            "Reduce LVIS v0.5 annotations to the 80 COCO classes with the official mapping (detectron2 "
            "prepare_cocofied_lvis.py / RefineMask tools/cocofied_lvis.py).", add_cocofy_arguments, run_cocofy),
    Command("cityscapes-to-coco", "convert Cityscapes gtFine instanceIds PNGs to Cityscapes-as-COCO json",
            "One RLE per instance of the 8 evaluated classes, iscrowd = (id < 1000), area = pixel count "
            "(RefineMask/mmdet tools/convert_datasets/cityscapes.py).", add_cityscapes_arguments, run_cityscapes),
    Command("bench-eval", "time the metric suite against pycocotools-only AP (COCO-val-sized input)",
            "Time every metric group of the evaluator against pycocotools-only mask AP, in one run, on a "
            "COCO-val-sized input tiled from the bundled real masks, and print the ratio.",
            _bench_eval_arguments, _bench_eval_run),
]

"""Model commands: ``train``, ``infer``, ``models``.

- ``train``   train a preset (alone, or under ``torchrun`` for multi-GPU / multi-node DDP)
- ``infer``   COCO results (RLE) for a checkpoint on a COCO-format split, optionally evaluated right away
- ``models``  list the presets with their parameter counts

Errors about the user's data, options or checkpoints are :class:`eval.errors.InputError` s whose message names the
file and the fix; ``rmbench`` turns them into exit code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from eval.errors import UsageError

from .command import Command

log = logging.getLogger("rmbench")

__all__ = ["COMMANDS", "model_table", "parse_scale"]


def _quiet_non_main_ranks() -> None:
    """Under torchrun only rank 0 logs at INFO (others: warnings and errors)."""
    if os.environ.get("RANK", "0") not in ("", "0"):
        logging.getLogger().setLevel(logging.WARNING)


def _ids(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated image ids, got {text!r}") from None


def _pair(text: str) -> tuple[int, int]:
    try:
        a, b = (int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN,MAX short sides in pixels, e.g. 640,800; got {text!r}") \
            from None
    return (a, b)


def parse_scale(text: str, option: str = "--img-scale") -> tuple[int, int]:
    """A scale option in pixels: ``"320"`` → (533, 320) (long side = round(short · 1333 / 800)); ``"533,320"`` or
    ``"533x320"`` → (533, 320) (long, short; either order).

    Raises:
        UsageError: not one or two positive integers (the message names ``option``).
    """
    parts = [p for p in str(text).replace("x", ",").split(",") if p.strip()]
    try:
        vals = [int(p) for p in parts]
    except ValueError:
        vals = []
    if len(vals) == 1 and vals[0] > 0:
        return (int(round(vals[0] * 1333 / 800)), vals[0])
    if len(vals) == 2 and min(vals) > 0:
        return (max(vals), min(vals))
    raise UsageError(f"{option} {text!r}: expected SHORT or LONG,SHORT in pixels, e.g. 320 or 533,320")


# ------------------------------------------------------------------------------------------------------------
# train
TRAIN_DESCRIPTION = (
    "Train a preset with the mmdet recipe: SGD (lr 0.02 x batch/16, momentum 0.9, wd 1e-4), linear warm-up, step "
    "schedule (1x/2x/3x from the preset), optional gradient clipping, AMP on CUDA.\n"
    "Writes <work-dir>/{config.json, log.csv, tb/, iter_N.pth, latest.pth, eval/iter_N/, metrics.json}.\n"
    "Multi-GPU: torchrun --nproc_per_node 8 -m refinemask.cli train ... (batch size is per process).")


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", required=True, help="preset name (rmbench models lists them)")
    p.add_argument("--work-dir", type=Path, required=True, help="output folder (checkpoints, logs, metrics)")
    p.add_argument("--data-root", type=Path, help="dataset root in its standard layout, e.g. COCO: "
                   "DIR/annotations/instances_{train,val}2017.json + DIR/{train,val}2017/")
    p.add_argument("--train-json", type=Path, help="training annotation json (overrides --data-root's)")
    p.add_argument("--train-images", type=Path, help="training image folder (overrides --data-root's)")
    p.add_argument("--val-json", type=Path, help="validation json for periodic evaluation (overrides --data-root's)")
    p.add_argument("--val-images", type=Path, help="validation image folder")
    p.add_argument("--image-ids", type=_ids, help="train on these image ids only (comma-separated)")
    p.add_argument("--batch-size", type=int, default=2, help="images per iteration per process (default 2)")
    p.add_argument("--workers", type=int, default=2, help="data-loader workers per process (default 2)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--max-iters", type=int, help="total iterations (lr steps rescaled proportionally)")
    g.add_argument("--epochs", type=int, help="total epochs (lr steps rescaled proportionally)")
    p.add_argument("--lr", type=float, help="base lr for the total batch (default: preset lr x total batch / 16)")
    p.add_argument("--warmup-iters", type=int, help="linear warm-up iterations (default: the preset's, 500)")
    p.add_argument("--grad-clip", type=float, help="max gradient L2 norm; 0 disables (default: the preset's)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="float16 autocast + GradScaler (default: on for CUDA)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--img-scale", help="train/test scale: SHORT or LONG,SHORT pixels (e.g. 320 or 533,320); "
                   "default: the preset's (1333,800)")
    p.add_argument("--multiscale", type=_pair, metavar="MIN,MAX",
                   help="multi-scale training: short side drawn uniformly in [MIN, MAX] (e.g. 640,800)")
    p.add_argument("--flip-ratio", type=float, help="horizontal flip probability (default: the preset's, 0.5)")
    p.add_argument("--checkpoint-interval", type=int, help="iterations between checkpoints (default: one epoch)")
    p.add_argument("--keep-checkpoints", type=int, default=0, help="keep the newest K iter_N.pth (0: all)")
    p.add_argument("--eval-interval", type=int, help="iterations between evaluations (default: one epoch; "
                   "0: only at the end; -1: never)")
    p.add_argument("--eval-metrics", default="coco", help="evaluator groups, comma-separated (default coco)")
    p.add_argument("--log-interval", type=int, default=20, help="iterations between log rows (default 20)")
    p.add_argument("--resume", nargs="?", const="auto", metavar="CKPT",
                   help="continue exactly from CKPT (default: <work-dir>/latest.pth)")
    p.add_argument("--backbone-weights", type=Path, help="LOCAL torchvision ImageNet state dict "
                   "(e.g. resnet50-0676ba61.pth); without it the backbone is randomly initialised")
    p.add_argument("--recalibrate-bn", type=int, default=0, metavar="N",
                   help="random-init backbone: re-estimate its frozen BatchNorm statistics on N batches first")
    p.add_argument("--cfg-options", nargs="+", metavar="KEY=VALUE",
                   help="override preset fields, e.g. roi.batch_size_per_image=64 rpn.post_nms_top_n_train=300")
    p.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    p.add_argument("--cpu-threads", type=int, help="torch CPU threads per process (1 is best on a busy machine)")
    p.add_argument("--no-tensorboard", action="store_true", help="do not write TensorBoard events")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_train(args) -> int:
    from refinemask.engine.distributed import cleanup_distributed
    from refinemask.engine.trainer import TrainConfig, train

    _quiet_non_main_ranks()
    cfg = TrainConfig(
        preset=args.preset, work_dir=args.work_dir, data_root=args.data_root, train_json=args.train_json,
        train_images=args.train_images, val_json=args.val_json, val_images=args.val_images,
        train_image_ids=args.image_ids, batch_size=args.batch_size, num_workers=args.workers,
        max_iters=args.max_iters, epochs=args.epochs, lr=args.lr, warmup_iters=args.warmup_iters,
        grad_clip=args.grad_clip, amp=args.amp, seed=args.seed,
        img_scale=parse_scale(args.img_scale) if args.img_scale else None, multiscale=args.multiscale,
        flip_ratio=args.flip_ratio, checkpoint_interval=args.checkpoint_interval,
        keep_checkpoints=args.keep_checkpoints, eval_interval=args.eval_interval,
        eval_metrics=tuple(m.strip() for m in args.eval_metrics.split(",") if m.strip()),
        log_interval=args.log_interval, resume=args.resume, backbone_weights=args.backbone_weights,
        bn_recalibration_batches=args.recalibrate_bn, device=args.device, cfg_options=args.cfg_options,
        cpu_threads=args.cpu_threads,
        tensorboard=not args.no_tensorboard, progress=not args.no_progress and sys.stderr.isatty(),
    )
    try:
        summary = train(cfg)
    finally:
        cleanup_distributed()
    if os.environ.get("RANK", "0") in ("", "0"):
        losses = ", ".join(f"{k} {v:.4f}" for k, v in sorted(summary["losses"].items()))
        print(f"trained {summary['iter']} iterations in {summary['time_s']:.1f} s; last losses: {losses}")
        print(f"checkpoint: {summary['checkpoint']}")
        if args.backbone_weights is None:
            print("backbone: RANDOMLY initialised (no --backbone-weights): this run never fills a paper row; pass "
                  "the torchvision ImageNet state dict for that", file=sys.stderr)
        if summary["metrics"]:
            from eval.output import metrics_markdown

            print(metrics_markdown(summary["metrics"]))
            print(f"metrics: {Path(args.work_dir) / 'metrics.json'}")
    return 0


# ------------------------------------------------------------------------------------------------------------
# infer
def add_infer_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", required=True, help="the preset the checkpoint was trained with")
    p.add_argument("--checkpoint", type=Path, required=True, help="latest.pth / iter_N.pth or a model state dict")
    p.add_argument("--gt", type=Path, required=True, help="COCO-format json listing the images (and their GT)")
    p.add_argument("--images", type=Path, required=True, help="image folder")
    p.add_argument("--out", type=Path, required=True, help="results json to write")
    p.add_argument("--eval-out", type=Path, help="also evaluate into this folder (metrics.json, metrics.md, csv)")
    p.add_argument("--metrics", default="coco", help="evaluator groups for --eval-out (default coco)")
    p.add_argument("--img-scale", help="test scale SHORT or LONG,SHORT (default: the preset's)")
    p.add_argument("--score-thr", type=float, help="score threshold (default: the preset's, e.g. 0.05)")
    p.add_argument("--max-dets", type=int, help="detections per image (default: the preset's, e.g. 100)")
    p.add_argument("--cfg-options", nargs="+", metavar="KEY=VALUE",
                   help="override preset fields, e.g. rpn.post_nms_top_n_test=300 (see rmbench train)")
    p.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    p.add_argument("--workers", type=int, default=2, help="data-loader workers (default 2)")
    p.add_argument("--cpu-threads", type=int, help="torch CPU threads per process (1 is best on a busy machine)")
    p.add_argument("--amp", action="store_true", help="float16 autocast on CUDA")
    p.add_argument("--batch", type=int, default=1, metavar="N",
                   help="images per forward pass (default 1, the official protocol); images are batched only with "
                        "images of the same padded size, so results equal batch 1's")
    p.add_argument("--gt-boxes", action="store_true",
                   help="GT-box oracle: predict a mask for every non-crowd GT box with its class (score 1.0) "
                        "instead of detecting; evaluating the result measures mask quality alone")


def run_infer(args) -> int:
    import torch

    from eval.io import write_json
    from refinemask.data import InstanceDataset
    from refinemask.engine.checkpoint import check_preset, load_checkpoint, load_model_state
    from refinemask.engine.distributed import cleanup_distributed, init_distributed
    from refinemask.engine.inference import evaluate_results, inference_on_dataset, run_info, set_test_cfg
    from refinemask.engine.trainer import apply_cfg_options, apply_overrides
    from refinemask.models import build_model
    from refinemask.registry import get_preset

    _quiet_non_main_ranks()
    preset = apply_overrides(apply_cfg_options(get_preset(args.preset), args.cfg_options),
                             img_scale=parse_scale(args.img_scale) if args.img_scale else None)
    ckpt = load_checkpoint(args.checkpoint)
    check_preset(ckpt, preset.name, args.checkpoint)
    if args.batch < 1:
        raise UsageError(f"--batch must be >= 1, got {args.batch}")
    classes = ckpt.get("classes")
    label_to_cat_id = None
    if preset.category_ids is not None:  # the model's own label space (torchvision: COCO ids 1..90)
        dataset = InstanceDataset(args.gt, args.images, with_masks=False)
        known = set(dataset.cat_ids)
        uncovered = sorted(known - set(preset.category_ids))
        if uncovered:
            raise UsageError(f"{args.gt} has categories {uncovered[:10]} that preset {preset.name!r} cannot predict "
                             f"(its labels are category ids {preset.category_ids[0]}..{preset.category_ids[-1]}). "
                             f"Fix: evaluate on the dataset the model was trained for")
        label_to_cat_id = [c if c in known else None for c in preset.category_ids]
    else:
        dataset = InstanceDataset(args.gt, args.images, with_masks=False, categories=classes)
        if dataset.num_classes != preset.num_classes:
            raise UsageError(f"{args.gt} has {dataset.num_classes} categories but preset {preset.name!r} predicts "
                             f"{preset.num_classes}. Fix: evaluate on the dataset the model was trained for")
    if args.cpu_threads:
        torch.set_num_threads(args.cpu_threads)
    try:
        info = init_distributed(args.device)
        model = build_model(preset)
        load_model_state(model, ckpt["model"], args.checkpoint)
        model.to(info.device)
        set_test_cfg(model, args.score_thr, args.max_dets)
        t0 = time.perf_counter()
        results = inference_on_dataset(model, dataset, device=info.device, num_workers=args.workers,
                                       amp=args.amp, progress=sys.stderr.isatty(), label_to_cat_id=label_to_cat_id,
                                       batch_size=args.batch, gt_boxes=args.gt_boxes)
        dt = time.perf_counter() - t0
        if info.is_main:
            write_json(args.out, results)
            what = "oracle masks (one per non-crowd GT box)" if args.gt_boxes else "detections"
            print(f"wrote {args.out}: {len(results)} {what} on {len(dataset)} images ({dt:.1f} s, batch {args.batch})")
            if args.eval_out:
                from eval.output import metrics_markdown

                run = run_info(preset, checkpoint=str(args.checkpoint),
                               iteration=ckpt.get("iter") if isinstance(ckpt.get("iter"), int) else None,
                               boxes="gt (oracle)" if args.gt_boxes else None)
                trained = ckpt.get("run", {}).get("train") if isinstance(ckpt.get("run"), dict) else None
                if isinstance(trained, dict):
                    run["train"] = trained
                metrics = evaluate_results(results, args.gt, args.eval_out, run=run,
                                           metrics=[m.strip() for m in args.metrics.split(",") if m.strip()],
                                           inputs={"results": args.out, "checkpoint": args.checkpoint},
                                           params={"score_thr": args.score_thr, "max_dets": args.max_dets,
                                                   "test_scale": list(preset.test_scale), "batch": args.batch,
                                                   "gt_boxes": args.gt_boxes},
                                           device=str(info.device))
                print(metrics_markdown(metrics))
                print(f"wrote {Path(args.eval_out) / 'metrics.json'}")
    finally:
        cleanup_distributed()
    return 0


# ------------------------------------------------------------------------------------------------------------
# models
def _architecture_key(p) -> str:
    """The preset with every field that cannot change the parameter count neutralised (name, schedule, scales,
    sampling, test thresholds, references), so presets that differ only there share one meta-device build."""
    import dataclasses

    from refinemask.config import SCHEDULE_1X, BoxHeadConfig, RPNConfig

    roi = dataclasses.replace(p.roi, score_thresh=BoxHeadConfig.score_thresh, nms_thresh=BoxHeadConfig.nms_thresh,
                              detections_per_img=BoxHeadConfig.detections_per_img)
    neutral = dataclasses.replace(p, name="", dataset="", paper_ref="", notes="", schedule=SCHEDULE_1X,
                                  train_scales=((1333, 800),), multiscale_mode="value", test_scale=(1333, 800),
                                  flip_ratio=0.5, sampler="group", oversample_thr=None, rpn=RPNConfig(), roi=roi)
    return repr(neutral)


def model_table(names: list[str] | None = None) -> list[dict]:
    """One row per preset: name, method, backbone, schedule, dataset, parameters (built on the meta device)."""
    import torch

    from refinemask.engine.inference import run_info
    from refinemask.models import build_model, count_parameters, list_presets
    from refinemask.registry import get_preset

    rows, counts = [], {}
    for name in names or list_presets():
        p = get_preset(name)
        info = run_info(p)
        key = _architecture_key(p)
        if key not in counts:
            with torch.device("meta"):
                model = build_model(p)
            counts[key] = (count_parameters(model), count_parameters(model, trainable_only=True))
        total, trainable = counts[key]
        rows.append({"preset": name, "method": info["method"], "backbone": p.backbone, "schedule": info["schedule"],
                     "dataset": p.dataset, "classes": p.num_classes, "params": total, "trainable": trainable,
                     "paper_ref": p.paper_ref})
    return rows


def add_models_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print json instead of a table")
    p.add_argument("names", nargs="*", help="only these presets")


def run_models(args) -> int:
    rows = model_table(args.names or None)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    cols = ("preset", "method", "backbone", "schedule", "dataset", "classes", "params")
    table = [[str(r[c]) if c != "params" else f"{r[c]:,}" for c in cols] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in table)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    print("  ".join("-" * w for w in widths))
    for t in table:
        print("  ".join(v.rjust(w) if c in ("classes", "params") else v.ljust(w) for v, c, w in zip(t, cols, widths)))
    return 0


COMMANDS = [
    Command("train", "train a preset (single process, or multi-GPU / multi-node under torchrun)", TRAIN_DESCRIPTION,
            add_train_arguments, run_train),
    Command("infer", "COCO results (RLE masks) for a checkpoint; optionally evaluate them",
            "Run a trained checkpoint on every image of a COCO-format json (the preset's test scale, score "
            "threshold and detections per image; batch 1 unless --batch) and write a COCO results json atomically. "
            "--gt-boxes is the GT-box oracle: masks for the non-crowd GT boxes with their classes, score 1 (mask "
            "quality alone). Under torchrun the images are sharded and the results gathered.",
            add_infer_arguments, run_infer),
    Command("models", "list presets with parameter counts",
            "Every preset with its method, backbone, schedule, dataset and parameter count (mmdet convention: BN "
            "affine counted, frozen parameters included; models are built on the meta device, so nothing is "
            "allocated or downloaded).", add_models_arguments, run_models),
]

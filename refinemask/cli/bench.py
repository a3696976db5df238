"""``rmbench bench``: inference speed with the paper's fps protocol (docs/models.md §6, docs/evaluation.md §10).

Protocol (RefineMask ``tools/benchmark.py`` = mmdet ``benchmark.py``): bundled real images
(``data/coco_mini/val2017``, annotation-file order, cycled when more are asked for), **batch 1**, fp32,
``cudnn.benchmark`` off, the preset's test scale. The first ``--warmup`` images (5) run untimed; each of the next
``--images`` images is timed as ``synchronize → forward → synchronize``. Outside the timer: JPEG decoding,
resize / normalise / pad (a data loader's work). Inside: the host→device copy of the preprocessed image,
backbone, FPN, RPN, RoI heads, NMS, the mask branch, pasting masks at the ORIGINAL resolution with ≥ 0.5 and
copying the results to the host. fps = timed images / Σ their times; latency p50/p90 over the timed images.

``--fixed-dets N`` sets ``roi_heads.fixed_dets = N``: score threshold and NMS are replaced by the top-N
(proposal, class) pairs, so a randomly initialised model (near-uniform scores, nothing above 0.05) still sends N
boxes per image through the mask head and the paste. The compared models get the same replacement.

``--compare refinemask_r50_fpn_1x_coco,point_rend_r50_fpn_1x_coco,...`` times our other presets in the same run
(same images, scale and ``--fixed-dets``) and reports each one's mean latency over the ``--preset`` model's — the
paper's Table 2 comparison. ``--compare torchvision`` times torchvision's ``maskrcnn_resnet50_fpn(weights=None)``
in the same run (its ``GeneralizedRCNNTransform`` runs outside the timer; the rest of ``GeneralizedRCNN.forward``
inside, plus the 0.5 threshold and the copy to the host); ``--compare mmdet`` times mmdetection's Mask R-CNN when
installed (``make mmdet``; its test pipeline and data preprocessor run outside the timer).

Peak memory: CUDA ``max_memory_allocated`` during the timed loop (weights included); on CPU the peak process RSS
sampled during the timed loop minus the RSS before any model was built.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import platform
from pathlib import Path

from eval.errors import UsageError
from eval.io import write_json
from eval.output import provenance
from refinemask.engine.runners import (
    SEED,
    default_image_dir,
    device_name,
    list_images,
    load_images,
    mmdet_runner,
    ours_runner,
    torchvision_runner,
)
from refinemask.engine.timing import BenchResult, bench_interleaved, bench_runner, count_gmacs, rss_bytes
from refinemask.registry import PRESETS, get_preset

from .command import Command
from .models import parse_scale

log = logging.getLogger("rmbench.bench")

__all__ = ["COMMAND", "add_arguments", "run"]

COMPARE_CHOICES = ("torchvision", "mmdet")


def bench_provenance(device, args, image_dir: Path, n_unique: int) -> dict:
    """The protocol fields of a bench result, beside the shared provenance block (:func:`eval.output.provenance`:
    git, versions, command, host, time)."""
    import torch
    import torchvision

    prov = {
        "device_name": device_name(device),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "torch_threads": torch.get_num_threads(),
        "precision": "fp32",
        "batch_size": 1,
        "warmup": args.warmup,
        "images": args.images,
        "unique_images": n_unique,
        "image_dir": str(image_dir),
        "repeats": args.repeats,
        "fixed_dets": args.fixed_dets,
        "interleaved": bool(args.interleave),
        "seed": SEED,
        "protocol": "batch 1; first `warmup` images untimed; synchronize around each forward; preprocessing "
                    "outside the timer; H2D copy, NMS, mask paste at original size (>=0.5) and D2H copy inside",
    }
    if device.type == "cuda":
        prov["driver"] = _nvidia_driver()
    return prov


def _nvidia_driver() -> str | None:
    try:
        with open("/proc/driver/nvidia/version") as f:
            return f.readline().strip()
    except OSError:
        return None



def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", required=True, help="preset name (rmbench models / refinemask.list_presets())")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available, else cpu")
    p.add_argument("--fixed-dets", type=int, default=None, metavar="N",
                   help="replace score threshold + NMS by the top-N (box, class) pairs so randomly initialised "
                        "models time the mask head on N detections (e.g. 100)")
    p.add_argument("--images", type=int, default=None, metavar="N",
                   help="timed images (default: the bundled images after the warm-up ones, each once; "
                        "cycles through the images when larger)")
    p.add_argument("--warmup", type=int, default=5, help="untimed warm-up images before the timed ones (5)")
    p.add_argument("--repeats", type=int, default=1, help="repeat the timed loop (docs/evaluation.md §10 asks for "
                   ">= 2)")
    p.add_argument("--scale", default=None, metavar="LONG,SHORT",
                   help="override the preset's test scale (same for every compared model; default: the preset's)")
    p.add_argument("--image-dir", type=Path, default=None, help="default: the bundled data/coco_mini/val2017")
    p.add_argument("--checkpoint", type=Path, default=None, help="our state dict (weights_only); default random")
    p.add_argument("--mmdet-checkpoint", type=Path, default=None,
                   help="an mmdet Mask R-CNN checkpoint, converted with refinemask.convert_mmdet")
    p.add_argument("--compare", default="", help=f"comma-separated: {','.join(COMPARE_CHOICES)}, mmdet:<mmdet config "
                   "name> (e.g. mmdet:point-rend_r50-caffe_fpn_ms-1x_coco), and/or preset names, timed in the same run "
                   "with their latency ratio to --preset")
    p.add_argument("--interleave", action="store_true",
                   help="keep every compared model resident and time them image by image in rotating order, so "
                        "that drift on a shared machine hits all alike (robust latency ratios; no peak memory)")
    p.add_argument("--flops", action="store_true",
                   help="also count each model's GMACs on the first timed image (one extra untimed forward; "
                        "torch.utils.flop_counter) and report the GMAC ratio beside the latency ratio")
    p.add_argument("--amp", action="store_true",
                   help="float16 autocast for our models (CUDA only; the GPU check of tools/device_check.sh)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON object to this file")
    p.add_argument("--run-dir", type=Path, default=None, metavar="DIR",
                   help="merge a `speed` group (fps, latency, GMACs, parameters) and its protocol into "
                   "DIR/metrics.json (created with a run block naming --preset if missing), for `rmbench report "
                   "--table 2 --runs DIR`")


def run(args: argparse.Namespace) -> int:
    import torch


    preset = get_preset(args.preset)

    compare = [c.strip() for c in (args.compare or "").split(",") if c.strip()]
    bad = [c for c in compare if c not in COMPARE_CHOICES and c not in PRESETS and not c.startswith("mmdet:")]
    if bad:
        raise UsageError(f"--compare: unknown {bad}; choose from {list(COMPARE_CHOICES)} or preset names "
                         f"(rmbench models)")
    if args.fixed_dets is not None and args.fixed_dets < 1:
        raise UsageError(f"--fixed-dets must be >= 1, got {args.fixed_dets}")
    if args.warmup < 0 or args.repeats < 1 or (args.images is not None and args.images < 1):
        raise UsageError("--warmup must be >= 0, --repeats and --images >= 1")
    dev = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dev == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available (use --device cpu)")
    device = torch.device(dev)
    if args.amp and device.type != "cuda":
        raise UsageError("--amp is float16 autocast on CUDA; this run is on the CPU (drop --amp or use --device cuda)")
    if any(c == "mmdet" or c.startswith("mmdet:") for c in compare):
        try:
            import mmdet  # noqa: F401
        except ImportError:
            raise UsageError("--compare mmdet: mmdetection not installed: run `make mmdet`") from None
    torch.backends.cudnn.benchmark = False
    scale = parse_scale(args.scale, "--scale") if args.scale else tuple(preset.test_scale)

    image_dir = args.image_dir or default_image_dir()
    paths = list_images(Path(image_dir))
    n_timed = args.images or max(len(paths) - args.warmup, 1)  # default: every image once, warm-up included
    args.images = n_timed
    needed = min(len(paths), n_timed + args.warmup)
    images = load_images(paths[:needed])
    baseline = rss_bytes()
    if args.fixed_dets is None and args.checkpoint is None and args.mmdet_checkpoint is None:
        log.warning("random weights without --fixed-dets: almost nothing passes the score threshold, so the mask "
                    "head is barely timed; use --fixed-dets 100")

    results = []
    builders = [("ours", lambda: ours_runner(preset.name, device, args.fixed_dets, scale if args.scale else None,
                                             args.checkpoint, args.mmdet_checkpoint, amp=args.amp))]
    for other in compare:  # our other presets, at the same scale and fixed-dets load (a Table 2-style comparison)
        if other in PRESETS:
            builders.append((other, lambda other=other: ours_runner(other, device, args.fixed_dets,
                                                                     scale if args.scale else None, amp=args.amp)))
    if "torchvision" in compare:
        builders.append(("torchvision", lambda: torchvision_runner(device, args.fixed_dets, scale)))
    if "mmdet" in compare:
        builders.append(("mmdet", lambda: mmdet_runner(device, args.fixed_dets, scale)))
    for c in compare:  # mmdet:<config name>, e.g. mmdet:point-rend_r50-caffe_fpn_ms-1x_coco
        if c.startswith("mmdet:"):
            builders.append((c, lambda c=c: mmdet_runner(device, args.fixed_dets, scale, c.split(":", 1)[1])))
    if args.interleave:
        runners = []
        try:
            for label, build in builders:
                log.info("bench: building %s", label)
                runners.append(build())
            log.info("bench: %d models interleaved — %d warm-up + %d timed images × %d repeat(s) on %s",
                     len(runners), args.warmup, n_timed, args.repeats, dev)
            results = bench_interleaved(runners, images, n_timed, args.warmup, device, args.repeats)
            if args.flops:
                for r, res in zip(runners, results):
                    res.info["gmacs"] = round(count_gmacs(r, images[args.warmup % len(images)]), 3)
        finally:
            for r in reversed(runners):  # undo monkeypatches (mmdet's fixed-dets hook) in reverse order
                r.cleanup()
            del runners
            gc.collect()
    else:
        for label, build in builders:
            log.info("bench: building %s", label)
            runner = build()
            try:
                log.info("bench: %s — %d warm-up + %d timed images × %d repeat(s) on %s", runner.name, args.warmup,
                         n_timed, args.repeats, dev)
                results.append(bench_runner(runner, images, n_timed, args.warmup, device, args.repeats, baseline))
                if args.flops:
                    results[-1].info["gmacs"] = round(count_gmacs(runner, images[args.warmup % len(images)]), 3)
            finally:
                runner.cleanup()
                del runner
                gc.collect()
                if device.type == "cuda":
                    torch.cuda.empty_cache()

    main_res = results[0].as_dict()
    obj = {
        "preset": preset.name,
        "device": dev,
        "fps": main_res["fps"],
        "latency_ms_p50": main_res["latency_ms_p50"],
        "latency_ms_p90": main_res["latency_ms_p90"],
        "peak_memory_mb": main_res["peak_memory_mb"],
        "latency_ms_mean": main_res["latency_ms_mean"],
        "memory_kind": main_res["memory_kind"],
        "dets_per_image_mean": main_res["dets_per_image_mean"],
        "model": {k: v for k, v in main_res.items() if k not in ("fps", "latency_ms_p50", "latency_ms_p90",
                                                                  "peak_memory_mb", "latency_ms_mean",
                                                                  "memory_kind", "dets_per_image_mean")},
        **bench_provenance(device, args, Path(image_dir), len(paths)),
        "provenance": provenance({"checkpoint": args.checkpoint, "mmdet_checkpoint": args.mmdet_checkpoint},
                                 params={k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                                         if k != "func"}, device=f"{dev} ({device_name(device)})"),
    }
    if len(results) > 1:
        obj["compare"] = {label: {**r.as_dict(), "latency_ratio": r.as_dict()["latency_ms_mean"]
                                  / main_res["latency_ms_mean"]}
                          for (label, _), r in zip(builders[1:], results[1:])}
        if "gmacs" in main_res:
            for c in obj["compare"].values():
                c["gmac_ratio"] = c["gmacs"] / main_res["gmacs"]
    text = json.dumps(obj, indent=2, default=str)
    if args.out is not None:
        write_json(args.out, obj)
    if args.run_dir is not None:
        path = merge_speed(args.run_dir, preset, obj, main_res)
        print(f"wrote the speed group of {preset.name} into {path}")
    if args.json:
        print(text)
    else:
        print(_table(results, obj))
    return 0


#: what the timed region of ``rmbench bench`` includes (recorded beside every fps that reaches a table)
TIMED_REGION = ("host-to-device copy of the preprocessed image, backbone, FPN, RPN, RoI heads, NMS, mask branch, "
                "mask paste at the original size (>= 0.5) and device-to-host copy; not JPEG decoding, resize, "
                "normalisation or padding")


def merge_speed(run_dir: Path, preset, obj: dict, main_res: dict) -> Path:
    """Merge the ``speed`` group and ``run.speed_protocol`` into ``run_dir/metrics.json`` (atomically).

    The group holds numbers only (fps, latency p50/p90/mean in ms, GMACs, parameters, batch, images timed); the
    protocol (device, precision, weights, fixed detections, what the timer includes) goes into the run block.

    Raises:
        UsageError: the file exists and names another preset in its run block.
    """
    from eval.io import load_json
    from refinemask.config import run_info

    path = Path(run_dir) / "metrics.json"
    doc = load_json(path, "metrics.json") if path.is_file() else {}
    if not isinstance(doc, dict):
        raise UsageError(f"{path}: not a metrics.json object. Fix: pass another --run-dir")
    run = doc.get("run") if isinstance(doc.get("run"), dict) else {}
    if run.get("preset") not in (None, preset.name):
        raise UsageError(f"{path} is a run of preset {run['preset']!r}, not {preset.name!r}. Fix: pass the run folder "
                         f"of {preset.name} as --run-dir")
    model = obj["model"]
    speed = {"fps": obj["fps"], "latency_ms_p50": obj["latency_ms_p50"], "latency_ms_p90": obj["latency_ms_p90"],
             "latency_ms_mean": obj["latency_ms_mean"], "batch_size": 1, "images_timed": main_res["images_timed"],
             "params": model.get("params"), "gmacs": main_res.get("gmacs")}
    speed = {k: v for k, v in speed.items() if v is not None}
    protocol = {"device": f"{obj['device']} ({obj['device_name']})", "precision": obj["precision"],
                "batch_size": 1, "fixed_dets": obj["fixed_dets"], "weights": model.get("weights"),
                "test_scale": model.get("test_scale"), "warmup": obj["warmup"], "torch": obj["torch"],
                "interleaved": obj["interleaved"], "timed_region": TIMED_REGION}
    run = {**run_info(preset), **run, "speed_protocol": protocol}
    groups = {k: v for k, v in doc.items() if k not in ("run", "speed")}
    out = {"run": run, **groups, "speed": speed}
    out.setdefault("provenance", obj["provenance"])
    write_json(path, out)
    return path


def _table(results: list[BenchResult], obj: dict) -> str:
    flops = all("gmacs" in r.info for r in results)
    lines = [f"device: {obj['device']} ({obj['device_name']}), torch {obj['torch']}, {obj['torch_threads']} threads, "
             f"batch 1, fp32, {obj['warmup']} warm-up + {obj['images']} timed images"
             + (f", fixed_dets={obj['fixed_dets']}" if obj["fixed_dets"] else ""),
             "",
             "| model | fps | latency p50 (ms) | p90 (ms) | mean latency / first row's | peak memory (MiB) | dets/img |"
             + (" GMACs | GMACs / first row's |" if flops else ""),
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |" + (" ---: | ---: |" if flops else "")]
    ref = results[0].as_dict()["latency_ms_mean"]
    for r in results:
        d = r.as_dict()
        mem = "n/a" if d["peak_memory_mb"] is None else f"{d['peak_memory_mb']:.0f}"
        row = (f"| {r.name} | {d['fps']:.3f} | {d['latency_ms_p50']:.1f} | {d['latency_ms_p90']:.1f} | "
               f"{d['latency_ms_mean'] / ref:.2f} | {mem} | {d['dets_per_image_mean']:.1f} |")
        if flops:
            row += f" {d['gmacs']:.1f} | {d['gmacs'] / results[0].info['gmacs']:.2f} |"
        lines.append(row)
    return "\n".join(lines)


COMMAND = Command("bench", "time inference with the paper's fps protocol",
                  "Inference speed with the paper's fps protocol (batch 1, warm-up excluded, preprocessing outside "
                  "the timer, mask paste inside; docs/models.md §6, docs/evaluation.md §10).",
                  add_arguments, run)



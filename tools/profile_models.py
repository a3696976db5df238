"""Where inference time goes, per model: MAC-bound ops (convolutions, matrix products) versus the rest.

The efficiency account of issue 14: ``rmbench bench --flops`` gives each model's GMACs and latency; a model whose
latency ratio to Mask R-CNN exceeds its GMAC ratio spends time in operations that do few multiply-accumulates
(PointRend: point sampling, uncertainty top-k, bilinear upsampling; HTC: three sequential box/mask stages of
small RoIAligns and FCs). This script profiles the same forward (random seeded weights, ``--fixed-dets`` boxes,
the bundled images, batch 1) with ``torch.profiler`` and splits each model's CPU self time into

* ``mac``: ``aten::`` convolution / linear / (b)mm / addmm kernels (what ``torch.utils.flop_counter`` counts);
* ``roi``: RoIAlign, grid_sample, interpolate / upsample (sampling: memory-bound);
* ``nms_topk``: NMS, top-k, sort;
* ``other``: everything else (element-wise, copies, indexing, paste, RLE is not in the forward).

Usage (quote the ratios of one run; the CPU model varies between machines)::

    .venv/bin/python tools/profile_models.py --scale 1333,800 --fixed-dets 100 --warmup 1 --images 3 \\
        mask_rcnn_r50_fpn_1x_coco point_rend_r50_fpn_1x_coco htc_r50_fpn_1x_coco refinemask_r50_fpn_1x_coco
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import baselines  # noqa: E402,F401  (registers PointRend / HTC)
from refinemask.engine.runners import default_image_dir, list_images, load_images, ours_runner  # noqa: E402
from refinemask.engine.timing import count_gmacs  # noqa: E402

GROUPS = [
    ("mac", re.compile(r"aten::(mkldnn_convolution|convolution|_convolution|conv\w*|addmm|mm|bmm|linear|matmul|"
                       r"_slow_conv2d\w*|slow_conv\w*|mkldnn_linear\w*)$")),
    ("roi", re.compile(r"torchvision::roi_align|aten::grid_sampler\w*|aten::upsample\w*|aten::_upsample\w*")),
    ("nms_topk", re.compile(r"torchvision::nms|aten::topk|aten::sort|aten::argsort")),
]


def profile(preset: str, images, warmup: int, n: int, fixed_dets: int, scale) -> dict:
    torch.manual_seed(0)
    runner = ours_runner(preset, torch.device("cpu"), fixed_dets, scale)
    batches = [runner.prepare(im) for im in images]
    for b in batches[:warmup]:
        runner.forward(b)
    timed = batches[warmup:warmup + n]
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for b in timed:
            runner.forward(b)
        wall = time.perf_counter() - t0
    totals = {g: 0.0 for g, _ in GROUPS} | {"other": 0.0}
    for ev in prof.key_averages():
        t = ev.self_cpu_time_total / 1e6
        for g, pat in GROUPS:
            if pat.match(ev.key):
                totals[g] += t
                break
        else:
            totals["other"] += t
    total = sum(totals.values())
    gmacs = count_gmacs(runner, images[warmup])
    mac_s = totals["mac"] / max(len(timed), 1)
    return {"preset": preset, "wall_s_per_image": wall / len(timed), "gmacs": gmacs,
            "share": {g: v / total for g, v in totals.items()},
            "gmac_per_s_wall": gmacs / (wall / len(timed)), "gmac_per_s_mac_ops": gmacs / mac_s if mac_s else None}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("presets", nargs="+")
    p.add_argument("--scale", default="1333,800")
    p.add_argument("--fixed-dets", type=int, default=100)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--images", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    scale = tuple(int(x) for x in a.scale.split(","))
    images = load_images(list_images(default_image_dir())[: a.warmup + a.images])
    rows = [profile(name, images, a.warmup, a.images, a.fixed_dets, scale) for name in a.presets]
    base = rows[0]
    print(f"{'preset':32s} {'s/img':>6s} {'GMACs':>7s} {'lat×':>5s} {'GMAC×':>6s} {'GMAC/s':>7s} {'rel':>5s}  "
          f"{'mac':>5s} {'roi':>5s} {'nms':>5s} {'other':>5s}")
    for r in rows:
        sh = r["share"]
        print(f"{r['preset']:32s} {r['wall_s_per_image']:6.2f} {r['gmacs']:7.1f} "
              f"{r['wall_s_per_image'] / base['wall_s_per_image']:5.2f} {r['gmacs'] / base['gmacs']:6.2f} "
              f"{r['gmac_per_s_wall']:7.1f} {r['gmac_per_s_wall'] / base['gmac_per_s_wall']:5.2f}  "
              f"{sh['mac']:5.1%} {sh['roi']:5.1%} {sh['nms_topk']:5.1%} {sh['other']:5.1%}")
    if a.json:
        a.json.write_text(json.dumps({"scale": scale, "fixed_dets": a.fixed_dets, "images": a.images,
                                      "threads": torch.get_num_threads(), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

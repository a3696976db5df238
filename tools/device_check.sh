#!/usr/bin/env bash
# GPU readiness check (issue 14): one script, run on a machine with an NVIDIA GPU, from a checkout with .venv set up
# (`make setup`). It runs, on the bundled real COCO images:
#   1. the four-model `rmbench bench` (Mask R-CNN, RefineMask, PointRend, HTC; R50-FPN 1x presets, random weights,
#      --fixed-dets 100, 1333x800, interleaved, GMACs), fp32 and --amp;
#   2. 20 AMP training iterations of RefineMask (refinemask_r50_fpn_1x_coco, batch 2, the bundled train images);
#   3. a one-GPU torchrun run (DDP over NCCL) of 10 Mask R-CNN training iterations;
# then prints a short table (also written to $OUT/table.md). Nothing here is a paper number: random weights time the
# heads on a fixed load (docs/evaluation.md §10), the training runs check that AMP and NCCL work and how fast.
# Exit: 0 all steps passed; 3 no GPU (then GPU figures are simply not measured); other: the failing step's code.
# Usage: tools/device_check.sh [OUT_DIR]   (default runs/device_check; PY=... selects the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${1:-runs/device_check}
mkdir -p "$OUT"
RM=("$PY" -m refinemask.cli)
DATA=(--train-json data/coco_mini/annotations/instances_train2017.json --train-images data/coco_mini/train2017)

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "device_check: no CUDA device visible to torch: GPU figures not measured" >&2
    exit 3
fi
"$PY" - > "$OUT/device.json" <<'EOF'
import json, torch, torchvision
p = torch.cuda.get_device_properties(0)
print(json.dumps({"gpu": p.name, "memory_gib": round(p.total_memory / 2**30, 1), "torch": torch.__version__,
                  "torchvision": torchvision.__version__, "cuda": torch.version.cuda,
                  "cudnn": torch.backends.cudnn.version()}))
EOF

MODELS=refinemask_r50_fpn_1x_coco,point_rend_r50_fpn_1x_coco,htc_r50_fpn_1x_coco
for mode in fp32 amp; do
    flag=(); [[ $mode == amp ]] && flag=(--amp)
    echo "== bench ($mode)" >&2
    "${RM[@]}" bench --preset mask_rcnn_r50_fpn_1x_coco --compare "$MODELS" --interleave --flops --fixed-dets 100 \
        --device cuda --warmup 5 --images 40 --repeats 2 "${flag[@]}" --json --out "$OUT/bench_$mode.json" > /dev/null
done

echo "== train: 20 AMP iterations of RefineMask" >&2
t0=$SECONDS
"${RM[@]}" train --preset refinemask_r50_fpn_1x_coco \
    --work-dir "$OUT/train_amp" --device cuda --amp "${DATA[@]}" --max-iters 20 --warmup-iters 5 --batch-size 2 \
    --eval-interval 0 --checkpoint-interval 20 --log-interval 5 --no-tensorboard --no-progress > "$OUT/train_amp.log" 2>&1
echo $((SECONDS - t0)) > "$OUT/train_amp.seconds"

echo "== torchrun: one GPU, NCCL, 10 Mask R-CNN iterations" >&2
TORCHRUN=$(dirname "$PY")/torchrun
t0=$SECONDS
"$TORCHRUN" --standalone --nproc_per_node 1 -m refinemask.cli \
    train --preset mask_rcnn_r50_fpn_1x_coco --work-dir "$OUT/torchrun" --device cuda "${DATA[@]}" --max-iters 10 \
    --warmup-iters 5 --batch-size 2 --eval-interval 0 --checkpoint-interval 10 --log-interval 5 --no-tensorboard \
    --no-progress > "$OUT/torchrun.log" 2>&1
echo $((SECONDS - t0)) > "$OUT/torchrun.seconds"
grep -qi "nccl" "$OUT/torchrun.log" || echo "device_check: warning: the torchrun log does not name NCCL" >&2

"$PY" - "$OUT" <<'EOF' | tee "$OUT/table.md"
import csv, datetime, json, sys
from pathlib import Path
out = Path(sys.argv[1])
dev = json.loads((out / "device.json").read_text())
print(f"GPU check {datetime.date.today()} on {dev['gpu']} ({dev['memory_gib']} GiB), torch {dev['torch']}, "
      f"CUDA {dev['cuda']}, cuDNN {dev['cudnn']}; random weights, --fixed-dets 100, 1333x800, 40 images x 2, "
      f"interleaved\n")
print("| model | fp32 fps | fp32 ms (mean) | AMP fps | AMP ms (mean) | GMACs |")
print("|---|---:|---:|---:|---:|---:|")
runs = {m: json.loads((out / f"bench_{m}.json").read_text()) for m in ("fp32", "amp")}
def rows(obj):
    yield obj["preset"], obj
    for label, c in obj.get("compare", {}).items():
        yield label, c
fp32, amp = dict(rows(runs["fp32"])), dict(rows(runs["amp"]))
for name, r in fp32.items():
    a = amp.get(name, {})
    g = r.get("gmacs") or r.get("model", {}).get("gmacs")
    print(f"| {name} | {r['fps']:.1f} | {r['latency_ms_mean']:.1f} | {a.get('fps', float('nan')):.1f} | "
          f"{a.get('latency_ms_mean', float('nan')):.1f} | {g if g is not None else '-'} |")
for run in ("train_amp", "torchrun"):
    log = list(csv.DictReader(open(out / run / "log.csv")))
    secs = float((out / f"{run}.seconds").read_text().split()[-1])
    last = log[-1] if log else {}
    print(f"\n{run}: {last.get('iter', '?')} iterations, final loss {last.get('loss', '?')}, {secs:.0f} s wall "
          f"(includes start-up)")
EOF

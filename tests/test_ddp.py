"""Multi-process training and sharded inference through torchrun (gloo backend on CPU, 2 processes).

The test launches ``python -m torch.distributed.run --nproc_per_node 2 tests/test_ddp.py --worker OUT`` in a
subprocess with a timeout and a free port. Each rank:

1. trains Mask R-CNN (real preset, tiny input and few RoIs) for 2 iterations with DDP
   (``find_unused_parameters=False``; a parameter without gradient would make iteration 2 fail);
2. gathers every rank's flattened parameters: they must be bit-identical after the steps (and differ from the
   initial ones);
3. runs sharded inference on 5 val images (shards of 3 + 2), gathers the COCO records on every rank, and
   rank 0 also runs single-process inference on all 5 images: both lists must be equal, each image exactly once.

Each rank writes ``OUT/rank{R}.json``; the assertions run in the parent. About 1 minute on 2 cores.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]  # also run as a torchrun worker script: no package imports here
COCO = ROOT / "data" / "coco_mini"
PRESET = "mask_rcnn_r50_fpn_1x_coco"
TINY = ["rpn.batch_size_per_image=32", "rpn.pre_nms_top_n_train=200", "rpn.post_nms_top_n_train=50",
        "rpn.pre_nms_top_n_test=200", "rpn.post_nms_top_n_test=50", "roi.batch_size_per_image=16",
        "roi.detections_per_img=5", "roi.score_thresh=0.0"]
TRAIN_IDS = [187334, 249346, 163497, 525891]
VAL_IDS = [397133, 349860, 217285, 11813, 135561]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(out: Path) -> None:
    import torch
    import torch.distributed as dist

    from refinemask.data import InstanceDataset, write_subset_json
    from refinemask.engine.inference import inference_on_dataset
    from refinemask.engine.trainer import TrainConfig, Trainer

    torch.set_num_threads(1)
    cfg = TrainConfig(
        preset=PRESET, work_dir=out / "train", train_json=COCO / "annotations" / "instances_train2017.json",
        train_images=COCO / "train2017", train_image_ids=TRAIN_IDS, batch_size=1, num_workers=0, max_iters=2,
        warmup_iters=1, lr=0.01, img_scale=(107, 64), flip_ratio=0.5, log_interval=1, eval_interval=-1,
        cfg_options=TINY, device="cpu", tensorboard=False, progress=False, seed=3)
    trainer = Trainer(cfg)
    rank, world = dist.get_rank(), dist.get_world_size()
    model = trainer.model
    init = torch.cat([p.detach().flatten().clone() for p in model.module.parameters()])
    seen = list(itertools.islice(iter(trainer.sampler), 2))
    summary = trainer.train()
    flat = torch.cat([p.detach().flatten() for p in model.module.parameters()])
    gathered = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(gathered, flat)
    report = {
        "rank": rank, "world": world, "ddp": type(model).__name__,
        "find_unused_parameters": bool(model.find_unused_parameters),
        "losses": summary["losses"], "iter": summary["iter"],
        "identical": all(torch.equal(gathered[0], g) for g in gathered),
        "changed": not torch.equal(init, flat), "batches": seen,
    }
    gt = out / "val5.json"
    if rank == 0:
        write_subset_json(COCO / "annotations" / "instances_val2017.json", VAL_IDS, gt)
    dist.barrier()
    ds = InstanceDataset(gt, COCO / "val2017", with_masks=False, categories=trainer.train_set.cat_ids)
    sharded = inference_on_dataset(model, ds, device="cpu", progress=False)
    report["sharded"] = sharded
    if rank == 0:
        report["single"] = inference_on_dataset(model, ds, device="cpu", progress=False, distributed=False)
    (out / f"rank{rank}.json").write_text(json.dumps(report))
    dist.barrier()
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_reports(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--nnodes", "1",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(Path(__file__)), "--worker", str(out)]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=420)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"torchrun did not finish in {e.timeout} s:\n{(e.stderr or '')[-3000:]}")
    assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{proc.stderr[-6000:]}"
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


def test_ddp_training_two_processes(ddp_reports):
    for rep in ddp_reports:
        assert rep["world"] == 2 and rep["ddp"] == "DistributedDataParallel" and rep["find_unused_parameters"] is False
        assert rep["iter"] == 2
        assert rep["losses"] and all(math.isfinite(v) for v in rep["losses"].values())
        assert rep["identical"], f"rank {rep['rank']}: parameters differ across ranks after the steps"
        assert rep["changed"], "parameters did not change: no optimizer step happened"
    # the ranks trained on different images (DistributedSampler-style sharding of the grouped batches)
    b0, b1 = (tuple(map(tuple, r["batches"][0])) for r in ddp_reports)
    assert b0 != b1
    # losses are averaged over ranks for logging: both ranks report the same numbers
    assert ddp_reports[0]["losses"] == ddp_reports[1]["losses"]


def test_ddp_sharded_inference_matches_single_process(ddp_reports):
    r0, r1 = ddp_reports
    assert r0["sharded"] == r1["sharded"]  # gathered on every rank
    assert r0["sharded"] == r0["single"]  # identical to single-process inference
    # every image exactly once, in dataset order; score threshold 0 -> exactly max_dets (5) records per image
    ids = [r["image_id"] for r in r0["sharded"]]
    assert ids == [v for v in VAL_IDS for _ in range(5)]

if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        _worker(Path(sys.argv[2]))
    else:
        sys.exit(f"usage: torchrun --nproc_per_node 2 {sys.argv[0]} --worker OUT_DIR")

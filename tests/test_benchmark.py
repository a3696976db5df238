"""The evaluator benchmark builds a valid COCO-val-like input and runs end to end (tiny size; no timing asserted)."""

from __future__ import annotations

import json

from eval.benchmark import build_coco_val_sized, main
from eval.io import validate_gt, validate_results


def test_build_input_counts_and_validity(coco_gt):
    ds, res = build_coco_val_sized(coco_gt, n_images=30, n_instances=150, dets_per_image=12, seed=1)
    assert len(ds["images"]) == 30 and len(ds["annotations"]) == 150
    assert len(res) == 30 * 12
    assert len({a["id"] for a in ds["annotations"]}) == 150 and min(a["id"] for a in ds["annotations"]) == 1
    validate_results(res, validate_gt(ds))  # raises on any malformed record
    again, res2 = build_coco_val_sized(coco_gt, n_images=30, n_instances=150, dets_per_image=12, seed=1)
    assert again == ds and res2 == res  # seeded


def test_bench_eval_runs(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["--images", "12", "--instances", "60", "--dets", "5", "--metrics", "coco,boundary_f",
                 "--json", str(out)]) == 0
    fig = json.loads(out.read_text())
    assert fig["images"] == 12 and fig["gt_instances"] == 60 and fig["detections"] == 60
    assert fig["ratio"] > 0 and set(fig["per_group_s"]) == {"load+validate", "coco", "boundary_f"}
    assert 0.0 <= fig["metrics"]["coco"]["AP"] <= 1.0
    assert "ratio suite / pycocotools" in capsys.readouterr().out

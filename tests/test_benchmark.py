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
    """Each engine and the reference run in their own process; the same AP comes out of all three."""
    out = tmp_path / "bench.json"
    assert main(["--images", "12", "--instances", "60", "--dets", "5", "--metrics", "coco,boundary_f",
                 "--json", str(out)]) == 0
    fig = json.loads(out.read_text())
    assert fig["images"] == 12 and fig["gt_instances"] == 60 and fig["detections"] == 60
    assert set(fig["runs"]) == {"pycocotools", "suite-vernier", "suite-reference"}
    ap = fig["runs"]["pycocotools"]["metrics"]["coco"]["AP"]
    for kind in ("suite-vernier", "suite-reference"):
        r = fig["runs"][kind]
        assert r["metrics"]["coco"]["AP"] == ap and r["seconds"] > 0 and r["peak_rss_mib"] > 10
        assert set(r["per_group_s"]) == {"load+validate", "coco", "boundary_f"}
    assert fig["runs"]["pycocotools"]["time_ratio"] == 1.0
    assert "pycocotools segm AP only" in capsys.readouterr().out


def test_bench_eval_lvis_runs(tmp_path, capsys):
    from eval.benchmark import build_lvis_sized
    from tests.helpers import LVIS_RAW, _load

    lv = _load(LVIS_RAW)
    ds, res = build_lvis_sized(lv, n_images=3, dets_per_image=20, seed=0)
    validate_results(res, validate_gt(ds, expect="lvis"))
    assert len(ds["images"]) == 3 and len(res) == 60
    out = tmp_path / "bench.json"
    assert main(["--lvis", "--images", "3", "--dets", "20", "--json", str(out)]) == 0
    fig = json.loads(out.read_text())
    ap = fig["runs"]["lvis-api"]["metrics"]["lvis"]["AP"]
    assert fig["runs"]["suite-vernier"]["metrics"]["lvis"]["AP"] == ap
    assert fig["runs"]["suite-reference"]["metrics"]["lvis"]["AP"] == ap

"""``rmbench eval`` / ``cocofy-lvis`` / ``cityscapes-to-coco`` / ``demo`` end to end on the bundled real data."""

from __future__ import annotations

import csv
import json
import math

import pytest

from eval.io import sha256_file
from refinemask.cli import main
from tests.helpers import COCO_VAL_GT, LVIS_COCOFIED, LVIS_MAPPING, LVIS_RAW, PREDS_A, PREDS_A_LVIS

from .test_cityscapes import scene  # noqa: F401  (module-scoped synthetic Cityscapes fixture)

SHAPE = {
    "coco": ["AP", "AP50", "AP75", "APs", "APm", "APl"],
    "ap_star": ["AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf"],
    "boundary_f": ["F1px", "F3px", "F5px", "num_matched", "num_gt"],
    "boundary_acc": ["boundary", "non_boundary"],
    "boundary_ap": ["AP", "AP50", "AP75", "APs", "APm", "APl"],
}


@pytest.fixture(scope="module")
def full_eval(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "out"
    code = main(["eval", "--gt", str(COCO_VAL_GT), "--lvis-gt", str(LVIS_COCOFIED), "--results", str(PREDS_A),
                 "--lvis-results", str(PREDS_A_LVIS), "--out", str(out)])
    assert code == 0
    return out


def test_metrics_json_shape_and_values(full_eval, golden):
    m = json.loads((full_eval / "metrics.json").read_text())
    assert set(m) == set(SHAPE) | {"details", "provenance"}
    for g, keys in SHAPE.items():
        assert list(m[g]) == keys, g
    coco = golden["coco_mask_ap"]["stats"]
    for k in SHAPE["coco"]:
        assert m["coco"][k] == pytest.approx(coco[k], abs=1e-12)
    bap = golden["boundary_ap"]["stats"]
    for k in SHAPE["boundary_ap"]:
        assert m["boundary_ap"][k] == pytest.approx(bap[k], abs=1e-12)
    star = golden["ap_star_lvis"]["results"]
    for k in SHAPE["ap_star"]:
        if star[k] == -1:
            assert m["ap_star"][k] is None  # undefined: null in JSON, never -1
        else:
            assert m["ap_star"][k] == pytest.approx(star[k], abs=1e-12)
    bf = golden["boundary_f"]["main"]
    for n in (1, 3, 5):
        assert m["boundary_f"][f"F{n}px"] == pytest.approx(bf["mean"][f"F_{n}px"], abs=1e-9)
    assert (m["boundary_f"]["num_matched"], m["boundary_f"]["num_gt"]) == (bf["n_evaluated"], bf["n_gt_noncrowd"])
    assert 0.0 <= m["boundary_acc"]["boundary"] < m["boundary_acc"]["non_boundary"] <= 1.0
    for g in SHAPE:  # every value a fraction (counts aside)
        for k, v in m[g].items():
            if not k.startswith("num") and v is not None:
                assert 0.0 <= v <= 1.0, (g, k, v)


def test_provenance(full_eval, golden):
    prov = json.loads((full_eval / "metrics.json").read_text())["provenance"]
    assert prov["inputs"]["results"]["sha256"] == golden["inputs"]["sha256"]["preds_A.json"]
    assert prov["inputs"]["lvis_gt"]["sha256"] == sha256_file(LVIS_COCOFIED)
    gt_sha = golden["inputs"]["sha256"]["data/coco_mini/annotations/instances_val2017.json"]
    assert prov["inputs"]["gt"]["sha256"] == gt_sha
    assert {"commit", "dirty"} <= set(prov["git"])
    for pkg in ("pycocotools", "lvis", "faster-coco-eval", "numpy"):
        assert prov["versions"][pkg]
    assert prov["params"]["boundary_acc_d"] == 2.0 and prov["params"]["dt_area_source"] == "mask"


def test_markdown_and_csv(full_eval, golden):
    md = (full_eval / "metrics.md").read_text()
    ap = golden["coco_mask_ap"]["stats"]["AP"]
    assert f"| {100 * ap:.1f} |" in md  # ×100, one decimal, as in the paper
    with open(full_eval / "per_instance.csv") as f:
        rows = list(csv.DictReader(f))
    golden_rows = json.loads((PREDS_A.parent / "boundary_f_A_per_instance.json").read_text())
    ref = {r["gt_id"]: r for r in golden_rows["rows"]} if isinstance(golden_rows, dict) else {
        r["gt_id"]: r for r in golden_rows}
    by_id = {int(r["gt_id"]): r for r in rows}
    assert set(ref) <= set(by_id)
    for gid, r in ref.items():
        assert float(by_id[gid]["F_1px"]) == pytest.approx(r["F_1px"], abs=1e-12)
        assert int(by_id[gid]["pred_index"]) == r["pred_index"]


def test_metrics_subset(tmp_path):
    out = tmp_path / "o"
    assert main(["eval", "--gt", str(COCO_VAL_GT), "--results", str(PREDS_A), "--out", str(out),
                 "--metrics", "boundary_f,coco"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert set(m) - {"details", "provenance"} == {"coco", "boundary_f"}


def test_single_results_file_routed_to_both_ground_truths(tmp_path):
    """One results file holding COCO and LVIS images: each detection goes to the GT that has its image."""
    merged = json.loads(PREDS_A.read_text()) + json.loads(PREDS_A_LVIS.read_text())
    p = tmp_path / "merged.json"
    p.write_text(json.dumps(merged))
    out = tmp_path / "o"
    assert main(["eval", "--gt", str(COCO_VAL_GT), "--lvis-gt", str(LVIS_COCOFIED), "--results", str(p),
                 "--out", str(out), "--metrics", "coco,ap_star"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    # image 11813 is in both files, so both numbers move a little, but stay close to the separate runs
    assert m["coco"]["AP"] == pytest.approx(0.6750407983445702, abs=0.02)
    assert m["ap_star"]["AP"] == pytest.approx(0.6830870649330301, abs=0.02)


def test_cocofy_cli(tmp_path, capsys):
    out = tmp_path / "cocofied.json"
    assert main(["cocofy-lvis", str(LVIS_RAW), str(out), "--mapping", str(LVIS_MAPPING)]) == 0
    assert json.loads(out.read_text()) == json.loads(LVIS_COCOFIED.read_text())
    assert "435 annotations, 69 categories" in capsys.readouterr().out
    assert main(["cocofy-lvis", str(COCO_VAL_GT), str(tmp_path / "x.json")]) == 2
    assert not (tmp_path / "x.json").exists()


def test_cityscapes_cli(scene, tmp_path):  # noqa: F811
    from eval.cityscapes import cityscapes_coco_style_ap, cityscapes_official_ap

    gt_json = tmp_path / "cs.json"
    assert main(["cityscapes-to-coco", str(scene["gt_fine"]), str(gt_json)]) == 0
    res = tmp_path / "res.json"
    res.write_text(json.dumps(scene["results"]))
    out = tmp_path / "o"
    assert main(["eval", "--gt", str(gt_json), "--results", str(res), "--out", str(out),
                 "--cityscapes-gt-dir", str(scene["gt_fine"]), "--metrics", "coco,cityscapes"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    gt = json.loads(gt_json.read_text())
    off = cityscapes_official_ap(scene["gt_fine"], gt, scene["results"])
    coco = cityscapes_coco_style_ap(gt, scene["results"])
    assert m["cityscapes"]["AP"] == pytest.approx(off["AP"], abs=1e-12)
    assert m["cityscapes"]["AP50"] == pytest.approx(off["AP50"], abs=1e-12)
    assert m["coco"]["AP"] == pytest.approx(coco["AP"], abs=1e-12)
    assert not math.isclose(off["AP"], coco["AP"])  # two different definitions (docs/evaluation.md §11 item 10)


def test_demo_writes_tables_and_plots(tmp_path, golden):
    from refinemask.cli.demo import run_demo

    out = run_demo(tmp_path / "demo", train=False)  # the training step is tested by test_overfit.py
    for name in ("README.md", "ceiling.png", "boundary_accuracy.png", "ceiling.json", "eval/metrics.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    readme = (out / "README.md").read_text()
    assert "Table 12" in readme and "0.76" in readme and "Mask-resolution ceiling" in readme
    # headline: the variant closest to the paper's 0.76/0.75/0.80, with golden numbers
    t12 = golden["table12_region_iou"]["mean_iou"]["dist_no_frame"]
    assert "Headline variant `dist_no_frame`" in readme
    assert f"| 28×28 | {t12['28x28']['d=1']:.2f} | {t12['28x28']['d=2']:.2f} | 0.76 |" in readme
    study = json.loads((out / "table12.json").read_text())
    for variant, by_size in golden["table12_region_iou"]["mean_iou"].items():
        for size, by_d in by_size.items():
            for d, v in by_d.items():
                assert study["mean_iou"][variant][size][d] == pytest.approx(v, abs=1e-12), (variant, size, d)
    rows = json.loads((out / "ceiling.json").read_text())["rows"]
    assert [r["S"] for r in rows] == [14, 28, 56, 112, 224]
    aps = [r["AP"] for r in rows]
    assert aps == sorted(aps) and aps[-1] == pytest.approx(1.0, abs=1e-12) and aps[0] < 0.95
    f1 = [r["F1px"] for r in rows]
    assert f1 == sorted(f1) and f1[0] < 0.9


def test_demo_overfit_table():
    from reports.tables import overfit_markdown

    md = overfit_markdown({"preset": "mask_rcnn_r50_fpn_1x_coco", "iters": 30, "AP": 0.6543, "AP50": 1.0,
                           "F1px": 0.2049, "total_time_s": 41.2})
    assert "| mask_rcnn_r50_fpn_1x_coco | 30 | 65.4 | 100.0 | 20.5 | 41 |" in md


def test_engine_reference_and_jobs_give_the_same_metrics(full_eval, tmp_path):
    """`--engine reference --jobs 1` (pycocotools, faster-coco-eval, lvis-api, one process) writes the numbers of the
    default run (vernier, all CPUs); the engine and its versions are in the provenance."""
    out = tmp_path / "ref"
    assert main(["eval", "--gt", str(COCO_VAL_GT), "--lvis-gt", str(LVIS_COCOFIED), "--results", str(PREDS_A),
                 "--lvis-results", str(PREDS_A_LVIS), "--out", str(out), "--engine", "reference", "--jobs", "1"]) == 0
    ref, default = (json.loads((d / "metrics.json").read_text()) for d in (out, full_eval))
    for g in SHAPE:
        for k, v in default[g].items():
            assert (v is None and ref[g][k] is None) or abs(ref[g][k] - v) <= 1e-12, (g, k)
    assert default["provenance"]["params"]["engine"] == "vernier"
    assert ref["provenance"]["params"]["engine"] == "reference"
    assert default["provenance"]["versions"]["vernier"] == "0.5.4"
    assert (out / "per_instance.csv").read_text() == (full_eval / "per_instance.csv").read_text()


@pytest.mark.parametrize("bad", [["--engine", "fast"], ["--jobs", "0"], ["--jobs", "two"]])
def test_bad_engine_or_jobs_is_a_usage_error(tmp_path, bad, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--gt", str(COCO_VAL_GT), "--results", str(PREDS_A), "--out", str(tmp_path / "o"), *bad])
    assert exc.value.code == 2
    assert not (tmp_path / "o").exists()

"""Honest reproduction: a run fills a paper row only when its protocol matches the row's (reports/protocol.py), and
the CLI's ordinary mistakes are clear errors."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from eval.io import write_json
from refinemask.cli import main
from reports.protocol import check_run
from reports.tables import collect_runs, render_table, table_frame
from tests.helpers import COCO_VAL_GT, DATA, LVIS_COCOFIED, LVIS_RAW, PREDS_A, PREDS_A_LVIS, ROOT

FULL_TRAIN = {"name": "coco_train2017", "images": 118287, "iterations": 88000, "total_batch": 16, "epochs": 12.0,
              "schedule_epochs": 12, "backbone_weights": {"path": "resnet50-0676ba61.pth", "sha256": "0676ba61"}}
COCO_VAL = {"name": "coco_val2017", "images": 5000}


def _run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out), redirect_stderr(out):
        code = main(list(argv))
    return code, out.getvalue()


# --------------------------------------------------------------------------------------------------
# the protocol rules


def test_a_paper_protocol_run_is_comparable():
    run = {"eval_set": COCO_VAL, "lvis_eval_set": {"name": "lvis_v0.5_val_cocofied", "images": 5000},
           "train": FULL_TRAIN}
    assert check_run(run, "coco", ["coco", "ap_star", "boundary_f"]) == {"coco": [], "ap_star": [], "boundary_f": []}


@pytest.mark.parametrize("change, needle", [
    ({"eval_set": {"name": "coco_val2017", "images": 79}}, "evaluation set has 79 images, not 5,000"),
    ({"eval_set": {"name": "instances_val2017_subset", "images": 5000}}, "not coco_val2017"),
    ({"eval_set": None}, "evaluation set not recorded"),
    ({"train": {**FULL_TRAIN, "images": 2, "iterations": 30, "name": "gt_subset"}},
     "trained 30 iterations on 2 images"),
    ({"train": {**FULL_TRAIN, "iterations": 8000, "epochs": 1.08}}, "1.08 epochs (the preset's schedule: 12 epochs)"),
    ({"train": {**FULL_TRAIN, "backbone_weights": "random"}}, "backbone randomly initialised"),
    ({"train": None}, "training not recorded"),
])
def test_every_protocol_difference_is_named(change, needle):
    run = {"eval_set": COCO_VAL, "train": FULL_TRAIN, **change}
    reasons = check_run({k: v for k, v in run.items() if v is not None}, "coco", ["coco"])["coco"]
    assert any(needle in r for r in reasons), reasons


def test_ap_star_needs_the_full_cocofied_ground_truth():
    run = {"eval_set": COCO_VAL, "train": FULL_TRAIN,
           "lvis_eval_set": {"name": "lvis_val_100_cocofied", "images": 100}}
    reasons = check_run(run, "coco", ["coco", "ap_star"])
    assert reasons["coco"] == [] and any("has 100 images, not 5,000" in r for r in reasons["ap_star"])


def test_a_toy_run_fills_no_row_and_is_listed_with_its_reasons(tmp_path):
    """What `make demo`'s short training run writes: 30 iterations on 2 images, scored on those 2 images."""
    run = {"preset": "mask_rcnn_r50_fpn_1x_coco", "eval_set": {"name": "gt_subset", "images": 2},
           "train": {**FULL_TRAIN, "name": "gt_subset", "images": 2, "iterations": 30, "epochs": 30.0,
                     "schedule_epochs": 30, "backbone_weights": "random"}}
    write_json(tmp_path / "overfit" / "metrics.json", {"run": run, "coco": {"AP": 0.7, "AP50": 1.0, "AP75": 0.8,
                                                                             "APs": None, "APm": 0.6, "APl": 0.7}})
    frame = table_frame(1, collect_runs([tmp_path]))
    row = frame[frame["run"].str.contains("mask_rcnn_r50_fpn_1x_coco")].iloc[0]
    assert row["_run_kind"] == "cmd"  # the row shows the command that fills it, not the toy number
    text = render_table(1, [tmp_path])
    assert "| 70.0 |" not in text and "Runs not comparable with the paper's protocol" in text
    assert "trained 30 iterations on 2 images" in text and "evaluation set has 2 images, not 5,000" in text


# --------------------------------------------------------------------------------------------------
# rmbench eval --preset writes the run block; AP* honesty


def test_eval_with_preset_records_the_evaluation_set_and_is_not_comparable(tmp_path):
    out = tmp_path / "e"
    code, text = _run("eval", "--gt", str(COCO_VAL_GT), "--results", str(PREDS_A), "--metrics", "coco",
                      "--preset", "mask_rcnn_r50_fpn_1x_coco", "--trained-as-paper", "--out", str(out))
    assert code == 0, text
    run = json.loads((out / "metrics.json").read_text())["run"]
    assert run["preset"] == "mask_rcnn_r50_fpn_1x_coco" and run["method"] == "Mask R-CNN"
    assert run["eval_set"]["name"] == "coco_val2017" and run["eval_set"]["images"] == 79
    assert "declared" in run["train"]
    code, text = _run("report", "--table", "1", "--runs", str(out))
    assert code == 0 and "evaluation set has 79 images, not 5,000" in text and "| 67.5 |" not in text


def test_eval_preset_mistakes_are_clear_errors(tmp_path):
    code, text = _run("eval", "--gt", str(COCO_VAL_GT), "--results", str(PREDS_A), "--preset", "mask_rcnn_r5O_fpn",
                      "--out", str(tmp_path / "x"))
    assert code == 2 and "closest known presets: mask_rcnn_r50_fpn" in text and "Traceback" not in text
    code, text = _run("eval", "--gt", str(COCO_VAL_GT), "--results", str(PREDS_A), "--trained-as-paper",
                      "--out", str(tmp_path / "x"))
    assert code == 2 and "give --preset too" in text
    assert not (tmp_path / "x").exists()


def test_results_covering_few_images_of_the_lvis_gt_are_flagged(tmp_path):
    """COCO predictions of coco_mini val scored against the bundled LVIS sample: they share one image, so AP* is
    about coverage; the warning is printed and kept in metrics.json."""
    out = tmp_path / "e"
    code, text = _run("eval", "--gt", str(COCO_VAL_GT), "--lvis-gt", str(LVIS_COCOFIED), "--results", str(PREDS_A),
                      "--metrics", "coco,ap_star", "--out", str(out))
    assert code == 0, text
    doc = json.loads((out / "metrics.json").read_text())
    assert len(doc["warnings"]) == 1 and "cover 1 of the 72 images with annotations in lvis_val_100_cocofied.json" in \
        doc["warnings"][0]
    assert "warning: the results cover" in text
    code, text = _run("eval", "--lvis-gt", str(LVIS_COCOFIED), "--results", str(PREDS_A_LVIS), "--out",
                      str(tmp_path / "full"))
    assert code == 0 and "warnings" not in json.loads((tmp_path / "full" / "metrics.json").read_text())


def test_coco_ids_on_a_raw_lvis_file_are_refused(tmp_path):
    code, text = _run("eval", "--lvis-gt", str(LVIS_RAW), "--results", str(PREDS_A_LVIS), "--out", str(tmp_path / "x"))
    assert code == 2 and "rmbench cocofy-lvis" in text and "raw LVIS file" in text
    assert not (tmp_path / "x").exists()


# --------------------------------------------------------------------------------------------------
# reproduce starts from pretrained backbones


def test_reproduce_refuses_without_backbone_weights_and_passes_them_to_every_train(tmp_path):
    args = ("reproduce", "--table", "1", "--data-root", str(DATA), "--work-dir", str(tmp_path / "w"), "--dry-run")
    code, text = _run(*args)
    assert code == 2 and "--backbone-weights DIR" in text and "resnet50-0676ba61.pth" in text
    weights = tmp_path / "imagenet"
    weights.mkdir()
    code, text = _run(*args, "--backbone-weights", str(weights))
    assert code == 2 and "missing resnet101-63fe2227.pth, resnet50-0676ba61.pth, resnext101_64x4d-173b62eb.pth" in text
    for f in ("resnet50-0676ba61.pth", "resnet101-63fe2227.pth", "resnext101_64x4d-173b62eb.pth"):
        (weights / f).write_bytes(b"stand-in")
    code, text = _run(*args, "--backbone-weights", str(weights))
    assert code == 0, text
    trains = [ln for ln in text.splitlines() if ln.strip().startswith("rmbench train")]
    assert len(trains) == 10 and all("--backbone-weights " + str(weights) in t for t in trains)
    assert any("resnext101_64x4d-173b62eb.pth" in t for t in trains if "x101" in t)
    code, text = _run(*args, "--random-backbone")
    assert code == 0 and "--backbone-weights" not in text


# --------------------------------------------------------------------------------------------------
# fps into Table 2


def test_bench_run_dir_puts_fps_into_table_2(tmp_path):
    run_dir = tmp_path / "mask_rcnn"
    code, text = _run("bench", "--preset", "mask_rcnn_r50_fpn_1x_coco", "--device", "cpu", "--images", "1",
                      "--warmup", "0", "--fixed-dets", "3", "--scale", "320,192", "--run-dir", str(run_dir))
    assert code == 0, text
    doc = json.loads((run_dir / "metrics.json").read_text())
    assert doc["run"]["preset"] == "mask_rcnn_r50_fpn_1x_coco" and doc["speed"]["fps"] > 0
    assert doc["speed"]["params"] == 44_396_336 and doc["run"]["speed_protocol"]["precision"] == "fp32"
    fps = f"{doc['speed']['fps']:.1f}"
    code, text = _run("report", "--table", "2", "--runs", str(run_dir))
    row = next(ln for ln in text.splitlines() if ln.startswith("| Mask R-CNN"))
    assert code == 0 and f"| {fps} | 15.7 |" in row and "fps on cpu" in row
    # a second preset into the same folder is refused
    code, text = _run("bench", "--preset", "refinemask_r50_fpn_1x_coco", "--device", "cpu", "--images", "1",
                      "--warmup", "0", "--fixed-dets", "3", "--scale", "320,192", "--run-dir", str(run_dir))
    assert code == 2 and "is a run of preset 'mask_rcnn_r50_fpn_1x_coco'" in text


# --------------------------------------------------------------------------------------------------
# ordinary CLI mistakes


def test_unknown_preset_and_missing_cuda_are_clear_errors(tmp_path):
    for argv in (["models", "mask_rcnn_r50_fpn_1x_coc"],
                 ["train", "--preset", "mask_rcnn_r50_fpn_1x_coc", "--work-dir", str(tmp_path / "t")]):
        code, text = _run(*argv)
        assert code == 2 and "closest known presets: mask_rcnn_r50_fpn_1x_coco" in text and "Traceback" not in text
    import torch

    if not torch.cuda.is_available():
        code, text = _run("train", "--preset", "mask_rcnn_r50_fpn_1x_coco", "--work-dir", str(tmp_path / "t"),
                          "--data-root", str(DATA / "coco_mini"), "--device", "cuda", "--max-iters", "1")
        assert code == 2 and "CUDA is not available" in text and "Traceback" not in text


def test_a_diverging_run_names_the_options_that_help(tmp_path):
    code, text = _run("train", "--preset", "mask_rcnn_r50_fpn_1x_coco", "--work-dir", str(tmp_path / "t"),
                      "--device", "cpu", "--train-json", str(DATA / "coco_mini" / "annotations" /
                                                             "instances_train2017.json"),
                      "--train-images", str(DATA / "coco_mini" / "train2017"), "--image-ids", "187334,249346",
                      "--img-scale", "160", "--max-iters", "3", "--warmup-iters", "1", "--lr", "1e9",
                      "--eval-interval", "-1", "--cpu-threads", "2", "--no-progress",
                      "--cfg-options", "roi.batch_size_per_image=16", "rpn.post_nms_top_n_train=50")
    assert code == 2, text
    assert "non-finite loss at iteration" in text and "--recalibrate-bn" in text and "lower --lr" in text
    assert "Traceback" not in text


# --------------------------------------------------------------------------------------------------
# regress


def _metrics(path: Path, ap: float, gt_sha: str = "a" * 64) -> Path:
    write_json(path, {"coco": {"AP": ap}, "provenance": {"inputs": {"gt": {"path": "gt.json", "sha256": gt_sha}}}})
    return path


def test_regress_reads_star_metrics_json_folders(tmp_path):
    baselines = ROOT / "reports" / "baselines"  # demo_eval_metrics.json, overfit_mask_rcnn_40iter_metrics.json
    code, text = _run("regress", "--baseline", str(baselines), "--current", str(baselines), "--show", "all")
    assert code == 0 and "0 failing: ok" in text
    assert "demo_eval_metrics.json" in text and "overfit_mask_rcnn_40iter_metrics.json" in text
    _metrics(tmp_path / "a" / "x_metrics.json", 0.5)
    _metrics(tmp_path / "b" / "x_metrics.json", 0.4)
    code, text = _run("regress", "--baseline", str(tmp_path / "a"), "--current", str(tmp_path / "b"))
    assert code == 1 and "x_metrics.json" in text and "REGRESSION" in text


def test_regress_refuses_another_ground_truth(tmp_path):
    base = _metrics(tmp_path / "base.json", 0.5)
    other = _metrics(tmp_path / "other.json", 0.5, gt_sha="b" * 64)
    code, text = _run("regress", "--baseline", str(base), "--current", str(other))
    assert code == 2 and "computed on another gt" in text and "--allow-different-gt" in text
    code, text = _run("regress", "--baseline", str(base), "--current", str(other), "--allow-different-gt")
    assert code == 0


def test_an_improvement_is_never_called_a_regression(tmp_path):
    base, better = _metrics(tmp_path / "base.json", 0.5), _metrics(tmp_path / "better.json", 0.6)
    code, text = _run("regress", "--baseline", str(base), "--current", str(better), "--fail-on", "change")
    assert code == 1 and "REGRESSION" not in text and "nothing got worse" in text
    code, text = _run("regress", "--baseline", str(base), "--current", str(better))
    assert code == 0 and "| improved |" in text


def test_version():
    with pytest.raises(SystemExit) as e, redirect_stdout(io.StringIO()) as out:
        main(["--version"])
    assert e.value.code == 0 and out.getvalue().startswith("rmbench 0.")


# --------------------------------------------------------------------------------------------------
# plots and pages


def test_report_all_html_is_one_standalone_page_with_every_table_and_plot(tmp_path):
    from reports.plots import plots_from_runs
    from reports.tables import render_all

    runs = collect_runs([ROOT / "reports" / "baselines" / "demo_eval_metrics.json"])
    plots = plots_from_runs(runs, tmp_path / "plots")
    render_all(runs, tmp_path, "html", plots=plots)
    page = (tmp_path / "index.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>") and "<meta charset" in page
    assert all(f'id="table{n:02d}"' in page for n in range(1, 15)) and page.count("<table") >= 15
    imgs = [m.split('"')[0] for m in page.split('<img src="')[1:]]
    assert imgs and all((tmp_path / src).is_file() for src in imgs) and all(src.endswith(".svg") for src in imgs)
    assert "http://" not in page and "https://" not in page and "<script" not in page  # nothing from the network
    one = (tmp_path / "table01.html").read_text()
    assert one.startswith("<!DOCTYPE html>") and "<table" in one


def test_one_colour_per_method_in_every_figure():
    from reports.plots import series_color, series_label

    assert series_color("RefineMask") == series_color("refinemask_r50_fpn_1x_coco") == \
        series_color("RefineMask R50-FPN (paper)") == series_color("RefineMask\n(paper)")
    assert series_color("Mask R-CNN") == series_color("mask_rcnn_r50_fpn_2x_coco") != series_color("RefineMask")
    assert series_color("some new method") == series_color("some new method")  # stable for unknown names
    assert "not a trained model" in series_label("prediction set A") and "upper bound" in \
        series_label("perfect 28×28 head")


def test_fig6_gives_an_object_its_gt_colour_in_every_row():
    import numpy as np

    from reports.plots import UNMATCHED_COLOR, _instance_color

    gt = [np.zeros((20, 20), np.uint8), np.zeros((20, 20), np.uint8)]
    gt[0][2:8, 2:8] = 1
    gt[1][10:18, 10:18] = 1
    colors = [(1, 1, 1), (2, 2, 2)]
    pred = np.zeros((20, 20), np.uint8)
    pred[10:17, 10:18] = 1  # IoU 0.875 with GT 1
    assert _instance_color(pred, gt, colors) == (2, 2, 2)
    far = np.zeros((20, 20), np.uint8)
    far[0:2, 15:20] = 1
    assert _instance_color(far, gt, colors) == UNMATCHED_COLOR

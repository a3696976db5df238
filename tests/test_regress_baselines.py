"""CI metric guard: recompute what each committed baseline in ``reports/baselines/`` holds and regress against it.

Zero tolerance except full-precision noise (1e-12), in both directions (``fail_on="change"``): any change to a
metric's value, a count, a metric that disappears or becomes undefined fails ``make test``. To change a baseline
on purpose, see README.md "Reports" → "Updating a baseline on purpose".
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from eval.evaluator import EvalParams
from eval.io import load_gt, load_json, write_json
from eval.lvis_ap import cocofy_lvis
from eval.paths import bundled
from reports.regress import regress
from tests.helpers import ROOT

BASELINES = ROOT / "reports" / "baselines"
NOISE = "1e-12"
HOW_TO_UPDATE = ("\nIf this change is intended: rmbench demo --out runs/demo && cp runs/demo/eval/metrics.json "
                 "reports/baselines/demo_eval_metrics.json (for the training baseline: python -c 'from "
                 "tests.test_regress_baselines import overfit_training as f; from pathlib import Path; "
                 "print(f(Path(\"runs/overfit_baseline\")))' and copy that metrics.json to "
                 "reports/baselines/overfit_mask_rcnn_40iter_metrics.json), and say why in the commit message "
                 "(README: Reports).")


def demo_evaluation(out: Path) -> Path:
    """Step 4 of ``rmbench demo`` (refinemask/cli/demo.py): the bundled prediction set A with every metric group.

    Same inputs (bundled COCO val GT, cocofied LVIS v0.5 100-image file, preds_A / preds_A_lvis) and the default
    :class:`EvalParams`; returns the written metrics.json.
    """
    from refinemask.cli.demo import evaluate_bundled_predictions

    gt_path = bundled("coco_mini", "annotations", "instances_val2017.json")
    cocofied = out / "lvis_val_100_cocofied.json"
    write_json(cocofied, cocofy_lvis(load_json(bundled("lvis", "lvis_val_100.json"), "LVIS"),
                                     load_json(bundled("lvis", "coco_to_synset.json"), "mapping")))
    evaluate_bundled_predictions(load_gt(gt_path), gt_path, load_gt(cocofied, "lvis"), cocofied, out / "eval")
    return out / "eval" / "metrics.json"


def overfit_training(out: Path) -> Path:
    """The tiny training run of ``make demo`` / tests/test_overfit.py at its defaults (Mask R-CNN, 2 coco_mini train
    images, 40 iterations, seed 0, one CPU thread), scored with COCO mask AP; returns its metrics.json."""
    import torch

    from refinemask.engine.overfit import run_overfit

    n = torch.get_num_threads()
    try:
        res = run_overfit("mask_rcnn_r50_fpn_1x_coco", out_dir=out / "overfit", metrics=("coco",), cpu_threads=1)
    finally:
        torch.set_num_threads(n)
    return Path(res["work_dir"]) / "metrics.json"


#: baseline file -> (the function that recomputes it into a folder and returns its metrics.json, tolerance specs,
#: fail_on). The evaluator is exact, hence 1e-12 both ways. The training baseline allows 0.1 of AP to drop: float
#: summation order differs across CPUs and BLAS builds, and 40 iterations amplify it (seeds 0/1/2 gave AP
#: 0.85/0.75/0.70), so only a real break of the training path (AP near 0) fails it.
PRODUCERS = {
    "demo_eval_metrics.json": (demo_evaluation, [NOISE], "change"),
    "overfit_mask_rcnn_40iter_metrics.json": (overfit_training, ["0.1"], "drop"),
}


def test_every_baseline_has_a_producer():
    files = sorted(p.name for p in BASELINES.glob("*.json"))
    assert "demo_eval_metrics.json" in files
    assert set(files) <= set(PRODUCERS), f"baselines without a check in PRODUCERS: {set(files) - set(PRODUCERS)}"


def test_demo_baseline_was_made_with_the_demo_parameters():
    """The committed baseline came from the evaluation this test recomputes (same parameters and inputs)."""
    doc = json.loads((BASELINES / "demo_eval_metrics.json").read_text())
    params = doc["provenance"]["params"]
    expected = json.loads(json.dumps(asdict(EvalParams())))
    assert {k: params[k] for k in expected} == expected, HOW_TO_UPDATE
    assert params["metrics"] == ["coco", "ap_star", "boundary_f", "boundary_acc", "boundary_ap"]
    inputs = doc["provenance"]["inputs"]
    for role, name in (("gt", ("coco_mini", "annotations", "instances_val2017.json")),
                       ("results", ("golden", "preds_A.json")), ("lvis_results", ("golden", "preds_A_lvis.json"))):
        from eval.io import sha256_file

        assert inputs[role]["sha256"] == sha256_file(bundled(*name)), f"bundled {role} changed" + HOW_TO_UPDATE


@pytest.mark.parametrize("name", sorted(PRODUCERS))
def test_metrics_equal_the_committed_baseline(name, tmp_path):
    produce, tolerances, fail_on = PRODUCERS[name]
    current = produce(tmp_path)
    code, text = regress(BASELINES / name, current, tolerances, fail_on=fail_on, show="changes")
    assert code == 0, text + HOW_TO_UPDATE

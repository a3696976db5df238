"""``make demo`` / ``rmbench demo``: the main job, end to end on the bundled real COCO data.

Steps (each logged, with progress bars):
1. cocofy the bundled LVIS v0.5 annotations (the AP* ground truth) with the official COCO->LVIS mapping;
2. the Table 12 study: IoU between the Eq. 1 (distance) and appendix A.1 (convolution) boundary regions of
   200 real COCO masks resized to 28/56/112, beside the paper's 0.76/0.75/0.80;
3. the mask-resolution ceiling (S = 14 ... 224): AP, AP*, F_1px, F_3px of resampled GT masks;
4. a full evaluation of the bundled prediction files (COCO AP, AP*, boundary F, boundary accuracy, Boundary AP);
5. ``rmbench analyze`` of prediction set A and ``rmbench compare`` of A with set B = A with every mask eroded by
   1 pixel (:func:`eval.masks.eroded_results`; 200 paired bootstrap resamples), into ``analysis/``;
6. markdown tables and PNG plots under the output folder, named at the end.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from tqdm.auto import tqdm

from .command import Command

log = logging.getLogger(__name__)

__all__ = ["COMMAND", "run_demo", "evaluate_bundled_predictions"]

def evaluate_bundled_predictions(gt: dict, gt_path: Path, lvis_gt: dict, lvis_gt_path: Path, out_dir: Path):
    """Step 4 of the demo: the bundled prediction set A (``data/golden/preds_A*.json``) with every metric group and
    the default :class:`~eval.evaluator.EvalParams`, written to ``out_dir`` (metrics.json, metrics.md, CSV).

    The CI regression test (tests/test_regress_baselines.py) calls this same function, so the committed baseline
    ``reports/baselines/demo_eval_metrics.json`` is always the demo's own evaluation.

    Returns:
        (``EvalOutput``, the evaluator), for the caller's tables.
    """
    from eval.evaluator import EvalParams, InstanceSegEvaluator
    from eval.io import load_json
    from eval.output import provenance, write_evaluation
    from eval.paths import bundled

    preds, preds_lvis = bundled("golden", "preds_A.json"), bundled("golden", "preds_A_lvis.json")
    ev = InstanceSegEvaluator(gt, lvis_gt, params=EvalParams(), gt_path=gt_path, lvis_gt_path=lvis_gt_path)
    ev.process(load_json(preds, "results"), source=preds, lvis_results=load_json(preds_lvis, "results"))
    res = ev.evaluate()
    prov = provenance({"gt": gt_path, "lvis_gt": lvis_gt_path, "results": preds, "lvis_results": preds_lvis},
                      params={**vars(ev.params), "metrics": ev.metrics})
    write_evaluation(out_dir, res.metrics, prov, res.per_instance, res.details,
                     title="Evaluation of the bundled prediction set A")
    return res, ev


#: the demo's comparison: resamples of the paired bootstrap (the command's default is 1000)
DEMO_BOOTSTRAP = 200


def analyze_and_compare(gt: dict, gt_path: Path, out_dir: Path) -> str:
    """Step 5: ``rmbench analyze`` of set A, then ``rmbench compare`` of A with B (A eroded by 1 pixel), written as
    the commands write them (``out_dir/A/``, ``out_dir/A_vs_B/``, ``out_dir/preds_B_eroded_1px.json``); returns the
    demo README's section."""
    from eval.analysis import analyze
    from eval.compare import compare
    from eval.evaluator import EvalParams
    from eval.io import load_json, validate_results, write_json
    from eval.masks import eroded_results
    from eval.output import provenance
    from eval.paths import bundled
    from reports.analysis import compare_page

    from .analysis import write_analysis, write_comparison

    preds = bundled("golden", "preds_A.json")
    raw = load_json(preds, "results")
    a = analyze(gt, raw, params=EvalParams(), source=preds)
    results = a.pop("_results")
    write_analysis(out_dir / "A", a, provenance({"gt": gt_path, "results": preds}), gt, results,
                   bundled("coco_mini", "val2017"), "md", "Analysis of prediction set A")
    b_path = out_dir / "preds_B_eroded_1px.json"
    write_json(b_path, eroded_results(validate_results(raw, gt, preds), 1))
    c = compare(gt, raw, load_json(b_path, "results"), names=("A", "B (A eroded 1 px)"),
                resamples=DEMO_BOOTSTRAP, seed=0, sources=(preds, b_path))
    write_comparison(out_dir / "A_vs_B", c, provenance({"gt": gt_path, "results_a": preds, "results_b": b_path},
                                                       params={"bootstrap": DEMO_BOOTSTRAP, "seed": 0}), "md")
    t, g = a["tide"], a["good_box_bad_mask"]
    lines = ["## Analysis of set A and comparison with B = A eroded by 1 px", "",
             "TIDE ΔAP of mask AP (points): " + ", ".join(f"{k} {100 * v:+.2f}" for k, v in t["delta"].items())
             + f"; good box / bad mask: {g['count']} of {g['mask_false_positives']} mask false positives "
             f"(ΔAP {100 * g['delta_ap']:+.2f}). Page: `analysis/A/analysis.md`.", "",
             "![TIDE](analysis/A/plots/tide.png) ![PR curves](analysis/A/plots/pr_curves.png)", "",
             "![worst boundaries](analysis/A/plots/worst_boundary.png)", "",
             compare_page(c, "md").replace("# ", "### ", 1), ""]
    return "\n".join(lines)


def run_demo(out: str | Path, train: bool = True, overfit_iters: int = 30) -> Path:
    """Run the demo into ``out``; return the folder. About 3 minutes on 2 cores (about 65 s without ``train``).

    Args:
        out: output folder.
        train: include the short Mask R-CNN training run (``refinemask.engine.overfit.run_overfit``).
        overfit_iters: its iterations (30: mask AP about 0.6-0.7 on the two images).
    """
    from eval.boundary_acc import boundary_accuracy
    from eval.ceiling import mask_resolution_ceiling, resampled_results
    from eval.io import atomic_write, load_gt, load_json, write_json
    from eval.lvis_ap import cocofy_lvis
    from eval.output import fmt_value, metrics_markdown, provenance
    from eval.paths import bundled
    from eval.region_study import compare_variants_to_paper
    from reports.plots import demo_plots, plot_boundary_accuracy, plot_ceiling
    from reports.tables import (
        ceiling_markdown,
        markdown_table,
        overfit_markdown,
        paper_table12,
        render_all,
        render_table,
        table12_markdown,
    )

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    steps = tqdm(total=7 if train else 6, desc="rmbench demo", unit="step")

    gt_path = bundled("coco_mini", "annotations", "instances_val2017.json")
    gt = load_gt(gt_path)
    lvis_raw_path, mapping_path = bundled("lvis", "lvis_val_100.json"), bundled("lvis", "coco_to_synset.json")
    cocofied_path = out / "lvis_val_100_cocofied.json"
    write_json(cocofied_path, cocofy_lvis(load_json(lvis_raw_path, "LVIS"), load_json(mapping_path, "mapping")))
    lvis_gt = load_gt(cocofied_path, "lvis")
    log.info("cocofied LVIS: %d images, %d annotations, %d categories", len(lvis_gt["images"]),
             len(lvis_gt["annotations"]), len(lvis_gt["categories"]))
    steps.update()

    steps.set_postfix_str("Table 12 study")
    paper12 = paper_table12()
    comparison = compare_variants_to_paper(gt, paper12)
    t12 = table12_markdown(comparison, paper12)
    write_json(out / "table12.json", {"closest": comparison["closest"], "ranking": comparison["ranking"],
                                      "mean_iou": {k: v["mean_iou"] for k, v in comparison["studies"].items()},
                                      "provenance": provenance({"gt": gt_path})})
    steps.update()

    steps.set_postfix_str("mask-resolution ceiling")
    ceiling = mask_resolution_ceiling(gt, lvis_gt)
    ceil_md = ceiling_markdown(ceiling)
    plot_ceiling(ceiling, out / "ceiling")
    write_json(out / "ceiling.json",
               {"rows": ceiling, "provenance": provenance({"gt": gt_path, "lvis_gt": cocofied_path})})
    steps.update()

    steps.set_postfix_str("evaluation of the bundled predictions")
    res, ev = evaluate_bundled_predictions(gt, gt_path, lvis_gt, cocofied_path, out / "eval")
    bars = {"prediction set A": res.metrics["boundary_acc"]}
    for s in (28, 112):  # perfect mask heads of Mask R-CNN's and RefineMask's output sizes
        bars[f"perfect {s}×{s} head"] = boundary_accuracy(gt, resampled_results(gt, s), d=ev.params.boundary_acc_d)
    plot_boundary_accuracy(bars, out / "boundary_accuracy", paper=None)
    acc_md = markdown_table(["method", "boundary acc.", "non-boundary acc."],
                       [[m, fmt_value("x", v["boundary"]), fmt_value("x", v["non_boundary"])] for m, v in bars.items()])
    steps.update()

    steps.set_postfix_str("analyze A, compare A with B (A eroded by 1 px)")
    analysis_md = analyze_and_compare(gt, gt_path, out / "analysis")
    steps.update()

    overfit_md = ""
    if train:
        steps.set_postfix_str("short training run (Mask R-CNN overfit)")
        from refinemask.engine.overfit import run_overfit

        of = run_overfit("mask_rcnn_r50_fpn_1x_coco", out_dir=out / "overfit", iters=overfit_iters, cpu_threads=1)
        of["preset"] = "mask_rcnn_r50_fpn_1x_coco"
        overfit_md = overfit_markdown(of)
        steps.update()

    steps.set_postfix_str("tables")
    report = "\n".join([
        "# rmbench demo on the bundled real COCO data", "",
        f"Ground truth: `{gt_path.name}` ({len(gt['images'])} val2017 images, {len(gt['annotations'])} instances); "
        f"cocofied LVIS v0.5 ({len(lvis_gt['images'])} images, {len(lvis_gt['annotations'])} instances).", "",
        t12, ceil_md, "![ceiling](ceiling.png)", "",
        "## Evaluation of the bundled prediction set A (values ×100)", "",
        metrics_markdown(res.metrics),
        f"## Boundary vs non-boundary accuracy (Fig. 1; d̂ = {ev.params.boundary_acc_d:g} px, values ×100)", "",
        acc_md, "", "![boundary accuracy](boundary_accuracy.png)", "", analysis_md, overfit_md,
    ])
    with atomic_write(out / "README.md") as f:
        f.write(report)
    steps.update()
    steps.close()
    print(report)

    # the paper's tables (reports/): those the demo fills (Table 12) beside the paper; the others list their commands
    summary = render_all([out], out / "tables")
    demo_plots(out, out / "plots")
    for n, s in summary.items():
        if s["filled"]:
            print("\n" + render_table(n, [out]))
    print(f"\nrmbench demo: wrote tables and plots to {out.resolve()} in {time.time() - t0:.0f} s "
          f"(README.md, ceiling.png, boundary_accuracy.png, eval/metrics.json, tables/index.md, plots/)")
    return out


def add_arguments(p) -> None:
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default runs/demo)")
    p.add_argument("--no-train", action="store_true", help="skip the short Mask R-CNN training run (~1 min)")
    p.add_argument("--overfit-iters", type=int, default=30, help="iterations of the short training run")


def run(args) -> int:
    run_demo(args.out, train=not args.no_train, overfit_iters=args.overfit_iters)
    return 0


COMMAND = Command("demo", "the main job on the bundled real COCO data",
                  "Table 12 study, mask-resolution ceiling and a full evaluation of the bundled prediction files, "
                  "written as markdown tables and PNG plots.", add_arguments, run)

"""``make demo`` / ``rmbench demo``: the main job, end to end on the bundled real COCO data.

Steps (each logged, with progress bars):
1. cocofy the bundled LVIS v0.5 annotations (the AP* ground truth) with the official COCO->LVIS mapping;
2. the Table 12 study: IoU between the Eq. 1 (distance) and appendix A.1 (convolution) boundary regions of
   200 real COCO masks resized to 28/56/112, beside the paper's 0.76/0.75/0.80;
3. the mask-resolution ceiling (S = 14 ... 224): AP, AP*, F_1px, F_3px of resampled GT masks;
4. a full evaluation of the bundled prediction files (COCO AP, AP*, boundary F, boundary accuracy, Boundary AP);
5. markdown tables and PNG plots under the output folder, named at the end.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from tqdm.auto import tqdm

log = logging.getLogger(__name__)

#: the paper's Table 12 (appendix A.1): IoU between the two boundary-region implementations
PAPER_TABLE12 = {28: 0.76, 56: 0.75, 112: 0.80}


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _pct(v) -> str:
    from eval.output import fmt_value

    return fmt_value("x", v)


def table12_markdown(comparison: dict) -> str:
    """Render the Table 12 study beside the paper.

    Args:
        comparison: ``eval.region_study.compare_variants_to_paper`` output; the closest variant is the headline,
            every variant's mean IoUs and distance to the paper follow.
    """
    study = comparison["studies"][comparison["closest"]]
    widths = list(study["widths"])
    header = ["output size", *[f"IoU, d = {w}" for w in widths], "paper"]
    rows = []
    for s in study["sizes"]:
        by_w = study["mean_iou"][f"{s}x{s}"]
        rows.append([f"{s}×{s}", *[f"{by_w[f'd={w}']:.2f}" for w in widths],
                     f"{PAPER_TABLE12.get(int(s), float('nan')):.2f}"])
    vheader = ["variant", *[f"{s}, d = {w}" for w in widths for s in study["sizes"]], "mean abs. diff. to paper"]
    vrows = []
    for name, score in comparison["ranking"]:
        mi = comparison["studies"][name]["mean_iou"]
        vrows.append([f"`{name}`", *[f"{mi[f'{s}x{s}'][f'd={w}']:.3f}" for w in widths for s in study["sizes"]],
                      f"{score:.3f}"])
    return (f"## Table 12: IoU between boundary regions from two implementations\n\n"
            f"{study['num_masks']} real COCO val2017 masks (bundled coco_mini) cropped to their boxes and resized to "
            f"S×S; distance definition = paper Eq. 1, convolution = appendix A.1. Headline variant "
            f"`{study['variant']}` (the one closest to the paper; the paper states neither d nor the border "
            f"rule).\n\n" + _md_table(header, rows) + "\n\nAll variants (see `eval/region_study.py`):\n\n"
            + _md_table(vheader, vrows) + "\n")


def ceiling_markdown(rows: list[dict]) -> str:
    keys = [k for k in ("AP", "AP*", "F1px", "F3px") if k in rows[0]]
    body = [[f"{r['S']}×{r['S']}", *[_pct(r[k]) for k in keys]] for r in rows]
    return ("## Mask-resolution ceiling\n\nEvery GT mask resampled to S×S inside its box and pasted back "
            "(the upper bound of a mask head with that output size; values ×100).\n\n"
            + _md_table(["mask size", *keys], body) + "\n")


def plot_ceiling(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from eval.io import atomic_write

    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=120)
    sizes = [r["S"] for r in rows]
    for k, style in (("AP", "o-"), ("AP*", "s-"), ("F1px", "^-"), ("F3px", "v-")):
        if k in rows[0]:
            ax.plot(sizes, [100 * r[k] for r in rows], style, label=k)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set_xlabel("mask output size S (pixels)")
    ax.set_ylabel("score (%)")
    ax.set_title("Mask-resolution ceiling (resampled GT masks)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)


def plot_boundary_accuracy(values: dict[str, dict[str, float]], path: Path) -> None:
    """Fig. 1-style bars: boundary vs non-boundary accuracy per method (``{method: {boundary, non_boundary}}``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from eval.io import atomic_write

    methods = list(values)
    x = np.arange(len(methods))
    fig, ax = plt.subplots(figsize=(max(5.5, 1.8 * len(methods) + 2), 4.0), dpi=120)
    b = [100 * values[m]["boundary"] for m in methods]
    n = [100 * values[m]["non_boundary"] for m in methods]
    ax.bar(x - 0.18, b, 0.36, label="boundary accuracy")
    ax.bar(x + 0.18, n, 0.36, label="non-boundary accuracy")
    for xi, (bi, ni) in enumerate(zip(b, n)):
        ax.text(xi - 0.18, bi + 0.5, f"{bi:.1f}", ha="center", fontsize=8)
        ax.text(xi + 0.18, ni + 0.5, f"{ni:.1f}", ha="center", fontsize=8)
    ax.set_xticks(x, methods, fontsize=8)
    ax.set_ylim(0, 112)
    ax.set_ylabel("pixel accuracy (%)")
    ax.set_title("Boundary vs non-boundary accuracy (paper Fig. 1)", fontsize=10)
    ax.legend(loc="upper center", ncol=2, fontsize=8, frameon=False)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)


def overfit_markdown(res: dict) -> str:
    """The short training run's table (``refinemask.engine.overfit.run_overfit`` output)."""
    row = [res["preset"], str(res["iters"]), _pct(res["AP"]), _pct(res["AP50"]), _pct(res["F1px"]),
           f"{res['total_time_s']:.0f}"]
    return ("## Training path: Mask R-CNN overfit on 2 real COCO train images\n\n"
            "Random init, short side 160, trained and evaluated on the same two coco_mini train2017 images through "
            "`eval/` (proof that data → train → infer → paste → RLE → eval is wired; values ×100).\n\n"
            + _md_table(["preset", "iterations", "mask AP", "AP50", "F1px", "time (s)"], [row]) + "\n")


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


def run_demo(out: str | Path, train: bool = True, overfit_iters: int = 30) -> Path:
    """Run the demo into ``out``; return the folder. About 1.5 minutes on 2 cores (30 s without ``train``).

    Args:
        out: output folder.
        train: include the short Mask R-CNN training run (``refinemask.engine.overfit.run_overfit``).
        overfit_iters: its iterations (30: mask AP about 0.6-0.7 on the two images).
    """
    from eval.ceiling import mask_resolution_ceiling
    from eval.io import atomic_write, load_gt, load_json, write_json
    from eval.lvis_ap import cocofy_lvis
    from eval.output import metrics_markdown, provenance
    from eval.region_study import compare_variants_to_paper

    from eval.paths import bundled

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    steps = tqdm(total=6 if train else 5, desc="rmbench demo", unit="step")

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
    comparison = compare_variants_to_paper(gt)
    t12 = table12_markdown(comparison)
    write_json(out / "table12.json", {"closest": comparison["closest"], "ranking": comparison["ranking"],
                                      "mean_iou": {k: v["mean_iou"] for k, v in comparison["studies"].items()},
                                      "provenance": provenance({"gt": gt_path})})
    steps.update()

    steps.set_postfix_str("mask-resolution ceiling")
    ceiling = mask_resolution_ceiling(gt, lvis_gt)
    ceil_md = ceiling_markdown(ceiling)
    plot_ceiling(ceiling, out / "ceiling.png")
    write_json(out / "ceiling.json", {"rows": ceiling, "provenance": provenance({"gt": gt_path, "lvis_gt": cocofied_path})})
    steps.update()

    steps.set_postfix_str("evaluation of the bundled predictions")
    res, ev = evaluate_bundled_predictions(gt, gt_path, lvis_gt, cocofied_path, out / "eval")
    from eval.boundary_acc import boundary_accuracy
    from eval.ceiling import resampled_results

    bars = {"prediction set A": res.metrics["boundary_acc"]}
    for s in (28, 112):  # perfect mask heads of Mask R-CNN's and RefineMask's output sizes
        bars[f"perfect {s}×{s} head"] = boundary_accuracy(gt, resampled_results(gt, s), d=ev.params.boundary_acc_d)
    plot_boundary_accuracy(bars, out / "boundary_accuracy.png")
    acc_md = _md_table(["method", "boundary acc.", "non-boundary acc."],
                       [[m, _pct(v["boundary"]), _pct(v["non_boundary"])] for m, v in bars.items()])
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
        acc_md, "", "![boundary accuracy](boundary_accuracy.png)", "", overfit_md,
    ])
    with atomic_write(out / "README.md") as f:
        f.write(report)
    steps.update()
    steps.close()
    print(report)

    # the paper's tables (reports/): those the demo fills (Table 12) beside the paper; the others list their commands
    from reports.plots import demo_plots
    from reports.tables import render_all, render_table

    summary = render_all([out], out / "tables")
    demo_plots(out, out / "plots")
    for n, s in summary.items():
        if s["filled"]:
            print("\n" + render_table(n, [out]))
    print(f"\nrmbench demo: wrote tables and plots to {out.resolve()} in {time.time() - t0:.0f} s "
          f"(README.md, ceiling.png, boundary_accuracy.png, eval/metrics.json, tables/index.md, plots/)")
    return out

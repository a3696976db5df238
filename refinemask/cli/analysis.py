"""Analysis commands: ``analyze`` (why one result set scores what it scores) and ``compare`` (is B better than A).

The numbers come from :mod:`eval.analysis` / :mod:`eval.compare`, the pages and plots from :mod:`reports.analysis`;
this module reads the inputs, composes them and writes the outputs together (no torch import).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from eval.errors import UsageError

from .command import Command
from .evaluate import _positive_int

__all__ = ["COMMANDS", "write_analysis", "write_comparison"]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gt", type=Path, help="COCO-format ground truth json")
    p.add_argument("--lvis-gt", type=Path, help="cocofied LVIS v0.5 json (AP*), or for analyze a raw LVIS json")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--score-thr", type=float, default=0.05, help="positive-prediction score for boundary F/accuracy")
    p.add_argument("--boundary-f-window", choices=("full", "crop"), default="full",
                   help="F_npx on the full image (default) or the RefineMask tool's enlarged GT box")
    p.add_argument("--jobs", type=_positive_int, default=None, help="processes/threads (default: the usable CPUs)")
    p.add_argument("--format", choices=("md", "html"), default="md", help="page format (default md)")


def add_analyze_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", type=Path, required=True, help="COCO results json")
    p.add_argument("--lvis-results", type=Path, help="results for the LVIS ground truth if they differ")
    _common(p)
    p.add_argument("--images", type=Path, help="image folder of --gt (file_name) for the worst-boundary gallery "
                   "(default: the bundled coco_mini images when --gt is the bundled file; else grey crops)")
    p.add_argument("--worst", type=int, default=8, help="instances in the worst-boundary gallery (default 8)")
    p.add_argument("--tide-t-b", type=float, default=0.1, help="TIDE background IoU threshold (default 0.1)")


def _params(args):
    from eval.evaluator import EvalParams

    return EvalParams(score_thr=args.score_thr, boundary_f_window=args.boundary_f_window, jobs=args.jobs)


def _default_images(gt_path: Path | None) -> Path | None:
    from eval.paths import bundled

    if gt_path is None:
        return None
    folder = bundled("coco_mini", "val2017")
    try:
        if Path(gt_path).resolve() == bundled("coco_mini", "annotations", "instances_val2017.json").resolve():
            return folder
    except OSError:
        return None
    return None


def write_analysis(out_dir: Path, analysis: dict, prov: dict, gt: dict, results: list[dict], images, fmt: str,
                   title: str) -> dict[str, Path]:
    """analysis.json, the page and ``plots/``, all or nothing.

    Everything is rendered first (the plots into a temporary folder beside ``out_dir/plots``); only then are the
    plots folder swapped in and the json and page renamed into place together, so a failure leaves the previous
    outputs (or none) and no temporary behind.
    """
    import shutil
    import tempfile

    from eval.io import atomic_write_group, dump_json
    from reports.analysis import analysis_page, analysis_plots

    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".plots.", dir=out_dir))
    try:
        plots = analysis_plots(analysis, staging, gt, results, images)
        rel = {name: f"plots/{paths[0].name}" for name, paths in plots.items()}
        page = analysis_page(analysis, fmt, rel, title=title)
        doc = dict(analysis, plots={k: [f"plots/{p.name}" for p in v] for k, v in plots.items()}, provenance=prov)
        paths = {"json": out_dir / "analysis.json", "page": out_dir / f"analysis.{fmt}"}
        with atomic_write_group([paths["page"], paths["json"]]) as (f_page, f_json):
            f_page.write(page)
            dump_json(_str_keys(doc), f_json)
            shutil.rmtree(out_dir / "plots", ignore_errors=True)
            staging.rename(out_dir / "plots")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return paths


def _str_keys(obj):
    if isinstance(obj, dict):
        return {str(k): _str_keys(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_str_keys(v) for v in obj]
    return obj


def run_analyze(args) -> int:
    from eval.analysis import analyze
    from eval.io import check_output_dir, load_gt, load_json
    from eval.output import provenance

    if args.gt is None:
        raise UsageError("rmbench analyze needs --gt (the COCO ground truth the results are scored on); --lvis-gt adds "
                         "AP* / LVIS AP")
    if args.images is not None and not args.images.is_dir():
        raise UsageError(f"--images {args.images} is not a folder (the images of --gt, by file_name)")
    check_output_dir(args.out)
    gt = load_gt(args.gt, "coco")
    lvis_gt = load_gt(args.lvis_gt, "lvis") if args.lvis_gt else None
    raw = load_json(args.results, "results")
    lvis_raw = load_json(args.lvis_results, "results") if args.lvis_results else None
    params = _params(args)
    a = analyze(gt, raw, lvis_gt, lvis_raw, params=params, source=args.results, worst=args.worst, t_b=args.tide_t_b)
    results = a.pop("_results")
    prov = provenance({"gt": args.gt, "lvis_gt": args.lvis_gt, "results": args.results,
                       "lvis_results": args.lvis_results},
                      params={**vars(params), "worst": args.worst, "tide_t_b": args.tide_t_b})
    images = args.images if args.images is not None else _default_images(args.gt)
    paths = write_analysis(args.out, a, prov, gt, results, images, args.format,
                           f"Analysis of {args.results.name}")
    t = a["tide"]
    print(f"mask AP {100 * a['metrics']['coco']['AP']:.1f}; TIDE ΔAP (points): "
          + ", ".join(f"{k} {100 * v:+.2f}" for k, v in t["delta"].items()))
    g = a["good_box_bad_mask"]
    print(f"good box / bad mask: {g['count']} of {g['mask_false_positives']} mask false positives, "
          f"ΔAP {100 * g.get('delta_ap', 0.0):+.2f}")
    print(f"wrote {paths['json']}, {paths['page']} and {args.out / 'plots'}")
    return 0


def add_compare_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", type=Path, nargs=2, required=True, metavar=("A", "B"),
                   help="the two COCO results jsons (Δ = B − A)")
    p.add_argument("--names", help="display names a,b (default: the file stems)")
    p.add_argument("--bootstrap", type=int, default=1000, help="paired bootstrap resamples over images (default 1000; "
                   "0: point estimates only)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (numpy default_rng; default 0)")
    _common(p)


def write_comparison(out_dir: Path, comparison: dict, prov: dict, fmt: str) -> dict[str, Path]:
    from eval.io import atomic_write_group, dump_json
    from reports.analysis import compare_page

    doc = dict(comparison)
    doc["provenance"] = prov
    paths = {"json": out_dir / "compare.json", "page": out_dir / f"compare.{fmt}"}
    with atomic_write_group([paths["page"], paths["json"]]) as (f_page, f_json):
        f_page.write(compare_page(doc, fmt))
        dump_json(doc, f_json)
    return paths


def run_compare(args) -> int:
    from eval.compare import compare
    from eval.io import check_output_dir, load_gt, load_json
    from eval.output import provenance

    if args.gt is None and args.lvis_gt is None:
        raise UsageError("give at least one ground truth: --gt (COCO json) and/or --lvis-gt (cocofied LVIS json)")
    if args.bootstrap < 0:
        raise UsageError(f"--bootstrap must be >= 0, got {args.bootstrap}")
    names = tuple(args.names.split(",")) if args.names else (args.results[0].stem, args.results[1].stem)
    if len(names) != 2 or not all(n.strip() for n in names):
        raise UsageError(f"--names takes two comma-separated names, got {args.names!r}")
    if names[0] == names[1]:
        raise UsageError(f"the two result sets have the same name {names[0]!r}: pass --names a,b")
    check_output_dir(args.out)
    gt = load_gt(args.gt, "coco") if args.gt else None
    lvis_gt = load_gt(args.lvis_gt, "lvis") if args.lvis_gt else None
    ra, rb = (load_json(p, "results") for p in args.results)
    params = _params(args)
    c = compare(gt, ra, rb, lvis_gt, names=names, resamples=args.bootstrap, seed=args.seed, params=params,
                sources=tuple(args.results))
    prov = provenance({"gt": args.gt, "lvis_gt": args.lvis_gt, "results_a": args.results[0],
                       "results_b": args.results[1]},
                      params={**vars(params), "bootstrap": args.bootstrap, "seed": args.seed, "names": list(names)})
    paths = write_comparison(args.out, c, prov, args.format)
    from reports.analysis import compare_page

    print(compare_page(c, "md"))
    print(f"wrote {paths['json']}, {paths['page']}")
    return 0


COMMANDS = [
    Command("analyze", "error decomposition, good box / bad mask, per-category tables, PR curves, worst boundaries",
            "Analyse one COCO results file: TIDE error decomposition of mask AP (vernier, strict parity), detections "
            "whose box matches a GT but whose mask does not, mask IoU / F_1px distributions by size, per-category and "
            "per-size AP / Boundary AP / F_1px, PR curves and a gallery of the worst boundaries "
            "(DIR/analysis.json, DIR/analysis.md, DIR/plots/).", add_analyze_arguments, run_analyze),
    Command("compare", "compare two results files with a paired bootstrap over images",
            "Every metric of A and B on the same ground truth, Δ = B − A, its 95% interval from a paired bootstrap "
            "over images (the same resampled images for both; per-image matching reused) and P(Δ ≤ 0) "
            "(DIR/compare.json, DIR/compare.md).", add_compare_arguments, run_compare),
]

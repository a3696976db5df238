"""``rmbench``: the harness's command line.

Subcommands (``rmbench <cmd> --help`` for each):

- ``eval``         score a COCO results json with every metric group (metrics.json, metrics.md, per_instance.csv)
- ``cocofy-lvis``  build the AP* ground truth from ``lvis_v0.5_val.json`` and the official COCO->LVIS mapping
- ``cityscapes-to-coco``  convert Cityscapes gtFine instanceIds PNGs to the Cityscapes-as-COCO json
- ``bench-eval``   time the whole metric suite against pycocotools-only AP on a COCO-val-sized input
- ``demo``         the main job on the bundled real COCO data (Table 12 study, mask-resolution ceiling, evaluation)
- ``report``       render the paper's Tables 1–14 (and plots) from metrics.json files, beside the published numbers
- ``regress``      compare metrics.json files with a baseline; exit 1 when a metric dropped or disappeared
- ``reproduce``    run (or print with --dry-run) the train → infer → eval commands that fill a paper table

Exit codes: 0 success, 2 bad input or usage (the message names the file, the record and the fix).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

log = logging.getLogger("rmbench")


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a COCO results json",
                       description="Score COCO-format instance-segmentation results. At least one ground truth: "
                       "`coco` and the boundary groups use --gt, `ap_star` (or `lvis`) uses --lvis-gt.")
    p.add_argument("--gt", type=Path, help="COCO-format ground truth json (instances_val2017.json, Cityscapes-as-COCO)")
    p.add_argument("--lvis-gt", type=Path, help="cocofied LVIS v0.5 json for AP* (rmbench cocofy-lvis), or a raw LVIS "
                   "json for LVIS AP")
    p.add_argument("--results", type=Path, required=True, help="COCO results json (RLE or polygon masks)")
    p.add_argument("--lvis-results", type=Path, help="results for the LVIS groups if they differ from --results")
    p.add_argument("--metrics", help="comma-separated groups: coco, ap_star, lvis, boundary_f, boundary_acc, "
                   "boundary_ap, cityscapes (default: every group the inputs allow)")
    p.add_argument("--out", type=Path, required=True, help="output folder (metrics.json, metrics.md, per_instance.csv)")
    p.add_argument("--cityscapes-gt-dir", type=Path, help="Cityscapes gtFine folder (holding <split>/<city>/"
                   "*_gtFine_instanceIds.png) for the official cityscapesscripts AP; --gt is then its Cityscapes-as-COCO json")
    p.add_argument("--cityscapes-split", default="val", help="split folder under --cityscapes-gt-dir (default val)")
    p.add_argument("--boundary-f-window", choices=("full", "crop"), default="full",
                   help="F_npx on the full image (default) or the RefineMask tool's enlarged GT box")
    p.add_argument("--boundary-acc-d", type=float, default=2.0, help="d̂ of the Fig. 1 boundary band, pixels")
    p.add_argument("--score-thr", type=float, default=0.05, help="positive-prediction score for boundary F/accuracy")
    p.add_argument("--keep-bbox", action="store_true", help="keep `bbox` in results: detection areas from boxes "
                   "(RefineMask-compatible APs/APm/APl); default pops it as detectron2 and mmdet 3.x do")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args) -> int:
    from eval.evaluator import EvalParams, InstanceSegEvaluator
    from eval.io import load_gt, load_json
    from eval.output import metrics_markdown, provenance, write_evaluation

    if args.gt is None and args.lvis_gt is None:
        raise ValueError("give at least one ground truth: --gt (COCO json) and/or --lvis-gt (LVIS json)")
    gt = load_gt(args.gt, "coco") if args.gt else None
    lvis_gt = load_gt(args.lvis_gt, "lvis") if args.lvis_gt else None
    params = EvalParams(boundary_f_window=args.boundary_f_window, boundary_acc_d=args.boundary_acc_d,
                        score_thr=args.score_thr, keep_bbox=args.keep_bbox)
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    ev = InstanceSegEvaluator(gt, lvis_gt, metrics, params, gt_path=args.gt, lvis_gt_path=args.lvis_gt,
                              cityscapes_gt_dir=args.cityscapes_gt_dir, cityscapes_split=args.cityscapes_split)
    results = load_json(args.results, "results")
    lvis_results = load_json(args.lvis_results, "results") if args.lvis_results else None
    ev.process(results, source=args.results, lvis_results=lvis_results)
    out = ev.evaluate()
    prov = provenance({"gt": args.gt, "lvis_gt": args.lvis_gt, "results": args.results,
                       "lvis_results": args.lvis_results},
                      params={**vars(params), "metrics": ev.metrics,
                              "dt_area_source": "bbox" if args.keep_bbox else "mask"})
    paths = write_evaluation(args.out, out.metrics, prov, out.per_instance, out.details,
                             title=f"Evaluation of {args.results.name}")
    print(metrics_markdown(out.metrics))
    print(f"wrote {paths['json']}, {paths['md']}, {paths['csv']}")
    return 0


def _add_cocofy(sub) -> None:
    p = sub.add_parser("cocofy-lvis", help="build the cocofied LVIS v0.5 file (AP* ground truth)",
                       description="Reduce LVIS v0.5 annotations to the 80 COCO classes with the official mapping "
                       "(detectron2 prepare_cocofied_lvis.py / RefineMask tools/cocofied_lvis.py).")
    p.add_argument("input", type=Path, help="lvis_v0.5_val.json")
    p.add_argument("output", type=Path, help="where to write lvis_v0.5_val_cocofied.json")
    p.add_argument("--mapping", type=Path, default=None,
                   help="coco_to_synset.json (default: the bundled copy from lvis-api)")
    p.set_defaults(func=cmd_cocofy)


def cmd_cocofy(args) -> int:
    from eval.lvis_ap import cocofy_lvis_file

    from eval.paths import bundled

    mapping = args.mapping or bundled("lvis", "coco_to_synset.json")
    s = cocofy_lvis_file(args.input, args.output, mapping)
    print(f"wrote {args.output}: {s['images']} images, {s['annotations']} annotations, {s['categories']} categories")
    return 0


def _add_cityscapes(sub) -> None:
    p = sub.add_parser("cityscapes-to-coco", help="convert Cityscapes gtFine instanceIds PNGs to Cityscapes-as-COCO json",
                       description="One RLE per instance of the 8 evaluated classes, iscrowd = (id < 1000), area = pixel "
                       "count (RefineMask/mmdet tools/convert_datasets/cityscapes.py).")
    p.add_argument("gt_fine_dir", type=Path, help="the gtFine folder")
    p.add_argument("output", type=Path, help="where to write the json")
    p.add_argument("--split", default="val")
    p.set_defaults(func=cmd_cityscapes)


def cmd_cityscapes(args) -> int:
    from eval.cityscapes import instance_ids_to_coco

    ds = instance_ids_to_coco(args.gt_fine_dir, args.output, split=args.split)
    print(f"wrote {args.output}: {len(ds['images'])} images, {len(ds['annotations'])} instances")
    return 0


def _add_bench_eval(sub) -> None:
    from eval.benchmark import __doc__ as doc
    from eval.benchmark import add_arguments, run

    p = sub.add_parser("bench-eval", help="time the metric suite against pycocotools-only AP (COCO-val-sized input)",
                       description=doc.split("\n\n")[0])
    add_arguments(p)
    p.set_defaults(func=run)


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="the main job on the bundled real COCO data",
                       description="Table 12 study, mask-resolution ceiling and a full evaluation of the bundled "
                       "prediction files, written as markdown tables and PNG plots.")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default runs/demo)")
    p.add_argument("--no-train", action="store_true", help="skip the short Mask R-CNN training run (~1 min)")
    p.add_argument("--overfit-iters", type=int, default=30, help="iterations of the short training run")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(args.out, train=not args.no_train, overfit_iters=args.overfit_iters)
    return 0


def _add_report(sub) -> None:
    p = sub.add_parser("report", help="render the paper's tables from metrics.json files",
                       description="Render paper table N in the paper's layout: our value beside the paper's with the "
                       "difference (values ×100, one decimal). A row without a run shows '—' and the command that "
                       "fills it. Runs are matched by the `run.preset` of their metrics.json, else their folder name.")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--table", type=int, choices=range(1, 15), metavar="N", help="the paper's table number (1-14)")
    which.add_argument("--all", action="store_true", help="write every table and an index into --out (a folder)")
    p.add_argument("--runs", type=Path, nargs="*", default=[], metavar="PATH",
                   help="metrics.json files, table12.json files, or folders searched for them")
    p.add_argument("--format", choices=("md", "tex", "csv", "html"), default="md", help="output format (default md)")
    p.add_argument("--out", type=Path, help="file for --table (default: print), folder for --all "
                   "(default runs/tables)")
    p.add_argument("--plots", action="store_true", help="with --all: also write the plots (PNG and SVG) to OUT/plots")
    p.add_argument("--data-root", default="data", help="data root shown in the commands of missing rows")
    p.add_argument("--work-dir", default="runs/reproduce", help="work dir shown in the commands of missing rows")
    p.add_argument("--table12-variant", help="Table 12 border conventions (default: the one closest to the paper)")
    p.add_argument("--table12-d", type=int, default=1, help="Table 12 boundary width d, pixels (default 1)")
    p.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    from reports.tables import collect_runs, render_all, render_table, write_text

    runs = collect_runs(args.runs)
    kw = {"data_root": args.data_root, "work_dir": args.work_dir, "table12_variant": args.table12_variant,
          "table12_d": args.table12_d}
    if args.all:
        out = args.out or Path("runs/tables")
        summary = render_all(runs, out, args.format, **kw)
        for n, s in summary.items():
            print(f"Table {n:2d}: {s['filled']:2d} / {s['total']:2d} rows filled  {s['path']}")
        if args.plots:
            from eval.io import load_json
            from reports.plots import plots_from_runs

            ceilings = [f for r in args.runs if r.is_dir() for f in sorted(r.rglob("ceiling.json"))]
            rows = load_json(ceilings[0], "ceiling.json")["rows"] if ceilings else None
            for path in plots_from_runs(runs, out / "plots", rows):
                print(f"wrote {path}")
        return 0
    text = render_table(args.table, runs, args.format, **kw)
    if args.out:
        print(f"wrote {write_text(args.out, text)}")
    else:
        print(text, end="")
    return 0


def _add_regress(sub) -> None:
    p = sub.add_parser("regress", help="fail when metrics dropped against a baseline metrics.json",
                       description="Compare every metric of a current metrics.json (or folder of them) with a "
                       "baseline: a drop beyond tolerance, a changed count, or a disappeared metric fails; new metrics "
                       "are listed. See reports/regress.py.", epilog="Exit codes: 0 ok, 1 regression, 2 bad input.")
    p.add_argument("--baseline", type=Path, required=True, help="baseline metrics.json, or a folder of them")
    p.add_argument("--current", type=Path, required=True, help="current metrics.json, or a folder of them")
    p.add_argument("--tolerance", action="append", default=[], metavar="SPEC",
                   help="default absolute tolerance (0.002), or per metric: coco.AP=0.001, 'boundary_f.*=0.005', "
                   "speed.fps=5%% (repeatable; the last matching spec wins)")
    p.add_argument("--fail-on", choices=("drop", "change"), default="drop",
                   help="drop (default): only metrics that got worse fail; change: any change beyond tolerance fails")
    p.add_argument("--show", choices=("changes", "all"), default="changes", help="rows to print (default changes)")
    p.add_argument("--out", type=Path, help="also write the report (markdown) to this file")
    p.set_defaults(func=cmd_regress)


def cmd_regress(args) -> int:
    from reports.regress import regress

    code, text = regress(args.baseline, args.current, args.tolerance, args.fail_on, args.show, args.out)
    print(text, end="", file=sys.stderr if code == 2 else sys.stdout)
    return code


def _add_reproduce(sub) -> None:
    p = sub.add_parser("reproduce", help="run (or print) what fills a paper table, then render it",
                       description="For every row of the table that the data allows: rmbench train → infer → eval "
                       "(torchrun when --gpus > 1), skipping rows whose metrics.json exists, then render the table.")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--table", type=int, choices=range(1, 15), metavar="N", help="the paper's table number (1-14)")
    which.add_argument("--all", action="store_true", help="every table")
    p.add_argument("--data-root", required=True, help="folder with coco/ (or coco_mini/), lvis/, cityscapes/")
    p.add_argument("--work-dir", required=True, help="runs go to WORK_DIR/<preset>/")
    p.add_argument("--gpus", type=int, default=1, help="processes per node for train and infer (torchrun if > 1)")
    p.add_argument("--preset", help="only the row of this preset")
    p.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    p.set_defaults(func=cmd_reproduce)


def cmd_reproduce(args) -> int:
    from reports.reproduce import reproduce

    tables = list(range(1, 15)) if args.all else [args.table]
    try:
        text = reproduce(tables, args.data_root, args.work_dir, args.gpus, args.dry_run, args.preset)
    except RuntimeError as e:
        print(f"rmbench reproduce: error: {e}", file=sys.stderr)
        return 1
    if args.dry_run:
        print(text, end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rmbench", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for add in (_add_eval, _add_cocofy, _add_cityscapes, _add_bench_eval, _add_demo, _add_report, _add_regress,
                _add_reproduce):
        add(sub)
    _add_optional_commands(sub)
    return parser


def _add_optional_commands(sub) -> None:
    """Subcommands contributed by the model side (train/infer/bench/models), when present."""
    try:
        from . import cli_models
    except ImportError:
        return
    cli_models.add_commands(sub)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as e:  # EvalInputError is a ValueError
        print(f"rmbench {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

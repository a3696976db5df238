"""Report commands: ``report`` (the paper's tables and plots), ``regress`` (metric regression), ``reproduce``.

``reports`` holds the pure parts (tables, plots, the reproduction *plan*); running a plan — subprocesses of
``rmbench train`` / ``infer`` / ``eval``, then rendering — happens here, in the composition root.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from .command import Command

__all__ = ["COMMANDS", "available_commands", "defined_presets", "execute_plan", "reproduce"]


def add_report_arguments(p: argparse.ArgumentParser) -> None:
    which = p.add_mutually_exclusive_group()
    which.add_argument("--table", type=int, choices=range(1, 15), metavar="N", help="the paper's table number (1-14)")
    which.add_argument("--all", action="store_true", help="write every table and an index into --out (a folder)")
    which.add_argument("--analysis", type=Path, metavar="JSON", help="render an `rmbench analyze` analysis.json "
                       "(--format md or html)")
    p.add_argument("--compare", type=Path, metavar="JSON", help="an `rmbench compare` compare.json: rendered alone, "
                   "or with --table N printed under the table (each metric's Δ and its bootstrap 95%% interval)")
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


def _render_analysis_or_compare(args) -> int:
    from eval.errors import UsageError
    from eval.io import load_json
    from reports.analysis import analysis_page
    from reports.tables import write_text

    fmt = args.format if args.format in ("md", "html") else None
    if fmt is None:
        raise UsageError(f"--analysis / --compare render as md or html, not {args.format}")
    if args.analysis is not None:
        doc = load_json(args.analysis, "analysis.json")
        if not isinstance(doc, dict) or "tide" not in doc:
            raise UsageError(f"{args.analysis} is not an `rmbench analyze` analysis.json (no 'tide' block)")
        plots = {k: v[0] for k, v in doc.get("plots", {}).items() if v}
        text = analysis_page(doc, fmt, plots, title=f"Analysis ({args.analysis.parent.name})")
    else:
        text = _compare_text(args.compare, fmt)
    if args.out:
        print(f"wrote {write_text(args.out, text)}")
    else:
        print(text, end="")
    return 0


def _compare_text(path: Path, fmt: str, fragment: bool = False) -> str:
    from eval.errors import UsageError
    from eval.io import load_json
    from reports.analysis import compare_page

    doc = load_json(path, "compare.json")
    if not isinstance(doc, dict) or "metrics" not in doc or "bootstrap" not in doc:
        raise UsageError(f"{path} is not an `rmbench compare` compare.json (needs 'metrics' and 'bootstrap')")
    return compare_page(doc, fmt, fragment=fragment)


def run_report(args) -> int:
    from eval.errors import UsageError
    from reports.tables import collect_runs, render_all, render_table, write_text

    if args.table is None and not args.all:
        if args.analysis is None and args.compare is None:
            raise UsageError("give one of --table N, --all, --analysis JSON or --compare JSON")
        if args.analysis is not None and args.compare is not None:
            raise UsageError("--analysis and --compare render one page each: give one of them")
        return _render_analysis_or_compare(args)
    if args.all and args.compare is not None:
        raise UsageError("--compare goes with --table N (printed under that table) or alone, not with --all")

    runs = collect_runs(args.runs)
    kw = {"data_root": args.data_root, "work_dir": args.work_dir, "table12_variant": args.table12_variant,
          "table12_d": args.table12_d}
    if args.all:
        out = args.out or Path("runs/tables")
        plot_paths = []
        if args.plots:
            from eval.io import load_json
            from reports.plots import plots_from_runs

            ceilings = [f for r in args.runs if r.is_dir() for f in sorted(r.rglob("ceiling.json"))]
            rows = load_json(ceilings[0], "ceiling.json")["rows"] if ceilings else None
            plot_paths = plots_from_runs(runs, out / "plots", rows)
            for path in plot_paths:
                print(f"wrote {path}")
        summary = render_all(runs, out, args.format, plots=plot_paths, **kw)
        for n, s in summary.items():
            print(f"Table {n:2d}: {s['filled']:2d} / {s['total']:2d} rows filled  {s['path']}")
        if args.format == "html":
            print(f"wrote {out / 'index.html'} (every table and plot, a standalone page)")
        return 0
    text = render_table(args.table, runs, args.format, **kw)
    if args.compare is not None:  # the comparison's Δ and interval under the table (md / html)
        if args.format not in ("md", "html"):
            raise UsageError("--table N --compare renders as md or html")
        if args.format == "md":
            text += "\n" + _compare_text(args.compare, "md").replace("# ", "## ", 1)
        else:  # the comparison's body goes inside the table's page, before </body>
            head, sep, tail = text.rpartition("</body>")
            text = head + _compare_text(args.compare, "html", fragment=True) + "\n" + sep + tail
    if args.out:
        print(f"wrote {write_text(args.out, text)}")
    else:
        print(text, end="")
    return 0


def add_regress_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--baseline", type=Path, required=True, help="baseline metrics.json, or a folder of them")
    p.add_argument("--current", type=Path, required=True, help="current metrics.json, or a folder of them")
    p.add_argument("--tolerance", action="append", default=[], metavar="SPEC",
                   help="default absolute tolerance (0.002), or per metric: coco.AP=0.001, 'boundary_f.*=0.005', "
                   "speed.fps=5%% (repeatable; the last matching spec wins)")
    p.add_argument("--fail-on", choices=("drop", "change"), default="drop",
                   help="drop (default): only metrics that got worse fail; change: any change beyond tolerance fails")
    p.add_argument("--show", choices=("changes", "all"), default="changes", help="rows to print (default changes)")
    p.add_argument("--out", type=Path, help="also write the report (markdown) to this file")
    p.add_argument("--allow-different-gt", action="store_true",
                   help="compare files computed on different ground truths (their provenance sha256 differ)")


def run_regress(args) -> int:
    from reports.regress import regress

    code, text = regress(args.baseline, args.current, args.tolerance, args.fail_on, args.show, args.out,
                         allow_different_gt=args.allow_different_gt)
    print(text, end="", file=sys.stderr if code == 2 else sys.stdout)
    return code


def add_reproduce_arguments(p: argparse.ArgumentParser) -> None:
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--table", type=int, choices=range(1, 15), metavar="N", help="the paper's table number (1-14)")
    which.add_argument("--all", action="store_true", help="every table")
    p.add_argument("--data-root", required=True, help="folder with coco/ (or coco_mini/), lvis/, cityscapes/")
    p.add_argument("--work-dir", required=True, help="runs go to WORK_DIR/<preset>/")
    p.add_argument("--gpus", type=int, default=1, help="processes per node for train and infer (torchrun if > 1)")
    p.add_argument("--preset", help="only the row of this preset")
    p.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    bw = p.add_mutually_exclusive_group()
    bw.add_argument("--backbone-weights", type=Path, metavar="DIR",
                    help="folder of the torchvision ImageNet state dicts every train command starts from: "
                    + ", ".join(_weight_files()) + " (only those the planned presets use are needed)")
    bw.add_argument("--random-backbone", action="store_true",
                    help="train from randomly initialised backbones (never comparable with the paper's rows)")


def _weight_files() -> list[str]:
    from refinemask.config import IMAGENET_WEIGHT_FILES

    return list(IMAGENET_WEIGHT_FILES.values())


def resolve_backbone_weights(presets: list[str], weights_dir: Path | None, random_backbone: bool) -> dict[str, str]:
    """preset -> ``weights_dir/<its backbone's ImageNet file>`` for every preset that is trained.

    Raises:
        UsageError: neither a folder nor ``random_backbone`` while presets are to be trained; the folder is missing
            or lacks a file a planned preset needs (the message names the files and how to get them).
    """
    from eval.errors import UsageError
    from refinemask.config import IMAGENET_WEIGHT_FILES
    from refinemask.registry import PRESETS

    known = [p for p in presets if p in PRESETS]
    if not known or random_backbone:
        return {}
    files = {p: IMAGENET_WEIGHT_FILES.get(PRESETS[p].backbone) for p in known}
    how = ("torchvision writes them to ~/.cache/torch/hub/checkpoints/ when, on a machine with internet access, "
           "torchvision.models.resnet50(weights='IMAGENET1K_V1') (resnet101, resnext101_64x4d likewise) is built; "
           "copy them into one folder")
    needed = sorted({f for f in files.values() if f})
    if weights_dir is None:
        raise UsageError(f"every paper row starts from an ImageNet backbone, but no --backbone-weights DIR was given. "
                         f"Fix: pass --backbone-weights DIR holding {', '.join(needed)} ({how}), or "
                         f"--random-backbone for runs that are never comparable with the paper")
    missing = sorted({f for f in needed if not (weights_dir / f).is_file()})
    if missing:
        raise UsageError(f"--backbone-weights {weights_dir}: missing {', '.join(missing)}. Fix: {how}")
    return {p: str(weights_dir / f) for p, f in files.items() if f}


def run_reproduce(args) -> int:
    tables = list(range(1, 15)) if args.all else [args.table]
    from reports.reproduce import plan_table

    # the presets whose rows would train (data present, preset defined): only they need ImageNet weights
    known = defined_presets()
    runnable = [r.preset for n in tables
                for r in plan_table(n, args.data_root, args.work_dir, args.gpus, args.preset, known).rows
                if r.commands and r.preset and not r.undefined]
    weights = resolve_backbone_weights(runnable, args.backbone_weights, args.random_backbone)
    try:
        text = reproduce(tables, args.data_root, args.work_dir, args.gpus, args.dry_run, args.preset,
                         backbone_weights=weights)
    except ReproduceError as e:
        print(f"rmbench reproduce: error: {e}", file=sys.stderr)
        return 1
    if args.dry_run:
        print(text, end="")
    return 0


# ------------------------------------------------------------------------------------------------------------
# running a reproduction plan (the plan itself is reports.reproduce.plan_table)
class ReproduceError(RuntimeError):
    """A planned command is unavailable or failed (exit code 1: the run stopped, the input was fine)."""


def defined_presets() -> set[str]:
    """The preset names this install can build (the model package's and the registered plug-ins')."""
    from refinemask.registry import PRESETS

    return set(PRESETS)


def available_commands() -> set[str]:
    """The ``rmbench`` subcommands of this install (registered by ``refinemask/cli/__init__.py``)."""
    from .command import KNOWN_COMMANDS

    return set(KNOWN_COMMANDS)


def _executable(cmd: list[str]) -> list[str]:
    """The printed command as this interpreter runs it (no reliance on PATH)."""
    if cmd[0] == "rmbench":
        return [sys.executable, "-m", "refinemask.cli", *cmd[1:]]
    if cmd[0] == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", *cmd[1:]]
    return cmd


def _run(cmd: list[str]) -> None:
    print(f"$ {shlex.join(cmd)}", flush=True)
    res = subprocess.run(_executable(cmd), check=False)
    if res.returncode != 0:
        raise ReproduceError(f"command failed with exit code {res.returncode}: {shlex.join(cmd)}")


def _add_run_block(metrics_path: Path, info: dict[str, Any]) -> None:
    from eval.io import load_json, write_json

    doc = load_json(metrics_path, "metrics.json")
    if isinstance(doc, dict):  # the paper row's labels join the run block `rmbench eval --preset` wrote
        run = doc.get("run") if isinstance(doc.get("run"), dict) else {}
        doc = {**doc, "run": {**run, **info}}
        write_json(metrics_path, doc)


def execute_plan(plan) -> None:
    """Run a :class:`reports.reproduce.TablePlan`'s commands (rows whose metrics.json exists are skipped).

    Raises:
        ReproduceError: a planned ``rmbench`` command is not available, or a command fails (named).
    """
    from reports.reproduce import row_done

    needed = {c[1] if c[0] == "rmbench" else c[5] for r in plan.rows if not (r.skip or r.undefined)
              for c in r.commands}
    missing = sorted(needed - available_commands())
    if missing:
        raise ReproduceError(f"this install has no `rmbench {'`/`rmbench '.join(missing)}` (the model side's "
                             f"commands); run with --dry-run to see the plan")
    for cmd in plan.setup:
        if not Path(cmd[-1]).is_file():
            _run(cmd)
    for r in plan.rows:
        if r.skip:
            print(f"table {plan.table} row {r.row}: skipped — {r.skip}", flush=True)
            continue
        if r.metrics_path is not None and (row_done(r.metrics_path) if r.preset else r.metrics_path.is_file()):
            print(f"table {plan.table} row {r.row}: {r.metrics_path} exists, skipping", flush=True)
            continue
        if r.undefined:
            print(f"table {plan.table} row {r.row}: skipped — {r.undefined}", flush=True)
            continue
        for cmd in r.commands:
            _run(cmd)
        if r.preset and r.metrics_path is not None and r.metrics_path.is_file():
            _add_run_block(r.metrics_path, r.run_info)


def reproduce(tables: list[int], data_root, work_dir, gpus: int = 1, dry_run: bool = False,
              preset: str | None = None, backbone_weights: dict[str, str] | None = None) -> str:
    """Plan (and unless ``dry_run`` run) the given tables, then render each from ``work_dir``.

    Returns:
        The printed text (plans, and the rendered tables after a real run).
    Raises:
        UsageError: from the plan (unknown table, ``--gpus`` < 1, a preset not in the table).
        ReproduceError: from :func:`execute_plan`.
    """
    from reports.reproduce import format_plan, plan_table
    from reports.tables import collect_runs, render_table, write_text

    texts = []
    known = defined_presets()
    for n in tables:
        plan = plan_table(n, data_root, work_dir, gpus, preset, known_presets=known, backbone_weights=backbone_weights)
        texts.append(format_plan(plan))
        if dry_run:
            continue
        print(texts[-1], flush=True)
        execute_plan(plan)
        work = Path(work_dir)
        runs = collect_runs([work]) if work.is_dir() and (any(work.rglob("metrics.json"))
                                                          or any(work.rglob("table12.json"))) else None
        md = render_table(n, runs, "md", data_root=str(data_root), work_dir=str(work_dir))
        path = write_text(work / "tables" / f"table{n:02d}.md", md)
        texts.append(md + f"\nwrote {path}\n")
        print(texts[-1], flush=True)
    return "\n".join(texts)


COMMANDS = [
    Command("report", "render the paper's tables from metrics.json files",
            "Render paper table N in the paper's layout: our value beside the paper's with the difference (values "
            "×100, one decimal). A row without a run shows '—' and the command that fills it. Runs are matched by "
            "the `run.preset` of their metrics.json, else their folder name.", add_report_arguments, run_report),
    Command("regress", "fail when metrics dropped against a baseline metrics.json",
            "Compare every metric of a current metrics.json (or folder of them) with a baseline: a drop beyond "
            "tolerance, a changed count, or a disappeared metric fails; new metrics are listed. See "
            "reports/regress.py.", add_regress_arguments, run_regress,
            epilog="Exit codes: 0 ok, 1 regression, 2 bad input."),
    Command("reproduce", "run (or print) what fills a paper table, then render it",
            "For every row of the table that the data allows: rmbench train → infer → eval (torchrun when --gpus "
            "> 1), skipping rows whose metrics.json exists, then render the table.", add_reproduce_arguments,
            run_reproduce),
]

"""Paper-style tables: the paper's Tables 1–14 with our numbers beside the published ones.

Inputs are plain files, so a table can be rendered from numbers computed anywhere:

- the paper's numbers, ``reports/paper/tableNN.csv`` (as printed: percent with one decimal, fps, IoU as a
  fraction with two decimals; see ``reports/paper/README.md``);
- our numbers, ``metrics.json`` files written by ``rmbench eval`` (``{group: {key: fraction}}``, see
  ``eval/output.py``) and, for Table 12, the demo's ``table12.json``.

A row is matched to a run by the run's name: the ``run.preset`` field of its metrics.json (the optional
``"run": {"preset", "method", "backbone", "schedule", "dataset"}`` block) or, without that block, the name of the
folder holding the metrics.json. A row's ``preset`` and ``aliases`` columns list the names it accepts.

Rendering never runs a model. Values are shown ×100 with one decimal as in the paper (fps as images per second,
Table 12's IoU as a fraction with two decimals); metrics.json keeps the fractions at full precision. A row
without a run shows "—" and the exact command that would produce it.
"""

from __future__ import annotations

import html
import logging
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from eval.errors import UsageError
from eval.io import EvalInputError, atomic_write, load_json

from .protocol import check_run

log = logging.getLogger(__name__)

PAPER_DIR = Path(__file__).resolve().parent / "paper"

#: metadata columns of every paper CSV (everything else except ``notes`` is a column of the paper's table)
META_COLUMNS = ("row", "kind", "gain_of", "method", "backbone", "schedule", "preset", "aliases")
NOTES_COLUMN = "notes"

#: top-level keys of metrics.json that are not metric groups
RESERVED_KEYS = ("details", "provenance", "run", "warnings")

FORMATS = ("md", "tex", "csv", "html")
TABLE_NUMBERS = tuple(range(1, 15))

#: defaults used in the "how to fill this row" commands
DEFAULT_DATA_ROOT = "data"
DEFAULT_WORK_DIR = "runs/reproduce"

# metric column -> (metrics.json group, key), per kind of table
_COCO = {"AP": ("coco", "AP"), "AP*": ("ap_star", "AP"), "AP*_S": ("ap_star", "APs"), "AP*_M": ("ap_star", "APm"),
         "AP*_L": ("ap_star", "APl"), "fps": ("speed", "fps"), "F_1px": ("boundary_f", "F1px"),
         "F_3px": ("boundary_f", "F3px"), "AP_dev": ("test_dev", "AP")}
_LVIS = {"AP": ("lvis", "AP"), "AP_r": ("lvis", "APr"), "AP_c": ("lvis", "APc"), "AP_f": ("lvis", "APf")}
_LVIS_DEV = {"AP": ("test_dev", "AP"), "AP_r": ("test_dev", "APr"), "AP_c": ("test_dev", "APc"),
             "AP_f": ("test_dev", "APf")}
# RefineMask's Cityscapes table is COCO-style AP on the Cityscapes-as-COCO val json: `rmbench eval --gt` → `coco`
_CITYSCAPES = {"AP": ("coco", "AP"), "AP_S": ("coco", "APs"), "AP_M": ("coco", "APm"), "AP_L": ("coco", "APl")}
_TABLE12 = {"IoU": ("table12", "mean_iou")}

#: how a metric column is shown: (factor from the stored value, decimals)
_DISPLAY = {"fps": (1.0, 1), "IoU": (1.0, 2)}
_DEFAULT_DISPLAY = (100.0, 1)

#: LaTeX headers of the metric columns
_TEX_HEADER = {"AP*": r"AP$^\star$", "AP*_S": r"AP$^\star_S$", "AP*_M": r"AP$^\star_M$", "AP*_L": r"AP$^\star_L$",
               "F_1px": r"F$_{1px}$", "F_3px": r"F$_{3px}$", "AP_dev": r"AP$_{dev}$", "AP_r": r"AP$_r$",
               "AP_c": r"AP$_c$", "AP_f": r"AP$_f$", "AP_S": r"AP$_S$", "AP_M": r"AP$_M$", "AP_L": r"AP$_L$",
               "fps": "Runtime (fps)"}


@dataclass(frozen=True)
class TableSpec:
    """What a paper table shows and where our numbers come from.

    Attributes:
        number: the paper's table number (1–14).
        title: the paper's caption title.
        dataset: ``"coco"``, ``"lvis"``, ``"lvis_test_dev"``, ``"cityscapes"`` or ``"table12"`` (the boundary-region
            study, filled from the demo's table12.json instead of model runs).
        split: the evaluation split, as the paper states it.
        paths: metric column -> (metrics.json group, key).
    """

    number: int
    title: str
    dataset: str
    split: str
    paths: dict[str, tuple[str, str]] = field(default_factory=dict)


TABLES: dict[int, TableSpec] = {
    1: TableSpec(1, "Comparison with Mask R-CNN on COCO val2017", "coco", "COCO val2017", _COCO),
    2: TableSpec(2, "Efficiency of RefineMask", "coco", "COCO val2017", _COCO),
    3: TableSpec(3, "Different number of stages", "coco", "COCO val2017", _COCO),
    4: TableSpec(4, "Different fusion modules", "coco", "COCO val2017", _COCO),
    5: TableSpec(5, "Effectiveness of fine-grained features", "coco", "COCO val2017", _COCO),
    6: TableSpec(6, "Effectiveness of multi-stage refinement", "coco", "COCO val2017", _COCO),
    7: TableSpec(7, "Effectiveness of boundary-aware refinement", "coco", "COCO val2017", _COCO),
    8: TableSpec(8, "Comparisons of single-model results on COCO val2017 and test-dev", "coco",
                 "COCO val2017 (AP*) and test-dev (AP_dev)", _COCO),
    9: TableSpec(9, "Results on LVIS v1.0 validation set", "lvis", "LVIS v1.0 val", _LVIS),
    10: TableSpec(10, "Results on LVIS v1.0 test-dev set", "lvis_test_dev", "LVIS v1.0 test-dev", _LVIS_DEV),
    11: TableSpec(11, "Results on Cityscapes validation set", "cityscapes", "Cityscapes val (COCO-style AP)",
                  _CITYSCAPES),
    12: TableSpec(12, "IoU between boundary regions from two implementations", "table12",
                  "COCO masks resized to S×S", _TABLE12),
    13: TableSpec(13, "Different boundary widths for boundary-aware refinement", "coco", "COCO val2017", _COCO),
    14: TableSpec(14, "Comparison between Mask R-CNN and RefineMask on COCO val2017 under different evaluation "
                      "metrics", "coco", "COCO val2017", _COCO),
}


# --------------------------------------------------------------------------------------------------
# The paper's numbers


def table_spec(n: int) -> TableSpec:
    """The :class:`TableSpec` of paper table ``n``.

    Raises:
        ValueError: ``n`` is not 1–14.
    """
    try:
        return TABLES[int(n)]
    except (KeyError, TypeError, ValueError):
        raise UsageError(f"unknown table {n!r}: the paper has Tables 1–14") from None


def paper_csv_path(n: int) -> Path:
    """``reports/paper/tableNN.csv`` of table ``n``."""
    table_spec(n)
    return PAPER_DIR / f"table{int(n):02d}.csv"


def load_paper_table(n: int) -> pd.DataFrame:
    """The paper's table ``n`` as printed: every cell a string ("" where the paper prints "-" or nothing).

    Columns: :data:`META_COLUMNS`, the paper's own columns in its order (labels, then metrics), ``notes``.

    Raises:
        ValueError: the CSV is missing or lacks a column the table needs (names the file).
    """
    spec, path = table_spec(n), paper_csv_path(n)
    if not path.is_file():
        raise UsageError(f"{path}: the paper's Table {n} is missing. Fix: restore it from git (reports/paper/)")
    df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    missing = [c for c in (*META_COLUMNS, NOTES_COLUMN) if c not in df.columns]
    if missing or not any(c in spec.paths for c in df.columns):
        raise UsageError(f"{path}: missing column(s) {missing or 'of metrics'}. "
                         f"Fix: see reports/paper/README.md for the columns")
    return df


def label_columns(n: int, df: pd.DataFrame | None = None) -> list[str]:
    """The paper's descriptive columns of table ``n`` (Method, Backbone, Stages, ...), in its order."""
    df = load_paper_table(n) if df is None else df
    spec = table_spec(n)
    return [c for c in df.columns if c not in META_COLUMNS and c != NOTES_COLUMN and c not in spec.paths]


def metric_columns(n: int, df: pd.DataFrame | None = None) -> list[str]:
    """The paper's metric columns of table ``n`` (AP, AP*, ...), in its order."""
    df = load_paper_table(n) if df is None else df
    spec = table_spec(n)
    return [c for c in df.columns if c in spec.paths]


def _to_float(s: str) -> float:
    s = str(s).strip()
    return float(s) if s else math.nan


def paper_values(n: int) -> pd.DataFrame:
    """Table ``n``'s metric cells as floats (paper units: percent, fps, IoU fraction; NaN where not printed).

    Indexed by the ``row`` number; gain rows ("+2.6") hold the printed gain.
    """
    df = load_paper_table(n)
    out = pd.DataFrame({c: [_to_float(v) for v in df[c]] for c in metric_columns(n, df)})
    out.index = pd.Index([int(r) for r in df["row"]], name="row")
    return out


def paper_table12() -> dict[int, float]:
    """The paper's Table 12 as {output size S: mean IoU (fraction)}, from ``reports/paper/table12.csv``.

    The one home of these numbers; ``eval.region_study`` takes them as an argument.
    """
    df = load_paper_table(12)
    return {int(re.match(r"(\d+)", str(r["Output size"])).group(1)): float(r["IoU"])
            for _, r in df[df["kind"] == "result"].iterrows()}


def row_names(row: pd.Series) -> list[str]:
    """The run names a paper row accepts: its ``preset`` then its ``aliases`` (separated by ``;`` or spaces)."""
    names = [row["preset"].strip()] if row["preset"].strip() else []
    names += [a for a in re.split(r"[;\s]+", row["aliases"]) if a]
    return names


# --------------------------------------------------------------------------------------------------
# Our numbers


@dataclass
class Run:
    """One evaluated run: a metrics.json.

    Attributes:
        name: ``run.preset`` from the file, else the name of the folder holding it.
        path: the metrics.json file.
        metrics: ``{group: {key: value}}`` (fractions, counts, fps; None where undefined).
        info: the optional ``run`` block (preset, method, backbone, schedule, dataset).
        created: ``provenance.created_utc`` ("" if absent), used to pick the newest of duplicate runs.
    """

    name: str
    path: Path
    metrics: dict[str, dict[str, Any]]
    info: dict[str, Any] = field(default_factory=dict)
    created: str = ""

    def value(self, group: str, key: str) -> float | None:
        """The stored value (a fraction for AP-like metrics), or None if the group/key is absent or null."""
        v = self.metrics.get(group, {}).get(key)
        return None if v is None else float(v)


@dataclass
class RunSet:
    """The runs found under some paths: metrics.json runs by name, and Table 12 studies (table12.json)."""

    runs: dict[str, Run] = field(default_factory=dict)
    table12: list[tuple[Path, dict]] = field(default_factory=list)

    def find(self, names: Iterable[str]) -> Run | None:
        for n in names:
            if n in self.runs:
                return self.runs[n]
        return None


def load_metrics(path: str | os.PathLike, name: str | None = None) -> Run:
    """Read and check one metrics.json.

    Args:
        path: the file.
        name: the run name to use (default: ``run.preset``, else the folder name).

    Raises:
        EvalInputError: the file is missing, not json, or not in metrics.json's shape (names the file and the fix).
    """
    p = Path(path)
    doc = load_json(p, "metrics.json")
    fix = "pass a metrics.json written by `rmbench eval` (or regenerate it)"
    if not isinstance(doc, dict):
        raise EvalInputError(p, f"metrics.json must be a json object of metric groups, got {type(doc).__name__}", fix)
    metrics: dict[str, dict[str, Any]] = {}
    for group, vals in doc.items():
        if group in RESERVED_KEYS:
            continue
        if not isinstance(vals, dict):
            raise EvalInputError(p, f"metric group {group!r} must be an object of {{metric: number}}, "
                                 f"got {type(vals).__name__}", fix, record=group)
        for k, v in vals.items():
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
                raise EvalInputError(p, f"{group}.{k} must be a finite number or null, got {v!r}", fix,
                                     record=f"{group}.{k}")
        metrics[group] = dict(vals)
    if not metrics:
        raise EvalInputError(p, "metrics.json holds no metric group", fix)
    info = doc.get("run") or {}
    if not isinstance(info, dict):
        raise EvalInputError(p, "the 'run' block must be an object {preset, method, backbone, schedule, dataset}",
                             "write it as an object or drop it", record="run")
    preset = info.get("preset")
    if preset is not None and not (isinstance(preset, str) and preset.strip()):
        raise EvalInputError(p, f"run.preset must be a non-empty string, got {preset!r}",
                             "write the preset name, e.g. refinemask_r50_fpn_1x_coco", record="run.preset")
    prov = doc.get("provenance") if isinstance(doc.get("provenance"), dict) else {}
    return Run(name=name or preset or p.resolve().parent.name, path=p, metrics=metrics, info=dict(info),
               created=str(prov.get("created_utc") or ""))


def _load_table12(path: Path) -> dict:
    doc = load_json(path, "table12.json")
    fix = "pass the table12.json written by `rmbench demo`"
    if not isinstance(doc, dict) or not isinstance(doc.get("mean_iou"), dict) or not doc["mean_iou"]:
        raise EvalInputError(path, "table12.json needs 'mean_iou': {variant: {'SxS': {'d=w': IoU}}}", fix)
    if "closest" in doc and doc["closest"] not in doc["mean_iou"]:
        raise EvalInputError(path, f"'closest' names {doc['closest']!r}, which is not in 'mean_iou'", fix)
    return doc


def _pick(a: Run, b: Run) -> Run:
    """Of two runs with one name: one in a sub-folder of the other's folder loses (a training run's
    ``eval/iter_N/metrics.json`` snapshots under its final metrics.json); otherwise the newer wins, with a warning."""
    for outer, inner in ((a, b), (b, a)):
        if outer.path.resolve().parent in inner.path.resolve().parents:
            log.debug("run %r: %s is inside %s; using the outer one", a.name, inner.path, outer.path.parent)
            return outer
    keep = max((a, b), key=lambda r: (r.created, str(r.path)))
    log.warning("two runs named %r: %s and %s; using the newer %s", a.name, a.path, b.path, keep.path)
    return keep


def collect_runs(paths: Iterable[str | os.PathLike] | None) -> RunSet:
    """Find every run under ``paths``.

    Each path may be a metrics.json (any file name), a table12.json, or a folder searched recursively for
    ``metrics.json`` and ``table12.json``. Two runs with the same name: a metrics.json in a sub-folder of the
    other's folder (a training run's ``eval/iter_N/`` snapshots) gives way to the outer one; otherwise the newer
    (``provenance.created_utc``) wins, with a warning.

    Raises:
        EvalInputError: a path does not exist, a folder holds neither file, or a file is malformed.
    """
    out = RunSet()
    for raw in paths or ():
        p = Path(raw)
        if p.is_dir():
            metric_files = sorted(p.rglob("metrics.json"))
            t12_files = sorted(p.rglob("table12.json"))
            if not metric_files and not t12_files:
                raise EvalInputError(p, "the folder holds no metrics.json (nor table12.json)",
                                     "pass run folders written by `rmbench eval --out DIR` / `rmbench reproduce`")
        elif p.is_file():
            metric_files, t12_files = ([], [p]) if p.name == "table12.json" else ([p], [])
        else:
            raise EvalInputError(p, "no such file or folder", "pass metrics.json files or folders that hold them")
        for f in metric_files:
            run = load_metrics(f)
            old = out.runs.get(run.name)
            if old is not None:
                run = _pick(old, run)
            out.runs[run.name] = run
        for f in t12_files:
            out.table12.append((f, _load_table12(f)))
    out.table12.sort(key=lambda t: (str((t[1].get("provenance") or {}).get("created_utc", "")), str(t[0])))
    return out


# --------------------------------------------------------------------------------------------------
# The table as data


def reproduce_command(n: int, preset: str | None = None, data_root: str = DEFAULT_DATA_ROOT,
                      work_dir: str = DEFAULT_WORK_DIR) -> str:
    """The exact command that fills a row (``preset``) or a whole table of the paper."""
    cmd = f"rmbench reproduce --table {n}"
    if preset:
        cmd += f" --preset {preset}"
    return cmd + f" --data-root {data_root} --work-dir {work_dir} --backbone-weights IMAGENET_DIR"


def _table12_value(doc: dict, size: int, variant: str | None, d: int) -> float | None:
    variant = variant or doc.get("closest") or next(iter(doc["mean_iou"]))
    try:
        return float(doc["mean_iou"][variant][f"{size}x{size}"][f"d={d}"])
    except (KeyError, TypeError):
        return None


def table_frame(n: int, runs: RunSet | None = None, *, data_root: str = DEFAULT_DATA_ROOT,
                work_dir: str = DEFAULT_WORK_DIR, table12_variant: str | None = None,
                table12_d: int = 1) -> pd.DataFrame:
    """Table ``n`` as data: the paper's rows, our value, the paper's value and the difference per metric.

    Args:
        n: table number.
        runs: :func:`collect_runs` output (None: no runs).
        data_root, work_dir: used in the commands shown for rows without a run.
        table12_variant, table12_d: which Table 12 study to show (default: the variant the demo found closest to
            the paper, and d = 1 px, the paper's inference boundary width).

    Returns:
        One row per paper row, columns: the paper's label columns; per metric ``m``: ``m`` (ours), ``"m paper"``,
        ``"Δm"`` in display units (percent, fps, IoU fraction; NaN where undefined); ``run`` (run name, command or
        note) and the private ``_kind`` (``result``/``gain``), ``_run_kind`` (``run``/``cmd``/``none``/``gain``),
        ``_notes``, ``_row``.
    """
    spec = table_spec(n)
    runs = runs or RunSet()
    df = load_paper_table(n)
    labels, metrics = label_columns(n, df), metric_columns(n, df)
    t12 = runs.table12[-1] if runs.table12 else None
    if t12 is not None and spec.dataset == "table12" and table12_variant and table12_variant not in t12[1]["mean_iou"]:
        raise UsageError(f"{t12[0]}: no Table 12 variant {table12_variant!r}. Fix: choose one of "
                         f"{', '.join(t12[1]['mean_iou'])}")
    records: list[dict[str, Any]] = []
    ours_by_row: dict[int, dict[str, float]] = {}
    not_comparable: list[tuple[str, Run, dict[str, list[str]]]] = []
    for _, prow in df.iterrows():
        rec: dict[str, Any] = {c: prow[c] for c in labels}
        rnum, kind = int(prow["row"]), prow["kind"].strip() or "result"
        ours: dict[str, float] = {}
        if kind == "gain":
            a, b = (int(x) for x in prow["gain_of"].split("-"))
            ours = {m: ours_by_row.get(a, {}).get(m, math.nan) - ours_by_row.get(b, {}).get(m, math.nan)
                    for m in metrics}
            run_kind, run_text = "gain", f"gain: row {a} − row {b}"
        elif spec.dataset == "table12":
            size = int(re.match(r"\s*(\d+)", prow[labels[0]]).group(1))
            if t12 is not None:
                v = _table12_value(t12[1], size, table12_variant, table12_d)
                ours = {m: (math.nan if v is None else v) for m in metrics}
                variant = table12_variant or t12[1].get("closest") or next(iter(t12[1]["mean_iou"]))
                run_kind, run_text = "run", f"{t12[0].name} ({variant}, d = {table12_d})"
            else:
                run_kind, run_text = "cmd", reproduce_command(n, None, data_root, work_dir)
        else:
            names = row_names(prow)
            run = runs.find(names)
            blocked: dict[str, list[str]] = {}
            if run is not None:
                groups = sorted({spec.paths[m][0] for m in metrics if spec.paths[m][0] in run.metrics})
                checks = check_run(run.info, spec.dataset, groups)
                blocked = {g: r for g, r in checks.items() if r}
                if len(blocked) == len(groups):  # nothing comparable: the row stays empty, the run is listed
                    not_comparable.append((_describe_row(prow, labels), run, blocked))
                    run = None
            if run is not None:
                factor = {m: _DISPLAY.get(m, _DEFAULT_DISPLAY)[0] for m in metrics}
                vals = {m: (None if spec.paths[m][0] in blocked else run.value(*spec.paths[m])) for m in metrics}
                ours = {m: (math.nan if v is None else v * factor[m]) for m, v in vals.items()}
                absent = sorted({spec.paths[m][0] for m in metrics  # groups the paper fills but the run lacks
                                 if not math.isnan(_to_float(prow[m])) and spec.paths[m][0] not in run.metrics})
                run_text = run.name + (f" (no {', '.join(absent)})" if absent else "")
                if blocked:
                    run_text += f" ({', '.join(sorted(blocked))} not comparable)"
                device = (run.info.get("speed_protocol") or {}).get("device")
                if "speed" in groups and "speed" not in blocked and device:
                    run_text += f" (fps on {device})"
                    not_comparable.append((_describe_row(prow, labels), run, blocked))
                run_kind = "run"
            elif names:
                run_kind, run_text = "cmd", reproduce_command(n, names[0], data_root, work_dir)
            else:
                run_kind, run_text = "none", "no preset (not reproducible here)"
        ours_by_row[rnum] = ours
        for m in metrics:
            mine, theirs = ours.get(m, math.nan), _to_float(prow[m])
            rec[m], rec[f"{m} paper"], rec[f"Δ{m}"] = mine, theirs, mine - theirs
        rec.update(run=run_text, _kind=kind, _run_kind=run_kind, _notes=prow[NOTES_COLUMN], _row=rnum)
        records.append(rec)
    cols = [*labels, *[c for m in metrics for c in (m, f"{m} paper", f"Δ{m}")], "run", "_kind", "_run_kind",
            "_notes", "_row"]
    frame = pd.DataFrame.from_records(records, columns=cols)
    frame.attrs["not_comparable"] = [
        {"row": row, "run": run.name, "path": str(run.path),
         "reasons": sorted({r for reasons in blocked.values() for r in reasons}), "groups": sorted(blocked)}
        for row, run, blocked in not_comparable]
    return frame


def _describe_row(prow: pd.Series, labels: list[str]) -> str:
    return " ".join(str(prow[c]).strip() for c in labels if str(prow[c]).strip()) or f"row {prow['row']}"


def not_comparable_lines(frame: pd.DataFrame) -> list[str]:
    """One line per run that matched a row by name but not by protocol: "row — run: reasons"."""
    return [f"{nc['row']} — `{nc['run']}` ({nc['path']}): {'; '.join(nc['reasons'])}"
            for nc in frame.attrs.get("not_comparable", [])]


def filled_rows(frame: pd.DataFrame) -> tuple[int, int]:
    """(result rows with a run, result rows) of a :func:`table_frame`."""
    res = frame[frame["_kind"] == "result"]
    return int((res["_run_kind"] == "run").sum()), len(res)


# --------------------------------------------------------------------------------------------------
# Rendering


def _fmt(v: float, decimals: int, signed: bool = False, missing: str = "—") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return missing
    s = f"{v:+.{decimals}f}" if signed else f"{v:.{decimals}f}"
    if float(s) == 0.0:  # no "-0.0" / "+0.0"
        s = f"{0.0:.{decimals}f}"
    return s


def _display_frame(frame: pd.DataFrame, n: int, missing: str = "—") -> pd.DataFrame:
    """Every cell as the string the paper would print (one decimal, signs on differences and gain rows)."""
    metrics = metric_columns(n)
    out = frame.drop(columns=["_kind", "_run_kind", "_notes", "_row"]).astype(object)
    for i, row in frame.iterrows():
        gain = row["_kind"] == "gain"
        for m in metrics:
            d = _DISPLAY.get(m, _DEFAULT_DISPLAY)[1]
            out.at[i, m] = _fmt(row[m], d, signed=gain, missing=missing)
            out.at[i, f"{m} paper"] = _fmt(row[f"{m} paper"], d, signed=gain, missing=missing)
            out.at[i, f"Δ{m}"] = _fmt(row[f"Δ{m}"], d, signed=True, missing=missing)
    return out


def _header(n: int, frame: pd.DataFrame) -> tuple[str, str]:
    spec = table_spec(n)
    filled, total = filled_rows(frame)
    metrics = metric_columns(n)
    units = ("mean IoU as a fraction (two decimals)" if spec.dataset == "table12"
             else "values ×100 with one decimal as in the paper")
    if "fps" in metrics:
        units += "; fps = images per second (the paper: one Tesla V100; compare only on the same GPU model)"
    title = f"Table {n}: {spec.title}"
    sub = (f"{spec.split}; {units}. Ours from metrics.json, \"paper\" as published, Δ = ours − paper. "
           f"{filled} of {total} rows filled.")
    return title, sub


def _md_escape(s: str) -> str:
    return str(s).replace("|", "\\|")


def render_markdown(frame: pd.DataFrame, n: int) -> str:
    """Table ``n`` (a :func:`table_frame`) as a GitHub markdown section: title, units, table, row notes."""
    title, sub = _header(n, frame)
    disp = _display_frame(frame, n)
    labels, metrics = label_columns(n), metric_columns(n)
    heads = [*labels, *[h for m in metrics for h in (m, f"{m} paper", f"Δ{m}")], "run / how to fill"]
    align = [":---"] * len(labels) + ["---:"] * (3 * len(metrics)) + [":---"]
    lines = [f"### {title}", "", sub, "", "| " + " | ".join(_md_escape(h) for h in heads) + " |",
             "|" + "|".join(align) + "|"]
    for i, row in frame.iterrows():
        run = row["run"]
        if row["_run_kind"] in ("run", "cmd"):
            run = f"`{run}`"
        cells = [disp.at[i, c] for c in disp.columns if c != "run"] + [run]
        lines.append("| " + " | ".join(_md_escape(c) for c in cells) + " |")
    notes = row_notes(frame)
    if notes:
        lines += ["", "Notes on the paper's rows:", ""] + [f"- {rows}: {t}" for rows, t in notes]
    nc = not_comparable_lines(frame)
    if nc:
        lines += ["", "Runs not comparable with the paper's protocol (not shown in the table):", ""]
        lines += [f"- {_md_escape(t)}" for t in nc]
    return "\n".join(lines) + "\n"


def row_notes(frame: pd.DataFrame) -> list[tuple[str, str]]:
    """The rows' transcription notes, identical notes merged: [("rows 3, 5", text), ...] in row order."""
    by_text: dict[str, list[int]] = {}
    for _, r in frame.iterrows():
        if r["_notes"]:
            by_text.setdefault(r["_notes"], []).append(int(r["_row"]))
    return [((f"row {rows[0]}" if len(rows) == 1 else "rows " + ", ".join(map(str, rows))), t)
            for t, rows in by_text.items()]


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
        "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "$": r"\$", "‡": r"$^\ddagger$", "†": r"$^\dagger$",
        "×": r"$\times$", "✓": r"\checkmark", "—": "--", "−": "$-$", "Δ": r"$\Delta$", "*": r"$^\star$"}


def _tex_escape(s: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in str(s)).replace("d\u0302", r"$\hat{d}$")


def render_latex(frame: pd.DataFrame, n: int) -> str:
    """Table ``n`` as a LaTeX ``table`` (booktabs; each metric spans ours / paper / Δ)."""
    title, sub = _header(n, frame)
    disp = _display_frame(frame, n, missing="--")
    labels, metrics = label_columns(n), metric_columns(n)
    nl = len(labels)
    spec_cols = "l" * nl + " ".join("rrr" for _ in metrics)
    top = [_tex_escape(h) for h in labels] + [rf"\multicolumn{{3}}{{c}}{{{_TEX_HEADER.get(m, _tex_escape(m))}}}"
                                              for m in metrics]
    rules = " ".join(rf"\cmidrule(lr){{{nl + 3 * k + 1}-{nl + 3 * k + 3}}}" for k in range(len(metrics)))
    second = [""] * nl + ["ours", "paper", r"$\Delta$"] * len(metrics)
    lines = [r"\begin{table}[t]", r"\centering", r"\small",
             rf"\caption{{{_tex_escape(title)}. {_tex_escape(sub)}}}", rf"\label{{tab:rmbench-table{n:02d}}}",
             rf"\begin{{tabular}}{{{spec_cols}}}", r"\toprule", " & ".join(top) + r" \\", rules,
             " & ".join(second) + r" \\", r"\midrule"]
    for i, _ in frame.iterrows():
        cells = [_tex_escape(disp.at[i, c]) for c in labels]
        cells += [_tex_escape(disp.at[i, c]) for m in metrics for c in (m, f"{m} paper", f"Δ{m}")]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    for _, r in frame.iterrows():
        if r["_run_kind"] in ("cmd", "none"):
            lines.append(f"% row {r['_row']}: {r['run']}")
        elif r["_run_kind"] == "run":
            lines.append(f"% row {r['_row']}: run {r['run']}")
        if r["_notes"]:
            lines.append(f"% row {r['_row']} note: {r['_notes']}")
    lines += [f"% not comparable: {t}" for t in not_comparable_lines(frame)]
    return "\n".join(lines) + "\n"


def render_csv(frame: pd.DataFrame, n: int) -> str:
    """Table ``n`` as CSV (display units, one decimal; empty where undefined; a ``run`` column)."""
    disp = _display_frame(frame, n, missing="")
    disp["notes"] = frame["_notes"]
    return disp.to_csv(index=False, lineterminator="\n")


_PAGE_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1400px;
       color: #222; padding: 0 1em; }
table.rmbench-table { border-collapse: collapse; font-size: 13px; margin: 0.5em 0 1.5em; }
table.rmbench-table th, table.rmbench-table td { border-bottom: 1px solid #ddd; padding: 3px 8px; text-align: right; }
table.rmbench-table th { background: #f4f4f4; }
table.rmbench-table td:first-child, table.rmbench-table th:first-child { text-align: left; }
table.rmbench-index td, table.rmbench-index th { padding: 2px 10px; text-align: left; }
figure { display: inline-block; margin: 0.5em; max-width: 640px; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 12px; color: #555; }
section { margin-bottom: 2em; }
"""


def html_page(title: str, body: str) -> str:
    """A standalone HTML page (inline style, no script, nothing fetched from the network) around ``body``."""
    return (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{_PAGE_CSS}</style>\n</head>\n<body>\n{body}\n</body>\n"
            f"</html>\n")


def render_html(frame: pd.DataFrame, n: int) -> str:
    """Table ``n`` as a standalone HTML page (:func:`html_page` around :func:`render_html_fragment`)."""
    return html_page(f"Table {n}: {table_spec(n).title}", render_html_fragment(frame, n))


def render_html_fragment(frame: pd.DataFrame, n: int) -> str:
    """Table ``n`` as an HTML fragment: heading, units line, ``<table>``, row notes."""
    title, sub = _header(n, frame)
    disp = _display_frame(frame, n)
    table = disp.rename(columns={"run": "run / how to fill"}).to_html(
        index=False, border=0, classes=["rmbench-table"], escape=True)
    notes = row_notes(frame)
    parts = [f"<h3>{html.escape(title)}</h3>", f"<p>{html.escape(sub)}</p>", table]
    if notes:
        parts.append("<ul>" + "".join(f"<li>{rows}: {html.escape(t)}</li>" for rows, t in notes) + "</ul>")
    nc = not_comparable_lines(frame)
    if nc:
        parts.append("<p>Runs not comparable with the paper's protocol (not shown in the table):</p><ul>"
                     + "".join(f"<li>{html.escape(t.replace('`', ''))}</li>" for t in nc) + "</ul>")
    return "\n".join(parts) + "\n"


_RENDERERS = {"md": render_markdown, "tex": render_latex, "csv": render_csv, "html": render_html}


def render_table(n: int, runs: RunSet | Sequence[str | os.PathLike] | None = None, fmt: str = "md",
                 **kwargs: Any) -> str:
    """Render paper table ``n`` with our runs beside the published numbers.

    Args:
        n: table number (1–14).
        runs: a :class:`RunSet` or paths for :func:`collect_runs` (None: paper numbers only).
        fmt: ``md``, ``tex``, ``csv`` or ``html``.
        **kwargs: passed to :func:`table_frame` (data_root, work_dir, table12_variant, table12_d).

    Returns:
        The rendered text.
    """
    if fmt not in _RENDERERS:
        raise UsageError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    rs = runs if isinstance(runs, RunSet) else collect_runs(runs)
    return _RENDERERS[fmt](table_frame(n, rs, **kwargs), n)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (parents created); return the path."""
    p = Path(path)
    with atomic_write(p) as f:
        f.write(text)
    return p


def render_all(runs: RunSet | Sequence[str | os.PathLike] | None, out_dir: str | os.PathLike, fmt: str = "md",
               plots: Sequence[str | os.PathLike] = (), **kwargs: Any) -> dict[int, dict[str, Any]]:
    """Write every table as ``out_dir/tableNN.<fmt>`` and an index (``index.md``, or ``index.html`` for html).

    With ``fmt="html"`` every file is a standalone page and ``index.html`` holds every table and the ``plots``
    (image files, shown by their path relative to ``out_dir``; SVGs are preferred over PNGs of the same stem).

    Returns:
        {table number: {"path", "filled", "total", "title"}}.
    """
    if fmt not in _RENDERERS:
        raise UsageError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    rs = runs if isinstance(runs, RunSet) else collect_runs(runs)
    out = Path(out_dir)
    summary: dict[int, dict[str, Any]] = {}
    fragments = []
    for n in TABLE_NUMBERS:
        frame = table_frame(n, rs, **kwargs)
        path = write_text(out / f"table{n:02d}.{fmt}", _RENDERERS[fmt](frame, n))
        filled, total = filled_rows(frame)
        summary[n] = {"path": path, "filled": filled, "total": total, "title": TABLES[n].title}
        if fmt == "html":
            fragments.append(f"<section id=\"table{n:02d}\">\n{render_html_fragment(frame, n)}</section>")
    if fmt == "html":
        body = index_text(summary, fmt) + "\n".join(fragments) + _plots_html(plots, out)
        write_text(out / "index.html", html_page("RefineMask (CVPR 2021): our runs beside the paper's tables", body))
    else:
        write_text(out / "index.md", index_text(summary, fmt))
    return summary


def _plots_html(plots: Sequence[str | os.PathLike], out: Path) -> str:
    chosen: dict[str, Path] = {}
    for p in map(Path, plots):
        key = str(p.with_suffix(""))
        if key not in chosen or p.suffix == ".svg":
            chosen[key] = p
    if not chosen:
        return ""
    figs = []
    for p in chosen.values():
        rel = os.path.relpath(p, out)
        figs.append(f"<figure><img src=\"{html.escape(rel)}\" alt=\"{html.escape(p.stem)}\">"
                    f"<figcaption>{html.escape(p.stem)}</figcaption></figure>")
    return "\n<section id=\"plots\">\n<h2>Plots</h2>\n" + "\n".join(figs) + "\n</section>\n"


def index_text(summary: dict[int, dict[str, Any]], fmt: str = "md") -> str:
    """The index of :func:`render_all`: one line per table with its rows filled and its file."""
    if fmt == "html":
        rows = "".join(f"<tr><td>{n}</td><td><a href=\"#table{n:02d}\">{html.escape(s['title'])}</a></td>"
                       f"<td>{s['filled']} / {s['total']}</td><td><a href=\"{s['path'].name}\">{s['path'].name}</a>"
                       f"</td></tr>" for n, s in summary.items())
        return ("<h2>RefineMask (CVPR 2021): our runs beside the paper's tables</h2>\n<table class=\"rmbench-index\">"
                "<tr><th>table</th><th>title</th><th>rows filled</th><th>page</th></tr>" + rows + "</table>\n")
    lines = ["# RefineMask (CVPR 2021): our runs beside the paper's tables", "",
             "| table | title | rows filled | file |", "|---:|:---|---:|:---|"]
    lines += [f"| {n} | {s['title']} | {s['filled']} / {s['total']} | [{s['path'].name}]({s['path'].name}) |"
              for n, s in summary.items()]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# Small markdown tables (the demo's page)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A pipe table: ``header`` then ``rows`` (already formatted cells), right-aligned columns."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _pct(v: Any) -> str:
    from eval.output import fmt_value

    return fmt_value("x", v)


def table12_markdown(comparison: dict, paper: dict[int, float] | None = None) -> str:
    """The Table 12 study beside the paper.

    Args:
        comparison: ``eval.region_study.compare_variants_to_paper`` output; the closest variant is the headline,
            every variant's mean IoUs and distance to the paper follow.
        paper: {S: IoU}; default :func:`paper_table12`.
    """
    paper = paper_table12() if paper is None else paper
    study = comparison["studies"][comparison["closest"]]
    widths = list(study["widths"])
    header = ["output size", *[f"IoU, d = {w}" for w in widths], "paper"]
    rows = []
    for sz in study["sizes"]:
        by_w = study["mean_iou"][f"{sz}x{sz}"]
        rows.append([f"{sz}×{sz}", *[f"{by_w[f'd={w}']:.2f}" for w in widths],
                     f"{paper.get(int(sz), float('nan')):.2f}"])
    vheader = ["variant", *[f"{sz}, d = {w}" for w in widths for sz in study["sizes"]], "mean abs. diff. to paper"]
    vrows = []
    for name, score in comparison["ranking"]:
        mi = comparison["studies"][name]["mean_iou"]
        vrows.append([f"`{name}`", *[f"{mi[f'{sz}x{sz}'][f'd={w}']:.3f}" for w in widths for sz in study["sizes"]],
                      f"{score:.3f}"])
    return (f"## Table 12: IoU between boundary regions from two implementations\n\n"
            f"{study['num_masks']} real COCO val2017 masks (bundled coco_mini) cropped to their boxes and resized to "
            f"S×S; distance definition = paper Eq. 1, convolution = appendix A.1. Headline variant "
            f"`{study['variant']}` (the one closest to the paper; the paper states neither d nor the border "
            f"rule).\n\n" + markdown_table(header, rows) + "\n\nAll variants (see `eval/region_study.py`):\n\n"
            + markdown_table(vheader, vrows) + "\n")


def ceiling_markdown(rows: list[dict]) -> str:
    """The mask-resolution ceiling (``eval.ceiling.mask_resolution_ceiling`` rows) as a section (values ×100)."""
    keys = [k for k in ("AP", "AP*", "F1px", "F3px") if k in rows[0]]
    body = [[f"{r['S']}×{r['S']}", *[_pct(r[k]) for k in keys]] for r in rows]
    return ("## Mask-resolution ceiling\n\nEvery GT mask resampled to S×S inside its box and pasted back "
            "(the upper bound of a mask head with that output size; values ×100).\n\n"
            + markdown_table(["mask size", *keys], body) + "\n")


def overfit_markdown(res: dict) -> str:
    """The demo's short training run (``refinemask.engine.overfit.run_overfit`` output) as a section."""
    row = [res["preset"], str(res["iters"]), _pct(res["AP"]), _pct(res["AP50"]), _pct(res["F1px"]),
           f"{res['total_time_s']:.0f}"]
    return ("## Training path: Mask R-CNN overfit on 2 real COCO train images\n\n"
            "Random init, short side 160, trained and evaluated on the same two coco_mini train2017 images through "
            "`eval/` (proof that data → train → infer → paste → RLE → eval is wired; values ×100).\n\n"
            + markdown_table(["preset", "iterations", "mask AP", "AP50", "F1px", "time (s)"], [row]) + "\n")

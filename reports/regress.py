"""Metric regression: compare a current metrics.json with a baseline and fail when a metric got worse.

``rmbench regress --baseline B --current C [--tolerance SPEC ...] [--fail-on drop|change]``

B and C are two metrics.json files, or two folders of them (paired by their path relative to the folder).
Every metric ``group.key`` of the baseline is compared (``details``, ``provenance`` and ``run`` are not metrics):

===========================  ======================================================  =========================
case                         rule                                                    fails?
===========================  ======================================================  =========================
fraction (AP, F, accuracy)   current < baseline − tolerance (default 0.002 absolute)  yes
count (``num_*``)            any difference                                          yes
metric or file disappears    present in the baseline, absent in current              yes
value becomes null           a number in the baseline, null (undefined) now          yes
new metric or file           absent in the baseline                                  no (listed)
improvement                  current > baseline + tolerance                          only with ``--fail-on change``
===========================  ======================================================  =========================

Lower-is-better metrics (names with ``latency`` or ending in ``_ms`` / ``_s``) are compared the other way round.
Tolerances: ``--tolerance 0.001`` sets the default; ``--tolerance coco.AP=0.001`` or ``boundary_f.*=0.005``
(shell-style patterns on ``group.key``, the last match wins) set one metric or group; ``5%`` is relative to the
baseline value. ``speed.*`` defaults to 10 % (timings are noisy).

Exit codes: 0 no regression, 1 regression, 2 bad input (a missing or malformed file, a bad tolerance).
"""

from __future__ import annotations

import fnmatch
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from eval.errors import UsageError
from eval.io import EvalInputError, atomic_write, load_json
from eval.output import COUNT_KEYS

from .tables import load_metrics

EXIT_OK, EXIT_REGRESSION, EXIT_BAD_INPUT = 0, 1, 2
DEFAULT_TOLERANCE = 0.002
#: built-in per-metric defaults, applied before the user's specs
DEFAULT_OVERRIDES = ("speed.*=10%",)

FAILING = {"REGRESSION", "DISAPPEARED", "UNDEFINED NOW", "COUNT CHANGED", "CHANGED", "FILE MISSING"}
#: the failing status that is not a metric getting worse (``--fail-on change``): never summarised as a regression
CHANGE_ONLY = {"CHANGED"}


@dataclass(frozen=True)
class Tolerance:
    """An allowed change: ``value`` absolute, or ``value`` × |baseline| when ``relative``."""

    value: float
    relative: bool = False

    def allowed(self, baseline: float) -> float:
        return abs(baseline) * self.value if self.relative else self.value

    def __str__(self) -> str:
        return f"{100 * self.value:g}%" if self.relative else f"{self.value:g}"


@dataclass
class Tolerances:
    """The default tolerance and the ``(pattern, tolerance)`` overrides (the last matching pattern wins)."""

    default: Tolerance = field(default_factory=lambda: Tolerance(DEFAULT_TOLERANCE))
    overrides: list[tuple[str, Tolerance]] = field(default_factory=list)

    def for_metric(self, name: str) -> Tolerance:
        tol = self.default
        for pattern, t in self.overrides:
            if fnmatch.fnmatchcase(name, pattern):
                tol = t
        return tol


def _parse_value(text: str, spec: str) -> Tolerance:
    t = text.strip()
    rel = t.endswith("%")
    try:
        v = float(t[:-1] if rel else t)
    except ValueError:
        v = math.nan
    if not math.isfinite(v) or v < 0:
        raise UsageError(f"bad tolerance {spec!r}: {text!r} is not a non-negative number. "
                         f"Fix: write e.g. 0.002, coco.AP=0.001, 'boundary_f.*=0.005' or speed.fps=5%")
    return Tolerance(v / 100 if rel else v, rel)


def parse_tolerances(specs: Iterable[str] = (), default: float | None = None,
                     builtin: Iterable[str] = DEFAULT_OVERRIDES) -> Tolerances:
    """Build :class:`Tolerances` from command-line specs.

    Args:
        specs: ``"0.001"`` (the default, absolute fraction), ``"coco.AP=0.001"``, ``"boundary_f.*=0.005"``,
            ``"speed.fps=5%"`` (relative to the baseline value).
        default: the default absolute tolerance (overridden by a bare number in ``specs``).
        builtin: specs applied before ``specs`` (``speed.*=10%``).

    Raises:
        ValueError: a malformed spec (the message shows the accepted forms).
    """
    tols = Tolerances(Tolerance(DEFAULT_TOLERANCE if default is None else float(default)))
    for spec in [*builtin, *specs]:
        if "=" in spec:
            pattern, value = spec.split("=", 1)
            if not pattern.strip() or "." not in pattern:
                raise UsageError(f"bad tolerance {spec!r}: the metric must be group.key (e.g. coco.AP, ap_star.*)")
            tols.overrides.append((pattern.strip(), _parse_value(value, spec)))
        else:
            t = _parse_value(spec, spec)
            if t.relative:
                raise UsageError(f"bad tolerance {spec!r}: the default must be absolute (e.g. 0.002)")
            tols.default = t
    return tols


def is_count(key: str) -> bool:
    """Counts (``num_matched``, ``num_gt``, …) must match exactly."""
    return key in COUNT_KEYS or key.startswith("num_")


def lower_is_better(key: str) -> bool:
    return "latency" in key or key.endswith(("_ms", "_s"))


def _flatten(metrics: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {f"{g}.{k}": v for g, vals in metrics.items() for k, v in vals.items()}


def compare_metrics(baseline: dict[str, dict[str, Any]], current: dict[str, dict[str, Any]],
                    tolerances: Tolerances | None = None, fail_on: str = "drop", file: str = "") -> list[dict]:
    """Compare two ``{group: {key: value}}`` dicts metric by metric.

    Args:
        baseline, current: metric groups (as in metrics.json, without details/provenance/run).
        tolerances: :class:`Tolerances` (default: 0.002 absolute, speed.* 10 %).
        fail_on: ``"drop"`` (only getting worse fails) or ``"change"`` (any change beyond tolerance fails).
        file: a label for the rows (folder mode).

    Returns:
        One dict per metric: file, metric, baseline, current, change, tolerance, status, fails.
    """
    if fail_on not in ("drop", "change"):
        raise UsageError(f"fail_on must be 'drop' or 'change', got {fail_on!r}")
    tols = tolerances or parse_tolerances()
    b, c = _flatten(baseline), _flatten(current)
    rows = []
    for name in [*b, *(k for k in c if k not in b)]:
        key = name.split(".", 1)[1]
        tol = tols.for_metric(name)
        bv, cv = b.get(name), c.get(name)
        row = {"file": file, "metric": name, "baseline": bv, "current": cv, "change": None,
               "tolerance": "exact" if is_count(key) else str(tol)}
        if name not in c:
            status = "DISAPPEARED"
        elif name not in b:
            status = "new"
        elif bv is None and cv is None:
            status = "ok"
        elif cv is None:
            status = "UNDEFINED NOW"
        elif bv is None:
            status = "CHANGED" if fail_on == "change" else "defined now"
        else:
            diff = float(cv) - float(bv)
            row["change"] = diff
            worse = diff if lower_is_better(key) else -diff
            if is_count(key):
                status = "ok" if diff == 0 else "COUNT CHANGED"
            elif abs(diff) <= tol.allowed(float(bv)):
                status = "ok" if diff == 0 else "within tolerance"
            elif worse > 0:
                status = "REGRESSION"
            else:
                status = "CHANGED" if fail_on == "change" else "improved"
        row["status"], row["fails"] = status, status in FAILING
        rows.append(row)
    return rows


def _metric_files(path: Path) -> dict[str, Path]:
    if path.is_file():
        return {"": path}
    if path.is_dir():
        files = {str(p.relative_to(path).as_posix()): p for p in sorted(path.rglob("*metrics.json"))}
        if not files:
            raise EvalInputError(path, "the folder holds no metrics.json (nor *_metrics.json)",
                                 "pass a metrics.json or a folder of them")
        return files
    raise EvalInputError(path, "no such file or folder", "pass a metrics.json or a folder of them")


def _gt_hashes(path: Path) -> dict[str, str]:
    """{role: sha256} of the ground truths a metrics.json was computed on (``provenance.inputs``)."""
    doc = load_json(path, "metrics.json")
    inputs = ((doc.get("provenance") or {}).get("inputs") or {}) if isinstance(doc, dict) else {}
    return {role: v["sha256"] for role, v in inputs.items()
            if role in ("gt", "lvis_gt") and isinstance(v, dict) and v.get("sha256")}


def check_same_gt(baseline: Path, current: Path) -> None:
    """Refuse to compare metrics computed on different ground truths (their provenance sha256 differ).

    Raises:
        EvalInputError: naming both files, the ground truth and the option that allows it.
    """
    b, c = _gt_hashes(baseline), _gt_hashes(current)
    for role in sorted(set(b) & set(c)):
        if b[role] != c[role]:
            raise EvalInputError(current, f"computed on another {role} than {baseline} (sha256 {c[role][:12]}… vs "
                                 f"{b[role][:12]}…): the metrics are not comparable",
                                 "regress against a baseline of the same ground truth, or pass --allow-different-gt",
                                 record=f"provenance.inputs.{role}")


def compare_paths(baseline: str | os.PathLike, current: str | os.PathLike, tolerances: Tolerances | None = None,
                  fail_on: str = "drop", allow_different_gt: bool = False) -> pd.DataFrame:
    """Compare two metrics.json files, or two folders of them paired by relative path.

    Returns:
        A DataFrame with one row per metric (see :func:`compare_metrics`); a baseline file missing from the
        current folder is one ``FILE MISSING`` row, a new file one ``new file`` row.

    Raises:
        EvalInputError: a path is missing, a file is malformed, or a file is compared with a folder.
    """
    bp, cp = Path(baseline), Path(current)
    bfiles, cfiles = _metric_files(bp), _metric_files(cp)
    if ("" in bfiles) != ("" in cfiles):
        raise EvalInputError(cp, f"cannot compare a {'file' if '' in bfiles else 'folder'} ({bp}) with a "
                             f"{'file' if '' in cfiles else 'folder'}", "pass two files or two folders")
    rows: list[dict] = []
    for rel, bf in bfiles.items():
        base = load_metrics(bf).metrics
        if rel not in cfiles:
            rows.append({"file": rel, "metric": "*", "baseline": None, "current": None, "change": None,
                         "tolerance": "", "status": "FILE MISSING", "fails": True})
            continue
        if not allow_different_gt:
            check_same_gt(bf, cfiles[rel])
        rows += compare_metrics(base, load_metrics(cfiles[rel]).metrics, tolerances, fail_on, rel)
    for rel, cf in cfiles.items():
        if rel not in bfiles:
            load_metrics(cf)  # still must be well formed
            rows.append({"file": rel, "metric": "*", "baseline": None, "current": None, "change": None,
                         "tolerance": "", "status": "new file", "fails": False})
    return pd.DataFrame(rows, columns=["file", "metric", "baseline", "current", "change", "tolerance", "status",
                                       "fails"])


def _fmt(v: Any, key: str = "", change: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—" if not change else ""
    if is_count(key) and not change:
        return str(int(v))
    if change:
        if v == 0:
            return "0"
        if is_count(key):
            return f"{int(v):+d}"
        return f"{v:+.1e}" if abs(v) < 1e-6 else f"{v:+.6f}"
    return f"{float(v):.6f}"


def report_markdown(df: pd.DataFrame, show: str = "changes") -> str:
    """The comparison as a markdown table (``show="changes"``: rows whose status is not ``ok``) and a summary."""
    shown = df if show == "all" else df[df["status"] != "ok"]
    folder = bool((df["file"] != "").any())
    heads = (["file"] if folder else []) + ["metric", "baseline", "current", "change", "tolerance", "status"]
    lines = ["| " + " | ".join(heads) + " |", "|" + "|".join(":---" if h in ("file", "metric", "status")
                                                            else "---:" for h in heads) + "|"]
    for _, r in shown.iterrows():
        key = r["metric"].split(".", 1)[-1]
        cells = ([r["file"]] if folder else []) + [r["metric"], _fmt(r["baseline"], key), _fmt(r["current"], key),
                                                  _fmt(r["change"], key, change=True), r["tolerance"], r["status"]]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    n_fail = int(df["fails"].sum())
    n_changed = int((df["status"] != "ok").sum())
    n_worse = int((df["fails"] & ~df["status"].isin(CHANGE_ONLY)).sum())
    verdict = "REGRESSION" if n_worse else ("CHANGED (fails with --fail-on change; nothing got worse)" if n_fail
                                             else "ok")
    summary = f"{len(df)} metrics compared, {n_changed} not identical, {n_fail} failing: {verdict}"
    body = "\n".join(lines) if len(shown) else "(every metric identical)"
    return body + "\n\n" + summary + "\n"


def regress(baseline: str | os.PathLike, current: str | os.PathLike, tolerance_specs: Iterable[str] = (),
            fail_on: str = "drop", show: str = "changes", out: str | os.PathLike | None = None,
            default: float | None = None, allow_different_gt: bool = False) -> tuple[int, str]:
    """Run the comparison; return (exit code, printed report).

    Exit code 0: no failing metric; 1: a regression (a drop beyond tolerance, a count change, a metric, file or
    defined value that disappeared; with ``fail_on="change"`` any change beyond tolerance); 2: bad input.
    """
    try:
        tols = parse_tolerances(list(tolerance_specs), default)
        df = compare_paths(baseline, current, tols, fail_on, allow_different_gt)
    except (EvalInputError, ValueError) as e:
        return EXIT_BAD_INPUT, f"rmbench regress: error: {e}\n"
    text = f"rmbench regress: {current} against baseline {baseline} (fail on {fail_on})\n\n" + report_markdown(df, show)
    if out is not None:
        with atomic_write(out) as f:
            f.write(text)
    return (EXIT_REGRESSION if df["fails"].any() else EXIT_OK), text

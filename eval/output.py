"""Writing an evaluation: ``metrics.json`` (fractions + provenance), ``metrics.md`` (×100 table), per-instance CSV.

Every file is written through :func:`eval.io.atomic_write`; the three files of an evaluation are renamed into place
together (:func:`eval.io.atomic_write_group`): a failure leaves no half-written output and no partial set.
"""

from __future__ import annotations

import csv
import datetime as _dt
import importlib.metadata
import math
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from .io import atomic_write, atomic_write_group, dump_json, sha256_file

#: packages whose versions go into every provenance block
TRACKED_PACKAGES = ("refinemask-bench", "numpy", "scipy", "pycocotools", "lvis", "faster-coco-eval", "vernier",
                    "cityscapesscripts", "opencv-python", "torch", "torchvision", "pandas", "matplotlib")

#: keys that are counts, not fractions (rendered as integers, never ×100)
COUNT_KEYS = {"num_matched", "num_gt", "num_skipped_degenerate_crop", "num_images", "num_instances"}


def git_info(repo: str | os.PathLike | None = None) -> dict[str, Any]:
    """The git commit of the source tree and whether it has uncommitted changes (None outside git)."""
    repo = Path(repo or Path(__file__).resolve().parent.parent)
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                                    capture_output=True, text=True, timeout=10).stdout.strip())
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def provenance(inputs: dict[str, str | os.PathLike | None], params: dict[str, Any] | None = None,
               command: list[str] | None = None, device: str | None = None) -> dict[str, Any]:
    """The provenance block of a metrics.json: inputs with sha256, parameters, versions, git, host, time.

    Args:
        inputs: role -> file path (None entries are skipped).
        params: the evaluation/run parameters.
        command: the command line (default ``sys.argv``).
        device: where the numbers were computed (default: this CPU).
    """
    files = {}
    for role, path in inputs.items():
        if path is None:
            continue
        p = Path(path)
        files[role] = {"path": str(p), "sha256": sha256_file(p) if p.is_file() else None}
    return {
        "inputs": files,
        "params": params or {},
        "command": list(command if command is not None else sys.argv),
        "git": git_info(),
        "versions": versions(),
        "device": device or f"cpu ({platform.machine()}, {os.cpu_count()} cores)",
        "platform": platform.platform(),
        "created_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


#: ground-truth file name -> the evaluation or training set it is (the name the paper's tables are matched on)
KNOWN_SPLITS = {
    "instances_val2017.json": "coco_val2017",
    "instances_train2017.json": "coco_train2017",
    "lvis_v1_val.json": "lvis_v1_val",
    "lvis_v1_train.json": "lvis_v1_train",
    "lvis_v0.5_val.json": "lvis_v0.5_val",
    "lvis_v0.5_val_cocofied.json": "lvis_v0.5_val_cocofied",
    "instancesonly_filtered_gtFine_val.json": "cityscapes_val",
    "instancesonly_filtered_gtFine_train.json": "cityscapes_train",
}


def split_info(path: str | os.PathLike, dataset: dict | None = None, sha256: str | None = None) -> dict[str, Any]:
    """What a ground-truth (or training) file is, for matching a run to a paper row (``reports/protocol.py``).

    Args:
        path: the json file. dataset: its parsed content when the caller has it (else it is read).
        sha256: the file's hash when the caller has it (a provenance block already hashed it; an LVIS or COCO
            train file is hundreds of MB), else it is computed.
    Returns:
        ``{"name": KNOWN_SPLITS name or the file stem, "images": number of image records, "annotations": number of
        annotations, "path": str, "sha256": hex}``. The name alone proves nothing (the bundled 79-image COCO sample is
        also called ``instances_val2017.json``): reports check the image count too.
    """
    p = Path(path)
    if dataset is None:
        import json

        with open(p, encoding="utf-8") as f:
            dataset = json.load(f)
    images = dataset.get("images", []) if isinstance(dataset, dict) else []
    anns = dataset.get("annotations", []) if isinstance(dataset, dict) else []
    return {"name": KNOWN_SPLITS.get(p.name, p.stem), "images": len(images), "annotations": len(anns),
            "path": str(p), "sha256": sha256 or (sha256_file(p) if p.is_file() else None)}


def fmt_value(key: str, v: Any) -> str:
    """Paper style: fractions ×100 with one decimal, counts as integers, undefined as '—'."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if key in COUNT_KEYS or isinstance(v, bool) or (isinstance(v, int) and key.startswith("num")):
        return str(int(v))
    if isinstance(v, (int, float)):
        return f"{100.0 * v:.1f}"
    return str(v)


def metrics_markdown(metrics: dict[str, dict[str, Any]], title: str | None = None) -> str:
    """One markdown table per metric group (values ×100, one decimal, as in the paper)."""
    lines = [f"# {title}", ""] if title else []
    for group, vals in metrics.items():
        keys = list(vals)
        lines.append(f"**{group}**")
        lines.append("")
        lines.append("| " + " | ".join(keys) + " |")
        lines.append("|" + "|".join("---:" for _ in keys) + "|")
        lines.append("| " + " | ".join(fmt_value(k, vals[k]) for k in keys) + " |")
        lines.append("")
    return "\n".join(lines)


def write_csv(path: str | os.PathLike, rows: list[dict[str, Any]]) -> None:
    """Write dict rows as CSV atomically (columns: union of keys in first-seen order)."""
    with atomic_write(path) as f:
        _csv_rows(f, rows)


def _csv_rows(f, rows: list[dict[str, Any]]) -> None:
    cols: list[str] = []
    seen: set[str] = set()
    for r in rows:
        for k in r:
            if k not in seen:
                seen.add(k)
                cols.append(k)
    w = csv.DictWriter(f, fieldnames=cols or ["gt_id"])
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if (isinstance(v, float) and math.isnan(v)) else v) for k, v in r.items()})


def write_evaluation(out_dir: str | os.PathLike, metrics: dict, prov: dict, per_instance: list[dict],
                     details: dict | None = None, title: str = "Evaluation", run: dict | None = None,
                     warnings: list[str] | None = None) -> dict[str, Path]:
    """Write ``metrics.json``, ``metrics.md`` and ``per_instance.csv`` under ``out_dir``; return their paths.

    metrics.json = ``{"run": ..., group: {key: fraction}, "warnings": [...], "details": ..., "provenance": ...}``
    (``run`` and ``warnings`` only when given); NaN is written as null.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "metrics.json", "md": out / "metrics.md", "csv": out / "per_instance.csv"}
    doc = {"run": run} if run else {}
    doc.update(metrics)
    if warnings:
        doc["warnings"] = list(warnings)
    if details:
        doc["details"] = _stringify_keys(details)
    doc["provenance"] = prov
    md = metrics_markdown(metrics, title)
    if warnings:
        md += "\n" + "\n".join(f"> **Warning:** {w}" for w in warnings) + "\n"
    # all three are written to temporaries and renamed together, or none is (docs/evaluation.md §1)
    with atomic_write_group([paths["csv"], paths["md"], paths["json"]]) as (f_csv, f_md, f_json):
        _csv_rows(f_csv, per_instance)
        f_md.write(md + "\n")
        dump_json(doc, f_json)
    return paths


def _stringify_keys(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _stringify_keys(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_stringify_keys(v) for v in obj]
    return obj

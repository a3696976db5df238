"""The reproduction *plan* behind ``rmbench reproduce``: which commands fill which row of a paper table.

Pure: it checks which data is present and lists commands; running them is the CLI's job
(``refinemask/cli/reporting.py``).

For every row of table N that has a preset and whose dataset is present under ``--data-root``:

1. ``rmbench train --preset P --data-root D --work-dir W/P``
2. ``rmbench infer --preset P --checkpoint W/P/latest.pth --gt <val json> --images <val images> --out W/P/results.json``
3. ``rmbench eval --gt ... [--lvis-gt ...] --results W/P/results.json --out W/P``

With ``--gpus K`` (K > 1) train and infer run as ``torchrun --nproc_per_node K -m refinemask.cli ...``; evaluation
is one process. A row whose ``W/P/metrics.json`` exists (as the evaluation of ``W/P/results.json``, not the
training's own snapshot) is skipped, so presets shared by several tables are trained once; after its evaluation
the row's ``run`` block (preset, method, backbone, schedule, dataset) is added to its metrics.json. Then the
table is rendered from ``W`` (``W/tables/tableNN.md``). ``--dry-run`` only prints the plan.

Data layout under ``--data-root`` (the usual mmdetection/detectron2 one; the bundled ``data/`` works for COCO):

- COCO: ``coco/`` (or the bundled ``coco_mini/``) with ``annotations/instances_{train,val}2017.json``,
  ``train2017/``, ``val2017/``; AP* needs ``lvis/lvis_v0.5_val_cocofied.json``, or ``lvis/lvis_v0.5_val.json``
  (or the bundled ``lvis/lvis_val_100.json``), cocofied first into ``W/``.
- LVIS v1.0: ``lvis/lvis_v1_{train,val}.json`` and the COCO 2017 images under ``coco/``.
- Cityscapes: ``cityscapes/annotations/instancesonly_filtered_gtFine_{train,val}.json``,
  ``cityscapes/leftImg8bit/{train,val}/``; optional ``cityscapes/gtFine/`` for the official AP.

Table 12 needs no model: it is the demo's boundary-region study (``rmbench demo --out W/demo``).
"""

from __future__ import annotations

import logging
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from eval.errors import UsageError
from eval.io import load_json

from .tables import (
    label_columns,
    load_paper_table,
    metric_columns,
    row_names,
    table_spec,
)

log = logging.getLogger(__name__)

DATASET_NAMES = {"coco": "COCO 2017", "lvis": "LVIS v1.0", "cityscapes": "Cityscapes", "table12": "bundled COCO masks",
                 "lvis_test_dev": "LVIS v1.0 test-dev"}


@dataclass
class DataCheck:
    """What a dataset offers under a data root.

    Attributes:
        dataset: ``coco``, ``lvis``, ``cityscapes``, ``table12`` or ``lvis_test_dev``.
        ok: the rows of this dataset can run.
        message: one line for the plan (where the data is, or what is missing and where to put it).
        files: paths used by the commands (``val_gt``, ``val_images``, ``lvis_gt``, ``cityscapes_gt_dir``, ...).
        setup: commands to run once before the rows (cocofying LVIS v0.5 for AP*).
    """

    dataset: str
    ok: bool
    message: str
    files: dict[str, str] = field(default_factory=dict)
    setup: list[list[str]] = field(default_factory=list)


def _missing(paths: list[Path]) -> list[Path]:
    return [p for p in paths if not p.exists()]


def _coco_folder(root: Path) -> Path | None:
    for name in ("coco", "coco_mini"):
        d = root / name
        if (d / "annotations" / "instances_val2017.json").is_file():
            return d
    return None


def check_data(dataset: str, data_root: str | os.PathLike, work_dir: str | os.PathLike) -> DataCheck:
    """Check that ``dataset``'s files are under ``data_root``; say what is missing and where it should be."""
    root, work = Path(data_root), Path(work_dir)
    if dataset == "table12":
        from eval.paths import data_dir

        try:
            d = data_dir()
        except FileNotFoundError as e:
            return DataCheck(dataset, False, str(e))
        return DataCheck(dataset, True, f"bundled COCO masks at {d / 'coco_mini'} (no model is run)")
    if dataset == "lvis_test_dev":
        return DataCheck(dataset, False, "LVIS v1.0 test-dev is scored by the LVIS evaluation server only; add its "
                         "numbers to a metrics.json as {\"test_dev\": {\"AP\", \"APr\", \"APc\", \"APf\"}} (fractions)")
    if dataset == "coco":
        coco = _coco_folder(root)
        need = [root / "coco" / "annotations" / f"instances_{s}2017.json" for s in ("train", "val")]
        if coco is None:
            return DataCheck(dataset, False, f"COCO 2017 not found under {root}: expected "
                             f"{need[0]} and {need[1]} with the images in {root / 'coco' / 'train2017'} and "
                             f"{root / 'coco' / 'val2017'}")
        req = [coco / "annotations" / "instances_train2017.json", coco / "train2017", coco / "val2017"]
        miss = _missing(req)
        if miss:
            return DataCheck(dataset, False, f"COCO 2017 under {coco} is incomplete: missing "
                             + ", ".join(map(str, miss)))
        files = {"val_gt": str(coco / "annotations" / "instances_val2017.json"), "val_images": str(coco / "val2017")}
        lvis = root / "lvis"
        cocofied = lvis / "lvis_v0.5_val_cocofied.json"
        msg = f"COCO 2017 at {coco}"
        setup: list[list[str]] = []
        if cocofied.is_file():
            files["lvis_gt"] = str(cocofied)
            msg += f"; AP* ground truth {cocofied}"
        else:
            raw = next((p for p in (lvis / "lvis_v0.5_val.json", lvis / "lvis_val_100.json") if p.is_file()), None)
            if raw is not None:
                out = work / "lvis_v0.5_val_cocofied.json"
                files["lvis_gt"] = str(out)
                setup.append(["rmbench", "cocofy-lvis", str(raw), str(out)])
                msg += f"; AP* ground truth cocofied from {raw}"
            else:
                msg += (f"; no LVIS v0.5 val under {lvis} (lvis_v0.5_val.json or lvis_v0.5_val_cocofied.json): "
                        f"the AP* columns stay empty")
        return DataCheck(dataset, True, msg, files, setup)
    if dataset == "lvis":
        req = [root / "lvis" / "lvis_v1_train.json", root / "lvis" / "lvis_v1_val.json", root / "coco" / "train2017",
               root / "coco" / "val2017"]
        miss = _missing(req)
        if miss:
            return DataCheck(dataset, False, "LVIS v1.0 not found: missing " + ", ".join(map(str, miss))
                             + " (LVIS v1.0 annotations under lvis/, the COCO 2017 images under coco/)")
        return DataCheck(dataset, True, f"LVIS v1.0 at {root / 'lvis'} with the COCO 2017 images at {root / 'coco'}",
                         {"val_gt": str(req[1]), "val_images": str(root / "coco")})
    if dataset == "cityscapes":
        cs = root / "cityscapes"
        req = [cs / "annotations" / f"instancesonly_filtered_gtFine_{s}.json" for s in ("train", "val")]
        req += [cs / "leftImg8bit" / "train", cs / "leftImg8bit" / "val"]
        miss = _missing(req)
        if miss:
            return DataCheck(dataset, False, "Cityscapes not found: missing " + ", ".join(map(str, miss))
                             + " (convert gtFine with `rmbench cityscapes-to-coco`)")
        files = {"val_gt": str(req[1]), "val_images": str(req[3])}
        if (cs / "gtFine" / "val").is_dir():
            files["cityscapes_gt_dir"] = str(cs / "gtFine")
        return DataCheck(dataset, True, f"Cityscapes at {cs}", files)
    raise UsageError(f"unknown dataset {dataset!r}")


@dataclass
class RowPlan:
    """One paper row: its preset, the commands that produce its metrics.json, or why it is skipped."""

    table: int
    row: int
    description: str
    preset: str | None
    run_info: dict[str, str]
    commands: list[list[str]] = field(default_factory=list)
    skip: str | None = None
    metrics_path: Path | None = None
    undefined: str | None = None  # the preset is not (yet) defined in this install: printed, not run


@dataclass
class TablePlan:
    """Everything ``rmbench reproduce --table N`` would do."""

    table: int
    title: str
    data: DataCheck
    rows: list[RowPlan]
    setup: list[list[str]]
    notes: list[str]
    work_dir: Path


def _wrap(cmd: list[str], gpus: int) -> list[str]:
    """``rmbench X ...`` → ``torchrun --nproc_per_node K -m refinemask.cli X ...`` when K > 1."""
    if gpus > 1:
        return ["torchrun", "--nproc_per_node", str(gpus), "-m", "refinemask.cli", *cmd[1:]]
    return cmd


def _row_commands(preset: str, data: DataCheck, data_root: str, work_dir: Path, gpus: int,
                  backbone_weights: str | None) -> list[list[str]]:
    w = work_dir / preset
    f = data.files
    train = ["rmbench", "train", "--preset", preset, "--data-root", str(data_root), "--work-dir", str(w)]
    if backbone_weights is not None:
        train += ["--backbone-weights", str(backbone_weights)]
    infer = ["rmbench", "infer", "--preset", preset, "--checkpoint", str(w / "latest.pth"), "--gt", f["val_gt"],
             "--images", f["val_images"], "--out", str(w / "results.json")]
    if data.dataset == "lvis":
        ev = ["rmbench", "eval", "--lvis-gt", f["val_gt"]]
    else:
        ev = ["rmbench", "eval", "--gt", f["val_gt"]]
        if "lvis_gt" in f:
            ev += ["--lvis-gt", f["lvis_gt"]]
        if "cityscapes_gt_dir" in f:
            ev += ["--cityscapes-gt-dir", f["cityscapes_gt_dir"]]
    ev += ["--results", str(w / "results.json"), "--preset", preset, "--checkpoint", str(w / "latest.pth"),
           "--out", str(w)]
    return [_wrap(train, gpus), _wrap(infer, gpus), ev]


def _describe(row: pd.Series, labels: list[str]) -> str:
    parts = [f"{c}={row[c]}" for c in labels if str(row[c]).strip()]
    return ", ".join(parts) if parts else "(no label)"


def plan_table(n: int, data_root: str | os.PathLike, work_dir: str | os.PathLike, gpus: int = 1,
               preset: str | None = None, known_presets: set[str] | None = None,
               backbone_weights: dict[str, str] | None = None) -> TablePlan:
    """The plan for table ``n``: per row the commands, or the reason it is skipped.

    Args:
        n: table number.
        data_root: the folder holding coco/, lvis/, cityscapes/ (see the module docstring).
        work_dir: where runs go (one folder per preset).
        gpus: processes per node for train and infer (torchrun when > 1).
        preset: only the row(s) of this preset (or alias).
        known_presets: the preset names the install can build (the CLI passes the registry's); a row whose preset
            is not among them is planned but marked as not runnable. None: not checked.
        backbone_weights: preset -> the local ImageNet state dict its ``train`` command gets (``--backbone-weights``);
            a preset without an entry trains from a random backbone (``rmbench reproduce --random-backbone``).

    Raises:
        ValueError: unknown table, ``gpus`` < 1, or ``preset`` not in the table.
    """
    if int(gpus) < 1:
        raise UsageError(f"--gpus must be >= 1, got {gpus}")
    spec = table_spec(n)
    df = load_paper_table(n)
    labels, metrics = label_columns(n, df), metric_columns(n, df)
    work = Path(work_dir)
    data = check_data(spec.dataset, data_root, work)
    notes = []
    if "fps" in metrics:
        notes.append("the fps column is not produced by this plan: time each model with the fps protocol (batch 1, "
                     "5 warm-up images; docs/evaluation.md §10) and add {\"speed\": {\"fps\": images per second}} "
                     "to its metrics.json")
    if "AP_dev" in metrics:
        notes.append("AP_dev is COCO test-dev, scored by the evaluation server only: add {\"test_dev\": {\"AP\": "
                     "fraction}} to the run's metrics.json")
    rows: list[RowPlan] = []
    if spec.dataset == "table12":
        demo = work / "demo"
        rp = RowPlan(n, 0, "all rows (output sizes 28, 56, 112)", None, {},
                     [["rmbench", "demo", "--out", str(demo)]], metrics_path=demo / "table12.json")
        if not data.ok:
            rp.skip = data.message
        rows.append(rp)
    else:
        for _, r in df[df["kind"] == "result"].iterrows():
            names = row_names(r)
            if preset is not None and preset not in names:
                continue
            info = {"preset": names[0] if names else "", "method": r["method"], "backbone": r["backbone"],
                    "schedule": r["schedule"], "dataset": spec.dataset}
            rp = RowPlan(n, int(r["row"]), _describe(r, labels), names[0] if names else None, info)
            if not names:
                rp.skip = "no preset: " + (r["notes"] or "not reproducible with this harness")
            elif not data.ok:
                rp.skip = f"{DATASET_NAMES[spec.dataset]} data not available (see above)"
            else:
                if known_presets is not None and names[0] not in known_presets:
                    rp.undefined = f"preset {names[0]} is not defined in this install yet"
                rp.commands = _row_commands(names[0], data, str(data_root), work, int(gpus),
                                            (backbone_weights or {}).get(names[0]))
                rp.metrics_path = work / names[0] / "metrics.json"
            rows.append(rp)
        if preset is not None and not rows:
            known = sorted({nm for _, r in df.iterrows() for nm in row_names(r)})
            raise UsageError(f"preset {preset!r} is not in Table {n}; its presets: {', '.join(known) or 'none'}")
    return TablePlan(n, spec.title, data, rows, data.setup if data.ok else [], notes, work)


def format_plan(plan: TablePlan) -> str:
    """The plan as text: data check, setup commands, one block per row, the render command."""
    out = [f"# Table {plan.table}: {plan.title}",
           f"data ({DATASET_NAMES[plan.data.dataset]}): {'ok' if plan.data.ok else 'NOT AVAILABLE'} — "
           f"{plan.data.message}"]
    out += [f"note: {x}" for x in plan.notes]
    if plan.setup:
        out.append("setup:")
        out += [f"  {shlex.join(c)}" for c in plan.setup]
    for r in plan.rows:
        head = f"row {r.row}: {r.description}" if r.row else r.description
        if r.preset:
            head += f" [{r.preset}]"
        if r.skip:
            out.append(f"{head}: skipped — {r.skip}")
            continue
        done = r.metrics_path is not None and (row_done(r.metrics_path) if r.preset else r.metrics_path.is_file())
        out.append(head + (f" (done: {r.metrics_path} exists)" if done else "")
                   + (f" (not runnable yet: {r.undefined})" if r.undefined and not done else ""))
        out += [f"  {shlex.join(c)}" for c in r.commands]
    out.append(f"then: rmbench report --table {plan.table} --runs {plan.work_dir}")
    return "\n".join(out) + "\n"


def row_done(metrics_path: Path) -> bool:
    """True when ``W/P/metrics.json`` is the final evaluation of ``W/P/results.json`` (not a training snapshot)."""
    if not metrics_path.is_file():
        return False
    try:
        doc = load_json(metrics_path, "metrics.json")
        src = doc["provenance"]["inputs"]["results"]["path"]
    except (ValueError, KeyError, TypeError):
        return False
    return Path(src).resolve() == (metrics_path.parent / "results.json").resolve()

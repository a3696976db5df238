"""reports/: the paper's numbers as data, table rendering, plots, regress exit codes, the reproduce plan.

Golden markdown lives in ``tests/golden_reports/``; after an intended rendering change regenerate it with
``RMBENCH_UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_reports.py -k golden`` and review the diff.
"""

from __future__ import annotations

import collections
import io
import json
import math
import os
import re
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pandas as pd
import pytest

from eval.io import EvalInputError, load_gt, write_json
from refinemask.cli import main
from refinemask.cli import reporting as reproduce_cli
from reports import plots, regress, reproduce, tables
from reports.tables import collect_runs, load_paper_table, paper_table12, paper_values, render_table, table_frame
from tests.helpers import COCO_VAL_GT, DATA, ROOT

GOLDEN_DIR = Path(__file__).resolve().parent / "golden_reports"
UPDATE_GOLDEN = os.environ.get("RMBENCH_UPDATE_GOLDEN") == "1"
PAPER_TXT = Path(os.environ.get("RMBENCH_PAPER", ROOT.parent / "shared" / "paper" / "refinemask-cvpr2021.txt"))

# --------------------------------------------------------------------------------------------------
# The transcription


#: every delta the paper states in its prose: (where, table, row a, row b, column, stated a − b). The tables' own
#: "+x.x" gain rows are checked from the CSVs by test_gain_rows_equal_row_differences.
STATED_DELTAS = [
    ("Abstract: 2.6 AP over Mask R-CNN on COCO", 1, 2, 1, "AP", 2.6),
    ("Abstract: 3.4 AP on LVIS", 9, 2, 1, "AP", 3.4),
    ("Abstract: 3.8 AP on Cityscapes", 11, 3, 2, "AP", 3.8),
    ("Abstract: the LVIS Challenge 2020 winner by 1.3 points on test-dev", 10, 2, 1, "AP", 1.3),
    ("Sec. 1: 2.6 points on COCO", 1, 2, 1, "AP", 2.6),
    ("Sec. 1: 3.4 points on LVIS", 9, 2, 1, "AP", 3.4),
    ("Sec. 1: 3.8 points on Cityscapes", 11, 3, 2, "AP", 3.8),
    ("Sec. 1: 4.1 points AP under the finer LVIS annotations", 1, 2, 1, "AP*", 4.1),
    ("Sec. 1: the gain reached 6.0 points for large objects", 1, 2, 1, "AP*_L", 6.0),
    ("Sec. 1: surpassed the LVIS Challenge 2020 winner by 1.3 points", 10, 2, 1, "AP", 1.3),
    ("Sec. 4.1: 2.6 points AP over the Mask R-CNN baseline (R50-FPN)", 1, 2, 1, "AP", 2.6),
    ("Sec. 4.1: surpassed Mask R-CNN by 4.1 points AP*", 1, 2, 1, "AP*", 4.1),
    ("Sec. 4.2: fine-grained features, 1.6 points AP", 5, 2, 1, "AP", 1.6),
    ("Sec. 4.2: fine-grained features, 2.5 points AP*", 5, 2, 1, "AP*", 2.5),
    ("Sec. 4.2: multi-stage refinement, AP* by 1.4 points", 6, 2, 1, "AP*", 1.4),
    ("Sec. 4.2: multi-stage refinement, AP*_L by 1.8 points", 6, 2, 1, "AP*_L", 1.8),
    ("Sec. 4.2: boundary-aware refinement, AP* by 0.9 points", 7, 2, 1, "AP*", 0.9),
    ("Sec. 4.3: 3.8 points AP* with ResNet-50-FPN", 8, 6, 2, "AP*", 3.8),
    ("Sec. 4.3: 3.0 points AP* with ResNet-101-FPN", 8, 14, 10, "AP*", 3.0),
    ("Sec. 4.3: 3.5 points AP* with ResNeXt-101-FPN", 8, 22, 17, "AP*", 3.5),
    ("Sec. 4.4: 3.4 points AP over the Mask R-CNN baseline (LVIS val)", 9, 2, 1, "AP", 3.4),
    ("Sec. 4.4: outperformed the LVIS challenge 2020 winner by 1.3 points", 10, 2, 1, "AP", 1.3),
]
#: Table 6's first row is illegible in the source except AP*_M; its AP* and AP*_L come from these two sentences, so
#: for them the check is a consistency check, not an independent one
DERIVED_FROM_TEXT = {(6, 1, "AP*"), (6, 1, "AP*_L")}

#: values the prose states: (where, table, row, column, value)
STATED_VALUES = [("Sec. 4.2: AP*_L 54.3 → 58.0 (fine-grained features)", 5, 1, "AP*_L", 54.3),
                 ("Sec. 4.2: AP*_L 54.3 → 58.0 (fine-grained features)", 5, 2, "AP*_L", 58.0)]

#: the same model printed in several tables: ((table, row), (table, row), columns)
SAME_MODEL = [((1, 2), (t, r), ("AP", "AP*", "AP*_S", "AP*_M", "AP*_L"))
              for t, r in ((3, 3), (4, 4), (5, 2), (6, 2), (7, 2), (13, 2))]
SAME_MODEL += [((1, 2), (2, 4), ("AP", "AP*")), ((1, 2), (14, 3), ("AP", "AP*")), ((1, 1), (14, 2), ("AP", "AP*")),
               ((1, 1), (2, 1), ("AP", "AP*"))]
SAME_MODEL += [((1, a), (8, b), ("AP*", "AP*_S", "AP*_M", "AP*_L"))
               for a, b in ((3, 2), (4, 6), (7, 10), (8, 14), (9, 17), (10, 22))]
SAME_MODEL += [((2, a), (8, b), ("fps",)) for a, b in ((1, 2), (2, 3), (3, 5), (4, 6))]


def test_every_table_is_well_formed():
    names = re.compile(r"^[a-z0-9_]+$")
    for n in range(1, 15):
        df = load_paper_table(n)
        assert list(df["row"]) == [str(i) for i in range(1, len(df) + 1)], n
        assert set(df["kind"]) <= {"result", "gain"}, n
        assert tables.metric_columns(n, df) and tables.label_columns(n, df), n
        vals = paper_values(n)  # every metric cell parses
        assert vals.notna().any().all(), n
        for _, r in df.iterrows():
            for name in tables.row_names(r):
                assert names.match(name), (n, name)
            if r["kind"] == "gain":
                a, b = (int(x) for x in r["gain_of"].split("-"))
                assert a in vals.index and b in vals.index
    assert sum(len(load_paper_table(n)) for n in range(1, 15)) == 70  # 66 result rows + 4 gain rows


def test_row_counts_and_presets_match_the_paper():
    counts = {1: 10, 2: 4, 3: 4, 4: 4, 5: 2, 6: 2, 7: 2, 8: 22, 9: 3, 10: 3, 11: 4, 12: 3, 13: 3, 14: 4}
    assert {n: len(load_paper_table(n)) for n in counts} == counts
    assert load_paper_table(1)["preset"].tolist() == [
        "mask_rcnn_r50_fpn_1x_coco", "refinemask_r50_fpn_1x_coco", "mask_rcnn_r50_fpn_2x_coco",
        "refinemask_r50_fpn_2x_coco", "mask_rcnn_r101_fpn_1x_coco", "refinemask_r101_fpn_1x_coco",
        "mask_rcnn_r101_fpn_2x_coco", "refinemask_r101_fpn_2x_coco", "mask_rcnn_x101_fpn_3x_ms_coco",
        "refinemask_x101_fpn_3x_ms_coco"]
    assert load_paper_table(3)["aliases"].tolist()[2] == "refinemask_r50_fpn_1x_coco_stages3"
    # other papers' rows are kept, with no preset
    t8 = load_paper_table(8)
    assert (t8[t8["Method"].str.contains(r"\[")]["preset"] == "").all()


@pytest.mark.parametrize("where,table,a,b,col,stated", STATED_DELTAS, ids=[d[0] for d in STATED_DELTAS])
def test_stated_deltas(where, table, a, b, col, stated):
    v = paper_values(table)
    assert round(v.at[a, col] - v.at[b, col], 1) == pytest.approx(stated, abs=1e-9), where


def test_gain_rows_equal_row_differences():
    checked = 0
    for n in range(1, 15):
        df, v = load_paper_table(n), paper_values(n)
        for _, r in df[df["kind"] == "gain"].iterrows():
            a, b = (int(x) for x in r["gain_of"].split("-"))
            for col in tables.metric_columns(n, df):
                assert round(v.at[a, col] - v.at[b, col], 1) == pytest.approx(v.at[int(r["row"]), col]), (n, col)
                checked += 1
    assert checked == 16  # Tables 9, 10, 11 and 14: 4 gains each
    assert len(STATED_DELTAS) + checked == 38


@pytest.mark.parametrize("where,table,row,col,value", STATED_VALUES)
def test_stated_values(where, table, row, col, value):
    assert paper_values(table).at[row, col] == value, where


def test_same_model_same_numbers_across_tables():
    for (t1, r1), (t2, r2), cols in SAME_MODEL:
        v1, v2 = paper_values(t1), paper_values(t2)
        for c in cols:
            assert v1.at[r1, c] == v2.at[r2, c], (t1, r1, t2, r2, c)


def _table_blocks(text: str) -> dict[int, str]:
    lines = text.splitlines()
    out = {}
    for n in range(1, 15):
        cap = next(i for i, line in enumerate(lines) if line.startswith(f"Table {n}:"))
        j = cap - 1
        while not lines[j].strip():
            j -= 1
        block = []
        while j >= 0 and lines[j].strip():
            block.insert(0, lines[j])
            j -= 1
        out[n] = "\n".join(block)
    return out


@pytest.mark.skipif(not PAPER_TXT.is_file(), reason=f"paper text not found at {PAPER_TXT} (set RMBENCH_PAPER)")
def test_every_printed_number_is_transcribed():
    """Multiset equality between the decimals printed in each table of the paper text and its CSV."""
    num, gain = re.compile(r"(?<![\d.+])\d+\.\d+"), re.compile(r"\+\d+\.\d+")
    # documented source artifacts: Table 7's "47.4 48.8" cell repeats 47.4; Table 6's AP*/AP*_L come from the text
    artifacts = {7: ({"47.4": 1}, {}), 6: ({}, {"39.5": 1, "56.2": 1})}
    for n, block in _table_blocks(PAPER_TXT.read_text(encoding="utf-8")).items():
        df = load_paper_table(n)
        cells = [df.at[i, c] for i in df.index for c in tables.metric_columns(n, df)]
        ours = collections.Counter(c for c in cells if num.fullmatch(c))
        ours_gain = collections.Counter(c for c in cells if c.startswith("+"))
        printed = collections.Counter(num.findall(block))
        extra_printed, extra_ours = artifacts.get(n, ({}, {}))
        expected = ours - collections.Counter(extra_ours) + collections.Counter(extra_printed)
        assert printed == expected, (n, printed - expected, expected - printed)
        assert collections.Counter(gain.findall(block)) == ours_gain, n
    assert {(6, 1, "AP*"), (6, 1, "AP*_L")} == DERIVED_FROM_TEXT


# --------------------------------------------------------------------------------------------------
# Fake runs and rendering


#: the run-block fields of a run made with the paper's protocol (reports/protocol.py): COCO val2017, the AP*
#: ground truth, training declared as the paper's
PAPER_PROTOCOL = {"eval_set": {"name": "coco_val2017", "images": 5000},
                  "lvis_eval_set": {"name": "lvis_v0.5_val_cocofied", "images": 5000},
                  "train": {"declared": "the paper's protocol (test fixture)"},
                  "speed_protocol": {"precision": "fp32", "batch_size": 1}}


def _write_run(folder: Path, groups: dict, run: dict | None = None, created: str = "2026-01-01T00:00:00+00:00",
               protocol: dict | None = PAPER_PROTOCOL):
    doc = dict(groups)
    if run is not None or protocol is not None:
        doc["run"] = {**(protocol or {}), **(run or {})}
    doc["details"] = {"note": "ignored by reports"}
    doc["provenance"] = {"created_utc": created}
    write_json(folder / "metrics.json", doc)
    return folder / "metrics.json"


def _coco(ap, ap_star=None, f=None, fps=None, acc=None):
    g = {"coco": {"AP": ap, "AP50": min(1.0, ap + 0.2), "AP75": ap, "APs": ap / 2, "APm": ap, "APl": ap * 1.4}}
    if ap_star is not None:
        s, m, l_ = ap_star
        g["ap_star"] = {"AP": (s + m + l_) / 3 if s is not None else None, "AP50": 0.6, "AP75": 0.4, "APs": s,
                        "APm": m, "APl": l_, "APr": None, "APc": None, "APf": 0.4}
    if f is not None:
        g["boundary_f"] = {"F1px": f[0], "F3px": f[1], "F5px": f[2], "num_matched": 500, "num_gt": 619}
    if acc is not None:
        g["boundary_acc"] = {"boundary": acc[0], "non_boundary": acc[1]}
    if fps is not None:
        g["speed"] = {"fps": fps}
    return g


@pytest.fixture(scope="module")
def fake_runs(tmp_path_factory) -> Path:
    """Fixed fake metrics.json runs: with and without a run block, a missing group, nulls, an unrelated run."""
    root = tmp_path_factory.mktemp("fake_runs")
    _write_run(root / "a" / "mask_rcnn_r50_fpn_1x_coco",
               _coco(0.34712345, (0.2261, 0.4372, 0.5199), (0.6188, 0.8071, 0.8812), 16.84, (0.671, 0.9437)),
               {"preset": "mask_rcnn_r50_fpn_1x_coco", "method": "Mask R-CNN", "backbone": "R50-FPN",
                "schedule": "1×", "dataset": "coco"})
    # no run block: matched by its folder name
    _write_run(root / "a" / "refinemask_r50_fpn_1x_coco",
               _coco(0.37251, (0.2408, 0.4893, 0.5811), (0.6951, 0.8502, 0.9101), 11.04, (0.7262, 0.9514)))
    _write_run(root / "b" / "run_0007", _coco(0.3566, (0.2305, 0.4561, 0.5448), (0.66, 0.82, 0.9)),
               {"preset": "refinemask_r50_fpn_1x_coco_stages1"})
    # no ap_star group (no LVIS ground truth): AP* cells stay empty and the run column says so
    _write_run(root / "b" / "stages4_without_lvis", _coco(0.3699), {"preset": "refinemask_r50_fpn_1x_coco_stages4"})
    # undefined AP* (null): "—"
    _write_run(root / "b" / "point_rend_r50_fpn_1x_coco", _coco(0.3571, (None, None, None), fps=11.52),
               {"preset": "point_rend_r50_fpn_1x_coco"})
    _write_run(root / "b" / "unrelated", _coco(0.1), {"preset": "some_other_model"})
    write_json(root / "b" / "study" / "table12.json", {
        "closest": "variant_b",
        "mean_iou": {"variant_a": {"28x28": {"d=1": 0.70, "d=2": 0.71}, "56x56": {"d=1": 0.72, "d=2": 0.73},
                                   "112x112": {"d=1": 0.74, "d=2": 0.75}},
                     "variant_b": {"28x28": {"d=1": 0.7649, "d=2": 0.79}, "56x56": {"d=1": 0.7351, "d=2": 0.77},
                                   "112x112": {"d=1": 0.8123, "d=2": 0.81}}},
        "provenance": {"created_utc": "2026-01-01T00:00:00+00:00"}})
    return root


@pytest.fixture(scope="module")
def demo_table12(tmp_path_factory) -> Path:
    """The demo's table12.json, computed as ``rmbench demo`` computes it (real bundled COCO masks)."""
    from eval.region_study import compare_variants_to_paper

    out = tmp_path_factory.mktemp("demo_t12")
    comparison = compare_variants_to_paper(load_gt(COCO_VAL_GT), paper_table12())
    write_json(out / "table12.json", {"closest": comparison["closest"], "ranking": comparison["ranking"],
                                      "mean_iou": {k: v["mean_iou"] for k, v in comparison["studies"].items()}})
    return out / "table12.json"


def _golden(name: str, text: str) -> None:
    path = GOLDEN_DIR / name
    if UPDATE_GOLDEN:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.is_file(), f"missing golden file {path}: run with RMBENCH_UPDATE_GOLDEN=1 and review it"
    assert text == path.read_text(encoding="utf-8"), f"{name} differs from the golden file (see module docstring)"


@pytest.mark.parametrize("n", [1, 2, 3, 12, 14])
def test_golden_markdown_from_fake_runs(n, fake_runs):
    _golden(f"table{n:02d}.md", render_table(n, [fake_runs]))


def test_golden_markdown_table12_from_the_demo(demo_table12):
    text = render_table(12, [demo_table12])
    _golden("table12_demo.md", text)
    assert "3 of 3 rows filled" in text


def test_table12_variant_and_width_choice(fake_runs):
    md = render_table(12, [fake_runs], table12_variant="variant_a", table12_d=2)
    assert "| 28×28 | 0.71 | 0.76 | -0.05 | `table12.json (variant_a, d = 2)` |" in md
    with pytest.raises(ValueError, match="no Table 12 variant 'nope'"):
        render_table(12, [fake_runs], table12_variant="nope")


def test_values_differences_and_missing_rows(fake_runs):
    frame = table_frame(1, collect_runs([fake_runs]))
    r1 = frame.iloc[0]
    assert r1["AP"] == pytest.approx(34.712345) and r1["AP paper"] == 34.7
    assert r1["ΔAP"] == pytest.approx(0.012345)
    assert r1["run"] == "mask_rcnn_r50_fpn_1x_coco"
    assert frame.iloc[1]["run"] == "refinemask_r50_fpn_1x_coco"  # folder-name fallback
    md = render_table(1, [fake_runs])
    assert "| Mask R-CNN | R50-FPN | 1× | 34.7 | 34.7 | 0.0 |" in md
    assert ("`rmbench reproduce --table 1 --preset mask_rcnn_r101_fpn_1x_coco --data-root data --work-dir "
            "runs/reproduce --backbone-weights IMAGENET_DIR`") in md  # the command that fills the row, runnable
    assert "2 of 10 rows filled" in md
    t3 = render_table(3, [fake_runs])
    assert "| 1 | 28×28 | 35.7 | 35.7 | 0.0 |" in t3 and "`refinemask_r50_fpn_1x_coco_stages1`" in t3
    assert "stages4_without_lvis" not in t3 and "refinemask_r50_fpn_1x_coco_stages4 (no ap_star)" in t3
    t2 = table_frame(2, collect_runs([fake_runs]))
    assert math.isnan(t2.iloc[1]["AP*"]) and t2.iloc[1]["fps"] == pytest.approx(11.52)


def test_gain_rows_render_ours_and_paper(fake_runs):
    frame = table_frame(14, collect_runs([fake_runs]))
    gain = frame.iloc[3]
    assert gain["_kind"] == "gain" and gain["AP paper"] == 2.6
    assert gain["AP"] == pytest.approx(100 * (0.37251 - 0.34712345))
    assert "| +2.5 | +2.6 | -0.1 |" in render_table(14, [fake_runs])


@pytest.mark.parametrize("fmt", ["md", "tex", "csv", "html"])
@pytest.mark.parametrize("n", range(1, 15))
def test_every_table_renders_in_every_format(n, fmt, fake_runs):
    runs = collect_runs([fake_runs])
    text = render_table(n, runs, fmt)
    nrows = len(load_paper_table(n))
    title = tables.TABLES[n].title
    if fmt == "md":
        assert text.startswith(f"### Table {n}: {title}")
        assert len([ln for ln in text.splitlines() if ln.startswith("| ")]) == nrows + 1
    elif fmt == "tex":
        assert text.startswith("\\begin{table}") and "\\end{tabular}" in text
        body = text.split("\\midrule\n")[1].split("\\bottomrule")[0].strip().splitlines()
        width = 3 * len(tables.metric_columns(n)) + len(tables.label_columns(n))
        assert len(body) == nrows and all(len(re.findall(r"(?<!\\)&", ln)) == width - 1 for ln in body)
    elif fmt == "csv":
        df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
        assert len(df) == nrows and "run" in df.columns and f"{tables.metric_columns(n)[0]} paper" in df.columns
    else:
        assert "<table" in text and text.count("<tr") == nrows + 1 and f"Table {n}:" in text


def test_render_all_writes_every_table_and_an_index(fake_runs, tmp_path):
    summary = tables.render_all([fake_runs], tmp_path / "md")
    assert sorted(p.name for p in (tmp_path / "md").iterdir()) == ["index.md"] + [f"table{n:02d}.md" for n in
                                                                                range(1, 15)]
    assert summary[1]["filled"] == 2 and summary[12]["filled"] == 3 and summary[9]["filled"] == 0
    index = (tmp_path / "md" / "index.md").read_text()
    assert "| 3 | Different number of stages | 3 / 4 | [table03.md](table03.md) |" in index
    tables.render_all([fake_runs], tmp_path / "html", "html")
    assert (tmp_path / "html" / "index.html").is_file()


def test_duplicate_runs_newest_wins(tmp_path, caplog):
    _write_run(tmp_path / "old" / "x", _coco(0.30), {"preset": "mask_rcnn_r50_fpn_1x_coco"}, "2025-01-01T00:00:00")
    _write_run(tmp_path / "new" / "x", _coco(0.31), {"preset": "mask_rcnn_r50_fpn_1x_coco"}, "2026-01-01T00:00:00")
    runs = collect_runs([tmp_path])
    assert runs.runs["mask_rcnn_r50_fpn_1x_coco"].value("coco", "AP") == 0.31
    assert "two runs named" in caplog.text


@pytest.mark.parametrize("content,problem", [
    ("{not json", "not valid json"),
    ("[1, 2]", "json object of metric groups"),
    ('{"coco": 0.5}', "metric group 'coco' must be an object"),
    ('{"coco": {"AP": "high"}}', "coco.AP must be a finite number or null"),
    ('{"provenance": {}}', "holds no metric group"),
    ('{"coco": {"AP": 0.5}, "run": {"preset": 3}}', "run.preset must be a non-empty string"),
])
def test_malformed_metrics_json_names_the_file_and_the_fix(tmp_path, content, problem):
    bad = tmp_path / "run" / "metrics.json"
    bad.parent.mkdir()
    bad.write_text(content)
    with pytest.raises(EvalInputError) as e:
        collect_runs([bad])
    assert str(bad) in str(e.value) and problem in str(e.value) and "Fix:" in str(e.value)
    err = io.StringIO()
    with redirect_stderr(err), redirect_stdout(io.StringIO()):
        assert main(["report", "--table", "1", "--runs", str(bad)]) == 2
    assert str(bad) in err.getvalue()


def test_report_cli_missing_path_and_empty_folder(tmp_path):
    with redirect_stderr(io.StringIO()) as err:
        assert main(["report", "--table", "1", "--runs", str(tmp_path / "nope")]) == 2
        assert main(["report", "--table", "1", "--runs", str(tmp_path)]) == 2
    assert "no such file or folder" in err.getvalue() and "holds no metrics.json" in err.getvalue()


def test_report_cli_formats_out_file_and_all(fake_runs, tmp_path):
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["report", "--table", "2", "--runs", str(fake_runs), "--format", "tex"]) == 0
    assert out.getvalue().startswith("\\begin{table}")
    with redirect_stdout(io.StringIO()):
        assert main(["report", "--table", "14", "--runs", str(fake_runs), "--format", "csv",
                     "--out", str(tmp_path / "t14.csv")]) == 0
        assert main(["report", "--all", "--runs", str(fake_runs), "--out", str(tmp_path / "all"), "--plots"]) == 0
    assert len(pd.read_csv(tmp_path / "t14.csv")) == 4
    assert (tmp_path / "all" / "index.md").is_file() and (tmp_path / "all" / "table08.md").is_file()
    assert (tmp_path / "all" / "plots" / "ap_vs_mask_size.svg").stat().st_size > 1000


# --------------------------------------------------------------------------------------------------
# Regress


BASE = {"coco": {"AP": 0.40, "AP50": 0.60, "APs": None}, "boundary_f": {"F1px": 0.62, "num_matched": 500},
        "speed": {"fps": 10.0}}


def _variant(tmp_path: Path, name: str, change) -> Path:
    doc = json.loads(json.dumps(BASE))
    change(doc)
    return _write_run(tmp_path / name, doc)


def _regress(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out), redirect_stderr(out):
        code = main(["regress", *args])
    return code, out.getvalue()


@pytest.fixture
def base_file(tmp_path):
    return _write_run(tmp_path / "base", BASE)


def _set(group, key, value):
    def f(doc):
        doc[group][key] = value
    return f


@pytest.mark.parametrize("change,extra,code,status", [
    (lambda d: None, [], 0, None),
    (_set("coco", "AP", 0.399), [], 0, "within tolerance"),            # drop of 0.001 <= 0.002
    (_set("coco", "AP", 0.39), [], 1, "REGRESSION"),                   # drop of 0.01
    (_set("coco", "AP", 0.39), ["--tolerance", "coco.AP=0.02"], 0, "within tolerance"),
    (_set("coco", "AP", 0.399), ["--tolerance", "coco.AP=0.0005"], 1, "REGRESSION"),
    (_set("coco", "AP", 0.399), ["--tolerance", "0.0001"], 1, "REGRESSION"),  # new default
    (_set("coco", "AP", 0.399), ["--tolerance", "coco.*=0"], 1, "REGRESSION"),  # group pattern
    (_set("coco", "AP", 0.45), [], 0, "improved"),
    (_set("coco", "AP", 0.45), ["--fail-on", "change"], 1, "CHANGED"),
    (lambda d: d["coco"].pop("AP50"), [], 1, "DISAPPEARED"),
    (lambda d: d.pop("boundary_f"), [], 1, "DISAPPEARED"),
    (_set("coco", "AP", None), [], 1, "UNDEFINED NOW"),
    (_set("coco", "APs", 0.2), [], 0, "defined now"),
    (_set("boundary_f", "num_matched", 501), ["--tolerance", "1"], 1, "COUNT CHANGED"),  # counts: exact
    (_set("coco", "AP95", 0.1), [], 0, "new"),
    (_set("speed", "fps", 9.5), [], 0, "within tolerance"),           # speed.*: 10 % relative by default
    (_set("speed", "fps", 9.5), ["--tolerance", "speed.fps=2%"], 1, "REGRESSION"),
])
def test_regress_exit_codes(tmp_path, base_file, change, extra, code, status):
    cur = _variant(tmp_path, "cur", change)
    got, text = _regress("--baseline", str(base_file), "--current", str(cur), *extra)
    assert got == code, text
    if status:
        assert f"| {status} |" in text
    else:
        assert "(every metric identical)" in text and "0 failing: ok" in text


@pytest.mark.parametrize("make,problem", [
    (lambda p: p / "missing.json", "no such file or folder"),
    (lambda p: (p / "bad.json").write_text("{oops") and p / "bad.json", "not valid json"),
    (lambda p: p / "empty_dir" if (p / "empty_dir").mkdir() is None else None, "holds no metrics.json"),
])
def test_regress_bad_input_exits_2(tmp_path, base_file, make, problem):
    code, text = _regress("--baseline", str(base_file), "--current", str(make(tmp_path)))
    assert code == 2 and problem in text


def test_regress_bad_tolerance_and_file_vs_folder(tmp_path, base_file):
    for spec in ("coco.AP=abc", "coco.AP=-1", "AP=0.1", "5%"):
        code, text = _regress("--baseline", str(base_file), "--current", str(base_file), "--tolerance", spec)
        assert code == 2 and "bad tolerance" in text, spec
    code, text = _regress("--baseline", str(base_file), "--current", str(tmp_path))
    assert code == 2 and "cannot compare a file" in text


def test_regress_folders(tmp_path):
    for side in ("b", "c"):
        _write_run(tmp_path / side / "run1", BASE)
    _write_run(tmp_path / "b" / "run2", BASE)
    code, text = _regress("--baseline", str(tmp_path / "b"), "--current", str(tmp_path / "c"))
    assert code == 1 and "| run2/metrics.json | * |" in text and "FILE MISSING" in text
    _write_run(tmp_path / "c" / "run2", BASE)
    _write_run(tmp_path / "c" / "run3", BASE)
    code, text = _regress("--baseline", str(tmp_path / "b"), "--current", str(tmp_path / "c"),
                          "--out", str(tmp_path / "report.md"))
    assert code == 0 and "new file" in text and (tmp_path / "report.md").read_text().endswith("failing: ok\n")


def test_regress_api_lower_is_better_and_all_rows():
    tols = regress.parse_tolerances()
    rows = regress.compare_metrics({"speed": {"latency_ms": 10.0}}, {"speed": {"latency_ms": 12.0}}, tols)
    assert rows[0]["status"] == "REGRESSION"
    rows = regress.compare_metrics({"speed": {"latency_ms": 10.0}}, {"speed": {"latency_ms": 8.0}}, tols)
    assert rows[0]["status"] == "improved"
    df = pd.DataFrame(regress.compare_metrics(BASE, BASE, tols))
    assert regress.report_markdown(df, "all").count("| ok |") == 6


# --------------------------------------------------------------------------------------------------
# Reproduce


def _reproduce(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out), redirect_stderr(out):
        code = main(["reproduce", *args])
    return code, out.getvalue()


def test_reproduce_dry_run_plans_every_table_on_the_bundled_data(tmp_path):
    code, text = _reproduce("--all", "--data-root", str(DATA), "--work-dir", str(tmp_path / "w"), "--dry-run",
                            "--gpus", "2", "--random-backbone")
    assert code == 0
    for n in range(1, 15):
        assert f"# Table {n}: {tables.TABLES[n].title}" in text
        assert f"then: rmbench report --table {n} --runs {tmp_path / 'w'}" in text
    w = tmp_path / "w"
    assert (f"torchrun --nproc_per_node 2 -m refinemask.cli train --preset refinemask_r50_fpn_1x_coco "
            f"--data-root {DATA} --work-dir {w / 'refinemask_r50_fpn_1x_coco'}") in text
    assert "torchrun --nproc_per_node 2 -m refinemask.cli infer --preset mask_rcnn_r50_fpn_1x_coco" in text
    assert (f"rmbench eval --gt {DATA / 'coco_mini' / 'annotations' / 'instances_val2017.json'} --lvis-gt "
            f"{w / 'lvis_v0.5_val_cocofied.json'} --results {w / 'mask_rcnn_r50_fpn_1x_coco' / 'results.json'}") in text
    assert f"rmbench cocofy-lvis {DATA / 'lvis' / 'lvis_val_100.json'}" in text
    assert "data (LVIS v1.0): NOT AVAILABLE" in text and "data (Cityscapes): NOT AVAILABLE" in text
    assert f"rmbench demo --out {w / 'demo'}" in text
    assert "row 1: Method=BMask R-CNN [9], Backbone=R50-FPN: skipped — no preset" in text
    assert "note: AP_dev is COCO test-dev" in text and "note: the fps column" in text
    assert not w.exists()  # a dry run writes nothing


def test_reproduce_dry_run_single_gpu_and_preset_filter(tmp_path):
    code, text = _reproduce("--table", "3", "--data-root", str(DATA), "--work-dir", str(tmp_path), "--dry-run",
                            "--preset", "refinemask_r50_fpn_1x_coco_stages2", "--random-backbone")
    assert code == 0 and "torchrun" not in text
    assert "rmbench train --preset refinemask_r50_fpn_1x_coco_stages2" in text and "row 1:" not in text
    code, text = _reproduce("--table", "3", "--data-root", str(DATA), "--work-dir", str(tmp_path), "--dry-run",
                            "--preset", "nope")
    assert code == 2 and "is not in Table 3" in text
    code, text = _reproduce("--table", "1", "--data-root", str(tmp_path / "empty"), "--work-dir", str(tmp_path),
                            "--dry-run")
    assert code == 0 and "COCO 2017 not found under" in text


def test_reproduce_run_refuses_without_the_model_commands(tmp_path, monkeypatch):
    monkeypatch.setattr(reproduce_cli, "available_commands", lambda: {"eval", "demo"})
    monkeypatch.setattr(reproduce_cli, "defined_presets", lambda: None)
    code, text = _reproduce("--table", "1", "--data-root", str(DATA), "--work-dir", str(tmp_path), "--random-backbone")
    assert code == 1 and "no `rmbench infer`/`rmbench train`" in text


def test_reproduce_runs_rows_skips_done_ones_and_renders(tmp_path, monkeypatch, caplog):
    calls: list[list[str]] = []

    def fake_run(cmd):
        calls.append(cmd)
        if cmd[:2] == ["rmbench", "train"]:  # training leaves its own evaluation snapshots behind
            w = Path(cmd[cmd.index("--work-dir") + 1])
            for where in (w, w / "eval" / "iter_10"):
                _write_run(where, _coco(0.2), {"preset": "mask_rcnn_r50_fpn_1x_coco", "iteration": 10})
        if cmd[:2] == ["rmbench", "eval"]:  # as `rmbench eval --preset P` on the full COCO val2017 would write
            out = Path(cmd[cmd.index("--out") + 1])
            doc = {"run": {"preset": cmd[cmd.index("--preset") + 1], **PAPER_PROTOCOL},
                   **_coco(0.351, (0.23, 0.45, 0.55)), "provenance": {
                "inputs": {"results": {"path": cmd[cmd.index("--results") + 1]}}}}
            write_json(out / "metrics.json", doc)

    monkeypatch.setattr(reproduce_cli, "available_commands", lambda: {"train", "infer", "eval", "demo", "cocofy-lvis"})
    monkeypatch.setattr(reproduce_cli, "defined_presets", lambda: {"mask_rcnn_r50_fpn_1x_coco"})
    monkeypatch.setattr(reproduce_cli, "_run", fake_run)
    weights = tmp_path / "imagenet"
    weights.mkdir()
    (weights / "resnet50-0676ba61.pth").write_bytes(b"stand-in")  # the plan only checks the file is there
    code, text = _reproduce("--table", "14", "--data-root", str(DATA), "--work-dir", str(tmp_path),
                            "--backbone-weights", str(weights))
    assert code == 0
    assert [c[1] for c in calls] == ["cocofy-lvis", "train", "infer", "eval"]  # row 3's preset is not defined yet
    train = next(c for c in calls if c[1] == "train")
    assert train[train.index("--backbone-weights") + 1] == str(weights / "resnet50-0676ba61.pth")
    doc = json.loads((tmp_path / "mask_rcnn_r50_fpn_1x_coco" / "metrics.json").read_text())
    keys = ("preset", "method", "backbone", "schedule", "dataset")
    assert {k: doc["run"][k] for k in keys} == {"preset": "mask_rcnn_r50_fpn_1x_coco", "method": "Mask R-CNN",
                                                 "backbone": "R50-FPN", "schedule": "1×", "dataset": "coco"}
    md = (tmp_path / "tables" / "table14.md").read_text()
    assert "| Mask R-CNN | R50-FPN | 35.1 | 34.7 | +0.4 |" in md and "1 of 3 rows filled" in md
    assert "two runs named" not in caplog.text  # the training snapshot under eval/iter_10 gives way silently
    calls.clear()
    code, text = _reproduce("--table", "14", "--data-root", str(DATA), "--work-dir", str(tmp_path),
                            "--backbone-weights", str(weights))
    assert code == 0 and [c[1] for c in calls] == ["cocofy-lvis"] and "exists, skipping" in text
    # a training snapshot alone does not count as done
    (tmp_path / "mask_rcnn_r50_fpn_1x_coco" / "results.json").unlink(missing_ok=True)
    _write_run(tmp_path / "mask_rcnn_r50_fpn_1x_coco", _coco(0.2), {"preset": "mask_rcnn_r50_fpn_1x_coco"})
    assert not reproduce.row_done(tmp_path / "mask_rcnn_r50_fpn_1x_coco" / "metrics.json")


# --------------------------------------------------------------------------------------------------
# Plots


def _check_plots(paths: list[Path]) -> None:
    assert paths
    for p in paths:
        data = p.read_bytes()
        assert len(data) > 1000, p
        assert data.startswith(b"\x89PNG") if p.suffix == ".png" else b"<svg" in data[:2000], p


def test_plots_are_written_as_png_and_svg(tmp_path, fake_runs):
    runs = collect_runs([fake_runs])
    ceiling = [{"S": s, "AP": 0.8 + s / 1000, "AP*": 0.78 + s / 1000, "F1px": 0.7, "F3px": 0.9} for s in (14, 28, 56)]
    paths = plots.plots_from_runs(runs, tmp_path / "p", ceiling)
    assert sorted(p.name for p in paths) == sorted(f"{s}.{e}" for s in ("fig1_boundary_accuracy",
                                                                        "boundary_f_vs_tolerance", "ap_vs_mask_size")
                                                   for e in ("png", "svg"))
    _check_plots(paths)
    assert plots.table3_runs(runs)[28]["AP"] == pytest.approx(0.3566)


def test_demo_plots_from_a_demo_folder(tmp_path):
    demo = tmp_path / "demo"
    _write_run(demo / "eval", _coco(0.675, (0.45, 0.72, 0.88), (0.61, 0.88, 0.99), acc=(0.678, 0.996)))
    write_json(demo / "ceiling.json", {"rows": [{"S": s, "AP": 0.9, "AP*": 0.88, "F1px": 0.8, "F3px": 0.95}
                                                for s in (14, 28, 56, 112, 224)]})
    paths = plots.demo_plots(demo, image_ids=[139])
    _check_plots(paths)
    assert {p.stem for p in paths} == {"fig1_boundary_accuracy", "boundary_f_vs_tolerance", "ap_vs_mask_size",
                                       "fig7_boundary_regions", "fig6_qualitative"}


def test_plot_inputs_are_checked(tmp_path):
    with pytest.raises(ValueError, match="not in the ground truth"):
        plots.plot_qualitative(load_gt(COCO_VAL_GT), DATA / "coco_mini" / "val2017", {}, [-1], tmp_path / "q")
    with pytest.raises(ValueError, match="no mask"):
        plots.plot_boundary_regions([], tmp_path / "r")

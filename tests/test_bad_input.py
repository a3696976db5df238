"""Every bad input gives a clear error naming the file, the record and the fix, and writes nothing.

Driven through ``rmbench eval`` (exit code 2, message on stderr, output folder left empty).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from refinemask.cli import main
from tests.helpers import COCO_VAL_GT, LVIS_COCOFIED, LVIS_RAW


def _write(tmp: Path, name: str, obj) -> Path:
    p = tmp / name
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return p


def _run_eval(tmp_path, capsys, results, gt=COCO_VAL_GT, lvis_gt=None, metrics="coco"):
    res = results if isinstance(results, Path) else _write(tmp_path, "results.json", results)
    out = tmp_path / "out"
    argv = ["eval", "--results", str(res), "--out", str(out)]
    if gt is not None:
        argv += ["--gt", str(gt)]
    if lvis_gt is not None:
        argv += ["--lvis-gt", str(lvis_gt)]
    if metrics:
        argv += ["--metrics", metrics]
    code = main(argv)
    err = capsys.readouterr().err
    return code, err, out


def _assert_clean_failure(code, err, out, *needles):
    assert code == 2, err
    assert "Fix:" in err, err
    for n in needles:
        assert n in err, (n, err)
    assert not out.exists() or not any(out.iterdir()), "no output may be written on bad input"


@pytest.fixture
def good(preds_a):
    return preds_a[:50]


def test_unreadable_and_non_json(tmp_path, capsys):
    code, err, out = _run_eval(tmp_path, capsys, tmp_path / "missing.json")
    _assert_clean_failure(code, err, out, "missing.json", "does not exist")
    bad = _write(tmp_path, "trunc.json", '[{"image_id": 1, "score": ')
    code, err, out = _run_eval(tmp_path, capsys, bad)
    _assert_clean_failure(code, err, out, "trunc.json", "not valid json", "line 1")
    binary = tmp_path / "bin.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    code, err, out = _run_eval(tmp_path, capsys, binary)
    _assert_clean_failure(code, err, out, "bin.json")


def test_results_not_a_list(tmp_path, capsys):
    code, err, out = _run_eval(tmp_path, capsys, {"image_id": 1})
    _assert_clean_failure(code, err, out, "results.json", "must be a json list")
    code, err, out = _run_eval(tmp_path, capsys, json.loads(COCO_VAL_GT.read_text()))
    _assert_clean_failure(code, err, out, "ground-truth file")


@pytest.mark.parametrize("key", ["image_id", "category_id", "score", "segmentation"])
def test_missing_keys(tmp_path, capsys, good, key):
    del good[7][key]
    code, err, out = _run_eval(tmp_path, capsys, good)
    _assert_clean_failure(code, err, out, "results[7]", repr(key))


def test_unknown_image_and_category(tmp_path, capsys, good):
    orig = good[3]["image_id"]
    good[3]["image_id"] = 123456789
    code, err, out = _run_eval(tmp_path, capsys, good)
    _assert_clean_failure(code, err, out, "results[3]", "image_id 123456789")
    good[3]["image_id"] = orig
    good[5]["category_id"] = 12  # id 12 is not a COCO category (ids are non-contiguous)
    code, err, out = _run_eval(tmp_path, capsys, good)
    _assert_clean_failure(code, err, out, "results[5]", "category_id 12", "contiguous")


@pytest.mark.parametrize("score", [float("nan"), -0.1, 1.5, "0.5", True])
def test_bad_scores(tmp_path, capsys, good, score):
    good[2]["score"] = score
    text = json.dumps(good)  # NaN is written as the json token NaN, which Python's json reads back
    code, err, out = _run_eval(tmp_path, capsys, _write(tmp_path, "r.json", text))
    _assert_clean_failure(code, err, out, "results[2]", "score")


def test_rle_size_differs_from_image(tmp_path, capsys, good):
    h, w = good[0]["segmentation"]["size"]
    good[0]["segmentation"]["size"] = [h // 2, w // 2]
    code, err, out = _run_eval(tmp_path, capsys, good)
    _assert_clean_failure(code, err, out, "results[0]", "differs from the image size", "original image resolution")


@pytest.mark.parametrize("segm,needle", [
    ([[1.0, 2.0, 3.0]], "coordinates"),
    ([[1, 2, 3, 4, 5]], "coordinates"),
    ([["a", 2, 3, 4, 5, 6]], "finite numbers"),
    ([[1, 2, 3, 4, 5, 6], 7], "finite numbers"),
    ("polygon", "polygon list or an RLE"),
])
def test_malformed_polygon(tmp_path, capsys, good, segm, needle):
    good[1]["segmentation"] = segm
    code, err, out = _run_eval(tmp_path, capsys, good)
    _assert_clean_failure(code, err, out, "results[1]", needle)


@pytest.mark.parametrize("segm", [[], {"size": None, "counts": ""}])
def test_empty_segmentation(tmp_path, capsys, good, segm):
    if isinstance(segm, dict):
        segm = {"size": good[1]["segmentation"]["size"], "counts": ""}
    good[1]["segmentation"] = segm
    code, err, out = _run_eval(tmp_path, capsys, good)
    _assert_clean_failure(code, err, out, "results[1]", "empty")


def _gt_variant(tmp_path, mutate) -> Path:
    gt = json.loads(COCO_VAL_GT.read_text())
    mutate(gt)
    return _write(tmp_path, "gt.json", gt)


def test_duplicate_and_zero_annotation_ids(tmp_path, capsys, good):
    def dup(gt):
        gt["annotations"][5]["id"] = gt["annotations"][2]["id"]

    code, err, out = _run_eval(tmp_path, capsys, good, gt=_gt_variant(tmp_path, dup))
    _assert_clean_failure(code, err, out, "gt.json", "annotations[5]", "duplicate annotation id")

    def zero(gt):
        gt["annotations"][4]["id"] = 0

    code, err, out = _run_eval(tmp_path, capsys, good, gt=_gt_variant(tmp_path, zero))
    _assert_clean_failure(code, err, out, "annotations[4]", "id 0", "renumber")


def test_gt_without_segmentation(tmp_path, capsys, good):
    def strip(gt):
        del gt["annotations"][9]["segmentation"]

    code, err, out = _run_eval(tmp_path, capsys, good, gt=_gt_variant(tmp_path, strip))
    _assert_clean_failure(code, err, out, "gt.json", "annotations[9]", "segmentation")


def test_lvis_passed_as_coco_and_reverse(tmp_path, capsys, good):
    code, err, out = _run_eval(tmp_path, capsys, good, gt=LVIS_RAW)
    _assert_clean_failure(code, err, out, "lvis_val_100.json", "LVIS-format", "--lvis-gt")
    code, err, out = _run_eval(tmp_path, capsys, good, gt=None, lvis_gt=COCO_VAL_GT, metrics="ap_star")
    _assert_clean_failure(code, err, out, "instances_val2017.json", "COCO-format", "--gt")


def test_results_for_another_split(tmp_path, capsys, good):
    """Results of the train split scored against val: no image id is known."""
    train = json.loads((COCO_VAL_GT.parent / "instances_train2017.json").read_text())
    res = [{"image_id": a["image_id"], "category_id": a["category_id"], "segmentation": a["segmentation"],
            "score": 0.5} for a in train["annotations"][:20]]
    code, err, out = _run_eval(tmp_path, capsys, res)
    _assert_clean_failure(code, err, out, "another split")


def test_empty_result_list_gives_zeros_with_warning(tmp_path, capsys):
    res = _write(tmp_path, "empty.json", [])
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="empty"):
        code = main(["eval", "--gt", str(COCO_VAL_GT), "--lvis-gt", str(LVIS_COCOFIED), "--results", str(res),
                     "--out", str(out)])
    assert code == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["coco"]["AP"] == 0.0 and m["ap_star"]["AP"] == 0.0 and m["boundary_ap"]["AP"] == 0.0
    assert m["boundary_f"]["num_matched"] == 0 and m["boundary_f"]["F1px"] == 0.0


def test_metric_group_without_its_gt(tmp_path, capsys, good):
    code, err, out = _run_eval(tmp_path, capsys, good, metrics="ap_star")
    assert code == 2 and "--lvis-gt" in err
    code, err, out = _run_eval(tmp_path, capsys, good, metrics="coco,bogus")
    assert code == 2 and "unknown metric group 'bogus'" in err


def test_failure_leaves_existing_output_untouched(tmp_path, capsys, good):
    out = tmp_path / "out"
    assert main(["eval", "--gt", str(COCO_VAL_GT), "--results", str(_write(tmp_path, "ok.json", good)),
                 "--out", str(out), "--metrics", "coco"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = copy.deepcopy(good)
    bad[0]["score"] = 7
    assert main(["eval", "--gt", str(COCO_VAL_GT), "--results", str(_write(tmp_path, "bad.json", bad)),
                 "--out", str(out), "--metrics", "coco"]) == 2
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not list(out.glob(".*.tmp"))

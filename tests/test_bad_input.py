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


def _run_eval(tmp_path, capsys, results, gt=COCO_VAL_GT, lvis_gt=None, metrics="coco", extra=()):
    res = results if isinstance(results, Path) else _write(tmp_path, "results.json", results)
    out = tmp_path / "out"
    argv = ["eval", "--results", str(res), "--out", str(out), *extra]
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


@pytest.mark.parametrize("score", [float("nan"), -0.1, 1.5, "0.5", True,
                                   pytest.param(10 ** 400, id="int-beyond-float")])
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
    ([[1, 2, 3, 4, 5, 10 ** 400]], "finite numbers"),  # a json integer beyond float range: refused, no traceback
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


def test_outputs_are_written_together_or_not_at_all(tmp_path, good, monkeypatch):
    """metrics.json failing to serialise (after metrics.md and per_instance.csv were rendered) leaves none of the
    three in place and no temporary behind; the previous set stays as it was."""
    import eval.output

    out = tmp_path / "out"
    assert main(["eval", "--gt", str(COCO_VAL_GT), "--results", str(_write(tmp_path, "ok.json", good)),
                 "--out", str(out), "--metrics", "coco"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    fresh = tmp_path / "fresh"

    def broken(obj, f):
        f.write("{")
        raise OSError("disk full")

    monkeypatch.setattr(eval.output, "dump_json", broken)
    for target in (out, fresh):  # not an input error: exit 1 with the traceback
        assert main(["eval", "--gt", str(COCO_VAL_GT), "--results", str(_write(tmp_path, "ok.json", good)),
                     "--out", str(target), "--metrics", "coco"]) == 1
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not fresh.exists() or not list(fresh.iterdir())


# --------------------------------------------------------------------------------------------------
# Corrupt RLEs never reach pycocotools (it hangs on some and reads uninitialised memory on others)


def _short_rle(good: dict, coco_gt: dict) -> dict:
    """``good``'s mask re-encoded with counts that cover 10 columns fewer than the image: size says h × w."""
    import numpy as np
    from pycocotools import mask as mask_utils

    im = next(i for i in coco_gt["images"] if i["id"] == good["image_id"])
    h, w = im["height"], im["width"]
    m = mask_utils.decode({"size": [h, w], "counts": good["segmentation"]["counts"].encode()})
    short = mask_utils.encode(np.asfortranarray(m[:, : w - 10]))
    return {"size": [h, w], "counts": short["counts"].decode()}


def test_short_compressed_rle_over_a_gt_box_is_refused_not_hung(tmp_path, good, coco_gt):
    """The case that made `rmbench eval` hang forever inside pycocotools' mask.iou: a compressed RLE whose run
    lengths sum to less than h×w, overlapping a same-class GT box. Run in a subprocess with a timeout, so that a
    regression fails instead of hanging the suite."""
    import subprocess
    import sys

    good[0]["segmentation"] = _short_rle(good[0], coco_gt)
    res = _write(tmp_path, "results.json", good)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "refinemask.cli", "eval", "--gt", str(COCO_VAL_GT), "--results", str(res),
           "--metrics", "coco", "--out", str(out)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("rmbench eval hung on a corrupt RLE (pycocotools mask.iou)")
    _assert_clean_failure(proc.returncode, proc.stderr, out, "results[0]", "compressed RLE is corrupt",
                          "sum to")


@pytest.mark.parametrize("counts, needle", [
    ("abc", "truncated"),
    ("0!", "is not an RLE character"),
    ("0?é", "character 'é' is not an RLE character"),  # never encoded (ascii would raise, 'replace' gives '?')
    ("", "empty RLE"),
])
def test_garbage_compressed_counts(tmp_path, capsys, good, counts, needle):
    good[2]["segmentation"] = {**good[2]["segmentation"], "counts": counts}
    code, err, out = _run_eval(tmp_path, capsys, good)
    _assert_clean_failure(code, err, out, "results[2]", needle)


@pytest.mark.parametrize("counts, needle", [
    ([-5, 10], "non-negative integers"),
    (["3", "4"], "non-negative integers"),
    ([1.5, 2], "non-negative integers"),
    ([True, 3], "non-negative integers"),
])
def test_bad_uncompressed_counts(tmp_path, capsys, good, coco_gt, counts, needle):
    good[1]["segmentation"] = {"size": good[1]["segmentation"]["size"], "counts": counts}
    code, err, out = _run_eval(tmp_path, capsys, good)
    _assert_clean_failure(code, err, out, "results[1]", needle)


@pytest.mark.parametrize("key, value, needle", [
    ("image_id", [139], "image_id [139] is not an integer"),
    ("image_id", "139", "image_id '139' is not an integer"),
    ("category_id", 1.0, "category_id 1.0 is not an integer"),
    ("category_id", True, "category_id True is not an integer"),
])
def test_result_id_types(tmp_path, capsys, good, key, value, needle):
    good[4][key] = value
    code, err, out = _run_eval(tmp_path, capsys, good)
    _assert_clean_failure(code, err, out, "results[4]", needle)


def test_keep_bbox_needs_a_valid_bbox_on_every_detection(tmp_path, capsys, good):
    for r in good:
        r["bbox"] = [1.0, 2.0, 30.0, 40.0]
    del good[6]["bbox"]
    code, err, out = _run_eval(tmp_path, capsys, good, extra=["--keep-bbox"])
    _assert_clean_failure(code, err, out, "results[6]", "has no 'bbox'")
    good[6]["bbox"] = [1.0, 2.0, -3.0, 4.0]
    code, err, out = _run_eval(tmp_path, capsys, good, extra=["--keep-bbox"])
    _assert_clean_failure(code, err, out, "results[6]", "is not [x, y, w, h]")


def _gt_case(coco_gt: dict, edit) -> dict:
    edit(coco_gt)
    return coco_gt


@pytest.mark.parametrize("edit, record, needle", [
    (lambda g: g["annotations"][3].__setitem__("area", "12.5"), "annotations[3]", "area '12.5' is not a non-negative"),
    (lambda g: g["annotations"][3].__setitem__("area", -4.0), "annotations[3]", "area -4.0 is not a non-negative"),
    (lambda g: g["annotations"][3].__setitem__("area", 10 ** 400), "annotations[3]", "is not a non-negative"),
    (lambda g: g["annotations"][3].pop("iscrowd"), "annotations[3]", "lacks 'iscrowd'"),
    (lambda g: g["annotations"][3].__setitem__("iscrowd", 2), "annotations[3]", "iscrowd 2 is not 0 or 1"),
    (lambda g: g["annotations"][3].__setitem__("id", [7]), "annotations[3]", "id [7] is not an integer"),
    (lambda g: g["annotations"][3].__setitem__("bbox", [0, 0, 5]), "annotations[3]", "bbox [0, 0, 5]"),
    (lambda g: g["images"][2].__setitem__("height", 0), "images[2]", "height 0 is not a positive integer"),
    (lambda g: g["images"][2].__setitem__("width", "640"), "images[2]", "width '640' is not a positive integer"),
    (lambda g: g["images"].append(dict(g["images"][0])), "images[79]", "duplicate image id"),
    (lambda g: g["categories"].append(dict(g["categories"][0])), "categories[80]", "duplicate category id"),
    (lambda g: g["categories"][5].__setitem__("id", "6"), "categories[5]", "category id '6' is not an integer"),
])
def test_bad_ground_truth_fields(tmp_path, capsys, good, coco_gt, edit, record, needle):
    gt = _write(tmp_path, "gt.json", _gt_case(coco_gt, edit))
    code, err, out = _run_eval(tmp_path, capsys, good, gt=gt)
    _assert_clean_failure(code, err, out, "gt.json", record, needle)


def test_an_output_path_that_is_a_file_is_refused_before_any_work(tmp_path, capsys, good):
    res = _write(tmp_path, "results.json", good)
    blocker = tmp_path / "out"
    blocker.write_text("not a folder")
    code = main(["eval", "--gt", str(COCO_VAL_GT), "--results", str(res), "--out", str(blocker)])
    err = capsys.readouterr().err
    assert code == 2 and "is an existing file, not a folder" in err and "Fix:" in err
    assert blocker.read_text() == "not a folder"

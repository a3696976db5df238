"""Tests for eval/boundary_f.py (RefineMask F_npx) and eval/boundary_acc.py (Fig. 1 accuracies).

Golden references: data/golden/boundary_f_A_per_instance.json (DAVIS f_measure, full image),
data/golden/boundary_f_A_variants_per_instance.json (RefineMask crop window; cocofied LVIS) and
data/golden/golden_A.json (means and counts), see data/golden/README.md §3.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest

from eval.boundary import distance_boundary_region
from eval.boundary_acc import boundary_accuracy, boundary_accuracy_multi, pair_accuracy, window_band
from eval.boundary_f import boundary_f
from eval.masks import ann_to_mask, mask_to_rle
from eval.matching import match_positive_predictions, refinemask_window
from tests.helpers import ROOT

GOLDEN = ROOT / "data" / "golden"
COCO_GT = ROOT / "data" / "coco_mini" / "annotations" / "instances_val2017.json"

ROW_FLOATS = ("mask_iou", "F_1px", "P_1px", "R_1px", "F_3px", "P_3px", "R_3px", "F_5px", "P_5px", "R_5px")


def _load(path: Path):
    with open(path) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def coco_gt():
    return _load(COCO_GT)


@pytest.fixture(scope="module")
def preds_a():
    return _load(GOLDEN / "preds_A.json")


@pytest.fixture(scope="module")
def lvis_gt():
    return _load(GOLDEN / "lvis_val_100_cocofied.json")


@pytest.fixture(scope="module")
def preds_a_lvis():
    return _load(GOLDEN / "preds_A_lvis.json")


@pytest.fixture(scope="module")
def golden_main():
    return _load(GOLDEN / "boundary_f_A_per_instance.json")


@pytest.fixture(scope="module")
def golden_variants():
    return _load(GOLDEN / "boundary_f_A_variants_per_instance.json")


@pytest.fixture(scope="module")
def golden_means():
    return _load(GOLDEN / "golden_A.json")["boundary_f"]


@pytest.fixture(scope="module")
def bf_full(coco_gt, preds_a):
    return boundary_f(coco_gt, preds_a, window="full")


def _compare_rows(out: dict, golden: dict) -> float:
    rows, grows = out["per_instance"], golden["rows"]
    assert len(rows) == len(grows)
    max_diff = 0.0
    for r, g in zip(rows, grows):
        for key in ("gt_id", "image_id", "category_id", "pred_index", "n_boundary_pred", "n_boundary_gt"):
            assert r[key] == g[key], (key, r, g)
        assert r["score"] == g["pred_score"]
        for key in ROW_FLOATS:
            assert abs(r[key] - g[key]) <= 1e-12, (key, r["gt_id"], r[key], g[key])
            max_diff = max(max_diff, abs(r[key] - g[key]))
    assert out["skipped_gt_ids"] == golden["skipped_gt_ids"]
    return max_diff


def _compare_summary(out: dict, summary: dict) -> None:
    assert out["num_gt"] == summary["n_gt_noncrowd"]
    assert out["num_matched"] == summary["n_evaluated"]
    assert out["num_skipped_no_positive"] == summary["n_skipped_no_positive"]
    assert out["num_skipped_degenerate_crop"] == summary["n_skipped_degenerate_crop"]
    for n in (1, 3, 5):
        assert out[f"F{n}px"] == pytest.approx(summary["mean"][f"F_{n}px"], abs=1e-9)


# --------------------------------------------------------------------------------------------
# golden F_npx
# --------------------------------------------------------------------------------------------
def test_golden_inputs_are_the_documented_ones(golden_means, preds_a):
    assert len(preds_a) == 892
    assert golden_means["main"]["n_evaluated"] == 514


def test_main_protocol_per_instance_and_means(bf_full, golden_main, golden_means):
    _compare_rows(bf_full, golden_main)
    _compare_summary(bf_full, golden_main["summary"])
    main = golden_means["main"]
    assert (bf_full["num_matched"], bf_full["num_gt"], bf_full["num_skipped_no_positive"]) == (514, 619, 105)
    for n in (1, 3, 5):
        assert bf_full[f"F{n}px"] == pytest.approx(main["mean"][f"F_{n}px"], abs=1e-9)
    assert bf_full["F1px"] == pytest.approx(0.6081332676795577, abs=1e-9)
    assert bf_full["F3px"] == pytest.approx(0.8834977475072155, abs=1e-9)


def test_match_positive_predictions_golden(coco_gt, preds_a, golden_main):
    matches, skipped = match_positive_predictions(coco_gt, preds_a)
    assert skipped == golden_main["skipped_gt_ids"]
    assert [(m["gt_id"], m["pred_index"]) for m in matches] == [
        (r["gt_id"], r["pred_index"]) for r in golden_main["rows"]
    ]
    for m, r in zip(matches, golden_main["rows"]):
        assert m["mask_iou"] == pytest.approx(r["mask_iou"], abs=1e-12)
        assert m["mask_iou"] >= 0.5 and m["score"] >= 0.05
    assert set(matches[0]) == {"gt_id", "image_id", "category_id", "pred_index", "score", "mask_iou"}


def test_coco_crop_variant(coco_gt, preds_a, golden_variants, golden_means):
    out = boundary_f(coco_gt, preds_a, window="crop")
    g = golden_variants["coco_crop_variant"]
    _compare_rows(out, g)
    _compare_summary(out, golden_means["variants"]["coco_crop_refinemask_window"])


def test_lvis_full_and_crop_variants(lvis_gt, preds_a_lvis, golden_variants, golden_means):
    full = boundary_f(lvis_gt, preds_a_lvis, window="full")
    _compare_rows(full, golden_variants["lvis_full_image"])
    _compare_summary(full, golden_means["variants"]["lvis_cocofied_full_image"])
    crop = boundary_f(lvis_gt, preds_a_lvis, window="crop")
    _compare_rows(crop, golden_variants["lvis_crop_variant"])
    _compare_summary(crop, golden_means["variants"]["lvis_cocofied_crop_refinemask_window"])
    assert (crop["num_matched"], crop["num_skipped_degenerate_crop"]) == (331, 1)
    assert len(crop["degenerate_gt_ids"]) == 1


def test_bytes_counts_and_polygon_results(coco_gt, preds_a, bf_full):
    as_bytes = copy.deepcopy(preds_a)
    for r in as_bytes:
        r["segmentation"]["counts"] = r["segmentation"]["counts"].encode("ascii")
    out = boundary_f(coco_gt, as_bytes)
    assert [r["F_1px"] for r in out["per_instance"]] == [r["F_1px"] for r in bf_full["per_instance"]]
    # GT polygons fed back as results: every polygon GT is matched with F = 1
    polys = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "segmentation": a["segmentation"], "score": 0.9}
        for a in coco_gt["annotations"]
        if not a["iscrowd"] and isinstance(a["segmentation"], list)
    ][:60]
    out = boundary_f(coco_gt, polys, tolerances=(1, 0.008))
    assert out["num_matched"] >= 60 and "F0.008px" in out
    exact = [row for row in out["per_instance"] if row["mask_iou"] == 1.0]
    assert len(exact) >= 60
    assert all(row["F_1px"] == 1.0 and row["F_0.008px"] == 1.0 for row in exact)


def test_wrong_size_result_never_matches():
    gt = _toy_gt(_square(), [10, 10, 20, 20])
    wrong = _square(h=41)
    with pytest.warns(RuntimeWarning):
        out = boundary_f(gt, [_res(wrong, 0.9)])  # pycocotools IoU is -1 for different sizes
    assert out["num_matched"] == 0 and out["skipped_gt_ids"] == [1]


def _toy_gt(mask: np.ndarray, bbox: list[float], extra_anns: list[dict] | None = None) -> dict:
    h, w = mask.shape
    anns = [
        {
            "id": 1,
            "image_id": 7,
            "category_id": 3,
            "segmentation": mask_to_rle(mask),
            "area": float(mask.sum()),
            "bbox": bbox,
            "iscrowd": 0,
        }
    ] + (extra_anns or [])
    return {
        "images": [{"id": 7, "height": h, "width": w, "file_name": "toy.jpg"}],
        "annotations": anns,
        "categories": [{"id": 3, "name": "thing"}],
    }


def _square(h=40, w=40, r0=10, c0=10, size=20, shift=(0, 0)) -> np.ndarray:
    m = np.zeros((h, w), dtype=np.uint8)
    m[r0 + shift[0] : r0 + size + shift[0], c0 + shift[1] : c0 + size + shift[1]] = 1
    return m


def _res(mask: np.ndarray, score: float, cat: int = 3) -> dict:
    return {"image_id": 7, "category_id": cat, "segmentation": mask_to_rle(mask), "score": score}


def test_ties_score_threshold_and_category():
    gt_mask = _square()
    gt = _toy_gt(gt_mask, [10, 10, 20, 20])
    shifted = _square(shift=(0, 1))
    results = [
        _res(gt_mask, 0.04),  # exact copy below the score threshold: not a candidate
        _res(gt_mask, 0.9, cat=4),  # wrong class
        _res(shifted, 0.3),
        _res(shifted, 0.8),  # exact IoU tie: the first in list order wins
    ]
    matches, skipped = match_positive_predictions(gt, results)
    assert skipped == [] and matches[0]["pred_index"] == 2
    assert matches[0]["mask_iou"] == pytest.approx(380 / 420, abs=1e-15)
    matches, _ = match_positive_predictions(gt, results, score_thr=0.0)
    assert matches[0]["pred_index"] == 0 and matches[0]["mask_iou"] == 1.0
    # IoU below 0.5 -> skipped, not counted as 0; no match at all -> NaN + warning
    far = _square(shift=(0, 12))
    with pytest.warns(RuntimeWarning, match="no GT instance"):
        out = boundary_f(gt, [_res(far, 0.9)])
    assert out["num_matched"] == 0 and out["skipped_gt_ids"] == [1] and math.isnan(out["F1px"])


def test_crowd_and_missing_iscrowd():
    gt = _toy_gt(_square(), [10, 10, 20, 20])
    crowd = dict(gt["annotations"][0], id=2, iscrowd=1)
    gt["annotations"].append(crowd)
    del gt["annotations"][0]["iscrowd"]  # LVIS style: missing = 0
    out = boundary_f(gt, [_res(_square(), 0.9)])
    assert out["num_gt"] == 1 and out["num_matched"] == 1 and out["F1px"] == 1.0


def test_invalid_arguments():
    gt = _toy_gt(_square(), [10, 10, 20, 20])
    with pytest.raises(ValueError, match="window"):
        boundary_f(gt, [], window="box")
    with pytest.raises(ValueError, match="tolerances"):
        boundary_f(gt, [], tolerances=(0,))
    with pytest.raises(ValueError, match="COCO-format"):
        boundary_f({"annotations": []}, [])
    with pytest.raises(ValueError, match="lacks the key"):
        boundary_f(gt, [{"image_id": 7, "category_id": 3, "segmentation": {}}])


def test_refinemask_window():
    # (x, y, w, h) = int(bbox) -> rows [max(y - h//2, 0), min(y + h + h//2, H))
    assert refinemask_window([10.7, 20.2, 9.9, 30.5], 100, 200) == (slice(5, 65), slice(6, 23))
    assert refinemask_window([0.5, 0.2, 0.3, 0.4], 50, 60) == (slice(0, 1), slice(0, 1))
    assert refinemask_window([150, 80, 60, 40], 100, 200) == (slice(60, 100), slice(120, 200))


# --------------------------------------------------------------------------------------------
# boundary accuracy (Fig. 1)
# --------------------------------------------------------------------------------------------
def _brute_counts(pred: np.ndarray, gt: np.ndarray, d: float) -> tuple[int, int, int, int]:
    """Double loop with explicit Euclidean distances; the image exterior is background."""
    h, w = gt.shape
    padded = np.pad(gt, 1)
    ys, xs = np.mgrid[-1 : h + 1, -1 : w + 1]
    nb = cb = nn = cn = 0
    for i in range(h):
        for j in range(w):
            other = padded != gt[i, j]
            dist = math.sqrt(float(((ys[other] - i) ** 2 + (xs[other] - j) ** 2).min()))
            ok = pred[i, j] == gt[i, j]
            if dist <= d:
                nb, cb = nb + 1, cb + ok
            else:
                nn, cn = nn + 1, cn + ok
    return nb, cb, nn, cn


def test_boundary_accuracy_shifted_square_by_hand():
    gt_mask = _square()  # 20x20 square, rows/cols 10..29 of a 40x40 image
    pred = _square(shift=(0, 1))  # shifted right by 1 px: cols 10 and 30 are wrong (40 px)
    gt = _toy_gt(gt_mask, [10, 10, 20, 20])  # window = the whole 40x40 image
    res = boundary_accuracy_multi(gt, [_res(pred, 0.9)], ds=(1, 2, 3))
    # d = 1: 76 fg ring + 80 bg 4-neighbours = 156 band pixels, all 40 errors inside
    assert res[1.0]["num_boundary_pixels"] == 156
    assert res[1.0]["boundary"] == pytest.approx(116 / 156, abs=1e-15)
    # d = 2: fg 400 - 16^2 = 144; bg: 2 layers x 4 sides x 20 + 4 diagonal corners = 164
    assert res[2.0]["num_boundary_pixels"] == 308
    assert res[2.0]["boundary"] == pytest.approx(268 / 308, abs=1e-15)
    for d in (1.0, 2.0, 3.0):
        assert res[d]["non_boundary"] == 1.0 and res[d]["num_matched"] == 1
        nb, cb, nn, cn = _brute_counts(pred, gt_mask, d)
        assert res[d]["num_boundary_pixels"] == nb and res[d]["num_non_boundary_pixels"] == nn
        assert res[d]["boundary"] == pytest.approx(cb / nb, abs=1e-15)
        assert res[d]["non_boundary"] == pytest.approx(cn / nn, abs=1e-15)
        assert res[d]["boundary_macro"] == pytest.approx(cb / nb, abs=1e-15)
    single = boundary_accuracy(gt, [_res(pred, 0.9)], d=2)
    assert single["boundary"] == res[2.0]["boundary"] and single["d"] == 2.0
    assert set(single) >= {
        "boundary",
        "non_boundary",
        "boundary_macro",
        "non_boundary_macro",
        "num_matched",
        "num_gt",
        "d",
    }


def test_boundary_accuracy_window_and_image_border():
    # object touching the image border; the window is clipped; band computed on the full image
    h, w = 30, 36
    gt_mask = np.zeros((h, w), dtype=np.uint8)
    gt_mask[0:9, 20:36] = 1
    gt_mask[9:12, 25:30] = 1
    pred = np.roll(gt_mask, 1, axis=0)
    pred[0] = gt_mask[0]
    gt = _toy_gt(gt_mask, [20, 0, 16, 12])
    rs, cs = refinemask_window([20, 0, 16, 12], h, w)
    assert (rs, cs) == (slice(0, 18), slice(12, 36))
    for d in (1, 1.5, 2, 3):
        res = boundary_accuracy(gt, [_res(pred, 0.9)], d=d)
        nb, cb, nn, cn = _brute_counts(pred[rs, cs], gt_mask[rs, cs], d)
        band = distance_boundary_region(gt_mask, d)[rs, cs]
        np.testing.assert_array_equal(window_band(gt_mask, rs, cs, d), band)
        correct = (pred == gt_mask)[rs, cs]
        assert res["num_boundary_pixels"] == band.sum()
        assert res["boundary"] == pytest.approx((correct & band).sum() / band.sum(), abs=1e-15)
        assert res["non_boundary"] == pytest.approx((correct & ~band).sum() / (~band).sum(), abs=1e-15)
        # here the window holds the whole object, so a crop-local brute force agrees
        assert (nb, cb, nn, cn) == (band.sum(), (correct & band).sum(), (~band).sum(), (correct & ~band).sum())
    # a window that cuts the object (bbox smaller than the mask): the window edge is no contour, only
    # the image border is -> band = the 4 pixels of image row 0, not the whole 3x4 window
    acc = pair_accuracy(gt_mask, gt_mask, d=1, bbox=[22, 0, 2, 2])
    assert (acc["n_boundary"], acc["n_non_boundary"]) == (4, 8)
    # (a crop-local computation would put 10 of the 12 window pixels in the band)
    assert _brute_counts(gt_mask[0:3, 21:25], gt_mask[0:3, 21:25], 1)[0] == 10


def test_window_band_equals_full_image_band(coco_gt):
    imgs = {im["id"]: im for im in coco_gt["images"]}
    for ann in coco_gt["annotations"][::25]:
        im = imgs[ann["image_id"]]
        m = ann_to_mask(ann, im["height"], im["width"])
        rs, cs = refinemask_window(ann["bbox"], im["height"], im["width"])
        for d in (1, math.sqrt(2), 2.5):
            np.testing.assert_array_equal(window_band(m, rs, cs, d), distance_boundary_region(m, d)[rs, cs])


def test_boundary_accuracy_perfect_and_all_background(coco_gt, preds_a):
    perfect = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "segmentation": a["segmentation"], "score": 0.9}
        for a in coco_gt["annotations"]
        if not a["iscrowd"]
    ]
    res = boundary_accuracy(coco_gt, perfect, d=2)
    assert (res["boundary"], res["non_boundary"]) == (1.0, 1.0)
    assert (res["boundary_macro"], res["non_boundary_macro"]) == (1.0, 1.0)
    assert res["num_matched"] == res["num_gt"] == 619
    # set A predictions: boundary accuracy clearly below non-boundary accuracy
    res_a = boundary_accuracy(coco_gt, preds_a, d=2)
    assert res_a["num_matched"] == 514
    assert 0.5 < res_a["boundary"] < res_a["non_boundary"] < 1.0
    # an all-background prediction scores the background share of the two-sided band (~0.5)
    gt_mask = _square()
    acc = pair_accuracy(np.zeros_like(gt_mask), gt_mask, d=2, bbox=[10, 10, 20, 20])
    assert acc["boundary"] == pytest.approx(164 / 308, abs=1e-15)
    assert acc["non_boundary"] == pytest.approx((1600 - 308 - 256) / (1600 - 308), abs=1e-15)

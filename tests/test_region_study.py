"""Tests for eval/region_study.py: RefineMask Table 12 against data/golden/table12_region_iou.json.

Two routes: (1) starting from the golden S x S masks (RLE) -> per-mask IoUs and means of every
variant; (2) the full pipeline from the GT json (mask selection + crop + resize) -> the golden RLEs
bit-exactly, and the same IoUs.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from eval.region_study import (
    VARIANTS,
    compare_variants_to_paper,
    region_ious_for_mask,
    select_table12_masks,
    table12_from_masks,
    table12_study,
)
from reports.tables import paper_table12
from tests.helpers import ROOT

#: the paper's Table 12 (its one home: reports/paper/table12.csv)
PAPER_TABLE12 = paper_table12()

GOLDEN = ROOT / "data" / "golden"
COCO_GT = ROOT / "data" / "coco_mini" / "annotations" / "instances_val2017.json"
SIZES = (28, 56, 112)


@pytest.fixture(scope="module")
def golden():
    with open(GOLDEN / "table12_region_iou.json") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def golden_means():
    with open(GOLDEN / "golden_A.json") as f:
        return json.load(f)["table12_region_iou"]["mean_iou"]


@pytest.fixture(scope="module")
def coco_gt():
    with open(COCO_GT) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def golden_masks(golden):
    out = []
    for pm in golden["per_mask"]:
        masks = {}
        for s in SIZES:
            rle = pm["rle"][str(s)]
            masks[s] = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")}).astype(bool)
        out.append(masks)
    return out


@pytest.fixture(scope="module")
def comparison(coco_gt):
    return compare_variants_to_paper(coco_gt, PAPER_TABLE12)


def test_variant_names_match_golden(golden):
    assert set(VARIANTS) == set(golden["variants"])
    for name, p in golden["variants"].items():
        ours = VARIANTS[name]
        assert ours["frame"] == p["params"]["frame"]
        assert ours["half_pixel_contour"] == p["params"]["half"]
        assert ours["invert_then_pad"] == (p["params"]["mode"] == "invert_then_zero_pad")
        assert ours["threshold"] == (0.1 if p["params"]["thr"] == "code" else 0.0)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_from_golden_masks(variant, golden, golden_masks, golden_means):
    res = table12_from_masks(golden_masks, (1, 2), variant)
    assert res["num_masks"] == 200
    for ours, g in zip(res["per_mask_iou"], golden["per_mask"]):
        for key, val in g["iou"][variant].items():
            assert abs(ours[key] - val) <= 1e-12, (variant, g["gt_id"], key, ours[key], val)
    for size_key, by_d in golden_means[variant].items():
        for d_key, val in by_d.items():
            assert res["mean_iou"][size_key][d_key] == pytest.approx(val, abs=1e-12)


def test_pipeline_reproduces_golden_masks(coco_gt, golden, golden_masks):
    sel = select_table12_masks(coco_gt, SIZES, 200, 2021)
    assert [s["gt_id"] for s in sel] == [g["gt_id"] for g in golden["per_mask"]]
    assert [s["image_id"] for s in sel] == [g["image_id"] for g in golden["per_mask"]]
    assert [s["crop_xyxy"] for s in sel] == [g["crop_xyxy"] for g in golden["per_mask"]]
    for s, g in zip(sel, golden_masks):
        for size in SIZES:
            assert s["masks"][size].shape == (size, size)
            np.testing.assert_array_equal(s["masks"][size], g[size])


def test_pipeline_all_variants_and_closest(comparison, golden, golden_means):
    for variant, study in comparison["studies"].items():
        assert study["num_masks"] == 200 and study["seed"] == 2021
        for ours, g in zip(study["per_mask"], golden["per_mask"]):
            assert ours["gt_id"] == g["gt_id"]
            for key, val in g["iou"][variant].items():
                assert abs(ours["iou"][key] - val) <= 1e-12
        for size_key, by_d in golden_means[variant].items():
            for d_key, val in by_d.items():
                assert study["mean_iou"][size_key][d_key] == pytest.approx(val, abs=1e-12)
    # the variant closest to the paper's 0.76 / 0.75 / 0.80 (mean absolute difference, d = 1 and 2)
    assert comparison["closest"] == "dist_no_frame"
    names = [n for n, _ in comparison["ranking"]]
    assert names[:2] == ["dist_no_frame", "primary"]
    mad = comparison["studies"]["dist_no_frame"]["mean_abs_diff_to_paper"]
    assert mad["d=1"] == pytest.approx(0.0254, abs=1e-4) and mad["d=2"] == pytest.approx(0.0207, abs=1e-4)


def test_table12_study_primary(coco_gt, golden_means):
    res = table12_study(coco_gt, sizes=(28,), widths=(1,), num_masks=200, seed=2021, variant="primary",
                        paper=PAPER_TABLE12)
    assert res["mean_iou"]["28x28"]["d=1"] == pytest.approx(golden_means["primary"]["28x28"]["d=1"], abs=1e-12)
    assert res["paper"] == {"28x28": PAPER_TABLE12[28]}
    # half-pixel contour at d = 1 is exactly the 3x3 window: IoU 1 for every mask
    res = table12_study(coco_gt, sizes=(28,), widths=(1,), num_masks=20, seed=3, variant="dist_half_pixel_contour")
    assert all(r["iou"]["28_d1"] == 1.0 for r in res["per_mask"])


def test_errors(coco_gt):
    with pytest.raises(ValueError, match="unknown variant"):
        table12_study(coco_gt, variant="nope")
    with pytest.raises(ValueError, match="num_masks"):
        select_table12_masks(coco_gt, num_masks=10_000)
    with pytest.raises(ValueError, match="unknown variant"):
        region_ious_for_mask(np.ones((4, 4)), 1, "nope")

"""COCO mask AP, AP*, LVIS AP and Boundary AP equal their reference implementations on the same input.

Anchors: the golden numbers of pycocotools 2.0.11, lvis 0.5.3 and boundary-iou-api (data/golden, set A),
and live pycocotools / LVISEval runs on perturbed versions of the bundled real annotations.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import warnings

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from eval.coco import COCO_STATS, boundary_ap, coco_mask_ap
from eval.io import COCO_CATEGORY_IDS, EmptyResultsWarning, validate_gt, validate_results
from eval.lvis_ap import LVIS_ALL_KEYS, cocofy_lvis, is_cocofied, lvis_ap, lvis_numpy_shim
from tests.helpers import COCO_VAL_GT, LVIS_COCOFIED, LVIS_MAPPING, LVIS_RAW, _load

TOL = 1e-12


def _close(ours: float, ref: float, tol: float = TOL) -> bool:
    """Compare with the reference's -1 meaning undefined (NaN for us)."""
    if ref == -1:
        return math.isnan(ours)
    return abs(ours - ref) <= tol


def _val(gt, res, **kw):
    return validate_results(res, gt, **kw)


# ---------------------------------------------------------------------------------------------- golden


def test_coco_ap_equals_golden_pycocotools(coco_gt, preds_a, golden):
    r = coco_mask_ap(validate_gt(coco_gt), _val(coco_gt, preds_a))
    ref = golden["coco_mask_ap"]
    for k in COCO_STATS:
        assert _close(r["summary"][k], ref["stats"][k]), k
    for c, v in ref["per_category_AP"].items():
        assert _close(r["per_category"][int(c)], v), c


def test_coco_ap_bbox_in_results_variant(coco_gt, preds_a, golden):
    """Keeping `bbox` makes detection areas box areas: only APs/APm/APl move (docs/evaluation.md §11 item 1)."""
    for p in preds_a:
        p["bbox"] = mask_utils.toBbox(p["segmentation"]).tolist()
    r = coco_mask_ap(coco_gt, _val(coco_gt, preds_a, keep_bbox=True))
    ref = golden["coco_mask_ap"]["variant_bbox_in_results"]["stats"]
    for k in COCO_STATS:
        assert _close(r["summary"][k], ref[k]), k
    popped = coco_mask_ap(coco_gt, _val(coco_gt, preds_a))  # default pops bbox: back to mask areas
    assert popped["summary"]["APs"] == pytest.approx(golden["coco_mask_ap"]["stats"]["APs"], abs=TOL)
    assert popped["summary"]["APs"] != pytest.approx(ref["APs"], abs=1e-6)


def test_ap_star_equals_golden_lvis(lvis_gt, preds_a_lvis, golden):
    r = lvis_ap(validate_gt(lvis_gt, expect="lvis"), _val(lvis_gt, preds_a_lvis, category_ids=COCO_CATEGORY_IDS))
    ref = golden["ap_star_lvis"]
    for k in LVIS_ALL_KEYS:
        assert _close(r["summary"][k], ref["results"][k]), k
    for c, v in ref["per_category_AP"].items():
        assert _close(r["per_category"][int(c)], v), c


def test_ap_star_bbox_variant(lvis_gt, preds_a_lvis, golden):
    for p in preds_a_lvis:
        p["bbox"] = mask_utils.toBbox(p["segmentation"]).tolist()
    r = lvis_ap(lvis_gt, _val(lvis_gt, preds_a_lvis, keep_bbox=True, category_ids=COCO_CATEGORY_IDS))
    ref = golden["ap_star_lvis"]["variant_bbox_in_results"]["results"]
    for k in LVIS_ALL_KEYS:
        assert _close(r["summary"][k], ref[k]), k


def test_boundary_ap_equals_golden_boundary_iou_api(coco_gt, preds_a, golden):
    r = boundary_ap(coco_gt, _val(coco_gt, preds_a), dilation_ratio=0.02)
    ref = golden["boundary_ap"]
    for k in COCO_STATS:
        assert _close(r["summary"][k], ref["stats"][k], 1e-12), k
    for c, v in ref["per_category_AP"].items():
        assert _close(r["per_category"][int(c)], v, 1e-12), c
    # Boundary AP is stricter than mask AP at high IoU on this set (data/golden/README.md §6)
    assert r["summary"]["AP"] < golden["coco_mask_ap"]["stats"]["AP"]


def test_cocofy_equals_golden_file():
    ours = cocofy_lvis(_load(LVIS_RAW), _load(LVIS_MAPPING))
    assert ours == _load(LVIS_COCOFIED)
    assert (len(ours["images"]), len(ours["annotations"]), len(ours["categories"])) == (100, 435, 69)
    assert is_cocofied(ours) and not is_cocofied(_load(LVIS_RAW))


# ---------------------------------------------------------------------------------------------- live references


def _perturbed(gt: dict, seed: int, polygons: bool = False) -> list[dict]:
    """GT-derived predictions: shifted masks, random scores (with ties), FPs, some misses."""
    rng = np.random.default_rng(seed)
    coco = COCO()
    coco.dataset = gt
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    out = []
    for a in gt["annotations"]:
        if rng.random() < 0.1:
            continue
        im = coco.imgs[a["image_id"]]
        if polygons and isinstance(a["segmentation"], list) and rng.random() < 0.5:
            dx, dy = rng.integers(-3, 4, size=2)
            segm = [[v + (dx if i % 2 == 0 else dy) for i, v in enumerate(p)] for p in a["segmentation"]]
        else:
            m = coco.annToMask(a)
            m = np.roll(m, tuple(rng.integers(-4, 5, size=2)), axis=(0, 1))
            segm = mask_utils.encode(np.asfortranarray(m))
            segm["counts"] = segm["counts"].decode()
        out.append({"image_id": a["image_id"], "category_id": a["category_id"], "segmentation": segm,
                    "score": round(float(rng.uniform(0.05, 1.0)), 2)})
    for im in gt["images"][:20]:  # false positives
        m = np.zeros((im["height"], im["width"]), np.uint8, order="F")
        m[10:60, 20:90] = 1
        rle = mask_utils.encode(m)
        rle["counts"] = rle["counts"].decode()
        out.append({"image_id": im["id"], "category_id": gt["categories"][0]["id"], "segmentation": rle,
                    "score": 0.9})
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_coco_ap_equals_live_pycocotools(coco_gt, seed):
    res = _perturbed(coco_gt, seed)
    ours = coco_mask_ap(coco_gt, _val(coco_gt, res))
    with contextlib.redirect_stdout(io.StringIO()):
        ref_gt = COCO(str(COCO_VAL_GT))
        ev = COCOeval(ref_gt, ref_gt.loadRes(copy.deepcopy(res)), "segm")
        ev.evaluate(), ev.accumulate(), ev.summarize()
    for k, v in zip(COCO_STATS, ev.stats):
        assert _close(ours["summary"][k], v), k


def test_polygon_results_are_rasterised_like_pycocotools(coco_gt):
    """Polygon results (pycocotools' loadRes cannot score them) equal their RLE rasterisation."""
    res = _perturbed(coco_gt, 3, polygons=True)
    assert any(isinstance(r["segmentation"], list) for r in res)
    as_rle = []
    for r in res:
        im = next(i for i in coco_gt["images"] if i["id"] == r["image_id"])
        s = r["segmentation"]
        if isinstance(s, list):
            s = mask_utils.merge(mask_utils.frPyObjects(s, im["height"], im["width"]))
            s["counts"] = s["counts"].decode()
        as_rle.append({**r, "segmentation": s})
    a = coco_mask_ap(coco_gt, _val(coco_gt, res))["summary"]
    b = coco_mask_ap(coco_gt, _val(coco_gt, as_rle))["summary"]
    assert a == b


def test_perfect_predictions_give_one_and_fp_lowers_ap(coco_gt):
    res = []
    for a in coco_gt["annotations"]:
        if a["iscrowd"]:
            continue
        res.append({"image_id": a["image_id"], "category_id": a["category_id"], "segmentation": a["segmentation"],
                    "score": 0.9})
    r = coco_mask_ap(coco_gt, _val(coco_gt, res))["summary"]
    assert r["AP"] == pytest.approx(1.0, abs=1e-12) and r["AP75"] == pytest.approx(1.0, abs=1e-12)
    a0 = coco_gt["annotations"][0]
    fp = dict(res[0], score=0.99)
    im = next(i for i in coco_gt["images"] if i["id"] == a0["image_id"])
    m = np.zeros((im["height"], im["width"]), np.uint8, order="F")
    m[:5, :5] = 1
    fp["segmentation"] = {"size": [im["height"], im["width"]], "counts": mask_utils.encode(m)["counts"].decode()}
    r2 = coco_mask_ap(coco_gt, _val(coco_gt, res + [fp]))["summary"]
    assert r2["AP"] < r["AP"]


def test_lvis_ap_on_raw_lvis_equals_live_lvis_eval():
    """Plain LVIS AP (raw v0.5 file, 1230 classes) equals LVISEval run directly."""
    from lvis import LVIS, LVISEval, LVISResults

    raw = _load(LVIS_RAW)
    gt = validate_gt(raw, expect="lvis")
    assert not is_cocofied(gt)
    res = _perturbed(copy.deepcopy(raw), 5)
    ours = lvis_ap(gt, _val(gt, res))["summary"]
    with lvis_numpy_shim():
        ref_gt = LVIS(str(LVIS_RAW))
        ev = LVISEval(ref_gt, LVISResults(ref_gt, copy.deepcopy(res)), "segm")
        ev.run()
        ref = ev.get_results()
    for k in LVIS_ALL_KEYS:
        assert _close(ours[k], ref[k]), k
    assert not hasattr(np, "float"), "the np.float shim must be undone after use"
    # rare/common/frequent categories all occur in the raw file, so APr/APc/APf are defined here
    assert all(not math.isnan(ours[k]) for k in ("APr", "APc", "APf"))


def test_ap_star_perfect_is_one(lvis_gt):
    res = [{"image_id": a["image_id"], "category_id": a["category_id"], "segmentation": a["segmentation"],
            "score": 1.0} for a in lvis_gt["annotations"]]
    r = lvis_ap(lvis_gt, _val(lvis_gt, res))["summary"]
    assert r["AP"] == pytest.approx(1.0, abs=1e-12)
    assert math.isnan(r["APr"]) and math.isnan(r["APc"])  # all 69 cocofied classes are frequent (golden README)


def test_empty_results_give_zeros_and_warning(coco_gt, lvis_gt):
    with pytest.warns(EmptyResultsWarning, match="empty"):
        res = validate_results([], coco_gt, "empty.json")
    assert res == []
    assert all(v == 0.0 for v in coco_mask_ap(coco_gt, res)["summary"].values())
    assert all(v == 0.0 for v in boundary_ap(coco_gt, res)["summary"].values())
    assert all(v == 0.0 for v in lvis_ap(lvis_gt, res)["summary"].values())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        json.dumps(coco_mask_ap(coco_gt, res))

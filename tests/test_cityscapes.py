"""Cityscapes: GT conversion, official AP (cityscapesscripts 2.3.0) and COCO-style AP (docs/evaluation.md §5, §13 D).

Real Cityscapes data cannot be bundled, so every test builds small synthetic ``*_gtFine_instanceIds.png``
frames (256×128 px, two cities, three images) in a temp dir. The hand-made scene contains group regions
(id < 1000), GT instances under 100 px (and one of exactly 100 px), void pixels, a duplicate prediction, an
empty mask, score ties, classes without GT and a class whose only prediction lies on void. The official
numbers are checked against values derived by hand and against an independent re-implementation of
docs/evaluation.md §5.1 (``_reference_official``) computed exactly with fractions.
"""

from __future__ import annotations

import json
import math
import os
from fractions import Fraction

import numpy as np
import pytest
from PIL import Image

from eval.cityscapes import (
    CITYSCAPES_CLASSES,
    cityscapes_coco_style_ap,
    cityscapes_official_ap,
    instance_ids_to_coco,
)
from eval.masks import mask_to_rle

H, W = 128, 256
OVERLAPS = np.arange(0.5, 1.0, 0.05)  # the official thresholds (cityscapesscripts args.overlaps)
LABEL_TO_CAT = {label_id: cat_id for cat_id, _, label_id in CITYSCAPES_CLASSES}
LABEL_TO_NAME = {label_id: name for _, name, label_id in CITYSCAPES_CLASSES}
# cityscapesscripts labels with ignoreInEval (their raw pixel values are "void" for the official metric)
VOID_IDS = [0, 1, 2, 3, 4, 5, 6, 9, 10, 14, 15, 16, 18, 29, 30, -1]

ROAD, STATIC, OUT_OF_ROI, UNLABELED = 7, 4, 3, 0


def _box(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def _scene() -> tuple[dict[str, np.ndarray], dict[str, list[tuple[int, float, np.ndarray]]]]:
    """GT instanceIds arrays and predictions ``(label_id, score, mask)`` per image stem ``<city>/<stem>``."""
    gts: dict[str, np.ndarray] = {}
    preds: dict[str, list[tuple[int, float, np.ndarray]]] = {}

    # --- aachen_000000_000019 ---------------------------------------------------------------------------
    a = np.full((H, W), ROAD, np.int64)
    a[100:128, :] = STATIC                # void strip (static, ignoreInEval)
    a[10:30, 10:30] = 26000               # car, 400 px
    a[10:20, 40:70] = 26001               # car, 300 px
    a[40:60, 10:50] = 26                  # car group region, 800 px (iscrowd)
    a[70:78, 10:20] = 24000               # person, 80 px (< 100: not evaluated)
    a[70:90, 40:55] = 24001               # person, 300 px
    a[40:60, 100:115] = 25000             # rider, 300 px (never predicted)
    a[10:30, 200:220] = 29000             # caravan: ignoreInEval, skipped by the converter
    gts["aachen/aachen_000000_000019"] = a
    b2 = _box(70, 76, 10, 17) | _box(70, 78, 20, 21)  # 42 px on the small person + 8 px road
    preds["aachen/aachen_000000_000019"] = [
        (26, 0.9, _box(10, 30, 10, 30)),   # a1: car 26000 exact
        (26, 0.6, _box(10, 30, 12, 32)),   # a2: duplicate of 26000, IoU 360/440
        (26, 0.95, _box(40, 60, 10, 50)),  # a3: the car group region exactly -> never counted
        (26, 0.7, _box(96, 121, 100, 120)),  # a4: 420/500 px on void -> ignored for θ < 0.84, else FP
        (26, 0.8, _box(10, 20, 40, 65)),   # a5: car 26001, IoU 250/300
        (24, 0.8, _box(70, 78, 10, 20)),   # b1: the small person exactly -> never counted
        (24, 0.75, b2),                    # b2: IoU 42/88 with the small person; ignore fraction 0.84
        (24, 0.5, _box(70, 90, 40, 54)),   # b3: person 24001, IoU 280/300
    ]

    # --- aachen_000001_000019 ---------------------------------------------------------------------------
    b = np.full((H, W), ROAD, np.int64)
    b[:, 0:20] = UNLABELED                # void column
    b[20:60, 60:110] = 26000              # car, 2000 px
    b[80:90, 150:160] = 26002             # car, exactly 100 px (evaluated)
    b[100:109, 200:211] = 26003           # car, 99 px (not evaluated)
    gts["aachen/aachen_000001_000019"] = b
    c6 = _box(100, 109, 200, 211) | _box(109, 110, 200, 221)  # small car (99 px) + 21 px road
    preds["aachen/aachen_000001_000019"] = [
        (26, 0.6, _box(20, 60, 60, 110)),  # c1: car 26000 exact (score tie with a2)
        (26, 0.3, _box(80, 90, 150, 160)),  # c2: car 26002 exact
        (26, 0.85, _box(5, 15, 120, 140)),  # c3: car FP on road
        (27, 0.9, _box(5, 15, 200, 220)),  # c4: truck FP (truck has no GT -> NaN)
        (26, 0.99, np.zeros((H, W), bool)),  # c5: empty mask (skipped by the official script)
        (26, 0.4, c6),                     # c6: IoU 99/120 with the small car; ignore fraction 0.825
    ]

    # --- bochum_000000_000019 ---------------------------------------------------------------------------
    c = np.full((H, W), ROAD, np.int64)
    c[0:20, 200:256] = OUT_OF_ROI         # void
    c[30:50, 30:40] = 24000               # person, 200 px, never predicted (hard FN)
    c[60:80, 60:100] = 33                 # bicycle group only: bicycle has no evaluated GT
    c[90:110, 150:250] = 31000            # train, 2000 px
    gts["bochum/bochum_000000_000019"] = c
    preds["bochum/bochum_000000_000019"] = [
        (33, 0.5, _box(60, 80, 60, 100)),  # bicycle on its group region -> never counted
        (31, 0.7, _box(0, 20, 200, 230)),  # train entirely on void: ignored; the library alone would crash
    ]
    return gts, preds


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("cityscapes")
    gt_fine = root / "gtFine"
    gts, preds = _scene()
    for key, arr in gts.items():
        city, stem = key.split("/")
        (gt_fine / "val" / city).mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr.astype(np.uint16)).save(gt_fine / "val" / city / f"{stem}_gtFine_instanceIds.png")
    gt = instance_ids_to_coco(gt_fine, out_json=root / "annotations" / "instancesonly_filtered_gtFine_val.json")
    img_ids = {img["file_name"].replace("_leftImg8bit.png", ""): img["id"] for img in gt["images"]}
    results = [
        {"image_id": img_ids[key], "category_id": LABEL_TO_CAT[label], "score": score,
         "segmentation": mask_to_rle(mask)}
        for key, plist in preds.items() for label, score, mask in plist
    ]
    return {"root": root, "gt_fine": gt_fine, "gt": gt, "gts": gts, "preds": preds, "results": results}


# ---------------------------------------------------------------------------------------------------------
# Independent implementation of the official metric (docs/evaluation.md §5.1), exact with fractions
# ---------------------------------------------------------------------------------------------------------


def _step_ap(y: list[tuple[int, float]], hard_fns: int) -> Fraction:
    """Raw step integration of the precision/recall points at the unique scores plus (r=0, p=1)."""
    n_true = sum(t for t, _ in y) + hard_fns
    prec: list[Fraction] = []
    rec: list[Fraction] = []
    for s in sorted({s for _, s in y}):
        tp = sum(1 for t, sc in y if t and sc >= s)
        fp = sum(1 for t, sc in y if not t and sc >= s)
        prec.append(Fraction(tp, tp + fp))
        rec.append(Fraction(tp, n_true))
    prec.append(Fraction(1))
    rec.append(Fraction(0))
    padded = [rec[0]] + rec + [Fraction(0)]
    return sum((p * (padded[i] - padded[i + 2]) / 2 for i, p in enumerate(prec)), Fraction(0))


def _reference_official(gts: dict[str, np.ndarray], preds: dict) -> dict[int, list[float]]:
    """AP[label][θ] per docs/evaluation.md §5.1: IoU > θ, ≥ 100 px GT, ignore fraction ≤ θ ⇒ FP, raw step AP."""
    out: dict[int, list[float]] = {}
    for label in LABEL_TO_NAME:
        row = []
        for theta in OVERLAPS:
            y: list[tuple[int, float]] = []
            hard_fns, have_gt, have_pred = 0, False, False
            for key, gt in gts.items():
                void = np.isin(gt, VOID_IDS)
                ids = [int(v) for v in np.unique(gt) if (v // 1000 if v >= 1000 else v) == label]
                inst = {v: gt == v for v in ids}
                evaluated = [v for v in ids if v >= 1000 and inst[v].sum() >= 100]
                plist = [(s, m) for lab, s, m in preds.get(key, []) if lab == label and m.any()]
                have_gt |= bool(evaluated)
                have_pred |= bool(plist)

                def iou(m: np.ndarray, v: int, inst=inst) -> Fraction:
                    inter = int((m & inst[v]).sum())
                    return Fraction(inter, int(m.sum()) + int(inst[v].sum()) - inter)

                for v in evaluated:  # best-scored prediction with IoU > θ is the TP, the others FPs
                    scores = sorted((s for s, m in plist if iou(m, v) > theta), reverse=True)
                    if scores:
                        y.append((1, scores[0]))
                        y.extend((0, s) for s in scores[1:])
                    else:
                        hard_fns += 1
                for s, m in plist:  # predictions overlapping no same-class GT region with IoU > θ
                    if any(iou(m, v) > theta for v in ids):
                        continue
                    ignored = int((m & void).sum())
                    for v in ids:  # group regions and small instances (a small group would count twice)
                        inter = int((m & inst[v]).sum())
                        ignored += inter * ((v < 1000) + (inst[v].sum() < 100))
                    if Fraction(ignored, int(m.sum())) <= theta:
                        y.append((0, s))
            if have_gt and have_pred:
                row.append(float(_step_ap(y, hard_fns)))
            else:
                row.append(0.0 if have_gt else math.nan)
        out[label] = row
    return out


# ---------------------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------------------


def test_converter_on_hand_made_image(scene: dict) -> None:
    gt = scene["gt"]
    assert gt["categories"] == [{"id": c, "name": n} for c, n in
                                [(1, "person"), (2, "rider"), (3, "car"), (4, "truck"), (5, "bus"), (6, "train"),
                                 (7, "motorcycle"), (8, "bicycle")]]
    assert [img["file_name"] for img in gt["images"]] == [
        "aachen/aachen_000000_000019_leftImg8bit.png",
        "aachen/aachen_000001_000019_leftImg8bit.png",
        "bochum/bochum_000000_000019_leftImg8bit.png",
    ]
    assert [img["id"] for img in gt["images"]] == [1, 2, 3]
    assert all(img["height"] == H and img["width"] == W for img in gt["images"])

    anns = [a for a in gt["annotations"] if a["image_id"] == 1]
    # np.unique order of ids >= 24: group 26, 24000, 24001, 25000, 26000, 26001 (caravan 29000 skipped)
    got = [(a["category_id"], a["iscrowd"], a["area"], a["bbox"]) for a in anns]
    assert got == [
        (3, 1, 800, [10.0, 40.0, 40.0, 20.0]),
        (1, 0, 80, [10.0, 70.0, 10.0, 8.0]),
        (1, 0, 300, [40.0, 70.0, 15.0, 20.0]),
        (2, 0, 300, [100.0, 40.0, 15.0, 20.0]),
        (3, 0, 400, [10.0, 10.0, 20.0, 20.0]),
        (3, 0, 300, [40.0, 10.0, 30.0, 10.0]),
    ]
    ids = [a["id"] for a in gt["annotations"]]
    assert ids == list(range(1, len(ids) + 1))  # never id 0 (pycocotools treats 0 as "unmatched")
    a_img = scene["gts"]["aachen/aachen_000000_000019"]
    for a, inst_id in zip(anns, [26, 24000, 24001, 25000, 26000, 26001]):
        from eval.masks import rle_to_mask

        m = rle_to_mask({"size": a["segmentation"]["size"], "counts": a["segmentation"]["counts"].encode()})
        assert np.array_equal(m.astype(bool), a_img == inst_id)
        assert a["area"] == int((a_img == inst_id).sum())
    # image 3: person, bicycle group, train
    assert [(a["category_id"], a["iscrowd"]) for a in gt["annotations"] if a["image_id"] == 3] == [
        (8, 1), (1, 0), (6, 0)]

    out = scene["root"] / "annotations" / "instancesonly_filtered_gtFine_val.json"
    assert json.loads(out.read_text()) == gt
    assert os.listdir(out.parent) == [out.name]  # the atomic write left no temp file


def test_converter_missing_split_raises(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="val"):
        instance_ids_to_coco(tmp_path)


def test_perfect_predictions(scene: dict) -> None:
    gt = scene["gt"]
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "score": 1.0,
                "segmentation": a["segmentation"]} for a in gt["annotations"] if not a["iscrowd"]]
    off = cityscapes_official_ap(scene["gt_fine"], gt, perfect)
    assert off["AP"] == 1.0 and off["AP50"] == 1.0
    with_gt = {"person", "rider", "car", "train"}
    for name, v in off["per_class"].items():
        assert v == ({"AP": 1.0, "AP50": 1.0} if name in with_gt else {"AP": None, "AP50": None}), name
    coco = cityscapes_coco_style_ap(gt, perfect)
    assert coco["AP"] == coco["AP50"] == coco["AP75"] == 1.0
    # pycocotools divides by tp + fp + eps, so "1.0" can come out as 0.9999999999999998
    assert coco["APs"] == pytest.approx(1.0, abs=1e-12) and coco["APm"] == pytest.approx(1.0, abs=1e-12)
    assert coco["APl"] is None  # no GT above 96² px
    assert coco["per_class"]["car"] == 1.0 and coco["per_class"]["bus"] is None


def test_empty_predictions(scene: dict) -> None:
    off = cityscapes_official_ap(scene["gt_fine"], scene["gt"], [])
    assert off["AP"] == 0.0 and off["AP50"] == 0.0
    assert off["per_class"]["car"] == {"AP": 0.0, "AP50": 0.0}
    assert off["per_class"]["bicycle"] == {"AP": None, "AP50": None}  # group region only: no GT
    coco = cityscapes_coco_style_ap(scene["gt"], [])
    assert coco["AP"] == 0.0 and coco["no_detections"] is True and coco["APl"] is None


def test_hand_constructed_case_matches_reference(scene: dict, tmp_path, monkeypatch, caplog) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    from cityscapesscripts.evaluation import evalInstanceLevelSemanticLabeling as cs_eval

    before = (cs_eval.np, cs_eval.writeDict2JSON, cs_eval.printError)
    had_in1d = hasattr(np, "in1d")
    with caplog.at_level("WARNING", logger="eval.cityscapes"):
        off = cityscapes_official_ap(scene["gt_fine"], scene["gt"], scene["results"])
    # the train prediction lies on void and no train GT is matched: unshimmed, the library raises IndexError
    assert any("10 (class, overlap) cell(s)" in r.getMessage() for r in caplog.records)
    assert os.listdir(cwd) == []  # no matches.json / gtInstances.json / export file in the cwd
    assert (cs_eval.np, cs_eval.writeDict2JSON, cs_eval.printError) == before  # shims removed
    assert hasattr(np, "in1d") == had_in1d  # numpy itself was never patched

    # values derived by hand at θ = 0.5 (see _scene): car 57/80, person 1/2, rider 0, train 0, others NaN
    assert off["per_class"]["car"]["AP50"] == pytest.approx(0.7125, abs=1e-12)
    assert off["per_class"]["person"]["AP50"] == pytest.approx(0.5, abs=1e-12)
    assert off["per_class"]["rider"] == {"AP": 0.0, "AP50": 0.0}
    assert off["per_class"]["train"] == {"AP": 0.0, "AP50": 0.0}
    for name in ("truck", "bus", "motorcycle", "bicycle"):
        assert off["per_class"][name] == {"AP": None, "AP50": None}
        assert off["ap_matrix"][name] == [None] * 10
    assert off["AP50"] == pytest.approx((0.7125 + 0.5) / 4, abs=1e-12)

    # full AP matrix vs the independent implementation of docs/evaluation.md §5.1
    ref = _reference_official(scene["gts"], scene["preds"])
    assert off["overlaps"] == pytest.approx(OVERLAPS.tolist(), abs=0)
    for label, name in LABEL_TO_NAME.items():
        got = [math.nan if v is None else v for v in off["ap_matrix"][name]]
        np.testing.assert_allclose(got, ref[label], rtol=0, atol=1e-12, err_msg=name)
    mat = np.array([ref[label] for label in LABEL_TO_NAME])
    assert off["AP"] == pytest.approx(float(np.nanmean(mat)), abs=1e-12)
    assert off["AP50"] == pytest.approx(float(np.nanmean(mat[:, 0])), abs=1e-12)
    # the step integration is not the COCO one: the car curve differs across thresholds
    assert len({round(v, 12) for v in off["ap_matrix"]["car"]}) > 1


def test_coco_style_uses_mask_area_not_bbox(scene: dict) -> None:
    plain = cityscapes_coco_style_ap(scene["gt"], scene["results"])
    with_box = [dict(r, bbox=[0.0, 0.0, float(W), float(H)]) for r in scene["results"]]
    boxed = cityscapes_coco_style_ap(scene["gt"], with_box)
    assert boxed == plain
    assert 0.0 < plain["AP"] < 1.0 and plain["AP75"] is not None
    assert "bbox" in with_box[0]  # inputs untouched


def test_unknown_image_id_raises(scene: dict) -> None:
    bad = scene["results"][:2] + [dict(scene["results"][0], image_id=987654)]
    with pytest.raises(ValueError, match="987654"):
        cityscapes_official_ap(scene["gt_fine"], scene["gt"], bad)
    with pytest.raises(ValueError, match="987654"):
        cityscapes_coco_style_ap(scene["gt"], bad)


def test_wrong_mask_size_raises(scene: dict) -> None:
    bad = [dict(scene["results"][0], segmentation=mask_to_rle(np.ones((H // 2, W // 2), bool)))]
    with pytest.raises(ValueError, match="image size"):
        cityscapes_official_ap(scene["gt_fine"], scene["gt"], bad)

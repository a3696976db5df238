"""The fast results reader (``eval.io.read_results``) against the reference path it stands in for.

The reference is ``validate_results(load_json(path))``: the fast path (msgspec typed decoding, column-wise checks,
the compiled RLE checker) must give the same detections on every valid file and never accept a file the
reference refuses; on a refused file the reference path runs and raises its own message.
"""

from __future__ import annotations

import copy
import json
import warnings

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from eval import io as eio
from eval.detections import Detections
from eval.evaluator import EvalParams, InstanceSegEvaluator
from tests.constructed import constructed_set
from tests.helpers import COCO_VAL_GT, LVIS_COCOFIED


def _write(tmp_path, obj, name="results.json"):
    p = tmp_path / name
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return p


def _reference(path, gt, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", eio.EmptyResultsWarning)
        return Detections.from_records(eio.validate_results(eio.load_json(path, "results"), gt, path, **kw))


def _same(a: Detections, b: Detections):
    assert len(a) == len(b)
    assert list(a) == list(b)  # the normalised dicts, field by field
    for k in ("image_id", "category_id", "score", "height", "width", "mask_box", "mask_area"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k), err_msg=k)
    assert a.counts == b.counts
    assert (a.bbox is None) == (b.bbox is None)
    if a.bbox is not None:
        np.testing.assert_array_equal(a.bbox, b.bbox)


def test_valid_files_take_the_fast_path_and_equal_the_reference(tmp_path, coco_gt, preds_a, lvis_gt):
    p = _write(tmp_path, preds_a)
    fast = eio._read_results_fast(p, coco_gt, False, None)
    assert fast is not None and len(fast) == len(preds_a) > 500
    _same(fast, _reference(p, coco_gt))
    _same(eio.read_results(p, coco_gt), fast)
    # boxes from the compiled checker are pycocotools' own
    np.testing.assert_array_equal(fast.mask_box, mask_utils.toBbox([fast.rle(i) for i in range(len(fast))]))
    # --keep-bbox: kept boxes, the reference keeps them too
    with_box = [dict(r, bbox=[1.0, 2.0, 3.5, 4.0]) for r in preds_a[:40]]
    p2 = _write(tmp_path, with_box, "boxes.json")
    fast = eio._read_results_fast(p2, coco_gt, True, None)
    assert fast is not None and fast.bbox.shape == (40, 4)
    _same(fast, _reference(p2, coco_gt, keep_bbox=True))
    _same(eio._read_results_fast(p2, coco_gt, False, None), _reference(p2, coco_gt))  # dropped without the flag
    # AP*: COCO ids against a cocofied LVIS file
    imgs = {im["id"] for im in lvis_gt["images"]}
    p3 = _write(tmp_path, [r for r in preds_a if r["image_id"] in imgs], "lvis.json")
    fast = eio._read_results_fast(p3, lvis_gt, False, eio.COCO_CATEGORY_IDS)
    assert fast is not None
    _same(fast, _reference(p3, lvis_gt, category_ids=eio.COCO_CATEGORY_IDS))


def test_polygons_and_uncompressed_rle_go_the_reference_way_with_equal_results(tmp_path):
    gt, results = constructed_set(1)
    assert any(isinstance(r["segmentation"], list) for r in results)
    p = _write(tmp_path, results)
    assert eio._read_results_fast(p, gt, False, None) is None
    _same(eio.read_results(p, gt), _reference(p, gt))


def _mutations(preds: list[dict]):
    """(name, results) that the reference refuses, each a small edit of a valid list."""
    r0 = preds[0]
    seg = r0["segmentation"]

    def one(**kw):
        out = copy.deepcopy(preds[:20])
        out[7] = {**out[7], **kw}
        return out

    yield "image id bool", one(image_id=True)
    yield "image id float", one(image_id=139.0)
    yield "image id string", one(image_id="139")
    yield "image id list", one(image_id=[139])
    yield "image id unknown", one(image_id=123456789)
    yield "image id beyond int64", one(image_id=2 ** 70)
    yield "category unknown", one(category_id=12345)
    yield "category bool", one(category_id=False)
    yield "score over 1", one(score=1.5)
    yield "score negative", one(score=-0.1)
    yield "score string", one(score="0.5")
    yield "score bool", one(score=True)
    yield "score null", one(score=None)
    yield "no segmentation", [{k: v for k, v in r.items() if k != "segmentation"} for r in preds[:3]]
    yield "rle size off", one(segmentation={"size": [seg["size"][0] + 1, seg["size"][1]], "counts": seg["counts"]})
    yield "rle size three", one(segmentation={"size": [1, 2, 3], "counts": seg["counts"]})
    yield "rle size strings", one(segmentation={"size": ["426", "640"], "counts": seg["counts"]})
    yield "rle short", one(segmentation={"size": seg["size"], "counts": seg["counts"][:-3]})
    yield "rle characters", one(segmentation={"size": seg["size"], "counts": "abc~~"})
    yield "rle non-ascii", one(segmentation={"size": seg["size"], "counts": seg["counts"][:-1] + "é"})
    q = next(r for r in preds[20:] if "?" in r["segmentation"]["counts"])  # 'é' where a '?' stood (see below)
    yield "rle non-ascii for a valid character", copy.deepcopy(preds[:20]) + [
        dict(q, segmentation={"size": q["segmentation"]["size"],
                              "counts": q["segmentation"]["counts"].replace("?", "é", 1)})]
    yield "rle size beyond int64", one(segmentation={"size": [2 ** 64 - 1, 1], "counts": seg["counts"]})
    yield "rle empty", one(segmentation={"size": seg["size"], "counts": ""})
    yield "rle counts number", one(segmentation={"size": seg["size"], "counts": 5})
    yield "uncompressed negative", one(segmentation={"size": seg["size"], "counts": [-1, 5]})
    yield "not a list", {"annotations": []}
    yield "a record not an object", copy.deepcopy(preds[:3]) + [5]
    yield "empty list", []


def _outcome(fn):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", eio.EmptyResultsWarning)
            return "ok", list(fn())
    except eio.EvalInputError as e:
        return "refused", str(e)


@pytest.mark.parametrize("keep_bbox", [False, True])
def test_every_refusal_is_the_reference_one_and_the_fast_path_never_accepts_it(tmp_path, coco_gt, preds_a,
                                                                               keep_bbox):
    cases = list(_mutations(preds_a))
    if keep_bbox:
        boxed = [dict(r, bbox=[0.0, 0.0, 5.0, 5.0]) for r in preds_a[:10]]
        cases += [("bbox missing on one", boxed[:4] + [preds_a[11]] + boxed[4:]),
                  ("bbox null", [dict(boxed[0], bbox=None)] + boxed[1:]),
                  ("bbox negative width", [dict(boxed[0], bbox=[0, 0, -1, 2])] + boxed[1:]),
                  ("bbox three numbers", [dict(boxed[0], bbox=[0, 0, 1])] + boxed[1:])]
    refused = 0
    for name, results in cases:
        p = _write(tmp_path, results)
        ref = _outcome(lambda p=p: eio.validate_results(eio.load_json(p, "results"), coco_gt, p, keep_bbox=keep_bbox))
        got = _outcome(lambda p=p: eio.read_results(p, coco_gt, keep_bbox=keep_bbox))
        assert got == ref, name
        if ref[0] == "refused" or not results:
            refused += ref[0] == "refused"
            assert eio._read_results_fast(p, coco_gt, keep_bbox, None) is None, name
    assert refused >= 20


def test_malformed_files_are_refused_as_before(tmp_path, coco_gt):
    for text, needle in (('[{"image_id": 1, "score": ', "not valid json"), ("[NaN]", "not an object"),
                         ('[{"image_id": 139, "category_id": 1, "score": NaN, "segmentation": [[1,2,3,4,5,6]]}]',
                          "score nan")):
        p = _write(tmp_path, text)
        with pytest.raises(eio.EvalInputError) as e:
            eio.read_results(p, coco_gt)
        assert needle in str(e.value).lower() and str(p) in str(e.value)
    with pytest.raises(eio.EvalInputError, match="does not exist"):
        eio.read_results(tmp_path / "missing.json", coco_gt)


def test_huge_image_is_refused_before_any_rle_is_read(coco_gt):
    coco_gt["images"][3]["height"] = 100_000
    coco_gt["images"][3]["width"] = 100_000
    with pytest.raises(eio.EvalInputError, match=r"images\[3\].*too large for COCO RLE"):
        eio.validate_gt(coco_gt, COCO_VAL_GT)


def test_process_file_scores_as_process(tmp_path, coco_gt, preds_a, lvis_gt):
    p = _write(tmp_path, preds_a)
    metrics = ["coco", "boundary_f", "boundary_acc", "boundary_ap"]
    outs = []
    for via_file in (False, True):
        ev = InstanceSegEvaluator(coco_gt, None, metrics, EvalParams(jobs=1))
        if via_file:
            ev.process_file(p)
        else:
            ev.process(json.loads(p.read_text()), source=p)
        assert isinstance(ev._coco_results, Detections)
        outs.append(ev.evaluate())
    assert outs[0].metrics == outs[1].metrics
    assert outs[0].per_instance == outs[1].per_instance
    # a COCO and an AP* ground truth from one file (split by image id), and from two files
    imgs = {im["id"] for im in lvis_gt["images"]}
    p_lvis = _write(tmp_path, [r for r in preds_a if r["image_id"] in imgs], "lvis.json")
    a = InstanceSegEvaluator(coco_gt, lvis_gt, ["coco", "ap_star"], EvalParams(jobs=1), lvis_gt_path=LVIS_COCOFIED)
    a.process(json.loads(p.read_text()), source=p, lvis_results=json.loads(p_lvis.read_text()))
    b = InstanceSegEvaluator(coco_gt, lvis_gt, ["coco", "ap_star"], EvalParams(jobs=1), lvis_gt_path=LVIS_COCOFIED)
    b.process_file(p, lvis_path=p_lvis)
    assert json.dumps(a.evaluate().metrics) == json.dumps(b.evaluate().metrics)  # NaN (no rare class) included


def test_detections_read_as_the_normalised_list(coco_gt, preds_a):
    recs = eio.validate_results(copy.deepcopy(preds_a[:30]), coco_gt)
    d = Detections.from_records(recs)
    assert len(d) == 30 and d[0] == recs[0] and d[-1] == recs[-1] and d[2:5] == recs[2:5] and list(d) == recs
    with pytest.raises(IndexError):
        d[30]
    both = Detections.concat([d, Detections.empty(), Detections.from_records(recs[:5])])
    assert list(both) == recs + recs[:5]
    # one vernier batch per image, in id order, each image's detections in list order
    batches = d.image_batches()
    assert [b["image_id"] for b in batches] == sorted({r["image_id"] for r in recs})
    for b in batches:
        mine = [r for r in recs if r["image_id"] == b["image_id"]]
        assert [rle["counts"].decode() for rle in b["rles"]] == [r["segmentation"]["counts"] for r in mine]
        np.testing.assert_array_equal(b["scores"], [r["score"] for r in mine])
    with pytest.raises(ValueError, match="bbox on 1 of 2"):
        Detections.from_records([dict(recs[0], bbox=[0, 0, 1, 1]), recs[1]])

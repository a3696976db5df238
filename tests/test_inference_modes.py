"""``rmbench infer --batch N`` (equal to batch 1) and ``--gt-boxes`` (the GT-box oracle) on the bundled COCO images.

Models are randomly initialised (seeded) with the RPN objectness and box classifier scaled up so that detections pass
the score threshold; the test scale is reduced for CPU time. Batches are formed only from images with the same
padded input size (``shape_batches``), which is what makes every record equal to batch-1 inference.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest
import torch

from refinemask.cli import main
from refinemask.data import InstanceDataset
from refinemask.engine.inference import inference_on_dataset, shape_batches
from refinemask.models import build_model
from refinemask.registry import get_preset

ROOT = Path(__file__).resolve().parents[1]
GT = ROOT / "data/coco_mini/annotations/instances_val2017.json"
IMAGES = ROOT / "data/coco_mini/val2017"


def _model(name: str, scale=(333, 200)):
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(get_preset(name), test_scale=scale)).eval()
    with torch.no_grad():
        model.rpn.head.cls_logits.weight.mul_(30)
        model.roi_heads.box_head.cls_score.weight.mul_(300)
    return model


@pytest.fixture(scope="module")
def dataset():
    ds = InstanceDataset(GT, IMAGES, with_masks=False)
    ds.images = ds.images[:7]
    return ds


@pytest.mark.parametrize("name", ["mask_rcnn_r50_fpn_1x_coco", "refinemask_r50_fpn_1x_coco"])
def test_batch_n_equals_batch_1(name, dataset):
    """At 533×320 (and at the 1333×800 test scale: measured on these 7 images, 700 records equal) oneDNN runs the
    same convolution kernels for a batch of 3 as for 1. (At 333×200 it does not: P5 is 11×7 and its 3×3 conv
    switches kernels with the batch size, ~1e-4 feature differences — see docs/models.md §6.)"""
    model = _model(name, scale=(533, 320))
    sub = copy.copy(dataset)
    sub.images = [dataset.images[i] for i in (2, 4, 5, 6)]
    batches = shape_batches(sub, range(len(sub)), 3, model.transform.test_input_size)
    assert sorted(len(b) for b in batches) == [1, 3]
    one = inference_on_dataset(model, sub, progress=False)
    three = inference_on_dataset(model, sub, progress=False, batch_size=3)
    assert len(one) == 4 * 100
    assert three == one  # every record, bit for bit (boxes, scores, RLE strings), in dataset order


def test_shape_batches_groups_by_padded_size(dataset):
    sizes = {i: (dataset.images[i]["height"], dataset.images[i]["width"]) for i in range(len(dataset))}
    model = _model("mask_rcnn_r50_fpn_1x_coco")
    for b in shape_batches(dataset, range(len(dataset)), 2, model.transform.test_input_size):
        assert len(b) <= 2 and b == sorted(b)
        assert len({model.transform.test_input_size(*sizes[i]) for i in b}) == 1
    # the padded size of the real preprocessing is what test_input_size predicts
    img = dataset.load_image(0)
    batch, _ = model.transform([img])
    assert tuple(batch.tensors.shape[-2:]) == model.transform.test_input_size(*img.shape[-2:])


def test_gt_box_oracle_one_result_per_non_crowd_gt(dataset):
    model = _model("mask_rcnn_r50_fpn_1x_coco")
    out = inference_on_dataset(model, dataset, progress=False, gt_boxes=True, batch_size=2)
    gt = json.loads(GT.read_text())
    ids = {im["id"] for im in dataset.images}
    anns = [a for a in gt["annotations"] if a["image_id"] in ids and not a.get("iscrowd", 0)]
    assert len(anns) > 20 and any(a.get("iscrowd") for a in gt["annotations"] if a["image_id"] in ids)
    assert len(out) == len(anns)
    by_id = {a["id"]: a for a in anns}
    assert sorted(r["gt_id"] for r in out) == sorted(by_id)
    for r in out:
        a = by_id[r["gt_id"]]
        assert (r["image_id"], r["category_id"], r["bbox"], r["score"]) == (a["image_id"], a["category_id"],
                                                                            a["bbox"], 1.0)
        assert r["segmentation"]["size"] == [next(im["height"] for im in dataset.images if im["id"] == a["image_id"]),
                                             next(im["width"] for im in dataset.images if im["id"] == a["image_id"])]


def test_infer_cli_gt_boxes_writes_and_evaluates(tmp_path, dataset):
    model = _model("mask_rcnn_r50_fpn_1x_coco")
    ckpt = tmp_path / "m.pth"
    torch.save({"model": model.state_dict(), "preset": "mask_rcnn_r50_fpn_1x_coco"}, ckpt)
    sub = {**json.loads(GT.read_text())}
    keep = {im["id"] for im in dataset.images[:2]}
    sub["images"] = [im for im in sub["images"] if im["id"] in keep]
    sub["annotations"] = [a for a in sub["annotations"] if a["image_id"] in keep]
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps(sub))
    out, ev = tmp_path / "oracle.json", tmp_path / "eval"
    assert main(["infer", "--preset", "mask_rcnn_r50_fpn_1x_coco", "--checkpoint", str(ckpt), "--gt", str(gt),
                 "--images", str(IMAGES), "--out", str(out), "--img-scale", "333,200", "--gt-boxes", "--batch", "2",
                 "--workers", "0", "--eval-out", str(ev)]) == 0
    recs = json.loads(out.read_text())
    assert len(recs) == sum(1 for a in sub["annotations"] if not a.get("iscrowd", 0))
    metrics = json.loads((ev / "metrics.json").read_text())
    assert metrics["run"]["boxes"] == "gt (oracle)"
    assert metrics["provenance"]["params"]["gt_boxes"] is True
    assert 0.0 <= metrics["coco"]["AP"] <= 1.0

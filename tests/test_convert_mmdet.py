"""mmdet Mask R-CNN → ours state-dict converter, on a synthetic mmdet-named state dict (no mmdet needed)."""

from __future__ import annotations

import pytest
import torch
from torchvision.models import resnet50

import refinemask
from refinemask.convert_mmdet import convert_mmdet_mask_rcnn, load_mmdet_checkpoint, read_mmdet_state_dict


def synthetic_mmdet_mask_rcnn(num_classes: int = 80, seed: int = 0) -> dict[str, torch.Tensor]:
    """Keys and shapes of mmdet's ``mask-rcnn_r50_fpn_1x_coco`` state dict, random values.

    mmdet's ``ResNet`` uses torchvision's parameter names (conv1, bn1, layerN.M.convK/bnK/downsample.{0,1}).
    """
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=g)

    sd = {}
    for k, v in resnet50().state_dict().items():
        if k.startswith("fc."):
            continue
        sd["backbone." + k] = v if k.endswith("num_batches_tracked") else rnd(*v.shape)
    for i, c in enumerate((256, 512, 1024, 2048)):
        sd[f"neck.lateral_convs.{i}.conv.weight"] = rnd(256, c, 1, 1)
        sd[f"neck.lateral_convs.{i}.conv.bias"] = rnd(256)
        sd[f"neck.fpn_convs.{i}.conv.weight"] = rnd(256, 256, 3, 3)
        sd[f"neck.fpn_convs.{i}.conv.bias"] = rnd(256)
    sd.update({
        "rpn_head.rpn_conv.weight": rnd(256, 256, 3, 3), "rpn_head.rpn_conv.bias": rnd(256),
        "rpn_head.rpn_cls.weight": rnd(3, 256, 1, 1), "rpn_head.rpn_cls.bias": rnd(3),
        "rpn_head.rpn_reg.weight": rnd(12, 256, 1, 1), "rpn_head.rpn_reg.bias": rnd(12),
        "roi_head.bbox_head.shared_fcs.0.weight": rnd(1024, 256 * 7 * 7),
        "roi_head.bbox_head.shared_fcs.0.bias": rnd(1024),
        "roi_head.bbox_head.shared_fcs.1.weight": rnd(1024, 1024),
        "roi_head.bbox_head.shared_fcs.1.bias": rnd(1024),
        "roi_head.bbox_head.fc_cls.weight": rnd(num_classes + 1, 1024),
        "roi_head.bbox_head.fc_cls.bias": rnd(num_classes + 1),
        "roi_head.bbox_head.fc_reg.weight": rnd(num_classes * 4, 1024),
        "roi_head.bbox_head.fc_reg.bias": rnd(num_classes * 4),
        "roi_head.mask_head.upsample.weight": rnd(256, 256, 2, 2),
        "roi_head.mask_head.upsample.bias": rnd(256),
        "roi_head.mask_head.conv_logits.weight": rnd(num_classes, 256, 1, 1),
        "roi_head.mask_head.conv_logits.bias": rnd(num_classes),
    })
    for i in range(4):
        sd[f"roi_head.mask_head.convs.{i}.conv.weight"] = rnd(256, 256, 3, 3)
        sd[f"roi_head.mask_head.convs.{i}.conv.bias"] = rnd(256)
    return sd


@pytest.fixture(scope="module")
def mmdet_sd():
    return synthetic_mmdet_mask_rcnn()


@pytest.fixture(scope="module")
def model():
    return refinemask.build_model("mask_rcnn_r50_fpn_1x_coco").eval()


def test_mapping_is_complete_and_exact(mmdet_sd, model):
    out = convert_mmdet_mask_rcnn(mmdet_sd)
    own = model.state_dict()
    assert set(out) == {k for k in own if not k.endswith("num_batches_tracked")}
    for k, v in out.items():
        assert v.shape == own[k].shape, k
    # spot checks of the renames
    assert out["backbone.body.layer3.5.bn2.running_var"] is mmdet_sd["backbone.layer3.5.bn2.running_var"]
    assert out["backbone.fpn.inner_blocks.3.0.weight"] is mmdet_sd["neck.lateral_convs.3.conv.weight"]
    assert out["backbone.fpn.layer_blocks.0.0.bias"] is mmdet_sd["neck.fpn_convs.0.conv.bias"]
    assert out["rpn.head.cls_logits.weight"] is mmdet_sd["rpn_head.rpn_cls.weight"]
    assert out["roi_heads.box_head.fc7.weight"] is mmdet_sd["roi_head.bbox_head.shared_fcs.1.weight"]
    assert out["roi_heads.mask_branch.convs.6.weight"] is mmdet_sd["roi_head.mask_head.convs.3.conv.weight"]
    assert out["roi_heads.mask_branch.predictor.bias"] is mmdet_sd["roi_head.mask_head.conv_logits.bias"]
    # background stays last: the class layout is copied row for row
    assert torch.equal(out["roi_heads.box_head.cls_score.weight"][-1], mmdet_sd["roi_head.bbox_head.fc_cls.weight"][-1])


def test_load_from_file_and_functional_equivalence(mmdet_sd, model, tmp_path):
    path = tmp_path / "mask_rcnn_mmdet.pth"
    # a published mmdet checkpoint: {"meta": {...}, "state_dict": {...}}
    torch.save({"meta": {"mmdet_version": "3.3.0", "CLASSES": ("person", "car")},
                "state_dict": {**mmdet_sd, "data_preprocessor.mean": torch.zeros(3, 1, 1)}}, path)
    info = load_mmdet_checkpoint(model, path)
    n_own = sum(not k.endswith("num_batches_tracked") for k in model.state_dict())
    assert info["loaded"] == n_own and "data_preprocessor.mean" in info["ignored"]
    sd = model.state_dict()
    assert torch.equal(sd["roi_heads.mask_branch.deconv.weight"], mmdet_sd["roi_head.mask_head.upsample.weight"])
    # the FCN head computes mmdet's function: conv-relu ×4 → deconv-relu → 1×1 on the same input
    x = torch.randn(2, 256, 14, 14)
    ref = x
    for i in range(4):
        ref = torch.relu(torch.nn.functional.conv2d(ref, mmdet_sd[f"roi_head.mask_head.convs.{i}.conv.weight"],
                                                    mmdet_sd[f"roi_head.mask_head.convs.{i}.conv.bias"], padding=1))
    ref = torch.relu(torch.nn.functional.conv_transpose2d(ref, mmdet_sd["roi_head.mask_head.upsample.weight"],
                                                          mmdet_sd["roi_head.mask_head.upsample.bias"], stride=2))
    ref = torch.nn.functional.conv2d(ref, mmdet_sd["roi_head.mask_head.conv_logits.weight"],
                                     mmdet_sd["roi_head.mask_head.conv_logits.bias"])
    mb = model.roi_heads.mask_branch
    with torch.no_grad():
        ours = mb.predictor(torch.relu(mb.deconv(mb.convs(x))))
    # unit-variance random weights grow activations to ~1e10: float32 reordering (NHWC convs) is relative to that
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5 * float(ref.abs().max()))


def test_errors_name_the_keys(mmdet_sd, model, tmp_path):
    extra = {**mmdet_sd, "roi_head.semantic_head.conv.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match="roi_head.semantic_head.conv.weight"):
        convert_mmdet_mask_rcnn(extra)
    missing = {k: v for k, v in mmdet_sd.items() if not k.startswith("rpn_head.rpn_reg")}
    with pytest.raises(ValueError, match=r"missing from the checkpoint: rpn\.head\.bbox_pred\.bias"):
        load_mmdet_checkpoint(model, missing)
    lvis = synthetic_mmdet_mask_rcnn(num_classes=1203)
    with pytest.raises(ValueError, match=r"cls_score\.weight: checkpoint \(1204, 1024\) vs model \(81, 1024\)"):
        load_mmdet_checkpoint(model, lvis)
    v1 = {**mmdet_sd, "roi_head.bbox_head.fc_reg.weight": torch.zeros(81 * 4, 1024)}
    with pytest.raises(ValueError, match="mmdet 1.x"):
        convert_mmdet_mask_rcnn(v1)
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        load_mmdet_checkpoint(model, tmp_path / "nowhere.pth")


class _Arbitrary:  # pickled by value: weights_only=True must refuse it
    pass


def test_weights_only_refuses_arbitrary_pickles(tmp_path):
    path = tmp_path / "train_ckpt.pth"
    torch.save({"state_dict": {"a": torch.zeros(1)}, "message_hub": _Arbitrary()}, path)
    with pytest.raises(ValueError, match="weights_only=True"):
        read_mmdet_state_dict(path)
    ok = tmp_path / "plain.pth"
    torch.save({"a": torch.zeros(1)}, ok)
    assert set(read_mmdet_state_dict(ok)) == {"a"}

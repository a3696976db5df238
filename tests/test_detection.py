"""Shared two-stage trunk and the Mask R-CNN baseline (docs/models.md §1, §3, §7; architecture "mask-branch protocol").

CPU only, small inputs; the whole file runs in well under a minute on 2 cores.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torchvision
from pycocotools import mask as mask_utils

from refinemask import build_model, count_parameters, list_presets
from refinemask.detection import (
    FCNMaskBranch,
    MaskBranch,
    MultiLevelRoIAlign,
    RegionProposalNetwork,
    ResNetFPN,
    encode_rle,
    load_backbone_weights,
    map_roi_levels,
    mask_targets,
    max_iou_assign,
    paste_masks,
    rescale_size,
)
from refinemask.detection.mask_branch import RoIBatch
from refinemask.registry import get_preset
from tests.helpers import ROOT, load_coco_sample

VAL_DIR = ROOT / "data" / "coco_mini" / "val2017"
VAL_JSON = ROOT / "data" / "coco_mini" / "annotations" / "instances_val2017.json"

# docs/models.md §7: Mask R-CNN R50-FPN, mmdet layout (cls 81, reg 80·4, mask 80)
R50_PARAMS_BN_AFFINE = 44_396_336  # our default convention: BN eval-mode with trainable γ/β (mmdet)
R50_PARAMS_FROZEN_BN = 44_343_216  # torchvision FrozenBatchNorm2d convention (γ/β are buffers)
R50_BODY_PARAMS = 23_508_032  # ResNet-50 without fc: 23,454,912 conv + 53,120 BN (docs/models.md §7 building blocks)



# ----------------------------------------------------------------------------------------------------------------
# presets, builder, parameter counts
# ----------------------------------------------------------------------------------------------------------------
def _meta_model(preset):
    with torch.device("meta"):
        return build_model(preset)


def test_list_presets_and_unknown_name():
    required = {
        "mask_rcnn_r50_fpn_1x_coco", "mask_rcnn_r50_fpn_2x_coco", "mask_rcnn_r101_fpn_1x_coco",
        "mask_rcnn_r101_fpn_2x_coco", "mask_rcnn_x101_fpn_3x_ms_coco", "mask_rcnn_r50_fpn_1x_lvis",
        "mask_rcnn_r50_fpn_cityscapes",
    }
    assert required <= set(list_presets())
    with pytest.raises(KeyError) as e:
        build_model("mask_rcnn_r18_fpn_1x_coco")
    assert "mask_rcnn_r50_fpn_1x_coco" in str(e.value) and "known presets" in str(e.value)


def test_preset_values():
    p = get_preset("mask_rcnn_r50_fpn_1x_coco")
    assert (p.num_classes, p.schedule.epochs, p.schedule.lr_steps, p.base_lr) == (80, 12, (8, 11), 0.02)
    assert (p.schedule.warmup_iters, p.schedule.warmup_ratio, p.schedule.grad_clip_norm) == (500, 0.001, None)
    assert (p.score_thresh, p.max_dets, p.test_scale, p.norm, p.frozen_stages) == (0.05, 100, (1333, 800), "bn_eval", 1)
    assert p.rpn.post_nms_top_n_train == 1000 and p.rpn.loss_bbox == "l1" and p.roi.loss_bbox == "l1"
    assert get_preset("mask_rcnn_r101_fpn_2x_coco").schedule.lr_steps == (16, 22)
    x = get_preset("mask_rcnn_x101_fpn_3x_ms_coco")
    assert (x.backbone, x.schedule.epochs, x.multiscale_mode) == ("resnext101_64x4d", 36, "range")
    assert sorted(min(s) for s in x.train_scales) == [640, 800]
    lvis = get_preset("mask_rcnn_r50_fpn_1x_lvis")  # paper Table 9: LVIS v1.0
    assert (lvis.num_classes, lvis.score_thresh, lvis.max_dets, lvis.dataset) == (1203, 1e-4, 300, "lvis_v1")
    cs = get_preset("mask_rcnn_r50_fpn_cityscapes")  # paper Table 11: 64 epochs, [800, 1024]
    assert (cs.num_classes, cs.schedule.effective_epochs, cs.test_scale) == (8, 64, (2048, 1024))
    assert sorted(min(s) for s in cs.train_scales) == [800, 1024] and cs.multiscale_mode == "range"
    assert cs.schedule.lr_for_batch(16) == pytest.approx(0.02)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.num_classes = 81  # type: ignore[misc]


def test_param_count_r50_matches_spec():
    model = _meta_model("mask_rcnn_r50_fpn_1x_coco")
    assert count_parameters(model) == R50_PARAMS_BN_AFFINE
    frozen = _meta_model(dataclasses.replace(get_preset("mask_rcnn_r50_fpn_1x_coco"), norm="frozen_bn"))
    assert count_parameters(frozen) == R50_PARAMS_FROZEN_BN
    parts = {
        "backbone.body": R50_BODY_PARAMS, "backbone.fpn": 3_344_384, "rpn": 593_935,
        "roi_heads.box_head": 14_306_705, "roi_heads.mask_branch": 2_643_280,
    }
    for name, n in parts.items():
        assert count_parameters(model.get_submodule(name)) == n, name


@pytest.mark.parametrize(
    "preset, weights",
    [
        ("mask_rcnn_r101_fpn_1x_coco", torchvision.models.ResNet101_Weights.IMAGENET1K_V1),
        ("mask_rcnn_x101_fpn_3x_ms_coco", torchvision.models.ResNeXt101_64X4D_Weights.IMAGENET1K_V1),
    ],
)
def test_param_count_deeper_backbones(preset, weights):
    # docs/models.md §7 gives no R101/X101 totals: swap the backbone in the R50 count, using torchvision's published
    # ImageNet parameter counts minus the 2048·1000 + 1000 classifier
    body = weights.meta["num_params"] - 2_049_000
    assert count_parameters(_meta_model(preset)) == R50_PARAMS_BN_AFFINE - R50_BODY_PARAMS + body
    # 63,388,464 (R101) and 102,294,576 (X101-64x4d)


# ----------------------------------------------------------------------------------------------------------------
# backbone weights
# ----------------------------------------------------------------------------------------------------------------
def test_load_backbone_weights(tmp_path):
    backbone = ResNetFPN("resnet50")
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_backbone_weights(backbone, missing)
    sd = torchvision.models.resnet50(weights=None).state_dict()
    good = tmp_path / "r50.pth"
    torch.save(sd, good)
    info = load_backbone_weights(backbone, good)
    assert info["ignored"] == ["fc.bias", "fc.weight"]
    assert torch.equal(backbone.body.layer3[2].conv2.weight, sd["layer3.2.conv2.weight"])
    bad_sd = {("extra." + k if k == "conv1.weight" else k): v for k, v in sd.items()}
    bad = tmp_path / "bad.pth"
    torch.save(bad_sd, bad)
    with pytest.raises(ValueError) as e:
        load_backbone_weights(backbone, bad)
    assert "bad.pth" in str(e.value) and "conv1.weight" in str(e.value) and "extra.conv1.weight" in str(e.value)


# ----------------------------------------------------------------------------------------------------------------
# paste, targets, RLE
# ----------------------------------------------------------------------------------------------------------------
def _paste_reference(mask: np.ndarray, box, h: int, w: int) -> np.ndarray:
    """Explicit bilinear paste: pixel centre → mask coordinate (u+0.5−x1)/bw·S − 0.5, zeros outside the map."""
    sh, sw = mask.shape
    x1, y1, x2, y2 = box
    out = np.zeros((h, w))

    def at(i, j):
        return mask[i, j] if 0 <= i < sh and 0 <= j < sw else 0.0

    for y in range(h):
        for x in range(w):
            mx = (x + 0.5 - x1) / (x2 - x1) * sw - 0.5
            my = (y + 0.5 - y1) / (y2 - y1) * sh - 0.5
            j0, i0 = math.floor(mx), math.floor(my)
            fx, fy = mx - j0, my - i0
            out[y, x] = ((1 - fy) * ((1 - fx) * at(i0, j0) + fx * at(i0, j0 + 1))
                         + fy * ((1 - fx) * at(i0 + 1, j0) + fx * at(i0 + 1, j0 + 1)))
    return out


def test_paste_masks_matches_bruteforce_bilinear():
    masks = torch.tensor([[[0.9, 0.2], [0.4, 1.0]], [[1.0, 0.0], [0.0, 1.0]], [[0.3, 0.7], [0.6, 0.1]]])
    boxes = torch.tensor([[2.3, 1.7, 7.9, 6.2], [-3.0, 5.5, 4.0, 12.0], [0.0, 0.0, 10.0, 10.0]])
    out = paste_masks(masks, boxes, (10, 10))
    assert out.shape == (3, 10, 10) and out.dtype == torch.float32
    for k in range(3):
        ref = _paste_reference(masks[k].numpy().astype(np.float64), boxes[k].tolist(), 10, 10)
        np.testing.assert_allclose(out[k].numpy(), ref, atol=1e-5)
    # degenerate (zero-width) box pastes nothing
    assert paste_masks(masks[:1], torch.tensor([[3.0, 2.0, 3.0, 8.0]]), (10, 10)).abs().max() == 0
    assert paste_masks(masks[:0], boxes[:0], (4, 5)).shape == (0, 4, 5)


def test_mask_targets_box_shaped_gt_is_all_ones():
    gt = torch.zeros(2, 240, 250, dtype=torch.uint8)
    gt[0, 5:125, 10:142] = 1  # box [10, 5, 142, 125] (132 × 120 px)
    gt[1, :, :125] = 1  # left half of the image
    boxes = torch.tensor([[10.0, 5.0, 142.0, 125.0], [0.0, 0.0, 250.0, 240.0], [-10.0, -10.0, 125.0, 300.0]])
    for size in (7, 14, 28, 56, 112):
        t = mask_targets(gt, boxes, torch.tensor([0, 1, 1]), size)
        assert t.shape == (3, size, size) and set(t.unique().tolist()) <= {0.0, 1.0}
        assert t[0].min() == 1  # GT box-shaped mask → all-ones target
        assert t[1, :, : size // 2].min() == 1 and t[1, :, size // 2 + 1:].max() == 0  # left half
        assert t[2].min() == 1  # box clipped to the mask: [0, 0, 25, 40] is all foreground
    assert mask_targets(gt, boxes[:0], torch.zeros(0, dtype=torch.long), 28).shape == (0, 28, 28)
    # mmdet caveat: when an output cell spans < ~0.5 px (112 cells on a 20-px side), bilinear sampling at the
    # corners falls below 0.5 and the corner cells of a box-shaped GT become 0
    small = torch.zeros(1, 40, 50)
    small[0, 5:25, 10:42] = 1
    t = mask_targets(small, torch.tensor([[10.0, 5.0, 42.0, 25.0]]), torch.tensor([0]), 112)
    assert t[0, 0, 0] == 0 and t[0, 1:-1, 1:-1].min() == 1


def test_encode_rle_roundtrip():
    m = torch.zeros(2, 7, 9, dtype=torch.bool)
    m[0, 1:4, 2:8] = True
    m[1, 5:, :3] = True
    rles = encode_rle(m)
    assert all(isinstance(r["counts"], str) and r["size"] == [7, 9] for r in rles)
    dec = mask_utils.decode([{"size": r["size"], "counts": r["counts"].encode()} for r in rles])
    np.testing.assert_array_equal(dec.transpose(2, 0, 1), m.numpy())


# ----------------------------------------------------------------------------------------------------------------
# pooler levels, assignment
# ----------------------------------------------------------------------------------------------------------------
def test_roi_level_mapping_matches_mmdet_rule():
    # mmdet SingleRoIExtractor: floor(log2(sqrt(wh) / 56 + 1e-6)) clamped to [0, 3]
    sides = [16.0, 111.9, 112.0, 223.9, 224.0, 447.9, 448.0, 1300.0]
    expected = [0, 0, 1, 1, 2, 2, 3, 3]
    boxes = torch.tensor([[5.0, 7.0, 5.0 + s, 7.0 + s] for s in sides])
    assert map_roi_levels(boxes).tolist() == expected
    # non-square: sqrt(w·h) matters, not the longer side (100 × 130 → 114 → P3)
    assert map_roi_levels(torch.tensor([[0.0, 0.0, 100.0, 130.0]])).tolist() == [1]
    # the pooler reads the chosen level: constant maps with value = level index
    feats = {f"p{l + 2}": torch.full((1, 2, 400 // 2 ** (l + 2), 400 // 2 ** (l + 2)), float(l)) for l in range(4)}
    pooled = MultiLevelRoIAlign(output_size=7)(feats, [boxes.clamp(max=399.0)[:7]])
    assert pooled.shape == (7, 2, 7, 7)
    assert pooled.amax(dim=(1, 2, 3)).tolist() == [float(l) for l in map_roi_levels(boxes.clamp(max=399.0)[:7])]


def test_max_iou_assign_low_quality_rule():
    iou = torch.tensor([
        [0.80, 0.20, 0.35, 0.10, 0.35],  # gt0: anchor0 positive
        [0.10, 0.25, 0.05, 0.29, 0.00],  # gt1: best IoU 0.29 < 0.3 → no low-quality match
        [0.00, 0.40, 0.00, 0.00, 0.40],  # gt2: best 0.40, tied on anchors 1 and 4 → both to gt2
    ])
    assigned = max_iou_assign(iou, pos_thr=0.7, neg_thr=0.3, min_pos_iou=0.3)
    # anchor 2: max IoU 0.35 in [0.3, 0.7) → ignored (−2); anchor 3: 0.29 < 0.3 → negative (−1)
    assert assigned.tolist() == [0, 2, -2, -1, 2]
    assert max_iou_assign(torch.zeros(0, 4), 0.7, 0.3, 0.3).tolist() == [-1, -1, -1, -1]


def test_rpn_valid_flags_ignore_batch_padding():
    rpn = RegionProposalNetwork()
    sizes = [(64 // s, 96 // s) for s in (4, 8, 16, 32)] + [(1, 2)]  # P2..P6 of a 64×96 padded batch
    full, small = rpn._valid_flags(sizes, [(64, 96), (30, 40)], torch.device("cpu"))
    assert full.all() and full.numel() == 3 * sum(h * w for h, w in sizes)
    # (30, 40) pads to (32, 64): P2 8×16, P3 4×8, P4 2×4, P5 1×2, P6 1×1 valid cells, 3 anchors each
    assert int(small.sum()) == 3 * (8 * 16 + 4 * 8 + 2 * 4 + 1 * 2 + 1 * 1)


def test_rescale_size_mmcv_rounding():
    assert rescale_size(480, 640, (1333, 800)) == ((800, 1067), 800 / 480)
    assert rescale_size(300, 2000, (1333, 800))[0] == (200, 1333)


# ----------------------------------------------------------------------------------------------------------------
# end to end on a real image
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def coco_sample():
    return load_coco_sample("val", 139, min_area=400, max_anns=6)


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    model = build_model("mask_rcnn_r50_fpn_1x_coco")
    model.transform.test_scale = (533, 320)  # short side 320 keeps CPU time low
    model.transform.train_scales = ((533, 320),)
    return model


def test_eval_forward_on_real_image(small_model, coco_sample):
    img, _ = coco_sample
    model = small_model.eval()
    model.roi_heads.cfg = dataclasses.replace(model.roi_heads.cfg, detections_per_img=20)
    with torch.no_grad():
        (out,) = model([img])
    h, w = img.shape[-2:]
    n = out["boxes"].shape[0]
    assert 1 <= n <= 20
    assert out["boxes"].shape == (n, 4) and out["scores"].shape == (n,) and out["labels"].shape == (n,)
    assert out["masks"].shape == (n, h, w) and out["masks"].dtype == torch.bool
    assert out["labels"].dtype == torch.int64 and 0 <= out["labels"].min() and out["labels"].max() < 80
    b = out["boxes"]
    assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all() and (b[:, 2] <= w + 1e-3).all() and (b[:, 3] <= h + 1e-3).all()
    assert (b[:, 2] >= b[:, 0]).all() and (b[:, 3] >= b[:, 1]).all()
    assert (out["scores"][:-1] >= out["scores"][1:]).all() and (out["scores"] > 0.05).all()
    # preprocessing outside the model (fps protocol, docs/models.md §6) gives the same result
    batch, _ = model.transform.preprocess([img])
    assert batch.tensors.shape[-2:] == (320, 512) and batch.image_sizes == [(320, 481)]
    with torch.no_grad():
        (again,) = model(batch)
    assert torch.equal(again["boxes"], out["boxes"]) and torch.equal(again["masks"], out["masks"])
    # masks live inside their (original-frame) boxes, up to one pixel of bilinear spill
    ys, xs = torch.nonzero(out["masks"].any(0), as_tuple=True)
    if ys.numel():
        assert xs.max() <= b[:, 2].max() + 1 and ys.max() <= b[:, 3].max() + 1


def test_train_forward_losses_and_gradients(small_model, coco_sample):
    img, target = coco_sample
    model = small_model.train()
    model.roi_heads.sampler.batch_size_per_image = 64  # fewer RoIs: CPU time
    model.zero_grad(set_to_none=True)
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long),
             "masks": torch.zeros(0, *img.shape[-2:], dtype=torch.uint8)}
    small = torch.nn.functional.interpolate(img[None].float(), scale_factor=0.5)[0]
    losses = model([img, small], [target, empty])  # second image: no GT (all-background) must work too
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "loss_bbox", "loss_mask"}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    body = model.backbone.body
    assert body.conv1.weight.grad is None and body.layer1[0].conv1.weight.grad is None  # frozen_stages=1
    for stage in (body.layer2, body.layer3, body.layer4):
        assert stage[0].conv1.weight.grad.abs().sum() > 0
        assert stage[0].bn1.weight.grad is not None  # trainable BN affine (mmdet convention)
    assert not body.layer2[0].bn1.training  # norm_eval: BN statistics stay frozen in train mode
    mb = model.mask_branch
    assert mb.predictor.weight.grad.abs().sum() > 0 and mb.convs[0].weight.grad.abs().sum() > 0
    assert model.backbone.fpn.layer_blocks[0][0].weight.grad.abs().sum() > 0


def test_mask_branch_protocol():
    assert issubclass(FCNMaskBranch, MaskBranch)
    with pytest.raises(TypeError):
        MaskBranch()  # abstract: forward must be implemented
    branch = FCNMaskBranch(num_classes=5)
    feats = {f"p{l}": torch.randn(2, 256, 64 // 2 ** (l - 2), 64 // 2 ** (l - 2)) for l in range(2, 6)}
    boxes = [torch.tensor([[2.0, 3.0, 30.0, 40.0]]), torch.tensor([[0.0, 0.0, 8.0, 8.0], [10.0, 5.0, 60.0, 50.0]])]
    labels = [torch.tensor([4]), torch.tensor([0, 2])]
    logits = branch(RoIBatch(feats, boxes, labels))
    assert logits.shape == (3, 5, 28, 28)
    probs = branch.predict(RoIBatch(feats, boxes, labels))
    assert probs.shape == (3, 28, 28) and torch.allclose(probs[2], logits[2, 2].sigmoid())
    gt = [torch.ones(1, 64, 64, dtype=torch.uint8), torch.ones(2, 64, 64, dtype=torch.uint8)]
    idx = [torch.tensor([0]), torch.tensor([0, 1])]
    loss = branch.forward_train(RoIBatch(feats, boxes, labels, gt, idx))["loss_mask"]
    ref = torch.nn.functional.binary_cross_entropy_with_logits(logits[[0, 1, 2], [4, 0, 2]], torch.ones(3, 28, 28))
    assert torch.allclose(loss, ref, atol=1e-6)


def test_assign_and_sample_by_hand():
    """The shared RoI sampler (trunk and HTC stages): GT prepended, IoU ≥ 0.5 positive, < 0.5 negative."""
    from torchvision.models.detection._utils import BalancedPositiveNegativeSampler, BoxCoder

    from refinemask.detection.roi_heads import assign_and_sample

    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 40.0, 40.0]])
    props = torch.tensor([[0.0, 0.0, 10.0, 12.0],     # IoU 0.83 with GT 0 → positive
                          [50.0, 50.0, 60.0, 60.0],   # no overlap → negative
                          [20.0, 20.0, 30.0, 30.0]])  # IoU 0.25 with GT 1 → negative
    sampler = BalancedPositiveNegativeSampler(512, 0.25)  # takes every row here
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    boxes, matched, labels, reg, is_gt = assign_and_sample(props, gt, torch.tensor([3, 7]), sampler, coder, 80,
                                                            (0.5, 0.5, 0.5), True)
    assert boxes.shape == (5, 4)
    assert matched.tolist() == [0, 1, 0, -1, -1]  # positives first (GT 0, GT 1, proposal 0), then negatives
    assert labels.tolist() == [3, 7, 3, 80, 80] and is_gt.tolist() == [True, True, False, False, False]
    assert torch.equal(boxes[:2], gt) and torch.equal(reg[:2], torch.zeros(2, 4))
    assert torch.equal(reg[3:], torch.zeros(2, 4))
    torch.testing.assert_close(reg[2], coder.encode_single(gt[:1], props[:1])[0])
    _, m2, _, _, g2 = assign_and_sample(props, gt, torch.tensor([3, 7]), sampler, coder, 80, (0.5, 0.5, 0.5), False)
    assert m2.tolist() == [0, -1, -1] and not g2.any()

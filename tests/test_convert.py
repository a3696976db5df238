"""Official RefineMask checkpoints → our model (refinemask/convert.py).

The reference is a line-by-line transcription of the official modules (zhanggang001/RefineMask
``mmdet/models/roi_heads/mask_heads/refine_mask_head.py``: ``SFMStage``, ``RefineMaskHead``, ``SimpleSFMStage``,
``SimpleRefineMaskHead``, mmcv ``ConvModule`` / ``SimpleRoIAlign``; ``refine_roi_head.py`` test merge;
``cross_entropy_loss.py`` ``generate_block_target`` / ``RefineCrossEntropyLoss``), written with the official module
names so its ``state_dict()`` *is* a synthetic official checkpoint with the official names and shapes. Converting
it and loading it into our branch must reproduce the official forward, merge and loss — which also checks our
speed-ups (label-channel dot products, one fused semantic 1×1, batched semantic RoIAligns) against the plain code.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.ops import roi_align

from refinemask import build_model
from refinemask.convert import (
    convert_mmdet_trunk,
    convert_official_refinemask,
    load_official_refinemask,
)
from refinemask.detection.mask_branch import RoIBatch
from refinemask.head import RefineMaskBranch, RefineMaskConfig
from refinemask.head.boundary import refine_mask_loss
from refinemask.registry import get_preset


# ----------------------------------------------------------------------------------------------------------------
# transcription of the official head (official names; mask_use_sigmoid=True as in every config)
# ----------------------------------------------------------------------------------------------------------------
class ConvModule(nn.Module):  # mmcv ConvModule without norm
    def __init__(self, cin, cout, k, padding=0, dilation=1, act=True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, padding=padding, dilation=dilation)
        self.act = act

    def forward(self, x):
        x = self.conv(x)
        return F.relu(x) if self.act else x


class MultiBranchFusion(nn.Module):
    def __init__(self, feat_dim, dilations=(1, 3, 5)):
        super().__init__()
        for idx, d in enumerate(dilations):
            self.add_module(f"dilation_conv_{idx + 1}", ConvModule(feat_dim, feat_dim, 3, padding=d, dilation=d))
        self.merge_conv = ConvModule(feat_dim, feat_dim, 1, act=False)

    def forward(self, x):
        return self.merge_conv(self.dilation_conv_1(x) + self.dilation_conv_2(x) + self.dilation_conv_3(x))


class MultiBranchFusionAvg(MultiBranchFusion):
    def forward(self, x):
        f = self.dilation_conv_1(x) + self.dilation_conv_2(x) + self.dilation_conv_3(x) + F.avg_pool2d(x, x.shape[-1])
        return self.merge_conv(f)


class SFMStage(nn.Module):
    def __init__(self, semantic_in_channel, semantic_out_channel, instance_in_channel, instance_out_channel,
                 out_size, num_classes):
        super().__init__()
        self.out_size = out_size
        self.semantic_transform_in = nn.Conv2d(semantic_in_channel, semantic_out_channel, 1)
        self.semantic_transform_out = nn.Conv2d(semantic_out_channel, semantic_out_channel, 1)
        self.instance_logits = nn.Conv2d(instance_in_channel, num_classes, 1)
        fuse_in_channel = instance_in_channel + semantic_out_channel + 2
        self.fuse_conv = nn.ModuleList([
            nn.Conv2d(fuse_in_channel, instance_in_channel, 1), MultiBranchFusion(instance_in_channel)])
        self.fuse_transform_out = nn.Conv2d(instance_in_channel, instance_out_channel - 2, 1)

    def forward(self, instance_feats, semantic_feat, semantic_pred, rois, roi_labels):
        concat_tensors = [instance_feats]
        semantic_feat = F.relu(self.semantic_transform_in(semantic_feat))
        # SingleRoIExtractor with one level = mmcv RoIAlign(out_size, 1/4, sampling_ratio=0, aligned=True)
        ins_semantic_feats = roi_align(semantic_feat, rois, (self.out_size, self.out_size), 0.25, 0, True)
        ins_semantic_feats = F.relu(self.semantic_transform_out(ins_semantic_feats))
        concat_tensors.append(ins_semantic_feats)
        instance_preds = self.instance_logits(instance_feats)[torch.arange(len(rois)), roi_labels][:, None]
        _instance_preds = instance_preds.sigmoid()
        instance_masks = F.interpolate(_instance_preds, instance_feats.shape[-2], mode="bilinear", align_corners=True)
        concat_tensors.append(instance_masks)
        _semantic_pred = semantic_pred.sigmoid()
        ins_semantic_masks = roi_align(_semantic_pred, rois, tuple(instance_feats.shape[-2:]), 0.25, 0, True)
        ins_semantic_masks = F.interpolate(ins_semantic_masks, instance_feats.shape[-2:], mode="bilinear",
                                           align_corners=True)
        concat_tensors.append(ins_semantic_masks)
        fused_feats = torch.cat(concat_tensors, dim=1)
        for conv in self.fuse_conv:
            fused_feats = F.relu(conv(fused_feats))
        fused_feats = F.relu(self.fuse_transform_out(fused_feats))
        fused_feats = F.relu(F.interpolate(fused_feats, scale_factor=2, mode="bilinear", align_corners=False))
        instance_masks = F.interpolate(_instance_preds, fused_feats.shape[-2], mode="bilinear", align_corners=True)
        ins_semantic_masks = F.interpolate(ins_semantic_masks, fused_feats.shape[-2], mode="bilinear",
                                           align_corners=True)
        return instance_preds, torch.cat([fused_feats, instance_masks, ins_semantic_masks], dim=1)


class RefineMaskHead(nn.Module):
    def __init__(self, stage_num_classes=(80, 80, 80, 80), stage_sup_size=(14, 28, 56, 112)):
        super().__init__()
        self.stage_num_classes = stage_num_classes
        self.instance_convs = nn.ModuleList([ConvModule(256, 256, 3, padding=1) for _ in range(2)])
        self.semantic_convs = nn.ModuleList([ConvModule(256, 256, 3, padding=1) for _ in range(4)])
        self.stages = nn.ModuleList()
        out_channel = 256
        for idx, out_size in enumerate(stage_sup_size[:-1]):
            in_channel = out_channel
            out_channel = in_channel // 2
            self.stages.append(SFMStage(256, in_channel, in_channel, out_channel, out_size, stage_num_classes[idx]))
        self.final_instance_logits = nn.Conv2d(out_channel, stage_num_classes[-1], 1)
        self.semantic_logits = nn.Conv2d(256, 1, 1)

    def forward(self, instance_feats, semantic_feat, rois, roi_labels):
        for conv in self.instance_convs:
            instance_feats = conv(instance_feats)
        for conv in self.semantic_convs:
            semantic_feat = conv(semantic_feat)
        semantic_pred = self.semantic_logits(semantic_feat)
        stage_instance_preds = []
        for stage in self.stages:
            instance_preds, instance_feats = stage(instance_feats, semantic_feat, semantic_pred, rois, roi_labels)
            stage_instance_preds.append(instance_preds)
        if self.stage_num_classes[-1] == 1:
            roi_labels = roi_labels.clamp(max=0)
        instance_preds = self.final_instance_logits(instance_feats)[torch.arange(len(rois)), roi_labels][:, None]
        stage_instance_preds.append(instance_preds)
        return stage_instance_preds, semantic_pred


def simple_roi_align(features, rois, out_size, spatial_scale):  # mmcv SimpleRoIAlign (aligned=True)
    grid = F.affine_grid(torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]]), torch.Size((1, 1, out_size, out_size)),
                         align_corners=False)
    rel_roi_points = ((grid + 1.0) / 2.0).view(1, -1, 2).expand(len(rois), -1, -1)
    point_feats = []
    for batch_ind in range(features.size(0)):
        feat = features[batch_ind].unsqueeze(0)
        inds = rois[:, 0].long() == batch_ind
        if inds.any():
            r = rois[inds][:, 1:]
            pts = rel_roi_points[inds].clone()
            pts[:, :, 0] = pts[:, :, 0] * (r[:, None, 2] - r[:, None, 0]) + r[:, None, 0]
            pts[:, :, 1] = pts[:, :, 1] * (r[:, None, 3] - r[:, None, 1]) + r[:, None, 1]
            h, w = feat.shape[2:]
            rel = pts / torch.tensor([w, h], dtype=torch.float).view(1, 1, 2) * spatial_scale
            pf = F.grid_sample(feat, rel.unsqueeze(0) * 2.0 - 1.0, align_corners=False)
            point_feats.append(pf.squeeze(0).transpose(0, 1))
    return torch.cat(point_feats, dim=0).reshape(len(rois), features.size(1), out_size, out_size)


class SimpleSFMStage(nn.Module):
    def __init__(self, semantic_in_channel, semantic_out_channel, instance_in_channel, instance_out_channel, out_size):
        super().__init__()
        self.out_size = out_size
        self.semantic_transform_in = nn.Conv2d(semantic_in_channel, semantic_out_channel, 1)
        fuse_in_channel = instance_in_channel + semantic_out_channel + 1
        self.fuse_conv = nn.ModuleList([
            nn.Conv2d(fuse_in_channel, instance_in_channel, 1), MultiBranchFusionAvg(instance_in_channel)])
        self.fuse_transform_out = nn.Conv2d(instance_in_channel, instance_out_channel - 1, 1)

    def forward(self, instance_feats, instance_logits, semantic_feat, rois, upsample=True):
        semantic_feat = F.relu(self.semantic_transform_in(semantic_feat))
        ins_semantic_feats = simple_roi_align(semantic_feat, rois, self.out_size, 0.25)
        fused_feats = torch.cat([instance_feats, ins_semantic_feats, instance_logits.sigmoid()], dim=1)
        for conv in self.fuse_conv:
            fused_feats = F.relu(conv(fused_feats))
        fused_feats = F.relu(self.fuse_transform_out(fused_feats))
        fused_feats = torch.cat([fused_feats, instance_logits.sigmoid()], dim=1)
        if upsample:
            fused_feats = F.interpolate(fused_feats, scale_factor=2, mode="bilinear", align_corners=False)
        return fused_feats


class SimpleRefineMaskHead(nn.Module):
    def __init__(self, stage_num_classes=(80, 80, 80, 1), stage_sup_size=(14, 28, 56, 112)):
        super().__init__()
        self.stage_num_classes = stage_num_classes
        self.instance_convs = nn.ModuleList([ConvModule(256, 256, 3, padding=1) for _ in range(2)])
        self.semantic_convs = nn.ModuleList([ConvModule(256, 256, 3, padding=1) for _ in range(4)])
        self.stages = nn.ModuleList()
        out_channel = 256
        stage_out_channels = [256]
        for out_size in stage_sup_size[:-1]:
            in_channel = out_channel
            out_channel = in_channel // 2
            self.stages.append(SimpleSFMStage(256, in_channel, in_channel, out_channel, out_size))
            stage_out_channels.append(out_channel)
        self.stage_instance_logits = nn.ModuleList(
            [nn.Conv2d(stage_out_channels[i], n, 1) for i, n in enumerate(stage_num_classes)])

    def forward(self, instance_feats, semantic_feat, rois, roi_labels):
        for conv in self.instance_convs:
            instance_feats = conv(instance_feats)
        for conv in self.semantic_convs:
            semantic_feat = conv(semantic_feat)
        preds = []
        for idx, stage in enumerate(self.stages):
            logits = self.stage_instance_logits[idx](instance_feats)[torch.arange(len(rois)), roi_labels][:, None]
            instance_feats = stage(instance_feats, logits, semantic_feat, rois, idx < len(self.stages) - 1)
            preds.append(logits)
        if self.stage_num_classes[-1] == 1:
            roi_labels = roi_labels.clamp(max=0)
        p = self.stage_instance_logits[-1](instance_feats)[torch.arange(len(rois)), roi_labels][:, None]
        preds.append(F.interpolate(p, scale_factor=2, mode="bilinear", align_corners=True))
        return preds


def generate_block_target(mask_target, boundary_width=3):  # official, verbatim apart from formatting
    mask_target = mask_target.float()
    kernel_size = 2 * boundary_width + 1
    laplacian_kernel = -torch.ones(1, 1, kernel_size, kernel_size)
    laplacian_kernel[0, 0, boundary_width, boundary_width] = kernel_size ** 2 - 1
    pad_target = F.pad(mask_target.unsqueeze(1), (boundary_width,) * 4, "constant", 0)
    pos = F.conv2d(pad_target, laplacian_kernel, padding=0).clamp(min=0) / float(kernel_size ** 2)
    pos[pos > 0.1] = 1
    pos[pos <= 0.1] = 0
    pos = pos.squeeze(1)
    neg = F.conv2d(1 - pad_target, laplacian_kernel, padding=0).clamp(min=0) / float(kernel_size ** 2)
    neg[neg > 0.1] = 1
    neg[neg <= 0.1] = 0
    neg = neg.squeeze(1)
    block_target = torch.zeros_like(mask_target).long()
    block_target[(pos + neg) > 0] = 1
    block_target[(mask_target - pos) > 0] = 2
    return block_target


def official_test_merge(stage_instance_preds):  # RefineRoIHead.simple_test_mask, from stage 1
    stage_instance_preds = [p.clone() for p in stage_instance_preds[1:]]
    for idx in range(len(stage_instance_preds) - 1):
        instance_pred = stage_instance_preds[idx].squeeze(1).sigmoid() >= 0.5
        non_boundary_mask = (generate_block_target(instance_pred, boundary_width=1) != 1).unsqueeze(1)
        non_boundary_mask = F.interpolate(non_boundary_mask.float(), stage_instance_preds[idx + 1].shape[-2:],
                                          mode="bilinear", align_corners=True) >= 0.5
        pre_pred = F.interpolate(stage_instance_preds[idx], stage_instance_preds[idx + 1].shape[-2:],
                                 mode="bilinear", align_corners=True)
        stage_instance_preds[idx + 1][non_boundary_mask] = pre_pred[non_boundary_mask]
    return stage_instance_preds[-1]


def official_refine_loss(stage_instance_preds, stage_instance_targets, weights, boundary_width=2, start_stage=1):
    losses = []
    for idx in range(len(stage_instance_preds)):
        instance_pred, instance_target = stage_instance_preds[idx].squeeze(1), stage_instance_targets[idx]
        if idx <= start_stage:
            losses.append(F.binary_cross_entropy_with_logits(instance_pred, instance_target))
            pre_pred = instance_pred.sigmoid() >= 0.5
        else:
            boundary_region = (generate_block_target(pre_pred.float(), boundary_width) == 1).unsqueeze(1)
            target_boundary = generate_block_target(stage_instance_targets[idx - 1].float(), boundary_width) == 1
            boundary_region = boundary_region | target_boundary.unsqueeze(1)
            boundary_region = F.interpolate(boundary_region.float(), instance_pred.shape[-2:], mode="bilinear",
                                            align_corners=True)
            boundary_region = (boundary_region >= 0.5).squeeze(1)
            loss = F.binary_cross_entropy_with_logits(instance_pred, instance_target, reduction="none")
            losses.append(loss[boundary_region].sum() / boundary_region.sum().clamp(min=1).float())
            pre_boundary = generate_block_target(pre_pred.float(), boundary_width=1) == 1
            pre_boundary = F.interpolate(pre_boundary.unsqueeze(1).float(), instance_pred.shape[-2:],
                                         mode="bilinear", align_corners=True) >= 0.5
            pre_pred = F.interpolate(stage_instance_preds[idx - 1], instance_pred.shape[-2:], mode="bilinear",
                                     align_corners=True)
            pre_pred[pre_boundary] = stage_instance_preds[idx][pre_boundary]
            pre_pred = pre_pred.squeeze(1).sigmoid() >= 0.5
    return sum(w * l for w, l in zip(weights, losses))


def _init_random(module: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            fan_in = p[0].numel() if p.dim() > 1 else 64
            p.copy_(torch.randn(p.shape, generator=g) * (2.0 / fan_in) ** 0.5)


def _prefixed(module: nn.Module, prefix: str = "roi_head.mask_head.") -> dict:
    return {prefix + k: v for k, v in module.state_dict().items()}


def _inputs(num_classes: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    feats = {f"p{l}": torch.randn(2, 256, 96 // 2 ** l, 128 // 2 ** l, generator=g) for l in range(2, 6)}
    boxes = [torch.tensor([[3.0, 4.5, 40.0, 70.0], [50.0, 2.0, 127.0, 60.0]]),
             torch.tensor([[0.0, 0.0, 12.0, 9.0], [20.0, 30.0, 90.0, 95.0], [60.5, 10.0, 70.0, 30.0]])]
    labels = [torch.tensor([num_classes - 1, 0]), torch.tensor([1, 2, 0]) % num_classes]
    return feats, boxes, labels


def _our_branch_from_official(official: nn.Module, num_classes: int, cfg: RefineMaskConfig) -> RefineMaskBranch:
    ours = RefineMaskBranch(num_classes, cfg)
    converted = convert_official_refinemask(_prefixed(official))
    head = {k[len("roi_heads.mask_branch."):]: v for k, v in converted.items()}
    assert set(head) == set(ours.state_dict()), set(head) ^ set(ours.state_dict())
    ours.load_state_dict(head, strict=True)
    return ours


# ----------------------------------------------------------------------------------------------------------------
# the head: official forward / merge / loss reproduced after conversion
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("agnostic_last", [False, True])
def test_converted_original_head_reproduces_official_forward_merge_and_loss(agnostic_last):
    k = 5
    official = RefineMaskHead(stage_num_classes=(k, k, k, 1 if agnostic_last else k))
    _init_random(official, 1)
    ours = _our_branch_from_official(official, k, RefineMaskConfig(last_stage_class_agnostic=agnostic_last))
    feats, boxes, labels = _inputs(k)
    from refinemask.detection.poolers import boxes_to_rois

    rois, lab = boxes_to_rois(boxes), torch.cat(labels)
    ins = ours.pooler(feats, boxes)
    ref_preds, ref_sem = official(ins, feats["p2"], rois, lab)
    our_preds, our_sem = ours.forward_stages(RoIBatch(feats, boxes, labels))
    assert [tuple(p.shape) for p in our_preds] == [(5, s, s) for s in (14, 28, 56, 112)]
    for a, b in zip(our_preds, ref_preds):
        torch.testing.assert_close(a, b[:, 0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(our_sem, ref_sem, rtol=1e-5, atol=1e-5)
    # inference merge (Eq. 5-6 as coded) on identical stage logits: bit-identical
    ref_merged = official_test_merge(ref_preds)
    from refinemask.head.boundary import merge_stage_logits

    assert torch.equal(merge_stage_logits([p[:, 0] for p in ref_preds]), ref_merged[:, 0])
    ours.eval()
    torch.testing.assert_close(ours(RoIBatch(feats, boxes, labels)), ref_merged, rtol=1e-4, atol=1e-4)
    # multi-stage BAR loss on identical logits / targets
    g = torch.Generator().manual_seed(3)
    targets = [(torch.rand(5, s, s, generator=g) > 0.5).float() for s in (14, 28, 56, 112)]
    targets = [F.interpolate(t[:, None], size=t.shape[-1], mode="nearest")[:, 0] for t in targets]
    preds = [p.detach() for p in ref_preds]
    ours_loss, _ = refine_mask_loss([p[:, 0] for p in preds], targets, (0.25, 0.5, 0.75, 1.0))
    ref_loss = official_refine_loss(preds, targets, (0.25, 0.5, 0.75, 1.0))
    torch.testing.assert_close(ours_loss, ref_loss, rtol=1e-6, atol=1e-6)


def test_converted_simple_head_reproduces_official_forward():
    k = 4
    official = SimpleRefineMaskHead(stage_num_classes=(k, k, k, 1))
    _init_random(official, 2)
    cfg = get_preset("refinemask_r50_fpn_1x_coco_simple").mask_head_cfg
    ours = _our_branch_from_official(official, k, cfg)
    feats, boxes, labels = _inputs(k, seed=1)
    from refinemask.detection.poolers import boxes_to_rois

    rois, lab = boxes_to_rois(boxes), torch.cat(labels)
    ref_preds = official(ours.pooler(feats, boxes), feats["p2"], rois, lab)
    our_preds, our_sem = ours.forward_stages(RoIBatch(feats, boxes, labels))
    assert our_sem is None
    assert [tuple(p.shape) for p in our_preds] == [(5, s, s) for s in (14, 28, 56, 112)]
    for a, b in zip(our_preds, ref_preds):
        torch.testing.assert_close(a, b[:, 0], rtol=1e-4, atol=1e-4)
    ours.eval()
    torch.testing.assert_close(ours(RoIBatch(feats, boxes, labels)), official_test_merge(ref_preds),
                               rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------------------------------------------
# whole checkpoints: trunk + head, file loading, loud failures
# ----------------------------------------------------------------------------------------------------------------
def _mmdet_trunk_shapes(num_classes: int = 80) -> dict[str, tuple]:
    """Official mmdet 2.x Mask R-CNN R50-FPN trunk names and shapes (mmdet ResNet names = torchvision's)."""
    with torch.device("meta"):
        resnet = torchvision.models.resnet50()
    shapes = {f"backbone.{k}": tuple(v.shape) for k, v in resnet.state_dict().items() if not k.startswith("fc.")}
    for i, c in enumerate((256, 512, 1024, 2048)):
        shapes[f"neck.lateral_convs.{i}.conv.weight"] = (256, c, 1, 1)
        shapes[f"neck.lateral_convs.{i}.conv.bias"] = (256,)
        shapes[f"neck.fpn_convs.{i}.conv.weight"] = (256, 256, 3, 3)
        shapes[f"neck.fpn_convs.{i}.conv.bias"] = (256,)
    shapes.update({
        "rpn_head.rpn_conv.weight": (256, 256, 3, 3), "rpn_head.rpn_conv.bias": (256,),
        "rpn_head.rpn_cls.weight": (3, 256, 1, 1), "rpn_head.rpn_cls.bias": (3,),
        "rpn_head.rpn_reg.weight": (12, 256, 1, 1), "rpn_head.rpn_reg.bias": (12,),
        "roi_head.bbox_head.shared_fcs.0.weight": (1024, 256 * 7 * 7), "roi_head.bbox_head.shared_fcs.0.bias": (1024,),
        "roi_head.bbox_head.shared_fcs.1.weight": (1024, 1024), "roi_head.bbox_head.shared_fcs.1.bias": (1024,),
        "roi_head.bbox_head.fc_cls.weight": (num_classes + 1, 1024),
        "roi_head.bbox_head.fc_cls.bias": (num_classes + 1,),
        "roi_head.bbox_head.fc_reg.weight": (num_classes * 4, 1024),
        "roi_head.bbox_head.fc_reg.bias": (num_classes * 4,),
    })
    return shapes


def _synthetic_official_checkpoint(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, shape in _mmdet_trunk_shapes().items():
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(7, dtype=torch.long)
        else:
            sd[k] = torch.randn(shape, generator=g)
    head = RefineMaskHead()
    _init_random(head, seed + 1)
    sd.update(_prefixed(head))
    return sd


@pytest.fixture(scope="module")
def official_file(tmp_path_factory):
    sd = _synthetic_official_checkpoint()
    path = tmp_path_factory.mktemp("ckpt") / "r50-refinemask-1x.pth"
    meta = {"mmdet_version": "2.3.0", "CLASSES": ("person", "bicycle"), "epoch": 12, "config": "model = dict(...)"}
    torch.save({"meta": meta, "state_dict": sd}, path)
    return path, sd


def test_convert_maps_every_official_key_onto_every_model_key(official_file):
    _, sd = official_file
    converted = convert_official_refinemask(sd)
    assert len(converted) == len(sd)  # a bijection: nothing dropped, nothing merged
    with torch.device("meta"):
        model = build_model("refinemask_r50_fpn_1x_coco")
    target = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in converted.items()} == target
    # trunk part alone (the reusable function): the head keys come back untouched in `rest`
    trunk, rest = convert_mmdet_trunk(sd)
    assert set(rest) == {k for k in sd if k.startswith("roi_head.mask_head.")}
    assert trunk["backbone.fpn.inner_blocks.3.0.weight"] is sd["neck.lateral_convs.3.conv.weight"]
    assert trunk["roi_heads.box_head.fc6.weight"] is sd["roi_head.bbox_head.shared_fcs.0.weight"]
    assert trunk["rpn.head.bbox_pred.bias"] is sd["rpn_head.rpn_reg.bias"]
    assert trunk["backbone.body.layer4.0.downsample.1.running_var"] is sd["backbone.layer4.0.downsample.1.running_var"]
    # DDP prefix
    assert set(convert_official_refinemask({"module." + k: v for k, v in sd.items()})) == set(converted)


def test_load_official_refinemask_puts_every_tensor_in_place(official_file):
    path, sd = official_file
    with torch.device("meta"):
        model = build_model("refinemask_r50_fpn_1x_coco")
    model.to_empty(device="cpu")
    info = load_official_refinemask(model, path)
    assert info["meta"]["mmdet_version"] == "2.3.0" and info["dropped"] == []
    ours = model.state_dict()
    for k, v in convert_official_refinemask(sd).items():
        assert torch.equal(ours[k], v), k
    branch = model.roi_heads.mask_branch
    assert torch.equal(branch.stage_logits[3].weight, sd["roi_head.mask_head.final_instance_logits.weight"])
    assert torch.equal(model.roi_heads.mask_branch.stages[1].fusion.branches[2].weight,
                       sd["roi_head.mask_head.stages.1.fuse_conv.1.dilation_conv_3.conv.weight"])
    # FrozenBN model: the checkpoint's num_batches_tracked entries have nowhere to go and are dropped
    with torch.device("meta"):
        frozen = build_model(dataclasses.replace(get_preset("refinemask_r50_fpn_1x_coco"), norm="frozen_bn"))
    frozen.to_empty(device="cpu")
    info = load_official_refinemask(frozen, path)
    assert len(info["dropped"]) == 53 and all(k.endswith("num_batches_tracked") for k in info["dropped"])
    assert torch.equal(frozen.backbone.body.layer2[0].bn1.running_mean, sd["backbone.layer2.0.bn1.running_mean"])


def test_wrong_preset_fails_with_the_offending_keys(official_file):
    path, _ = official_file
    for preset, needle in (("refinemask_r50_fpn_1x_lvis", "shape mismatches"),
                           ("refinemask_r50_fpn_1x_coco_simple", "unexpected")):
        with torch.device("meta"):
            model = build_model(preset)
        with pytest.raises(ValueError, match=needle) as e:
            load_official_refinemask(model, path)
        assert "does not fit this model" in str(e.value)


def test_unmapped_keys_fail_loudly():
    sd = {k: torch.zeros(1) for k in ("backbone.conv1.weight", "roi_head.mask_head.semantic_logits.weight")}
    with pytest.raises(ValueError, match="roi_head.mask_head.stages.0.mystery.weight"):
        convert_official_refinemask({**sd, "roi_head.mask_head.stages.0.mystery.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"neck\.extra_convs\.0\.conv\.weight"):
        convert_mmdet_trunk({**sd, "neck.extra_convs.0.conv.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="dcn"):  # e.g. a DCN backbone
        convert_mmdet_trunk({"backbone.layer2.0.conv2.conv_offset.weight_dcn": torch.zeros(1)})
    # a plain Mask R-CNN FCN mask head is not a RefineMask head
    with pytest.raises(ValueError, match="not a RefineMask checkpoint"):
        convert_official_refinemask({**sd, "roi_head.mask_head.conv_logits.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="mmdet 1.x"):  # background-first box head: (C + 1)·4 regression rows
        convert_mmdet_trunk({"roi_head.bbox_head.fc_cls.weight": torch.zeros(81, 8),
                             "roi_head.bbox_head.fc_reg.weight": torch.zeros(324, 8)})
    with pytest.raises(ValueError, match="must be tensors"):
        convert_official_refinemask({"backbone.conv1.weight": [1, 2]})


def test_checkpoint_needing_unsafe_unpickling_is_refused_with_resave_instructions(tmp_path):
    path = tmp_path / "mmdet.pth"
    torch.save({"meta": {"hook_msgs": {"best_score": np.float64(0.373)}}, "state_dict": {"a": torch.zeros(1)}}, path)
    with pytest.raises(ValueError) as e:
        load_official_refinemask(nn.Linear(1, 1), path)
    msg = str(e.value)
    assert "weights_only=True" in msg and "re-save" in msg and "torch.save" in msg and str(path) in msg
    with pytest.raises(FileNotFoundError):
        load_official_refinemask(nn.Linear(1, 1), tmp_path / "missing.pth")

"""Build a detector from a named preset: ``build_model("mask_rcnn_r50_fpn_1x_coco")``.

The mask branch is chosen by the **class** of ``preset.mask_head_cfg`` through :mod:`refinemask.registry`: this
module registers the model package's own branches (:class:`~refinemask.config.FCNMaskConfig` → Mask R-CNN's FCN
head, :class:`~refinemask.config.RefineMaskConfig` → RefineMask); ``import baselines`` registers PointRend and HTC.
"""

from __future__ import annotations

import os

from torch import nn

from refinemask.config import FCNMaskConfig, Preset, RefineMaskConfig
from refinemask.detection import (
    AnchorGenerator,
    DetectionTransform,
    RegionProposalNetwork,
    ResNetFPN,
    RoIHeads,
    TwoStageDetector,
    build_fcn_branch,
    load_backbone_weights,
    roi_pooler,
)
from refinemask.head import build_refinemask_branch
from refinemask.registry import (
    MASK_BRANCH_BUILDERS,
    ROI_HEAD_BUILDERS,
    get_preset,
    list_presets,
    register_mask_branch,
)

__all__ = ["build_model", "list_presets", "count_parameters"]

register_mask_branch(FCNMaskConfig, build_fcn_branch)
register_mask_branch(RefineMaskConfig, build_refinemask_branch)


def build_roi_heads(p: Preset) -> nn.Module:
    """The RoI heads of ``p``: the standard box head + the registered mask branch, or registered RoI heads that
    replace them as a whole (``mask_head_cfg.replaces_roi_heads``, HTC).

    Raises:
        KeyError: no builder is registered for the class of ``p.mask_head_cfg`` (the message names the fix).
    """
    cls = type(p.mask_head_cfg)
    table = ROI_HEAD_BUILDERS if cls.replaces_roi_heads else MASK_BRANCH_BUILDERS
    if cls not in table:
        raise KeyError(f"preset {p.name!r}: no builder is registered for {cls.__name__}. Fix: import the package "
                       f"that defines it (e.g. `import baselines` for PointRend / HTC) before building the model")
    if cls.replaces_roi_heads:
        return table[cls](p)
    tv = p.conventions == "torchvision"
    return RoIHeads(p.num_classes, box_pooler=roi_pooler(7, p.conventions), mask_branch=table[cls](p), cfg=p.roi,
                    min_box_size=1e-2 if tv else 0.0)


def build_model(preset: str | Preset, *, backbone_weights: str | os.PathLike | None = None) -> TwoStageDetector:
    """Randomly initialised detector for ``preset`` (a name or a :class:`~refinemask.config.Preset`).

    Args:
        backbone_weights: optional LOCAL torchvision ImageNet state dict loaded with ``load_backbone_weights``.
            Without it the backbone is randomly initialised; callers should log a warning in that case.
    Raises:
        KeyError: unknown preset name (message lists the closest known presets) or no registered builder.
        FileNotFoundError / ValueError: from ``load_backbone_weights``.
    """
    p = get_preset(preset) if isinstance(preset, str) else preset
    backbone = ResNetFPN(p.backbone, norm=p.norm, frozen_stages=p.frozen_stages, style=p.backbone_style)
    tv = p.conventions == "torchvision"  # torchvision MaskRCNN's test pipeline (refinemask.config.CONVENTIONS)
    rpn = RegionProposalNetwork(anchor_generator=AnchorGenerator(torchvision=tv), cfg=p.rpn,
                                min_size=1e-3 if tv else 0.0)
    roi_heads = build_roi_heads(p)
    transform = DetectionTransform(
        style=p.backbone_style,
        test_scale=p.test_scale,
        train_scales=p.train_scales,
        multiscale_mode=p.multiscale_mode,
        conventions=p.conventions,
    )
    model = TwoStageDetector(backbone, rpn, roi_heads, transform, conventions=p.conventions)
    model.preset = p  # provenance for checkpoints / metrics.json
    if backbone_weights is not None:
        load_backbone_weights(model, backbone_weights)
    return model


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (shared parameters counted once).

    Counts frozen parameters too unless ``trainable_only`` (mmdet's convention, docs/models.md "Parameter
    counts"); FrozenBN statistics and affine terms are buffers and never counted.
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)

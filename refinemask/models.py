"""Build a detector from a named preset: ``build_model("mask_rcnn_r50_fpn_1x_coco")``.

``MASK_BRANCH_BUILDERS`` maps ``Preset.mask_head`` to a function ``(preset) -> MaskBranch``. Baseline branches
live in the top-level ``baselines`` package, which depends on ``refinemask.detection``; to keep ``refinemask``
importable without ``baselines`` (and free of import cycles) their builders import lazily.
"""

from __future__ import annotations

import os
from typing import Callable

from torch import nn

from refinemask.config import PRESETS, Preset, get_preset
from refinemask.detection import (
    DetectionTransform,
    MaskBranch,
    ResNetFPN,
    RegionProposalNetwork,
    RoIHeads,
    TwoStageDetector,
    load_backbone_weights,
)

__all__ = ["MASK_BRANCH_BUILDERS", "ROI_HEAD_BUILDERS", "build_model", "list_presets", "count_parameters"]


def _fcn_branch(p: Preset) -> MaskBranch:
    from baselines.mask_rcnn import FCNMaskBranch

    return FCNMaskBranch(p.num_classes, class_agnostic=p.mask_class_agnostic)


def _refinemask_branch(p: Preset) -> MaskBranch:
    from refinemask.head import build_refinemask_branch

    return build_refinemask_branch(p)


def _point_rend_branch(p: Preset) -> MaskBranch:
    from baselines.point_rend import build_point_rend_branch

    return build_point_rend_branch(p)


#: ``Preset.mask_head`` → builder of the mask branch (lazy imports: each lives with its model's code).
MASK_BRANCH_BUILDERS: dict[str, Callable[[Preset], MaskBranch]] = {
    "fcn": _fcn_branch,
    "refinemask": _refinemask_branch,
    "point_rend": _point_rend_branch,
}


def _htc_roi_heads(p: Preset) -> nn.Module:
    from baselines.htc import build_htc_roi_heads

    return build_htc_roi_heads(p)


#: ``Preset.roi_head`` → builder of RoI heads that replace the standard ``RoIHeads`` as a whole (HTC).
ROI_HEAD_BUILDERS: dict[str, Callable[[Preset], nn.Module]] = {
    "htc": _htc_roi_heads,
}


def list_presets() -> list[str]:
    """Sorted names of all presets in ``refinemask.config.PRESETS``."""
    return sorted(PRESETS)


def build_model(preset: str | Preset, *, backbone_weights: str | os.PathLike | None = None) -> TwoStageDetector:
    """Randomly initialised detector for ``preset`` (a name or a :class:`~refinemask.config.Preset`).

    Args:
        backbone_weights: optional LOCAL torchvision ImageNet state dict loaded with ``load_backbone_weights``.
            Without it the backbone is randomly initialised; callers should log a warning in that case.
    Raises:
        KeyError: unknown preset name (message lists the known presets) or unknown ``mask_head``.
        FileNotFoundError / ValueError: from ``load_backbone_weights``.
    """
    p = get_preset(preset) if isinstance(preset, str) else preset
    backbone = ResNetFPN(p.backbone, norm=p.norm, frozen_stages=p.frozen_stages, style=p.backbone_style)
    rpn = RegionProposalNetwork(cfg=p.rpn)
    if p.roi_head != "standard":
        if p.roi_head not in ROI_HEAD_BUILDERS:
            raise KeyError(f"preset {p.name!r}: unknown roi_head {p.roi_head!r}; known: standard, {sorted(ROI_HEAD_BUILDERS)}")
        roi_heads = ROI_HEAD_BUILDERS[p.roi_head](p)
    else:
        if p.mask_head not in MASK_BRANCH_BUILDERS:
            raise KeyError(f"preset {p.name!r}: unknown mask_head {p.mask_head!r}; known: {sorted(MASK_BRANCH_BUILDERS)}")
        roi_heads = RoIHeads(p.num_classes, mask_branch=MASK_BRANCH_BUILDERS[p.mask_head](p), cfg=p.roi)
    transform = DetectionTransform(
        style=p.backbone_style,
        test_scale=p.test_scale,
        train_scales=p.train_scales,
        multiscale_mode=p.multiscale_mode,
    )
    model = TwoStageDetector(backbone, rpn, roi_heads, transform)
    model.preset = p  # provenance for checkpoints / metrics.json
    if backbone_weights is not None:
        load_backbone_weights(model, backbone_weights)
    return model


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (shared parameters counted once).

    Counts frozen parameters too unless ``trainable_only`` (the convention of model-spec §7); FrozenBN statistics
    and affine terms are buffers and never counted.
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)

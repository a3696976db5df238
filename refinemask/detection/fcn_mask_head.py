"""Mask R-CNN's FCN mask branch (mmdet ``FCNMaskHead``; docs/models.md "Mask R-CNN"), the default mask branch.

It lives in the trunk beside the :class:`~.mask_branch.MaskBranch` protocol, as torchvision and detectron2 keep
their default head in the core.

4 × [3×3 conv 256 + ReLU] on 14×14 aligned-RoIAlign features (P2–P5) → 2×2 stride-2 deconv 256 + ReLU →
1×1 conv → C class-specific logits at 28×28. Loss: BCE on the GT-class channel, mean over N·28·28 (weight 1).
Targets: 28×28 aligned RoIAlign of the GT bitmaps at the positive proposals, ≥ 0.5 (shared ``mask_targets``).
Inference: σ of the predicted-class channel, pasted by the trunk (≥ 0.5). Init: kaiming-normal fan_out, bias 0.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from refinemask.config import FCNMaskConfig, Preset

from .mask_branch import MaskBranch, RoIBatch
from .poolers import MultiLevelRoIAlign, roi_pooler

__all__ = ["FCNMaskBranch", "build_fcn_branch"]


class FCNMaskBranch(MaskBranch):
    """Mask R-CNN FCN head.

    Args:
        num_classes: C (80 COCO, 1203 LVIS v1, 8 Cityscapes).
        class_agnostic: one output channel instead of C.
        in_channels / conv_dim: 256. num_convs: 4. roi_size: 14 (pooler output; logits are 2·roi_size).
        loss_weight: 1.0.
    Forward: see :meth:`MaskBranch.forward` (a :class:`RoIBatch`); returns (N, C or 1, 28, 28) logits.
    """

    def __init__(
        self,
        num_classes: int = 80,
        *,
        class_agnostic: bool = False,
        in_channels: int = 256,
        conv_dim: int = 256,
        num_convs: int = 4,
        roi_size: int = 14,
        loss_weight: float = 1.0,
        pooler: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.mask_size = 2 * roi_size
        self.loss_weight = loss_weight
        self.pooler = pooler or MultiLevelRoIAlign(output_size=roi_size)
        convs = []
        for i in range(num_convs):
            convs += [nn.Conv2d(in_channels if i == 0 else conv_dim, conv_dim, 3, padding=1), nn.ReLU(inplace=True)]
        self.convs = nn.Sequential(*convs)
        self.deconv = nn.ConvTranspose2d(conv_dim, conv_dim, 2, stride=2)
        self.predictor = nn.Conv2d(conv_dim, 1 if class_agnostic else num_classes, 1)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, rois: RoIBatch) -> Tensor:
        """(N, C or 1, 28, 28) logits, rows in the order of ``torch.cat(rois.boxes)``."""
        x = self.inference_layout(self.pooler(rois.features, rois.boxes))
        x = F.relu(self.deconv(self.convs(x)))
        return self.predictor(x)


def build_fcn_branch(preset: Preset) -> FCNMaskBranch:
    """The FCN branch of a Mask R-CNN preset (``preset.mask_head_cfg`` an :class:`~refinemask.config.FCNMaskConfig`).

    Raises:
        TypeError: ``mask_head_cfg`` is another config type.
    """
    cfg = preset.mask_head_cfg
    if not isinstance(cfg, FCNMaskConfig):
        raise TypeError(f"preset {preset.name!r}: mask_head_cfg must be an FCNMaskConfig, got {type(cfg).__name__}")
    branch = FCNMaskBranch(preset.num_classes, class_agnostic=preset.mask_class_agnostic, conv_dim=cfg.conv_dim,
                           num_convs=cfg.num_convs, roi_size=cfg.roi_size, loss_weight=cfg.loss_weight,
                           pooler=roi_pooler(cfg.roi_size, preset.conventions))
    if preset.conventions == "torchvision":  # NCHW convs as torchvision runs them: bit-identical probabilities
        branch.channels_last = False
    return branch

"""Mask R-CNN's FCN mask branch (mmdet ``FCNMaskHead``; model-spec §1.1, §3) on the shared mask-branch protocol.

4 × [3×3 conv 256 + ReLU] on 14×14 aligned-RoIAlign features (P2–P5) → 2×2 stride-2 deconv 256 + ReLU →
1×1 conv → C class-specific logits at 28×28. Loss: BCE on the GT-class channel, mean over N·28·28 (weight 1).
Targets: 28×28 aligned RoIAlign of the GT bitmaps at the positive proposals, ≥ 0.5 (shared ``mask_targets``).
Inference: σ of the predicted-class channel, pasted by the trunk (≥ 0.5). Init: kaiming-normal fan_out, bias 0.
"""

from __future__ import annotations

from typing import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from refinemask.detection.mask_branch import MaskBranch
from refinemask.detection.poolers import MultiLevelRoIAlign

__all__ = ["FCNMaskBranch"]


class FCNMaskBranch(MaskBranch):
    """Mask R-CNN FCN head.

    Args:
        num_classes: C (80 COCO, 1203 LVIS v1, 8 Cityscapes).
        class_agnostic: one output channel instead of C.
        in_channels / conv_dim: 256. num_convs: 4. roi_size: 14 (pooler output; logits are 2·roi_size).
        loss_weight: 1.0.
    Forward: see :meth:`MaskBranch.forward`; returns (N, C or 1, 28, 28) logits.
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

    def forward(
        self,
        features: dict[str, Tensor],
        image_shapes: Sequence[tuple[int, int]],
        boxes: Sequence[Tensor],
        labels: Sequence[Tensor],
    ) -> Tensor:
        x = self.inference_layout(self.pooler(features, boxes))
        x = F.relu(self.deconv(self.convs(x)))
        return self.predictor(x)

"""RefineMask's semantic head on P2 (paper Sec. 3.1; docs/models.md §2.2–2.4, §2.6).

Four 3×3 convolutions (256 → 256, bias, ReLU, no norm) on the whole stride-4 FPN map P2 give the *semantic
features* G; a 1×1 binary classifier (256 → 1) gives the *semantic mask* logits Y at the same resolution. The
semantic features and mask together are the paper's "fine-grained features", pooled per RoI by every SFM.
Supervision: BCE (mean over all B·(Hp/4)·(Wp/4) pixels, weight 1.0) against the union of the image's GT instance
masks, built by :func:`semantic_target` exactly as ``RefineRoIHead._mask_forward_train`` does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SemanticHead", "semantic_target", "semantic_loss"]


class SemanticHead(nn.Module):
    """4 × [3×3 conv + ReLU] on P2 and an optional 1×1 foreground classifier.

    Args:
        in_channels / channels: 256 / 256. num_convs: 4.
        with_logits: False for the "faster and better" head (docs/models.md §2.8), which keeps the convs
            (features only).
    Forward: P2 (B, 256, Hp/4, Wp/4) → (G (B, channels, Hp/4, Wp/4), Y (B, 1, Hp/4, Wp/4) logits or None).
    Init: kaiming-normal fan_out (ReLU), bias 0 (mmcv ``ConvModule`` and ``RefineMaskHead.init_weights``).
    Parameters: 4 · 590,080 + 257 = 2,360,577.
    """

    def __init__(
        self, in_channels: int = 256, channels: int = 256, num_convs: int = 4, with_logits: bool = True
    ) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(in_channels if i == 0 else channels, channels, 3, padding=1) for i in range(num_convs)
        )
        self.logits = nn.Conv2d(channels, 1, 1) if with_logits else None
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, p2: Tensor) -> tuple[Tensor, Tensor | None]:
        x = p2
        for conv in self.convs:
            x = F.relu_(conv(x))  # in place on the fresh conv output
        return x, (self.logits(x) if self.logits is not None else None)


def semantic_target(gt_masks: Sequence[Tensor], out_size: Sequence[int], padded_size: Sequence[int]) -> Tensor:
    """Binary image-level foreground target (docs/models.md §2.4; official ``get_targets`` + ``_mask_forward_train``).

    For each image the union (pixel-wise max; masks are binary, so ``any``) of all its GT instance masks in the
    padded input frame, zero-padded to ``padded_size``; the batch is resized to ``out_size`` (the semantic-logit
    size Hp/4 × Wp/4) with bilinear ``align_corners=False`` (no anti-aliasing) and binarised ``>= 0.5``.
    Class-agnostic, no ignore label.

    Args:
        gt_masks: B tensors (G_i, H_i, W_i) binary (uint8/bool/float), non-crowd instances only, in the padded
            input frame (H_i ≤ Hp, W_i ≤ Wp; larger masks are cropped). G_i may be 0 (all background).
        out_size: (h, w) of the semantic logits.
        padded_size: (Hp, Wp) of the padded batch (4 · out_size for P2).
    Returns:
        (B, h, w) float32 in {0, 1}, on the masks' device.
    """
    hp, wp = int(padded_size[0]), int(padded_size[1])
    device = gt_masks[0].device if len(gt_masks) else torch.device("cpu")
    full = torch.zeros((len(gt_masks), 1, hp, wp), dtype=torch.float32, device=device)
    for i, m in enumerate(gt_masks):
        if m.shape[0] == 0:
            continue
        h, w = min(m.shape[-2], hp), min(m.shape[-1], wp)
        full[i, 0, :h, :w] = (m[:, :h, :w] != 0).any(dim=0).to(device=device, dtype=torch.float32)
    out = F.interpolate(full, size=tuple(int(s) for s in out_size), mode="bilinear", align_corners=False)[:, 0]
    return (out >= 0.5).to(torch.float32)


def semantic_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Mean BCE-with-logits over all pixels: logits (B, 1, h, w), target (B, h, w) in {0, 1}."""
    return F.binary_cross_entropy_with_logits(logits[:, 0], target.to(logits.dtype), reduction="mean")

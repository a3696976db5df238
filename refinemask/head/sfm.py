"""Semantic Fusion Module (paper Sec. 3.2, Fig. 3; docs/models.md §2.3, §2.8) and the fusion blocks of Table 4.

One SFM per refinement stage k (size s_k = 14·2^k, channels C_k = 256/2^k). Original head (official ``SFMStage``):

    X = concat[F^k, S_k, m_k, q_k]                       (N, 2C_k + 2, s_k, s_k)
    X = ReLU(1×1 conv (2C_k + 2) → C_k)                   "fuse_in"
    X = ReLU(fusion(X))                                   SFM: Σ_d ReLU(3×3 dilated conv, d = 1, 3, 5) → 1×1
    X = ReLU(1×1 conv C_k → C_k/2 − 2)                    "transform_out" (channel halving)
    X = ReLU(Up×2(X))                                     bilinear, align_corners=False (``nn.Upsample``)
    F^{k+1} = concat[X, Up(m_k), Up(q_k)]                 masks re-attached (bilinear, align_corners=True)

with S_k = ReLU(1×1 C_k → C_k)(RoIAlign_{s_k}(ReLU(1×1 256 → C_k)(G))) the semantic RoI features ("semantic_in" on
the whole semantic map, "semantic_out" after pooling), m_k = σ(Z_k) the stage's instance mask and
q_k = RoIAlign_{s_k}(σ(Y)) the semantic mask. The RoIAligns and the whole-map "semantic_in" convolutions are done
by the branch (batched over stages); the SFM receives pooled tensors.

Table 4 fusion variants (``fusion=``) replace only the block after "fuse_in" — the official code's
``fusion_type`` switch point; everything else is unchanged:
``"conv1x1"`` one 1×1 conv, ``"conv3x3"`` one 3×3 conv, ``"parallel3x3"`` three parallel 3×3 convs (dilation 1)
merged like the SFM, ``"sfm"`` dilations (1, 3, 5) (paper default), ``"sfm_avg"`` SFM plus a per-RoI global
average (``MultiBranchFusionAvg`` of the "faster and better" head).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FUSIONS", "MultiBranchFusion", "ConvFusion", "build_fusion", "SFM", "SimpleSFM", "cat_channels",
           "init_conv"]

#: names accepted by :func:`build_fusion` (Table 4 rows + the faster head's averaged variant)
FUSIONS = ("conv1x1", "conv3x3", "parallel3x3", "sfm", "sfm_avg")


def init_conv(m: nn.Conv2d) -> None:
    """kaiming-normal fan_out (ReLU), bias 0 — every conv of the official head (ConvModule and plain 1×1 alike)."""
    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    if m.bias is not None:
        nn.init.zeros_(m.bias)


class MultiBranchFusion(nn.Module):
    """Parallel 3×3 convs (each + ReLU) summed, then a 1×1 ``merge`` conv without activation.

    Args:
        channels: C. dilations: one branch per entry, padding = dilation (SFM: 1, 3, 5).
        global_avg: add ``avg_pool2d(x, S)`` (per-RoI global mean, broadcast) to the sum before the merge
            (official ``MultiBranchFusionAvg``).
    Shapes: (N, C, S, S) → (N, C, S, S).
    """

    def __init__(self, channels: int, dilations: Sequence[int] = (1, 3, 5), global_avg: bool = False) -> None:
        super().__init__()
        self.dilations = tuple(int(d) for d in dilations)
        self.branches = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=d, dilation=d) for d in self.dilations)
        self.merge = nn.Conv2d(channels, channels, 1)
        self.global_avg = global_avg
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                init_conv(m)

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu_(self.branches[0](x))
        for b in self.branches[1:]:
            z = F.relu_(b(x))
            # in place without autograd (saves one (N, C, S, S) allocation per branch); autograd keeps y for ReLU
            y = y + z if y.requires_grad else y.add_(z)
        if self.global_avg:
            y = y + F.avg_pool2d(x, x.shape[-1])
        return self.merge(y)


class ConvFusion(nn.Module):
    """A single k×k conv C → C (Table 4 rows "1 single 1×1 Conv" and "1 single 3×3 Conv")."""

    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2)
        init_conv(self.conv)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


def build_fusion(kind: str, channels: int, dilations: Sequence[int] = (1, 3, 5)) -> nn.Module:
    """Fusion block by name (see :data:`FUSIONS`). Raises ValueError for an unknown name."""
    if kind == "sfm":
        return MultiBranchFusion(channels, dilations)
    if kind == "sfm_avg":
        return MultiBranchFusion(channels, dilations, global_avg=True)
    if kind == "parallel3x3":
        return MultiBranchFusion(channels, (1,) * len(tuple(dilations)))
    if kind == "conv3x3":
        return ConvFusion(channels, 3)
    if kind == "conv1x1":
        return ConvFusion(channels, 1)
    raise ValueError(f"unknown fusion {kind!r}; expected one of {FUSIONS}")


class SFM(nn.Module):
    """Semantic Fusion Module of the original (paper) head, official ``SFMStage``.

    Args:
        channels: C_k (256, 128, 64, ...). semantic_channels: channels of G (256).
        fusion / dilations: see :func:`build_fusion`.
        with_semantic: False for the Table 5 ablation "w/o semantic head": no semantic features or mask, so
            fuse_in takes C_k + 1 channels and transform_out gives C_k/2 − 1 (only the instance mask is re-attached).
        mask_use_sigmoid: feed σ(Z_k) (True in every official config) or raw logits.
    Forward:
        x (N, C_k, s, s) instance features F^k; instance_logits (N, 1, s, s) Z_k (label channel);
        sem_feats (N, C_k, s, s) = RoIAlign of ReLU(semantic_in(G)); sem_masks (N, 1, s, s) = RoIAlign of σ(Y)
        (both None when ``with_semantic`` is False) → F^{k+1} (N, C_k/2, 2s, 2s).
    """

    def __init__(
        self,
        channels: int,
        semantic_channels: int = 256,
        fusion: str = "sfm",
        dilations: Sequence[int] = (1, 3, 5),
        with_semantic: bool = True,
        mask_use_sigmoid: bool = True,
    ) -> None:
        super().__init__()
        c = channels
        self.channels = c
        self.with_semantic = with_semantic
        self.mask_use_sigmoid = mask_use_sigmoid
        n_masks = 2 if with_semantic else 1
        if c // 2 - n_masks < 1:
            raise ValueError(f"SFM with {c} channels cannot halve to {c // 2} and re-attach {n_masks} masks")
        if with_semantic:
            self.semantic_in = nn.Conv2d(semantic_channels, c, 1)
            self.semantic_out = nn.Conv2d(c, c, 1)
        self.fuse_in = nn.Conv2d(c + (c if with_semantic else 0) + n_masks, c, 1)
        self.fusion = build_fusion(fusion, c, dilations)
        self.transform_out = nn.Conv2d(c, c // 2 - n_masks, 1)
        for name in ("semantic_in", "semantic_out", "fuse_in", "transform_out"):
            if hasattr(self, name):
                init_conv(getattr(self, name))

    def _fuse(
        self, x: Tensor, m: Tensor, sem_feats: Tensor | None, sem_masks: Tensor | None
    ) -> Tensor:
        """ReLU(transform_out(ReLU(fusion(ReLU(fuse_in(concat))))) at s×s: (N, C_k/2 − n_masks, s, s)."""
        parts = [x]
        if self.with_semantic:
            parts.append(F.relu_(self.semantic_out(sem_feats)))
        parts.append(m)
        if self.with_semantic:
            parts.append(sem_masks)
        # ReLUs in place on fresh conv / interpolate outputs (their backward needs inputs only): no extra buffers
        f = F.relu_(self.fuse_in(cat_channels(parts)))
        f = F.relu_(self.fusion(f))
        return F.relu_(self.transform_out(f))

    def _masks(self, instance_logits: Tensor, sem_masks: Tensor | None) -> tuple[Tensor, Tensor | None]:
        m = instance_logits.sigmoid() if self.mask_use_sigmoid else instance_logits
        return m, (sem_masks if self.with_semantic else None)

    def forward(
        self, x: Tensor, instance_logits: Tensor, sem_feats: Tensor | None = None, sem_masks: Tensor | None = None
    ) -> Tensor:
        m, q = self._masks(instance_logits, sem_masks)
        f = self._fuse(x, m, sem_feats, q)
        f = F.relu_(F.interpolate(f, scale_factor=2, mode="bilinear", align_corners=False))
        size = f.shape[-2:]
        extra = [F.interpolate(m, size=size, mode="bilinear", align_corners=True)]
        if self.with_semantic:
            extra.append(F.interpolate(q, size=size, mode="bilinear", align_corners=True))
        return cat_channels([f] + extra)

    def forward_logits(
        self,
        x: Tensor,
        instance_logits: Tensor,
        sem_feats: Tensor | None,
        sem_masks: Tensor | None,
        weight: Tensor,
        bias: Tensor,
    ) -> Tensor:
        """Per-RoI 1×1 classifier row applied to :meth:`forward`'s output, without building F^{k+1} at 2s×2s.

        ``weight`` (N, C_k/2) and ``bias`` (N,) are each RoI's row of the next stage's classifier; returns its
        logits (N, 2s, 2s), equal to ``einsum("nchw,nc->nhw", forward(...), weight) + bias`` up to float32
        rounding. Exact because everything after the last ReLU is linear: Up(g) ≥ 0 for g ≥ 0 (bilinear weights are
        non-negative), so the outer ReLU is the identity, and a 1×1 conv commutes with bilinear upsampling (weights
        sum to 1). The classifier is therefore applied at s×s — one channel upsampled instead of C_k/2 − 2.
        """
        m, q = self._masks(instance_logits, sem_masks)
        g = self._fuse(x, m, sem_feats, q)
        cg = g.shape[1]
        feat = torch.einsum("nchw,nc->nhw", g, weight[:, :cg])[:, None]
        masks = m * weight[:, cg, None, None, None]
        if self.with_semantic:
            masks = masks + q * weight[:, cg + 1, None, None, None]
        size = (2 * g.shape[-2], 2 * g.shape[-1])
        out = F.interpolate(feat, size=size, mode="bilinear", align_corners=False)
        out = out + F.interpolate(masks, size=size, mode="bilinear", align_corners=True)
        return out[:, 0] + bias[:, None, None]


def cat_channels(parts: Sequence[Tensor]) -> Tensor:
    """``torch.cat(parts, dim=1)`` in channels-last when any part is channels-last.

    ``torch.cat`` returns NCHW unless every input suggests channels-last, and a 1-channel mask (N, 1, s, s) always
    suggests NCHW; the next conv (channels-last weights) would then copy the whole concatenation back. Here the
    single-channel parts are given channels-last strides first (a copy of N·s² values). Differentiable.
    """
    if any(p.dim() == 4 and p.shape[1] > 1 and p.is_contiguous(memory_format=torch.channels_last)
           and not p.is_contiguous() for p in parts):
        parts = [
            torch.empty_like(p, memory_format=torch.channels_last).copy_(p)
            if (p.shape[1] == 1 and p.stride(1) != 1) or not p.is_contiguous(memory_format=torch.channels_last)
            else p
            for p in parts
        ]
    return torch.cat(parts, dim=1)


class SimpleSFM(nn.Module):
    """SFM of the "faster and better" head (official ``SimpleSFMStage``, docs/models.md §2.8).

    concat[F^k, S_k, σ(Z_k)] → ReLU(1×1 → C_k) → ReLU(fusion) → ReLU(1×1 → C_k/2 − 1) → concat σ(Z_k)
    (before upsampling) → Up×2 (bilinear, align_corners=False, no ReLU) unless ``upsample=False``. S_k is the
    point-sampled RoI feature of ReLU(semantic_in(G)) with no output transform; no semantic mask.
    Forward: x (N, C_k, s, s), instance_logits (N, 1, s, s), sem_feats (N, C_k, s, s)
    → (N, C_k/2, 2s or s, 2s or s).
    """

    def __init__(
        self, channels: int, semantic_channels: int = 256, fusion: str = "sfm_avg", dilations: Sequence[int] = (1, 3, 5)
    ) -> None:
        super().__init__()
        c = channels
        self.channels = c
        self.semantic_in = nn.Conv2d(semantic_channels, c, 1)
        self.fuse_in = nn.Conv2d(2 * c + 1, c, 1)
        self.fusion = build_fusion(fusion, c, dilations)
        self.transform_out = nn.Conv2d(c, c // 2 - 1, 1)
        for m in (self.semantic_in, self.fuse_in, self.transform_out):
            init_conv(m)

    def forward(self, x: Tensor, instance_logits: Tensor, sem_feats: Tensor, upsample: bool = True) -> Tensor:
        m = instance_logits.sigmoid()
        f = F.relu_(self.fuse_in(torch.cat([x, sem_feats, m], dim=1)))
        f = F.relu_(self.fusion(f))
        f = F.relu_(self.transform_out(f))
        f = torch.cat([f, m], dim=1)
        if upsample:
            f = F.interpolate(f, scale_factor=2, mode="bilinear", align_corners=False)
        return f

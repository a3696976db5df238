"""Aligned multi-level RoIAlign (mmdet ``SingleRoIExtractor`` + mmcv ``RoIAlign(aligned=True, sampling_ratio=0)``).

torchvision's ``MultiScaleRoIAlign`` hard-codes ``aligned=False`` and ``sampling_ratio=2`` (docs/models.md §1.2, §9.3);
this pooler calls :func:`torchvision.ops.roi_align` with mmdet's settings and mmdet's level rule. Every model
(Mask R-CNN, PointRend, RefineMask, HTC) uses it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchvision.ops import roi_align

__all__ = ["boxes_to_rois", "map_roi_levels", "map_roi_levels_torchvision", "MultiLevelRoIAlign", "roi_pooler"]


def boxes_to_rois(boxes: Sequence[Tensor]) -> Tensor:
    """Per-image boxes → one (K, 5) tensor ``[batch_index, x1, y1, x2, y2]`` (pixels), K = Σ len(boxes[i])."""
    if len(boxes) == 0:
        return torch.zeros((0, 5))
    idx = torch.cat([torch.full_like(b[:, :1], i) for i, b in enumerate(boxes)], dim=0)
    return torch.cat([idx, torch.cat(list(boxes), dim=0)], dim=1)


def map_roi_levels(boxes: Tensor, num_levels: int = 4, finest_scale: float = 56.0) -> Tensor:
    """mmdet ``SingleRoIExtractor.map_roi_levels``: level index (0 = P2) for each box.

    ``k = clamp(floor(log2(sqrt(w·h) / finest_scale + 1e-6)), 0, num_levels − 1)`` with w, h in pixels (no +1).
    With 4 levels: sqrt(wh) < 112 → P2, < 224 → P3, < 448 → P4, else P5 (same split as torchvision's
    canonical 224 / level 4 rule).

    Args:
        boxes: (K, 4) x1, y1, x2, y2 in input pixels.
    Returns:
        (K,) int64 in [0, num_levels − 1].
    """
    scale = torch.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    lvls = torch.floor(torch.log2(scale / finest_scale + 1e-6))
    return lvls.clamp(min=0, max=num_levels - 1).long()


def map_roi_levels_torchvision(boxes: Tensor, num_levels: int = 4) -> Tensor:
    """torchvision ``LevelMapper(k_min=2, k_max=5, canonical_scale=224, canonical_level=4, eps=1e-6)`` as level
    indices 0… (0 = P2): ``clamp(floor(4 + log2(sqrt(w·h) / 224) + 1e-6), 2, 5) − 2``; computed by torchvision's
    own class. Same split as :func:`map_roi_levels` except for boxes within float rounding of a boundary.

    Args:
        boxes: (K, 4) x1, y1, x2, y2 in input pixels.
    Returns:
        (K,) int64 in [0, num_levels − 1].
    """
    from torchvision.ops.poolers import LevelMapper

    return LevelMapper(2, 2 + num_levels - 1, canonical_scale=224, canonical_level=4, eps=1e-6)([boxes])


class MultiLevelRoIAlign(nn.Module):
    """Pool RoIs from the FPN level chosen by :func:`map_roi_levels`.

    Args:
        featmap_names: feature keys, finest first (default P2–P5).
        strides: their strides in pixels (4, 8, 16, 32); ``spatial_scale = 1 / stride``.
        output_size: S (7 for the box head, 14 for mask heads).
        sampling_ratio: 0 = adaptive ⌈roi_size / S⌉ samples per bin (mmdet); 1 = one sample at each bin centre.
        aligned: half-pixel alignment (mmcv/detectron2 ``ROIAlignV2``); True for every model here.
        finest_scale: 56 (mmdet).

    Forward: ``features`` dict name → (B, C, H_l, W_l), ``boxes`` list of B tensors (K_i, 4) in input pixels
    → (Σ K_i, C, S, S), rows in the order of ``torch.cat(boxes)``.
    """

    def __init__(
        self,
        featmap_names: Sequence[str] = ("p2", "p3", "p4", "p5"),
        strides: Sequence[int] = (4, 8, 16, 32),
        output_size: int = 7,
        sampling_ratio: int = 0,
        aligned: bool = True,
        finest_scale: float = 56.0,
        level_rule: str = "mmdet",
    ) -> None:
        super().__init__()
        if len(featmap_names) != len(strides):
            raise ValueError("featmap_names and strides must have the same length")
        if level_rule not in ("mmdet", "torchvision"):
            raise ValueError(f"level_rule must be 'mmdet' or 'torchvision', got {level_rule!r}")
        self.level_rule = level_rule
        self.featmap_names = tuple(featmap_names)
        self.strides = tuple(strides)
        self.output_size = int(output_size)
        self.sampling_ratio = int(sampling_ratio)
        self.aligned = bool(aligned)
        self.finest_scale = float(finest_scale)

    def forward(self, features: dict[str, Tensor], boxes: Sequence[Tensor]) -> Tensor:
        feats = [features[n] for n in self.featmap_names]
        ref = feats[0]
        rois = boxes_to_rois(boxes).to(device=ref.device, dtype=ref.dtype)
        S = self.output_size
        out = ref.new_zeros((rois.shape[0], ref.shape[1], S, S))
        if rois.shape[0] == 0:
            return out
        if len(feats) == 1:
            return self._pool(feats[0], rois, self.strides[0])
        if self.level_rule == "torchvision":
            levels = map_roi_levels_torchvision(rois[:, 1:], len(feats))
        else:
            levels = map_roi_levels(rois[:, 1:], len(feats), self.finest_scale)
        for lvl, (feat, stride) in enumerate(zip(feats, self.strides)):
            idx = torch.nonzero(levels == lvl).squeeze(1)
            if idx.numel() > 0:
                out[idx] = self._pool(feat, rois[idx], stride).to(out.dtype)
        return out

    def _pool(self, feat: Tensor, rois: Tensor, stride: int) -> Tensor:
        return roi_align(
            feat,
            rois,
            output_size=(self.output_size, self.output_size),
            spatial_scale=1.0 / stride,
            sampling_ratio=self.sampling_ratio,
            aligned=self.aligned,
        )

    def extra_repr(self) -> str:
        return (
            f"featmap_names={self.featmap_names}, strides={self.strides}, output_size={self.output_size}, "
            f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}, finest_scale={self.finest_scale}, "
            f"level_rule={self.level_rule!r}"
        )


def roi_pooler(output_size: int, conventions: str = "mmdet") -> MultiLevelRoIAlign:
    """The P2–P5 pooler of a preset's conventions (``Preset.conventions``): mmdet ``SingleRoIExtractor`` (aligned,
    sampling 0) or torchvision ``MultiScaleRoIAlign`` (aligned=False, sampling_ratio=2, its level mapper)."""
    if conventions == "torchvision":
        return MultiLevelRoIAlign(output_size=output_size, sampling_ratio=2, aligned=False, level_rule="torchvision")
    if conventions != "mmdet":
        raise ValueError(f"unknown conventions {conventions!r}")
    return MultiLevelRoIAlign(output_size=output_size)


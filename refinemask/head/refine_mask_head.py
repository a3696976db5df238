"""The RefineMask mask branch (paper Sec. 3, Fig. 2; docs/models.md §2.2–2.8) on the shared mask-branch protocol.

Data flow (original head, COCO, K = 80 classes, N RoIs, B images; stage table of docs/models.md §2.3):

1. instance features F⁰ = 2 × [3×3 conv 256 + ReLU] (aligned RoIAlign 14×14 over P2–P5) → (N, 256, 14, 14)
2. semantic head on P2 (per image): G (B, 256, Hp/4, Wp/4) and semantic logits Y (B, 1, Hp/4, Wp/4)
3. for k = 0, 1, 2 (s_k = 14, 28, 56; C_k = 256, 128, 64): stage logits Z_k = label channel of a 1×1 conv
   C_k → K on F^k, then F^{k+1} = SFM_k(F^k, Z_k, RoIAlign_{s_k}(ReLU(1×1(G))), RoIAlign_{s_k}(σ(Y))) (2s_k, C_k/2)
4. Z_3 = label channel of a 1×1 conv 32 → K (or → 1, class-agnostic last stage) at 112×112.

Training: targets at every stage size (aligned RoIAlign of the GT bitmaps, ≥ 0.5, shared ``mask_targets``),
loss ``loss_mask`` = Σ λ_k L_k with full-mask BCE for stages 0–1 and the BAR loss (Eq. 2–4) for stages 2–3, and
``loss_semantic`` = BCE of Y against the union of GT masks. Inference: Eq. 5–6 merge from stage 1 (28×28) with
boundary width 1 → σ at 112×112, pasted by the trunk.

Speed (none of it changes the computed function; tests compare against the official head and the plain layout):
only the label channel of every stage's classifier is computed (a per-RoI dot product with the gathered weight
row, identical to slicing the K-channel output); the three stages' whole-map semantic 1×1 transforms run as one
convolution; each stage pools its semantic features and the semantic mask with one batched RoIAlign over all
images; the last SFM applies the final classifier at 56×56 before upsampling (:meth:`SFM.forward_logits`); at
inference every conv runs channels-last (``MaskBranch.inference_layout``) with ReLUs in place; RoIs are processed
in chunks of 100 at inference (official ``interval``), never one by one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import roi_align

from refinemask.config import Preset, RefineMaskConfig
from refinemask.detection.mask_branch import MaskBranch, RoIBatch
from refinemask.detection.masks import mask_targets
from refinemask.detection.poolers import MultiLevelRoIAlign, boxes_to_rois

from .boundary import merge_stage_logits, refine_mask_loss
from .semantic import SemanticHead, semantic_loss, semantic_target
from .sfm import SFM, SimpleSFM, init_conv

__all__ = ["RefineMaskBranch", "build_refinemask_branch", "point_roi_align", "stage_channels"]


def stage_channels(cfg: RefineMaskConfig) -> list[int]:
    """Instance-feature channels entering every stage: 256, 128, 64, 32 for the default 4 outputs."""
    return [cfg.channels // 2**k for k in range(len(cfg.stage_sizes))]


def point_roi_align(feat: Tensor, rois: Tensor, size: int, spatial_scale: float) -> Tensor:
    """mmcv ``SimpleRoIAlign`` (aligned): one bilinear sample at each of the size×size bin centres of every RoI.

    Sample (i, j) of RoI (x1, y1, x2, y2) is at image point (x1 + (j + 0.5)/size · w, y1 + (i + 0.5)/size · h),
    read with ``grid_sample(align_corners=False, zeros outside)`` at normalised coordinate 2·p·scale/W − 1.

    Args:
        feat: (B, C, H, W). rois: (N, 5) [batch index, x1, y1, x2, y2] in input pixels.
    Returns:
        (N, C, size, size).
    """
    n = rois.shape[0]
    b, c, h, w = feat.shape
    out = feat.new_zeros((n, c, size, size))
    if n == 0:
        return out
    t = (torch.arange(size, device=feat.device, dtype=feat.dtype) + 0.5) / size
    r = rois.to(feat.dtype)
    xs = r[:, 1:2] + t[None] * (r[:, 3:4] - r[:, 1:2])  # (N, size)
    ys = r[:, 2:3] + t[None] * (r[:, 4:5] - r[:, 2:3])
    gx = 2.0 * xs * spatial_scale / w - 1.0
    gy = 2.0 * ys * spatial_scale / h - 1.0
    grid = torch.stack([gx[:, None, :].expand(n, size, size), gy[:, :, None].expand(n, size, size)], dim=-1)
    batch_idx = rois[:, 0].long()
    for i in range(b):  # one grid_sample per image (mmcv loops the same way); RoIs of an image are batched
        idx = torch.nonzero(batch_idx == i).squeeze(1)
        if idx.numel() == 0:
            continue
        g = grid[idx].reshape(1, idx.numel(), size * size, 2)
        s = F.grid_sample(feat[i:i + 1], g, mode="bilinear", padding_mode="zeros", align_corners=False)
        out[idx] = s[0].permute(1, 0, 2).reshape(idx.numel(), c, size, size)
    return out


class RefineMaskBranch(MaskBranch):
    """RefineMask mask head (``head="original"``: the paper's ``RefineMaskHead``; ``"simple"``: the official
    "faster and better" ``SimpleRefineMaskHead``).

    Args:
        num_classes: K (80 COCO, 1203 LVIS, 8 Cityscapes).
        cfg: :class:`~refinemask.config.RefineMaskConfig`.
        in_channels: FPN width (256). pooler: 14×14 aligned multi-level RoIAlign by default.

    Modules: ``pooler``; ``instance_convs`` (2 × 3×3); ``semantic_head`` (``convs`` 4 × 3×3, ``logits`` 1×1;
    None in the Table 5 ablation); ``stages`` (one :class:`SFM`/:class:`SimpleSFM` per refinement stage);
    ``stage_logits`` (one 1×1 classifier per supervised stage, ``stage_logits[-1]`` is the final one).

    Protocol: :meth:`forward` returns the merged final logits (N, 1, S, S) (label channel, S = 112);
    :meth:`forward_stages` the per-stage logits and semantic logits; :meth:`forward_train` the loss dict
    ``{"loss_mask", "loss_semantic"}``; :meth:`predict` σ of the merged logits (N, S, S).
    """

    def __init__(
        self,
        num_classes: int,
        cfg: RefineMaskConfig = RefineMaskConfig(),
        *,
        in_channels: int = 256,
        pooler: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.cfg = cfg
        self.mask_size = cfg.output_size
        self.simple = cfg.head == "simple"
        self.pooler = pooler or MultiLevelRoIAlign(output_size=cfg.roi_size)
        ch = stage_channels(cfg)
        c = cfg.channels
        self.instance_convs = nn.ModuleList(
            nn.Conv2d(in_channels if i == 0 else c, c, 3, padding=1) for i in range(cfg.num_instance_convs)
        )
        sem_ch = 256
        self.semantic_head = (
            SemanticHead(in_channels, sem_ch, cfg.num_semantic_convs, with_logits=not self.simple)
            if cfg.semantic_head
            else None
        )
        if self.simple:
            self.stages = nn.ModuleList(
                SimpleSFM(ch[k], sem_ch, cfg.fusion, cfg.dilations) for k in range(cfg.num_refine_stages)
            )
        else:
            self.stages = nn.ModuleList(
                SFM(ch[k], sem_ch, cfg.fusion, cfg.dilations, cfg.semantic_head, cfg.mask_use_sigmoid)
                for k in range(cfg.num_refine_stages)
            )
        last = len(cfg.stage_sizes) - 1
        self.stage_num_classes = [
            1 if cfg.class_agnostic or (cfg.last_stage_class_agnostic and k == last) else num_classes
            for k in range(last + 1)
        ]
        self.stage_logits = nn.ModuleList(nn.Conv2d(ch[k], self.stage_num_classes[k], 1) for k in range(last + 1))
        for m in list(self.instance_convs) + list(self.stage_logits):
            init_conv(m)

    # -- building blocks ----------------------------------------------------------------------------------
    def _label_weight(self, k: int, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Each RoI's row of ``stage_logits[k]``: weight (N, C), bias (N,) (row 0 for a class-agnostic stage)."""
        conv = self.stage_logits[k]
        idx = labels if conv.out_channels > 1 else torch.zeros_like(labels)
        return conv.weight[idx, :, 0, 0], conv.bias[idx]

    def _label_logits(self, k: int, x: Tensor, labels: Tensor) -> Tensor:
        """Label channel of ``stage_logits[k](x)``: (N, C, s, s) → (N, s, s), without computing the other K−1."""
        w, b = self._label_weight(k, labels)
        return torch.einsum("nchw,nc->nhw", x, w) + b[:, None, None]

    def _semantic_maps(self, p2: Tensor) -> tuple[Tensor | None, list[Tensor | None], Tensor | None]:
        """Whole-image semantic work, once per batch.

        Returns: (Y logits, per-stage ReLU(semantic_in(G)) from one fused 1×1 conv, map pooled as semantic mask).
        """
        if self.semantic_head is None:
            return None, [None] * len(self.stages), None
        g, y = self.semantic_head(p2)
        if len(self.stages) == 0:
            return y, [], None
        weight = torch.cat([s.semantic_in.weight for s in self.stages], dim=0)
        bias = torch.cat([s.semantic_in.bias for s in self.stages], dim=0)
        maps = list(F.relu_(F.conv2d(g, weight, bias)).split([s.semantic_in.out_channels for s in self.stages], dim=1))
        mask_map = None
        if y is not None:
            mask_map = y.sigmoid() if self.cfg.mask_use_sigmoid else y
        return y, maps, mask_map

    def _run_stages(
        self,
        x: Tensor,
        rois: Tensor,
        labels: Tensor,
        maps: Sequence[Tensor | None],
        mask_map: Tensor | None,
    ) -> list[Tensor]:
        """Instance convs + all stages on pooled 14×14 features x (N, 256, 14, 14) → list of (N, S_k, S_k) logits."""
        cfg = self.cfg
        for conv in self.instance_convs:
            x = F.relu_(conv(x))
        scale = 1.0 / cfg.semantic_stride
        outs: list[Tensor] = []
        n_stages = len(self.stages)
        for k, stage in enumerate(self.stages):
            s = cfg.stage_sizes[k]
            z = self._label_logits(k, x, labels)
            outs.append(z)
            if self.simple:
                sem = point_roi_align(maps[k], rois, s, scale)
                x = stage(x, z[:, None], sem, upsample=cfg.pre_upsample_last_stage or k < n_stages - 1)
            else:
                sem, q = None, None
                if maps[k] is not None:
                    pooled = roi_align(torch.cat([maps[k], mask_map], dim=1), rois, (s, s), scale, 0, True)
                    sem, q = self.inference_layout(pooled[:, :-1]), pooled[:, -1:]
                if k == n_stages - 1:  # the last SFM feeds only the final classifier: apply it before upsampling
                    outs.append(stage.forward_logits(x, z[:, None], sem, q, *self._label_weight(n_stages, labels)))
                    return outs
                x = stage(x, z[:, None], sem, q)
        z = self._label_logits(n_stages, x, labels)
        if self.simple and not cfg.pre_upsample_last_stage:
            z = F.interpolate(z[:, None], scale_factor=2, mode="bilinear", align_corners=True)[:, 0]
        outs.append(z)
        return outs

    def _merge(self, stage_logits: Sequence[Tensor]) -> Tensor:
        cfg = self.cfg
        if not cfg.bar:
            return stage_logits[-1]
        return merge_stage_logits(stage_logits, cfg.start_stage, cfg.boundary_width_test, cfg.boundary_threshold)

    # -- protocol -------------------------------------------------------------------------------------------
    def forward_stages(self, rois: RoIBatch) -> tuple[list[Tensor], Tensor | None]:
        """All stage outputs: (list of (N, S_k, S_k) label-channel logits, stage 0 first; semantic logits
        (B, 1, Hp/4, Wp/4) or None). Rows follow ``torch.cat(boxes)``; labels in [0, K)."""
        features, boxes, labels = rois.features, rois.boxes, rois.labels
        p2 = features["p2"]
        roi_boxes = boxes_to_rois(boxes).to(device=p2.device, dtype=p2.dtype)
        lab = self._cat_labels(labels, p2.device)
        y, maps, mask_map = self._semantic_maps(self.inference_layout(p2))
        x = self.inference_layout(self.pooler(features, boxes))
        return self._run_stages(x, roi_boxes, lab, maps, mask_map), y

    def forward(self, rois: RoIBatch) -> Tensor:
        """Final logits (N, 1, S, S) of the label channel: the Eq. 5–6 merge of the stages from ``start_stage``
        (or the last stage alone when ``bar`` is off). Processes ``test_chunk_size`` RoIs per call in eval mode."""
        features, boxes, labels = rois.features, rois.boxes, rois.labels
        p2 = features["p2"]
        roi_boxes = boxes_to_rois(boxes).to(device=p2.device, dtype=p2.dtype)
        lab = self._cat_labels(labels, p2.device)
        n = roi_boxes.shape[0]
        if n == 0:
            return p2.new_zeros((0, 1, self.mask_size, self.mask_size))
        _, maps, mask_map = self._semantic_maps(self.inference_layout(p2))
        x = self.inference_layout(self.pooler(features, boxes))
        step = n if self.training else max(1, self.cfg.test_chunk_size)
        out = [
            self._merge(self._run_stages(x[i:i + step], roi_boxes[i:i + step], lab[i:i + step], maps, mask_map))
            for i in range(0, n, step)
        ]
        return torch.cat(out, dim=0)[:, None]

    def forward_train(self, rois: RoIBatch) -> dict[str, Tensor]:
        """Losses for the sampled positive RoIs: ``loss_mask`` (Σ λ_k L_k, BAR for the later stages) and
        ``loss_semantic`` (weight 1.0; absent without a semantic classifier). Already weighted."""
        features, boxes, gt_masks, matched_idxs = rois.features, rois.boxes, rois.gt_masks, rois.matched_idxs
        cfg = self.cfg
        stage_logits, sem_logits = self.forward_stages(rois)
        device = stage_logits[0].device
        # float copies of the matched GT masks only (full padded resolution; converted once for the 4 sizes)
        used_masks, used_idx = [], []
        for m, i in zip(gt_masks, matched_idxs):
            i = i.to(device=device, dtype=torch.long)
            uniq, inverse = torch.unique(i, return_inverse=True)
            used_masks.append(m.to(device)[uniq].to(torch.float32))
            used_idx.append(inverse.reshape(-1))
        targets = []
        for s in cfg.stage_sizes:
            per_img = [mask_targets(m, b.to(device), i, s) for m, b, i in zip(used_masks, boxes, used_idx)]
            targets.append(torch.cat(per_img, dim=0) if per_img else stage_logits[0].new_zeros((0, s, s)))
        loss_mask, _ = refine_mask_loss(
            stage_logits,
            targets,
            cfg.stage_loss_weights,
            bar=cfg.bar,
            start_stage=cfg.start_stage,
            boundary_width=cfg.boundary_width_train,
            threshold=cfg.boundary_threshold,
        )
        losses = {"loss_mask": loss_mask}
        if sem_logits is not None:
            p2 = features["p2"]
            padded = (p2.shape[-2] * cfg.semantic_stride, p2.shape[-1] * cfg.semantic_stride)
            tgt = semantic_target([m.to(device) for m in gt_masks], sem_logits.shape[-2:], padded)
            losses["loss_semantic"] = cfg.semantic_loss_weight * semantic_loss(sem_logits, tgt)
        return losses

    @torch.no_grad()
    def predict(self, rois: RoIBatch) -> Tensor:
        """(N, S, S) foreground probabilities σ(M'_last) at 112×112, ready for the trunk's paste (≥ 0.5)."""
        return self(rois)[:, 0].sigmoid()

    @staticmethod
    def _cat_labels(labels: Sequence[Tensor], device) -> Tensor:
        if len(labels) == 0:
            return torch.zeros(0, dtype=torch.long, device=device)
        return torch.cat([l.to(device=device, dtype=torch.long) for l in labels])

    def extra_repr(self) -> str:
        c = self.cfg
        return (
            f"head={c.head}, num_classes={self.num_classes}, stage_sizes={c.stage_sizes}, "
            f"stage_num_classes={self.stage_num_classes}, fusion={c.fusion}, bar={c.bar}, "
            f"semantic_head={c.semantic_head}"
        )


def build_refinemask_branch(preset: Preset) -> RefineMaskBranch:
    """The mask branch of a RefineMask preset (registered for :class:`RefineMaskConfig` in ``refinemask.models``).

    Uses ``preset.mask_head_cfg`` (a :class:`RefineMaskConfig`) and ``preset.num_classes``;
    ``preset.mask_class_agnostic`` makes every stage class-agnostic.
    Raises TypeError if ``mask_head_cfg`` is another config type.
    """
    cfg = preset.mask_head_cfg
    if not isinstance(cfg, RefineMaskConfig):
        raise TypeError(f"preset {preset.name!r}: mask_head_cfg must be a RefineMaskConfig, got {type(cfg).__name__}")
    if preset.mask_class_agnostic and not cfg.class_agnostic:
        from dataclasses import replace

        cfg = replace(cfg, class_agnostic=True)
    return RefineMaskBranch(preset.num_classes, cfg)

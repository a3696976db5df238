"""Region Proposal Network with mmdetection-2.x settings (docs/models.md §1.1, §1.2).

Differences from torchvision's ``RegionProposalNetwork`` that this module removes:

* anchors are not rounded and use the fixed FPN strides 4…64 (torchvision derives strides as
  ``image_size // grid_size``, which is 61 rather than 64 for P6 of an 800-pixel-high input);
* low-quality matches need IoU ≥ 0.3 and go to *every* anchor tied for a GT's best IoU (mmdet
  ``MaxIoUAssigner(min_pos_iou=0.3, gt_max_assign_all=True)``);
* regression loss is plain L1 (mmdet ``L1Loss``), not smooth-L1 β = 1/9;
* 1000 post-NMS proposals per image in training (torchvision: 2000); no small-box filter (min size 0);
* in the loss, anchors outside an image's own padded extent (batch padding only) are ignored
  (mmdet ``valid_flags`` with ``allowed_border=-1``).

Reused torchvision parts: ``BoxCoder`` (δ encoding with dw/dh clamp log(1000/16)), ``BalancedPositiveNegativeSampler``
(random 256 anchors, 50 % positive), ``box_iou``, ``batched_nms``, ``clip_boxes_to_image``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler, BoxCoder
from torchvision.ops import batched_nms, box_iou, clip_boxes_to_image, remove_small_boxes

from refinemask.config import RPNConfig

__all__ = [
    "ASSIGN_NEGATIVE",
    "ASSIGN_IGNORE",
    "max_iou_assign",
    "AnchorGenerator",
    "RPNHead",
    "RPNConfig",
    "RegionProposalNetwork",
]

#: values of :func:`max_iou_assign` for anchors/proposals that are background or ignored
ASSIGN_NEGATIVE = -1
ASSIGN_IGNORE = -2


def max_iou_assign(
    iou: Tensor,
    pos_thr: float,
    neg_thr: float,
    min_pos_iou: float,
    match_low_quality: bool = True,
) -> Tensor:
    """mmdet ``MaxIoUAssigner.assign_wrt_overlaps`` (gt_max_assign_all=True).

    Args:
        iou: (G, A) IoU between G GT boxes and A anchors/proposals.
        pos_thr: IoU ≥ pos_thr → positive (assigned to its best GT).
        neg_thr: 0 ≤ IoU < neg_thr → negative.
        min_pos_iou: low-quality step: for each GT whose best IoU ≥ min_pos_iou, every anchor whose IoU with it
            equals that best value is assigned to it (later GTs override earlier ones, as mmdet's loop does).
        match_low_quality: enable the low-quality step.
    Returns:
        (A,) int64: GT index ≥ 0, :data:`ASSIGN_NEGATIVE` (−1) or :data:`ASSIGN_IGNORE` (−2, between thresholds).
    """
    g, a = iou.shape
    if g == 0:
        return torch.full((a,), ASSIGN_NEGATIVE, dtype=torch.long, device=iou.device)
    max_iou, argmax = iou.max(dim=0)
    assigned = torch.full((a,), ASSIGN_IGNORE, dtype=torch.long, device=iou.device)
    assigned[(max_iou >= 0) & (max_iou < neg_thr)] = ASSIGN_NEGATIVE
    pos = max_iou >= pos_thr
    assigned[pos] = argmax[pos]
    if match_low_quality:
        gt_max = iou.max(dim=1).values  # (G,)
        hit = (iou == gt_max[:, None]) & (gt_max[:, None] >= min_pos_iou)  # (G, A)
        any_hit = hit.any(dim=0)
        if bool(any_hit.any()):
            # last GT (in index order) that hits each anchor
            last = g - 1 - hit.flip(0).to(torch.uint8).argmax(dim=0)
            assigned[any_hit] = last[any_hit]
    return assigned


class AnchorGenerator(nn.Module):
    """mmdet ``AnchorGenerator(scales=[8], ratios=[0.5, 1, 2], strides=[4, 8, 16, 32, 64])``.

    Per level l with stride s: base size s·scale, ratio r = h/w, w = s·scale/√r, h = s·scale·√r, centred on
    (s·j, s·i) (center offset 0), **not rounded**. Anchor order per level: row-major (y, x) then A anchors
    (ratio-major, scale-minor) — the order of the RPN head's channels.

    ``torchvision=True`` reproduces ``torchvision.models.detection.anchor_utils.AnchorGenerator`` (sizes 32…512,
    the same ratios): base anchors ``round()``-ed to integers and grid strides ``padded size // grid size``
    (e.g. 61, not 64, for P6 of an 800-pixel-high input); then :meth:`forward` needs ``image_size``.
    """

    def __init__(
        self,
        strides: Sequence[int] = (4, 8, 16, 32, 64),
        scales: Sequence[float] = (8.0,),
        ratios: Sequence[float] = (0.5, 1.0, 2.0),
        *,
        torchvision: bool = False,
    ) -> None:
        super().__init__()
        self.strides = tuple(int(s) for s in strides)
        self.scales = tuple(float(s) for s in scales)
        self.ratios = tuple(float(r) for r in ratios)
        self.torchvision = bool(torchvision)

    @property
    def num_anchors_per_location(self) -> int:
        return len(self.scales) * len(self.ratios)

    def base_anchors(self, stride: int, device=None) -> Tensor:
        """(A, 4) zero-centred anchors of one level."""
        ratios = torch.tensor(self.ratios, dtype=torch.float32, device=device)
        scales = torch.tensor(self.scales, dtype=torch.float32, device=device)
        h_ratios = torch.sqrt(ratios)
        w_ratios = 1.0 / h_ratios
        if self.torchvision:  # torchvision generate_anchors: sizes = stride · scale, then round
            sizes = torch.tensor([stride * s for s in self.scales], dtype=torch.float32, device=device)
            ws = (w_ratios[:, None] * sizes[None, :]).reshape(-1)
            hs = (h_ratios[:, None] * sizes[None, :]).reshape(-1)
            return (torch.stack([-ws, -hs, ws, hs], dim=1) / 2).round()
        ws = (stride * w_ratios[:, None] * scales[None, :]).reshape(-1)
        hs = (stride * h_ratios[:, None] * scales[None, :]).reshape(-1)
        return torch.stack([-0.5 * ws, -0.5 * hs, 0.5 * ws, 0.5 * hs], dim=1)

    def forward(self, feature_sizes: Sequence[tuple[int, int]], device=None,
                image_size: tuple[int, int] | None = None) -> list[Tensor]:
        """Anchors per level: list of (H_l·W_l·A, 4) in input pixels, for grid sizes ``feature_sizes``.

        ``image_size``: the padded (H, W) of the batch; required with ``torchvision=True`` (grid strides
        ``H // H_l``, ``W // W_l``), ignored otherwise. Raises ValueError on a level-count mismatch.
        """
        if len(feature_sizes) != len(self.strides):
            raise ValueError(f"got {len(feature_sizes)} feature levels for {len(self.strides)} strides")
        if self.torchvision and image_size is None:
            raise ValueError("AnchorGenerator(torchvision=True) needs the padded image_size")
        out = []
        for (h, w), s in zip(feature_sizes, self.strides):
            sy_, sx_ = (int(image_size[0]) // int(h), int(image_size[1]) // int(w)) if self.torchvision else (s, s)
            sx = torch.arange(w, dtype=torch.float32, device=device) * sx_
            sy = torch.arange(h, dtype=torch.float32, device=device) * sy_
            yy, xx = torch.meshgrid(sy, sx, indexing="ij")
            shifts = torch.stack([xx, yy, xx, yy], dim=-1).reshape(-1, 1, 4)
            out.append((shifts + self.base_anchors(s, device)[None]).reshape(-1, 4))
        return out


class RPNHead(nn.Module):
    """mmdet ``RPNHead``: 3×3 conv + ReLU, 1×1 objectness (A, sigmoid) and 1×1 deltas (4A); init N(0, 0.01), bias 0.

    Forward: list of L maps (B, C, H_l, W_l) → (objectness list of (B, A, H_l, W_l), deltas list of (B, 4A, H_l, W_l)).
    """

    def __init__(self, in_channels: int = 256, num_anchors: int = 3, feat_channels: int = 256) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, feat_channels, 3, padding=1)
        self.cls_logits = nn.Conv2d(feat_channels, num_anchors, 1)
        self.bbox_pred = nn.Conv2d(feat_channels, num_anchors * 4, 1)
        for m in (self.conv, self.cls_logits, self.bbox_pred):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)

    def forward(self, features: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        logits, deltas = [], []
        for x in features:
            t = F.relu(self.conv(x))
            logits.append(self.cls_logits(t))
            deltas.append(self.bbox_pred(t))
        return logits, deltas


def _flatten(maps: Sequence[Tensor], c: int) -> Tensor:
    """list of (B, A·c, H, W) → (B, Σ H·W·A, c) in (y, x, anchor) order."""
    out = []
    for m in maps:
        b, ac, h, w = m.shape
        a = ac // c
        out.append(m.view(b, a, c, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, c))
    return torch.cat(out, dim=1)


class RegionProposalNetwork(nn.Module):
    """Anchors → objectness/deltas → per-level top-k → NMS 0.7 (per level) → top-N proposals; losses in training.

    Forward:
        features: dict of FPN maps, finest first, one per anchor stride (P2–P6).
        image_sizes: B × (h, w) resized, unpadded image sizes (proposals are clipped to them).
        targets: training only; B dicts with ``"boxes"`` (G_i, 4) in input pixels.
    Returns:
        proposals: B tensors (≤ post_nms_top_n, 4) sorted by objectness (detached).
        losses: ``{"loss_rpn_cls", "loss_rpn_bbox"}`` in training, else ``{}``.
    Raises:
        ValueError: training without targets.

    ``min_size`` > 0 drops proposals narrower or shorter than it (pixels) before NMS (torchvision: 1e-3);
    0 keeps every box (mmdet 2.x with ``min_bbox_size=0``).
    """

    def __init__(
        self,
        head: RPNHead | None = None,
        anchor_generator: AnchorGenerator | None = None,
        cfg: RPNConfig = RPNConfig(),
        size_divisor: int = 32,
        min_size: float = 0.0,
    ) -> None:
        super().__init__()
        self.size_divisor = size_divisor
        self.min_size = float(min_size)
        self.anchor_generator = anchor_generator or AnchorGenerator()
        self.head = head or RPNHead(num_anchors=self.anchor_generator.num_anchors_per_location)
        self.cfg = cfg
        self.box_coder = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))
        self.sampler = BalancedPositiveNegativeSampler(cfg.batch_size_per_image, cfg.positive_fraction)

    def forward(
        self,
        features: dict[str, Tensor],
        image_sizes: Sequence[tuple[int, int]],
        targets: Sequence[dict[str, Tensor]] | None = None,
    ) -> tuple[list[Tensor], dict[str, Tensor]]:
        feats = list(features.values())
        logits, deltas = self.head(feats)
        stride0 = self.anchor_generator.strides[0]  # the padded batch size, exact: padding is a multiple of 32
        padded = (feats[0].shape[-2] * stride0, feats[0].shape[-1] * stride0)
        anchors_per_level = self.anchor_generator([f.shape[-2:] for f in feats], device=feats[0].device,
                                                  image_size=padded)
        num_per_level = [a.shape[0] for a in anchors_per_level]
        anchors = torch.cat(anchors_per_level, dim=0)
        objectness = _flatten(logits, 1)[..., 0]  # (B, A_total)
        box_deltas = _flatten(deltas, 4)  # (B, A_total, 4)

        proposals = self._proposals(anchors, objectness.detach(), box_deltas.detach(), num_per_level, image_sizes)
        losses: dict[str, Tensor] = {}
        if self.training:
            if targets is None:
                raise ValueError("RegionProposalNetwork: targets are required in training mode")
            valid = self._valid_flags([f.shape[-2:] for f in feats], image_sizes, anchors.device)
            losses = self._losses(anchors, objectness, box_deltas, targets, valid)
        return proposals, losses

    def _valid_flags(self, feature_sizes, image_sizes, device) -> list[Tensor]:
        """mmdet ``AnchorGenerator.valid_flags``: per image, anchors on grid cells inside that image's own
        padded extent (its size rounded up to ``size_divisor``); cells that only exist because of batch padding
        are ignored in the loss (they matter only for batches of differently sized images)."""
        d = self.size_divisor
        a = self.anchor_generator.num_anchors_per_location
        out = []
        for h, w in image_sizes:
            ph, pw = -(-h // d) * d, -(-w // d) * d
            flags = []
            for (fh, fw), s in zip(feature_sizes, self.anchor_generator.strides):
                vh, vw = min(-(-ph // s), fh), min(-(-pw // s), fw)
                ys = torch.arange(fh, device=device) < vh
                xs = torch.arange(fw, device=device) < vw
                flags.append((ys[:, None] & xs[None, :])[..., None].expand(fh, fw, a).reshape(-1))
            out.append(torch.cat(flags))
        return out

    def _proposals(self, anchors, objectness, deltas, num_per_level, image_sizes) -> list[Tensor]:
        pre_n = self.cfg.pre_nms_top_n_train if self.training else self.cfg.pre_nms_top_n_test
        post_n = self.cfg.post_nms_top_n_train if self.training else self.cfg.post_nms_top_n_test
        out = []
        for b, size in enumerate(image_sizes):
            sel_scores, sel_idx, sel_lvl = [], [], []
            offset = 0
            for lvl, n in enumerate(num_per_level):
                s = objectness[b, offset:offset + n]
                k = min(pre_n, n)
                top, idx = s.topk(k)
                sel_scores.append(top)
                sel_idx.append(idx + offset)
                sel_lvl.append(torch.full((k,), lvl, dtype=torch.long, device=s.device))
                offset += n
            idx = torch.cat(sel_idx)
            scores = torch.cat(sel_scores).sigmoid()
            lvls = torch.cat(sel_lvl)
            boxes = self.box_coder.decode_single(deltas[b, idx], anchors[idx])
            boxes = clip_boxes_to_image(boxes, tuple(size))
            if self.min_size > 0:
                small = remove_small_boxes(boxes, self.min_size)
                boxes, scores, lvls = boxes[small], scores[small], lvls[small]
            keep = batched_nms(boxes, scores, lvls, self.cfg.nms_thresh)[:post_n]
            out.append(boxes[keep])
        return out

    def _losses(self, anchors, objectness, deltas, targets, valid) -> dict[str, Tensor]:
        cfg = self.cfg
        labels, reg_targets = [], []
        for t, v in zip(targets, valid):
            gt = t["boxes"].to(anchors)
            assigned = max_iou_assign(box_iou(gt, anchors), cfg.pos_iou_thr, cfg.neg_iou_thr, cfg.min_pos_iou)
            lab = torch.full_like(assigned, -1, dtype=torch.float32)  # -1 ignore, 0 neg, 1 pos
            lab[assigned == ASSIGN_NEGATIVE] = 0.0
            lab[assigned >= 0] = 1.0
            lab[~v] = -1.0
            labels.append(lab)
            matched = gt[assigned.clamp(min=0)] if gt.numel() else torch.zeros_like(anchors)
            reg_targets.append(self.box_coder.encode_single(matched, anchors))
        pos_masks, neg_masks = self.sampler(labels)
        pos = torch.cat(pos_masks).bool()
        sampled = pos | torch.cat(neg_masks).bool()
        num = max(int(sampled.sum()), 1)
        obj = objectness.reshape(-1)
        lab = torch.cat(labels)
        loss_cls = F.binary_cross_entropy_with_logits(obj[sampled], lab[sampled], reduction="sum") / num
        pred = deltas.reshape(-1, 4)[pos]
        tgt = torch.cat(reg_targets)[pos]
        if cfg.loss_bbox == "l1":
            loss_bbox = F.l1_loss(pred, tgt, reduction="sum") / num
        elif cfg.loss_bbox == "smooth_l1":
            loss_bbox = F.smooth_l1_loss(pred, tgt, beta=cfg.smooth_l1_beta, reduction="sum") / num
        else:
            raise ValueError(f"unknown RPN loss_bbox {cfg.loss_bbox!r}")
        return {"loss_rpn_cls": cfg.loss_cls_weight * loss_cls, "loss_rpn_bbox": cfg.loss_bbox_weight * loss_bbox}

"""PointRend mask branch (Kirillov et al., CVPR 2020) on the shared mask-branch protocol (docs/models.md §4, §9.7).

mmdetection 2.x is the default (``PointRendRoIHead`` + ``CoarseMaskHead`` + ``MaskPointHead``,
docs/models.md §4.1);
``PointRendConfig(variant="detectron2")`` switches to detectron2's ``PointRendMaskHead`` behaviour
(docs/models.md §4.2).

Pipeline for N RoIs (boxes in input pixels, C = 80 classes):

1. **Coarse features**: 14×14 bin-centre samples of P2 (stride 4) inside every box (mmcv ``SimpleRoIAlign`` =
   one bilinear ``grid_sample`` per bin centre ≡ aligned RoIAlign with ``sampling_ratio=1`` away from the image
   border) → (N, 256, 14, 14). Only P2 is used, whatever the box size.
2. **Coarse head**: 2×2 stride-2 conv 256 + ReLU → (N, 256, 7, 7) → flatten 12544 → FC 1024 + ReLU → FC 1024 +
   ReLU → FC C·49 → (N, C, 7, 7) logits. Loss ``loss_mask``: BCE on the GT-class channel against 7×7 targets
   (aligned RoIAlign of the GT bitmap, ≥ 0.5).
3. **Points** (training): 3·196 = 588 uniform candidates in [0, 1]² per box; uncertainty = −|coarse logit of the GT
   class| bilinearly interpolated at each candidate; keep the 147 most uncertain, add 49 fresh uniform points →
   196 points.
4. **Point head**: per point, fine feature (256, bilinear sample of P2 at the point) ⊕ coarse feature (C logits
   sampled from the 7×7 map) → 3 × [Conv1d 1×1 → 256 + ReLU, re-attach the C coarse logits] → Conv1d → C.
   Loss ``loss_point``: BCE on the GT-class channel against the GT bitmap bilinearly sampled at the points (soft
   targets), mean over N·196.
5. **Inference** (adaptive subdivision): from the 7×7 predicted-class logits, 5 steps of ×2 bilinear upsampling
   (align_corners=False); each step recomputes the 28·28 = 784 most uncertain cells with the point head (cell
   centres), skipping a step whose successor recomputes every cell anyway → 14 (skipped), 28 (all cells), 56, 112,
   224. Output: (N, 224, 224) probabilities, pasted by the trunk (≥ 0.5). Only the predicted-class channel is
   carried (docs/models.md §4.2 memory tip; identical masks).

Point coordinates are relative to the box, (x, y) ∈ [0, 1]²; a point maps to image pixel ``x1 + x·(x2 − x1)`` and to
feature-map position ``pixel / stride − 0.5`` (``grid_sample(align_corners=False)``), mmcv's
``rel_roi_point_to_rel_img_point`` + ``point_sample``.

Parameter names follow mmdet (``mask_head.downsample_conv``, ``mask_head.fcs.{0,1}``, ``mask_head.fc_logits``,
``point_head.fcs.{0,1,2}``, ``point_head.fc_logits``; mmdet's ``ConvModule`` adds a ``.conv`` level) — see
``baselines/convert.py``. Parameters: coarse head 18,176,080 + point head 285,776 (docs/models.md §7).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from baselines.presets import POINT_REND_VARIANTS, PointRendConfig
from refinemask.config import Preset
from refinemask.detection.mask_branch import MaskBranch, RoIBatch, mask_bce_loss, select_class_channel

__all__ = [
    "PointRendConfig",
    "point_sample",
    "roi_points_to_image",
    "regular_grid_points",
    "sample_point_features",
    "sample_masks_at_points",
    "point_uncertainty",
    "uncertain_point_coords_with_randomness",
    "uncertain_grid_points",
    "subdivision_inference",
    "CoarseMaskHead",
    "MaskPointHead",
    "PointRendBranch",
    "build_point_rend_branch",
]


# ----------------------------------------------------------------------------------------------------------------
# point operations (mmcv.ops.point_sample / detectron2 point_features.py, with grid_sample)
# ----------------------------------------------------------------------------------------------------------------
def point_sample(inputs: Tensor, points: Tensor, align_corners: bool = False) -> Tensor:
    """Bilinear samples of ``inputs`` at [0, 1]-normalised points (mmcv/detectron2 ``point_sample``).

    Args:
        inputs: (N, C, H, W) maps. points: (N, P, 2) (x, y) in [0, 1] of each map's extent.
        align_corners: False (every caller here): (0, 0) is the map's top-left *corner*, zeros outside.
    Returns:
        (N, C, P).
    """
    grid = 2.0 * points.to(inputs.dtype) - 1.0
    out = F.grid_sample(inputs, grid[:, :, None, :], mode="bilinear", padding_mode="zeros",
                        align_corners=align_corners)
    return out[..., 0]


def roi_points_to_image(boxes: Tensor, rel_points: Tensor) -> Tensor:
    """Box-relative points → image pixels (mmcv ``rel_roi_point_to_abs_img_point``).

    Args:
        boxes: (K, 4) x1, y1, x2, y2 in pixels. rel_points: (K, P, 2) (x, y) in [0, 1].
    Returns:
        (K, P, 2) pixel coordinates ``(x1 + x·w, y1 + y·h)``.
    """
    wh = (boxes[:, 2:] - boxes[:, :2])[:, None, :]
    return boxes[:, None, :2] + rel_points * wh


def regular_grid_points(num_boxes: int, side: int, device=None) -> Tensor:
    """Cell centres of a side×side grid in [0, 1]², row-major (y outer, x inner): (num_boxes, side², 2) (x, y).

    mmcv ``generate_grid`` / detectron2 ``generate_regular_grid_point_coords``.
    """
    c = (torch.arange(side, dtype=torch.float32, device=device) + 0.5) / side
    ys, xs = torch.meshgrid(c, c, indexing="ij")
    grid = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1)
    return grid[None].expand(num_boxes, -1, -1)


def sample_point_features(feature: Tensor, stride: int, boxes: Sequence[Tensor], rel_points: Tensor) -> Tensor:
    """Fine-grained features at box-relative points (mmdet ``_get_fine_grained_point_feats``, one level).

    Args:
        feature: (B, C, H_f, W_f) one FPN level (P2 for PointRend); ``stride`` its stride in pixels.
        boxes: B tensors (K_i, 4) in input pixels. rel_points: (Σ K_i, P, 2) in [0, 1]², rows as ``cat(boxes)``.
    Returns:
        (Σ K_i, C, P): bilinear samples at feature position ``pixel / stride − 0.5`` (zeros outside the map).
    """
    h, w = feature.shape[-2:]
    scale = feature.new_tensor([w * stride, h * stride])
    out, start = [], 0
    for i, b in enumerate(boxes):
        k = b.shape[0]
        if k == 0:
            continue
        pts = roi_points_to_image(b.to(feature.dtype), rel_points[start:start + k].to(feature.dtype)) / scale
        start += k
        p = pts.shape[1]
        s = point_sample(feature[i:i + 1], pts.reshape(1, k * p, 2))  # (1, C, K·P)
        out.append(s[0].view(-1, k, p).transpose(0, 1))
    if not out:
        return feature.new_zeros((0, feature.shape[1], rel_points.shape[1]))
    return torch.cat(out, dim=0)


def sample_masks_at_points(masks: Tensor, index: Tensor, points: Tensor) -> Tensor:
    """Bilinear samples of binary masks at pixel coordinates, without materialising (K, H, W) copies.

    Equals ``point_sample(masks[index][:, None].float(), points / (W, H))[:, 0]`` (mmdet ``MaskPointHead.
    get_targets``: soft targets, zeros outside the mask), computed by gathering the four neighbours.

    Args:
        masks: (G, H, W) bool/uint8/float masks (the padded input frame). index: (K,) int64 into ``masks``.
        points: (K, P, 2) (x, y) in pixels of the mask frame.
    Returns:
        (K, P) float32 in [0, 1].
    """
    g, h, w = masks.shape
    k, p = points.shape[:2]
    if k == 0 or g == 0:
        return points.new_zeros((k, p), dtype=torch.float32)
    flat = masks.reshape(g, h * w).to(torch.float32)
    x = points[..., 0].to(torch.float32) - 0.5  # grid_sample(align_corners=False): pixel centres at i + 0.5
    y = points[..., 1].to(torch.float32) - 0.5
    x0, y0 = torch.floor(x), torch.floor(y)
    wx, wy = x - x0, y - y0
    x0, y0 = x0.long(), y0.long()
    rows = index.to(flat.device)[:, None].expand(k, p)
    out = torch.zeros((k, p), dtype=torch.float32, device=flat.device)
    for dx, dy, wgt in ((0, 0, (1 - wx) * (1 - wy)), (1, 0, wx * (1 - wy)), (0, 1, (1 - wx) * wy), (1, 1, wx * wy)):
        xi, yi = x0 + dx, y0 + dy
        inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
        lin = (yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1))
        out = out + torch.where(inside, flat[rows, lin], torch.zeros_like(wgt)) * wgt
    return out


def point_uncertainty(logits: Tensor, labels: Tensor | None = None) -> Tensor:
    """−|logit| of the label channel (mmdet ``get_uncertainty`` / detectron2 ``calculate_uncertainty``).

    Args:
        logits: (N, C, ...) or (N, 1, ...). labels: (N,) class indices (ignored for one channel).
    Returns:
        (N, 1, ...): higher = more uncertain (0 at the decision boundary).
    """
    if logits.shape[1] == 1 or labels is None:
        sel = logits[:, :1]
    else:
        sel = logits[torch.arange(logits.shape[0], device=logits.device), labels.to(logits.device)][:, None]
    return -sel.abs()


@torch.no_grad()
def uncertain_point_coords_with_randomness(
    mask_logits: Tensor,
    labels: Tensor,
    num_points: int,
    oversample_ratio: float,
    importance_sample_ratio: float,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Training points: importance sampling of uncertain points plus uniform coverage (PointRend §3.1).

    ``int(num_points · oversample_ratio)`` uniform candidates per RoI; their uncertainty is computed on the
    *interpolated* logits of the label channel; the ``int(importance_sample_ratio · num_points)`` most uncertain are
    kept (in descending uncertainty), and the rest is filled with fresh uniform points (mmdet
    ``get_uncertain_point_coords_with_randomness``; two ``torch.rand`` draws in this order).

    Args:
        mask_logits: (N, C or 1, h, w) coarse logits. labels: (N,) GT classes.
        num_points: 196. oversample_ratio: 3. importance_sample_ratio: 0.75.
        generator: optional RNG (tests); default the global one.
    Returns:
        (N, num_points, 2) (x, y) in [0, 1]²: first the importance points, then the random ones.
    """
    if oversample_ratio < 1 or not 0 <= importance_sample_ratio <= 1:
        raise ValueError("oversample_ratio must be >= 1 and importance_sample_ratio in [0, 1]")
    n = mask_logits.shape[0]
    device = mask_logits.device
    num_sampled = int(num_points * oversample_ratio)
    coords = torch.rand((n, num_sampled, 2), generator=generator, device=device)
    sel = point_uncertainty(mask_logits, labels)  # (N, 1, h, w): sampling is per channel, select first
    unc = point_sample(sel, coords)[:, 0]  # (N, num_sampled)
    num_uncertain = int(importance_sample_ratio * num_points)
    idx = torch.topk(unc, k=num_uncertain, dim=1).indices
    chosen = torch.gather(coords, 1, idx[..., None].expand(-1, -1, 2))
    num_random = num_points - num_uncertain
    if num_random > 0:
        chosen = torch.cat([chosen, torch.rand((n, num_random, 2), generator=generator, device=device)], dim=1)
    return chosen


def uncertain_grid_points(uncertainty: Tensor, num_points: int) -> tuple[Tensor, Tensor]:
    """The ``num_points`` most uncertain cells of a grid (mmdet ``get_roi_rel_points_test`` / detectron2
    ``get_uncertain_point_coords_on_grid``).

    Args:
        uncertainty: (N, 1, H, W). num_points: 784 (capped at H·W).
    Returns:
        indices (N, P) into the flattened H·W grid, and their cell centres (N, P, 2) (x, y) in [0, 1]².
    """
    n, _, h, w = uncertainty.shape
    p = min(h * w, num_points)
    idx = uncertainty.view(n, h * w).topk(p, dim=1).indices
    xs = (idx % w).to(torch.float32) / w + 0.5 / w
    ys = torch.div(idx, w, rounding_mode="floor").to(torch.float32) / h + 0.5 / h
    return idx, torch.stack([xs, ys], dim=2)


def subdivision_inference(
    init_logits: Tensor,
    point_logits_fn: Callable[[Tensor], Tensor],
    *,
    steps: int,
    num_points: int,
    scale_factor: int = 2,
    init_resolution: int | None = None,
) -> Tensor:
    """Adaptive subdivision (PointRend §3.1; mmdet ``_mask_point_forward_test``, detectron2 ``_subdivision_inference``).

    mmdet schedule (``init_resolution=None``): start from ``init_logits``; each step upsamples ×``scale_factor``
    (bilinear, align_corners=False) and overwrites the ``num_points`` most uncertain cells (−|logit|) with
    ``point_logits_fn`` at their centres; a step is skipped when ``num_points ≥ scale² · H · W`` (H, W after this
    step's upsampling) and it is not the last one — its successor recomputes every cell anyway.

    detectron2 schedule (``init_resolution=r``): first a regular r×r grid of point predictions, then ``steps``
    subdivision steps without skipping.

    Args:
        init_logits: (N, 1, h, w) logits of the predicted class (the coarse head's 7×7).
        point_logits_fn: (N, P, 2) box-relative (x, y) in [0, 1]² → (N, P) predicted-class logits.
        steps / num_points / scale_factor: 5 / 784 / 2 (mmdet); detectron2: 3 / 784 / 2 with r = 28.
    Returns:
        (N, H, W) refined logits, H = h·scale^steps (mmdet) or r·scale^steps (detectron2): 224 for both defaults.
    """
    n = init_logits.shape[0]
    if init_resolution is not None:
        coords = regular_grid_points(n, init_resolution, init_logits.device)
        refined = point_logits_fn(coords).reshape(n, 1, init_resolution, init_resolution)
    else:
        refined = init_logits
    for step in range(steps):
        refined = F.interpolate(refined, scale_factor=scale_factor, mode="bilinear", align_corners=False)
        _, _, h, w = refined.shape
        if (init_resolution is None and num_points >= scale_factor ** 2 * h * w and step < steps - 1):
            continue
        idx, coords = uncertain_grid_points(point_uncertainty(refined), num_points)
        values = point_logits_fn(coords).to(refined.dtype)
        refined = refined.reshape(n, h * w).scatter(1, idx, values).view(n, 1, h, w)
    return refined[:, 0]


# ----------------------------------------------------------------------------------------------------------------
# heads
# ----------------------------------------------------------------------------------------------------------------
class CoarseMaskHead(nn.Module):
    """mmdet ``CoarseMaskHead`` (num_convs=0, num_fcs=2, downsample 2) / detectron2 ``ConvFCHead``.

    Args:
        num_classes: C (output channels; 1 if ``class_agnostic``). in_channels / conv_dim: 256.
        roi_size: input side 14 (output side roi_size / 2 = 7). fc_dim: 1024. num_fcs: 2.
        init: ``"mmdet"`` (hidden FCs xavier-normal, logits weight constant 0.001) or ``"detectron2"`` (hidden FCs
            Caffe2-xavier = kaiming-uniform a=1, logits N(0, 0.001)); the 2×2 conv is kaiming-normal fan_out in both;
            all biases 0.
    Forward: (N, in_channels, 14, 14) → (N, C, 7, 7) logits.
    """

    def __init__(
        self,
        num_classes: int = 80,
        in_channels: int = 256,
        conv_dim: int = 256,
        roi_size: int = 14,
        fc_dim: int = 1024,
        num_fcs: int = 2,
        class_agnostic: bool = False,
        init: str = "mmdet",
    ) -> None:
        super().__init__()
        self.output_size = roi_size // 2
        self.out_channels = 1 if class_agnostic else num_classes
        self.downsample_conv = nn.Conv2d(in_channels, conv_dim, kernel_size=2, stride=2)
        area = self.output_size * self.output_size
        self.fcs = nn.ModuleList(nn.Linear(conv_dim * area if i == 0 else fc_dim, fc_dim) for i in range(num_fcs))
        self.fc_logits = nn.Linear(fc_dim, self.out_channels * area)
        nn.init.kaiming_normal_(self.downsample_conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.downsample_conv.bias)
        for fc in self.fcs:
            if init == "mmdet":
                nn.init.xavier_normal_(fc.weight)
            else:
                nn.init.kaiming_uniform_(fc.weight, a=1)
            nn.init.zeros_(fc.bias)
        if init == "mmdet":
            nn.init.constant_(self.fc_logits.weight, 0.001)
        else:
            nn.init.normal_(self.fc_logits.weight, std=0.001)
        nn.init.zeros_(self.fc_logits.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.downsample_conv(x)).flatten(1)
        for fc in self.fcs:
            x = F.relu(fc(x))
        return self.fc_logits(x).view(x.shape[0], self.out_channels, self.output_size, self.output_size)


class MaskPointHead(nn.Module):
    """mmdet ``MaskPointHead`` / detectron2 ``StandardPointHead``: a shared MLP over points (1×1 Conv1d).

    Args:
        num_classes: C output channels (1 if ``class_agnostic``). in_channels: fine-feature channels (256).
        coarse_channels: channels of the coarse features (the coarse head's output: C, or 1 if class-agnostic).
        fc_dim: 256. num_fcs: 3. coarse_pred_each_layer: re-attach the coarse logits after every layer.
    Init: hidden convs kaiming-normal fan_out (mmcv ConvModule / Caffe2 MSRA), logits N(0, 0.001), biases 0.
    Forward: fine (N, in_channels, P), coarse (N, coarse_channels, P) → (N, C, P) logits.
    """

    def __init__(
        self,
        num_classes: int = 80,
        in_channels: int = 256,
        coarse_channels: int | None = None,
        fc_dim: int = 256,
        num_fcs: int = 3,
        coarse_pred_each_layer: bool = True,
        class_agnostic: bool = False,
    ) -> None:
        super().__init__()
        coarse = (1 if class_agnostic else num_classes) if coarse_channels is None else coarse_channels
        self.coarse_pred_each_layer = coarse_pred_each_layer
        self.fcs = nn.ModuleList()
        c_in = in_channels + coarse
        for _ in range(num_fcs):
            self.fcs.append(nn.Conv1d(c_in, fc_dim, kernel_size=1))
            c_in = fc_dim + (coarse if coarse_pred_each_layer else 0)
        self.fc_logits = nn.Conv1d(c_in, 1 if class_agnostic else num_classes, kernel_size=1)
        for fc in self.fcs:
            nn.init.kaiming_normal_(fc.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(fc.bias)
        nn.init.normal_(self.fc_logits.weight, std=0.001)
        nn.init.zeros_(self.fc_logits.bias)

    #: Inference runs the 1×1 Conv1d layers as matrix products on points-major (N, P, C) activations, with the
    #: coarse-logit part of each layer added instead of concatenated — the same arithmetic in another summation order
    #: (masks equal in the tests; logits within float32 rounding). On CPU this is ~2× the GMAC/s of oneDNN's Conv1d
    #: on (N, 336, 784) inputs and drops the concatenation copies (docs/models.md §7). Training stays on Conv1d.
    points_last: bool = True

    def forward(self, fine: Tensor, coarse: Tensor) -> Tensor:
        if self.points_last and not self.training:
            # [h, c] · Wᵀ = h · W_hᵀ + c · W_cᵀ: the coarse logits are added per layer instead of concatenated
            c = coarse.transpose(1, 2)
            h = fine.transpose(1, 2)
            with_coarse = True  # the first layer always sees the coarse logits
            for fc in (*self.fcs, self.fc_logits):
                w, k = fc.weight[:, :, 0], h.shape[-1]
                y = F.linear(h, w[:, :k], fc.bias)
                if with_coarse:
                    y = y + F.linear(c, w[:, k:])
                if fc is self.fc_logits:
                    return y.transpose(1, 2)
                h = F.relu_(y)
                with_coarse = self.coarse_pred_each_layer
        x = torch.cat([fine, coarse], dim=1)
        for fc in self.fcs:
            x = F.relu(fc(x))
            if self.coarse_pred_each_layer:
                x = torch.cat([x, coarse], dim=1)
        return self.fc_logits(x)


# ----------------------------------------------------------------------------------------------------------------
# the branch
# ----------------------------------------------------------------------------------------------------------------
class PointRendBranch(MaskBranch):
    """PointRend as a :class:`~refinemask.detection.mask_branch.MaskBranch`.

    Args:
        num_classes: C foreground classes. cfg: :class:`PointRendConfig` (``variant`` = mmdet | detectron2).
        in_channels: FPN width (256).

    Attributes:
        mask_size: 7 (the coarse logits returned by :meth:`forward`; coarse targets are 7×7).
        output_size: 224 (side of :meth:`predict`'s maps).
        train_on_pred_boxes: read by the trunk's ``RoIHeads``: True (detectron2) → the positives handed to
            :meth:`forward_train` are the box head's regressed boxes (GT-class deltas, detached, clipped).
        init_resolution / subdivision_steps: the resolved inference schedule (mmdet: None / 5;
            detectron2: 28 / 3 after doubling 7 while 4·r² ≤ num_points, as ``PointRendMaskHead`` does).

    Returns (training, :meth:`forward_train`): ``{"loss_mask", "loss_point"}`` (weighted scalars).
    """

    def __init__(self, num_classes: int = 80, cfg: PointRendConfig = PointRendConfig(), in_channels: int = 256) -> None:
        super().__init__()
        if cfg.variant not in POINT_REND_VARIANTS:
            raise ValueError(f"PointRendConfig.variant must be one of {POINT_REND_VARIANTS}, got {cfg.variant!r}")
        self.cfg = cfg
        self.num_classes = num_classes
        self.mask_size = cfg.coarse_size
        self.loss_weight = cfg.loss_mask_weight
        self.train_on_pred_boxes = cfg.use_pred_boxes
        self.mask_head = CoarseMaskHead(
            num_classes, in_channels, cfg.conv_dim, cfg.roi_size, cfg.fc_dim, cfg.num_fcs, cfg.class_agnostic,
            init=cfg.variant,
        )
        self.point_head = MaskPointHead(
            num_classes, in_channels, self.mask_head.out_channels, cfg.point_fc_dim, cfg.point_num_fcs,
            cfg.coarse_pred_each_layer, cfg.class_agnostic,
        )
        if cfg.variant == "detectron2":
            r, steps = cfg.coarse_size, cfg.subdivision_steps
            while 4 * r * r <= cfg.subdivision_num_points and steps > 0:
                r, steps = r * 2, steps - 1
            self.init_resolution: int | None = r
            self.subdivision_steps = steps
            self.output_size = r * cfg.scale_factor ** steps
        else:
            self.init_resolution = None
            self.subdivision_steps = cfg.subdivision_steps
            self.output_size = cfg.coarse_size * cfg.scale_factor ** cfg.subdivision_steps

    # -- shared pieces -----------------------------------------------------------------------------------------
    def coarse_features(self, features: dict[str, Tensor], boxes: Sequence[Tensor]) -> Tensor:
        """(N, 256, 14, 14): bin-centre samples of P2 (mmcv ``SimpleRoIAlign`` via ``GenericRoIExtractor``)."""
        s = self.cfg.roi_size
        n = sum(int(b.shape[0]) for b in boxes)
        feat = features[self.cfg.in_feature]
        grid = regular_grid_points(n, s, feat.device)
        return sample_point_features(feat, self.cfg.in_stride, boxes, grid).view(n, feat.shape[1], s, s)

    def point_logits(
        self, features: dict[str, Tensor], boxes: Sequence[Tensor], coarse_logits: Tensor, rel_points: Tensor
    ) -> Tensor:
        """Point-head logits (N, C or 1, P) at box-relative ``rel_points`` (N, P, 2)."""
        fine = sample_point_features(features[self.cfg.in_feature], self.cfg.in_stride, boxes, rel_points)
        coarse = point_sample(coarse_logits, rel_points)
        return self.point_head(fine, coarse)

    def forward(self, rois: RoIBatch) -> Tensor:
        """Coarse logits (N, C or 1, 7, 7)."""
        return self.mask_head(self.inference_layout(self.coarse_features(rois.features, rois.boxes)))

    # -- training ----------------------------------------------------------------------------------------------
    def forward_train(self, rois: RoIBatch) -> dict[str, Tensor]:
        """``loss_mask`` (7×7 coarse BCE) + ``loss_point`` (196 points per RoI), mmdet ``_mask_forward_train`` +
        ``_mask_point_forward_train``."""
        features, boxes, labels = rois.features, rois.boxes, rois.labels
        gt_masks, matched_idxs = rois.gt_masks, rois.matched_idxs
        cfg = self.cfg
        coarse = self(rois)
        lab = torch.cat(list(labels)).to(coarse.device) if labels else coarse.new_zeros(0, dtype=torch.long)
        if coarse.shape[0] == 0:
            zero = sum(p.sum() for p in self.point_head.parameters()) * 0.0
            return {"loss_mask": coarse.sum() * 0.0, "loss_point": zero + coarse.sum() * 0.0}
        tgt = self.targets(boxes, gt_masks, matched_idxs, size=cfg.coarse_size).to(coarse.device)
        loss_mask = cfg.loss_mask_weight * mask_bce_loss(coarse, tgt, lab)

        points = uncertain_point_coords_with_randomness(
            coarse.detach(), lab, cfg.train_num_points, cfg.oversample_ratio, cfg.importance_sample_ratio
        )
        logits = self.point_logits(features, boxes, coarse, points)  # (N, C, P)
        point_tgt = []
        start = 0
        for b, m, idx in zip(boxes, gt_masks, matched_idxs):
            k = b.shape[0]
            abs_pts = roi_points_to_image(b.to(points), points[start:start + k])
            point_tgt.append(sample_masks_at_points(m.to(points.device), idx, abs_pts))
            start += k
        point_tgt = torch.cat(point_tgt, dim=0).to(logits.dtype)
        sel = select_class_channel(logits, lab)  # (N, P)
        loss_point = cfg.loss_point_weight * F.binary_cross_entropy_with_logits(sel, point_tgt, reduction="mean")
        return {"loss_mask": loss_mask, "loss_point": loss_point}

    # -- inference ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, rois: RoIBatch) -> Tensor:
        """(N, 224, 224) foreground probabilities of the predicted class after adaptive subdivision."""
        features, boxes, labels = rois.features, rois.boxes, rois.labels
        coarse = self(rois)
        n = coarse.shape[0]
        if n == 0:
            return coarse.new_zeros((0, self.output_size, self.output_size))
        lab = torch.cat(list(labels)).to(coarse.device)

        def fn(points: Tensor) -> Tensor:
            return select_class_channel(self.point_logits(features, boxes, coarse, points), lab)

        init = select_class_channel(coarse, lab)[:, None]
        refined = subdivision_inference(
            init, fn, steps=self.subdivision_steps, num_points=self.cfg.subdivision_num_points,
            scale_factor=self.cfg.scale_factor, init_resolution=self.init_resolution,
        )
        return refined.sigmoid()


def build_point_rend_branch(preset: Preset) -> PointRendBranch:
    """The PointRend branch for ``preset`` (registered for :class:`PointRendConfig` by ``baselines/__init__.py``).

    Raises:
        TypeError: ``mask_head_cfg`` is not a :class:`PointRendConfig`. ValueError: unknown variant.
    """
    cfg = preset.mask_head_cfg
    if not isinstance(cfg, PointRendConfig):
        raise TypeError(f"preset {preset.name!r}: mask_head_cfg must be a PointRendConfig, got {type(cfg).__name__}")
    if preset.mask_class_agnostic and not cfg.class_agnostic:
        from dataclasses import replace

        cfg = replace(cfg, class_agnostic=True)
    return PointRendBranch(preset.num_classes, cfg)

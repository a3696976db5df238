"""Hybrid Task Cascade (Chen et al., CVPR 2019) RoI heads on the shared trunk (docs/models.md §5, §9.6).

mmdetection 2.x ``HybridTaskCascadeRoIHead`` with ``Shared2FCBBoxHead`` × 3 (class-agnostic regression),
``HTCMaskHead`` × 3 and the optional ``FusedSemanticHead``; it replaces the trunk's
:class:`~refinemask.detection.roi_heads.RoIHeads` as a whole (``Preset.roi_head = "htc"``) with the same call
signature and outputs.

Training, per iteration (docs/models.md §5.2):

1. Semantic head on P2–P6 (fused at P3, stride 8) → logits (loss ``loss_semantic_seg`` = 0.2 · CE, ignore 255)
   and a 256-channel embedding E (B, 256, Hp/8, Wp/8).
2. For stage t = 0, 1, 2 (IoU 0.5 / 0.6 / 0.7, weight w_t = 1 / 0.5 / 0.25):
   a. assign the stage's proposals (+ GT boxes) at IoU_t and sample 512 RoIs (25 % positive);
      box features = RoIAlign(P2–P5, 7×7) + avgpool₂(RoIAlign(E, 14×14)); CE + smooth-L1 (β = 1) on
      class-agnostic deltas encoded with the stage's stds → ``s{t}.loss_cls``, ``s{t}.loss_bbox`` (× w_t).
   b. interleaved: (no grad) regress the sampled RoIs with this stage's deltas, clip, drop the GT rows →
      the next stage's proposals; re-assign (IoU_t) and re-sample them, GT re-added; the positives train the mask.
   c. mask features X = RoIAlign(P2–P5, 14×14) + RoIAlign(E, 14×14).
   d. mask information flow: h_0 = convs_0(X), h_j = convs_j(X + conv_res_j(h_{j−1})); head t's logits from
      convs_t(X + conv_res_t(h_{t−1})) → deconv → 1×1 (28×28, class-specific) → ``s{t}.loss_mask`` (× w_t).

Inference (docs/models.md §5.3): stages 0 → 2 regress the 1000 proposals in turn (class-agnostic, clipped); final class
probabilities = softmax of the **mean of the three stages' logits** (each on its own input boxes); final boxes =
stage-2 regression; score > 0.001, per-class NMS 0.5, top 100. Masks: X for the final boxes, the information-flow
chain through all three heads, **mean of the three σ(predicted-class logits)** → (n, 28, 28) ``mask_probs``.

COCO-stuff (docs/models.md §5.4): ``HTCConfig.semantic`` = ``"stuff"`` (the paper's HTC; training needs
``targets[i]["semantic_seg"]`` label maps, :func:`load_stuff_map` reads them from ``HTCConfig.stuff_root``),
``"things"`` (labels painted from the instance masks by :func:`thing_semantic_labels`) or ``"none"``.

Parameter names follow mmdet with ``roi_heads.bbox_head.{t}`` (``fc6, fc7, cls_score, bbox_pred`` =
``shared_fcs.0, shared_fcs.1, fc_cls, fc_reg``), ``roi_heads.mask_branch.mask_head.{t}`` (``convs.k``,
``upsample``, ``conv_logits``, ``conv_res``) and ``roi_heads.semantic_head`` (``lateral_convs.k``, ``convs.k``,
``conv_embedding``, ``conv_logits``); see ``baselines/convert.py``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler, BoxCoder
from torchvision.ops import clip_boxes_to_image

from baselines.presets import HTC_SEMANTIC_MODES, STUFF_ROOT_ENV, HTCConfig
from refinemask.config import BoxHeadConfig, Preset
from refinemask.detection.mask_branch import MaskBranch, RoIBatch, mask_bce_loss, select_class_channel
from refinemask.detection.poolers import MultiLevelRoIAlign
from refinemask.detection.roi_heads import TwoFCBoxHead, assign_and_sample, multiclass_nms

try:  # benchmark hook of the trunk (RoIHeads.fixed_dets); keep HTC importable without it
    from refinemask.detection.roi_heads import topk_detections
except ImportError:  # pragma: no cover
    def topk_detections(boxes: Tensor, scores: Tensor, n: int) -> tuple[Tensor, Tensor, Tensor]:
        c = scores.shape[1]
        top, idx = scores.reshape(-1).topk(min(int(n), scores.numel()))
        return boxes.reshape(-1, 4)[idx], top, idx % c

__all__ = [
    "HTCConfig",
    "SEMANTIC_KEY",
    "FusedSemanticHead",
    "HTCMaskHead",
    "HTCMaskBranch",
    "CascadeBoxHead",
    "HTCRoIHeads",
    "cascade_box_loss",
    "thing_semantic_labels",
    "semantic_targets",
    "stuff_map_path",
    "load_stuff_map",
    "check_stuff_maps",
    "build_htc_roi_heads",
]

#: key under which the HTC heads pass the semantic embedding E (B, 256, Hp/8, Wp/8) inside the features dict
SEMANTIC_KEY = "semantic"
_FPN_LEVELS = ("p2", "p3", "p4", "p5", "p6")


# ----------------------------------------------------------------------------------------------------------------
# semantic branch
# ----------------------------------------------------------------------------------------------------------------
class FusedSemanticHead(nn.Module):
    """mmdet ``FusedSemanticHead`` (docs/models.md §5.1).

    1×1 conv 256 + ReLU lateral on each of the ``num_ins`` FPN levels; the other levels are bilinearly resized
    (align_corners=True) to the fusion level (P3) *before* their lateral conv and summed; 4 × [3×3 conv 256 + ReLU];
    then a 1×1 conv → ``num_classes`` logits and a 1×1 conv 256 + ReLU embedding. Init kaiming-normal fan_out,
    biases 0 (mmcv ConvModule / ``kaiming_init``). 2,802,103 parameters with 183 classes.

    Forward: list of ``num_ins`` maps (B, 256, H_l, W_l), finest first → (logits (B, K, H_f, W_f),
    embedding (B, 256, H_f, W_f)) at the fusion level's size.
    """

    def __init__(
        self,
        num_classes: int = 183,
        num_ins: int = 5,
        fusion_level: int = 1,
        num_convs: int = 4,
        in_channels: int = 256,
        conv_dim: int = 256,
        loss_weight: float = 0.2,
        ignore_index: int = 255,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.fusion_level = fusion_level
        self.loss_weight = loss_weight
        self.ignore_index = ignore_index
        self.lateral_convs = nn.ModuleList(nn.Conv2d(in_channels, in_channels, 1) for _ in range(num_ins))
        self.convs = nn.ModuleList(
            nn.Conv2d(in_channels if i == 0 else conv_dim, conv_dim, 3, padding=1) for i in range(num_convs)
        )
        self.conv_embedding = nn.Conv2d(conv_dim, conv_dim, 1)
        self.conv_logits = nn.Conv2d(conv_dim, num_classes, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, feats: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        x = F.relu(self.lateral_convs[self.fusion_level](feats[self.fusion_level]))
        size = tuple(x.shape[-2:])
        for i, f in enumerate(feats):
            if i != self.fusion_level:
                f = F.interpolate(f, size=size, mode="bilinear", align_corners=True)
                x = x + F.relu(self.lateral_convs[i](f))
        for conv in self.convs:
            x = F.relu(conv(x))
        return self.conv_logits(x), F.relu(self.conv_embedding(x))

    def loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        """``loss_weight`` · CE (mean over non-ignored pixels); labels (B, H_f, W_f) int64, 255 = ignore.

        Returns ``0 · Σ logits`` when every pixel is ignored (plain CE would be NaN).
        """
        labels = labels.to(device=logits.device, dtype=torch.long)
        if not bool((labels != self.ignore_index).any()):
            return logits.sum() * 0.0
        return self.loss_weight * F.cross_entropy(logits, labels, ignore_index=self.ignore_index)


def thing_semantic_labels(
    masks: Tensor, labels: Tensor, crowd_masks: Tensor | None = None, ignore_index: int = 255
) -> Tensor:
    """Per-pixel thing label map from instance masks (docs/models.md §5.4 option 2).

    Instances are painted largest-area first, so smaller ones stay on top; the pixel label is class index + 1
    (1..C), 0 = background; pixels of crowd regions (``crowd_masks``) become ``ignore_index``.

    Args:
        masks: (G, H, W) binary instance masks (non-crowd). labels: (G,) int64 class indices in [0, C).
        crowd_masks: optional (G_c, H, W) binary crowd masks in the same frame.
    Returns:
        (H, W) int64 labels.
    """
    h, w = masks.shape[-2:]
    out = torch.zeros((h, w), dtype=torch.long, device=masks.device)
    if masks.shape[0] > 0:
        m = masks.to(torch.bool)
        area = m.flatten(1).sum(1)
        for g in torch.argsort(area, descending=True, stable=True).tolist():
            out[m[g]] = int(labels[g]) + 1
    if crowd_masks is not None and crowd_masks.shape[0] > 0:
        out[crowd_masks.to(device=out.device, dtype=torch.bool).any(0)] = ignore_index
    return out


def _to_padded_frame(label_map: Tensor, image_size: Sequence[int], padded: Sequence[int], fill: int) -> Tensor:
    """A (H, W) label map → the padded input frame (Hp, Wp): kept if already (Hp, Wp); else resized with nearest
    neighbour to the resized image size (h, w) unless already that size (mmdet ``Resize`` of ``seg_fields``),
    then padded right/bottom with ``fill``."""
    hp, wp = int(padded[0]), int(padded[1])
    if tuple(label_map.shape[-2:]) == (hp, wp):
        return label_map.to(torch.long)
    h, w = int(image_size[0]), int(image_size[1])
    m = label_map
    if tuple(m.shape[-2:]) != (h, w):
        m = F.interpolate(m[None, None].to(torch.float32), size=(h, w), mode="nearest")[0, 0]
    return F.pad(m.to(torch.long), (0, wp - w, 0, hp - h), value=fill)


def semantic_targets(
    targets: Sequence[dict[str, Tensor]],
    image_sizes: Sequence[tuple[int, int]],
    padded: Sequence[int],
    out_size: Sequence[int],
    mode: str,
    ignore_index: int = 255,
) -> Tensor:
    """Semantic labels at the semantic logits' size (B, H_f, W_f) int64 (mmdet ``SegRescale(1/8)``, nearest).

    Per image: ``targets[i]["semantic_seg"]`` if present (a COCO-stuff map at the original, resized or padded size;
    flipped with the image by the data pipeline), else for ``mode="things"`` the map painted from
    ``targets[i]["masks"]`` / ``["labels"]`` (plus optional ``["crowd_masks"]``). Pixels outside the image
    (batch padding) are ``ignore_index``.

    Raises:
        ValueError: ``mode="stuff"`` and an image has no ``semantic_seg`` (the message says how to provide it).
    """
    hp, wp = int(padded[0]), int(padded[1])
    maps = []
    for t, (h, w) in zip(targets, image_sizes):
        if "semantic_seg" in t:
            m = _to_padded_frame(t["semantic_seg"], (h, w), (hp, wp), ignore_index)
        elif mode == "things":
            masks = t["masks"]
            crowd = t.get("crowd_masks")
            if crowd is not None and crowd.dim() == 3 and crowd.shape[0] == 0:
                crowd = None
            if crowd is not None:
                crowd = _to_padded_frame(crowd.to(torch.uint8).amax(0) if crowd.dim() == 3 else crowd, (h, w),
                                         (hp, wp), 0)[None]
            m = thing_semantic_labels(masks, t["labels"], crowd, ignore_index)
            m = F.pad(m, (0, wp - m.shape[-1], 0, hp - m.shape[-2]), value=ignore_index)
        else:
            raise ValueError(
                "HTC with semantic='stuff' trains its semantic branch on COCO-stuff label maps, but a target has no "
                "'semantic_seg'. Download stuffthingmaps_trainval2017.zip, set HTCConfig.stuff_root (or "
                f"${STUFF_ROOT_ENV}) to its train2017 folder and add targets[i]['semantic_seg'] = "
                "baselines.htc.load_stuff_map(root, file_name) (flipped with the image) in the data pipeline; "
                "without COCO-stuff use the htc_without_semantic_* or htc_thing_semantic_* presets."
            )
        m = m.clone()
        m[h:, :] = ignore_index
        m[:, w:] = ignore_index
        maps.append(m)
    batch = torch.stack(maps).to(torch.float32)[:, None]
    return F.interpolate(batch, size=tuple(int(s) for s in out_size), mode="nearest")[:, 0].to(torch.long)


def stuff_map_path(root: str | os.PathLike, file_name: str) -> Path:
    """``<root>/<image stem>.png`` (COCO-stuff ``stuffthingmaps`` naming)."""
    return Path(root) / (Path(file_name).stem + ".png")


def load_stuff_map(root: str | os.PathLike, file_name: str) -> Tensor:
    """COCO-stuff label map of one image: (H, W) uint8 (0..181 thing+stuff ids − 1, 255 unlabeled).

    Raises:
        FileNotFoundError: naming the expected PNG and the config field to fix.
    """
    from PIL import Image

    p = stuff_map_path(root, file_name)
    if not p.is_file():
        raise FileNotFoundError(
            f"COCO-stuff label map not found: {p} (for image {file_name!r}). HTCConfig.stuff_root / "
            f"${STUFF_ROOT_ENV} must point at the stuffthingmaps folder of the split (e.g. "
            "stuffthingmaps_trainval2017/train2017)."
        )
    return torch.from_numpy(np.array(Image.open(p), dtype=np.uint8))


def check_stuff_maps(cfg: HTCConfig) -> Path:
    """For a training script: the resolved stuff folder of a ``semantic="stuff"`` config.

    Raises:
        FileNotFoundError: no folder configured, or it does not exist (the message names the field and the
            env variable, and the presets that need no COCO-stuff).
    """
    root = cfg.stuff_dir()
    if root is None or not root.is_dir():
        where = f"{root} does not exist" if root is not None else "none is configured"
        raise FileNotFoundError(
            f"HTC semantic='stuff' needs the COCO-stuff stuffthingmaps folder, but {where}. Set "
            f"HTCConfig.stuff_root (dataclasses.replace on the preset's mask_head_cfg) or ${STUFF_ROOT_ENV}; "
            "without COCO-stuff use htc_without_semantic_* or htc_thing_semantic_*."
        )
    return root


# ----------------------------------------------------------------------------------------------------------------
# mask branch
# ----------------------------------------------------------------------------------------------------------------
class HTCMaskHead(nn.Module):
    """mmdet ``HTCMaskHead`` = ``FCNMaskHead`` (4 × 3×3 conv 256 + ReLU, 2×2 deconv + ReLU, 1×1 → C at 28×28)
    plus an optional ``conv_res`` (1×1 conv 256 + ReLU) for the mask information flow.

    Forward ``(x, res_feat=None, return_logits=True, return_feat=True)``: x (N, 256, 14, 14); ``res_feat`` the
    previous head's feature (N, 256, 14, 14) → x + conv_res(res_feat). Returns logits (N, C, 28, 28) and/or the
    feature after the convs (N, 256, 14, 14), as a tuple when both are requested (mmdet's convention).
    Init: kaiming-normal fan_out, biases 0.
    """

    def __init__(
        self,
        num_classes: int = 80,
        with_conv_res: bool = True,
        in_channels: int = 256,
        conv_dim: int = 256,
        num_convs: int = 4,
        class_agnostic: bool = False,
    ) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(in_channels if i == 0 else conv_dim, conv_dim, 3, padding=1) for i in range(num_convs)
        )
        self.upsample = nn.ConvTranspose2d(conv_dim, conv_dim, 2, stride=2)
        self.conv_logits = nn.Conv2d(conv_dim, 1 if class_agnostic else num_classes, 1)
        self.conv_res = nn.Conv2d(conv_dim, conv_dim, 1) if with_conv_res else None
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor, res_feat: Tensor | None = None, return_logits: bool = True,
                return_feat: bool = True):
        if res_feat is not None:
            if self.conv_res is None:
                raise ValueError("HTCMaskHead without conv_res got a res_feat")
            x = x + F.relu(self.conv_res(res_feat))
        for conv in self.convs:
            x = F.relu(conv(x))
        outs = []
        if return_logits:
            outs.append(self.conv_logits(F.relu(self.upsample(x))))
        if return_feat:
            outs.append(x)
        return tuple(outs) if len(outs) > 1 else outs[0]


class HTCMaskBranch(MaskBranch):
    """The three HTC mask heads as one :class:`MaskBranch` (``model.mask_branch``).

    When ``features`` holds :data:`SEMANTIC_KEY` (the semantic embedding, stride 8) and ``fuse_semantic``, the
    mask RoI features are RoIAlign(P2–P5, 14) + RoIAlign(E, 14) (mmdet ``semantic_fusion`` 'mask').

    :meth:`forward` returns the last stage's logits through the information-flow chain; :meth:`predict` the mean of
    the three stages' σ(predicted-class logits) (docs/models.md §5.3);
    :meth:`forward_train` takes ``stage`` (default last).
    """

    def __init__(
        self,
        num_classes: int = 80,
        num_stages: int = 3,
        mask_info_flow: bool = True,
        fuse_semantic: bool = True,
        class_agnostic: bool = False,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.mask_size = 28
        self.mask_info_flow = mask_info_flow
        self.fuse_semantic = fuse_semantic
        self.pooler = MultiLevelRoIAlign(output_size=14)
        self.semantic_pooler = MultiLevelRoIAlign((SEMANTIC_KEY,), (8,), output_size=14)
        self.mask_head = nn.ModuleList(
            HTCMaskHead(num_classes, with_conv_res=mask_info_flow and t > 0, class_agnostic=class_agnostic)
            for t in range(num_stages)
        )

    def mask_features(self, features: dict[str, Tensor], boxes: Sequence[Tensor]) -> Tensor:
        """(N, 256, 14, 14) RoI features (+ semantic RoI features when available and fused)."""
        x = self.pooler(features, boxes)
        if self.fuse_semantic and SEMANTIC_KEY in features:
            x = x + self.semantic_pooler(features, boxes)
        return self.inference_layout(x)

    def stage_logits(self, x: Tensor, stage: int) -> Tensor:
        """Training forward of head ``stage`` (mmdet ``_mask_forward(training=True)``): heads 0..stage−1 give the
        feature chain (gradients kept), head ``stage`` the (N, C, 28, 28) logits."""
        last = None
        if self.mask_info_flow:
            for i in range(stage):
                last = self.mask_head[i](x, last, return_logits=False)
        return self.mask_head[stage](x, last, return_feat=False)

    def all_stage_logits(self, x: Tensor) -> list[Tensor]:
        """Test forward: every head's logits along one chain (mmdet ``simple_test`` mask part)."""
        out, last = [], None
        for head in self.mask_head:
            if self.mask_info_flow:
                logits, last = head(x, last)
            else:
                logits = head(x, return_feat=False)
            out.append(logits)
        return out

    def forward(self, rois: RoIBatch) -> Tensor:
        return self.stage_logits(self.mask_features(rois.features, rois.boxes), len(self.mask_head) - 1)

    def forward_train(self, rois: RoIBatch, stage: int | None = None) -> dict[str, Tensor]:
        """``{"loss_mask"}`` of head ``stage`` (unweighted by the stage weight; BCE on the GT class, 28×28)."""
        stage = len(self.mask_head) - 1 if stage is None else stage
        labels = rois.labels
        logits = self.stage_logits(self.mask_features(rois.features, rois.boxes), stage)
        tgt = self.targets(rois.boxes, rois.gt_masks, rois.matched_idxs).to(logits.device)
        lab = torch.cat(list(labels)).to(logits.device) if labels else logits.new_zeros(0, dtype=torch.long)
        return {"loss_mask": mask_bce_loss(logits, tgt, lab)}

    @torch.no_grad()
    def predict(self, rois: RoIBatch) -> Tensor:
        """(n, 28, 28): mean over the stages of σ(predicted-class logits)."""
        labels = rois.labels
        x = self.mask_features(rois.features, rois.boxes)
        if x.shape[0] == 0:
            return x.new_zeros((0, self.mask_size, self.mask_size))
        lab = torch.cat(list(labels)).to(x.device)
        probs = [select_class_channel(z, lab).sigmoid() for z in self.all_stage_logits(x)]
        return torch.stack(probs).mean(0)


# ----------------------------------------------------------------------------------------------------------------
# box part
# ----------------------------------------------------------------------------------------------------------------
class CascadeBoxHead(TwoFCBoxHead):
    """mmdet ``Shared2FCBBoxHead(reg_class_agnostic=True)``: the trunk's two-FC head with 4 regression outputs.

    Forward: (K, 256, 7, 7) → (cls_logits (K, C + 1), background last; deltas (K, 4)). 13,982,805 parameters.
    """

    def __init__(self, num_classes: int, in_channels: int = 256, roi_size: int = 7, fc_dim: int = 1024) -> None:
        super().__init__(num_classes, in_channels, roi_size, fc_dim)
        self.bbox_pred = nn.Linear(fc_dim, 4)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.bbox_pred.bias)


def cascade_box_loss(cls_logits: Tensor, deltas: Tensor, labels: Tensor, reg_targets: Tensor,
                     cfg: BoxHeadConfig) -> dict[str, Tensor]:
    """mmdet ``BBoxHead.loss`` with class-agnostic regression: CE + smooth-L1 (β = ``cfg.smooth_l1_beta``) / L1 on
    the positives' (K_pos, 4) deltas; both normalised by the K sampled RoIs.

    Args: cls_logits (K, C + 1); deltas (K, 4); labels (K,) with background = C; reg_targets (K, 4).
    """
    num_classes = cls_logits.shape[1] - 1
    k = max(labels.numel(), 1)
    loss_cls = F.cross_entropy(cls_logits, labels, reduction="sum") / k
    pos = labels < num_classes
    pred, tgt = deltas[pos], reg_targets[pos]
    if cfg.loss_bbox == "smooth_l1":
        loss_bbox = F.smooth_l1_loss(pred, tgt, beta=cfg.smooth_l1_beta, reduction="sum") / k
    elif cfg.loss_bbox == "l1":
        loss_bbox = F.l1_loss(pred, tgt, reduction="sum") / k
    else:
        raise ValueError(f"unknown box loss {cfg.loss_bbox!r}")
    return {"loss_cls": cfg.loss_cls_weight * loss_cls, "loss_bbox": cfg.loss_bbox_weight * loss_bbox}


class HTCRoIHeads(nn.Module):
    """HTC RoI heads with :class:`~refinemask.detection.roi_heads.RoIHeads`' interface.

    Args:
        num_classes: C. cfg: :class:`~refinemask.config.BoxHeadConfig` (sampler, box losses, test thresholds).
        htc: :class:`HTCConfig` (stages, semantic variant).

    Attributes (mmdet names): ``bbox_head`` (ModuleList of :class:`CascadeBoxHead`), ``mask_branch``
    (:class:`HTCMaskBranch` holding ``mask_head``), ``semantic_head`` (:class:`FusedSemanticHead` or None),
    ``box_coders`` (one per stage, weights 1/std), ``sampler`` (512, 25 %), ``fixed_dets`` (benchmark hook, as
    ``RoIHeads``).

    Forward ``(features, proposals, image_sizes, targets=None)``:
        training → ``([], losses)`` with ``s{t}.loss_cls``, ``s{t}.loss_bbox``, ``s{t}.loss_mask`` (× stage weight)
        for t = 0..2 and ``loss_semantic_seg`` when the semantic head exists; targets as ``RoIHeads`` plus
        ``semantic_seg`` for ``semantic="stuff"``.
        inference → (B dicts ``boxes`` (n, 4), ``scores`` (n,), ``labels`` (n,), ``mask_probs`` (n, 28, 28); {}).
    """

    fixed_dets: int | None = None

    def __init__(self, num_classes: int, cfg: BoxHeadConfig = BoxHeadConfig(), htc: HTCConfig = HTCConfig()) -> None:
        super().__init__()
        if htc.semantic not in HTC_SEMANTIC_MODES:
            raise ValueError(f"HTCConfig.semantic must be one of {HTC_SEMANTIC_MODES}, got {htc.semantic!r}")
        n = htc.num_stages
        if not (len(htc.stage_iou_thrs) == len(htc.stage_loss_weights) == len(htc.stage_bbox_stds) == n):
            raise ValueError("HTCConfig: stage_iou_thrs, stage_loss_weights and stage_bbox_stds need "
                             "num_stages entries")
        self.num_classes = num_classes
        self.cfg = cfg
        self.htc = htc
        self.box_pooler = MultiLevelRoIAlign(output_size=7)
        self.semantic_pooler = MultiLevelRoIAlign((SEMANTIC_KEY,), (8,), output_size=14)
        self.bbox_head = nn.ModuleList(CascadeBoxHead(num_classes) for _ in range(n))
        self.box_coders = [BoxCoder(weights=htc.stage_bbox_weights(t)) for t in range(n)]
        self.sampler = BalancedPositiveNegativeSampler(cfg.batch_size_per_image, cfg.positive_fraction)
        k = htc.semantic_classes(num_classes)
        self.semantic_head = (
            FusedSemanticHead(k, num_ins=len(_FPN_LEVELS), fusion_level=htc.semantic_fusion_level,
                              loss_weight=htc.semantic_loss_weight, ignore_index=htc.semantic_ignore_index)
            if htc.with_semantic else None
        )
        self.mask_branch = HTCMaskBranch(num_classes, n, htc.mask_info_flow,
                                         fuse_semantic=htc.with_semantic and "mask" in htc.semantic_fusion)

    # -- shared ----------------------------------------------------------------------------------------------
    def semantic_forward(self, features: dict[str, Tensor]) -> tuple[Tensor | None, Tensor | None]:
        """(logits (B, K, Hp/8, Wp/8), embedding (B, 256, Hp/8, Wp/8)) or (None, None) without the branch."""
        if self.semantic_head is None:
            return None, None
        return self.semantic_head([features[k] for k in _FPN_LEVELS])

    def box_forward(self, stage: int, features: dict[str, Tensor], boxes: Sequence[Tensor],
                    semantic: Tensor | None) -> tuple[Tensor, Tensor]:
        """Stage ``stage``'s box head on 7×7 RoI features (+ 2×2-average-pooled 14×14 semantic RoI features)."""
        x = self.box_pooler(features, boxes)
        if semantic is not None and "bbox" in self.htc.semantic_fusion:
            s = self.semantic_pooler({SEMANTIC_KEY: semantic}, boxes)
            x = x + F.adaptive_avg_pool2d(s, x.shape[-2:])
        return self.bbox_head[stage](x)

    # -- training --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, stage: int, proposals: Sequence[Tensor], targets: Sequence[dict[str, Tensor]]):
        """Assign at the stage's IoU (pos = neg = min-pos) with GT added, sample 512 (25 % positive).

        Returns per image: boxes (K_i, 4) positives first, matched GT index (K_i,) (−1 = background),
        labels (K_i,) (background = C), regression targets (K_i, 4) encoded with the stage's coder, and
        ``is_gt`` (K_i,) bool (the positive rows that are GT boxes; mmdet ``pos_is_gt``).
        """
        thr = self.htc.stage_iou_thrs[stage]
        coder = self.box_coders[stage]
        out = [
            assign_and_sample(props, t["boxes"].to(props), t["labels"].to(device=props.device, dtype=torch.long),
                              self.sampler, coder, self.num_classes, (thr, thr, thr), self.cfg.add_gt_as_proposals)
            for props, t in zip(proposals, targets)
        ]
        return [list(x) for x in zip(*out)] if out else [[], [], [], [], []]

    @torch.no_grad()
    def refine(self, stage: int, boxes: Sequence[Tensor], deltas: Tensor, is_gt: Sequence[Tensor],
               image_sizes: Sequence[tuple[int, int]]) -> list[Tensor]:
        """mmdet ``BBoxHead.refine_bboxes`` (class-agnostic): regress the sampled RoIs with the stage's deltas,
        clip to the image, drop the GT rows → the next proposals, per image."""
        out = []
        for b, d, g, size in zip(boxes, deltas.detach().split([len(x) for x in boxes]), is_gt, image_sizes):
            reg = clip_boxes_to_image(self.box_coders[stage].decode_single(d, b), tuple(size))
            out.append(reg[~g])
        return out

    def forward(
        self,
        features: dict[str, Tensor],
        proposals: Sequence[Tensor],
        image_sizes: Sequence[tuple[int, int]],
        targets: Sequence[dict[str, Tensor]] | None = None,
    ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        if not self.training:
            return self.detect(features, proposals, image_sizes), {}
        if targets is None:
            raise ValueError("HTCRoIHeads: targets are required in training mode")
        if any("masks" not in t for t in targets):
            raise ValueError("HTCRoIHeads: targets need 'masks' (G, H, W)")
        htc = self.htc
        losses: dict[str, Tensor] = {}
        sem_logits, semantic = self.semantic_forward(features)
        if sem_logits is not None:
            padded = tuple(4 * s for s in features["p2"].shape[-2:])  # the (Hp, Wp) batch frame (P2 = stride 4)
            labels_sem = semantic_targets(targets, image_sizes, padded, sem_logits.shape[-2:], htc.semantic,
                                          htc.semantic_ignore_index)
            losses["loss_semantic_seg"] = self.semantic_head.loss(sem_logits, labels_sem)
        feats = dict(features)
        if semantic is not None:
            feats[SEMANTIC_KEY] = semantic
        gt_masks = [t["masks"] for t in targets]
        props = list(proposals)
        for t in range(htc.num_stages):
            w = htc.stage_loss_weights[t]
            boxes, matched, labels, reg, is_gt = self.sample(t, props, targets)
            cls_logits, deltas = self.box_forward(t, features, boxes, semantic)
            box_losses = cascade_box_loss(cls_logits, deltas, torch.cat(labels), torch.cat(reg), self.cfg)
            losses[f"s{t}.loss_cls"] = w * box_losses["loss_cls"]
            losses[f"s{t}.loss_bbox"] = w * box_losses["loss_bbox"]
            next_props = None
            if htc.interleaved:
                next_props = self.refine(t, boxes, deltas, is_gt, image_sizes)
                boxes, matched, labels, _, _ = self.sample(t, next_props, targets)
            pos = [m >= 0 for m in matched]
            mask_loss = self.mask_branch.forward_train(
                RoIBatch(feats, [b[p] for b, p in zip(boxes, pos)], [lab[p] for lab, p in zip(labels, pos)],
                         gt_masks, [m[p] for m, p in zip(matched, pos)]), stage=t,
            )["loss_mask"]
            losses[f"s{t}.loss_mask"] = w * mask_loss
            if t < htc.num_stages - 1:
                props = next_props if next_props is not None else self.refine(t, boxes, deltas, is_gt, image_sizes)
        return [], losses

    # -- inference -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def detect(self, features: dict[str, Tensor], proposals: Sequence[Tensor],
               image_sizes: Sequence[tuple[int, int]]) -> list[dict[str, Tensor]]:
        """Cascade inference (mmdet ``HybridTaskCascadeRoIHead.simple_test``), boxes in input pixels."""
        _, semantic = self.semantic_forward(features)
        counts = [len(p) for p in proposals]
        rois = list(proposals)
        stage_logits = []
        deltas = None
        for t in range(self.htc.num_stages):
            cls_logits, deltas = self.box_forward(t, features, rois, semantic)
            stage_logits.append(cls_logits)
            if t < self.htc.num_stages - 1:
                rois = [clip_boxes_to_image(self.box_coders[t].decode_single(d, r), tuple(s))
                        for r, d, s in zip(rois, deltas.split(counts), image_sizes)]
        c = self.num_classes
        probs = F.softmax(torch.stack(stage_logits).mean(0), dim=-1)[:, :c]
        results = []
        last = self.box_coders[-1]
        for r, p, d, size in zip(rois, probs.split(counts), deltas.split(counts), image_sizes):
            k = r.shape[0]
            boxes = clip_boxes_to_image(last.decode_single(d, r), tuple(size))[:, None].expand(k, c, 4)
            if self.fixed_dets is not None:
                b, s, lab = topk_detections(boxes, p, self.fixed_dets)
            else:
                b, s, lab = multiclass_nms(boxes, p, self.cfg.score_thresh, self.cfg.nms_thresh,
                                           self.cfg.detections_per_img)
            results.append({"boxes": b, "scores": s, "labels": lab})
        return self.predict_masks(features, results, semantic=semantic)

    @torch.no_grad()
    def predict_masks(self, features: dict[str, Tensor], detections: list[dict[str, Tensor]],
                      semantic: Tensor | None = None) -> list[dict[str, Tensor]]:
        """Add ``mask_probs`` (n, 28, 28) — the mean of the three mask stages on the final boxes, as mmdet's
        ``simple_test`` — to each image's detections (``boxes`` input pixels, ``labels``); also used with given
        boxes (the GT-box oracle). ``semantic``: the semantic features if already computed."""
        if semantic is None:
            _, semantic = self.semantic_forward(features)
        feats = dict(features)
        if semantic is not None:
            feats[SEMANTIC_KEY] = semantic
        det_boxes = [r["boxes"] for r in detections]
        det_labels = [r["labels"] for r in detections]
        mask_probs = self.mask_branch.predict(RoIBatch(feats, det_boxes, det_labels))
        for r, m in zip(detections, mask_probs.split([len(b) for b in det_boxes])):
            r["mask_probs"] = m
        return detections


def build_htc_roi_heads(preset: Preset) -> HTCRoIHeads:
    """HTC RoI heads for ``preset`` (``mask_head_cfg`` an :class:`HTCConfig`; registered by ``baselines/__init__.py``).

    Raises:
        TypeError: ``mask_head_cfg`` is not an :class:`HTCConfig`. ValueError: unknown ``semantic`` mode.
        FileNotFoundError: ``semantic="stuff"`` with a ``stuff_root`` that is set but is not a folder.
    """
    htc = preset.mask_head_cfg
    if not isinstance(htc, HTCConfig):
        raise TypeError(f"preset {preset.name!r}: mask_head_cfg must be an HTCConfig, got {type(htc).__name__}")
    if htc.semantic == "stuff" and htc.stuff_root is not None and not Path(htc.stuff_root).is_dir():
        raise FileNotFoundError(
            f"preset {preset.name!r}: HTCConfig.stuff_root={htc.stuff_root!r} is not a folder (expected the COCO-stuff "
            "stuffthingmaps PNGs of the training split)"
        )
    return HTCRoIHeads(preset.num_classes, preset.roi, htc)

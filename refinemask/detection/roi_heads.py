"""Box RoI head (mmdet ``StandardRoIHead`` + ``Shared2FCBBoxHead``) with a pluggable mask branch
(docs/models.md "The trunk").

Class layout is mmdet's: classification logits have C + 1 columns with **background last** (index C), box
regression is class-specific with C·4 outputs (no background slot), labels everywhere are contiguous 0..C−1.

Training (per image): assign proposals ∪ GT boxes with IoU 0.5 (``max_iou_assign``, GT rows assigned to
themselves), sample 512 RoIs with 25 % positives, pool 7×7 (aligned RoIAlign, P2–P5), two FC 1024 layers,
CE + L1 (or smooth-L1) losses normalised by the number of sampled RoIs; positives go to the mask branch.
Inference: softmax, class-specific decode clipped to the image, score > thr, per-class NMS, top-k.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler, BoxCoder
from torchvision.ops import batched_nms, box_iou, clip_boxes_to_image, remove_small_boxes

from refinemask.config import BoxHeadConfig

from .mask_branch import MaskBranch, RoIBatch
from .poolers import MultiLevelRoIAlign
from .rpn import ASSIGN_NEGATIVE, max_iou_assign

__all__ = ["BoxHeadConfig", "TwoFCBoxHead", "RoIHeads", "assign_and_sample", "fast_rcnn_loss", "multiclass_nms",
           "topk_detections"]


class TwoFCBoxHead(nn.Module):
    """mmdet ``Shared2FCBBoxHead``: flatten C·7·7 → FC 1024 → ReLU → FC 1024 → ReLU → cls (C+1) and reg (C·4).

    Init: hidden FCs xavier-uniform, cls N(0, 0.01), reg N(0, 0.001), biases 0.
    Forward: (K, C_in, S, S) → (cls_logits (K, num_classes + 1), box_deltas (K, num_classes · 4)).
    """

    def __init__(self, num_classes: int, in_channels: int = 256, roi_size: int = 7, fc_dim: int = 1024) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.fc6 = nn.Linear(in_channels * roi_size * roi_size, fc_dim)
        self.fc7 = nn.Linear(fc_dim, fc_dim)
        self.cls_score = nn.Linear(fc_dim, num_classes + 1)
        self.bbox_pred = nn.Linear(fc_dim, num_classes * 4)
        for fc in (self.fc6, self.fc7):
            nn.init.xavier_uniform_(fc.weight)
            nn.init.zeros_(fc.bias)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = F.relu(self.fc6(x.flatten(1)))
        x = F.relu(self.fc7(x))
        return self.cls_score(x), self.bbox_pred(x)


def fast_rcnn_loss(
    cls_logits: Tensor,
    box_deltas: Tensor,
    labels: Tensor,
    regression_targets: Tensor,
    cfg: BoxHeadConfig,
) -> dict[str, Tensor]:
    """mmdet ``BBoxHead.loss``: CE over all sampled RoIs + L1/smooth-L1 on the GT-class deltas of positives.

    Args:
        cls_logits: (K, C + 1). box_deltas: (K, C·4). labels: (K,) int64 with background = C.
        regression_targets: (K, 4) encoded with ``cfg.bbox_reg_weights`` (only positives are used).
    Returns:
        ``{"loss_cls", "loss_bbox"}`` (weighted); both are normalised by K (mmdet ``avg_factor``).
    """
    num_classes = box_deltas.shape[1] // 4
    k = max(labels.numel(), 1)
    loss_cls = F.cross_entropy(cls_logits, labels, reduction="sum") / k
    pos = torch.nonzero(labels < num_classes).squeeze(1)
    pred = box_deltas.view(-1, num_classes, 4)[pos, labels[pos]]
    tgt = regression_targets[pos]
    if cfg.loss_bbox == "l1":
        loss_bbox = F.l1_loss(pred, tgt, reduction="sum") / k
    elif cfg.loss_bbox == "smooth_l1":
        loss_bbox = F.smooth_l1_loss(pred, tgt, beta=cfg.smooth_l1_beta, reduction="sum") / k
    else:
        raise ValueError(f"unknown box loss {cfg.loss_bbox!r}")
    return {"loss_cls": cfg.loss_cls_weight * loss_cls, "loss_bbox": cfg.loss_bbox_weight * loss_bbox}


def multiclass_nms(
    boxes: Tensor, scores: Tensor, score_thresh: float, nms_thresh: float, max_dets: int, min_size: float = 0.0
) -> tuple[Tensor, Tensor, Tensor]:
    """mmdet ``multiclass_nms``: keep (box, class) pairs with score > thr, NMS per class, top ``max_dets`` by score.

    Args:
        boxes: (K, C, 4) class-specific boxes. scores: (K, C) foreground probabilities.
        min_size: > 0 also drops boxes narrower or shorter than it (pixels) before NMS (torchvision
            ``postprocess_detections``: 1e-2); 0 keeps every box (mmdet).
    Returns:
        boxes (n, 4), scores (n,) sorted descending, labels (n,) int64 in [0, C), n ≤ max_dets.
    """
    k, c = scores.shape
    labels = torch.arange(c, device=scores.device).expand(k, c)
    boxes, scores, labels = boxes.reshape(-1, 4), scores.reshape(-1), labels.reshape(-1)
    valid = scores > score_thresh
    boxes, scores, labels = boxes[valid], scores[valid], labels[valid]
    if min_size > 0:
        big = remove_small_boxes(boxes, min_size)
        boxes, scores, labels = boxes[big], scores[big], labels[big]
    keep = batched_nms(boxes, scores, labels, nms_thresh)[:max_dets]
    return boxes[keep], scores[keep], labels[keep]


def topk_detections(boxes: Tensor, scores: Tensor, n: int) -> tuple[Tensor, Tensor, Tensor]:
    """The ``n`` highest-scoring (box, class) pairs, no threshold and no NMS (benchmark hook ``fixed_dets``).

    Args:
        boxes: (K, C, 4) class-specific boxes. scores: (K, C) foreground probabilities.
    Returns:
        boxes (m, 4), scores (m,) descending, labels (m,) int64 in [0, C); m = min(n, K·C).
    """
    c = scores.shape[1]
    top, idx = scores.reshape(-1).topk(min(int(n), scores.numel()))
    return boxes.reshape(-1, 4)[idx], top, idx % c


@torch.no_grad()
def assign_and_sample(
    props: Tensor,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    sampler: BalancedPositiveNegativeSampler,
    box_coder: BoxCoder,
    num_classes: int,
    iou_thrs: tuple[float, float, float],
    add_gt_as_proposals: bool = True,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """One image's RoI sampling: mmdet ``MaxIoUAssigner`` + ``RandomSampler`` (the trunk and every HTC stage).

    Args:
        props: (P, 4) proposals, input pixels. gt_boxes: (G, 4). gt_labels: (G,) in [0, C).
        iou_thrs: (pos_iou_thr, neg_iou_thr, min_pos_iou). add_gt_as_proposals: prepend the GT boxes.
    Returns:
        boxes (K, 4) positives first; matched GT index (K,) (−1 for background); labels (K,) (background = C);
        regression targets (K, 4) encoded with ``box_coder``; is_gt (K,) bool (positive rows that are GT boxes,
        mmdet ``pos_is_gt``).
    """
    g = gt_boxes.shape[0]
    assigned = max_iou_assign(box_iou(gt_boxes, props), *iou_thrs)
    is_gt = torch.zeros(props.shape[0], dtype=torch.bool, device=props.device)
    if add_gt_as_proposals and g > 0:
        props = torch.cat([gt_boxes, props], dim=0)
        assigned = torch.cat([torch.arange(g, device=props.device), assigned])
        is_gt = torch.cat([torch.ones(g, dtype=torch.bool, device=props.device), is_gt])
    lab = torch.full_like(assigned, -1, dtype=torch.float32)
    lab[assigned == ASSIGN_NEGATIVE] = 0.0
    lab[assigned >= 0] = 1.0
    pos_mask, neg_mask = sampler([lab])
    pos = torch.nonzero(pos_mask[0]).squeeze(1)
    neg = torch.nonzero(neg_mask[0]).squeeze(1)
    idx = torch.cat([pos, neg])
    npos = pos.numel()
    boxes = props[idx]
    matched = assigned[idx].clone()
    matched[npos:] = -1
    labels = torch.full((idx.numel(),), num_classes, dtype=torch.long, device=props.device)
    labels[:npos] = gt_labels[matched[:npos]]
    reg = torch.zeros_like(boxes)
    if npos > 0:
        reg[:npos] = box_coder.encode_single(gt_boxes[matched[:npos]], boxes[:npos])
    flags = is_gt[idx].clone()
    flags[npos:] = False
    return boxes, matched, labels, reg, flags


class RoIHeads(nn.Module):
    """Box head + optional mask branch.

    Args:
        num_classes: C foreground classes.
        box_pooler: 7×7 pooler (default ``MultiLevelRoIAlign(output_size=7)``).
        box_head: default ``TwoFCBoxHead(num_classes)``.
        mask_branch: a :class:`MaskBranch` or None (box-only detector).
        cfg: :class:`BoxHeadConfig`.
        min_box_size: drop detections smaller than this (pixels) before NMS (torchvision 1e-2; mmdet 0).

    Forward:
        features: FPN dict; proposals: B tensors (K_i, 4) input pixels; image_sizes: B × (h, w) unpadded.
        targets (training): B dicts ``boxes`` (G_i, 4) float, ``labels`` (G_i,) int64 in [0, C),
        ``masks`` (G_i, H, W) uint8/bool in the padded input frame (needed when a mask branch is present).
    Returns:
        training: ``([], losses)`` with ``loss_cls``, ``loss_bbox`` and the branch's losses.
        inference: (B dicts ``boxes`` (n, 4) input pixels, ``scores`` (n,), ``labels`` (n,), and
        ``mask_probs`` (n, S, S) when a mask branch is present; ``{}``).
    """

    #: Benchmark hook (``rmbench bench --fixed-dets N``): when an int, inference skips the score threshold and
    #: the per-class NMS and keeps the N highest-scoring (proposal, class) pairs of each image
    #: (:func:`topk_detections`), so that randomly initialised models feed exactly N boxes to the mask branch.
    #: None (the default) is normal inference. Other RoI heads (HTC) honour the same attribute.
    fixed_dets: int | None = None

    def __init__(
        self,
        num_classes: int,
        box_pooler: nn.Module | None = None,
        box_head: nn.Module | None = None,
        mask_branch: MaskBranch | None = None,
        cfg: BoxHeadConfig = BoxHeadConfig(),
        min_box_size: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.min_box_size = float(min_box_size)
        self.box_pooler = box_pooler or MultiLevelRoIAlign(output_size=7)
        self.box_head = box_head or TwoFCBoxHead(num_classes)
        self.mask_branch = mask_branch
        self.cfg = cfg
        self.box_coder = BoxCoder(weights=cfg.bbox_reg_weights)
        self.sampler = BalancedPositiveNegativeSampler(cfg.batch_size_per_image, cfg.positive_fraction)

    # -- training --------------------------------------------------------------------------------------
    @torch.no_grad()
    def select_training_samples(
        self, proposals: Sequence[Tensor], targets: Sequence[dict[str, Tensor]]
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
        """Assign and sample RoIs (mmdet ``MaxIoUAssigner`` + ``RandomSampler``, GT added as proposals).

        Returns per image: sampled boxes (K_i, 4), matched GT index (K_i,) (−1 for background),
        labels (K_i,) with background = C, regression targets (K_i, 4).
        """
        cfg = self.cfg
        out_boxes, out_matched, out_labels, out_reg = [], [], [], []
        for props, t in zip(proposals, targets):
            boxes, matched, labels, reg, _ = assign_and_sample(
                props, t["boxes"].to(props), t["labels"].to(device=props.device, dtype=torch.long), self.sampler,
                self.box_coder, self.num_classes, (cfg.pos_iou_thr, cfg.neg_iou_thr, cfg.min_pos_iou),
                cfg.add_gt_as_proposals,
            )
            out_boxes.append(boxes)
            out_matched.append(matched)
            out_labels.append(labels)
            out_reg.append(reg)
        return out_boxes, out_matched, out_labels, out_reg

    def forward(
        self,
        features: dict[str, Tensor],
        proposals: Sequence[Tensor],
        image_sizes: Sequence[tuple[int, int]],
        targets: Sequence[dict[str, Tensor]] | None = None,
    ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        if self.training:
            if targets is None:
                raise ValueError("RoIHeads: targets are required in training mode")
            boxes, matched, labels, reg = self.select_training_samples(proposals, targets)
            cls_logits, box_deltas = self.box_head(self.box_pooler(features, boxes))
            losses = fast_rcnn_loss(cls_logits, box_deltas, torch.cat(labels), torch.cat(reg), self.cfg)
            if self.mask_branch is not None:
                if any("masks" not in t for t in targets):
                    raise ValueError("RoIHeads: targets need 'masks' (G, H, W) when a mask branch is present")
                pos = [m >= 0 for m in matched]
                pos_boxes = [b[p] for b, p in zip(boxes, pos)]
                if getattr(self.mask_branch, "train_on_pred_boxes", False):
                    pos_boxes = self.regress_positives(box_deltas, pos_boxes, [lab[p] for lab, p in zip(labels, pos)],
                                                       [b.shape[0] for b in boxes], pos, image_sizes)
                losses.update(
                    self.mask_branch.forward_train(RoIBatch(
                        features,
                        pos_boxes,
                        [lab[p] for lab, p in zip(labels, pos)],
                        gt_masks=[t["masks"] for t in targets],
                        matched_idxs=[m[p] for m, p in zip(matched, pos)],
                    ))
                )
            return [], losses

        return self.predict_masks(features, self.detect(features, proposals, image_sizes)), {}

    @torch.no_grad()
    def predict_masks(self, features: dict[str, Tensor],
                      detections: list[dict[str, Tensor]]) -> list[dict[str, Tensor]]:
        """Add ``mask_probs`` (n, S, S) to each image's detections (``boxes`` (n, 4) input pixels, ``labels`` (n,));
        the mask-branch half of inference, also used with given boxes (``TwoStageDetector(..., boxes=)``, the
        GT-box oracle). Without a mask branch the detections are returned unchanged."""
        if self.mask_branch is None:
            return detections
        boxes = [d["boxes"] for d in detections]
        labels = [d["labels"] for d in detections]
        probs = self.mask_branch.predict(RoIBatch(features, boxes, labels))
        for d, p in zip(detections, probs.split([b.shape[0] for b in boxes])):
            d["mask_probs"] = p
        return detections

    @torch.no_grad()
    def regress_positives(
        self,
        box_deltas: Tensor,
        pos_boxes: Sequence[Tensor],
        pos_labels: Sequence[Tensor],
        num_per_image: Sequence[int],
        pos: Sequence[Tensor],
        image_sizes: Sequence[tuple[int, int]],
    ) -> list[Tensor]:
        """detectron2 ``TRAIN_ON_PRED_BOXES``: positives regressed by their GT-class deltas (detached), clipped.

        Used when the mask branch sets ``train_on_pred_boxes`` (PointRend's detectron2 variant). Args: the box
        head's deltas (Σ K_i, C·4) for all sampled RoIs, the positive boxes/labels per image, K_i per image, the
        positive masks (K_i,) and the image sizes. Returns: per image (P_i, 4) boxes in input pixels.
        """
        out = []
        c = max(box_deltas.shape[1] // 4, 1)
        for d, b, lab, p, size in zip(box_deltas.detach().split(list(num_per_image)), pos_boxes, pos_labels, pos,
                                      image_sizes):
            d = d[p].view(-1, c, 4)
            d = d[torch.arange(d.shape[0], device=d.device), lab.clamp(max=c - 1)] if c > 1 else d[:, 0]
            out.append(clip_boxes_to_image(self.box_coder.decode_single(d, b), tuple(size)))
        return out

    # -- inference -------------------------------------------------------------------------------------
    @torch.no_grad()
    def detect(
        self, features: dict[str, Tensor], proposals: Sequence[Tensor], image_sizes: Sequence[tuple[int, int]]
    ) -> list[dict[str, Tensor]]:
        """Box inference in input pixels: ``[{"boxes", "scores", "labels"}]`` per image
        (mmdet ``simple_test_bboxes``)."""
        cls_logits, box_deltas = self.box_head(self.box_pooler(features, proposals))
        c = self.num_classes
        probs = F.softmax(cls_logits, dim=-1)[:, :c]
        results = []
        for props, p, d, size in zip(
            proposals,
            probs.split([len(x) for x in proposals]),
            box_deltas.split([len(x) for x in proposals]),
            image_sizes,
        ):
            k = props.shape[0]
            boxes = self.box_coder.decode_single(d.reshape(k * c, 4), props[:, None].expand(k, c, 4).reshape(-1, 4))
            boxes = clip_boxes_to_image(boxes, tuple(size)).view(k, c, 4)
            if self.fixed_dets is not None:
                b, s, lab = topk_detections(boxes, p, self.fixed_dets)
            else:
                b, s, lab = multiclass_nms(boxes, p, self.cfg.score_thresh, self.cfg.nms_thresh,
                                           self.cfg.detections_per_img, self.min_box_size)
            results.append({"boxes": b, "scores": s, "labels": lab})
        return results

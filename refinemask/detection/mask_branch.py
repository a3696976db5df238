"""The mask-branch protocol (docs/models.md §9.1).

The trunk (:class:`~refinemask.detection.roi_heads.RoIHeads`) computes features, samples positive RoIs
(training) or final detections (inference) and hands them to a :class:`MaskBranch`. Mask R-CNN, PointRend and
RefineMask differ only in the branch object; pooling (:mod:`.poolers`), targets (:func:`.masks.mask_targets`),
pasting and the 0.5 threshold (:mod:`.masks`) are shared.

A branch must implement :meth:`MaskBranch.forward`; the hooks :meth:`~MaskBranch.targets`,
:meth:`~MaskBranch.loss`, :meth:`~MaskBranch.forward_train` and :meth:`~MaskBranch.predict` have defaults for a
single-output head (Mask R-CNN's FCN) and are overridden by multi-stage heads:

* RefineMask: ``forward_train`` (4 stage targets at 14/28/56/112 via ``mask_targets(size=S)``, semantic target
  from ``gt_masks``, BAR loss) and ``predict`` (boundary-aware merge to 112×112).
* PointRend: ``forward_train`` (point sampling on the coarse logits) and ``predict`` (subdivision to 224×224).

Conventions: boxes are in *input* pixels (the resized, padded batch frame), one tensor per image; labels are
contiguous foreground indices 0..C−1; features is the FPN dict (``"p2"``…``"p6"``).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .masks import mask_targets

__all__ = ["MaskBranch", "RoIBatch", "select_class_channel", "mask_bce_loss"]


@dataclass
class RoIBatch:
    """The RoIs a mask branch works on, for a batch of B images: what every branch's ``forward``,
    ``forward_train`` and ``predict`` receive.

    Attributes:
        features: FPN maps ``"p2"``… (B, 256, H_l, W_l) (HTC adds its semantic feature map).
        boxes: B tensors (K_i, 4) x1, y1, x2, y2 in input pixels (the resized, padded batch frame).
        labels: B tensors (K_i,) int64 class indices in [0, C) (GT class in training, predicted at test).
        gt_masks: training only: B tensors (G_i, H, W), every non-crowd GT mask of image i in the padded frame.
        matched_idxs: training only: B tensors (K_i,) indexing ``gt_masks[i]`` for each RoI.
    """

    features: dict[str, Tensor]
    boxes: Sequence[Tensor]
    labels: Sequence[Tensor]
    gt_masks: Sequence[Tensor] | None = None
    matched_idxs: Sequence[Tensor] | None = None

    @property
    def num_rois(self) -> int:
        """Σ K_i."""
        return sum(int(b.shape[0]) for b in self.boxes)


def select_class_channel(mask_logits: Tensor, labels: Tensor) -> Tensor:
    """(N, C, S, S) logits → (N, S, S) channel ``labels[i]`` of row i; a 1-channel (class-agnostic) map → channel 0."""
    if mask_logits.shape[1] == 1:
        return mask_logits[:, 0]
    idx = torch.arange(mask_logits.shape[0], device=mask_logits.device)
    return mask_logits[idx, labels.to(mask_logits.device)]


def mask_bce_loss(mask_logits: Tensor, targets: Tensor, labels: Tensor) -> Tensor:
    """mmdet ``mask_cross_entropy``: BCE-with-logits on the GT-class channel, mean over N·S·S.

    Args:
        mask_logits: (N, C or 1, S, S). targets: (N, S, S) in [0, 1]. labels: (N,) int64 in [0, C).
    Returns:
        scalar; ``0 · Σ logits`` (keeps the graph, zero gradient) when N == 0.
    """
    if mask_logits.shape[0] == 0:
        return mask_logits.sum() * 0.0
    logits = select_class_channel(mask_logits, labels)
    return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="mean")


class MaskBranch(nn.Module, metaclass=abc.ABCMeta):
    """Abstract mask branch (subclasses implement :meth:`forward`).

    Attributes:
        num_classes: C, the number of foreground classes.
        mask_size: S of the logits returned by :meth:`forward` (and the default target size).
        loss_weight: multiplies the default loss (1.0 for Mask R-CNN).
        train_on_pred_boxes: True → the RoI heads hand :meth:`forward_train` the positives regressed by the box
            head (GT-class deltas, detached, clipped; detectron2 ``TRAIN_ON_PRED_BOXES``) instead of the proposals.
    """

    num_classes: int
    mask_size: int
    loss_weight: float = 1.0
    train_on_pred_boxes: bool = False
    #: inference convolutions run channels-last (NHWC); training keeps PyTorch's NCHW default
    channels_last: bool = True

    def inference_layout(self, x: Tensor) -> Tensor:
        """``x`` (N, C, H, W) in the memory layout the branch's convolutions run in.

        Channels-last when :attr:`channels_last` and in eval mode, else unchanged. A convolution follows its input's
        layout, so every conv downstream of the converted RoI / P2 features runs NHWC: same results up to float32
        summation order (tested for every mask-head family: identical masks), and on CPU (oneDNN) the branch's
        1×1, dilated 3×3 and transposed convs on 100 RoIs × 64-256 channels run up to ~3x faster than in NCHW.
        Training is left in NCHW so that its numerics (and the committed training baselines) do not move.
        """
        if self.channels_last and not self.training and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    @abc.abstractmethod
    def forward(self, rois: RoIBatch) -> Tensor:
        """Per-RoI mask logits of ``rois`` (a :class:`RoIBatch`).

        Returns:
            (Σ K_i, C or 1, S, S) logits, rows in the order of ``torch.cat(rois.boxes)``.
        """
        raise NotImplementedError

    def targets(
        self,
        boxes: Sequence[Tensor],
        gt_masks: Sequence[Tensor],
        matched_idxs: Sequence[Tensor],
        size: int | None = None,
    ) -> Tensor:
        """Binary mask targets (Σ K_i, S, S) for positive ``boxes`` (default S = ``self.mask_size``).

        ``gt_masks[i]`` is (G_i, H, W) in the input pixel frame; ``matched_idxs[i]`` (K_i,) indexes it.
        Delegates to :func:`~refinemask.detection.masks.mask_targets` (aligned RoIAlign, ≥ 0.5).
        """
        s = self.mask_size if size is None else size
        out = [mask_targets(m, b, i, s) for m, b, i in zip(gt_masks, boxes, matched_idxs)]
        if not out:
            return torch.zeros((0, s, s))
        return torch.cat(out, dim=0)

    def loss(self, mask_logits: Tensor, targets: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """Default loss: ``{"loss_mask": loss_weight · mask_bce_loss(...)}``; labels is the concatenated (N,)."""
        return {"loss_mask": self.loss_weight * mask_bce_loss(mask_logits, targets, labels)}

    def forward_train(self, rois: RoIBatch) -> dict[str, Tensor]:
        """Training entry point called by the RoI heads with the sampled positive RoIs.

        Args: a :class:`RoIBatch` with ``gt_masks`` and ``matched_idxs`` set.
        Returns: dict of scalar losses (already weighted).
        """
        logits = self(rois)
        tgt = self.targets(rois.boxes, rois.gt_masks, rois.matched_idxs).to(logits.device)
        labels = rois.labels
        return self.loss(logits, tgt, torch.cat(list(labels)) if labels else logits.new_zeros(0, dtype=torch.long))

    @torch.no_grad()
    def predict(self, rois: RoIBatch) -> Tensor:
        """Inference: (Σ K_i, S', S') foreground probabilities of the predicted class, ready for pasting.

        Default: σ of the label channel of :meth:`forward`. Multi-stage heads override (merge/subdivision).
        """
        logits = self(rois)
        if logits.shape[0] == 0:
            return logits.new_zeros((0,) + tuple(logits.shape[-2:]))
        return select_class_channel(logits, torch.cat(list(rois.labels))).sigmoid()

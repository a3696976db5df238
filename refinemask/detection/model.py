"""Two-stage detector: transform → ResNet-FPN → RPN → RoI heads (+ mask branch) → paste (docs/models.md §1, §6, §9).

Input images are RGB tensors (3, H, W), uint8 or float **in [0, 255]** (mmdet's units, not torchvision's [0, 1]).
The :class:`DetectionTransform` reproduces mmdet's test pipeline on tensors: keep-ratio resize to fit
(long, short) = (1333, 800) with ``int(x·s + 0.5)`` sizes, normalise (pytorch-style RGB mean/std or caffe-style
BGR mean, std 1), zero-pad right/bottom to a multiple of 32. It can be bypassed: pass an :class:`ImageBatch`
(built once in a data-loader worker with :meth:`DetectionTransform.preprocess`) so that timing excludes
preprocessing (docs/models.md §6), or set ``resize=False`` to feed pre-sized images.

Outputs (eval mode), one dict per image, in ORIGINAL image pixels:
``boxes`` (N, 4) float x1, y1, x2, y2; ``scores`` (N,) descending; ``labels`` (N,) int64 in 0..C−1;
``masks`` (N, H, W) bool (pasted with :func:`~.masks.paste_masks`, threshold ``>= 0.5``) when a mask branch exists.
Training mode returns a dict of scalar losses.
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backbone import ResNetFPN
from .masks import MASK_THRESHOLD, paste_masks
from .roi_heads import RoIHeads
from .rpn import RegionProposalNetwork

__all__ = ["PIXEL_STATS", "ImageBatch", "DetectionTransform", "TwoStageDetector", "rescale_size"]

#: mmdet ``img_norm_cfg`` per backbone style: (mean, std, channel order fed to the network), in [0, 255] units.
PIXEL_STATS = {
    "pytorch": ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375), "rgb"),
    "caffe": ((103.53, 116.28, 123.675), (1.0, 1.0, 1.0), "bgr"),
}


def rescale_size(h: int, w: int, scale: tuple[int, int]) -> tuple[tuple[int, int], float]:
    """mmcv ``rescale_size`` with keep-ratio: fit (long, short) = ``scale``; returns ((new_h, new_w), factor).

    factor = min(max(scale) / max(h, w), min(scale) / min(h, w)); sizes are ``int(x · factor + 0.5)``.
    """
    long_edge, short_edge = max(scale), min(scale)
    factor = min(long_edge / max(h, w), short_edge / min(h, w))
    return (int(h * factor + 0.5), int(w * factor + 0.5)), factor


@dataclass
class ImageBatch:
    """A preprocessed batch.

    Attributes:
        tensors: (B, 3, Hp, Wp) normalised, zero-padded (Hp, Wp multiples of ``size_divisor``).
        image_sizes: B × (h, w) after resizing, before padding (pixels).
        original_sizes: B × (H, W) of the input images (outputs are reported in this frame).
        scale_factors: B × (sx, sy) = (w / W, h / H).
    """

    tensors: Tensor
    image_sizes: list[tuple[int, int]]
    original_sizes: list[tuple[int, int]]
    scale_factors: list[tuple[float, float]] = field(default_factory=list)

    def to(self, device, non_blocking: bool = False) -> ImageBatch:
        return ImageBatch(self.tensors.to(device, non_blocking=non_blocking), list(self.image_sizes),
                          list(self.original_sizes), list(self.scale_factors))


class DetectionTransform(nn.Module):
    """Resize (optional) → normalise → pad; also resizes training targets (boxes, masks).

    Args:
        style: ``"pytorch"`` or ``"caffe"`` (selects :data:`PIXEL_STATS`).
        test_scale: (long, short) for inference, default (1333, 800).
        train_scales: (long, short) candidates for training; ``multiscale_mode="value"`` picks one at random
            (mmdet ``multiscale_mode='value'``), ``"range"`` draws the short side uniformly in
            [min, max] of the given short sides (and the long side likewise). Default: ``(test_scale,)``.
        resize: False → images are used at their given size (scale factor 1).
        size_divisor: pad to a multiple of this (32).
        conventions: ``"mmdet"`` (above) or ``"torchvision"`` (``GeneralizedRCNNTransform``: divide by 255,
            normalise with the ImageNet mean/std in [0, 1] units, then resize the normalised image with
            ``F.interpolate(scale_factor=s, recompute_scale_factor=True)``, sizes ``floor(x·s)``,
            s = min(short / min(H, W), long / max(H, W)); pytorch style only).
    """

    def __init__(
        self,
        style: str = "pytorch",
        test_scale: tuple[int, int] = (1333, 800),
        train_scales: Sequence[tuple[int, int]] | None = None,
        multiscale_mode: str = "value",
        resize: bool = True,
        size_divisor: int = 32,
        conventions: str = "mmdet",
    ) -> None:
        super().__init__()
        if style not in PIXEL_STATS:
            raise ValueError(f"unknown style {style!r}; expected one of {sorted(PIXEL_STATS)}")
        if conventions not in ("mmdet", "torchvision"):
            raise ValueError(f"unknown conventions {conventions!r}; expected 'mmdet' or 'torchvision'")
        if conventions == "torchvision" and style != "pytorch":
            raise ValueError("torchvision conventions need the pytorch style (RGB, ImageNet mean/std)")
        self.conventions = conventions
        if multiscale_mode not in ("value", "range"):
            raise ValueError(f"multiscale_mode must be 'value' or 'range', got {multiscale_mode!r}")
        mean, std, order = PIXEL_STATS[style]
        self.register_buffer("mean", torch.tensor(mean).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(3, 1, 1), persistent=False)
        self.bgr = order == "bgr"
        self.test_scale = tuple(test_scale)
        self.train_scales = tuple(tuple(s) for s in (train_scales or (test_scale,)))
        self.multiscale_mode = multiscale_mode
        self.resize = resize
        self.size_divisor = size_divisor
        self._warned = False

    def _pick_scale(self) -> tuple[int, int]:
        if not self.training:
            return self.test_scale
        if self.multiscale_mode == "value" or len(self.train_scales) == 1:
            return random.choice(self.train_scales)
        longs = [max(s) for s in self.train_scales]
        shorts = [min(s) for s in self.train_scales]
        return random.randint(min(longs), max(longs)), random.randint(min(shorts), max(shorts))

    def preprocess(
        self, images: Sequence[Tensor], targets: Sequence[dict[str, Tensor]] | None = None
    ) -> tuple[ImageBatch, list[dict[str, Tensor]] | None]:
        """Images (3, H, W) RGB in [0, 255] → :class:`ImageBatch`; targets are resized into the padded frame.

        Target boxes are scaled by (sx, sy) and clipped to the resized image; masks (G, H, W) are resized with
        nearest neighbour (cv2 INTER_NEAREST ≡ torch ``"nearest"``) and zero-padded to (Hp, Wp).
        Raises ValueError for images that are not (3, H, W).
        """
        device = self.mean.device
        resized, sizes, orig, factors, new_targets = [], [], [], [], []
        for i, img in enumerate(images):
            if img.dim() != 3 or img.shape[0] != 3:
                raise ValueError(f"image {i}: expected a (3, H, W) tensor, got shape {tuple(img.shape)}")
            if img.is_floating_point() and not self._warned and img.numel() and float(img.max()) <= 1.0:
                warnings.warn("DetectionTransform: float image with max <= 1; inputs are expected in [0, 255]",
                              stacklevel=3)
                self._warned = True
            h0, w0 = int(img.shape[-2]), int(img.shape[-1])
            x = img.to(device=device, dtype=torch.float32)
            if self.conventions == "torchvision":
                x, (h, w) = self._torchvision_resize(x)
            elif self.resize:
                (h, w), _ = rescale_size(h0, w0, self._pick_scale())
                if (h, w) != (h0, w0):
                    x = F.interpolate(x[None], size=(h, w), mode="bilinear", align_corners=False)[0]
            else:
                h, w = h0, w0
            sx, sy = w / w0, h / h0
            if self.bgr:  # caffe style: mean/std are given in BGR order
                x = x.flip(0)
            if self.conventions != "torchvision":  # (torchvision normalises before resizing)
                x = (x - self.mean) / self.std
            resized.append(x)
            sizes.append((h, w))
            orig.append((h0, w0))
            factors.append((sx, sy))
            if targets is not None:
                t = dict(targets[i])
                if "boxes" in t:
                    scale = torch.tensor([sx, sy, sx, sy], device=device)
                    b = t["boxes"].to(device=device, dtype=torch.float32) * scale
                    b[:, 0::2] = b[:, 0::2].clamp(0, w)
                    b[:, 1::2] = b[:, 1::2].clamp(0, h)
                    t["boxes"] = b
                if "labels" in t:
                    t["labels"] = t["labels"].to(device=device, dtype=torch.long)
                if "masks" in t and (h, w) != tuple(t["masks"].shape[-2:]):
                    m = t["masks"].to(device)
                    if m.shape[0] > 0:
                        m = F.interpolate(m[None].to(torch.float32), size=(h, w), mode="nearest")[0]
                    else:
                        m = m.new_zeros((0, h, w), dtype=torch.float32)
                    t["masks"] = m.to(torch.uint8)
                new_targets.append(t)
        d = self.size_divisor
        hp = max(s[0] for s in sizes)
        wp = max(s[1] for s in sizes)
        hp, wp = (hp + d - 1) // d * d, (wp + d - 1) // d * d
        batch = resized[0].new_zeros((len(resized), 3, hp, wp))
        for x, out in zip(resized, batch):
            out[:, : x.shape[1], : x.shape[2]].copy_(x)
        if targets is not None:
            for t in new_targets:
                if "masks" in t:
                    m = t["masks"].to(device=device, dtype=torch.uint8)
                    t["masks"] = F.pad(m, (0, wp - m.shape[-1], 0, hp - m.shape[-2]))
        return ImageBatch(batch, sizes, orig, factors), (new_targets if targets is not None else None)

    #: torchvision's ``image_mean`` / ``image_std`` (0.485, 0.456, 0.406) / (0.229, 0.224, 0.225): the "pytorch"
    #: :data:`PIXEL_STATS` in [0, 1] units (equal as float32, which the torchvision parity test relies on)
    TORCHVISION_MEAN_STD = tuple(tuple(v / 255.0 for v in stats) for stats in PIXEL_STATS["pytorch"][:2])

    def _torchvision_resize(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """torchvision ``GeneralizedRCNNTransform.normalize`` then ``.resize`` of one [0, 255] image (3, H, W):
        returns the normalised, resized image and its (h, w)."""
        mean, std = (torch.tensor(v, dtype=torch.float32, device=x.device)[:, None, None]
                     for v in self.TORCHVISION_MEAN_STD)
        x = (x / 255.0 - mean) / std
        if not self.resize:
            return x, (int(x.shape[-2]), int(x.shape[-1]))
        scale_wh = self._pick_scale()
        long_edge, short_edge = max(scale_wh), min(scale_wh)
        h0, w0 = x.shape[-2:]
        scale = min(float(short_edge) / float(min(h0, w0)), float(long_edge) / float(max(h0, w0)))
        x = F.interpolate(x[None], size=None, scale_factor=scale, mode="bilinear", recompute_scale_factor=True,
                          align_corners=False)[0]
        return x, (int(x.shape[-2]), int(x.shape[-1]))

    def test_input_size(self, h: int, w: int) -> tuple[int, int]:
        """(H_p, W_p): the padded network input of an (h, w) image at the test scale (pixels). Images with the
        same value can share a batch without changing any output (:func:`refinemask.engine.inference`)."""
        if not self.resize:
            rh, rw = h, w
        elif self.conventions == "torchvision":
            long_edge, short_edge = max(self.test_scale), min(self.test_scale)
            scale = min(float(short_edge) / float(min(h, w)), float(long_edge) / float(max(h, w)))
            rh, rw = int(math.floor(h * scale)), int(math.floor(w * scale))
        else:
            (rh, rw), _ = rescale_size(h, w, self.test_scale)
        d = self.size_divisor
        return (rh + d - 1) // d * d, (rw + d - 1) // d * d

    def forward(self, images, targets=None):
        return self.preprocess(images, targets)


class TwoStageDetector(nn.Module):
    """Mask R-CNN–style detector; the mask branch decides which paper model it is.

    Args:
        backbone: :class:`ResNetFPN` (P2–P6). rpn: :class:`RegionProposalNetwork`.
        roi_heads: :class:`RoIHeads` (box head + optional mask branch). transform: :class:`DetectionTransform`.
        paste_chunk_size: detections pasted per ``grid_sample`` call (memory ≈ chunk · H · W · 12 bytes).
        conventions: ``"mmdet"`` (boxes ÷ scale factor, grid-sample paste, ``prob >= 0.5``) or ``"torchvision"``
            (``GeneralizedRCNNTransform.postprocess``: boxes × float32 ``original / resized`` ratios, torchvision's
            ``paste_masks_in_image`` with 1-px padding, ``prob > 0.5`` as its COCO evaluation does).

    ``forward(images, targets=None)``:
        images: list of (3, H, W) RGB tensors in [0, 255], or an :class:`ImageBatch` (already transformed; then
        targets must already be in its padded frame).
        targets (training): per image ``boxes`` (G, 4) float pixels (x1, y1, x2, y2), ``labels`` (G,) int64 in
        [0, C), ``masks`` (G, H, W) uint8/bool; crowd instances must be excluded (mmdet ignores them).
        boxes (inference only): per image ``{"boxes": (n, 4) x1, y1, x2, y2 ORIGINAL pixels, "labels": (n,)}``: skip the
        RPN and the box head and predict masks for exactly these boxes (score 1) — the GT-box oracle.
    Returns: training → dict of scalar losses (``loss_rpn_cls``, ``loss_rpn_bbox``, ``loss_cls``, ``loss_bbox``,
        plus the branch's, e.g. ``loss_mask``); eval → list of per-image dicts (see module docstring).
    Raises: ValueError in training mode without targets.
    """

    def __init__(
        self,
        backbone: ResNetFPN,
        rpn: RegionProposalNetwork,
        roi_heads: RoIHeads,
        transform: DetectionTransform | None = None,
        paste_chunk_size: int = 100,
        conventions: str = "mmdet",
    ) -> None:
        super().__init__()
        if conventions not in ("mmdet", "torchvision"):
            raise ValueError(f"unknown conventions {conventions!r}; expected 'mmdet' or 'torchvision'")
        self.conventions = conventions
        self.transform = transform or DetectionTransform(style=getattr(backbone, "style", "pytorch"),
                                                         conventions=conventions)
        self.backbone = backbone
        self.rpn = rpn
        self.roi_heads = roi_heads
        self.paste_chunk_size = paste_chunk_size

    @property
    def mask_branch(self):
        return self.roi_heads.mask_branch

    def forward(self, images: Sequence[Tensor] | ImageBatch, targets: Sequence[dict[str, Tensor]] | None = None,
                *, boxes: Sequence[dict[str, Tensor]] | None = None):
        if self.training and targets is None:
            raise ValueError("TwoStageDetector: targets are required in training mode")
        if boxes is not None and self.training:
            raise ValueError("TwoStageDetector: boxes= (given boxes) is an inference mode")
        if isinstance(images, ImageBatch):
            batch = images
            targets = list(targets) if targets is not None else None
        else:
            batch, targets = self.transform(images, targets)
        features = self.backbone(batch.tensors)
        if boxes is not None:
            return self.postprocess(self._given_boxes(features, batch, boxes), batch)
        proposals, rpn_losses = self.rpn(features, batch.image_sizes, targets)
        detections, roi_losses = self.roi_heads(features, proposals, batch.image_sizes, targets)
        if self.training:
            return {**rpn_losses, **roi_losses}
        return self.postprocess(detections, batch)

    @torch.no_grad()
    def _given_boxes(self, features, batch: ImageBatch, given: Sequence[dict[str, Tensor]]) -> list[dict[str, Tensor]]:
        """Masks for given boxes (the GT-box oracle): no RPN, no box head; boxes are mapped into the input frame
        with the inverse of :meth:`postprocess`'s rescale and every score is 1."""
        if len(given) != len(batch.image_sizes):
            raise ValueError(f"boxes= has {len(given)} entries for {len(batch.image_sizes)} images")
        dets = []
        for g, (h0, w0), (h, w) in zip(given, batch.original_sizes, batch.image_sizes):
            b = g["boxes"].to(device=batch.tensors.device, dtype=torch.float32).reshape(-1, 4)
            if self.conventions == "torchvision":
                scale = b.new_tensor([w / w0, h / h0, w / w0, h / h0])
            else:
                sx, sy = w / w0, h / h0
                scale = b.new_tensor([sx, sy, sx, sy])
            lab = g["labels"].to(device=b.device, dtype=torch.long).reshape(-1)
            if lab.shape[0] != b.shape[0]:
                raise ValueError(f"boxes= entry with {b.shape[0]} boxes and {lab.shape[0]} labels")
            dets.append({"boxes": b * scale, "scores": torch.ones(b.shape[0], device=b.device), "labels": lab})
        predict = getattr(self.roi_heads, "predict_masks", None)
        if predict is None:
            raise TypeError(f"{type(self.roi_heads).__name__} has no predict_masks(): given boxes are not supported")
        return predict(features, dets)

    @torch.no_grad()
    def postprocess(self, detections: list[dict[str, Tensor]], batch: ImageBatch) -> list[dict[str, Tensor]]:
        """Rescale boxes to original pixels (÷ scale factor, mmdet ``rescale=True``) and paste masks (≥ 0.5)."""
        if self.conventions == "torchvision":
            return self._postprocess_torchvision(detections, batch)
        out = []
        for i, det in enumerate(detections):
            sx, sy = batch.scale_factors[i] if batch.scale_factors else (1.0, 1.0)
            boxes = det["boxes"] / det["boxes"].new_tensor([sx, sy, sx, sy])
            res = {"boxes": boxes, "scores": det["scores"], "labels": det["labels"]}
            if "mask_probs" in det:
                h, w = batch.original_sizes[i]
                probs = det["mask_probs"]
                chunks = [
                    paste_masks(probs[j:j + self.paste_chunk_size], boxes[j:j + self.paste_chunk_size], (h, w))
                    >= MASK_THRESHOLD
                    for j in range(0, probs.shape[0], self.paste_chunk_size)
                ]
                res["masks"] = torch.cat(chunks) if chunks else torch.zeros((0, h, w), dtype=torch.bool,
                                                                            device=boxes.device)
            out.append(res)
        return out

    def _postprocess_torchvision(self, detections: list[dict[str, Tensor]],
                                 batch: ImageBatch) -> list[dict[str, Tensor]]:
        """torchvision ``resize_boxes`` + ``paste_masks_in_image`` (padding 1), thresholded ``> 0.5``."""
        from torchvision.models.detection.roi_heads import paste_masks_in_image

        out = []
        for det, (h, w), (rh, rw) in zip(detections, batch.original_sizes, batch.image_sizes):
            boxes = det["boxes"]
            ratio_h = torch.tensor(h, dtype=torch.float32, device=boxes.device) / torch.tensor(
                rh, dtype=torch.float32, device=boxes.device)
            ratio_w = torch.tensor(w, dtype=torch.float32, device=boxes.device) / torch.tensor(
                rw, dtype=torch.float32, device=boxes.device)
            x1, y1, x2, y2 = boxes.unbind(1)
            boxes = torch.stack((x1 * ratio_w, y1 * ratio_h, x2 * ratio_w, y2 * ratio_h), dim=1)
            res = {"boxes": boxes, "scores": det["scores"], "labels": det["labels"]}
            if "mask_probs" in det:
                probs = det["mask_probs"]
                chunks = [
                    paste_masks_in_image(probs[j:j + self.paste_chunk_size, None],
                                         boxes[j:j + self.paste_chunk_size], (h, w), padding=1)[:, 0] > 0.5
                    for j in range(0, probs.shape[0], self.paste_chunk_size)
                ]
                res["masks"] = torch.cat(chunks) if chunks else torch.zeros((0, h, w), dtype=torch.bool,
                                                                            device=boxes.device)
            out.append(res)
        return out

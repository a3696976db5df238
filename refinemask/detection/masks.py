"""Mask targets, the one paste function, the one threshold, and RLE encoding — shared by every model.

* :func:`mask_targets`: mmdet ``mask_target_single`` + ``BitmapMasks.crop_and_resize`` (docs/models.md §1.1, §9.4):
  aligned RoIAlign (sampling 0) of the full-image binary GT masks at the proposal boxes, at ANY size, then ≥ 0.5.
* :func:`paste_masks`: mmdet ``_do_paste_mask`` (skip_empty=False) = detectron2's paste (docs/models.md §2.7): every
  image pixel centre is mapped into the box and the S×S probability map is sampled with one batched ``grid_sample``
  (bilinear, ``align_corners=False``, zeros outside).
* :data:`MASK_THRESHOLD` = 0.5 (mmdet ``mask_thr_binary``), applied as ``prob >= 0.5`` by every model.
* :func:`encode_rle`: COCO RLE via pycocotools.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import roi_align

from eval.masks import masks_to_rles

__all__ = ["MASK_THRESHOLD", "mask_targets", "paste_masks", "binarize_masks", "encode_rle"]

#: Probability threshold for final binary masks (mmdet ``test_cfg.rcnn.mask_thr_binary``), used as ``>=``.
MASK_THRESHOLD = 0.5


def mask_targets(
    gt_masks: Tensor,
    boxes: Tensor,
    matched_idxs: Tensor,
    size: int | tuple[int, int],
    *,
    binarize: bool = True,
) -> Tensor:
    """Crop-and-resize GT bitmaps to per-RoI targets (mmdet 2.x ``mask_target_single``).

    Boxes are clipped to [0, W] × [0, H] of the mask tensor (mmdet clips to the padded mask shape), then
    ``roi_align(aligned=True, sampling_ratio=0, spatial_scale=1)`` samples the matched GT mask inside each box.

    Args:
        gt_masks: (G, H, W) binary masks of one image (bool/uint8/float), in the same pixel frame as ``boxes``.
        boxes: (N, 4) x1, y1, x2, y2 in pixels (the positive proposals).
        matched_idxs: (N,) int64 index into ``gt_masks`` for each box.
        size: S or (S_h, S_w).
        binarize: threshold at 0.5 (mmdet); False returns the soft RoIAlign values.
    Returns:
        (N, S_h, S_w) float32 in {0, 1} (or [0, 1] if not binarised), on ``boxes.device``.
        A box-shaped GT gives an all-ones target as long as each output cell spans ≳ 0.5 px; for finer targets
        (e.g. 112 cells on a 20-px side) the bilinear samples nearest the corners fall below 0.5 and the corner
        cells become 0 — mmdet's bitmap behaviour (RefineMask's original rasterises polygons instead,
        docs/models.md §2.4).
    Raises:
        ValueError: shapes inconsistent (``boxes`` not (N, 4), ``matched_idxs`` not (N,), masks not 3-D).
    """
    sh, sw = (size, size) if isinstance(size, int) else size
    if gt_masks.dim() != 3 or boxes.dim() != 2 or boxes.shape[-1] != 4 or matched_idxs.shape != boxes.shape[:1]:
        raise ValueError(
            f"mask_targets: expected gt_masks (G,H,W), boxes (N,4), matched_idxs (N,); got "
            f"{tuple(gt_masks.shape)}, {tuple(boxes.shape)}, {tuple(matched_idxs.shape)}"
        )
    n = boxes.shape[0]
    if n == 0:
        return boxes.new_zeros((0, sh, sw), dtype=torch.float32)
    h, w = gt_masks.shape[-2:]
    b = boxes.detach().to(torch.float32).clone()
    b[:, 0::2] = b[:, 0::2].clamp(0, w)
    b[:, 1::2] = b[:, 1::2].clamp(0, h)
    rois = torch.cat([matched_idxs.to(b)[:, None], b], dim=1)
    masks = gt_masks.to(device=b.device, dtype=torch.float32)[:, None]
    out = roi_align(masks, rois, output_size=(sh, sw), spatial_scale=1.0, sampling_ratio=0, aligned=True)[:, 0]
    return (out >= 0.5).to(torch.float32) if binarize else out


def paste_masks(mask_probs: Tensor, boxes: Tensor, image_shape: Sequence[int]) -> Tensor:
    """Paste per-box S×S probability maps into the full image (mmdet ``_do_paste_mask``, skip_empty=False).

    For image pixel (x, y) with centre (x + 0.5, y + 0.5) and box (x1, y1, x2, y2):
    ``u = 2 (x + 0.5 − x1) / (x2 − x1) − 1``, ``v = 2 (y + 0.5 − y1) / (y2 − y1) − 1``, and the output is
    ``grid_sample(mask, (u, v), mode="bilinear", padding_mode="zeros", align_corners=False)``, i.e. bilinear
    interpolation at mask coordinate ``(u + 1) S / 2 − 0.5`` with zeros outside the S×S map. One batched call.

    Degenerate boxes (zero width or height) paste an empty mask (mmdet would map their non-finite coordinates
    to the mask centre and paint a stripe).

    Args:
        mask_probs: (N, S_h, S_w) probabilities (or any values; interpolated as is).
        boxes: (N, 4) x1, y1, x2, y2 in pixels of the target image (original image for final outputs).
        image_shape: (H, W) of the target image in pixels.
    Returns:
        (N, H, W) float32 probabilities on ``mask_probs.device``. Threshold with :func:`binarize_masks`.
        Memory: N·H·W·12 bytes (grid + output); callers chunk N for large images.
    """
    if mask_probs.dim() != 3 or boxes.shape != (mask_probs.shape[0], 4):
        raise ValueError(f"paste_masks: expected (N,S,S) and (N,4); got {tuple(mask_probs.shape)}, "
                         f"{tuple(boxes.shape)}")
    h, w = int(image_shape[0]), int(image_shape[1])
    n = mask_probs.shape[0]
    device = mask_probs.device
    if n == 0:
        return torch.zeros((0, h, w), dtype=torch.float32, device=device)
    x0, y0, x1, y1 = boxes.to(device=device, dtype=torch.float32).split(1, dim=1)  # (N, 1) each
    img_y = torch.arange(h, device=device, dtype=torch.float32) + 0.5
    img_x = torch.arange(w, device=device, dtype=torch.float32) + 0.5
    img_y = (img_y[None] - y0) / (y1 - y0) * 2 - 1  # (N, H)
    img_x = (img_x[None] - x0) / (x1 - x0) * 2 - 1  # (N, W)
    # non-finite (degenerate box) -> far outside the map -> zero
    img_y = torch.where(torch.isfinite(img_y), img_y, torch.full_like(img_y, -3.0))
    img_x = torch.where(torch.isfinite(img_x), img_x, torch.full_like(img_x, -3.0))
    grid = torch.stack([img_x[:, None, :].expand(n, h, w), img_y[:, :, None].expand(n, h, w)], dim=3)
    out = F.grid_sample(mask_probs[:, None].to(torch.float32), grid, mode="bilinear", padding_mode="zeros",
                        align_corners=False)
    return out[:, 0]


def binarize_masks(mask_probs: Tensor, threshold: float = MASK_THRESHOLD) -> Tensor:
    """``mask_probs >= threshold`` as bool (the single threshold rule of every model)."""
    return mask_probs >= threshold


def encode_rle(masks: Tensor | np.ndarray) -> list[dict]:
    """COCO RLE of binary masks: :func:`eval.masks.masks_to_rles` (the harness's one encoder) on host arrays.

    Args:
        masks: (N, H, W) bool/uint8 (tensor on any device, or ndarray); also accepts a single (H, W) mask.
    Returns:
        list of N dicts ``{"size": [H, W], "counts": str}`` (counts decoded to ASCII, ready for json.dump).
    """
    if isinstance(masks, Tensor):
        masks = masks.detach().cpu().numpy()
    masks = np.asarray(masks)
    if masks.ndim == 2:
        masks = masks[None]
    return masks_to_rles(masks)

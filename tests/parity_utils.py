"""Helpers shared by the mmdetection parity tests (matching detections and comparing them)."""

from __future__ import annotations


def mmdet_meta(batch):
    """An mmdet ``DetDataSample`` describing our preprocessed ``ImageBatch`` (sizes in pixels, (h, w) order)."""
    from mmdet.structures import DetDataSample

    (h, w), (h0, w0), (sx, sy) = batch.image_sizes[0], batch.original_sizes[0], batch.scale_factors[0]
    hp, wp = batch.tensors.shape[-2:]
    return DetDataSample(metainfo=dict(img_id=0, img_shape=(h, w), ori_shape=(h0, w0), scale_factor=(sx, sy),
                                       batch_input_shape=(hp, wp), pad_shape=(hp, wp)))


def linf(a, b) -> float:
    """Max absolute difference of two tensors (0 for empty ones)."""
    return float((a - b).abs().max()) if a.numel() else 0.0


def mask_iou(a, b) -> float:
    """IoU of two boolean masks (1.0 when both are empty)."""
    inter = (a & b).sum().item()
    union = (a | b).sum().item()
    return 1.0 if union == 0 else inter / union


def match_detections(mm_res, ours_res):
    """Greedy: each mmdet detection (score order) → the unused detection of ours with the same label and the
    smallest box L∞. Returns [(i_mm, i_ours, box_linf, dscore)]."""
    used = set()
    pairs = []
    for i in range(len(mm_res["scores"])):
        best, best_d = None, float("inf")
        for j in range(len(ours_res["scores"])):
            if j in used or int(ours_res["labels"][j]) != int(mm_res["labels"][i]):
                continue
            d = linf(ours_res["boxes"][j], mm_res["boxes"][i])
            if d < best_d:
                best, best_d = j, d
        if best is not None:
            used.add(best)
            pairs.append((i, best, best_d, abs(float(ours_res["scores"][best]) - float(mm_res["scores"][i]))))
    return pairs

"""Boundary-aware refinement (BAR) as pure functions: the boundary operator, the training region, the BAR loss,
the training-time prediction propagation and the inference merge (paper Sec. 3.3, Eq. 1–6, appendix A.1;
docs/models.md §2.5–2.7; official ``generate_block_target``, ``RefineCrossEntropyLoss``,
``RefineRoIHead.simple_test_mask``).

Conventions: masks are (N, H, W) tensors (any leading shape for :func:`boundary_region`), logits are the
label-channel logits of one stage, (N, S, S). "Up_S" is ``F.interpolate(bilinear, align_corners=True)`` to S×S,
the resize the official code uses for every BAR step. Stage indices are the code's 0-based ones (paper stage k
= code stage k; the paper's "initial" 14×14 mask is stage 0).

Where paper and code differ, the code is followed (it produced the paper's numbers) and the paper's form is
available as an option:

* boundary threshold: appendix A.1 keeps pixels with D > 0 (≥ 1 opposite-label pixel in the K×K window); the code
  keeps ``clamp(D, 0) / K² > 0.1`` (≥ 1 for K = 3, ≥ 3 for K = 5, ≥ 5 for K = 7). Default ``threshold=0.1``;
  ``threshold=0.0`` gives the appendix rule. The two agree for width 1 (inference).
* Eq. 6 multiplies by f_up(B) (a soft bilinear map); the code binarises it (``>= 0.5``) and, at inference,
  builds the *non*-boundary region as ``Up(1 − B) >= 0.5``. :func:`bar_merge` reproduces the code bit for bit.
* Eq. 2's f_up is "bilinear ×2"; the code re-binarises the upsampled union at 0.5 (:func:`bar_region`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "CODE_THRESHOLD",
    "boundary_region",
    "upsample_to",
    "bar_region",
    "bar_loss",
    "propagate_prediction",
    "bar_merge",
    "merge_stage_logits",
    "refine_mask_loss",
]

#: the official code's boundary rule ``clamp(D, 0) / K² > 0.1`` (``generate_block_target``)
CODE_THRESHOLD = 0.1


def boundary_region(masks: Tensor, width: int, threshold: float = CODE_THRESHOLD) -> Tensor:
    """Convolutional boundary region of binary masks (appendix A.1, the code's ``generate_block_target == 1``).

    With K = 2w + 1 the A.1 kernel is −1 everywhere and K² − 1 at the centre. The mask is zero-padded by w
    (the outside of the RoI is background); D⁺ = kernel ⋆ pad(M) and D⁻ = kernel ⋆ (1 − pad(M)) (inverse taken
    after padding, so the padded ring is background in both passes). A pixel is boundary iff
    ``clamp(D⁺, 0) / K² > threshold`` or ``clamp(D⁻, 0) / K² > threshold``.

    Since D⁺(p) = K²·M(p) − n_fg(p) with n_fg the number of foreground pixels in p's K×K window, a foreground
    pixel has D⁺ = number of background pixels (padding included) in its window and a background pixel
    D⁻ = n_fg(p).
    These counts are computed with an exact window sum (``avg_pool2d`` with ``divisor_override=1`` on 0/1
    values, rounded), so the result is exact on any device — no floating-point convolution is involved.

    Args:
        masks: (..., H, W) binary masks: bool, or {0, 1} numbers (any dtype; values ``>= 0.5`` are foreground).
        width: w ≥ 1, the boundary width d̂ in pixels (2 in training, 1 at inference).
        threshold: ``0.1`` (code, default) or ``0.0`` (appendix A.1: D > 0).
    Returns:
        bool tensor of the input's shape; True on the boundary region.
    Raises:
        ValueError: ``width`` < 1 or input with fewer than 2 dims.
    """
    if int(width) != width or width < 1:
        raise ValueError(f"boundary width must be a positive integer, got {width!r}")
    if masks.dim() < 2:
        raise ValueError(f"boundary_region expects (..., H, W) masks, got shape {tuple(masks.shape)}")
    w = int(width)
    k = 2 * w + 1
    k2 = float(k * k)
    shape = masks.shape
    fg = (masks >= 0.5) if masks.dtype != torch.bool else masks
    x = fg.reshape(-1, 1, shape[-2], shape[-1]).to(torch.float32)
    if x.shape[0] == 0:
        return fg.clone()
    n_fg = F.avg_pool2d(F.pad(x, (w, w, w, w)), k, stride=1, divisor_override=1).round()
    d_plus = torch.where(x > 0, k2 - n_fg, torch.zeros_like(n_fg))  # background pixels in a fg pixel's window
    d_minus = torch.where(x > 0, torch.zeros_like(n_fg), n_fg)  # foreground pixels in a bg pixel's window
    region = (d_plus / k2 > threshold) | (d_minus / k2 > threshold)
    return region.reshape(shape)


def upsample_to(x: Tensor, size: int | Sequence[int]) -> Tensor:
    """Up_S: bilinear resize of (N, H, W) (or (N, 1, H, W)) to S×S with ``align_corners=True`` (the BAR resize)."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    if x.dim() == 3:
        return F.interpolate(x[:, None], size=size, mode="bilinear", align_corners=True)[:, 0]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def bar_region(
    prev_pred: Tensor,
    prev_target: Tensor,
    out_size: int,
    width: int = 2,
    threshold: float = CODE_THRESHOLD,
) -> Tensor:
    """Training region of a BAR stage, Eq. 2: R^k = f_up(B_G^{k−1} ∨ B_P^{k−1}).

    B_P = :func:`boundary_region` of the previous stage's binary prediction, B_G = of the previous stage's target
    (both at the previous resolution S_{k−1}, width ``width``); their union is resized to ``out_size`` with
    bilinear ``align_corners=True`` and re-binarised at ``>= 0.5`` (the code's f_up).

    Args:
        prev_pred: (N, s, s) binary prediction of stage k−1 (bool or {0, 1}).
        prev_target: (N, s, s) binary target of stage k−1.
        out_size: S_k.
    Returns:
        (N, S_k, S_k) bool.
    """
    union = boundary_region(prev_pred, width, threshold) | boundary_region(prev_target, width, threshold)
    return upsample_to(union.to(torch.float32), out_size) >= 0.5


def bar_loss(logits: Tensor, targets: Tensor, region: Tensor) -> Tensor:
    """BAR loss, Eq. 3–4: L^k = Σ_{n,i,j} R^k_{nij} · l_{nij} / δ_n,  δ_n = Σ_{n,i,j} R^k_{nij}.

    l is the pixel-wise binary cross-entropy with logits. One normaliser over the boundary pixels of **all**
    RoIs jointly (not per instance); δ is clamped to ≥ 1 (an empty region gives 0, keeping the graph).

    Args:
        logits: (N, S, S) stage-k logits of the label channel. targets: (N, S, S) in {0, 1}. region: (N, S, S) bool.
    Returns:
        scalar tensor.
    """
    loss = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none")
    r = region.to(logits.dtype)
    return (loss * r).sum() / r.sum().clamp(min=1.0)


def propagate_prediction(
    prev_logits: Tensor,
    logits: Tensor,
    prev_pred: Tensor,
    width: int = 1,
    threshold: float = CODE_THRESHOLD,
) -> Tensor:
    """Training-time "previous prediction" for the next BAR stage (docs/models.md §2.6 step 4,
    ``RefineCrossEntropyLoss``).

    E = [Up_S(B_1(P_{k−1})) >= 0.5]; Ẑ = Up_S(Z_{k−1}) (the **raw** logits of stage k−1, not a merged map);
    Ẑ[E] = Z_k[E]; P_k = [σ(Ẑ) >= 0.5]. (Inference chains the merged map instead, :func:`bar_merge`; this small
    train/test inconsistency is the official code's and is kept.)

    Args:
        prev_logits: (N, s, s) Z_{k−1}. logits: (N, S, S) Z_k. prev_pred: (N, s, s) binary P_{k−1}.
    Returns:
        (N, S, S) bool P_k (no gradient).
    """
    with torch.no_grad():
        size = logits.shape[-2:]
        boundary = upsample_to(boundary_region(prev_pred, width, threshold).to(torch.float32), size) >= 0.5
        z = torch.where(boundary, logits, upsample_to(prev_logits, size))
        return z.sigmoid() >= 0.5


def bar_merge(
    prev_merged: Tensor,
    logits: Tensor,
    width: int = 1,
    threshold: float = CODE_THRESHOLD,
) -> Tensor:
    """Inference merge of one BAR stage, Eq. 6 (code form).

    M'^k = f_up(B_P^{k−1}) ⊗ M^k + (1 − f_up(B_P^{k−1})) ⊗ f_up(M'^{k−1}):

    B_P^{k−1} = :func:`boundary_region` (width 1 at inference) of the binarised previous merged mask
    [σ(M'^{k−1}) >= 0.5]; the code builds the non-boundary region E = [Up_S(1 − B_P) >= 0.5] and sets
    M'^k = M^k outside E and Up_S(M'^{k−1}) inside E (all logits; bilinear ``align_corners=True``).

    Args:
        prev_merged: (N, s, s) logits M'^{k−1}. logits: (N, S, S) stage-k logits M^k.
    Returns:
        (N, S, S) merged logits M'^k.
    """
    size = logits.shape[-2:]
    prev_bin = prev_merged.sigmoid() >= 0.5
    non_boundary = upsample_to((~boundary_region(prev_bin, width, threshold)).to(torch.float32), size) >= 0.5
    return torch.where(non_boundary, upsample_to(prev_merged, size), logits)


def merge_stage_logits(
    stage_logits: Sequence[Tensor],
    start_stage: int = 1,
    width: int = 1,
    threshold: float = CODE_THRESHOLD,
) -> Tensor:
    """Inference chain, Eq. 5–6: M'^{start} = M^{start}; M'^k = :func:`bar_merge` (M'^{k−1}, M^k) for later stages.

    The official test starts at stage 1 (28×28); the 14×14 output is not used at test time.

    Args:
        stage_logits: list of (N, S_k, S_k) label-channel logits, stage 0 first.
    Returns:
        (N, S_last, S_last) merged logits.
    """
    merged = stage_logits[start_stage]
    for z in stage_logits[start_stage + 1:]:
        merged = bar_merge(merged, z, width, threshold)
    return merged


def refine_mask_loss(
    stage_logits: Sequence[Tensor],
    stage_targets: Sequence[Tensor],
    weights: Sequence[float],
    *,
    bar: bool = True,
    start_stage: int = 1,
    boundary_width: int = 2,
    threshold: float = CODE_THRESHOLD,
) -> tuple[Tensor, list[Tensor]]:
    """Multi-stage instance loss L_mask = Σ_k λ_k L_k (official ``RefineCrossEntropyLoss`` / ``BARCrossEntropyLoss``).

    * stages k ≤ ``start_stage``: L_k = mean BCE over all N·S_k² pixels; P_k = [σ(Z_k) >= 0.5].
    * later stages (BAR, Sec. 3.3 "Training"): R_k = :func:`bar_region` (P_{k−1}, T_{k−1}) with width
      ``boundary_width`` (d̂ = 2); L_k = :func:`bar_loss` (Eq. 3–4); then P_k = :func:`propagate_prediction`
      (width 1, as at inference).
    * ``bar=False`` (Table 7 ablation "w/o BAR"): every stage is a mean BCE on the full mask.

    Args:
        stage_logits: list of (N, S_k, S_k) label-channel logits. stage_targets: list of (N, S_k, S_k) binary targets.
        weights: λ_k per stage (paper: 0.25, 0.5, 0.75, 1.0).
    Returns:
        (weighted total, list of the unweighted per-stage losses). With N = 0 every term is 0·Σ logits (graph kept).
    Raises:
        ValueError: list lengths differ.
    """
    if not (len(stage_logits) == len(stage_targets) == len(weights)):
        raise ValueError(
            f"refine_mask_loss: {len(stage_logits)} stage logits, {len(stage_targets)} targets, {len(weights)} weights"
        )
    if stage_logits[0].shape[0] == 0:
        zero = sum(z.sum() for z in stage_logits) * 0.0
        return zero, [zero for _ in stage_logits]
    losses: list[Tensor] = []
    prev_pred = None
    for k, (z, t) in enumerate(zip(stage_logits, stage_targets)):
        t = t.to(z.dtype)
        if not bar or k <= start_stage or prev_pred is None:
            losses.append(F.binary_cross_entropy_with_logits(z, t, reduction="mean"))
            prev_pred = z.detach().sigmoid() >= 0.5
        else:
            region = bar_region(prev_pred, stage_targets[k - 1], z.shape[-1], boundary_width, threshold)
            losses.append(bar_loss(z, t, region))
            prev_pred = propagate_prediction(stage_logits[k - 1].detach(), z.detach(), prev_pred, 1, threshold)
    total = sum(w * l for w, l in zip(weights, losses))
    return total, losses

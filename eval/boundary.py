"""Boundary regions and boundary maps of binary masks (pure NumPy / SciPy / OpenCV).

Every function takes binary masks as 2-D arrays of shape (H, W) (``bool`` or any integer / float
dtype; non-zero = foreground). All distances, widths and radii are in **pixels** of the array the
mask lives in. Functions raise ``ValueError`` for inputs that are not 2-D or, where two masks are
compared, whose shapes differ.

Contents and sources
--------------------
- :func:`distance_boundary_region` -- RefineMask Sec. 3.3, Eq. 1: pixels whose Euclidean distance to
  the mask contour is at most ``d`` (two-sided), with the exact conventions of
  ``data/golden/README.md`` §5 ("primary").
- :func:`conv_boundary_region` -- RefineMask appendix A.1: the convolutional approximation
  (``generate_block_target`` in zhanggang001/RefineMask), computed exactly by window counting.
- :func:`region_iou` -- IoU of two binary regions (Table 12 metric).
- :func:`seg2bmap`, :func:`f_measure` -- DAVIS boundary map and boundary F
  (davisvideochallenge/davis2017-evaluation ``davis2017/metrics.py``; docs/evaluation.md §6.1).
- :func:`mask_to_boundary` -- Boundary IoU's inner band (bowenc0221/boundary-iou-api
  ``boundary_iou/utils/boundary_utils.py``; docs/evaluation.md §9).
"""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np
from scipy import ndimage

from eval.errors import UsageError

__all__ = [
    "distance_boundary_region",
    "conv_boundary_region",
    "region_iou",
    "seg2bmap",
    "disk",
    "f_measure",
    "f_measure_multi",
    "mask_to_boundary",
]


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _as_binary_2d(mask: np.ndarray, name: str = "mask") -> np.ndarray:
    """Return ``mask != 0`` as a bool (H, W) array; ValueError if ``mask`` is not 2-D."""
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise UsageError(f"{name} must be a 2-D (H, W) array, got shape {arr.shape}")
    if arr.dtype == np.bool_:
        return arr
    return arr != 0


def _check_same_shape(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise UsageError(f"{name_a} and {name_b} must have the same shape, got {a.shape} and {b.shape}")


def _window_sum(padded: np.ndarray, k: int) -> np.ndarray:
    """Exact sums over all k x k windows of an integer array (valid mode) via an integral image."""
    ii = np.zeros((padded.shape[0] + 1, padded.shape[1] + 1), dtype=np.int64)
    np.cumsum(np.cumsum(padded, axis=0, dtype=np.int64), axis=1, out=ii[1:, 1:])
    return ii[k:, k:] - ii[:-k, k:] - ii[k:, :-k] + ii[:-k, :-k]


# --------------------------------------------------------------------------------------------
# Eq. 1 distance-defined boundary region
# --------------------------------------------------------------------------------------------
def distance_boundary_region(
    mask: np.ndarray,
    d: float,
    frame: bool = True,
    half_pixel_contour: bool = False,
) -> np.ndarray:
    """Distance-defined boundary region B_d of a binary mask (RefineMask Sec. 3.3, Eq. 1).

    A pixel p belongs to B_d iff ``dist(p) <= d`` where, for a foreground pixel, ``dist`` is the
    Euclidean distance between pixel centres to the nearest background pixel and, for a background
    pixel, to the nearest foreground pixel (two-sided band). Computed with
    ``scipy.ndimage.distance_transform_edt`` of the mask (foreground pass) and of its complement
    (background pass), exactly as ``data/golden/README.md`` §5 "primary" defines it.

    Parameters
    ----------
    mask : np.ndarray
        Binary mask, shape (H, W); non-zero = foreground.
    d : float
        Band half-width ``d_hat`` in pixels (the paper uses 2 in training, 1 at inference).
    frame : bool, default True
        If True the mask is padded with a one-pixel frame of background before the distance
        transform, i.e. everything outside the array counts as background and foreground pixels on
        the array edge are at distance 1 from the contour (golden variant ``primary``). If False the
        EDT runs on the bare array (SciPy default; the array edge is not a contour: golden variant
        ``dist_no_frame``).
    half_pixel_contour : bool, default False
        If True the contour is taken to lie half-way between pixel centres, so the test becomes
        ``dist - 0.5 <= d`` (golden variant ``dist_half_pixel_contour``; for ``d = 1`` this equals
        the 3 x 3 chessboard window).

    Returns
    -------
    np.ndarray
        Boolean array of shape (H, W): True on the boundary region.

    Raises
    ------
    ValueError
        If ``mask`` is not 2-D or ``d`` is negative / not finite.

    Notes
    -----
    If the mask has no pixel of one label (and, with ``frame=False``, no background), the distance of
    the other label is infinite and it contributes nothing to the band. Cost: two EDTs of an
    (H + 2) x (W + 2) array.
    """
    m = _as_binary_2d(mask)
    if not np.isfinite(d) or d < 0:
        raise UsageError(f"d must be a finite non-negative number of pixels, got {d!r}")
    if frame:
        m_work = np.pad(m, 1, mode="constant", constant_values=False)
    else:
        m_work = m
    thr = float(d) + 0.5 if half_pixel_contour else float(d)
    band = np.zeros(m_work.shape, dtype=bool)
    # Foreground pass: distance from each fg pixel to the nearest bg pixel.
    if m_work.any() and not m_work.all():
        dist_fg = ndimage.distance_transform_edt(m_work)
        band |= m_work & (dist_fg <= thr)
        # Background pass: distance from each bg pixel to the nearest fg pixel.
        dist_bg = ndimage.distance_transform_edt(~m_work)
        band |= ~m_work & (dist_bg <= thr)
    # else: one label is absent -> its complement has no contour pixel at finite distance.
    if frame:
        band = band[1:-1, 1:-1]
    return band


# --------------------------------------------------------------------------------------------
# Appendix A.1 convolution approximation
# --------------------------------------------------------------------------------------------
def conv_boundary_region(
    mask: np.ndarray,
    width: int,
    threshold: float = 0.0,
    invert_then_pad: bool = False,
) -> np.ndarray:
    """Convolution-approximated boundary region A_w (RefineMask appendix A.1).

    Kernel of size K = 2w + 1 with weight K^2 - 1 at the centre and -1 elsewhere (weights sum to 0).
    ``Pm`` = mask zero-padded by w; ``Pi`` = 1 - Pm (inverse taken *after* padding, as RefineMask's
    ``generate_block_target`` does), ``D+`` / ``D-`` = valid cross-correlations of Pm / Pi with the
    kernel, and ``A = (clamp(D+, 0) / K^2 > threshold) | (clamp(D-, 0) / K^2 > threshold)``.

    Because ``D+(p) = K^2 * M(p) - sum_window(Pm)``, a foreground pixel has ``D+`` equal to the
    number of background pixels (padding included) in its K x K window, and a background pixel has
    ``D+ <= 0``; symmetrically for ``D-``. The function evaluates exactly these counts with an integral
    image (exact integer arithmetic, O(H W), no convolution loop).

    Parameters
    ----------
    mask : np.ndarray
        Binary mask, shape (H, W); non-zero = foreground.
    width : int
        Boundary width w >= 1 in pixels (kernel size 2w + 1).
    threshold : float, default 0.0
        ``0.0`` gives the paper's rule ``D > 0`` (>= 1 opposite pixel in the window). ``0.1`` gives the
        RefineMask code rule ``clamp(D, 0) / K^2 > 0.1`` (golden variant
        ``conv_refinemask_code_threshold``: >= 1 opposite pixel for K = 3, >= 3 for K = 5).
    invert_then_pad : bool, default False
        If True the inverse is taken *before* zero padding (``Pi = pad(1 - M, 0)``), so in the
        background pass the outside counts as foreground and every background pixel within w of the
        array edge becomes boundary (golden variant ``conv_invert_then_zero_pad``).

    Returns
    -------
    np.ndarray
        Boolean array of shape (H, W): True on the approximated boundary region.

    Raises
    ------
    ValueError
        If ``mask`` is not 2-D, ``width`` is not a positive integer, or ``threshold`` is negative.
    """
    m = _as_binary_2d(mask)
    if isinstance(width, bool) or int(width) != width or width < 1:
        raise UsageError(f"width must be a positive integer number of pixels, got {width!r}")
    if not np.isfinite(threshold) or threshold < 0:
        raise UsageError(f"threshold must be a finite number >= 0, got {threshold!r}")
    w = int(width)
    k = 2 * w + 1
    k2 = k * k
    mi = m.astype(np.int64)
    fg_count = _window_sum(np.pad(mi, w), k)  # foreground pixels in the window (pad = 0)
    # Foreground pass: D+ = K^2 - fg_count on foreground pixels (pad counts as background).
    d_plus = np.where(m, k2 - fg_count, 0)
    if invert_then_pad:
        # Pi = pad(1 - M, 0): the zeros of Pi in the window are fg pixels and padding pixels.
        inside = _window_sum(np.pad(np.ones_like(mi), w), k)
        d_minus = np.where(m, 0, k2 - (inside - fg_count))
    else:
        # Pi = 1 - pad(M, 0): the zeros of Pi in the window are exactly the fg pixels.
        d_minus = np.where(m, 0, fg_count)
    if threshold == 0.0:
        return (d_plus > 0) | (d_minus > 0)
    return (d_plus / k2 > threshold) | (d_minus / k2 > threshold)


# --------------------------------------------------------------------------------------------
# IoU of regions
# --------------------------------------------------------------------------------------------
def region_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU |A ∩ B| / |A ∪ B| of two binary regions of the same shape (H, W).

    Returns 1.0 if both regions are empty (convention of ``data/golden/README.md`` §5, Table 12).

    Raises
    ------
    ValueError
        If an input is not 2-D or the shapes differ.
    """
    aa = _as_binary_2d(a, "a")
    bb = _as_binary_2d(b, "b")
    _check_same_shape(aa, bb, "a", "b")
    union = int(np.count_nonzero(aa | bb))
    if union == 0:
        return 1.0
    return int(np.count_nonzero(aa & bb)) / union


# --------------------------------------------------------------------------------------------
# DAVIS boundary map and boundary F
# --------------------------------------------------------------------------------------------
def seg2bmap(mask: np.ndarray) -> np.ndarray:
    """One-pixel-wide boundary map of a binary mask (DAVIS ``_seg2bmap``, same-size output).

    A pixel is a boundary pixel iff its value differs from its right, lower or lower-right neighbour.
    In the last row only the right neighbour is compared, in the last column only the lower one, and
    the bottom-right pixel is never a boundary; the array border itself is not a contour, so a mask
    filling the array has an empty map. The map is offset half a pixel toward the origin and contains
    both foreground and background pixels; ``seg2bmap(M) == seg2bmap(~M)``.

    Parameters
    ----------
    mask : np.ndarray
        Binary mask, shape (H, W); non-zero = foreground.

    Returns
    -------
    np.ndarray
        Boolean boundary map, shape (H, W).

    Raises
    ------
    ValueError
        If ``mask`` is not 2-D.

    Source: davisvideochallenge/davis2017-evaluation ``davis2017/metrics.py::_seg2bmap`` (commit
    ac7c43f), docs/evaluation.md §6.1 step 1.
    """
    seg = _as_binary_2d(mask)
    b = np.zeros(seg.shape, dtype=bool)
    if seg.size == 0:
        return b
    # Interior (and first rows/cols): differs from right, lower or lower-right neighbour.
    b[:-1, :-1] = (
        (seg[:-1, :-1] != seg[:-1, 1:]) | (seg[:-1, :-1] != seg[1:, :-1]) | (seg[:-1, :-1] != seg[1:, 1:])
    )
    # Last row: right neighbour only.
    b[-1, :-1] = seg[-1, :-1] != seg[-1, 1:]
    # Last column: lower neighbour only.
    b[:-1, -1] = seg[:-1, -1] != seg[1:, -1]
    b[-1, -1] = False
    return b


@functools.lru_cache(maxsize=64)
def _disk_cached(radius: float) -> np.ndarray:
    ax = np.arange(-radius, radius + 1)
    x, y = np.meshgrid(ax, ax)
    k = ((x**2 + y**2) <= radius**2).astype(np.uint8)
    k.flags.writeable = False
    return k


def disk(radius: float) -> np.ndarray:
    """Flat disk structuring element, skimage ``morphology.disk(radius)`` semantics.

    Offsets ``L = arange(-radius, radius + 1)`` on both axes, kept where ``x^2 + y^2 <= radius^2``.
    For an integer radius r this is the (2r + 1) x (2r + 1) disk (disk(1) = 3 x 3 plus sign, disk(3)
    has 29 pixels). Returned as ``uint8``, shape (len(L), len(L)).

    Raises
    ------
    ValueError
        If ``radius`` is negative or not finite.
    """
    if not np.isfinite(radius) or radius < 0:
        raise UsageError(f"radius must be a finite number >= 0, got {radius!r}")
    return _disk_cached(float(radius))  # read-only, shared: every pair of an evaluation uses the same few disks


def _bound_pix(bound_th: float, shape: tuple[int, int]) -> float:
    """DAVIS tolerance radius: ``bound_th`` if >= 1 else ceil(bound_th * image diagonal)."""
    if not np.isfinite(bound_th) or bound_th <= 0:
        raise UsageError(f"bound_th must be a positive finite number, got {bound_th!r}")
    if bound_th >= 1:
        return bound_th
    return float(np.ceil(bound_th * np.linalg.norm(shape)))


def _f_from_bmaps(
    b_pred: np.ndarray, b_gt: np.ndarray, kernels: list[np.ndarray]
) -> list[tuple[float, float, float]]:
    """DAVIS precision / recall / F from two boundary maps, one result per dilation kernel."""
    n_fg = int(np.count_nonzero(b_pred))
    n_gt = int(np.count_nonzero(b_gt))
    out: list[tuple[float, float, float]] = []
    if n_fg == 0 or n_gt == 0:
        if n_fg == 0 and n_gt > 0:
            p, r = 1.0, 0.0
        elif n_fg > 0 and n_gt == 0:
            p, r = 0.0, 1.0
        else:
            p, r = 1.0, 1.0
        f = 0.0 if p + r == 0 else 2 * p * r / (p + r)
        return [(f, p, r) for _ in kernels]
    bp8 = b_pred.view(np.uint8)
    bg8 = b_gt.view(np.uint8)
    for kern in kernels:
        fg_dil = cv2.dilate(bp8, kern)
        gt_dil = cv2.dilate(bg8, kern)
        p = int(np.count_nonzero(b_pred & gt_dil.view(bool))) / float(n_fg)
        r = int(np.count_nonzero(b_gt & fg_dil.view(bool))) / float(n_gt)
        f = 0.0 if p + r == 0 else 2 * p * r / (p + r)
        out.append((f, p, r))
    return out


def _tight_window(
    a: np.ndarray, b: np.ndarray
) -> tuple[slice, slice] | None:
    """Sub-window on which seg2bmap + dilation give the same F as on the whole array.

    Let [r0, r1] x [c0, c1] be the union bounding box of the foreground of ``a`` and ``b``. Every
    seg2bmap boundary pixel lies in rows [r0 - 1, r1] and columns [c0 - 1, c1] (a pixel is boundary
    only if it or its right/lower/lower-right neighbour is foreground). Cropping to rows
    [max(r0 - 1, 0), min(r1 + 1, H - 1)] (columns likewise) keeps every boundary pixel and computes it
    identically: seg2bmap never looks up/left, and the crop's last row/column is either the array's
    own last row/column or lies entirely in background (so the changed last-row/column rule gives 0
    there as in the full array). Dilated maps are only read at boundary pixels of the other map, all
    inside the crop, and the dilation inside the crop is unchanged because the map is 0 outside it.
    Returns None when both masks are empty.
    """
    rows = np.flatnonzero((a.any(axis=1)) | (b.any(axis=1)))
    if rows.size == 0:
        return None
    cols = np.flatnonzero((a.any(axis=0)) | (b.any(axis=0)))
    h, w = a.shape
    r0 = max(int(rows[0]) - 1, 0)
    r1 = min(int(rows[-1]) + 1, h - 1)
    c0 = max(int(cols[0]) - 1, 0)
    c1 = min(int(cols[-1]) + 1, w - 1)
    return slice(r0, r1 + 1), slice(c0, c1 + 1)


def f_measure_multi(
    pred: np.ndarray, gt: np.ndarray, bound_ths: tuple[float, ...] | list[float],
    shape: tuple[int, int] | None = None,
) -> tuple[list[tuple[float, float, float]], int, int]:
    """DAVIS boundary F, precision and recall of one pair for several tolerances at once.

    Same definition as :func:`f_measure`; the boundary maps are computed once and (for speed) on the
    union bounding box of both masks enlarged by one pixel, which provably gives identical results
    (see :func:`_tight_window`). Tolerance radii below 1 are fractions of the diagonal of ``shape``
    (default: the given arrays' shape; pass the full image's when the arrays are a tight crop of it).

    Returns
    -------
    (results, n_boundary_pred, n_boundary_gt)
        ``results[i] = (F, precision, recall)`` for ``bound_ths[i]``; the two counts are the numbers
        of seg2bmap boundary pixels of ``pred`` and ``gt``.

    Raises
    ------
    ValueError
        If an input is not 2-D, the shapes differ, or a tolerance is not positive.
    """
    p = _as_binary_2d(pred, "pred")
    g = _as_binary_2d(gt, "gt")
    _check_same_shape(p, g, "pred", "gt")
    kernels = [disk(_bound_pix(t, p.shape if shape is None else shape)) for t in bound_ths]
    win = _tight_window(p, g)
    if win is None:
        return [(1.0, 1.0, 1.0) for _ in kernels], 0, 0
    bp = np.ascontiguousarray(seg2bmap(p[win]))
    bg = np.ascontiguousarray(seg2bmap(g[win]))
    res = _f_from_bmaps(bp, bg, kernels)
    return res, int(np.count_nonzero(bp)), int(np.count_nonzero(bg))


def f_measure(pred: np.ndarray, gt: np.ndarray, bound_th: float = 0.008) -> tuple[float, float, float]:
    """DAVIS boundary F-measure between a predicted and a ground-truth mask.

    1. Boundary maps B(pred), B(gt) with :func:`seg2bmap`.
    2. Radius r = ``bound_th`` if ``bound_th >= 1`` (absolute pixels, RefineMask F_npx) else
       ``ceil(bound_th * sqrt(H^2 + W^2))`` (DAVIS default 0.008 = fraction of the diagonal).
    3. Dilate both maps with :func:`disk` (r) through ``cv2.dilate``.
    4. precision = |B(pred) ∩ dil(B(gt))| / |B(pred)|, recall = |B(gt) ∩ dil(B(pred))| / |B(gt)|,
       F = 2PR / (P + R) (0 if P + R = 0).
    5. Degenerate cases: |B(pred)| = 0 < |B(gt)| -> P = 1, R = 0, F = 0; |B(gt)| = 0 < |B(pred)| ->
       P = 0, R = 1, F = 0; both empty -> P = R = F = 1.

    Parameters
    ----------
    pred, gt : np.ndarray
        Binary masks of the same shape (H, W); non-zero = foreground.
    bound_th : float, default 0.008
        Tolerance (pixels if >= 1, fraction of the image diagonal if < 1).

    Returns
    -------
    (F, precision, recall) : tuple of float

    Raises
    ------
    ValueError
        If an input is not 2-D, the shapes differ, or ``bound_th`` is not positive.

    Source: davisvideochallenge/davis2017-evaluation ``davis2017/metrics.py::f_measure`` (commit
    ac7c43f); docs/evaluation.md §6.1. Computed on the union bounding box of both masks (+1 px), which is
    provably identical to the full-array computation.
    """
    res, _, _ = f_measure_multi(pred, gt, (bound_th,))
    return res[0]


# --------------------------------------------------------------------------------------------
# Boundary IoU band
# --------------------------------------------------------------------------------------------
def mask_to_boundary(mask: np.ndarray, dilation_ratio: float = 0.02) -> np.ndarray:
    """Inner boundary band G_d of a mask as used by Boundary IoU / Boundary AP.

    d = max(1, round(dilation_ratio * sqrt(H^2 + W^2))) (Python ``round``: half to even); the mask is
    padded with one pixel of zeros, eroded d times with a 3 x 3 square (``cv2.erode``), cropped back,
    and G_d = mask - eroded. Equivalently the foreground pixels within chessboard distance d of a
    background pixel, the image exterior counting as background (so image-border pixels are
    boundary, unlike :func:`seg2bmap`).

    Parameters
    ----------
    mask : np.ndarray
        Binary mask of the full image, shape (H, W); non-zero = foreground.
    dilation_ratio : float, default 0.02
        Band width as a fraction of the image diagonal (0.02 for COCO/LVIS, 0.005 for Cityscapes).

    Returns
    -------
    np.ndarray
        ``uint8`` array of shape (H, W) with values {0, 1}.

    Raises
    ------
    ValueError
        If ``mask`` is not 2-D or ``dilation_ratio`` is negative / not finite.

    Source: bowenc0221/boundary-iou-api ``boundary_iou/utils/boundary_utils.py::mask_to_boundary``
    (commit 37d2558); docs/evaluation.md §9. Boundary AP itself is computed elsewhere (faster-coco-eval).
    """
    m = _as_binary_2d(mask).astype(np.uint8)
    if not np.isfinite(dilation_ratio) or dilation_ratio < 0:
        raise UsageError(f"dilation_ratio must be a finite number >= 0, got {dilation_ratio!r}")
    h, w = m.shape
    dilation = max(1, int(round(dilation_ratio * math.sqrt(h**2 + w**2))))
    padded = cv2.copyMakeBorder(m, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    eroded = cv2.erode(padded, np.ones((3, 3), dtype=np.uint8), iterations=dilation)
    return m - eroded[1 : h + 1, 1 : w + 1]


def window_band(gt_mask: np.ndarray, rows: slice, cols: slice, d: float) -> np.ndarray:
    """Eq. 1 band of a full-image GT mask, restricted to the window ``gt_mask[rows, cols]``.

    Equal to ``distance_boundary_region(gt_mask, d, frame=True)[rows, cols]`` (tested) but computed
    on the window enlarged by ``floor(d) + 1`` pixels (zero-filled outside the image) with two
    ``cv2.dilate`` calls instead of two distance transforms: a pixel is in the band iff a pixel of
    the other label lies at an integer offset with ``sqrt(dx^2 + dy^2) <= d``.

    Parameters
    ----------
    gt_mask : np.ndarray
        Full-image binary mask, shape (H, W).
    rows, cols : slice
        Window with non-negative ``start <= stop`` inside the image (no steps).
    d : float
        Band half-width in pixels.

    Returns
    -------
    np.ndarray
        Boolean band, shape (rows.stop - rows.start, cols.stop - cols.start).

    Raises
    ------
    ValueError
        If ``gt_mask`` is not 2-D, ``d`` is negative, or the window is not inside the image.
    """
    g = np.asarray(gt_mask)
    if g.ndim != 2:
        raise UsageError(f"gt_mask must be a 2-D (H, W) array, got shape {g.shape}")
    if not np.isfinite(d) or d < 0:
        raise UsageError(f"d must be a finite non-negative number of pixels, got {d!r}")
    hh, ww = g.shape
    r0, r1, c0, c1 = rows.start, rows.stop, cols.start, cols.stop
    if not (0 <= r0 <= r1 <= hh and 0 <= c0 <= c1 <= ww):
        raise UsageError(f"window rows {r0}:{r1}, cols {c0}:{c1} is not inside the {hh}x{ww} mask")
    m = int(math.floor(d)) + 1
    er0, er1 = max(r0 - m, 0), min(r1 + m, hh)
    ec0, ec1 = max(c0 - m, 0), min(c1 + m, ww)
    ext = np.zeros((r1 - r0 + 2 * m, c1 - c0 + 2 * m), dtype=bool)
    ext[er0 - (r0 - m) : er1 - (r0 - m), ec0 - (c0 - m) : ec1 - (c0 - m)] = g[er0:er1, ec0:ec1] != 0
    # dist(p) <= d  <=>  a pixel of the other label lies at an offset with sqrt(dx^2 + dy^2) <= d
    # (the same float64 sqrt scipy's EDT evaluates), i.e. band = dil(fg) & dil(bg) with that disk.
    kern = _euclidean_disk(d)
    ext8 = ext.view(np.uint8)
    band = cv2.dilate(ext8, kern).view(bool) & cv2.dilate(1 - ext8, kern).view(bool)
    return band[m : m + (r1 - r0), m : m + (c1 - c0)]


@functools.lru_cache(maxsize=64)
def _euclidean_disk(d: float) -> np.ndarray:
    """uint8 kernel of the integer offsets with ``sqrt(dx^2 + dy^2) <= d`` (float64, as in EDT)."""
    r = int(math.floor(d))
    ax = np.arange(-r, r + 1, dtype=np.int64)
    sq = (ax[:, None] ** 2 + ax[None, :] ** 2).astype(np.float64)
    k = (np.sqrt(sq) <= d).astype(np.uint8)
    k.flags.writeable = False  # cached and shared
    return k


def _pair_counts(p_mask: np.ndarray, g_mask: np.ndarray, rs: slice, cs: slice, d_list: list[float]) -> np.ndarray:
    """(len(d_list), 4) int64: n_band, correct_band, n_non_band, correct_non_band inside the window."""
    correct = (p_mask[rs, cs] != 0) == (g_mask[rs, cs] != 0)
    n_all = correct.size
    c_all = int(np.count_nonzero(correct))
    out = np.zeros((len(d_list), 4), dtype=np.int64)
    for j, d in enumerate(d_list):
        band = window_band(g_mask, rs, cs, d)
        nb = int(np.count_nonzero(band))
        cb = int(np.count_nonzero(correct & band))
        out[j] = (nb, cb, n_all - nb, c_all - cb)
    return out

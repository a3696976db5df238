"""Tests for eval/boundary.py: Eq. 1 band, A.1 conv operator, seg2bmap, DAVIS f_measure, mask_to_boundary.

References are hand-written arrays, brute-force double loops with explicit Euclidean distances, a
direct correlation with the A.1 kernel (scipy.signal), and naive full-array re-implementations of the
DAVIS steps using scipy.ndimage dilation (independent of the cv2 path under test).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage, signal

from eval.boundary import (
    conv_boundary_region,
    disk,
    distance_boundary_region,
    f_measure,
    f_measure_multi,
    mask_to_boundary,
    region_iou,
    seg2bmap,
)


def _rows(text: str) -> np.ndarray:
    return np.array([[c == "1" for c in line.strip()] for line in text.strip().splitlines()])


SQUARE = np.zeros((7, 7), dtype=np.uint8)
SQUARE[2:5, 2:5] = 1


def _random_masks(seed: int, n: int, max_size: int = 14) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = rng.integers(1, max_size, size=2)
        kind = i % 5
        if kind == 0:
            m = rng.random((h, w)) < 0.5
        elif kind == 1:  # smooth blob
            m = ndimage.gaussian_filter(rng.random((h, w)), 1.5) > 0.5
        elif kind == 2:
            m = np.zeros((h, w), dtype=bool)
            m[rng.integers(0, h) :, rng.integers(0, w) :] = True  # border-touching block
        elif kind == 3:
            m = np.ones((h, w), dtype=bool) if i % 2 else np.zeros((h, w), dtype=bool)
        else:
            m = rng.random((h, w)) < 0.15
        out.append(m)
    return out


# --------------------------------------------------------------------------------------------
# Eq. 1 distance band
# --------------------------------------------------------------------------------------------
def test_distance_band_square_d1_by_hand():
    expected = _rows(
        """
        0000000
        0011100
        0111110
        0110110
        0111110
        0011100
        0000000
        """
    )
    np.testing.assert_array_equal(distance_boundary_region(SQUARE, 1), expected)


def test_distance_band_square_d2_by_hand():
    expected = _rows(
        """
        0011100
        0111110
        1111111
        1111111
        1111111
        0111110
        0011100
        """
    )
    np.testing.assert_array_equal(distance_boundary_region(SQUARE, 2), expected)


def test_distance_band_frame_option_by_hand():
    full = np.ones((4, 4), dtype=np.uint8)
    ring = _rows(
        """
        1111
        1001
        1001
        1111
        """
    )
    np.testing.assert_array_equal(distance_boundary_region(full, 1, frame=True), ring)
    # without the frame the array edge is no contour and a full mask has no band at all
    assert not distance_boundary_region(full, 1, frame=False).any()
    assert not distance_boundary_region(np.zeros((4, 4)), 2).any()
    # half-pixel contour, d = 1: exactly the 3x3 window around the contour
    np.testing.assert_array_equal(
        distance_boundary_region(SQUARE, 1, half_pixel_contour=True),
        _rows(
            """
            0000000
            0111110
            0111110
            0110110
            0111110
            0111110
            0000000
            """
        ),
    )


def _brute_band(m: np.ndarray, d: float, frame: bool, half: bool) -> np.ndarray:
    """Explicit double loop: min Euclidean distance to a pixel of the other label."""
    work = np.pad(m, 1) if frame else m
    hh, ww = work.shape
    ys, xs = np.mgrid[0:hh, 0:ww]
    out = np.zeros_like(work, dtype=bool)
    for i in range(hh):
        for j in range(ww):
            other = work != work[i, j]
            if not other.any():
                continue
            dist = math.sqrt(float(((ys[other] - i) ** 2 + (xs[other] - j) ** 2).min()))
            out[i, j] = (dist - 0.5 if half else dist) <= d
    return out[1:-1, 1:-1] if frame else out


@pytest.mark.parametrize("frame,half", [(True, False), (False, False), (True, True)])
def test_distance_band_matches_brute_force(frame, half):
    for m in _random_masks(7, 25, max_size=10):
        for d in (1, math.sqrt(2), 2, 2.5, 3):
            got = distance_boundary_region(m, d, frame=frame, half_pixel_contour=half)
            np.testing.assert_array_equal(got, _brute_band(m, d, frame, half), err_msg=f"d={d} shape={m.shape}")


# --------------------------------------------------------------------------------------------
# A.1 convolution operator
# --------------------------------------------------------------------------------------------
def _conv_direct(m: np.ndarray, w: int, thr: float, invert_then_pad: bool) -> np.ndarray:
    k = 2 * w + 1
    kern = -np.ones((k, k), dtype=np.int64)
    kern[w, w] = k * k - 1
    mi = m.astype(np.int64)
    pm = np.pad(mi, w)
    pi = np.pad(1 - mi, w) if invert_then_pad else 1 - pm
    d_plus = signal.correlate2d(pm, kern, mode="valid")
    d_minus = signal.correlate2d(pi, kern, mode="valid")
    if thr == 0:
        return (d_plus > 0) | (d_minus > 0)
    return (np.clip(d_plus, 0, None) / (k * k) > thr) | (np.clip(d_minus, 0, None) / (k * k) > thr)


@pytest.mark.parametrize("w", [1, 2, 3])
@pytest.mark.parametrize("thr,inv", [(0.0, False), (0.1, False), (0.0, True), (0.1, True)])
def test_conv_region_equals_direct_correlation(w, thr, inv):
    masks = _random_masks(11, 40, max_size=30)
    for m in masks:
        got = conv_boundary_region(m, w, threshold=thr, invert_then_pad=inv)
        np.testing.assert_array_equal(got, _conv_direct(m, w, thr, inv), err_msg=f"shape={m.shape}")


def test_conv_region_square_by_hand():
    # w = 1: chessboard distance <= 1 from the other label, outside counts as background
    expected = _rows(
        """
        0000000
        0111110
        0111110
        0110110
        0111110
        0111110
        0000000
        """
    )
    np.testing.assert_array_equal(conv_boundary_region(SQUARE, 1), expected)
    # code threshold, w = 2 needs >= 3 opposite pixels in the 5x5 window: the background corner
    # (0, 0) sees 1 foreground pixel, (0, 2) sees 3
    code = conv_boundary_region(SQUARE, 2, threshold=0.1)
    assert not code[0, 0] and code[0, 2] and conv_boundary_region(SQUARE, 2)[0, 0]
    # invert-then-pad: every background pixel within w of the edge becomes boundary
    inv = conv_boundary_region(np.zeros((5, 5)), 1, invert_then_pad=True)
    assert inv.sum() == 16 and not inv[2, 2]
    assert not conv_boundary_region(np.zeros((5, 5)), 1).any()


def test_region_iou():
    a = np.zeros((4, 4), dtype=bool)
    assert region_iou(a, a) == 1.0
    b = a.copy()
    b[0, :2] = True
    c = a.copy()
    c[0, 1:3] = True
    assert region_iou(b, c) == pytest.approx(1 / 3, abs=1e-15)
    assert region_iou(b, a) == 0.0


# --------------------------------------------------------------------------------------------
# seg2bmap and f_measure
# --------------------------------------------------------------------------------------------
def _seg2bmap_loop(m: np.ndarray) -> np.ndarray:
    """docs/evaluation.md §6.1 step 1 in words, as an explicit loop."""
    hh, ww = m.shape
    b = np.zeros((hh, ww), dtype=bool)
    for i in range(hh):
        for j in range(ww):
            v = m[i, j]
            if i == hh - 1 and j == ww - 1:
                continue
            if i == hh - 1:
                b[i, j] = v != m[i, j + 1]
            elif j == ww - 1:
                b[i, j] = v != m[i + 1, j]
            else:
                b[i, j] = v != m[i, j + 1] or v != m[i + 1, j] or v != m[i + 1, j + 1]
    return b


def test_seg2bmap_full_mask_is_empty_and_matches_loop():
    assert not seg2bmap(np.ones((6, 9))).any()
    assert not seg2bmap(np.zeros((6, 9))).any()
    expected = _rows(
        """
        0000000
        0111100
        0100100
        0100100
        0111100
        0000000
        0000000
        """
    )
    np.testing.assert_array_equal(seg2bmap(SQUARE), expected)
    for m in _random_masks(3, 60, max_size=16):
        np.testing.assert_array_equal(seg2bmap(m), _seg2bmap_loop(m))
        np.testing.assert_array_equal(seg2bmap(m), seg2bmap(~m))


def test_disk_shapes():
    np.testing.assert_array_equal(disk(1), np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=np.uint8))
    assert disk(3).shape == (7, 7) and disk(3).sum() == 29
    assert disk(5).sum() == 81


def _f_naive(pred: np.ndarray, gt: np.ndarray, bound_th: float) -> tuple[float, float, float]:
    """Full-array DAVIS steps with scipy dilation (no crop), independent of the cv2 path."""
    r = bound_th if bound_th >= 1 else math.ceil(bound_th * math.hypot(*pred.shape))
    rr = int(r)
    yy, xx = np.mgrid[-rr : rr + 1, -rr : rr + 1]
    se = xx**2 + yy**2 <= r**2
    bp, bg = _seg2bmap_loop(pred != 0), _seg2bmap_loop(gt != 0)
    n_p, n_g = bp.sum(), bg.sum()
    if n_p == 0 and n_g > 0:
        p, rc = 1.0, 0.0
    elif n_p > 0 and n_g == 0:
        p, rc = 0.0, 1.0
    elif n_p == 0 and n_g == 0:
        p, rc = 1.0, 1.0
    else:
        p = (bp & ndimage.binary_dilation(bg, se)).sum() / n_p
        rc = (bg & ndimage.binary_dilation(bp, se)).sum() / n_g
    f = 0.0 if p + rc == 0 else 2 * p * rc / (p + rc)
    return f, p, rc


def test_f_measure_identical_and_degenerate():
    assert f_measure(SQUARE, SQUARE, 1) == (1.0, 1.0, 1.0)
    empty = np.zeros_like(SQUARE)
    assert f_measure(empty, empty, 3) == (1.0, 1.0, 1.0)
    assert f_measure(empty, SQUARE, 1) == (0.0, 1.0, 0.0)  # no predicted boundary
    assert f_measure(SQUARE, empty, 1) == (0.0, 0.0, 1.0)  # no GT boundary
    full = np.ones((5, 5))
    assert f_measure(full, full, 1) == (1.0, 1.0, 1.0)  # array border is no boundary
    assert f_measure(full, SQUARE[:5, :5], 1)[0] == 0.0


def test_f_measure_hand_case():
    # GT square 3x3, prediction the same square shifted right by 2 px.
    pred = np.zeros((7, 9), dtype=np.uint8)
    pred[2:5, 4:7] = 1
    gt = np.zeros((7, 9), dtype=np.uint8)
    gt[2:5, 2:5] = 1
    f, p, r = f_measure(pred, gt, 1)
    # both boundary maps are 4x4 rings (12 px, rows 1-4, GT cols 1-4, prediction cols 3-6); with
    # disk(1) 8 pixels of each ring have a pixel of the other ring at distance <= 1 (top and bottom
    # rows at cols 3-5 resp. 2-4, plus the two side pixels next to the other ring's side)
    assert (p, r) == (pytest.approx(8 / 12, abs=1e-15), pytest.approx(8 / 12, abs=1e-15))
    assert f == pytest.approx(2 / 3, abs=1e-15)
    assert f_measure(pred, gt, 2) == (1.0, 1.0, 1.0)


@pytest.mark.parametrize("bound_th", [1, 2, 3, 5, 0.008, 0.05])
def test_f_measure_equals_naive_full_array(bound_th):
    rng = np.random.default_rng(5)
    for i in range(40):
        hh, ww = rng.integers(2, 40, size=2)
        gt = ndimage.gaussian_filter(rng.random((hh, ww)), 2) > 0.5
        if i % 4 == 0:
            pred = ndimage.binary_dilation(gt, iterations=1 + i % 3)
        elif i % 4 == 1:
            pred = np.roll(gt, (i % 3) - 1, axis=1)
        elif i % 4 == 2:
            pred = rng.random((hh, ww)) < 0.3
        else:
            pred = np.zeros_like(gt)
            pred[: hh // 2] = True  # touches three borders
        got = f_measure(pred, gt, bound_th)
        exp = _f_naive(pred, gt, bound_th)
        assert got == pytest.approx(exp, abs=1e-15), (i, got, exp)
        # F is symmetric (P and R swap)
        assert f_measure(gt, pred, bound_th)[0] == pytest.approx(got[0], abs=1e-15)


def test_f_measure_multi_counts():
    res, nbp, nbg = f_measure_multi(SQUARE, SQUARE, (1, 3))
    assert res == [(1.0, 1.0, 1.0), (1.0, 1.0, 1.0)] and nbp == nbg == 12


# --------------------------------------------------------------------------------------------
# mask_to_boundary
# --------------------------------------------------------------------------------------------
def test_mask_to_boundary_thin_mask_equals_mask():
    m = np.zeros((480, 640), dtype=np.uint8)
    m[100:120, 50:400] = 1  # 20 px thick < 2 d + 1 with d = 16
    m[300, 10:600] = 1
    np.testing.assert_array_equal(mask_to_boundary(m, 0.02), m)


def test_mask_to_boundary_chessboard_definition():
    rng = np.random.default_rng(1)
    for hh, ww, ratio in [(480, 640, 0.02), (427, 640, 0.02), (100, 120, 0.05), (60, 50, 0.005)]:
        d = max(1, round(ratio * math.hypot(hh, ww)))
        m = (ndimage.gaussian_filter(rng.random((hh, ww)), 8) > 0.5).astype(np.uint8)
        m[:, :5] = 1  # touches the image border
        cdt = ndimage.distance_transform_cdt(np.pad(m, 1), metric="chessboard")[1:-1, 1:-1]
        expected = (m == 1) & (cdt <= d)
        got = mask_to_boundary(m, ratio)
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got.astype(bool), expected)
    assert max(1, round(0.02 * math.hypot(480, 640))) == 16


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------
def test_errors():
    with pytest.raises(ValueError, match="2-D"):
        distance_boundary_region(np.zeros((2, 2, 2)), 1)
    with pytest.raises(ValueError, match="2-D"):
        conv_boundary_region(np.zeros(5), 1)
    with pytest.raises(ValueError, match="width"):
        conv_boundary_region(SQUARE, 0)
    with pytest.raises(ValueError, match="same shape"):
        f_measure(np.zeros((3, 3)), np.zeros((3, 4)), 1)
    with pytest.raises(ValueError, match="same shape"):
        region_iou(np.zeros((3, 3)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="2-D"):
        seg2bmap(np.zeros((1, 2, 3)))
    with pytest.raises(ValueError, match="bound_th"):
        f_measure(SQUARE, SQUARE, 0)
    with pytest.raises(ValueError, match="2-D"):
        mask_to_boundary(np.zeros(3), 0.02)
    with pytest.raises(ValueError, match="d must be"):
        distance_boundary_region(SQUARE, -1)

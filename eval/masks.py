"""Mask conversions shared by every metric: COCO polygons / RLE -> pycocotools RLE -> binary arrays.

All rasterisation goes through pycocotools' mask API (``frPyObjects`` + ``merge``), so our masks are
bit-identical to the ones COCOeval, LVISEval and boundary-iou-api see (docs/evaluation.md §1 "Polygon -> mask").
Masks are full-image ``uint8`` arrays of shape (H, W) with values in {0, 1}; sizes are in pixels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from .errors import UsageError

try:  # the compiled checker (eval/_rle.c, built by `pip install -e .`); the NumPy path below is its fallback
    from . import _rle
except ImportError:  # pragma: no cover - a source tree that was never built
    _rle = None


def segm_to_rle(segm: Any, height: int, width: int) -> dict:
    """Convert a COCO ``segmentation`` (polygon list, uncompressed or compressed RLE) to compressed RLE.

    Args:
        segm: a list of polygons ``[[x0, y0, x1, y1, ...], ...]`` in pixels, or an RLE dict
            ``{"size": [h, w], "counts": str | bytes | list[int]}``.
        height, width: the image size in pixels (used for polygons and uncompressed RLE).

    Returns:
        A compressed RLE dict ``{"size": [h, w], "counts": bytes}`` (pycocotools' form).

    Source: pycocotools ``COCO.annToRLE`` (same branches, same result).
    """
    if isinstance(segm, list):
        rles = mask_utils.frPyObjects(segm, height, width)
        return mask_utils.merge(rles)
    if isinstance(segm, dict) and isinstance(segm.get("counts"), list):
        return mask_utils.frPyObjects(segm, *segm["size"])
    if isinstance(segm, dict) and isinstance(segm.get("counts"), str):
        return {"size": list(segm["size"]), "counts": segm["counts"].encode("ascii")}
    return segm


def parse_rle_counts(counts: str | bytes) -> tuple[np.ndarray | None, str | None]:
    """The run lengths of a compressed RLE ``counts`` string, decoded as pycocotools' ``rleFrString`` does.

    6-bit characters ``'0'``…``'o'`` with 5 data bits and a continuation bit each, sign extension of a number's last
    character, counts from the fourth on (index m > 2) stored as the difference to count m - 2. Vectorised with NumPy.

    Returns:
        ``(run lengths int64 (K,), None)``, or ``(None, problem)`` for a string rleFrString would misread (a
        character outside the alphabet, a truncated or over-long number). Negative runs and the total are the
        caller's to check (:func:`eval.io.compressed_rle_problem`).
    """
    if isinstance(counts, str) and not counts.isascii():
        bad = next(ch for ch in counts if not ch.isascii())
        return None, f"character {bad!r} is not an RLE character ('0' to 'o')"
    raw = counts.encode("ascii") if isinstance(counts, str) else bytes(counts)
    a = np.frombuffer(raw, dtype=np.uint8).astype(np.int64) - 48
    if a.size == 0:
        return None, "empty counts"
    if a.min() < 0 or a.max() > 63:
        bad = chr(int(a[(a < 0) | (a > 63)][0]) + 48)
        return None, f"character {bad!r} is not an RLE character ('0' to 'o')"
    ends = (a & 0x20) == 0
    if not ends[-1]:
        return None, "the counts string is truncated (its last character continues a number)"
    end_idx = np.flatnonzero(ends)
    starts = np.concatenate(([0], end_idx[:-1] + 1))
    group = np.cumsum(ends) - ends  # the number each character belongs to
    pos = np.arange(a.size) - starts[group]
    if pos.max() >= 12:
        return None, "a run length is encoded in more than 12 characters"
    vals = np.add.reduceat((a & 0x1F) << (5 * pos), starts)  # groups are contiguous runs of characters
    glen = pos[ends] + 1
    neg = (a[ends] & 0x10) != 0
    vals[neg] |= -(np.int64(1) << (5 * glen[neg]))
    cnts = vals.copy()  # counts m >= 3 are stored as differences to count m - 2
    cnts[2::2] = np.cumsum(vals[2::2])
    cnts[3::2] = vals[1] + np.cumsum(vals[3::2]) if vals.size > 3 else cnts[3::2]
    return cnts, None


def decode_counts_batch(raws: list[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`parse_rle_counts` of many counts strings in one vectorised pass over their concatenation.

    Returns:
        ``(bad, cnts, first, seg)``: ``bad`` (N,) bool, True for a string rleFrString would misread (empty, a
        character outside the alphabet, a truncated or over-long number); ``cnts`` the run lengths of the other
        strings, concatenated; ``first`` the index in ``cnts`` of each of their first runs; ``seg`` (len(cnts),)
        the string of each run.
    """
    n = len(raws)
    bad = np.zeros(n, dtype=bool)
    lens = np.fromiter((len(r) for r in raws), dtype=np.int64, count=n)
    bad |= lens == 0
    a = np.frombuffer(b"".join(raws), dtype=np.uint8) - np.uint8(48)  # wraps below '0': > 63 too
    string_of = np.repeat(np.arange(n, dtype=np.int32), lens)  # the string each character belongs to
    bad[string_of[a > 63]] = True
    ends = (a & 0x20) == 0
    last = np.cumsum(lens) - 1
    nonempty = lens > 0
    bad[nonempty] |= ~ends[last[nonempty]]  # the last character continues a number: truncated
    if bad.all():
        empty = np.zeros(0, dtype=np.int64)
        return bad, empty, empty, empty
    # drop refused strings, then decode the rest as one stream (every string now ends on a number boundary)
    if bad.any():
        keep_chars = ~bad[string_of]
        a, ends, string_of = a[keep_chars], ends[keep_chars], string_of[keep_chars]
    end_idx = np.flatnonzero(ends)
    starts = np.concatenate(([0], end_idx[:-1] + 1))
    group = np.cumsum(ends, dtype=np.int32) - ends
    pos = np.arange(a.size, dtype=np.int32) - starts[group]
    too_long = pos >= 12
    if too_long.any():
        bad[string_of[too_long]] = True
        pos = np.minimum(pos, 11)
    vals = np.add.reduceat((a & 0x1F).astype(np.int64) << (5 * pos), starts)
    glen = pos[ends] + 1
    neg = (a[ends] & 0x10) != 0
    vals[neg] |= -(np.int64(1) << (5 * glen[neg]))
    seg = string_of[end_idx]  # the string of each number
    first = np.flatnonzero(np.concatenate(([True], seg[1:] != seg[:-1])))  # first number of each kept string
    m = np.arange(seg.size) - np.repeat(first, np.diff(np.concatenate((first, [seg.size]))))
    cnts = vals.copy()  # counts m >= 3 are stored as differences to count m - 2 (per string)
    for parity in (0, 1):
        idx = np.flatnonzero((m % 2 == parity) & (m >= 1))
        if idx.size == 0:
            continue
        v = vals[idx]
        c = np.cumsum(v)
        sid = seg[idx]
        f = np.flatnonzero(np.concatenate(([True], sid[1:] != sid[:-1])))
        base = np.repeat(c[f] - v[f], np.diff(np.concatenate((f, [idx.size]))))
        cnts[idx] = c - base
    # m == 2 is raw in rleFrString; the parity-0 sum above starts at m = 2 because m = 0 is excluded
    return bad, cnts, first, seg


def check_rles(counts: list[str | bytes], heights, widths, threads: int | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate many compressed RLE ``counts`` strings and give each valid one its pycocotools box and area.

    The rule of :func:`eval.io.compressed_rle_problem` (RLE characters only, no truncated or over-long number,
    no negative run, runs summing to height × width), for every string at once: by the compiled checker
    ``eval._rle`` (about a microsecond per mask), or, in a tree where it was not built, by the NumPy decoder
    (:func:`decode_counts_batch`, tens of microseconds) and pycocotools' ``toBbox`` / ``area`` on the strings found
    valid. Both are held equal to the scalar rule and to pycocotools by tests/test_rle_check.py.

    Args:
        counts: N counts strings (``str`` or ``bytes``). heights, widths: N image sizes in pixels (> 0).
        threads: check in up to this many threads (the compiled checker releases the GIL; default 1).

    Returns:
        ``(bad (N,) bool, boxes (N, 4) float64 [x, y, w, h] pixels, areas (N,) float64 pixels)``; boxes and areas
        are zero where ``bad``.

    Raises:
        ValueError: a non-positive size, or one of 2^32 pixels or more. TypeError: a count that is not str/bytes.
    """
    heights = np.ascontiguousarray(heights, dtype=np.int64)
    widths = np.ascontiguousarray(widths, dtype=np.int64)
    if _rle is None:
        return _check_rles_numpy(counts, heights, widths)
    if not isinstance(counts, list):
        counts = list(counts)
    n = len(counts)
    parts = min(threads or 1, max(1, n // _CHECK_PER_THREAD))
    if parts == 1:
        return _check_compiled(counts, heights, widths)
    from concurrent.futures import ThreadPoolExecutor

    cuts = np.linspace(0, n, parts + 1).astype(int).tolist()
    with ThreadPoolExecutor(parts) as pool:  # the checker releases the GIL while it decodes
        out = list(pool.map(lambda a, b: _check_compiled(counts[a:b], heights[a:b], widths[a:b]), cuts[:-1], cuts[1:]))
    return tuple(np.concatenate([o[k] for o in out]) for k in range(3))


#: below this many strings per thread, starting threads costs more than it saves
_CHECK_PER_THREAD = 20_000


def _check_compiled(counts: list, heights: np.ndarray, widths: np.ndarray):
    codes, boxes, areas = _rle.check(counts, heights, widths)
    return (np.frombuffer(codes, dtype=np.uint8) != 0, np.frombuffer(boxes, dtype=np.float64).reshape(-1, 4),
            np.frombuffer(areas, dtype=np.float64))


def _check_rles_numpy(counts, heights: np.ndarray, widths: np.ndarray):
    """:func:`check_rles` without the compiled checker."""
    if ((heights <= 0) | (widths <= 0) | (heights > ((1 << 32) - 1) // np.maximum(widths, 1))).any():
        raise ValueError("image sizes must be positive and below 2^32 pixels")
    # utf-8: a non-ASCII character becomes bytes >= 0x80, outside the alphabet (never '?', which is inside it)
    raws = [c.encode("utf-8") if isinstance(c, str) else bytes(c) for c in counts]
    totals = heights * widths
    bad = np.zeros(len(raws), dtype=bool)
    lo, size = 0, 0  # chunks of ~16k characters: small temporaries are reused by the allocator
    for hi, r in enumerate(raws):
        size += len(r)
        if size >= 1 << 14 or hi == len(raws) - 1:
            bad[lo:hi + 1] = _bad_chunk(raws[lo:hi + 1], totals[lo:hi + 1])
            lo, size = hi + 1, 0
    boxes, areas = np.zeros((len(raws), 4)), np.zeros(len(raws))
    ok = np.flatnonzero(~bad)
    for a in range(0, ok.size, 255):  # valid now: safe to hand to pycocotools (whose area() takes <= 255 at once)
        part = ok[a:a + 255]
        rles = [{"size": [int(heights[i]), int(widths[i])], "counts": raws[i]} for i in part]
        boxes[part] = mask_utils.toBbox(rles)
        areas[part] = mask_utils.area(rles)
    return bad, boxes, areas


def _bad_chunk(raws: list[bytes], totals: np.ndarray) -> np.ndarray:
    bad, cnts, first, seg = decode_counts_batch(raws)
    if cnts.size == 0:
        return bad
    bad[seg[cnts < 0]] = True
    sums = np.add.reduceat(cnts, first)
    kept = seg[first]
    bad[kept[sums != totals[kept]]] = True
    return bad


def rle_crop(rle: dict, rows: slice, cols: slice) -> np.ndarray:
    """Decode only the window ``rows`` × ``cols`` of a compressed RLE: equal to ``rle_to_mask(rle)[rows, cols]``.

    The work is proportional to the window's columns times the image height plus the number of runs, not to the
    image: what boundary F and boundary accuracy need per matched pair (docs/evaluation.md §6.2).

    Args:
        rle: a validated compressed RLE ``{"size": [H, W], "counts": str | bytes}``.
        rows, cols: the window, ``0 <= start <= stop <= H`` (resp. W), no step.

    Returns:
        ``uint8`` array (rows.stop - rows.start, cols.stop - cols.start) with values in {0, 1}.

    Raises:
        UsageError: a corrupt counts string or a window outside the image.
    """
    h, w = (int(v) for v in rle["size"])
    r0, r1, c0, c1 = rows.start, rows.stop, cols.start, cols.stop
    if not (0 <= r0 <= r1 <= h and 0 <= c0 <= c1 <= w):
        raise UsageError(f"window rows {r0}:{r1}, cols {c0}:{c1} is not inside the {h}x{w} mask")
    cnts, problem = parse_rle_counts(rle["counts"])
    if problem:
        raise UsageError(f"corrupt RLE counts: {problem}")
    return crop_from_runs(cnts, h, rows, cols)


def crop_from_runs(cnts: np.ndarray, h: int, rows: slice, cols: slice) -> np.ndarray:
    """The window ``rows`` × ``cols`` of the mask whose column-major run lengths (background first) are ``cnts``,
    for an image ``h`` pixels high: ``uint8`` (rows.stop - rows.start, cols.stop - cols.start). The window must lie
    inside the image (:func:`rle_crop` checks it)."""
    r0, r1, c0, c1 = rows.start, rows.stop, cols.start, cols.stop
    stop = np.cumsum(cnts)
    lo, hi = c0 * h, c1 * h
    lengths = np.clip(stop, lo, hi) - np.clip(stop - cnts, lo, hi)  # each run's part inside the column band
    values = (np.arange(cnts.size) & 1).astype(np.uint8)  # runs alternate background / foreground
    band = np.repeat(values, lengths).reshape(c1 - c0, h)
    return np.ascontiguousarray(band.T[r0:r1])


def rle_to_mask(rle: dict) -> np.ndarray:
    """Decode a compressed RLE to a ``uint8`` array of shape (H, W) with values in {0, 1}."""
    return mask_utils.decode(rle)


def masks_to_rles(masks: np.ndarray) -> list[dict]:
    """Encode binary masks (N, H, W) (bool or uint8) as compressed RLEs with JSON-safe ``str`` ``counts``.

    The one RLE encoder of the harness: the models' results (``refinemask.detection.encode_rle``) and the
    evaluator's own masks go through it. Source: ``pycocotools.mask.encode`` on a Fortran-ordered (H, W, N) array.

    Raises:
        UsageError: ``masks`` is not 3-D.
    """
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise UsageError(f"expected (N, H, W) masks, got shape {masks.shape}")
    if masks.shape[0] == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    for r in rles:
        r["counts"] = r["counts"].decode("ascii")
    return rles


def mask_to_rle(mask: np.ndarray) -> dict:
    """Encode one binary (H, W) array as compressed RLE with a JSON-safe ``str`` ``counts``."""
    return masks_to_rles(np.asarray(mask)[None])[0]


def ann_to_mask(ann: dict, height: int, width: int) -> np.ndarray:
    """Full-image binary mask (H, W) of a COCO/LVIS annotation or result record."""
    return rle_to_mask(segm_to_rle(ann["segmentation"], height, width))


def eroded_results(results: list[dict], pixels: int = 1) -> list[dict]:
    """A copy of validated results with every mask eroded by ``pixels`` (a (2p+1)² square structuring element,
    outside the image counted as background): the documented perturbation that makes the demo's second prediction
    set (prediction set B = set A eroded by 1 pixel), a controlled loss of boundary quality at unchanged boxes and
    scores.

    Raises:
        ValueError: ``pixels`` < 1.
    """
    from scipy.ndimage import binary_erosion

    if not isinstance(pixels, int) or pixels < 1:
        raise ValueError(f"pixels must be a positive integer, got {pixels!r}")
    st = np.ones((2 * pixels + 1, 2 * pixels + 1), bool)
    out = []
    for r in results:
        m = rle_to_mask(r["segmentation"]).astype(bool)
        e = binary_erosion(m, structure=st, border_value=0)
        rle = mask_to_rle(e)
        out.append(dict(r, segmentation={"size": list(rle["size"]), "counts": rle["counts"]}))
    return out

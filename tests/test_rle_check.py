"""The batched RLE checker (``eval.masks.check_rles``, compiled ``eval._rle``) against the scalar rule, the NumPy
decoder and pycocotools.

``eval.io.compressed_rle_problem`` is the rule (and gives the messages); the compiled checker must refuse exactly
what it refuses, on fuzzed strings of every kind of damage, and give pycocotools' ``toBbox`` and ``area`` for every
valid mask, degenerate ones included.
"""

from __future__ import annotations

import json
import shutil
import sysconfig

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from eval import masks
from eval.io import bad_compressed_rles, compressed_rle_problem
from tests.helpers import PREDS_A

ALPHABET = bytes(range(48, 112))


def _real_counts(n: int = 400) -> list[tuple[bytes, int, int]]:
    res = json.loads(PREDS_A.read_text())[:n]
    return [(r["segmentation"]["counts"].encode(), *r["segmentation"]["size"]) for r in res]


def _fuzzed(seed: int = 0, n: int = 3000) -> list[tuple[bytes, int, int]]:
    rng = np.random.default_rng(seed)
    base = _real_counts()
    out = []
    for i in range(n):
        b, h, w = base[i % len(base)]
        b = bytearray(b)
        op = i % 7
        if op == 0 and b:  # one character replaced by anything printable (or not)
            b[rng.integers(len(b))] = int(rng.integers(33, 128))
        elif op == 1:  # truncated
            b = b[:rng.integers(0, len(b) + 1)]
        elif op == 2:  # characters appended
            b += bytes(rng.choice(list(ALPHABET), rng.integers(1, 6)))
        elif op == 3:  # another image size
            h, w = int(rng.integers(1, 50)), int(rng.integers(1, 50))
        elif op == 4:  # a long number
            b = b[:4] + bytes([ord("o")] * int(rng.integers(8, 15))) + b"0" + b[4:]
        elif op == 5:  # random strings of the alphabet
            b = bytearray(rng.choice(list(ALPHABET), rng.integers(1, 12)))
        out.append((bytes(b), h, w))
    return out


def _have_c_compiler() -> bool:
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(cc) is not None


def test_compiled_checker_is_built():
    """setup.py builds eval._rle as an optional extension: wherever a compiler exists, it must have been built."""
    if not _have_c_compiler():
        pytest.skip("no C compiler: eval.masks.check_rles runs its NumPy fallback (tested below)")
    assert masks._rle is not None, "eval._rle is not built: run `make setup` (pip install -e .)"


@pytest.mark.parametrize("impl", ["check_rles", "_check_rles_numpy"])
def test_refuses_exactly_what_the_scalar_rule_refuses(impl):
    cases = _fuzzed()
    fn = getattr(masks, impl)
    bad, boxes, areas = fn([c for c, _, _ in cases], np.array([h for _, h, _ in cases]),
                           np.array([w for _, _, w in cases]))
    want = np.array([compressed_rle_problem(c, h * w) is not None if c else True for c, h, w in cases])
    assert 500 < want.sum() < len(cases) - 300  # both kinds are well represented
    np.testing.assert_array_equal(bad, want)
    assert (boxes[bad] == 0).all() and (areas[bad] == 0).all()
    # str input (as json gives it) is read the same as bytes
    bad_str, _, _ = fn([c.decode("latin-1") for c, _, _ in cases], np.array([h for _, h, _ in cases]),
                       np.array([w for _, _, w in cases]))
    np.testing.assert_array_equal(bad_str, want)
    np.testing.assert_array_equal(bad_compressed_rles([c for c, _, _ in cases], [h * w for _, h, w in cases]), want)


def _degenerate_masks() -> list[np.ndarray]:
    out = []
    for h, w in ((1, 1), (1, 7), (7, 1), (5, 6), (40, 33)):
        out.append(np.zeros((h, w), np.uint8))
        out.append(np.ones((h, w), np.uint8))
        m = np.zeros((h, w), np.uint8)
        m[h // 2, w // 2] = 1
        out.append(m)
        m = np.zeros((h, w), np.uint8)
        m[h - 1, :] = 1  # runs that wrap from one column into the next
        out.append(m)
        m = np.zeros((h, w), np.uint8)
        m[0, -1] = 1
        out.append(m)
    rng = np.random.default_rng(3)
    out += [(rng.random((31, 29)) < p).astype(np.uint8) for p in (0.05, 0.5, 0.95)]
    return out


def test_boxes_and_areas_are_pycocotools_own():
    rles = [mask_utils.encode(np.asfortranarray(m)) for m in _degenerate_masks()]
    rles += [{"size": [h, w], "counts": c} for c, h, w in _real_counts()]
    bad, boxes, areas = masks.check_rles([r["counts"] for r in rles], [r["size"][0] for r in rles],
                                         [r["size"][1] for r in rles])
    assert not bad.any()
    np.testing.assert_array_equal(boxes, mask_utils.toBbox(rles))
    # pycocotools 2.0.11's area() counts its input in a uint8: at most 255 masks per call
    np.testing.assert_array_equal(areas, np.concatenate([mask_utils.area(rles[i:i + 255]) for i in
                                                         range(0, len(rles), 255)]).astype(np.float64))
    nb, nboxes, nareas = masks._check_rles_numpy([r["counts"] for r in rles], np.array([r["size"][0] for r in rles]),
                                                np.array([r["size"][1] for r in rles]))
    assert not nb.any()
    np.testing.assert_array_equal(nboxes, boxes)
    np.testing.assert_array_equal(nareas, areas)


def test_bad_arguments_are_errors_not_crashes():
    with pytest.raises(TypeError, match="counts\\[1\\]"):
        masks.check_rles([b"0", 5], [1, 1], [1, 1])
    with pytest.raises(ValueError, match="image size"):
        masks.check_rles([b"0"], [0], [1])
    with pytest.raises(ValueError, match="image size"):
        masks.check_rles([b"0"], [1 << 20], [1 << 12])
    for h, w in ((1 << 31, 1 << 40), (1 << 40, 1 << 31), ((1 << 32) - 1, (1 << 32) - 1)):  # h * w overflows int64
        with pytest.raises(ValueError, match="image size"):
            masks.check_rles([b"0"], [h], [w])
        with pytest.raises(ValueError, match="image sizes"):
            masks._check_rles_numpy([b"0"], np.array([h]), np.array([w]))
    bad, _, _ = masks.check_rles([b"0"], [1], [(1 << 32) - 1])  # the largest size is a size (this string is not)
    assert bad.tolist() == [True]
    with pytest.raises(ValueError, match="int64 buffers"):
        masks.check_rles([b"0", b"1"], [1], [1])


def test_threaded_check_equals_one_thread(monkeypatch):
    """check_rles(threads=k) cuts the list into k batches checked in parallel: same codes, boxes, areas, order."""
    rng = np.random.default_rng(5)
    strings, hs, ws = [], [], []
    for i in range(600):
        h, w = int(rng.integers(1, 40)), int(rng.integers(1, 40))
        m = rng.random((h, w)) < rng.random()
        s = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))["counts"]
        strings.append(s if i % 7 else s[:-1] + b"\x7f")  # every 7th one refused
        hs.append(h)
        ws.append(w)
    monkeypatch.setattr(masks, "_CHECK_PER_THREAD", 50)
    one = masks.check_rles(strings, hs, ws)
    for k in (2, 3, 8):
        many = masks.check_rles(strings, hs, ws, threads=k)
        for a, b in zip(one, many):
            np.testing.assert_array_equal(a, b)
    assert one[0].sum() == len(range(0, 600, 7))


@pytest.mark.parametrize("impl", ["check_rles", "_check_rles_numpy"])
def test_a_non_ascii_character_is_refused_even_where_a_valid_one_stood(impl):
    """A non-ASCII character in a str count is outside the alphabet. Encoding it with errors="replace" would turn
    it into '?', which is an RLE character: a valid string with one '?' swapped for 'é' would then pass."""
    valid = [(c.decode(), h, w) for c, h, w in _real_counts() if b"?" in c][:50]
    assert len(valid) >= 10
    swapped = [c.replace("?", ch, 1) for (c, _, _), ch in zip(valid, "éüñ€字ß" * 10)]
    hs, ws = np.array([h for _, h, _ in valid]), np.array([w for _, _, w in valid])
    ok, _, _ = getattr(masks, impl)([c for c, _, _ in valid], hs, ws)
    bad, boxes, areas = getattr(masks, impl)(swapped, hs, ws)
    assert not ok.any() and bad.all() and (boxes == 0).all() and (areas == 0).all()
    for s, h, w in zip(swapped, hs, ws):
        assert "is not an RLE character" in compressed_rle_problem(s, int(h * w))
    assert bad_compressed_rles(swapped, (hs * ws).tolist()).all()

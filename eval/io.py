"""Reading and validating the evaluator's inputs, and writing its outputs atomically.

Inputs are the field's files: a COCO-format ground-truth json (``images``/``annotations``/``categories``),
an LVIS-format ground truth (the cocofied LVIS v0.5 file for AP*, or a raw LVIS file), and a COCO results
json (a list of ``{image_id, category_id, score, segmentation}`` with RLE or polygon masks).

Every problem is reported as an :class:`EvalInputError` that names the file, the record and the fix, before
any output is written. pycocotools and lvis-api silently mis-score several of these cases (docs/evaluation.md §1, §11:
an RLE of the wrong size never matches, annotation id 0 reads as "unmatched"), which is why we refuse them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from .bulk import gc_paused
from .engines import usable_cpus
from .errors import InputError
from .masks import check_rles, parse_rle_counts, segm_to_rle

if TYPE_CHECKING:
    from .detections import Detections

log = logging.getLogger(__name__)

RESULT_KEYS = ("image_id", "category_id", "score", "segmentation")
#: pycocotools stores RLE run lengths as 32-bit unsigned integers: an image must have fewer pixels than this
MAX_IMAGE_PIXELS = 1 << 32

#: the 80 COCO category ids (non-contiguous 1..90). AP* results may use any of them: LVISEval drops classes
#: that are neither annotated nor negative in an image, so they are valid input even when the cocofied
#: ground truth has no such category.
COCO_CATEGORY_IDS = frozenset([
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32, 33, 34,
    35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63,
    64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90])


class EvalInputError(InputError):
    """A bad evaluator input: the message names the file, the record and how to fix it."""

    def __init__(self, path: str | os.PathLike | None, problem: str, fix: str, record: str | None = None):
        self.path = str(path) if path is not None else "<in-memory>"
        self.record = record
        self.problem = problem
        self.fix = fix
        where = f"{self.path}" + (f", {record}" if record else "")
        super().__init__(f"{where}: {problem}. Fix: {fix}")


class EmptyResultsWarning(UserWarning):
    """The results list is empty: every metric is reported as 0 (pycocotools and lvis-api would raise)."""


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes (for provenance)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_json(path: str | os.PathLike, what: str) -> Any:
    """Read a json file, turning OS and parse errors into :class:`EvalInputError`.

    Args:
        path: the file.
        what: what the file should be ("COCO ground truth", "results", ...), used in messages.
    """
    p = Path(path)
    if not p.is_file():
        raise EvalInputError(p, f"{what} file does not exist or is not a file", "check the path")
    try:
        with open(p, "rb") as f, gc_paused():
            return json.load(f)
    except UnicodeDecodeError as e:
        raise EvalInputError(p, f"{what} file is not UTF-8 text ({e})", f"pass the {what} json file") from e
    except json.JSONDecodeError as e:
        raise EvalInputError(
            p, f"{what} file is not valid json (line {e.lineno}, column {e.colno}: {e.msg})",
            "pass a json file; re-export it if it was truncated") from e
    except OSError as e:
        raise EvalInputError(p, f"cannot read {what} file ({e.strerror})", "check the file's permissions") from e


# --------------------------------------------------------------------------------------------------
# Ground truth


def is_lvis_dataset(ds: dict) -> bool:
    """True for LVIS-format ground truth (images carry ``neg_category_ids``/``not_exhaustive_category_ids``)."""
    imgs = ds.get("images") or []
    return bool(imgs) and all("neg_category_ids" in im and "not_exhaustive_category_ids" in im for im in imgs[:50])


def _is_int(v: Any) -> bool:
    """A json integer (``bool`` is not one)."""
    return isinstance(v, int) and not isinstance(v, bool)


def _finite(v: int | float) -> bool:
    """``math.isfinite``, False (not OverflowError) for a json integer beyond float range such as 1e400 written
    out in digits: no library downstream can use it."""
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


def _is_number(v: Any) -> bool:
    """A finite json number (``bool`` is not one)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and _finite(v)


def compressed_rle_problem(counts: str | bytes, total: int) -> str | None:
    """What is wrong with a compressed RLE ``counts`` string for a mask of ``total`` pixels, or None.

    Decodes the string exactly as pycocotools' ``rleFrString`` does (6-bit characters ``'0'``…``'o'``, 5 data bits
    and a continuation bit each, sign extension of the last character, counts from the third on stored as the
    difference to the count two before) and checks that every run length is non-negative and that they sum to
    ``total`` = height × width. pycocotools itself checks neither: a string that sums to less makes ``mask.iou``
    loop forever when it overlaps a same-class GT box, and ``decode`` read uninitialised memory (docs/evaluation.md
    §1). Vectorised with NumPy (tens of microseconds per mask).
    """
    cnts, problem = parse_rle_counts(counts)
    if problem:
        return problem
    if (cnts < 0).any():
        return f"run length {int(cnts[cnts < 0][0])} is negative"
    s = int(cnts.sum())
    if s != total:
        return f"its run lengths sum to {s} pixels, not the mask's {total}"
    return None


def bad_compressed_rles(counts: list[str | bytes], totals: list[int]) -> np.ndarray:
    """Which of many compressed RLE ``counts`` strings :func:`compressed_rle_problem` would refuse, in one pass
    (:func:`eval.masks.check_rles`; the compiled checker takes about a microsecond per mask). Call
    :func:`compressed_rle_problem` on a refused one for the message.

    Args:
        counts: N counts strings. totals: N pixel counts (height × width).

    Returns:
        Boolean array (N,): True where the string is refused.
    """
    totals = np.asarray(totals, dtype=np.int64).reshape(-1)
    return check_rles(counts, totals, np.ones_like(totals))[0]


def _check_bbox(bbox: Any, path, record: str, kind: str) -> None:
    """A COCO box [x, y, w, h]: four finite numbers, w and h non-negative (pixels)."""
    if (not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all(_is_number(v) for v in bbox)
            or bbox[2] < 0 or bbox[3] < 0):
        raise EvalInputError(path, f"{kind} bbox {bbox!r} is not [x, y, w, h] with finite numbers and w, h >= 0",
                             "write boxes as [x, y, width, height] in pixels", record)


def _finite_numbers(values: list) -> bool:
    """Every entry an int or float (bool included, as ``isinstance`` sees it) and finite.

    The common case — only ``int`` / ``float`` entries of float range — is checked on one array; anything else (a
    subclass, a string, an int beyond float range) by the per-entry rule, which is the definition.
    """
    if set(map(type, values)) <= {int, float}:
        try:
            return bool(np.isfinite(np.fromiter(values, np.float64, len(values))).all())
        except OverflowError:
            pass
    return all(isinstance(v, (int, float)) and _finite(v) for v in values)


def _check_segmentation(segm: Any, h: int, w: int, path, record: str, kind: str,
                        deferred: list | None = None) -> None:
    """Validate a polygon list or RLE dict against the image size; raise EvalInputError otherwise.

    ``deferred``: collect compressed RLE strings here as ``(counts, h * w, record, kind)`` for one batched check by
    :func:`_check_deferred_rles` instead of checking each now (the caller must run it before using the masks).
    """
    fix_poly = "polygons are lists of [x0, y0, x1, y1, ...] with at least 3 points (6 numbers), in pixels"
    if isinstance(segm, list):
        if len(segm) == 0:
            raise EvalInputError(path, f"{kind} has an empty segmentation", "drop the record or give it a mask", record)
        for k, poly in enumerate(segm):
            if not isinstance(poly, list) or not _finite_numbers(poly):
                raise EvalInputError(path, f"{kind} polygon {k} is not a flat list of finite numbers", fix_poly, record)
            if len(poly) < 6 or len(poly) % 2:
                raise EvalInputError(path, f"{kind} polygon {k} has {len(poly)} coordinates (needs an even count >= 6)",
                                     fix_poly, record)
        return
    if isinstance(segm, dict):
        size, counts = segm.get("size"), segm.get("counts")
        if (not isinstance(size, (list, tuple)) or len(size) != 2) or counts is None:
            raise EvalInputError(path, f"{kind} RLE needs 'size': [height, width] and 'counts'",
                                 "encode masks with pycocotools.mask.encode at full image size", record)
        if not all(_is_int(v) for v in size):
            raise EvalInputError(path, f"{kind} RLE size {list(size)} is not two integers",
                                 "encode masks with pycocotools.mask.encode at full image size", record)
        if list(size) != [h, w]:
            raise EvalInputError(
                path, f"{kind} RLE size {list(size)} differs from the image size [{h}, {w}] "
                f"(pycocotools would silently score IoU -1, i.e. never match)",
                "paste masks back to the original image resolution before RLE encoding", record)
        if isinstance(counts, list):
            if not all(_is_int(v) and v >= 0 for v in counts):
                raise EvalInputError(path, f"{kind} uncompressed RLE counts must be non-negative integers",
                                     "re-encode the mask with pycocotools.mask.encode", record)
            if sum(counts) != h * w:
                raise EvalInputError(path, f"{kind} uncompressed RLE counts sum to {sum(counts)}, not {h}x{w}",
                                     "re-encode the mask", record)
        elif isinstance(counts, (str, bytes)):
            if len(counts) == 0:
                raise EvalInputError(path, f"{kind} has an empty RLE 'counts'", "re-encode the mask", record)
            if isinstance(counts, str) and not counts.isascii():  # refused here: no encoder ever sees it
                raise EvalInputError(path, f"{kind} compressed RLE is corrupt: {compressed_rle_problem(counts, h * w)}",
                                     "re-encode the mask with pycocotools.mask.encode at full image size", record)
            if deferred is not None:
                deferred.append((counts, h * w, record, kind))
                return
            problem = compressed_rle_problem(counts, h * w)
            if problem:  # pycocotools would hang on it or read uninitialised memory: never hand it over
                raise EvalInputError(path, f"{kind} compressed RLE is corrupt: {problem}",
                                     "re-encode the mask with pycocotools.mask.encode at full image size", record)
        else:
            raise EvalInputError(path, f"{kind} RLE 'counts' must be a string or a list of ints",
                                 "re-encode the mask", record)
        return
    raise EvalInputError(path, f"{kind} segmentation must be a polygon list or an RLE dict, got {type(segm).__name__}",
                         "write masks as COCO RLE or polygons", record)


def _check_deferred_rles(deferred: list, path) -> None:
    """Batch-check the compressed RLEs :func:`_check_segmentation` collected; raise for the first refused one."""
    if not deferred:
        return
    bad = bad_compressed_rles([d[0] for d in deferred], [d[1] for d in deferred])
    if bad.any():
        counts, total, record, kind = deferred[int(np.argmax(bad))]
        problem = compressed_rle_problem(counts, total)
        raise EvalInputError(path, f"{kind} compressed RLE is corrupt: {problem}",
                             "re-encode the mask with pycocotools.mask.encode at full image size", record)


def validate_gt(ds: Any, path: str | os.PathLike | None = None, *, expect: str = "coco") -> dict:
    """Validate a COCO- or LVIS-format ground-truth dict in place and return it.

    Args:
        ds: the parsed json.
        path: its file (for messages).
        expect: ``"coco"`` (a COCO instances file; LVIS files are refused) or ``"lvis"`` (an LVIS or cocofied
            LVIS file; plain COCO files are refused).

    Raises:
        EvalInputError: wrong top-level type or format, missing keys, duplicate or zero annotation ids,
            annotations without ``segmentation``, unknown image or category ids, bad masks.
    """
    if not isinstance(ds, dict) or not all(k in ds for k in ("images", "annotations", "categories")):
        raise EvalInputError(path, "ground truth must be a json object with 'images', 'annotations' and 'categories'",
                             "pass a COCO/LVIS instances file (a results list goes to --results)")
    lvis = is_lvis_dataset(ds)
    if expect == "coco" and lvis:
        raise EvalInputError(path, "this is an LVIS-format file (images have neg_category_ids), passed as COCO "
                             "ground truth",
                             "pass it with --lvis-gt (for AP* make it with `rmbench cocofy-lvis` first)")
    if expect == "lvis" and not lvis:
        raise EvalInputError(path, "this is a COCO-format file (images lack neg_category_ids / "
                             "not_exhaustive_category_ids), passed as LVIS ground truth",
                             "pass it with --gt, and the cocofied LVIS file with --lvis-gt")
    for key in ("images", "annotations", "categories"):
        if not isinstance(ds[key], list):
            raise EvalInputError(path, f"'{key}' must be a json list, got {type(ds[key]).__name__}", "fix the file")
    images: dict = {}
    for i, im in enumerate(ds["images"]):
        rec = f"images[{i}]"
        if not isinstance(im, dict) or not all(k in im for k in ("id", "height", "width")):
            raise EvalInputError(path, "image record lacks 'id', 'height' or 'width'", "add them", rec)
        if not _is_int(im["id"]):
            raise EvalInputError(path, f"image id {im['id']!r} is not an integer", "write image ids as integers", rec)
        for k in ("height", "width"):
            if not _is_int(im[k]) or im[k] <= 0:
                raise EvalInputError(path, f"image {k} {im[k]!r} is not a positive integer (pixels)",
                                     f"write the image's {k} in pixels", rec)
        if im["height"] * im["width"] >= MAX_IMAGE_PIXELS:
            raise EvalInputError(path, f"image of {im['height']}x{im['width']} pixels is too large for COCO RLE "
                                 f"(32-bit run lengths: below {MAX_IMAGE_PIXELS} pixels)",
                                 "check the image's height and width (pixels)", rec)
        if im["id"] in images:
            raise EvalInputError(path, f"duplicate image id {im['id']}", "give every image a unique id", rec)
        images[im["id"]] = im
    cats = set()
    for i, c in enumerate(ds["categories"]):
        if not isinstance(c, dict) or "id" not in c:
            raise EvalInputError(path, "category record lacks 'id'", "add it", f"categories[{i}]")
        if not _is_int(c["id"]):
            raise EvalInputError(path, f"category id {c['id']!r} is not an integer", "write category ids as integers",
                                 f"categories[{i}]")
        if c["id"] in cats:
            raise EvalInputError(path, f"duplicate category id {c['id']}", "give every category a unique id",
                                 f"categories[{i}]")
        cats.add(c["id"])
    seen: dict = {}
    deferred: list = []
    for i, a in enumerate(ds["annotations"]):
        rec = f"annotations[{i}] (id {a.get('id') if isinstance(a, dict) else '?'})"
        if not isinstance(a, dict):
            raise EvalInputError(path, "annotation is not an object", "fix the record", rec)
        for k in ("id", "image_id", "category_id", "area"):
            if k not in a:
                raise EvalInputError(path, f"annotation lacks '{k}'", f"add '{k}' to every annotation", rec)
        for k in ("id", "image_id", "category_id"):
            if not _is_int(a[k]):
                raise EvalInputError(path, f"annotation {k} {a[k]!r} is not an integer", f"write {k} as an integer",
                                     rec)
        if not _is_number(a["area"]) or a["area"] < 0:
            raise EvalInputError(path, f"annotation area {a['area']!r} is not a non-negative number (pixels)",
                                 "write the mask's area in pixels", rec)
        if not lvis:
            if "iscrowd" not in a:
                raise EvalInputError(path, "annotation lacks 'iscrowd' (pycocotools reads it from every GT)",
                                     "add 'iscrowd': 0 (or 1 for crowd regions) to every annotation", rec)
            if a["iscrowd"] not in (0, 1) or isinstance(a["iscrowd"], (bool, float)):
                raise EvalInputError(path, f"iscrowd {a['iscrowd']!r} is not 0 or 1", "write iscrowd as 0 or 1", rec)
        if "bbox" in a:
            _check_bbox(a["bbox"], path, rec, "annotation")
        if "segmentation" not in a:
            raise EvalInputError(path, "annotation has no 'segmentation' (a box-only file cannot be scored for masks)",
                                 "use an instances file with masks", rec)
        if a["id"] in seen:
            raise EvalInputError(path, f"duplicate annotation id {a['id']} (also annotations[{seen[a['id']]}])",
                                 "give every annotation a unique id", rec)
        if a["id"] == 0:
            raise EvalInputError(path, "annotation id 0 (pycocotools and lvis-api use 0 to mean 'unmatched' and "
                                 "miscount it)", "renumber annotation ids from 1", rec)
        seen[a["id"]] = i
        if a["image_id"] not in images:
            raise EvalInputError(path, f"annotation refers to image_id {a['image_id']} that is not in 'images'",
                                 "add the image record or drop the annotation", rec)
        if a["category_id"] not in cats:
            raise EvalInputError(path, f"annotation refers to category_id {a['category_id']} that is not in "
                                 "'categories'", "add the category or drop the annotation", rec)
        im = images[a["image_id"]]
        _check_segmentation(a["segmentation"], im["height"], im["width"], path, rec, "annotation", deferred)
    _check_deferred_rles(deferred, path)
    return ds


def load_gt(path: str | os.PathLike, expect: str = "coco") -> dict:
    """Load and validate a ground-truth json (see :func:`validate_gt`)."""
    return validate_gt(load_json(path, "LVIS ground truth" if expect == "lvis" else "COCO ground truth"), path,
                       expect=expect)


# --------------------------------------------------------------------------------------------------
# Results


def validate_results(results: Any, gt: dict, path: str | os.PathLike | None = None, *,
                     gt_path: str | os.PathLike | None = None, keep_bbox: bool = False,
                     category_ids: frozenset | set | None = None) -> list[dict]:
    """Validate a COCO results list against its ground truth and return a normalised copy.

    The copy has every ``segmentation`` as compressed RLE with ``str`` counts at full image size (polygons are
    rasterised with pycocotools), and no ``bbox`` key unless ``keep_bbox`` (detection area then comes from the
    mask, as in detectron2 and mmdet 3.x; docs/evaluation.md §11 item 1).

    Args:
        results: the parsed results json.
        gt: the validated ground truth the results are scored against.
        path, gt_path: files, for messages.
        keep_bbox: keep ``bbox`` (RefineMask-compatible: APs/APm/APl then use box areas).
        category_ids: the accepted category ids (default: the ground truth's; :data:`COCO_CATEGORY_IDS` for
            COCO results scored against a cocofied LVIS file).

    Raises:
        EvalInputError: not a list, missing keys, unknown image_id (or none known: a results file for
            another split), unknown category_id, NaN/negative/over-1 score, bad mask.

    Warns:
        EmptyResultsWarning: for an empty list (the metrics are then reported as 0).
    """
    if isinstance(results, dict):
        hint = ("this looks like a ground-truth file; pass it with --gt/--lvis-gt"
                if "annotations" in results else "write the detections as a json list")
        raise EvalInputError(path, "results must be a json list of detections, got an object", hint)
    if not isinstance(results, list):
        raise EvalInputError(path, f"results must be a json list of detections, got {type(results).__name__}",
                             "write the detections as a json list")
    if not results:
        warnings.warn(f"{path or '<results>'}: the results list is empty; every metric is reported as 0",
                      EmptyResultsWarning, stacklevel=2)
        return []
    images = {im["id"]: im for im in gt["images"]}
    cats = set(category_ids) if category_ids is not None else {c["id"] for c in gt["categories"]}
    known = [_is_int(r.get("image_id")) and r.get("image_id") in images for r in results if isinstance(r, dict)]
    if known and not any(known):
        ids = sorted({repr(r.get("image_id")) for r in results[:5] if isinstance(r, dict)})
        raise EvalInputError(path, f"none of the results' image ids ({', '.join(ids)}, ...) are in the ground truth "
                             f"{gt_path or ''}; this results file is for another split or dataset",
                             "evaluate it against the ground truth of the split it was predicted on")
    out = []
    deferred: list = []
    for i, r in enumerate(results):
        rec = f"results[{i}]"
        if not isinstance(r, dict):
            raise EvalInputError(path, "detection is not an object",
                                 "write {image_id, category_id, score, segmentation}", rec)
        missing = [k for k in RESULT_KEYS if k not in r]
        if missing:
            raise EvalInputError(path, f"detection lacks {', '.join(repr(k) for k in missing)}",
                                 "every detection needs image_id, category_id, score and segmentation", rec)
        for k in ("image_id", "category_id"):
            if not _is_int(r[k]):
                raise EvalInputError(path, f"{k} {r[k]!r} is not an integer", f"write {k} as an integer", rec)
        if keep_bbox:
            if "bbox" not in r:
                raise EvalInputError(path, "--keep-bbox takes detection areas from boxes, but this detection has no "
                                     "'bbox'", "give every detection its [x, y, w, h] box, or drop --keep-bbox", rec)
            _check_bbox(r["bbox"], path, rec, "detection")
        if r["image_id"] not in images:
            raise EvalInputError(path, f"image_id {r['image_id']!r} is not in the ground truth {gt_path or ''}",
                                 "drop detections of images outside the evaluated split", rec)
        if r["category_id"] not in cats:
            raise EvalInputError(path, f"category_id {r['category_id']!r} is not a ground-truth category",
                                 "map contiguous model labels back to the dataset's category ids", rec)
        s = r["score"]
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not _finite(s) or s < 0 or s > 1:
            raise EvalInputError(path, f"score {s!r} is not a probability in [0, 1]",
                                 "write sigmoid/softmax probabilities, not logits", rec)
        im = images[r["image_id"]]
        _check_segmentation(r["segmentation"], im["height"], im["width"], path, rec, "detection", deferred)
        rle = segm_to_rle(r["segmentation"], im["height"], im["width"])  # compressed RLE is passed through as is
        counts = rle["counts"]
        d = {"image_id": r["image_id"], "category_id": r["category_id"], "score": float(s),
             "segmentation": {"size": [im["height"], im["width"]],
                              "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}}
        if keep_bbox and "bbox" in r:
            d["bbox"] = r["bbox"]
        out.append(d)
    _check_deferred_rles(deferred, path)  # before any library sees a mask
    return out


def read_results(path: str | os.PathLike, gt: dict, *, gt_path: str | os.PathLike | None = None,
                 keep_bbox: bool = False, category_ids: frozenset | set | None = None,
                 threads: int | None = None) -> Detections:
    """Read, validate and normalise a COCO results json file into :class:`eval.detections.Detections`.

    The same contract as ``validate_results(load_json(path), ...)`` — the same detections, the same refusals with
    the same messages — at a fraction of its time and memory: the file is decoded by msgspec straight into typed
    records (ids must be json integers, scores numbers, masks compressed RLE; in C, no intermediate dicts), then
    every rule of :func:`validate_results` is checked on whole columns (known image and category ids, scores in
    [0, 1], RLE size equal to the image size, kept boxes, and every RLE string by :func:`eval.masks.check_rles`).
    Whenever anything is not plainly valid — a parse or type error, a polygon or uncompressed RLE, an empty list,
    any failed check — the file is read again by the reference path, :func:`validate_results` on ``json.load``,
    which raises the exact error (or normalises the polygons). tests/test_fast_results.py holds the two paths
    equal on valid files and on every refusal of tests/test_bad_input.py.

    ``threads``: of the RLE check (None: the usable CPUs; the result does not depend on it).

    Raises:
        EvalInputError: as :func:`validate_results` and :func:`load_json`.
    """
    from .detections import Detections

    p = Path(path)
    with gc_paused():
        fast = _read_results_fast(p, gt, keep_bbox, category_ids, threads or usable_cpus())
    if fast is not None:
        return fast
    log.debug("%s: read by the reference path (json + per-record validation)", p)
    return Detections.from_records(validate_results(load_json(p, "results"), gt, p, gt_path=gt_path,
                                                    keep_bbox=keep_bbox, category_ids=category_ids))


class _Rle(msgspec.Struct):
    """A compressed RLE as a results file holds it (the fast path's schema; anything else: reference path)."""

    size: list[int]
    counts: str


class _Result(msgspec.Struct):
    """One detection with a compressed RLE (unknown keys are ignored, as :func:`validate_results` ignores them)."""

    image_id: int
    category_id: int
    score: float
    segmentation: _Rle
    bbox: list[float] | None = None


def _read_results_fast(path: Path, gt: dict, keep_bbox: bool, category_ids, threads: int = 1) -> Detections | None:
    """:func:`read_results` for a plainly valid file, or None (then the reference path decides)."""
    from .detections import Detections

    try:
        raw = path.read_bytes()
    except OSError:
        return None
    try:
        recs = msgspec.json.decode(raw, type=list[_Result])
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    del raw
    n = len(recs)
    if n == 0:
        return None
    try:
        image_id = np.fromiter((r.image_id for r in recs), np.int64, n)
        category_id = np.fromiter((r.category_id for r in recs), np.int64, n)
    except OverflowError:  # an id beyond int64: no ground truth has it
        return None
    score = np.fromiter((r.score for r in recs), np.float64, n)
    try:
        size = np.array([r.segmentation.size for r in recs if len(r.segmentation.size) == 2], dtype=np.int64)
    except OverflowError:  # a size beyond int64: not the image's
        return None
    if size.shape != (n, 2):
        return None
    bbox = None
    if keep_bbox:
        if any(r.bbox is None or len(r.bbox) != 4 for r in recs):
            return None
        bbox = np.array([r.bbox for r in recs], dtype=np.float64)
        if not (np.isfinite(bbox).all() and (bbox[:, 2:] >= 0).all()):
            return None
    counts = [r.segmentation.counts for r in recs]
    del recs
    if not all(c.isascii() for c in counts):  # outside the RLE alphabet: the reference path says where
        return None
    counts = [c.encode("ascii") for c in counts]
    im_ids = np.array([im["id"] for im in gt["images"]], dtype=np.int64)
    im_hw = np.array([(im["height"], im["width"]) for im in gt["images"]], dtype=np.int64).reshape(-1, 2)
    order = np.argsort(im_ids)
    pos = np.searchsorted(im_ids[order], image_id)
    pos = np.minimum(pos, max(len(im_ids) - 1, 0))
    if not len(im_ids) or not (im_ids[order][pos] == image_id).all():
        return None
    hw = im_hw[order][pos]
    cats = np.array(sorted(category_ids if category_ids is not None else {c["id"] for c in gt["categories"]}),
                    dtype=np.int64)
    if not np.isin(category_id, cats).all():
        return None
    if not (np.isfinite(score).all() and (score >= 0).all() and (score <= 1).all()):
        return None
    if not (size == hw).all():
        return None
    height, width = np.ascontiguousarray(hw[:, 0]), np.ascontiguousarray(hw[:, 1])
    bad, boxes, areas = check_rles(counts, height, width, threads=threads)
    if bad.any():
        return None
    return Detections(image_id, category_id, score, height, width, counts, boxes, areas, bbox)


def load_results(path: str | os.PathLike, gt: dict, *, gt_path=None, keep_bbox: bool = False,
                 category_ids=None) -> list[dict]:
    """Load and validate a COCO results json (see :func:`validate_results`)."""
    return validate_results(load_json(path, "results"), gt, path, gt_path=gt_path, keep_bbox=keep_bbox,
                            category_ids=category_ids)


# --------------------------------------------------------------------------------------------------
# Outputs


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator[Any]:
    """Open a temporary file beside ``path`` and rename it over ``path`` only if the block succeeds.

    A crash or exception leaves no half-written file behind (and an existing file untouched). The data is
    fsync'ed before the rename, and the file gets the usual umask permissions (mkstemp creates 0600).
    Used for every output of the harness: json, markdown, CSV, plots and checkpoints.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": ""})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_write_group(paths: list[str | os.PathLike], mode: str = "w") -> Iterator[list[Any]]:
    """:func:`atomic_write` for several files that belong together: all are renamed into place, or none.

    Every file is written and fsync'ed as a temporary beside its destination; only when the block and every write
    succeeded are they renamed (``os.replace``, atomic per file on one filesystem) one after the other. An exception
    anywhere leaves every destination as it was (the old files, or none) and no temporary behind.
    """
    staged: list[tuple[str, Path]] = []
    handles = []
    umask = os.umask(0)
    os.umask(umask)
    try:
        for path in map(Path, paths):
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            os.chmod(tmp, 0o666 & ~umask)
            staged.append((tmp, path))
            handles.append(os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": ""})))
        yield handles
        for f in handles:
            f.flush()
            os.fsync(f.fileno())
            f.close()
        for tmp, path in staged:
            os.replace(tmp, path)
    except BaseException:
        for f in handles:
            with contextlib.suppress(OSError):
                f.close()
        for tmp, _ in staged:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise


def check_output_dir(path: str | os.PathLike, what: str = "--out") -> Path:
    """Refuse an output folder that cannot be written, before any work starts.

    Raises:
        EvalInputError: ``path`` is an existing file, or a folder (or the parent it would be created in) that this
            process cannot write.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise EvalInputError(p, f"{what} is an existing file, not a folder", f"pass a folder for {what}")
    probe = p
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise EvalInputError(p, f"{what} would be created inside {probe}, which is a file", f"pass another {what}")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise EvalInputError(p, f"{what}: {probe} is not writable", f"pass a folder you can write to as {what}")
    return p


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented json atomically (NaN is written as ``null``)."""
    with atomic_write(path) as f:
        dump_json(obj, f)


def dump_json(obj: Any, f) -> None:
    """``obj`` as the harness writes json: indented, NaN as ``null``, a final newline."""
    json.dump(_nan_to_none(obj), f, indent=2, allow_nan=False)
    f.write("\n")


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return _nan_to_none(obj.item())
    return obj

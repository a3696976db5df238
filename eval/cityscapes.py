"""Cityscapes instance segmentation: GT conversion, the official AP, and the COCO-style AP RefineMask reports.

Three entry points (docs/evaluation.md §5, cross-check §13 D):

* :func:`instance_ids_to_coco` turns a ``gtFine/<split>/<city>/*_gtFine_instanceIds.png`` tree into the
  "Cityscapes-as-COCO" json that mmdetection / RefineMask train and evaluate on (docs/evaluation.md §5.2).
* :func:`cityscapes_official_ap` runs the **official** cityscapesscripts 2.3.0
  ``evalInstanceLevelSemanticLabeling.evaluateImgLists`` on COCO-format results (docs/evaluation.md §5.1):
  raw step-integrated AP over IoU thresholds 0.50:0.05:0.95 with strict ``>``, 100-px minimum GT size,
  void / group-region ignore fraction.
* :func:`cityscapes_coco_style_ap` is the number in RefineMask's Cityscapes table: pycocotools
  ``COCOeval(iouType='segm')`` (101-point interpolated AP, linspace IoUs, crowd via ``iscrowd``) on the
  converted json.

The two APs are different metrics (docs/evaluation.md §11 item 10) and must be reported separately and labelled.

cityscapesscripts 2.3.0 does not run unmodified with NumPy 2.4. :func:`cityscapes_official_ap` applies small
shims to the library module's namespace for the duration of one call only (never to ``numpy`` itself, never a
copy of the library's code); see :func:`_cityscapes_shims`.
"""

from __future__ import annotations

import contextlib
import glob
import io
import json
import logging
import math
import os
import tempfile
import threading
import types
from collections.abc import Iterator
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from eval.errors import UsageError
from eval.io import atomic_write
from eval.masks import mask_to_rle, segm_to_rle

logger = logging.getLogger(__name__)

#: The 8 classes evaluated on Cityscapes instance segmentation: (COCO category id, name, Cityscapes label id).
#: Order and names follow cityscapesscripts ``labels`` (``hasInstances and not ignoreInEval``), which is also
#: the order of mmdet's ``CityscapesDataset.CLASSES``.
CITYSCAPES_CLASSES: tuple[tuple[int, str, int], ...] = (
    (1, "person", 24),
    (2, "rider", 25),
    (3, "car", 26),
    (4, "truck", 27),
    (5, "bus", 28),
    (6, "train", 31),
    (7, "motorcycle", 32),
    (8, "bicycle", 33),
)
_LABEL_ID_TO_CAT = {label_id: (cat_id, name) for cat_id, name, label_id in CITYSCAPES_CLASSES}
_NAME_TO_LABEL_ID = {name: label_id for _, name, label_id in CITYSCAPES_CLASSES}

_GT_SUFFIX = "_gtFine_instanceIds.png"
_IMG_SUFFIX = "_leftImg8bit.png"
_SEGM_SUFFIX = "_gtFine_labelIds.png"

# The shims patch module globals of cityscapesscripts; serialise calls so two threads never interleave them.
_SHIM_LOCK = threading.Lock()


# ---------------------------------------------------------------------------------------------------------
# GT conversion
# ---------------------------------------------------------------------------------------------------------


def _read_instance_ids(path: str) -> np.ndarray:
    """Read a ``*_gtFine_instanceIds.png`` as a 2-D int64 array (16-bit PNG; PIL mode ``I`` or ``I;16``)."""
    with Image.open(path) as img:
        arr = np.array(img)
    if arr.ndim != 2:
        raise UsageError(
            f"{path}: expected a single-channel 16-bit instanceIds PNG, got an array of shape {arr.shape}; "
            "pass the *_gtFine_instanceIds.png files of the official gtFine package"
        )
    return arr.astype(np.int64)


def _atomic_write_json(obj: Any, out_json: str | os.PathLike) -> None:
    """Write ``obj`` as compact JSON to ``out_json`` atomically (:func:`eval.io.atomic_write`)."""
    with atomic_write(out_json) as f:
        json.dump(obj, f)


def instance_ids_to_coco(
    gt_fine_dir: str | os.PathLike, out_json: str | os.PathLike | None = None, split: str = "val"
) -> dict:
    """Convert a Cityscapes ``gtFine/<split>/<city>/*_gtFine_instanceIds.png`` tree to Cityscapes-as-COCO json.

    Follows mmdetection's / RefineMask's ``tools/convert_datasets/cityscapes.py`` (docs/evaluation.md §5.2): for every
    instance id ≥ 24 in an instanceIds image, the label id is ``id // 1000`` (``id ≥ 1000``: one object) or
    ``id`` itself (``id < 1000``: a group region such as "a crowd of cars"); ids whose label is not one of the
    8 evaluated classes (e.g. caravan 29, trailer 30: ``ignoreInEval``) are skipped. Each kept id becomes one
    annotation with a compressed-RLE ``segmentation`` of all its pixels, ``iscrowd = int(id < 1000)``,
    ``area`` = RLE pixel count (pycocotools ``area``) and ``bbox`` = ``[x, y, w, h]`` of the mask in pixels
    (pycocotools ``toBbox``).

    Deliberate differences from mmdet's converter, none of which changes any metric:
    category ids are 1..8 (person, rider, car, truck, bus, train, motorcycle, bicycle; mmdet writes the label
    ids 24..33 — mmdet maps categories by name, so both work); image and annotation ids start at 1 (mmdet
    starts at 0, and a GT annotation id 0 is miscounted by pycocotools, docs/evaluation.md §1 "Ids"); images are
    listed in sorted (city, file) order (mmdet uses glob order); images without instances are kept.

    Parameters
    ----------
    gt_fine_dir
        The ``gtFine`` folder (it contains ``<split>/<city>/<city>_<seq>_<frame>_gtFine_instanceIds.png``).
    out_json
        If given, the json is also written there atomically (temp file in the same folder + ``os.replace``).
    split
        Sub-folder of ``gt_fine_dir`` to convert (``"train"``, ``"val"``, ...).

    Returns
    -------
    dict
        ``{"images": [...], "annotations": [...], "categories": [...]}``. Image records have ``id``,
        ``file_name`` (``<city>/<city>_<seq>_<frame>_leftImg8bit.png``), ``height``, ``width`` (pixels) and
        ``segm_file`` (``<city>/..._gtFine_labelIds.png``, as mmdet writes it). Annotation records have
        ``id``, ``image_id``, ``category_id``, ``iscrowd``, ``area`` (pixels), ``bbox`` and ``segmentation``
        (``{"size": [h, w], "counts": str}``).

    Raises
    ------
    FileNotFoundError
        If ``gt_fine_dir/<split>`` does not exist or holds no ``*_gtFine_instanceIds.png``.
    ValueError
        If a PNG is not single-channel or holds an instance id whose label id is unknown to Cityscapes.
    """
    from cityscapesscripts.helpers.labels import id2label

    split_dir = os.path.join(os.fspath(gt_fine_dir), split)
    if not os.path.isdir(split_dir):
        raise FileNotFoundError(
            f"Cityscapes split folder not found: {split_dir}; pass the gtFine folder (the one containing "
            f"'{split}/<city>/*{_GT_SUFFIX}') as gt_fine_dir"
        )
    pattern = os.path.join(split_dir, "*", "*" + _GT_SUFFIX)
    files = sorted(glob.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no instanceIds PNGs match {pattern}; is this the gtFine folder of Cityscapes?")

    images: list[dict] = []
    annotations: list[dict] = []
    ann_id = 1
    for img_id, path in enumerate(files, start=1):
        city = os.path.basename(os.path.dirname(path))
        stem = os.path.basename(path)[: -len(_GT_SUFFIX)]
        inst = _read_instance_ids(path)
        height, width = inst.shape
        images.append(
            {
                "id": img_id,
                "file_name": f"{city}/{stem}{_IMG_SUFFIX}",
                "height": int(height),
                "width": int(width),
                "segm_file": f"{city}/{stem}{_SEGM_SUFFIX}",
            }
        )
        for inst_id in np.unique(inst[inst >= 24]).tolist():
            label_id = inst_id // 1000 if inst_id >= 1000 else inst_id
            if label_id not in id2label:
                raise UsageError(
                    f"{path}: instance id {inst_id} maps to label id {label_id}, which is not a Cityscapes "
                    "label; the file is not a valid *_gtFine_instanceIds.png"
                )
            if label_id not in _LABEL_ID_TO_CAT:  # no instances or ignoreInEval (caravan, trailer)
                continue
            cat_id, _ = _LABEL_ID_TO_CAT[label_id]
            rle = mask_to_rle(inst == inst_id)
            rle_b = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
            annotations.append(
                {
                    "id": ann_id,
                    "image_id": img_id,
                    "category_id": cat_id,
                    "iscrowd": int(inst_id < 1000),
                    "area": int(mask_utils.area(rle_b)),
                    "bbox": [float(v) for v in mask_utils.toBbox(rle_b).tolist()],
                    "segmentation": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"]},
                }
            )
            ann_id += 1
    out = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": cat_id, "name": name} for cat_id, name, _ in CITYSCAPES_CLASSES],
    }
    logger.info("converted %d images / %d instances from %s", len(images), len(annotations), split_dir)
    if out_json is not None:
        _atomic_write_json(out, out_json)
        logger.info("wrote %s", os.fspath(out_json))
    return out


# ---------------------------------------------------------------------------------------------------------
# Shared validation of COCO-format results
# ---------------------------------------------------------------------------------------------------------


def _check_results(gt: dict, results: list[dict]) -> list[dict]:
    """Validate results against the GT json; return them with segmentation as compressed RLE (str counts).

    Raises ValueError naming the result index and image_id for unknown images/categories, bad scores or
    masks whose size differs from the image (which pycocotools would silently score as IoU −1).
    """
    imgs = {img["id"]: img for img in gt.get("images", [])}
    cat_ids = {c["id"] for c in gt.get("categories", [])}
    out = []
    for i, r in enumerate(results):
        for key in ("image_id", "category_id", "segmentation", "score"):
            if key not in r:
                raise UsageError(f"result #{i} has no '{key}' field; COCO segm results need image_id, "
                                 "category_id, segmentation and score")
        img = imgs.get(r["image_id"])
        if img is None:
            raise UsageError(
                f"result #{i} has image_id {r['image_id']!r}, which is not an image of the GT file; "
                "evaluate results against the GT json they were produced for"
            )
        if r["category_id"] not in cat_ids:
            raise UsageError(
                f"result #{i} (image_id {r['image_id']!r}) has category_id {r['category_id']!r}, not one of the "
                f"GT categories {sorted(cat_ids)}; map the model's contiguous labels back to the json's ids"
            )
        try:
            score = float(r["score"])
        except OverflowError:  # an integer beyond float range
            score = math.inf
        if not math.isfinite(score):
            raise UsageError(f"result #{i} (image_id {r['image_id']!r}) has a non-finite score {r['score']!r}")
        h, w = int(img["height"]), int(img["width"])
        rle = segm_to_rle(r["segmentation"], h, w)
        if [int(s) for s in rle["size"]] != [h, w]:
            raise UsageError(
                f"result #{i} (image_id {r['image_id']!r}): mask size {list(rle['size'])} differs from the image "
                f"size [{h}, {w}]; paste predicted masks back to the full image before encoding"
            )
        counts = rle["counts"].decode("ascii") if isinstance(rle["counts"], bytes) else rle["counts"]
        out.append({"image_id": r["image_id"], "category_id": r["category_id"], "score": score,
                    "segmentation": {"size": [h, w], "counts": counts}})
    return out


def _none_if_nan(x: Any) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x


# ---------------------------------------------------------------------------------------------------------
# Official Cityscapes AP (cityscapesscripts)
# ---------------------------------------------------------------------------------------------------------


def _jsonable(obj: Any) -> Any:
    """Recursively turn NumPy scalars/arrays into Python numbers/lists so ``json.dumps`` accepts them."""
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


class _CityscapesError(RuntimeError):
    """An error cityscapesscripts reported through ``printError`` (which would otherwise ``sys.exit``)."""


def _numpy_compat_namespace(empty_cumsums: list[int]) -> types.ModuleType:
    """A stand-in for ``numpy`` inside the cityscapesscripts module: all of numpy, plus two fixes.

    * ``in1d``: removed in NumPy 2.4 (deprecated since 2.0); ``assignGt2Preds`` calls
      ``np.in1d(gtNp, voidIds).reshape(gtNp.shape)``. ``in1d`` returned the flattened ``isin``.
    * ``cumsum`` of an **empty** array returns ``[0.]``: ``evaluateMatches`` reads ``cumsum(y_true)[-1]``
      and raises IndexError (in every NumPy version) when a class has GT and predictions but, at some
      threshold, no GT is matched and every prediction is ignored (void/group/small-GT fraction > θ).
      With ``[0.]`` the library's own code yields a curve holding only its artificial point
      (recall 0, precision 1) whose step width is 0, i.e. AP = 0.0 — the value for "no true positive".
      Each such case increments ``empty_cumsums[0]``.
    """
    ns = types.ModuleType("numpy_cityscapes_compat")
    ns.__getattr__ = lambda name: getattr(np, name)  # PEP 562: every other attribute is numpy's own

    def in1d(ar1: Any, ar2: Any, assume_unique: bool = False, invert: bool = False, **kw: Any) -> np.ndarray:
        return np.isin(np.asarray(ar1).ravel(), ar2, assume_unique=assume_unique, invert=invert, **kw)

    def cumsum(a: Any, *args: Any, **kw: Any) -> np.ndarray:
        if np.size(a) == 0:
            empty_cumsums[0] += 1
            return np.zeros(1)
        return np.cumsum(a, *args, **kw)

    ns.in1d = in1d
    ns.cumsum = cumsum
    return ns


@contextlib.contextmanager
def _cityscapes_shims(mod: types.ModuleType, out_dir: str) -> Iterator[list[int]]:
    """Patch ``evalInstanceLevelSemanticLabeling``'s module globals for one call, then restore them.

    * ``np`` → :func:`_numpy_compat_namespace` (``np.in1d`` removed in NumPy 2.4; empty ``cumsum``).
    * ``writeDict2JSON`` → the library's own writer, called with NumPy scalars converted to Python ones
      (``np.count_nonzero`` returns ``numpy.int64`` and the writer's ``default=lambda o: o.__dict__`` fails on
      it) and with a relative file name (``"matches.json"``, hard-coded in ``evaluateImgLists``) redirected
      into ``out_dir`` instead of the current directory.
    * ``printError`` → raise :class:`_CityscapesError` instead of ``print`` + ``sys.exit(-1)``.

    Yields a one-element list counting the (class, overlap) cells rescued by the empty-``cumsum`` shim.
    """
    from cityscapesscripts.helpers import csHelpers

    original_writer = csHelpers.writeDict2JSON

    def write_dict_to_json(d: Any, file_name: str) -> None:
        path = file_name if os.path.isabs(file_name) else os.path.join(out_dir, file_name)
        original_writer(_jsonable(d), path)

    def print_error(message: Any) -> None:
        raise _CityscapesError(f"cityscapesscripts: {message}")

    empty_cumsums = [0]
    patches = {
        "np": _numpy_compat_namespace(empty_cumsums),
        "writeDict2JSON": write_dict_to_json,
        "printError": print_error,
    }
    with _SHIM_LOCK:
        saved = {name: mod.__dict__[name] for name in patches}
        mod.__dict__.update(patches)
        try:
            yield empty_cumsums
        finally:
            mod.__dict__.update(saved)


def _gt_png_path(gt_fine_dir: str, split: str, file_name: str) -> str:
    """``<gt_fine_dir>/<split>/<city>/<stem>_gtFine_instanceIds.png`` for an image ``file_name``."""
    base = os.path.basename(file_name)
    if not base.endswith(_IMG_SUFFIX):
        raise UsageError(f"image file_name {file_name!r} does not end with '{_IMG_SUFFIX}'; "
                         "expected Cityscapes-as-COCO json from instance_ids_to_coco or mmdet's converter")
    stem = base[: -len(_IMG_SUFFIX)]
    city = os.path.basename(os.path.dirname(file_name)) or stem.split("_")[0]
    return os.path.abspath(os.path.join(gt_fine_dir, split, city, stem + _GT_SUFFIX))


def cityscapes_official_ap(
    gt_fine_dir: str | os.PathLike, gt: dict, results: list[dict], split: str = "val"
) -> dict:
    """Official Cityscapes instance-level AP (cityscapesscripts 2.3.0) of COCO-format segm results.

    Every result's full-resolution mask is written as a binary PNG and every GT image gets a prediction txt
    (``<relative mask png> <labelID> <confidence>``, possibly empty) in a temporary folder; COCO category ids
    are mapped back to Cityscapes label ids by category name. Then
    ``cityscapesscripts.evaluation.evalInstanceLevelSemanticLabeling.evaluateImgLists`` runs on the GT
    ``*_gtFine_instanceIds.png`` of every image of ``gt`` with a private ``CArgs`` (default overlaps
    ``np.arange(0.5, 1., 0.05)``, ``minRegionSizes[0] = 100``, no distance variants, quiet, GT cache, export
    json and ``matches.json`` all inside the temporary folder, which is removed afterwards). NumPy-2.4
    shims are applied to the library module only for this call (see :func:`_cityscapes_shims`).

    The metric (docs/evaluation.md §5.1): per class and overlap θ, a GT instance (id ≥ 1000, ≥ 100 px) is matched by
    the highest-scoring prediction with IoU **>** θ, other such predictions are false positives; unmatched
    predictions are false positives unless more than θ of their pixels lie on void labels, group regions or
    GT instances < 100 px; AP integrates the raw precision/recall steps. A class with GT but no predictions
    has AP 0.0, a class without GT NaN (``None`` here). Empty masks are skipped by the library.

    Parameters
    ----------
    gt_fine_dir
        The ``gtFine`` folder holding ``<split>/<city>/*_gtFine_instanceIds.png``.
    gt
        Cityscapes-as-COCO json (:func:`instance_ids_to_coco`, or mmdet's converter output): its ``images``
        define the evaluated images (``file_name``, ``height``, ``width``), its ``categories`` the id → name map.
    results
        COCO segm results: ``image_id``, ``category_id``, ``segmentation`` (RLE or polygons at full image
        size) and ``score``; ``bbox`` is ignored.
    split
        Sub-folder of ``gt_fine_dir``.

    Returns
    -------
    dict
        Fractions in [0, 1]: ``"AP"`` (``averages.allAp``, nan-mean over classes × 10 overlaps), ``"AP50"``
        (``averages.allAp50%``), ``"per_class"``: ``{name: {"AP", "AP50"}}``, ``"ap_matrix"``:
        ``{name: [AP at each overlap]}`` (``resultApMatrix``), ``"overlaps"``: the 10 thresholds, and
        ``"num_results"``. Undefined values (NaN) are ``None``.

    Raises
    ------
    ValueError
        A result's ``image_id`` is not in ``gt`` (the message names it), its category is unknown or not one of
        the 8 classes, its score is not finite, or its mask size differs from the image.
    FileNotFoundError
        A GT instanceIds PNG for an image of ``gt`` is missing.
    RuntimeError
        cityscapesscripts reported an error (its ``printError``).
    """
    from cityscapesscripts.evaluation import evalInstanceLevelSemanticLabeling as cs_eval

    gt_fine_dir = os.fspath(gt_fine_dir)
    checked = _check_results(gt, results)
    cat_to_label: dict[Any, int] = {}
    for c in gt.get("categories", []):
        if c["name"] in _NAME_TO_LABEL_ID:
            cat_to_label[c["id"]] = _NAME_TO_LABEL_ID[c["name"]]
    for i, r in enumerate(checked):
        if r["category_id"] not in cat_to_label:
            raise UsageError(
                f"result #{i} (image_id {r['image_id']!r}) has category_id {r['category_id']!r}, whose name is "
                f"not one of the evaluated Cityscapes classes {sorted(_NAME_TO_LABEL_ID)}"
            )

    images = list(gt.get("images", []))
    if not images:
        raise UsageError("the GT json has no images; nothing to evaluate")
    gt_paths = [_gt_png_path(gt_fine_dir, split, img["file_name"]) for img in images]
    missing = [p for p in gt_paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} GT instanceIds PNG(s) missing, e.g. {missing[0]}; gt_fine_dir must be the gtFine "
            f"folder the json was converted from (split {split!r})"
        )

    by_image: dict[Any, list[dict]] = {img["id"]: [] for img in images}
    for r in checked:
        by_image[r["image_id"]].append(r)

    with tempfile.TemporaryDirectory(prefix="cityscapes_eval_") as tmp:
        tmp = os.path.abspath(tmp)
        pred_root = os.path.join(tmp, "pred")
        pred_lists = []
        for img, gt_path in zip(images, gt_paths):
            stem = os.path.basename(gt_path)[: -len(_GT_SUFFIX)]
            img_dir = os.path.join(pred_root, stem)
            os.makedirs(os.path.join(img_dir, "masks"), exist_ok=True)
            lines = []
            for k, r in enumerate(by_image[img["id"]]):
                rel = f"masks/{stem}_{k:05d}.png"
                mask = mask_utils.decode({"size": r["segmentation"]["size"],
                                          "counts": r["segmentation"]["counts"].encode("ascii")})
                Image.fromarray((mask > 0).astype(np.uint8) * 255).save(
                    os.path.join(img_dir, rel), compress_level=1)
                lines.append(f"{rel} {cat_to_label[r['category_id']]} {r['score']!r}\n")
            txt = os.path.join(img_dir, f"{stem}_pred.txt")
            with open(txt, "w") as f:
                f.writelines(lines)
            pred_lists.append(txt)

        args = cs_eval.CArgs()
        args.cityscapesPath = tmp
        args.exportFile = os.path.join(tmp, "resultInstanceLevelSemanticLabeling.json")
        args.groundTruthSearch = os.path.join(tmp, "unused")
        args.overlaps = np.arange(0.5, 1.0, 0.05)
        args.minRegionSizes = np.array([100, 1000, 1000])
        args.distanceThs = np.array([float("inf"), 100, 50])
        args.distanceConfs = np.array([-float("inf"), 0.5, 0.5])
        args.gtInstancesFile = os.path.join(tmp, "gtInstances.json")
        args.distanceAvailable = False
        args.JSONOutput = True
        args.quiet = True
        args.csv = False
        args.colorized = False
        args.instLabels = []
        args.predictionPath = pred_root
        args.predictionWalk = None

        stdout = io.StringIO()
        with _cityscapes_shims(cs_eval, tmp) as empty_cumsums, contextlib.redirect_stdout(stdout):
            try:
                res = cs_eval.evaluateImgLists(pred_lists, gt_paths, args)
            except SystemExit as exc:  # any other exit path of the library
                raise RuntimeError(f"cityscapesscripts exited ({exc.code}): {stdout.getvalue()[-2000:]}") from exc
        if empty_cumsums[0]:
            logger.warning(
                "cityscapesscripts: %d (class, overlap) cell(s) have GT and predictions but no counted "
                "prediction (all ignored, no match); their AP is 0.0 (unshimmed, the library raises IndexError)",
                empty_cumsums[0],
            )
        if stdout.getvalue().strip():
            logger.debug("cityscapesscripts output:\n%s", stdout.getvalue())

    avg = res["averages"]
    labels_ = list(res["instLabels"])
    matrix = np.asarray(res["resultApMatrix"], dtype=float)[0]  # [class, overlap] (no distance variants)
    out = {
        "AP": _none_if_nan(avg["allAp"]),
        "AP50": _none_if_nan(avg["allAp50%"]),
        "per_class": {
            name: {"AP": _none_if_nan(avg["classes"][name]["ap"]), "AP50": _none_if_nan(avg["classes"][name]["ap50%"])}
            for name in labels_
        },
        "ap_matrix": {name: [_none_if_nan(v) for v in matrix[k]] for k, name in enumerate(labels_)},
        "overlaps": [float(o) for o in res["overlaps"]],
        "num_results": len(checked),
    }
    logger.info("Cityscapes official AP %s AP50 %s on %d images", out["AP"], out["AP50"], len(images))
    return out


# ---------------------------------------------------------------------------------------------------------
# COCO-style AP on Cityscapes (what RefineMask reports)
# ---------------------------------------------------------------------------------------------------------


def _has_gt(dataset: dict, key: str) -> bool:
    """Whether the area slice of summary ``key`` (AP*, APs/APm/APl) holds a non-crowd GT (COCO inclusive ranges)."""
    lo, hi = {"APs": (0, 32 ** 2), "APm": (32 ** 2, 96 ** 2), "APl": (96 ** 2, 1e10)}.get(key, (0, 1e10))
    if key.startswith("AR") and key[-3:] in ("s100", "m100", "l100"):
        lo, hi = {"s": (0, 32 ** 2), "m": (32 ** 2, 96 ** 2), "l": (96 ** 2, 1e10)}[key[-4]]
    return any(not a.get("iscrowd", 0) and lo <= a["area"] <= hi for a in dataset["annotations"])


def cityscapes_coco_style_ap(gt: dict, results: list[dict]) -> dict:
    """COCO-style mask AP on Cityscapes-as-COCO json: the AP / AP_S / AP_M / AP_L of RefineMask's table.

    :func:`eval.coco.coco_mask_ap` (pycocotools ``COCOeval(iouType='segm')``) with the default parameters
    (IoU thresholds ``linspace(.5, .95, 10)``, 101 recall points, maxDets 100, crowd GT via ``iscrowd``;
    docs/evaluation.md §2, §5.2). Undefined values are ``None`` here (JSON null), where ``coco_mask_ap`` gives NaN.
    Results are passed **without** ``bbox`` so detection
    areas come from the masks (docs/evaluation.md §11 item 1), and with ``linspace`` thresholds AP75 is defined (mmdet's
    ``CityscapesDataset`` uses ``arange`` and prints −1 for it). Neither ``gt`` nor ``results`` is modified.

    Parameters
    ----------
    gt
        Cityscapes-as-COCO json (:func:`instance_ids_to_coco`).
    results
        COCO segm results (``image_id``, ``category_id``, ``segmentation``, ``score``).

    Returns
    -------
    dict
        Fractions: ``"AP"``, ``"AP50"``, ``"AP75"``, ``"APs"``, ``"APm"``, ``"APl"`` (pycocotools ``stats[0:6]``),
        ``"per_class"``: ``{name: AP}``, ``"num_results"`` and ``"no_detections"`` (True for an empty result
        list: then every defined metric is 0.0). Undefined metrics (pycocotools −1, e.g. no GT in an area
        range) are ``None``.

    Raises
    ------
    ValueError
        A result's ``image_id`` / ``category_id`` is not in ``gt``, its score is not finite, or its mask size
        differs from the image.
    """
    from .coco import coco_mask_ap

    checked = _check_results(gt, results)
    dataset = {k: gt[k] for k in ("images", "categories") if k in gt}
    dataset["annotations"] = gt.get("annotations", [])
    if checked:
        r = coco_mask_ap(dataset, checked)
    else:  # an empty result set scores 0 where GT exists, and stays undefined where there is none
        r = coco_mask_ap(dataset, [])
        r = {"summary": {k: (0.0 if _has_gt(dataset, k) else float("nan")) for k in r["summary"]},
             "per_category": {c: (0.0 if any(a["category_id"] == c for a in dataset["annotations"]) else float("nan"))
                              for c in r["per_category"]}}

    def frac(v: float) -> float | None:  # this module's convention: undefined = None (JSON null)
        return None if math.isnan(v) else float(v)

    names = {c["id"]: c["name"] for c in dataset["categories"]}
    out = {k: frac(r["summary"][k]) for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")}
    out.update({"per_class": {names[c]: frac(v) for c, v in r["per_category"].items()},
                "num_results": len(checked), "no_detections": not checked})
    if not checked:
        logger.warning("cityscapes_coco_style_ap: no detections; every defined AP is 0.0")
    return out

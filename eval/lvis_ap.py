"""AP* (COCO results on cocofied LVIS v0.5) and LVIS AP through lvis-api, plus the cocofication itself.

AP* is what RefineMask, PointRend and detectron2 report next to COCO AP: a COCO-trained model's COCO-format
results scored with LVISEval against LVIS v0.5 val reduced to the 80 COCO classes ("cocofied") — LVIS masks
are more accurate than COCO's, so AP* rewards boundary quality (paper Sec. 4.1; docs/evaluation.md §3). LVIS AP is the
same evaluator on an LVIS-trained model's results against a raw LVIS file (docs/evaluation.md §4).

lvis 0.5.3 (the PyPI release) still calls ``np.float``, removed in NumPy 1.24: :func:`lvis_numpy_shim`
restores the alias only while lvis-api runs (we shim, we do not fork).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os

import numpy as np

from .engines import DEFAULT_ENGINE, check_engine, vernier_lvis
from .io import EvalInputError, load_json, write_json

log = logging.getLogger(__name__)

#: LVISEval.get_results() keys kept in metrics.json (``ap_star`` and ``lvis`` groups)
LVIS_AP_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf")
LVIS_ALL_KEYS = LVIS_AP_KEYS + ("AR@300", "ARs@300", "ARm@300", "ARl@300")


@contextlib.contextmanager
def lvis_numpy_shim():
    """Temporarily alias ``np.float`` to ``float`` for lvis 0.5.3 (its eval.py line 361) on NumPy >= 1.24."""
    had = "float" in np.__dict__
    if not had:
        np.float = float  # type: ignore[attr-defined]
    try:
        yield
    finally:
        if not had:
            del np.float  # type: ignore[attr-defined]


def _lvis_from_dict(ds: dict):
    """An ``lvis.LVIS`` object from an in-memory dict (LVIS.__init__ only accepts a path)."""
    from lvis import LVIS

    obj = LVIS.__new__(LVIS)
    obj.logger = logging.getLogger("lvis")
    obj.dataset = ds
    obj._create_index()
    return obj


def lvis_ap(lvis_gt: dict, results: list[dict], max_dets: int = 300, engine: str = DEFAULT_ENGINE,
            num_threads: int | None = None) -> dict:
    """LVIS-style AP as lvis-api ``LVISResults`` + ``LVISEval(iou_type='segm')`` computes it.

    Used for AP* (``lvis_gt`` = cocofied LVIS v0.5 val, ``results`` = a COCO model's results) and for plain
    LVIS AP (raw LVIS file, LVIS-trained results). The federated rules apply: detections of classes neither
    annotated nor in an image's ``neg_category_ids`` are dropped; unmatched detections of its
    ``not_exhaustive_category_ids`` are ignored; at most ``max_dets`` per image are kept *before* that.

    Args:
        lvis_gt: a validated LVIS-format dict (:func:`eval.io.validate_gt` with ``expect="lvis"``).
        results: validated results (:func:`eval.io.validate_results`).
        max_dets: detections kept per image (300 is the official value).
        engine: ``"vernier"`` (strict parity, :mod:`eval.engines`) or ``"reference"`` (lvis-api itself).
        num_threads: vernier's threads (default: the usable CPUs).

    Returns:
        ``{"summary": {AP, AP50, AP75, APs, APm, APl, APr, APc, APf, AR@300, ARs@300, ARm@300, ARl@300},
        "per_category": {category_id: AP}}`` as fractions; NaN where lvis-api says -1 (e.g. APr when no
        category is rare). An empty results list gives zeros (lvis-api would raise on ``result_anns[0]``).

    Source: lvis-api 0.5.3 ``lvis/eval.py``, ``lvis/results.py``; docs/evaluation.md §3, §4.
    """
    cat_ids = sorted(c["id"] for c in lvis_gt["categories"])
    if not results:
        return {"summary": {k: 0.0 for k in LVIS_ALL_KEYS}, "per_category": {c: 0.0 for c in cat_ids}}
    if check_engine(engine) == "vernier":
        stats, precision, cats = vernier_lvis(lvis_gt, results, max_dets, num_threads=num_threads)
        return _lvis_summary(dict(zip(LVIS_ALL_KEYS, stats)), precision, cats)
    from lvis import LVISEval, LVISResults

    logging.getLogger("lvis.results").setLevel(logging.ERROR)  # "Assuming user provided the results in correct format."
    with lvis_numpy_shim():
        gt = _lvis_from_dict(lvis_gt)
        dt = LVISResults(gt, [dict(r) for r in results], max_dets=max_dets)
        ev = LVISEval(gt, dt, iou_type="segm")
        ev.run()
        res = ev.get_results()
        precision = ev.eval["precision"]  # [T, R, K, A]
    return _lvis_summary(res, precision, ev.params.cat_ids)


def _lvis_summary(res: dict, precision: np.ndarray, cat_ids) -> dict:
    """metrics of :func:`lvis_ap` from LVISEval's results dict and ``precision`` [T, R, K, A]."""
    summary = {k: (float("nan") if res[k] == -1 else float(res[k])) for k in LVIS_ALL_KEYS}
    per_cat = {}
    for k, c in enumerate(cat_ids):
        p = precision[:, :, k, 0]
        p = p[p > -1]
        per_cat[int(c)] = float(np.mean(p)) if p.size else float("nan")
    return {"summary": summary, "per_category": per_cat}


def is_cocofied(lvis_gt: dict) -> bool:
    """True if an LVIS-format file uses COCO category ids (<= 80 categories, ids in 1..90): a cocofied file."""
    cats = lvis_gt.get("categories", [])
    return 0 < len(cats) <= 80 and all(1 <= c["id"] <= 90 for c in cats)


def cocofy_lvis(lvis_ds: dict, coco_to_synset: dict) -> dict:
    """Reduce an LVIS v0.5 file to the COCO classes: the AP* ground truth.

    Follows detectron2 ``datasets/prepare_cocofied_lvis.py`` / RefineMask ``tools/cocofied_lvis.py``:
    1. synset -> COCO id from the official ``coco_to_synset.json`` (80 pairs);
    2. annotations whose LVIS category synset is mapped are kept in file order, ``category_id`` rewritten to
       the COCO id and ``id`` renumbered 1..N;
    3. each image's ``neg_category_ids`` / ``not_exhaustive_category_ids`` are mapped likewise (unmapped
       entries dropped, order kept);
    4. a category is kept (LVIS record, ``id`` := COCO id, LVIS order) if its COCO id occurs in an annotation
       or in one of those per-image lists;
    5. every image is kept; a ``COCO_val2014_`` prefix is stripped from ``file_name``.

    Args:
        lvis_ds: a parsed LVIS v0.5 annotation file.
        coco_to_synset: the parsed ``coco_to_synset.json`` (``{name: {coco_cat_id, synset, ...}}``).

    Returns:
        The cocofied dataset dict (a new object; the input is not modified).
    """
    synset_to_coco = {v["synset"]: v["coco_cat_id"] for v in coco_to_synset.values()}
    lvis_to_coco = {c["id"]: synset_to_coco[c["synset"]] for c in lvis_ds["categories"]
                    if c["synset"] in synset_to_coco}
    anns = []
    for a in lvis_ds["annotations"]:
        if a["category_id"] in lvis_to_coco:
            b = copy.deepcopy(a)
            b["category_id"] = lvis_to_coco[a["category_id"]]
            b["id"] = len(anns) + 1
            anns.append(b)
    used = {a["category_id"] for a in anns}
    images = []
    for im in lvis_ds["images"]:
        j = copy.deepcopy(im)
        for key in ("neg_category_ids", "not_exhaustive_category_ids"):
            j[key] = [lvis_to_coco[c] for c in im.get(key, []) if c in lvis_to_coco]
            used.update(j[key])
        if j.get("file_name", "").startswith("COCO_val2014_"):
            j["file_name"] = j["file_name"][len("COCO_val2014_"):]
        images.append(j)
    cats = []
    for c in lvis_ds["categories"]:
        if c["id"] in lvis_to_coco and lvis_to_coco[c["id"]] in used:
            d = copy.deepcopy(c)
            d["id"] = lvis_to_coco[c["id"]]
            cats.append(d)
    out = {k: v for k, v in lvis_ds.items() if k not in ("images", "annotations", "categories")}
    out.update(images=images, annotations=anns, categories=cats)
    return out


def cocofy_lvis_file(lvis_path: str | os.PathLike, out_path: str | os.PathLike,
                     mapping_path: str | os.PathLike) -> dict:
    """``rmbench cocofy-lvis``: read ``lvis_v0.5_val.json``, write the cocofied file atomically, return a summary."""
    ds = load_json(lvis_path, "LVIS annotation")
    cats = ds.get("categories") if isinstance(ds, dict) else None
    if not cats or not isinstance(cats, list) or "synset" not in cats[0]:
        raise EvalInputError(lvis_path, "not an LVIS annotation file (categories need a 'synset')",
                             "pass the official lvis_v0.5_val.json")
    mapping = load_json(mapping_path, "COCO->LVIS mapping")
    out = cocofy_lvis(ds, mapping)
    write_json(out_path, out)
    return {"images": len(out["images"]), "annotations": len(out["annotations"]), "categories": len(out["categories"])}



"""Constructed COCO sets that hit the scoring paths where a reimplementation usually slips (seeded, small).

Used by tests/test_eval_engines.py and by tools/make_golden_constructed.py, which stored seed 0 with the
boundary-iou-api numbers in data/golden/constructed_B.json.
"""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils

CATS = [1, 3, 7, 12, 90]  # non-contiguous; 90 gets no GT


def _blob(rng, h, w) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    cy, cx = rng.integers(0, h), rng.integers(0, w)
    ry, rx = rng.integers(1, max(2, h // 2)), rng.integers(1, max(2, w // 2))
    yy, xx = np.ogrid[:h, :w]
    m[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = 1
    if not m.any():
        m[cy, cx] = 1
    return m


def _polygon(rng, h, w) -> list[list[float]]:
    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    r = rng.uniform(2, max(3, min(h, w) / 2))
    ang = np.sort(rng.uniform(0, 2 * np.pi, size=int(rng.integers(3, 9))))
    pts = np.stack([np.clip(cx + r * np.cos(ang), 0, w), np.clip(cy + r * np.sin(ang), 0, h)], 1)
    return [pts.reshape(-1).round(2).tolist()]


def _uncompressed(m: np.ndarray) -> dict:
    flat = np.asfortranarray(m).reshape(-1, order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0] == 1:
        counts = [0] + counts
    return {"size": list(m.shape), "counts": counts}


def _compressed(m: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(m))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def _shift(m: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(m)
    h, w = m.shape
    ys, xs = slice(max(dy, 0), h + min(dy, 0)), slice(max(dx, 0), w + min(dx, 0))
    yd, xd = slice(max(-dy, 0), h + min(-dy, 0)), slice(max(-dx, 0), w + min(-dx, 0))
    out[ys, xs] = m[yd, xd]
    return out


def constructed_set(seed: int) -> tuple[dict, list[dict]]:
    """A small COCO GT + raw results (before validation) that exercise every scoring path, seeded."""
    rng = np.random.default_rng(seed)
    sizes = [(60, 80), (120, 110), (1, 50), (200, 160), (40, 40), (90, 130), (30, 70), (150, 150)]
    images = [{"id": 10 + 7 * i, "height": h, "width": w, "file_name": f"{i}.jpg"} for i, (h, w) in enumerate(sizes)]
    anns, results = [], []
    for im in images:
        h, w = im["height"], im["width"]
        if im["id"] == 10 + 7 * 4:  # an image with detections but no GT
            n_gt = 0
        else:
            n_gt = int(rng.integers(1, 7))
        gts = []
        for _ in range(n_gt):
            cat = int(rng.choice(CATS[:-1]))
            kind = rng.choice(["poly", "rle", "crowd"], p=[0.4, 0.45, 0.15])
            if kind == "poly" and h > 2:
                seg = _polygon(rng, h, w)
                m = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(seg, h, w)))
            else:
                m = _blob(rng, h, w)
                seg = _uncompressed(m) if kind == "crowd" else _compressed(m)
            area = float(m.sum())
            if rng.random() < 0.15:  # the GT area field, not the mask, decides the area range
                area = float(rng.choice([20.0, 1500.0, 12000.0]))
            a = {"id": len(anns) + 1, "image_id": im["id"], "category_id": cat, "segmentation": seg, "area": area,
                 "iscrowd": int(kind == "crowd"), "bbox": mask_utils.toBbox(mask_utils.encode(
                     np.asfortranarray(m))).tolist()}
            anns.append(a)
            gts.append((cat, m))
        # detections: perturbed copies of the GTs (some at the same score), random blobs, wrong classes
        for cat, m in gts:
            for _ in range(int(rng.integers(1, 4))):
                p = _shift(m, int(rng.integers(-3, 4)), int(rng.integers(-3, 4)))
                if not p.any():
                    p = m
                results.append({"image_id": im["id"], "category_id": cat if rng.random() > 0.1 else int(
                    rng.choice(CATS)), "segmentation": p, "score": round(float(rng.uniform(0, 1)), 1)})
        for _ in range(int(rng.integers(0, 5))):
            results.append({"image_id": im["id"], "category_id": int(rng.choice(CATS)),
                            "segmentation": _blob(rng, h, w), "score": round(float(rng.uniform(0, 1)), 1)})
    big = images[3]  # > 100 detections of one (image, class): maxDets cuts, with ties at the cut
    for _ in range(130):
        results.append({"image_id": big["id"], "category_id": 3, "segmentation": _blob(rng, big["height"],
                        big["width"]), "score": round(float(rng.uniform(0, 1)), 1)})
    # masks as compressed / uncompressed RLE or polygons, as result files carry them
    for r in results:
        m = r["segmentation"]
        form = rng.choice(["rle", "raw", "poly"], p=[0.6, 0.2, 0.2])
        if form == "raw":
            r["segmentation"] = _uncompressed(m)
        elif form == "poly" and m.shape[0] > 2:
            r["segmentation"] = _polygon(rng, *m.shape)
        else:
            r["segmentation"] = _compressed(m)
    cats = [{"id": c, "name": f"c{c}", "supercategory": "x"} for c in CATS]
    return {"images": images, "annotations": anns, "categories": cats}, results



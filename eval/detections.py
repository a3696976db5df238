"""Validated detections held as columns: what the evaluator keeps between ``process()`` and ``evaluate()``.

A COCO results list of N detections costs about 1 KB of Python objects per detection as parsed json (a dict, a
nested ``segmentation`` dict, a ``size`` list, the counts string); the LVIS-sized input (300 detections on each of
20k images) would hold gigabytes. :class:`Detections` keeps the same information as NumPy columns and one ``bytes``
counts string per detection, plus each mask's pycocotools box and area computed while validating
(:func:`eval.io.check_rles`), and still reads as the list of normalised dicts that
:func:`eval.io.validate_results` returns (``len``, indexing, iteration), so every consumer of a results list works
on it unchanged; the engines read the columns directly (:mod:`eval.engines`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .bulk import gc_paused


@dataclass(eq=False)
class Detections(Sequence):
    """N validated detections, compressed RLE at image size.

    Attributes:
        image_id, category_id: int64 (N,). score: float64 (N,), in [0, 1].
        height, width: int64 (N,), the image size in pixels (= the RLE ``size``).
        counts: N compressed RLE counts strings as ``bytes`` (pycocotools' form).
        mask_box: float64 (N, 4), ``pycocotools.mask.toBbox`` of each mask, [x, y, w, h] in pixels.
        mask_area: float64 (N,), ``pycocotools.mask.area`` of each mask, in pixels.
        bbox: float64 (N, 4) boxes given in the results (kept with ``--keep-bbox`` only), else None.

    Item ``i`` is the normalised dict of :func:`eval.io.validate_results`: ``{"image_id", "category_id", "score",
    "segmentation": {"size": [h, w], "counts": str}}`` and ``"bbox"`` (a list) when boxes are kept.
    """

    image_id: np.ndarray
    category_id: np.ndarray
    score: np.ndarray
    height: np.ndarray
    width: np.ndarray
    counts: list[bytes]
    mask_box: np.ndarray
    mask_area: np.ndarray
    bbox: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.counts)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        i = range(len(self))[i]  # negative indices, IndexError
        d = {"image_id": int(self.image_id[i]), "category_id": int(self.category_id[i]), "score": float(self.score[i]),
             "segmentation": {"size": [int(self.height[i]), int(self.width[i])],
                              "counts": self.counts[i].decode("ascii")}}
        if self.bbox is not None:
            d["bbox"] = self.bbox[i].tolist()
        return d

    def __iter__(self) -> Iterator[dict]:
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return f"Detections({len(self)} detections{', boxes kept' if self.bbox is not None else ''})"

    def rle(self, i: int) -> dict:
        """Detection ``i``'s mask as pycocotools takes it: ``{"size": [h, w], "counts": bytes}``."""
        return {"size": [int(self.height[i]), int(self.width[i])], "counts": self.counts[i]}

    @classmethod
    def empty(cls, keep_bbox: bool = False) -> Detections:
        """No detections."""
        z = np.zeros(0, dtype=np.int64)
        return cls(z, z.copy(), np.zeros(0), z.copy(), z.copy(), [], np.zeros((0, 4)), np.zeros(0),
                   np.zeros((0, 4)) if keep_bbox else None)

    @classmethod
    def from_records(cls, records: list[dict]) -> Detections:
        """Columns of the normalised list :func:`eval.io.validate_results` returns (validated: compressed RLE
        with ``str`` or ``bytes`` counts at image size; ``bbox`` on every record or on none).

        Raises:
            ValueError: ``bbox`` on some records only (validate_results never returns that).
        """
        from .masks import check_rles

        n = len(records)
        if n == 0:
            return cls.empty()
        counts = [r["segmentation"]["counts"] for r in records]
        counts = [c.encode("ascii") if isinstance(c, str) else bytes(c) for c in counts]
        size = np.array([r["segmentation"]["size"] for r in records], dtype=np.int64).reshape(n, 2)
        with_box = sum("bbox" in r for r in records)
        if with_box not in (0, n):
            raise ValueError(f"bbox on {with_box} of {n} records: give it on every record or on none")
        bbox = np.array([r["bbox"] for r in records], dtype=np.float64).reshape(n, 4) if with_box else None
        height, width = np.ascontiguousarray(size[:, 0]), np.ascontiguousarray(size[:, 1])
        bad, boxes, areas = check_rles(counts, height, width)
        if bad.any():
            raise ValueError(f"record {int(np.argmax(bad))} has a corrupt compressed RLE (validate first)")
        return cls(np.fromiter((r["image_id"] for r in records), np.int64, n),
                   np.fromiter((r["category_id"] for r in records), np.int64, n),
                   np.fromiter((r["score"] for r in records), np.float64, n), height, width, counts, boxes, areas, bbox)

    @classmethod
    def concat(cls, parts: Sequence[Detections]) -> Detections:
        """The detections of ``parts`` one after the other (all with kept boxes, or none).

        Raises:
            ValueError: some parts keep boxes and others do not.
        """
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        if len(parts) == 1:
            return parts[0]
        kept = {p.bbox is not None for p in parts}
        if len(kept) > 1:
            raise ValueError("cannot concatenate detections with and without kept boxes")
        cat = np.concatenate
        return cls(cat([p.image_id for p in parts]), cat([p.category_id for p in parts]),
                   cat([p.score for p in parts]), cat([p.height for p in parts]), cat([p.width for p in parts]),
                   [c for p in parts for c in p.counts], cat([p.mask_box for p in parts]),
                   cat([p.mask_area for p in parts]), cat([p.bbox for p in parts]) if kept == {True} else None)

    def image_batches(self) -> list[dict[str, Any]]:
        """One vernier ``Detections`` batch per image (``image_id``, ``boxes`` (n, 4) float64, ``scores``,
        ``labels`` int64, ``rles``), images in id order, each image's detections in list order
        (the order pycocotools' stable sorts see). ``boxes`` are the kept boxes, else the masks' toBbox boxes."""
        if not len(self):
            return []
        order = np.argsort(self.image_id, kind="stable")
        ids = self.image_id[order]
        starts = np.flatnonzero(np.concatenate(([True], ids[1:] != ids[:-1])))
        boxes = self.bbox if self.bbox is not None else self.mask_box
        out = []
        with gc_paused():  # one dict per detection, no cycles: a GC pass would only walk them
            for idx in np.split(order, starts[1:]):
                h, w = int(self.height[idx[0]]), int(self.width[idx[0]])
                out.append({"image_id": int(self.image_id[idx[0]]), "boxes": np.ascontiguousarray(boxes[idx]),
                            "scores": np.ascontiguousarray(self.score[idx]),
                            "labels": np.ascontiguousarray(self.category_id[idx]),
                            "rles": [{"counts": self.counts[i], "size": (h, w)} for i in idx.tolist()]})
        return out

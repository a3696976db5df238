"""Instance-segmentation datasets from COCO-format json files: COCO, LVIS (v0.5 / v1) and Cityscapes-as-COCO.

One class, :class:`InstanceDataset`, reads the json once (polygon, uncompressed-RLE and compressed-RLE masks)
and yields ``(image, target)`` pairs that :class:`~refinemask.detection.TwoStageDetector` consumes directly:

* ``image``: (3, H, W) ``uint8`` RGB tensor at the ORIGINAL resolution, in [0, 255]. Resize (keep-ratio to fit
  1333×800, or the preset's multi-scale range), normalisation and padding to a multiple of 32 happen inside the
  model's :class:`~refinemask.detection.DetectionTransform` — they are not duplicated here.
* ``target`` (training): ``boxes`` (G, 4) float32 x1, y1, x2, y2 in pixels (mmdet 2.x: ``x2 = x + w``),
  ``labels`` (G,) int64 contiguous in 0..C−1, ``masks`` (G, H, W) uint8 in {0, 1}; plus ``image_id`` (int),
  ``orig_size`` (H, W) and ``flipped`` (bool); optionally ``crowd_masks`` and ``semantic_seg`` (HTC's
  semantic branch). Crowd instances (``iscrowd=1``) are excluded, as are boxes with width or height < 1 px
  or zero area (mmdet ``CocoDataset._parse_ann_info``).
* ``target`` (inference, ``with_masks=False``): only ``image_id``, ``orig_size`` and ``flipped``; no mask is
  decoded.

Horizontal flip is the only augmentation done here (mmdet ``RandomFlip``): image, boxes
(``x1' = W − x2``, ``x2' = W − x1``) and masks are mirrored together. Whether an image is flipped is decided by
the sampler (:mod:`refinemask.data.samplers`), which passes ``(index, flip)`` keys: the decision is then a pure
function of (seed, epoch, position), independent of data-loader workers, and a resumed run sees exactly the
same flips as an uninterrupted one.

Category ids (COCO's non-contiguous 1..90, LVIS 1..1203, Cityscapes 24..33) are mapped to contiguous labels
``0..C−1`` in ascending id order (mmdet ``cat2label``); :attr:`InstanceDataset.label_to_cat_id` maps back for
COCO-format results.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from torch import Tensor
from torch.utils.data import Dataset

from eval.errors import InputError

log = logging.getLogger(__name__)

__all__ = ["DatasetError", "InstanceDataset", "DataPaths", "resolve_data_paths", "collate", "write_subset_json"]

#: standard layouts per ``Preset.dataset`` and split: candidate (annotation json, image folder) pairs relative to
#: ``--data-root``, tried in order. The root may be the dataset's own folder (``coco/``) or a data folder that holds
#: it (``data/`` with ``coco/`` or the bundled ``coco_mini/``, ``lvis/``, ``cityscapes/``).
STANDARD_LAYOUTS: dict[str, dict[str, list[tuple[str, str]]]] = {
    "coco_2017": {
        s: [(f"{d}annotations/instances_{s}2017.json", f"{d}{s}2017") for d in ("", "coco/", "coco_mini/")]
        for s in ("train", "val")
    },
    # LVIS v1 images are COCO 2017 images named by ``coco_url`` (<split>/<name>): the image folder is the COCO root
    # holding train2017/ and val2017/ (detectron2's layout: datasets/lvis/*.json + datasets/coco/).
    "lvis_v1": {
        s: [(f"lvis/lvis_v1_{s}.json", "coco"), (f"annotations/lvis_v1_{s}.json", "."), (f"lvis_v1_{s}.json", ".")]
        for s in ("train", "val")
    },
    # mmdet tools/convert_datasets/cityscapes.py output; file names are <city>/<name>_leftImg8bit.png
    "cityscapes": {
        s: [(f"{d}annotations/instancesonly_filtered_gtFine_{s}.json", f"{d}leftImg8bit/{s}")
            for d in ("", "cityscapes/")]
        for s in ("train", "val")
    },
}


class DatasetError(InputError):
    """A dataset file or folder problem; the message names the file, the record and the fix."""


def _fail(path, problem: str, fix: str, record: str | None = None) -> DatasetError:
    where = f"{path}" + (f", {record}" if record else "")
    return DatasetError(f"{where}: {problem}. Fix: {fix}")


@dataclass(frozen=True)
class DataPaths:
    """Annotation json and image folder of one split (absolute or relative paths)."""

    json: Path
    images: Path


def resolve_data_paths(
    dataset: str,
    split: str,
    data_root: str | os.PathLike | None = None,
    json_path: str | os.PathLike | None = None,
    images: str | os.PathLike | None = None,
    *,
    required: bool = True,
) -> DataPaths | None:
    """Paths of ``split`` ("train"/"val"): explicit ``json_path``/``images`` win over ``data_root``'s layout.

    Returns None when neither a data root nor an explicit json is given (e.g. no validation set), or, with
    ``required=False``, when only ``data_root`` is given and it holds no such split.

    Raises:
        DatasetError: only one of the explicit pair given without a data root, or a dataset without a known
            layout, or the resolved json / folder does not exist.
    """
    if json_path is None and images is None and data_root is None:
        return None
    layouts = STANDARD_LAYOUTS.get(dataset, {}).get(split, [])
    root = Path(data_root) if data_root is not None else None
    if json_path is None or images is None:
        if root is None:
            raise DatasetError(
                f"{split} split: give both --{split}-json and --{split}-images "
                f"(or --data-root with the standard layout)")
        if not layouts:
            raise DatasetError(f"{split} split: no standard layout known for dataset {dataset!r}; "
                               f"give --{split}-json and --{split}-images explicitly")
    found = [lay for lay in layouts if root is not None and (root / lay[0]).is_file()]
    if not found and not required and json_path is None and images is None:
        log.warning("no %s split under %s (looked for %s): continuing without it", split, root,
                    ", ".join(lay[0] for lay in layouts))
        return None
    layout = (found or layouts or [None])[0]
    j = Path(json_path) if json_path is not None else root / layout[0]
    im = Path(images) if images is not None else root / layout[1]
    if not j.is_file():
        hint = (f" (looked under --data-root {root} for: {', '.join(lay[0] for lay in layouts)})"
                if json_path is None else "")
        raise DatasetError(f"{split} annotation file not found: {j}{hint}. Fix: check the path, or pass --{split}-json")
    if not im.is_dir():
        raise DatasetError(f"{split} image folder not found: {im}. Fix: check the path, or pass --{split}-images")
    return DataPaths(j, im)


def _load_json(path: Path) -> dict:
    if not path.is_file():
        raise _fail(path, "annotation file does not exist", "check the path")
    try:
        with open(path, "rb") as f:
            ds = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _fail(path, f"annotation file is not valid json ({e})", "re-export or re-download it") from e
    if not isinstance(ds, dict) or not all(k in ds for k in ("images", "annotations", "categories")):
        raise _fail(path, "not a COCO/LVIS instances file (needs 'images', 'annotations', 'categories')",
                    "pass an instances json (e.g. annotations/instances_train2017.json)")
    return ds


class InstanceDataset(Dataset):
    """COCO-format instance segmentation dataset (COCO, LVIS, Cityscapes-as-COCO).

    Args:
        json_path: annotation file (COCO ``instances_*.json``, LVIS ``lvis_v1_*.json`` / v0.5, or the
            Cityscapes-as-COCO json).
        image_root: folder with the images. A record's file is looked up as ``image_root/file_name``, then (LVIS,
            whose files are named by ``coco_url``) ``image_root/<split>/<name>`` and ``image_root/<name>``.
        with_masks: decode annotations into targets (training / visualisation). False for inference: targets hold
            only ``image_id``, ``orig_size`` and ``flipped``.
        filter_empty: drop images without any usable (non-crowd, non-degenerate) instance (mmdet
            ``filter_empty_gt=True`` in training) and images smaller than ``min_size`` on either side.
        min_size: minimum image side in pixels for ``filter_empty`` (mmdet: 32).
        image_ids: keep only these image ids, in the json's order (e.g. the overfit recipe's two images).
        categories: the category ids that define the label space, ascending (default: all of the json's).
            Pass the training set's list when evaluating on another split so labels agree.
        semantic_root: folder of per-image semantic label maps named ``<image stem>.png`` (COCO-stuff
            ``stuffthingmaps`` layout, HTC's semantic branch): adds ``semantic_seg`` (H, W) uint8 to training
            targets, flipped with the image.
        with_crowd_masks: add ``crowd_masks`` (K, H, W) uint8 of the crowd instances to training targets (HTC's
            thing-semantic labels ignore crowd regions); they never become instance targets.

    Attributes:
        images: the kept image records (json order). cat_ids: category ids, ascending (label i ↔ cat_ids[i]).
        cat_id_to_label / label_to_cat_id: the two mappings. class_names: names in label order.
        is_lvis: the file is LVIS-format (images carry ``neg_category_ids``).

    Raises:
        DatasetError: unreadable or malformed json, unknown image ids, missing image files (checked lazily, when
            an image is read), image size differing from the json's width/height.
    """

    def __init__(
        self,
        json_path: str | os.PathLike,
        image_root: str | os.PathLike,
        *,
        with_masks: bool = True,
        filter_empty: bool = False,
        min_size: int = 32,
        image_ids: Sequence[int] | None = None,
        categories: Sequence[int] | None = None,
        semantic_root: str | os.PathLike | None = None,
        with_crowd_masks: bool = False,
    ) -> None:
        self.json_path = Path(json_path)
        self.image_root = Path(image_root)
        if not self.image_root.is_dir():
            raise DatasetError(f"image folder not found: {self.image_root}. Fix: check --images / --data-root")
        ds = _load_json(self.json_path)
        self.with_masks = with_masks
        self.semantic_root = Path(semantic_root) if semantic_root is not None else None
        if self.semantic_root is not None and not self.semantic_root.is_dir():
            raise DatasetError(f"semantic label folder not found: {self.semantic_root}. Fix: point it at the "
                               f"stuffthingmaps folder of the split (e.g. stuffthingmaps_trainval2017/train2017)")
        self.with_crowd_masks = with_crowd_masks
        self.is_lvis = bool(ds["images"]) and "neg_category_ids" in ds["images"][0]
        cats = sorted(ds["categories"], key=lambda c: c["id"])
        names = {c["id"]: c.get("name", str(c["id"])) for c in cats}
        self.cat_ids: list[int] = sorted(categories) if categories is not None else [c["id"] for c in cats]
        self.cat_id_to_label = {c: i for i, c in enumerate(self.cat_ids)}
        self.label_to_cat_id = list(self.cat_ids)
        self.class_names = [names.get(c, str(c)) for c in self.cat_ids]

        anns_by_image: dict[Any, list[dict]] = {}
        for i, a in enumerate(ds["annotations"]):
            if not isinstance(a, dict) or "image_id" not in a:
                raise _fail(self.json_path, "annotation lacks 'image_id'", "fix the record", f"annotations[{i}]")
            anns_by_image.setdefault(a["image_id"], []).append(a)
        records = ds["images"]
        by_id = {im["id"]: im for im in records}
        if image_ids is not None:
            missing = [i for i in image_ids if i not in by_id]
            if missing:
                raise _fail(self.json_path, f"image ids {missing[:10]} are not in the file", "pick ids from 'images'")
            wanted = set(image_ids)
            records = [im for im in records if im["id"] in wanted]
        self._anns = anns_by_image
        #: image records of the file (after an ``image_ids`` selection, before ``filter_empty``): the training set's
        #: size as the paper's protocol counts it (COCO train2017: 118,287)
        self.num_source_images = len(records)
        kept = []
        for im in records:
            if filter_empty:
                if min(im["width"], im["height"]) < min_size or not self._usable(anns_by_image.get(im["id"], [])):
                    continue
            kept.append(im)
        if filter_empty and len(kept) < len(records):
            log.info("%s: %d of %d images kept (images without usable instances or smaller than %d px dropped)",
                     self.json_path.name, len(kept), len(records), min_size)
        if not kept:
            raise _fail(self.json_path, "no usable images" + (" with non-crowd instances" if filter_empty else ""),
                        "check the file and the --image-ids selection")
        self.images: list[dict] = kept

    # -- annotations ---------------------------------------------------------------------------------
    def _usable(self, anns: list[dict]) -> list[dict]:
        """Non-crowd annotations of known categories with a box of positive area (mmdet ``_parse_ann_info``)."""
        out = []
        for a in anns:
            if a.get("iscrowd", 0) or a.get("ignore", 0):
                continue
            if a.get("category_id") not in self.cat_id_to_label:
                continue
            x, y, w, h = a["bbox"]
            if w < 1 or h < 1 or a.get("area", w * h) <= 0:
                continue
            out.append(a)
        return out

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return len(self.cat_ids)

    @property
    def image_ids(self) -> list[int]:
        return [im["id"] for im in self.images]

    def aspect_ratio_flags(self) -> np.ndarray:
        """(N,) int64: 1 where width / height > 1 (landscape), else 0 — mmdet ``CustomDataset._set_group_flag``."""
        return np.array([1 if im["width"] / im["height"] > 1 else 0 for im in self.images], dtype=np.int64)

    def non_crowd_annotations(self, index: int) -> list[dict]:
        """Every annotation of image ``index`` with ``iscrowd`` 0 (and no ``ignore`` flag), in file order, whatever
        its category or size: the instances a GT-box oracle predicts masks for (``rmbench infer --gt-boxes``)."""
        anns = self._anns.get(self.images[index]["id"], [])
        return [a for a in anns if not a.get("iscrowd", 0) and not a.get("ignore", 0)]

    def image_categories(self, index: int) -> set[int]:
        """Contiguous labels present in image ``index`` (non-crowd), for class-balanced repeat factors."""
        anns = self._usable(self._anns.get(self.images[index]["id"], []))
        return {self.cat_id_to_label[a["category_id"]] for a in anns}

    def image_path(self, index: int) -> Path:
        """The image file of record ``index``. Raises DatasetError naming the candidates tried."""
        im = self.images[index]
        cands: list[Path] = []
        if im.get("file_name"):
            cands.append(self.image_root / im["file_name"])
        url = im.get("coco_url") or im.get("url")
        if url:  # LVIS: http://images.cocodataset.org/<split>/<name>
            parts = url.rstrip("/").split("/")
            cands += [self.image_root / parts[-2] / parts[-1], self.image_root / parts[-1]]
        for c in cands:
            if c.is_file():
                return c
        tried = ", ".join(map(str, cands)) or "nothing: the record has no file_name or coco_url"
        raise _fail(self.json_path, f"image file of image id {im['id']} not found (tried {tried})",
                    "point --images / --data-root at the folder that holds the images", f"image id {im['id']}")

    def load_image(self, index: int) -> Tensor:
        """(3, H, W) uint8 RGB tensor of record ``index``, checked against the json's height/width."""
        path = self.image_path(index)
        try:
            with Image.open(path) as pil:
                arr = np.asarray(pil.convert("RGB"))
        except OSError as e:
            raise _fail(path, f"cannot decode image ({e})", "re-download the file") from e
        im = self.images[index]
        if arr.shape[:2] != (im["height"], im["width"]):
            raise _fail(path, f"image is {arr.shape[1]}x{arr.shape[0]} (WxH) but the json says "
                        f"{im['width']}x{im['height']}", "use the images the annotation file was made for",
                        f"image id {im['id']}")
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()

    def _decode_mask(self, ann: dict, h: int, w: int) -> np.ndarray:
        segm = ann.get("segmentation")
        if isinstance(segm, list):
            if not segm:
                raise _fail(self.json_path, "annotation has an empty polygon list", "drop it",
                            f"annotation id {ann.get('id')}")
            rle = mask_utils.merge(mask_utils.frPyObjects(segm, h, w))
        elif isinstance(segm, dict) and isinstance(segm.get("counts"), list):
            rle = mask_utils.frPyObjects(segm, h, w)
        elif isinstance(segm, dict) and isinstance(segm.get("counts"), (str, bytes)):
            rle = dict(segm)
            if isinstance(rle["counts"], str):
                rle["counts"] = rle["counts"].encode("ascii")
            if list(rle.get("size", [])) != [h, w]:
                raise _fail(self.json_path, f"RLE size {rle.get('size')} differs from the image size [{h}, {w}]",
                            "re-encode the mask at the image resolution", f"annotation id {ann.get('id')}")
        else:
            raise _fail(self.json_path, "annotation has no polygon or RLE 'segmentation'",
                        "use an instances file with masks", f"annotation id {ann.get('id')}")
        return mask_utils.decode(rle)

    def load_target(self, index: int) -> dict[str, Tensor]:
        """Training target of record ``index`` at the original resolution (see the module docstring)."""
        im = self.images[index]
        h, w = im["height"], im["width"]
        anns = self._usable(self._anns.get(im["id"], []))
        boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                              for a in anns], dtype=torch.float32).reshape(-1, 4)
        labels = torch.tensor([self.cat_id_to_label[a["category_id"]] for a in anns], dtype=torch.int64)
        if anns:
            masks = torch.from_numpy(np.stack([self._decode_mask(a, h, w) for a in anns]))
        else:
            masks = torch.zeros((0, h, w), dtype=torch.uint8)
        target = {"boxes": boxes, "labels": labels, "masks": masks}
        if self.with_crowd_masks:
            crowd = [a for a in self._anns.get(im["id"], []) if a.get("iscrowd", 0) and "segmentation" in a]
            target["crowd_masks"] = (torch.from_numpy(np.stack([self._decode_mask(a, h, w) for a in crowd]))
                                     if crowd else torch.zeros((0, h, w), dtype=torch.uint8))
        if self.semantic_root is not None:
            target["semantic_seg"] = self.load_semantic(index)
        return target

    def load_semantic(self, index: int) -> Tensor:
        """(H, W) uint8 label map ``semantic_root/<image stem>.png`` of record ``index`` (255 = unlabeled)."""
        im = self.images[index]
        name = im.get("file_name") or (im.get("coco_url") or "").rstrip("/").split("/")[-1]
        path = self.semantic_root / (Path(name).stem + ".png")
        if not path.is_file():
            raise _fail(path, f"semantic label map of image id {im['id']} not found",
                        "point the semantic root (HTCConfig.stuff_root / $RMBENCH_COCO_STUFF) at the label maps "
                        "of this split")
        with Image.open(path) as pil:
            arr = np.array(pil, dtype=np.uint8)
        if arr.shape[:2] != (im["height"], im["width"]):
            raise _fail(path, f"label map is {arr.shape[1]}x{arr.shape[0]} but the image is "
                        f"{im['width']}x{im['height']}", "use the label maps of these images")
        return torch.from_numpy(arr)

    def __getitem__(self, key: int | tuple[int, bool]) -> tuple[Tensor, dict[str, Any]]:
        """``key`` is an index or ``(index, flip)`` (from the training sampler)."""
        index, flip = (key, False) if isinstance(key, (int, np.integer)) else (int(key[0]), bool(key[1]))
        image = self.load_image(index)
        im = self.images[index]
        target: dict[str, Any] = self.load_target(index) if self.with_masks else {}
        if flip:
            image = image.flip(-1)
            if self.with_masks:
                target = hflip_target(target, im["width"])
        target.update(image_id=im["id"], orig_size=(im["height"], im["width"]), flipped=flip)
        return image, target


def hflip_target(target: dict[str, Tensor], width: int) -> dict[str, Tensor]:
    """Mirror ``boxes`` (x1' = W − x2, x2' = W − x1; mmdet ``bbox_flip``) and every mask / label map
    (``masks``, ``crowd_masks``, ``semantic_seg``) horizontally."""
    out = dict(target)
    if "boxes" in target:
        b = target["boxes"].clone()
        b[:, 0] = width - target["boxes"][:, 2]
        b[:, 2] = width - target["boxes"][:, 0]
        out["boxes"] = b
    for key in ("masks", "crowd_masks", "semantic_seg"):
        if key in target:
            out[key] = target[key].flip(-1)
    return out


def collate(batch: list[tuple[Tensor, dict]]) -> tuple[list[Tensor], list[dict]]:
    """Keep images and targets as lists (sizes differ; the model pads)."""
    images, targets = zip(*batch) if batch else ((), ())
    return list(images), list(targets)


def write_subset_json(json_path: str | os.PathLike, image_ids: Sequence[int], out_path: str | os.PathLike) -> Path:
    """Write a copy of a COCO json that holds only ``image_ids`` (their images and annotations; all categories).

    Used to evaluate on exactly the images that were trained on (the overfit recipe). Atomic write.
    """
    from eval.io import write_json

    ds = _load_json(Path(json_path))
    ids = set(image_ids)
    missing = ids - {im["id"] for im in ds["images"]}
    if missing:
        raise _fail(json_path, f"image ids {sorted(missing)[:10]} are not in the file", "pick ids from 'images'")
    sub = {k: v for k, v in ds.items() if k not in ("images", "annotations")}
    sub["images"] = [im for im in ds["images"] if im["id"] in ids]
    sub["annotations"] = [a for a in ds["annotations"] if a["image_id"] in ids]
    write_json(out_path, sub)
    return Path(out_path)


def repeat_factors(dataset: InstanceDataset, oversample_thr: float) -> list[float]:
    """Class-balanced repeat factor per image (LVIS paper / mmdet ``ClassBalancedDataset``).

    r(c) = max(1, sqrt(t / f(c))) with f(c) the fraction of images containing class c; r(I) = max_c∈I r(c)
    (1 for images without instances).
    """
    n = len(dataset)
    counts: dict[int, int] = {}
    cats = [dataset.image_categories(i) for i in range(n)]
    for cs in cats:
        for c in cs:
            counts[c] = counts.get(c, 0) + 1
    r_cat = {c: max(1.0, math.sqrt(oversample_thr / (k / n))) for c, k in counts.items()}
    return [max((r_cat[c] for c in cs), default=1.0) for cs in cats]

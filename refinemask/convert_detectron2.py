"""detectron2 model-zoo checkpoints → our :class:`~refinemask.detection.TwoStageDetector` state dict.

**Reading.** Model-zoo files (``model_final_*.pkl``) are Python pickles of ``{"model": {name: numpy array}, ...}``.
:func:`read_detectron2_checkpoint` reads them with a *restricted* unpickler that admits only what an array pickle
needs (``numpy.ndarray`` / ``numpy.dtype`` / numpy's ``_reconstruct`` and ``scalar``, ``collections.OrderedDict``,
``_codecs.encode`` restricted to protocol 2's ``encode(str, 'latin1')`` for bytes)
and refuses every other global — a pickle that tries to build an object or call a function is rejected before
anything runs. Arrays must be numeric (object arrays are refused). Files written by detectron2 training
(``.pth``, torch's zip format) are read with ``torch.load(weights_only=True)``.

**Names** (R50/R101-FPN Mask R-CNN; ``res{s}`` is torchvision's ``layer{s−1}``):

==============================================  ==================================================================
detectron2 key                                  ours
==============================================  ==================================================================
``backbone.bottom_up.stem.conv1.{weight}``      ``backbone.body.conv1.weight``
``backbone.bottom_up.stem.conv1.norm.*``        ``backbone.body.bn1.*`` (FrozenBN: weight, bias, running stats)
``backbone.bottom_up.res{s}.{i}.conv{j}.*``     ``backbone.body.layer{s−1}.{i}.conv{j}.weight`` / ``.bn{j}.*``
``backbone.bottom_up.res{s}.0.shortcut.*``      ``backbone.body.layer{s−1}.0.downsample.0.weight`` / ``.1.*``
``backbone.fpn_lateral{l}`` / ``fpn_output{l}``  ``backbone.fpn.inner_blocks.{l−2}.0`` / ``layer_blocks.{l−2}.0``
``proposal_generator.rpn_head.conv``            ``rpn.head.conv``
``... .objectness_logits / anchor_deltas``      ``rpn.head.cls_logits / bbox_pred`` (A = 3, ratio-major)
``roi_heads.box_head.fc1 / fc2``                ``roi_heads.box_head.fc6 / fc7``
``roi_heads.box_predictor.cls_score / bbox_pred`` same (C + 1 with background last; class-specific C·4)
``roi_heads.mask_head.mask_fcn{k}``             ``roi_heads.mask_branch.convs.{2(k−1)}``
``roi_heads.mask_head.deconv / predictor``      ``roi_heads.mask_branch.deconv / predictor``
==============================================  ==================================================================

No tensor needs re-laying out: detectron2's classifier layout and category order (contiguous ids of the sorted COCO
category ids) are mmdet's and ours. ``pixel_mean`` / ``pixel_std`` (saved by older detectron2) are not weights:
they are returned in the ``info`` of :func:`convert_detectron2_trunk` so the caller can check them against the
preset's normalisation; old ``anchor_generator.cell_anchors.*`` buffers (derived from the config) are dropped and
listed. The MSRA model-zoo backbones are caffe-style (stride in the first 1×1 conv, BGR, std 1): use the
``*_detectron2_coco`` presets. PointRend's heads are mapped by ``baselines.convert.convert_detectron2_point_rend``
with :func:`convert_detectron2_trunk` for the rest.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from eval.errors import MissingFileError, UsageError

__all__ = [
    "DETECTRON2_TRUNK_PREFIXES",
    "read_detectron2_checkpoint",
    "convert_detectron2_trunk",
    "convert_detectron2_mask_rcnn",
    "rename_keys",
]

#: key prefixes owned by :func:`convert_detectron2_trunk`
DETECTRON2_TRUNK_PREFIXES = ("backbone.", "proposal_generator.", "roi_heads.box_head.", "roi_heads.box_predictor.",
                             "pixel_mean", "pixel_std")

# what an array pickle may reference: (module, name) → the object
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("collections", "OrderedDict"): __import__("collections").OrderedDict,
}
try:  # numpy >= 2 (numpy.core is a deprecated alias there)
    from numpy._core import multiarray as _multiarray
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):  # names in numpy 1 / numpy 2 pickles
    _ALLOWED_GLOBALS[(_mod, "_reconstruct")] = _multiarray._reconstruct
    _ALLOWED_GLOBALS[(_mod, "scalar")] = _multiarray.scalar


def _latin1_bytes(text, encoding="latin1"):
    """``_codecs.encode`` as protocol-2 pickles use it for ``bytes`` (``encode(str, "latin1")``); nothing else."""
    if not isinstance(text, str) or encoding.replace("-", "").replace("_", "").lower() != "latin1":
        raise _Refused("only _codecs.encode(str, 'latin1') is allowed")
    return text.encode("latin1")


_ALLOWED_GLOBALS[("_codecs", "encode")] = _latin1_bytes


class _Refused(pickle.UnpicklingError):
    """A global or persistent id outside :data:`_ALLOWED_GLOBALS` (not corruption)."""


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that resolves only :data:`_ALLOWED_GLOBALS`; anything else raises ``pickle.UnpicklingError``."""

    def find_class(self, module: str, name: str):  # noqa: D401 - pickle API
        obj = _ALLOWED_GLOBALS.get((module, name))
        if obj is None:
            raise _Refused(f"global '{module}.{name}' is not allowed (only numpy arrays and plain "
                                         f"containers may be unpickled)")
        return obj

    def persistent_load(self, pid):  # noqa: D401 - pickle API
        raise _Refused("persistent ids are not allowed")


def _to_tensors(model: Mapping, path: str) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for k, v in model.items():
        if not isinstance(k, str):
            raise UsageError(f"{path}: key {k!r} of 'model' is not a string. Fix: pass a detectron2 checkpoint")
        if isinstance(v, Tensor):
            out[k] = v
            continue
        if isinstance(v, np.generic):  # a numpy scalar: a 0-d array
            v = np.asarray(v)
        if not isinstance(v, np.ndarray) or v.dtype.kind not in "fiub":
            raise UsageError(f"{path}: 'model'[{k!r}] is a {type(v).__name__}"
                             f"{' of dtype ' + str(v.dtype) if isinstance(v, np.ndarray) else ''}, not a numeric "
                             f"array. Fix: pass a detectron2 checkpoint of weights")
        t = torch.from_numpy(np.ascontiguousarray(v))
        out[k] = t.float() if t.is_floating_point() else t
    return out


def read_detectron2_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read a detectron2 checkpoint safely.

    Args:
        path: a model-zoo ``.pkl`` (pickle of numpy arrays, possibly written by Python 2: read with
            ``encoding="latin1"``) or a detectron2 training ``.pth`` (torch zip format).
    Returns:
        (state_dict, meta): tensors by detectron2 name (floating arrays as float32), and the file's other top-level
        entries that are plain values (e.g. ``__author__``, ``matching_heuristics``).
    Raises:
        MissingFileError: no such file.
        UsageError: the pickle references a global other than numpy arrays / plain containers (nothing of it is
            executed), the file is corrupt, holds no ``model`` dict, or holds non-numeric values.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MissingFileError(f"detectron2 checkpoint not found: {path!r}")
    with open(path, "rb") as f:
        raw = f.read()
    if zipfile.is_zipfile(io.BytesIO(raw)):
        try:
            obj = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            raise UsageError(f"{path}: torch.load(weights_only=True) refused it ({str(e).splitlines()[0]}). Fix: "
                             f"re-save the weights as a state dict of tensors") from e
        except (RuntimeError, EOFError, zipfile.BadZipFile) as e:
            raise UsageError(f"{path}: corrupt torch file ({type(e).__name__}). Fix: re-download it") from e
    else:
        try:
            obj = _ArrayUnpickler(io.BytesIO(raw), encoding="latin1").load()
        except _Refused as e:
            raise UsageError(f"{path}: refused: {e}. A detectron2 model-zoo file holds only numpy arrays; this one "
                             f"tries to build other objects, which could run code. Fix: use the model-zoo file as "
                             f"released, or re-save its arrays (np.ndarray values only)") from e
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as e:
            raise UsageError(f"{path}: not a readable pickle ({type(e).__name__}: {e}). Fix: re-download it") from e
    if not isinstance(obj, dict):
        raise UsageError(f"{path}: holds a {type(obj).__name__}, not a dict. Fix: pass a detectron2 checkpoint")
    model = obj.get("model", obj if obj and all(isinstance(v, (np.ndarray, Tensor)) for v in obj.values()) else None)
    if not isinstance(model, dict) or not model:
        raise UsageError(f"{path}: no 'model' dict of weights (top-level keys: {sorted(map(str, obj))[:10]}). "
                         f"Fix: pass a detectron2 checkpoint")
    meta = {k: v for k, v in obj.items() if k != "model" and isinstance(v, (str, int, float, bool, type(None)))}
    return _to_tensors(model, path), meta


_P = r"(weight|bias)"
_N = r"(weight|bias|running_mean|running_var)"
_STAGE = {"2": "1", "3": "2", "4": "3", "5": "4"}
_FPN = {"2": "0", "3": "1", "4": "2", "5": "3"}

_TRUNK_RULES: list[tuple[re.Pattern, Any]] = [
    (re.compile(r"backbone\.bottom_up\.stem\.conv1\.weight"), "backbone.body.conv1.weight"),
    (re.compile(rf"backbone\.bottom_up\.stem\.conv1\.norm\.{_N}"), r"backbone.body.bn1.\1"),
    (re.compile(r"backbone\.bottom_up\.res([2-5])\.(\d+)\.conv([123])\.weight"),
     lambda m: f"backbone.body.layer{_STAGE[m[1]]}.{m[2]}.conv{m[3]}.weight"),
    (re.compile(rf"backbone\.bottom_up\.res([2-5])\.(\d+)\.conv([123])\.norm\.{_N}"),
     lambda m: f"backbone.body.layer{_STAGE[m[1]]}.{m[2]}.bn{m[3]}.{m[4]}"),
    (re.compile(r"backbone\.bottom_up\.res([2-5])\.0\.shortcut\.weight"),
     lambda m: f"backbone.body.layer{_STAGE[m[1]]}.0.downsample.0.weight"),
    (re.compile(rf"backbone\.bottom_up\.res([2-5])\.0\.shortcut\.norm\.{_N}"),
     lambda m: f"backbone.body.layer{_STAGE[m[1]]}.0.downsample.1.{m[2]}"),
    (re.compile(rf"backbone\.fpn_lateral([2-5])\.{_P}"), lambda m: f"backbone.fpn.inner_blocks.{_FPN[m[1]]}.0.{m[2]}"),
    (re.compile(rf"backbone\.fpn_output([2-5])\.{_P}"), lambda m: f"backbone.fpn.layer_blocks.{_FPN[m[1]]}.0.{m[2]}"),
    (re.compile(rf"proposal_generator\.rpn_head\.conv\.{_P}"), r"rpn.head.conv.\1"),
    (re.compile(rf"proposal_generator\.rpn_head\.objectness_logits\.{_P}"), r"rpn.head.cls_logits.\1"),
    (re.compile(rf"proposal_generator\.rpn_head\.anchor_deltas\.{_P}"), r"rpn.head.bbox_pred.\1"),
    (re.compile(rf"roi_heads\.box_head\.fc1\.{_P}"), r"roi_heads.box_head.fc6.\1"),
    (re.compile(rf"roi_heads\.box_head\.fc2\.{_P}"), r"roi_heads.box_head.fc7.\1"),
    (re.compile(rf"roi_heads\.box_predictor\.(cls_score|bbox_pred)\.{_P}"), r"roi_heads.box_head.\1.\2"),
]
_DROPPED = re.compile(r"proposal_generator\.anchor_generator\.cell_anchors\.\d+")
_MASK_RULES: list[tuple[re.Pattern, Any]] = [
    (re.compile(rf"roi_heads\.mask_head\.mask_fcn([1-9])\.{_P}"),
     lambda m: f"roi_heads.mask_branch.convs.{2 * (int(m[1]) - 1)}.{m[2]}"),
    (re.compile(rf"roi_heads\.mask_head\.(deconv|predictor)\.{_P}"), r"roi_heads.mask_branch.\1.\2"),
]


def _apply(rules, key: str) -> str | None:
    for pat, repl in rules:
        m = pat.fullmatch(key)
        if m:
            return repl(m) if callable(repl) else m.expand(repl)
    return None


def rename_keys(state_dict: Mapping[str, Tensor], mapper) -> tuple[dict[str, Tensor], list[str]]:
    """``{mapper(k): v}`` for every key ``mapper`` maps, and the keys it does not (``mapper`` returns None)."""
    out: dict[str, Tensor] = {}
    unknown: list[str] = []
    for k, v in state_dict.items():
        new = mapper(k)
        if new is None:
            unknown.append(k)
        else:
            out[new] = v
    return out, unknown


def _listing(keys: list[str]) -> str:
    return f"{keys[:20]}{' ...' if len(keys) > 20 else ''}"


def convert_detectron2_trunk(state_dict: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor], dict]:
    """Rename detectron2's ResNet-FPN backbone, RPN and box head (the table above).

    Returns:
        (trunk, rest, info): ``trunk`` under our names; ``rest`` = keys outside :data:`DETECTRON2_TRUNK_PREFIXES`
        (mask heads), unchanged, for the caller's head converter; ``info`` = ``{"pixel_mean": [...],
        "pixel_std": [...]}`` when the file has them and ``{"dropped": [...]}`` (derived anchor buffers).
    Raises:
        UsageError: a trunk key without a mapping (all listed; e.g. a RetinaNet, a Cascade box head, DCN), or a box
            head that is not class-specific with background last (bbox_pred rows ≠ 4 · (cls_score rows − 1)).
    """
    trunk: dict[str, Tensor] = {}
    rest: dict[str, Tensor] = {}
    info: dict[str, Any] = {"dropped": []}
    unknown: list[str] = []
    for k, v in state_dict.items():
        if k in ("pixel_mean", "pixel_std"):
            info[k] = [float(x) for x in v.reshape(-1)]
            continue
        if _DROPPED.fullmatch(k):
            info["dropped"].append(k)
            continue
        if not k.startswith(DETECTRON2_TRUNK_PREFIXES):
            rest[k] = v
            continue
        new = _apply(_TRUNK_RULES, k)
        if new is None:
            unknown.append(k)
        else:
            trunk[new] = v
    if unknown:
        raise UsageError(f"convert_detectron2: {len(unknown)} backbone/RPN/box-head key(s) have no mapping (not a "
                         f"ResNet-FPN Mask R-CNN / PointRend of detectron2?): {_listing(unknown)}")
    cls_w, reg_w = trunk.get("roi_heads.box_head.cls_score.weight"), trunk.get("roi_heads.box_head.bbox_pred.weight")
    if cls_w is not None and reg_w is not None and reg_w.shape[0] != 4 * (cls_w.shape[0] - 1):
        raise UsageError(f"convert_detectron2: cls_score has {cls_w.shape[0]} rows and bbox_pred {reg_w.shape[0]}; "
                         f"expected class-specific regression (4 · (rows − 1)). CLS_AGNOSTIC_BBOX_REG models are not "
                         f"supported")
    return trunk, rest, info


def convert_detectron2_mask_rcnn(state_dict: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], dict]:
    """detectron2 ``GeneralizedRCNN`` with ``StandardROIHeads`` + ``MaskRCNNConvUpsampleHead`` → ours.

    Returns:
        (state_dict, info) — see :func:`convert_detectron2_trunk` for ``info``.
    Raises:
        UsageError: every key without a mapping is listed (e.g. a keypoint head or a PointRend head: use the
            PointRend converter).
    """
    trunk, rest, info = convert_detectron2_trunk(state_dict)
    head, unknown = rename_keys(rest, lambda k: _apply(_MASK_RULES, k))
    if unknown:
        raise UsageError(f"convert_detectron2_mask_rcnn: {len(unknown)} key(s) have no mapping (a PointRend or "
                         f"keypoint model? use --preset of that model): {_listing(unknown)}")
    return {**trunk, **head}, info

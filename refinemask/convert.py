"""Load official checkpoints (mmdetection 2.x format) into our models.

* :func:`convert_mmdet_trunk` — the Mask R-CNN trunk shared by every mmdet two-stage checkpoint: ResNet/ResNeXt
  ``backbone.*``, FPN ``neck.lateral_convs/fpn_convs``, ``rpn_head.rpn_conv/rpn_cls/rpn_reg`` and the
  ``Shared2FCBBoxHead`` ``roi_head.bbox_head.shared_fcs/fc_cls/fc_reg``. Reused for mmdet Mask R-CNN checkpoints.
* :func:`convert_official_refinemask` — trunk + the RefineMask mask head of zhanggang001/RefineMask
  (``RefineMaskHead`` and the "faster and better" ``SimpleRefineMaskHead``), every key mapped or a loud error.
* :func:`load_official_refinemask` — read a ``.pth`` safely (``weights_only=True``) and load it into a model built
  with ``build_model`` from the matching preset.

Layouts agree without any tensor surgery: mmdet's ResNet names are torchvision's; the RPN's A = 3 anchors are
ordered ratio-major like ours with channel a·4 + coord for the deltas; the box classifier has C + 1 outputs with
background **last** and class-specific C·4 regression (our RoI heads use mmdet's layout); class indices are mmdet's
(COCO: categories sorted by id); the head's concatenation orders are the official ones (see ``refinemask.head.sfm``).
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

from eval.errors import MissingFileError, UsageError

__all__ = [
    "TRUNK_PREFIXES",
    "convert_mmdet_trunk",
    "convert_refinemask_head",
    "convert_official_refinemask",
    "load_official_refinemask",
    "read_mmdet_checkpoint",
]

#: key prefixes of an mmdet two-stage checkpoint that :func:`convert_mmdet_trunk` owns
TRUNK_PREFIXES = ("backbone.", "neck.", "rpn_head.", "roi_head.bbox_head.")

_PARAM = r"(weight|bias)"
_BN_OR_CONV = r"(weight|bias|running_mean|running_var|num_batches_tracked)"

# (pattern on the official key, replacement producing our key); patterns are full matches
_TRUNK_RULES: list[tuple[re.Pattern, str | Callable[[re.Match], str]]] = [
    (re.compile(rf"backbone\.((?:conv1|bn1)|layer[1-4]\.\d+\.(?:conv[123]|bn[123]|downsample\.[01]))\.{_BN_OR_CONV}"),
     r"backbone.body.\1.\2"),
    (re.compile(rf"neck\.lateral_convs\.(\d+)\.conv\.{_PARAM}"), r"backbone.fpn.inner_blocks.\1.0.\2"),
    (re.compile(rf"neck\.fpn_convs\.(\d+)\.conv\.{_PARAM}"), r"backbone.fpn.layer_blocks.\1.0.\2"),
    (re.compile(rf"rpn_head\.rpn_conv\.{_PARAM}"), r"rpn.head.conv.\1"),
    (re.compile(rf"rpn_head\.rpn_cls\.{_PARAM}"), r"rpn.head.cls_logits.\1"),
    (re.compile(rf"rpn_head\.rpn_reg\.{_PARAM}"), r"rpn.head.bbox_pred.\1"),
    (re.compile(rf"roi_head\.bbox_head\.shared_fcs\.0\.{_PARAM}"), r"roi_heads.box_head.fc6.\1"),
    (re.compile(rf"roi_head\.bbox_head\.shared_fcs\.1\.{_PARAM}"), r"roi_heads.box_head.fc7.\1"),
    (re.compile(rf"roi_head\.bbox_head\.fc_cls\.{_PARAM}"), r"roi_heads.box_head.cls_score.\1"),
    (re.compile(rf"roi_head\.bbox_head\.fc_reg\.{_PARAM}"), r"roi_heads.box_head.bbox_pred.\1"),
]

_MH = r"roi_head\.mask_head\."
_OURS = "roi_heads.mask_branch."
_HEAD_RULES: list[tuple[re.Pattern, str | Callable[[re.Match], str]]] = [
    (re.compile(rf"{_MH}instance_convs\.(\d+)\.conv\.{_PARAM}"), _OURS + r"instance_convs.\1.\2"),
    (re.compile(rf"{_MH}semantic_convs\.(\d+)\.conv\.{_PARAM}"), _OURS + r"semantic_head.convs.\1.\2"),
    (re.compile(rf"{_MH}semantic_logits\.{_PARAM}"), _OURS + r"semantic_head.logits.\1"),
    (re.compile(rf"{_MH}stages\.(\d+)\.semantic_transform_in\.{_PARAM}"), _OURS + r"stages.\1.semantic_in.\2"),
    (re.compile(rf"{_MH}stages\.(\d+)\.semantic_transform_out\.{_PARAM}"), _OURS + r"stages.\1.semantic_out.\2"),
    (re.compile(rf"{_MH}stages\.(\d+)\.instance_logits\.{_PARAM}"), _OURS + r"stage_logits.\1.\2"),
    (re.compile(rf"{_MH}stages\.(\d+)\.fuse_conv\.0\.{_PARAM}"), _OURS + r"stages.\1.fuse_in.\2"),
    (re.compile(rf"{_MH}stages\.(\d+)\.fuse_conv\.1\.dilation_conv_([1-9])\.conv\.{_PARAM}"),
     lambda m: f"{_OURS}stages.{m[1]}.fusion.branches.{int(m[2]) - 1}.{m[3]}"),
    (re.compile(rf"{_MH}stages\.(\d+)\.fuse_conv\.1\.merge_conv\.conv\.{_PARAM}"),
     _OURS + r"stages.\1.fusion.merge.\2"),
    (re.compile(rf"{_MH}stages\.(\d+)\.fuse_transform_out\.{_PARAM}"), _OURS + r"stages.\1.transform_out.\2"),
    # SimpleRefineMaskHead: one classifier list for all stages
    (re.compile(rf"{_MH}stage_instance_logits\.(\d+)\.{_PARAM}"), _OURS + r"stage_logits.\1.\2"),
    # RefineMaskHead: the last stage's classifier; its index (= number of SFM stages) is filled in below
    (re.compile(rf"{_MH}final_instance_logits\.{_PARAM}"), _OURS + r"stage_logits.{final}.\1"),
]


def _apply(rules, key: str) -> str | None:
    for pat, repl in rules:
        m = pat.fullmatch(key)
        if m:
            return repl(m) if callable(repl) else m.expand(repl)
    return None


def _check_tensors(state_dict: Mapping[str, object]) -> None:
    bad = [k for k, v in state_dict.items() if not isinstance(v, Tensor)]
    if bad:
        raise UsageError(f"state dict values must be tensors; not tensors: {bad[:10]}{' ...' if len(bad) > 10 else ''}")


def _strip_module(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Drop a DistributedDataParallel ``module.`` prefix if every key has it."""
    if state_dict and all(k.startswith("module.") for k in state_dict):
        return {k[len("module."):]: v for k, v in state_dict.items()}
    return dict(state_dict)


def convert_mmdet_trunk(state_dict: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Rename the mmdet Mask R-CNN trunk keys to ours (``TwoStageDetector`` names).

    ============================================  ======================================================
    mmdet 2.x key                                 ours
    ============================================  ======================================================
    ``backbone.<resnet name>``                    ``backbone.body.<resnet name>`` (same ResNet names)
    ``neck.lateral_convs.{i}.conv.*``             ``backbone.fpn.inner_blocks.{i}.0.*``
    ``neck.fpn_convs.{i}.conv.*``                 ``backbone.fpn.layer_blocks.{i}.0.*``
    ``rpn_head.rpn_conv / rpn_cls / rpn_reg``     ``rpn.head.conv / cls_logits / bbox_pred``
    ``roi_head.bbox_head.shared_fcs.{0,1}``       ``roi_heads.box_head.fc6 / fc7``
    ``roi_head.bbox_head.fc_cls / fc_reg``        ``roi_heads.box_head.cls_score / bbox_pred``
    ============================================  ======================================================

    BatchNorm keys keep running statistics and ``num_batches_tracked`` (a model with FrozenBN has no
    ``num_batches_tracked``; :func:`load_official_refinemask` drops those). Values are not copied.

    Args:
        state_dict: an mmdet ``state_dict`` (``module.`` prefix allowed).
    Returns:
        (trunk, rest): ``trunk`` with our names; ``rest`` = the keys outside :data:`TRUNK_PREFIXES` (mask head etc.),
        unchanged, for the caller's own head converter — a caller must map or reject every one of them.
    Raises:
        ValueError: a key under a trunk prefix matches no rule (e.g. DCN offsets, a cascade box head, a
            different neck), or a value is not a tensor (the message lists every such key); or the box head is
            not mmdet ≥ 2.0's layout (an mmdet 1.x checkpoint with background first).
    """
    sd = _strip_module(state_dict)
    _check_tensors(sd)
    trunk: dict[str, Tensor] = {}
    rest: dict[str, Tensor] = {}
    unknown: list[str] = []
    for k, v in sd.items():
        if not k.startswith(TRUNK_PREFIXES):
            rest[k] = v
            continue
        new = _apply(_TRUNK_RULES, k)
        if new is None:
            unknown.append(k)
        else:
            trunk[new] = v
    if unknown:
        raise UsageError(
            f"convert_mmdet_trunk: {len(unknown)} trunk key(s) have no mapping (not an mmdet Mask R-CNN "
            f"ResNet/ResNeXt-FPN trunk?): {unknown[:20]}{' ...' if len(unknown) > 20 else ''}"
        )
    cls_w, reg_w = trunk.get("roi_heads.box_head.cls_score.weight"), trunk.get("roi_heads.box_head.bbox_pred.weight")
    if cls_w is not None and reg_w is not None and reg_w.shape[0] != 4 * (cls_w.shape[0] - 1):
        raise UsageError(
            f"convert_mmdet_trunk: fc_cls has {cls_w.shape[0]} rows and fc_reg {reg_w.shape[0]}; expected mmdet >= 2.0 "
            f"layout (C + 1 classes with background last, class-specific C·4 regression). mmdet 1.x checkpoints "
            f"(background first, (C + 1)·4 regression) and class-agnostic box heads are not supported."
        )
    return trunk, rest


def convert_refinemask_head(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename official ``roi_head.mask_head.*`` keys (``RefineMaskHead`` or ``SimpleRefineMaskHead``) to
    ``roi_heads.mask_branch.*`` of :class:`~refinemask.head.RefineMaskBranch`.

    =====================================================  ==================================================
    official (``roi_head.mask_head.`` omitted)              ours (``roi_heads.mask_branch.`` omitted)
    =====================================================  ==================================================
    ``instance_convs.{i}.conv``                             ``instance_convs.{i}``
    ``semantic_convs.{i}.conv`` / ``semantic_logits``       ``semantic_head.convs.{i}`` / ``semantic_head.logits``
    ``stages.{k}.semantic_transform_in / _out``             ``stages.{k}.semantic_in / semantic_out``
    ``stages.{k}.fuse_conv.0``                              ``stages.{k}.fuse_in``
    ``stages.{k}.fuse_conv.1.dilation_conv_{j}.conv``       ``stages.{k}.fusion.branches.{j-1}``
    ``stages.{k}.fuse_conv.1.merge_conv.conv``              ``stages.{k}.fusion.merge``
    ``stages.{k}.fuse_transform_out``                       ``stages.{k}.transform_out``
    ``stages.{k}.instance_logits``                          ``stage_logits.{k}``
    ``final_instance_logits``                               ``stage_logits.{number of stages}``
    ``stage_instance_logits.{k}`` (simple head)             ``stage_logits.{k}``
    =====================================================  ==================================================

    Args:
        state_dict: keys under ``roi_head.mask_head.`` (other keys are an error).
    Raises:
        ValueError: listing every key without a mapping.
    """
    stage_ids = set()
    for k in state_dict:
        m = re.fullmatch(rf"{_MH}stages\.(\d+)\..*", k)
        if m:
            stage_ids.add(int(m[1]))
    final = max(stage_ids) + 1 if stage_ids else 0
    out: dict[str, Tensor] = {}
    unknown: list[str] = []
    for k, v in state_dict.items():
        new = _apply(_HEAD_RULES, k)
        if new is None:
            unknown.append(k)
        else:
            out[new.replace("{final}", str(final))] = v
    if unknown:
        raise UsageError(
            f"convert_official_refinemask: {len(unknown)} key(s) have no mapping (not a RefineMask checkpoint of "
            f"zhanggang001/RefineMask?): {unknown[:20]}{' ...' if len(unknown) > 20 else ''}"
        )
    return out


def convert_official_refinemask(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Official RefineMask ``state_dict`` (mmdet 2.x names) → our ``TwoStageDetector`` state dict.

    Every key is mapped by :func:`convert_mmdet_trunk` (trunk) or :func:`convert_refinemask_head` (mask head);
    any other key raises. Parameter-free official modules (RoI extractors, ``nn.Upsample``) have no keys.

    Args:
        state_dict: the checkpoint's ``state_dict`` (unwrap ``{"state_dict": ...}`` first, or use
            :func:`load_official_refinemask`); a DDP ``module.`` prefix is allowed.
    Returns:
        dict of the same tensors under our names.
    Raises:
        ValueError: unmapped keys (all listed), or non-tensor values.
    """
    trunk, rest = convert_mmdet_trunk(state_dict)
    head = convert_refinemask_head(rest)
    return {**trunk, **head}


_RESAVE_HELP = (
    "{path!r} could not be read with torch.load(weights_only=True): it pickles objects other than tensors and "
    "plain containers (mmdet 2.x checkpoints keep such objects in 'meta' and 'optimizer'). We do not fall back to "
    "weights_only=False, which can execute arbitrary code. If you trust the file, re-save its weights once:\n"
    "    python -c \"import torch; ck = torch.load({path!r}, map_location='cpu', weights_only=False); "
    "torch.save({{'state_dict': ck.get('state_dict', ck)}}, 'refinemask_weights.pth')\"\n"
    "and load 'refinemask_weights.pth' instead. Original error: {err}"
)


def read_mmdet_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict]:
    """Read an mmdet checkpoint safely: ``torch.load(map_location="cpu", weights_only=True)``.

    Returns:
        (state_dict, meta): the weights (unwrapped from ``"state_dict"`` / ``"model"`` if wrapped, ``module.``
        prefix removed) and the checkpoint's ``meta`` dict (``{}`` if absent).
    Raises:
        FileNotFoundError: no such file.
        ValueError: the file needs unsafe unpickling (message explains how to re-save it), or holds no state dict.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MissingFileError(f"checkpoint not found: {path!r}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UsageError(_RESAVE_HELP.format(path=path, err=str(e).splitlines()[0] if str(e) else repr(e))) from e
    meta: dict = {}
    state = ckpt
    if isinstance(ckpt, dict):
        for key in ("state_dict", "model"):
            if key in ckpt and isinstance(ckpt[key], dict):
                state = ckpt[key]
                meta = ckpt.get("meta") if isinstance(ckpt.get("meta"), dict) else {}
                break
    if not isinstance(state, dict) or not state or not all(isinstance(v, Tensor) for v in state.values()):
        raise UsageError(f"{path!r} does not hold a state dict of tensors (expected an mmdet checkpoint)")
    return _strip_module(state), meta


def load_official_refinemask(model: nn.Module, path: str | os.PathLike) -> dict:
    """Load an official RefineMask checkpoint (zhanggang001/RefineMask, mmdet 2.x) into ``model``.

    ``model`` must be built from the matching preset (e.g. ``build_model("refinemask_r50_fpn_1x_coco")`` for
    ``r50-refinemask-1x``, ``..._lvis`` for LVIS, ``..._simple`` for the faster-better head). The load is strict:
    every model tensor must come from the file and every file tensor must land in the model with the same shape;
    only ``num_batches_tracked`` entries that a FrozenBN model does not have are dropped.

    Returns:
        ``{"meta": <checkpoint meta, e.g. CLASSES>, "dropped": [keys dropped]}``.
    Raises:
        FileNotFoundError / ValueError: see :func:`read_mmdet_checkpoint`; ValueError also for unmapped keys,
        missing or unexpected keys, or shape mismatches (e.g. a different class count or head variant), with
        the offending keys listed.
    """
    state, meta = read_mmdet_checkpoint(path)
    converted = convert_official_refinemask(state)
    target = model.state_dict()
    dropped = sorted(k for k in converted if k.endswith("num_batches_tracked") and k not in target)
    for k in dropped:
        del converted[k]
    missing = sorted(k for k in target if k not in converted and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in converted if k not in target)
    shapes = sorted(
        f"{k}: file {tuple(v.shape)} vs model {tuple(target[k].shape)}"
        for k, v in converted.items()
        if k in target and tuple(v.shape) != tuple(target[k].shape)
    )
    if missing or unexpected or shapes:
        def _fmt(xs):
            return f"{xs[:15]}{' ...' if len(xs) > 15 else ''} ({len(xs)})"

        raise UsageError(
            f"checkpoint {os.fspath(path)!r} does not fit this model (built from another preset? class count, head "
            f"variant and backbone must match): missing {_fmt(missing)}, unexpected {_fmt(unexpected)}, "
            f"shape mismatches {_fmt(shapes)}"
        )
    model.load_state_dict(converted, strict=False)  # num_batches_tracked may be absent from old files
    return {"meta": meta, "dropped": dropped}

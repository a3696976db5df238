"""mmdetection Mask R-CNN checkpoints → our :class:`~refinemask.detection.TwoStageDetector` state dict.

Supports mmdet ≥ 2.0 layouts (2.x and 3.x share the module names of ``MaskRCNN`` with ``ResNet``, ``FPN``,
``RPNHead``, ``StandardRoIHead``/``Shared2FCBBoxHead`` and ``FCNMaskHead``):

=============================================  ==============================================
mmdet                                          ours
=============================================  ==============================================
``backbone.{conv1,bn1,layerN...}``             ``backbone.body.{conv1,bn1,layerN...}``
``neck.lateral_convs.i.conv.*``                ``backbone.fpn.inner_blocks.i.0.*``
``neck.fpn_convs.i.conv.*``                    ``backbone.fpn.layer_blocks.i.0.*``
``rpn_head.rpn_conv / rpn_cls / rpn_reg``      ``rpn.head.conv / cls_logits / bbox_pred``
``roi_head.bbox_head.shared_fcs.0 / .1``       ``roi_heads.box_head.fc6 / fc7``
``roi_head.bbox_head.fc_cls / fc_reg``         ``roi_heads.box_head.cls_score / bbox_pred``
``roi_head.mask_head.convs.i.conv``            ``roi_heads.mask_branch.convs.(2i)`` (ReLUs interleave)
``roi_head.mask_head.upsample``                ``roi_heads.mask_branch.deconv``
``roi_head.mask_head.conv_logits``             ``roi_heads.mask_branch.predictor``
=============================================  ==============================================

Class layout needs no permutation: mmdet ≥ 2.0 puts background LAST in ``fc_cls`` (C + 1 rows) and regresses
class-specifically with C·4 rows (no background slot), exactly our
:class:`~refinemask.detection.roi_heads.TwoFCBoxHead`.
mmdet 1.x checkpoints (background FIRST, ``fc_reg`` with (C + 1)·4 rows) are rejected with a clear error.
Box-coder stds (0.1, 0.1, 0.2, 0.2) ↔ our ``bbox_reg_weights`` (10, 10, 5, 5) are configuration, not weights.

The trunk part (backbone, neck, RPN, box head, and the mmdet 1.x layout check) is
:func:`refinemask.convert.convert_mmdet_trunk`, shared with RefineMask's official checkpoints, and files are read
by :func:`refinemask.convert.read_mmdet_checkpoint` (``weights_only=True``); this module adds Mask R-CNN's FCN
mask head and the strict load.
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping

from torch import Tensor, nn

from eval.errors import UsageError
from refinemask.convert import convert_mmdet_trunk, read_mmdet_checkpoint

__all__ = [
    "FCN_MASK_RULES",
    "convert_mmdet_mask_rcnn",
    "load_mmdet_checkpoint",
    "read_mmdet_state_dict",
]

_Rule = tuple[re.Pattern, Callable[[re.Match], str]]


def _r(pattern: str, repl: Callable[[re.Match], str] | str) -> _Rule:
    f = repl if callable(repl) else (lambda m, s=repl: m.expand(s))
    return re.compile(pattern), f


#: Mask R-CNN ``FCNMaskHead`` → ``refinemask.detection.FCNMaskBranch`` (ReLUs interleave our ``convs``).
FCN_MASK_RULES: list[_Rule] = [
    _r(r"^roi_head\.mask_head\.convs\.(\d+)\.conv\.(weight|bias)$",
       lambda m: f"roi_heads.mask_branch.convs.{2 * int(m.group(1))}.{m.group(2)}"),
    _r(r"^roi_head\.mask_head\.upsample\.(weight|bias)$", r"roi_heads.mask_branch.deconv.\1"),
    _r(r"^roi_head\.mask_head\.conv_logits\.(weight|bias)$", r"roi_heads.mask_branch.predictor.\1"),
]

#: mmdet keys that carry no weights of ours (the data preprocessor's mean/std, BN batch counters).
_IGNORED = re.compile(r"^(data_preprocessor\.|.*\.num_batches_tracked$)")


def _strip_prefix(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    if sd and all(k.startswith("module.") for k in sd):  # (Distributed)DataParallel wrapper
        return {k[len("module."):]: v for k, v in sd.items()}
    return dict(sd)


def convert_mmdet_mask_rcnn(sd: Mapping[str, Tensor]) -> OrderedDict[str, Tensor]:
    """Rename an mmdet Mask R-CNN state dict (a plain ``{name: tensor}``) into our key space.

    Tensors are not copied (the same objects appear in the result). ``num_batches_tracked`` and
    ``data_preprocessor.*`` entries are dropped.

    Raises:
        ValueError: any key that is neither mapped nor deliberately ignored (listed in the message), a value that
            is not a tensor, or an mmdet 1.x class layout (from ``convert_mmdet_trunk``).
    """
    sd = {k: v for k, v in _strip_prefix(sd).items() if not _IGNORED.match(k)}
    trunk, rest = convert_mmdet_trunk(sd)
    out: OrderedDict[str, Tensor] = OrderedDict(trunk)
    unmapped = []
    for k, v in rest.items():
        for pat, f in FCN_MASK_RULES:
            m = pat.match(k)
            if m:
                out[f(m)] = v
                break
        else:
            unmapped.append(k)
    if unmapped:
        raise UsageError(
            f"convert_mmdet_mask_rcnn: {len(unmapped)} mmdet key(s) have no counterpart in our Mask R-CNN: "
            f"{_fmt(unmapped)} (is this a Mask R-CNN R50/R101/X101-FPN checkpoint with an FCN mask head?)")
    return out


def _fmt(keys: list[str], n: int = 12) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f", ... (+{len(keys) - n} more)" if len(keys) > n else "")


def read_mmdet_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """The weights of a LOCAL mmdet checkpoint (``torch.load(weights_only=True)``, ``"state_dict"`` unwrapped).

    Raises:
        FileNotFoundError: ``path`` missing. ValueError: the file needs unsafe unpickling (the message says how to
        re-save a trusted file) or holds no state dict of tensors.
    """
    return read_mmdet_checkpoint(path)[0]


def load_mmdet_checkpoint(model: nn.Module, path_or_state: str | os.PathLike | Mapping[str, Tensor]) -> dict:
    """Load an mmdet Mask R-CNN checkpoint (a file, or an in-memory state dict) into our model, strictly.

    Args:
        model: ``refinemask.build_model("mask_rcnn_*")`` (FCN mask branch) — or any model with the same keys.
        path_or_state: LOCAL ``.pth`` (read by :func:`read_mmdet_state_dict`) or an mmdet ``state_dict()``.
    Returns:
        ``{"loaded": n_tensors, "ignored": [...]}``.
    Raises:
        ValueError: unmapped mmdet keys, keys of ours missing from the checkpoint, or shape mismatches (e.g. a
            different number of classes) — each listed by name.
    """
    if isinstance(path_or_state, Mapping):
        raw = dict(path_or_state)
        src = "state dict"
    else:
        raw = read_mmdet_state_dict(path_or_state)
        src = repr(os.fspath(path_or_state))
    ignored = sorted(k for k in _strip_prefix(raw) if _IGNORED.match(k))
    sd = convert_mmdet_mask_rcnn(raw)
    own = model.state_dict()
    unexpected = [k for k in sd if k not in own]
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    bad_shape = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                 for k, v in sd.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if unexpected or missing or bad_shape:
        parts = []
        if unexpected:
            parts.append(f"converted keys our model lacks: {_fmt(unexpected)}")
        if missing:
            parts.append(f"model keys missing from the checkpoint: {_fmt(missing)}")
        if bad_shape:
            parts.append(f"shape mismatches: {_fmt(bad_shape, 6)}")
        raise UsageError(f"mmdet checkpoint {src} does not fit {type(model).__name__}: " + "; ".join(parts))
    model.load_state_dict(sd, strict=False)  # only num_batches_tracked may be absent
    return {"loaded": len(sd), "ignored": ignored}

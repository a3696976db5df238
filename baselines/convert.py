"""mmdetection 2.x PointRend / HTC checkpoints → our parameter names (docs/models.md §4, §5).

The trunk (``backbone.*``, ``neck.*``, ``rpn_head.*`` and, for PointRend, the standard
``roi_head.bbox_head.*``) is renamed by ``refinemask.convert.convert_mmdet_trunk`` (or a ``trunk_mapper`` given by
the caller); this module renames the heads. mmdet's ``ConvModule`` wraps its conv as ``<name>.conv.*``; our heads
use a plain ``nn.Conv2d``/``nn.Conv1d`` under the same name, so that level is dropped. No tensor needs reshaping:
classifier layouts are mmdet's (background last, class-specific mask logits, class-agnostic HTC regression).

PointRend (``roi_head.`` → ``roi_heads.mask_branch.``):

==============================================  ==================================================
mmdet 2.x key                                   ours
==============================================  ==================================================
``roi_head.mask_head.downsample_conv.conv.*``   ``roi_heads.mask_branch.mask_head.downsample_conv.*``
``roi_head.mask_head.fcs.{0,1}.*``              ``roi_heads.mask_branch.mask_head.fcs.{0,1}.*``
``roi_head.mask_head.fc_logits.*``              ``roi_heads.mask_branch.mask_head.fc_logits.*``
``roi_head.point_head.fcs.{0,1,2}.conv.*``      ``roi_heads.mask_branch.point_head.fcs.{0,1,2}.*``
``roi_head.point_head.fc_logits.*``             ``roi_heads.mask_branch.point_head.fc_logits.*``
==============================================  ==================================================

HTC (t = 0, 1, 2):

==================================================  ==================================================
mmdet 2.x key                                       ours
==================================================  ==================================================
``roi_head.bbox_head.{t}.shared_fcs.0.*``           ``roi_heads.bbox_head.{t}.fc6.*``
``roi_head.bbox_head.{t}.shared_fcs.1.*``           ``roi_heads.bbox_head.{t}.fc7.*``
``roi_head.bbox_head.{t}.fc_cls.*``                 ``roi_heads.bbox_head.{t}.cls_score.*`` (81, bg last)
``roi_head.bbox_head.{t}.fc_reg.*``                 ``roi_heads.bbox_head.{t}.bbox_pred.*`` (4, agnostic)
``roi_head.mask_head.{t}.convs.{k}.conv.*``         ``roi_heads.mask_branch.mask_head.{t}.convs.{k}.*``
``roi_head.mask_head.{t}.upsample.*``               ``roi_heads.mask_branch.mask_head.{t}.upsample.*``
``roi_head.mask_head.{t}.conv_logits.*``            ``roi_heads.mask_branch.mask_head.{t}.conv_logits.*``
``roi_head.mask_head.{t}.conv_res.conv.*`` (t ≥ 1)  ``roi_heads.mask_branch.mask_head.{t}.conv_res.*``
``roi_head.semantic_head.lateral_convs.{l}.conv.*`` ``roi_heads.semantic_head.lateral_convs.{l}.*``
``roi_head.semantic_head.convs.{k}.conv.*``         ``roi_heads.semantic_head.convs.{k}.*``
``roi_head.semantic_head.conv_embedding.conv.*``    ``roi_heads.semantic_head.conv_embedding.*``
``roi_head.semantic_head.conv_logits.*``            ``roi_heads.semantic_head.conv_logits.*`` (183 or 81)
==================================================  ==================================================
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from torch import Tensor

from eval.errors import UsageError

__all__ = [
    "POINT_REND_RULES",
    "HTC_RULES",
    "map_mmdet_point_rend_key",
    "map_mmdet_htc_key",
    "convert_mmdet_point_rend",
    "convert_mmdet_htc",
    "DETECTRON2_POINT_REND_RULES",
    "convert_detectron2_point_rend",
]

_P = r"(weight|bias)"
_Rules = list[tuple[re.Pattern, str]]

#: (full-match pattern on the mmdet key, replacement) for PointRend's heads
POINT_REND_RULES: _Rules = [
    (re.compile(rf"roi_head\.mask_head\.downsample_conv\.conv\.{_P}"),
     r"roi_heads.mask_branch.mask_head.downsample_conv.\1"),
    (re.compile(rf"roi_head\.mask_head\.fcs\.(\d+)\.{_P}"), r"roi_heads.mask_branch.mask_head.fcs.\1.\2"),
    (re.compile(rf"roi_head\.mask_head\.fc_logits\.{_P}"), r"roi_heads.mask_branch.mask_head.fc_logits.\1"),
    (re.compile(rf"roi_head\.point_head\.fcs\.(\d+)\.conv\.{_P}"), r"roi_heads.mask_branch.point_head.fcs.\1.\2"),
    (re.compile(rf"roi_head\.point_head\.fc_logits\.{_P}"), r"roi_heads.mask_branch.point_head.fc_logits.\1"),
]

#: (full-match pattern on the mmdet key, replacement) for HTC's cascade box heads, mask heads and semantic head
HTC_RULES: _Rules = [
    (re.compile(rf"roi_head\.bbox_head\.(\d+)\.shared_fcs\.0\.{_P}"), r"roi_heads.bbox_head.\1.fc6.\2"),
    (re.compile(rf"roi_head\.bbox_head\.(\d+)\.shared_fcs\.1\.{_P}"), r"roi_heads.bbox_head.\1.fc7.\2"),
    (re.compile(rf"roi_head\.bbox_head\.(\d+)\.fc_cls\.{_P}"), r"roi_heads.bbox_head.\1.cls_score.\2"),
    (re.compile(rf"roi_head\.bbox_head\.(\d+)\.fc_reg\.{_P}"), r"roi_heads.bbox_head.\1.bbox_pred.\2"),
    (re.compile(rf"roi_head\.mask_head\.(\d+)\.convs\.(\d+)\.conv\.{_P}"),
     r"roi_heads.mask_branch.mask_head.\1.convs.\2.\3"),
    (re.compile(rf"roi_head\.mask_head\.(\d+)\.upsample\.{_P}"), r"roi_heads.mask_branch.mask_head.\1.upsample.\2"),
    (re.compile(rf"roi_head\.mask_head\.(\d+)\.conv_logits\.{_P}"),
     r"roi_heads.mask_branch.mask_head.\1.conv_logits.\2"),
    (re.compile(rf"roi_head\.mask_head\.(\d+)\.conv_res\.conv\.{_P}"),
     r"roi_heads.mask_branch.mask_head.\1.conv_res.\2"),
    (re.compile(rf"roi_head\.semantic_head\.lateral_convs\.(\d+)\.conv\.{_P}"),
     r"roi_heads.semantic_head.lateral_convs.\1.\2"),
    (re.compile(rf"roi_head\.semantic_head\.convs\.(\d+)\.conv\.{_P}"), r"roi_heads.semantic_head.convs.\1.\2"),
    (re.compile(rf"roi_head\.semantic_head\.conv_embedding\.conv\.{_P}"),
     r"roi_heads.semantic_head.conv_embedding.\1"),
    (re.compile(rf"roi_head\.semantic_head\.conv_logits\.{_P}"), r"roi_heads.semantic_head.conv_logits.\1"),
]

# key prefixes this module owns (never handed to the trunk mapper)
_POINT_REND_OWNED = ("roi_head.mask_head.", "roi_head.point_head.")
_HTC_OWNED = re.compile(r"roi_head\.(bbox_head\.\d+|mask_head\.\d+|semantic_head)\.")

TrunkMapper = Callable[[Mapping[str, Tensor]], object]


def _apply(rules: _Rules, key: str) -> str | None:
    for pat, repl in rules:
        m = pat.fullmatch(key)
        if m:
            return m.expand(repl)
    return None


def map_mmdet_point_rend_key(key: str) -> str | None:
    """Our name for an mmdet PointRend head key, or None when the key is not a PointRend head parameter."""
    return _apply(POINT_REND_RULES, key)


def map_mmdet_htc_key(key: str) -> str | None:
    """Our name for an mmdet HTC RoI-head key (cascade box/mask heads, semantic head), or None."""
    return _apply(HTC_RULES, key)


def _unwrap(state_dict: Mapping) -> dict[str, Tensor]:
    sd = state_dict.get("state_dict", state_dict) if isinstance(state_dict, Mapping) else state_dict
    sd = dict(sd)
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _trunk(trunk_mapper: TrunkMapper | None | bool) -> TrunkMapper | None:
    if trunk_mapper is False:
        return None
    if trunk_mapper is None or trunk_mapper is True:
        try:
            from refinemask.convert import convert_mmdet_trunk
        except ImportError as e:  # pragma: no cover - the trunk converter ships with refinemask
            raise ImportError(
                "refinemask.convert.convert_mmdet_trunk is not available; pass trunk_mapper=<callable> "
                "(or trunk_mapper=False to convert the heads only)"
            ) from e
        return convert_mmdet_trunk
    return trunk_mapper


def _convert(state_dict, owned: Callable[[str], bool], mapper: Callable[[str], str | None],
             trunk_mapper, what: str) -> dict[str, Tensor]:
    sd = _unwrap(state_dict)
    head, other, unknown = {}, {}, []
    for k, v in sd.items():
        if owned(k):
            new = mapper(k)
            if new is None:
                unknown.append(k)
            else:
                head[new] = v
        else:
            other[k] = v
    tm = _trunk(trunk_mapper)
    out: dict[str, Tensor] = {}
    if tm is not None:
        res = tm(other)
        trunk, rest = res if isinstance(res, tuple) else (res, {})
        out.update(trunk)
        unknown += list(rest)
    if unknown:
        raise UsageError(
            f"{what}: {len(unknown)} key(s) have no mapping: {unknown[:20]}{' ...' if len(unknown) > 20 else ''}"
        )
    out.update(head)
    return out


def convert_mmdet_point_rend(state_dict: Mapping, trunk_mapper: TrunkMapper | None | bool = None) -> dict[str, Tensor]:
    """mmdet 2.x ``PointRend`` state dict → ours (model built from a ``point_rend_*`` preset).

    Args:
        state_dict: the checkpoint's ``state_dict`` (a ``{"state_dict": ...}`` wrapper and a DDP ``module.``
            prefix are removed).
        trunk_mapper: renames every key outside ``roi_head.mask_head.`` / ``roi_head.point_head.`` (backbone,
            neck, RPN, the standard ``roi_head.bbox_head``); default ``refinemask.convert.convert_mmdet_trunk``
            (returns ``(trunk, rest)``; a mapper may also return one dict). False → heads only.
    Returns:
        our state dict (values not copied).
    Raises:
        ValueError: listing every key without a mapping (head keys, or what the trunk mapper left over).
    """
    return _convert(state_dict, lambda k: k.startswith(_POINT_REND_OWNED), map_mmdet_point_rend_key, trunk_mapper,
                    "convert_mmdet_point_rend")


def convert_mmdet_htc(state_dict: Mapping, trunk_mapper: TrunkMapper | None | bool = None) -> dict[str, Tensor]:
    """mmdet 2.x ``HybridTaskCascade`` state dict → ours (model built from an ``htc_*`` preset).

    ``roi_head.bbox_head.{t}`` / ``roi_head.mask_head.{t}`` / ``roi_head.semantic_head`` are mapped here; the rest
    (backbone, neck, RPN) by ``trunk_mapper`` (default ``refinemask.convert.convert_mmdet_trunk``; False → heads
    only). A checkpoint without ``semantic_head`` keys fits the ``htc_without_semantic_*`` presets.

    Raises:
        ValueError: listing every key without a mapping.
    """
    return _convert(state_dict, lambda k: _HTC_OWNED.match(k) is not None, map_mmdet_htc_key, trunk_mapper,
                    "convert_mmdet_htc")


#: detectron2 PointRend heads (``projects/PointRend``): model-zoo files name them ``roi_heads.mask_coarse_head`` /
#: ``roi_heads.mask_point_head``; detectron2 ≥ 0.4 ``roi_heads.mask_head.coarse_head`` / ``.point_head``.
#: (``CoarseMaskHead`` = our ``CoarseMaskHead``; ``StandardPointHead`` = our ``MaskPointHead``.)
_D2_COARSE = r"roi_heads\.(?:mask_coarse_head|mask_head\.coarse_head)\."
_D2_POINT = r"roi_heads\.(?:mask_point_head|mask_head\.point_head)\."
DETECTRON2_POINT_REND_RULES: _Rules = [
    (re.compile(rf"{_D2_COARSE}reduce_spatial_dim_conv\.{_P}"), r"roi_heads.mask_branch.mask_head.downsample_conv.\1"),
    (re.compile(rf"{_D2_COARSE}coarse_mask_fc([1-9])\.{_P}"), None),  # index shift: see the mapper
    (re.compile(rf"{_D2_COARSE}prediction\.{_P}"), r"roi_heads.mask_branch.mask_head.fc_logits.\1"),
    (re.compile(rf"{_D2_POINT}fc([1-9])\.{_P}"), None),
    (re.compile(rf"{_D2_POINT}predictor\.{_P}"), r"roi_heads.mask_branch.point_head.fc_logits.\1"),
]


def _map_detectron2_point_rend_key(key: str) -> str | None:
    for pat, repl in DETECTRON2_POINT_REND_RULES:
        m = pat.fullmatch(key)
        if m is None:
            continue
        if repl is not None:
            return m.expand(repl)
        part = "mask_head.fcs" if "coarse" in pat.pattern else "point_head.fcs"
        return f"roi_heads.mask_branch.{part}.{int(m[1]) - 1}.{m[2]}"
    return None


def convert_detectron2_point_rend(state_dict: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], dict]:
    """detectron2 ``PointRendROIHeads`` (coarse FC head + point head) state dict → ours (a model built from a
    ``point_rend_*detectron2*`` preset).

    ==================================================  =================================================
    detectron2 key (``roi_heads.mask_coarse_head.`` …)  ours (``roi_heads.mask_branch.`` omitted)
    ==================================================  =================================================
    ``reduce_spatial_dim_conv``                          ``mask_head.downsample_conv`` (2×2, stride 2)
    ``coarse_mask_fc{k}``                                ``mask_head.fcs.{k−1}``
    ``prediction``                                       ``mask_head.fc_logits`` (C·7·7, class-major)
    ``roi_heads.mask_point_head.fc{k}``                  ``point_head.fcs.{k−1}`` (Conv1d, fine ‖ coarse)
    ``roi_heads.mask_point_head.predictor``              ``point_head.fc_logits``
    ==================================================  =================================================

    The rest (backbone, RPN, box head) is renamed by ``refinemask.convert_detectron2.convert_detectron2_trunk``.

    Returns:
        (state_dict, info) — ``info`` as the trunk converter's (``pixel_mean`` / ``pixel_std`` / ``dropped``).
    Raises:
        UsageError: listing every key without a mapping (e.g. ``reduce_channel_dim_conv`` of a coarse head fed more
            than 256 channels, or an implicit PointRend head).
    """
    from refinemask.convert_detectron2 import convert_detectron2_trunk, rename_keys

    trunk, rest, info = convert_detectron2_trunk(state_dict)
    head, unknown = rename_keys(rest, _map_detectron2_point_rend_key)
    if unknown:
        raise UsageError(f"convert_detectron2_point_rend: {len(unknown)} key(s) have no mapping: "
                         f"{unknown[:20]}{' ...' if len(unknown) > 20 else ''}")
    return {**trunk, **head}, info

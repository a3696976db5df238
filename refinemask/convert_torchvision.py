"""torchvision ``maskrcnn_resnet50_fpn`` checkpoints → our :class:`~refinemask.detection.TwoStageDetector` state dict.

The result fits a model built from ``mask_rcnn_r50_fpn_torchvision_coco`` (or any preset with
``conventions="torchvision"``, FrozenBN and ``num_classes`` = torchvision's class count − 1), which reproduces
torchvision's test pipeline (``refinemask.config.CONVENTIONS``); ``tests/test_convert_torchvision.py`` checks that
the converted model gives torchvision's boxes, scores and masks.

==============================================  ==================================================================
torchvision key                                 ours
==============================================  ==================================================================
``backbone.body.*`` / ``backbone.fpn.*``        same names (our backbone is built from torchvision's ResNet/FPN)
``rpn.head.conv.0.0.*`` (≤ 0.12: ``conv.*``)    ``rpn.head.conv.*``
``rpn.head.cls_logits / bbox_pred``             same (A = 3, ratio-major; deltas a·4 + coord)
``roi_heads.box_head.fc6 / fc7``                same
``roi_heads.box_predictor.cls_score``           ``roi_heads.box_head.cls_score``: rows (1…K, 0) — background last
``roi_heads.box_predictor.bbox_pred``           ``roi_heads.box_head.bbox_pred``: rows 4…4K+3 (background's dropped)
``roi_heads.mask_head.{i}.0.*`` (≤ 0.12:        ``roi_heads.mask_branch.convs.{2i}.*`` (ReLUs interleave)
``mask_fcn{i+1}``)
``roi_heads.mask_predictor.conv5_mask``         ``roi_heads.mask_branch.deconv``
``roi_heads.mask_predictor.mask_fcn_logits``    ``roi_heads.mask_branch.predictor``: channels 1…K (background's dropped)
==============================================  ==================================================================

torchvision's label k (1…K) becomes our label k − 1; for COCO, K = 90 and label k is COCO category id k
(``refinemask.config.TORCHVISION_COCO_CATEGORY_IDS``). The background rows of ``bbox_pred`` and of the mask logits
are never used by torchvision's inference (it drops column 0 after decoding), so dropping them changes nothing.
``num_batches_tracked`` (present when the model was built with ``nn.BatchNorm2d``) is dropped: the preset uses
FrozenBN, as torchvision's released detection weights do. ``maskrcnn_resnet50_fpn_v2`` (conv-BN box head, GN mask
head) is another architecture: its keys are reported as unmapped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from torch import Tensor

from eval.errors import UsageError

__all__ = ["convert_torchvision_mask_rcnn"]

_P = r"(weight|bias)"

# (full-match pattern, replacement); keys whose tensors are re-laid out are handled separately
_RULES: list[tuple[re.Pattern, str]] = [
    (re.compile(r"backbone\.body\.((?:conv1|bn1)|layer[1-4]\.\d+\.(?:conv[123]|bn[123]|downsample\.[01]))\."
                r"(weight|bias|running_mean|running_var)"), r"backbone.body.\1.\2"),
    (re.compile(rf"backbone\.fpn\.(inner_blocks|layer_blocks)\.([0-3])\.0\.{_P}"), r"backbone.fpn.\1.\2.0.\3"),
    (re.compile(rf"backbone\.fpn\.(inner_blocks|layer_blocks)\.([0-3])\.{_P}"), r"backbone.fpn.\1.\2.0.\3"),  # ≤ 0.12
    (re.compile(rf"rpn\.head\.conv\.0\.0\.{_P}"), r"rpn.head.conv.\1"),
    (re.compile(rf"rpn\.head\.conv\.{_P}"), r"rpn.head.conv.\1"),  # torchvision ≤ 0.12
    (re.compile(rf"rpn\.head\.(cls_logits|bbox_pred)\.{_P}"), r"rpn.head.\1.\2"),
    (re.compile(rf"roi_heads\.box_head\.(fc6|fc7)\.{_P}"), r"roi_heads.box_head.\1.\2"),
    (re.compile(rf"roi_heads\.mask_predictor\.conv5_mask\.{_P}"), r"roi_heads.mask_branch.deconv.\1"),
]
_MASK_CONV = re.compile(rf"roi_heads\.mask_head\.(?:([0-3])\.0|mask_fcn([1-4]))\.{_P}")
_CLS = re.compile(rf"roi_heads\.box_predictor\.cls_score\.{_P}")
_REG = re.compile(rf"roi_heads\.box_predictor\.bbox_pred\.{_P}")
_MASK_LOGITS = re.compile(rf"roi_heads\.mask_predictor\.mask_fcn_logits\.{_P}")


def convert_torchvision_mask_rcnn(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """torchvision ``MaskRCNN`` (ResNet-FPN, ``maskrcnn_resnet50_fpn``) state dict → ours (table above).

    Args:
        state_dict: ``model.state_dict()`` of torchvision's model or a released ``maskrcnn_resnet50_fpn_*.pth``
            (a DDP ``module.`` prefix is removed). K + 1 classes with background at index 0.
    Returns:
        our state dict: cls_score (K + 1, 1024) background last, bbox_pred (4K, 1024), mask logits (K, 256, 1, 1).
    Raises:
        UsageError: keys without a mapping (all listed: e.g. a v2 model or another detector), non-tensor values,
            or classifier shapes that disagree (cls_score rows K + 1, bbox_pred 4(K + 1), mask logits K + 1).
    """
    sd = dict(state_dict)
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    bad = [k for k, v in sd.items() if not isinstance(v, Tensor)]
    if bad:
        raise UsageError(f"convert_torchvision_mask_rcnn: values must be tensors; not tensors: {bad[:10]}")
    out: dict[str, Tensor] = {}
    unknown: list[str] = []
    n_cls = {}
    for k, v in sd.items():
        if k.endswith("num_batches_tracked"):
            continue
        m = _MASK_CONV.fullmatch(k)
        if m:
            i = int(m[1]) if m[1] is not None else int(m[2]) - 1
            out[f"roi_heads.mask_branch.convs.{2 * i}.{m[3]}"] = v
            continue
        if _CLS.fullmatch(k):
            n_cls["cls"] = v.shape[0]
            out[f"roi_heads.box_head.cls_score.{_CLS.fullmatch(k)[1]}"] = v[list(range(1, v.shape[0])) + [0]].clone()
            continue
        if _REG.fullmatch(k):
            n_cls["reg"] = v.shape[0]
            out[f"roi_heads.box_head.bbox_pred.{_REG.fullmatch(k)[1]}"] = v[4:].clone()
            continue
        if _MASK_LOGITS.fullmatch(k):
            n_cls["mask"] = v.shape[0]
            out[f"roi_heads.mask_branch.predictor.{_MASK_LOGITS.fullmatch(k)[1]}"] = v[1:].clone()
            continue
        for pat, repl in _RULES:
            m = pat.fullmatch(k)
            if m:
                out[m.expand(repl)] = v
                break
        else:
            unknown.append(k)
    if unknown:
        raise UsageError(
            f"convert_torchvision_mask_rcnn: {len(unknown)} key(s) have no mapping (not torchvision's "
            f"maskrcnn_resnet50_fpn? v2 models and other detectors are not supported): "
            f"{unknown[:20]}{' ...' if len(unknown) > 20 else ''}")
    if "cls" in n_cls:
        k1 = n_cls["cls"]
        if n_cls.get("reg", 4 * k1) != 4 * k1 or n_cls.get("mask", k1) != k1:
            raise UsageError(
                f"convert_torchvision_mask_rcnn: cls_score has {k1} rows (K + 1 classes), so bbox_pred needs {4 * k1} "
                f"and mask_fcn_logits {k1}; got {n_cls.get('reg')} and {n_cls.get('mask')} (class-agnostic heads "
                f"are not torchvision's layout)")
    return out

"""ResNet / ResNeXt + FPN backbone with mmdetection-2.x settings (docs/models.md §1.1).

Built from torchvision parts (``torchvision.models.resnet*``, ``torchvision.ops.FeaturePyramidNetwork``)
with mmdet's choices on top:

* ``frozen_stages=1``: the stem (conv1, bn1) and ``layer1`` get ``requires_grad=False`` and stay in eval mode.
* Normalisation, chosen by ``norm`` (a config switch, see :data:`NORM_MODES`):

  - ``"bn_eval"`` (default, mmdet ``norm_cfg=dict(type='BN', requires_grad=True), norm_eval=True``):
    ``nn.BatchNorm2d`` kept in eval mode at all times (running statistics frozen), γ/β are parameters and
    are trained in ``layer2``–``layer4``. This is the convention our parameter counts use (44,396,336 for
    Mask R-CNN R50-FPN, docs/models.md §7).
  - ``"frozen_bn"`` (torchvision / detectron2 default): ``torchvision.ops.FrozenBatchNorm2d``; γ/β are
    buffers, so the parameter count drops by 53,120 for ResNet-50 (44,343,216, docs/models.md §7).

* FPN: 1×1 laterals and 3×3 outputs with bias, no norm, nearest upsampling to the lateral's size, P6 = max-pool
  (kernel 1, stride 2) of the P5 *output*; xavier-uniform init with zero bias (mmdet ``FPN.init_weights``).
* ``style="pytorch"`` puts the stride in the 3×3 conv (torchvision's layout); ``style="caffe"`` moves it to the
  first 1×1 conv of each stage (mmdet ``style='caffe'``; only needed for caffe-style checkpoints).

Output: ``OrderedDict`` with keys ``"p2"``… ``"p6"`` (strides 4, 8, 16, 32, 64), 256 channels each.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torchvision.models import resnet
from torchvision.ops import FeaturePyramidNetwork, FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from eval.errors import MissingFileError

__all__ = [
    "BACKBONES",
    "NORM_MODES",
    "FPN_LEVELS",
    "FPN_STRIDES",
    "ResNetFPN",
    "load_backbone_weights",
]

#: ResNet constructors by name (torchvision architecture == mmdet ``ResNet(depth)`` /
#: ``ResNeXt(depth=101, groups=64, base_width=4)``, pytorch style).
BACKBONES: dict[str, Callable[..., resnet.ResNet]] = {
    "resnet50": resnet.resnet50,
    "resnet101": resnet.resnet101,
    "resnext101_64x4d": resnet.resnext101_64x4d,
}

#: Supported normalisation conventions (see module docstring).
NORM_MODES = ("bn_eval", "frozen_bn")

#: FPN output names and their strides in input pixels.
FPN_LEVELS = ("p2", "p3", "p4", "p5", "p6")
FPN_STRIDES = (4, 8, 16, 32, 64)

_STAGES = ("layer1", "layer2", "layer3", "layer4")
_IN_CHANNELS = (256, 512, 1024, 2048)


class ResNetFPN(nn.Module):
    """ResNet/ResNeXt body + FPN neck producing P2–P6.

    Args:
        arch: one of :data:`BACKBONES` (``"resnet50"``, ``"resnet101"``, ``"resnext101_64x4d"``).
        norm: ``"bn_eval"`` (mmdet: BN in eval mode, trainable affine) or ``"frozen_bn"`` (torchvision).
        frozen_stages: ``-1`` freezes nothing, ``0`` the stem, ``k`` the stem and ``layer1..layerk`` (mmdet).
        style: ``"pytorch"`` (stride on the 3×3 conv) or ``"caffe"`` (stride on the first 1×1 conv).
        out_channels: FPN width (256).

    Raises:
        KeyError: unknown ``arch``. ValueError: unknown ``norm``/``style`` or ``frozen_stages`` out of range.

    Forward: ``x`` (B, 3, H, W) normalised, H and W multiples of 32 → ``OrderedDict`` p2…p6 of shape
    (B, out_channels, H/s, W/s) for s in 4, 8, 16, 32, 64 (P6 is ⌈H/64⌉ when H/32 is odd).
    """

    def __init__(
        self,
        arch: str = "resnet50",
        *,
        norm: str = "bn_eval",
        frozen_stages: int = 1,
        style: str = "pytorch",
        out_channels: int = 256,
    ) -> None:
        super().__init__()
        if arch not in BACKBONES:
            raise KeyError(f"unknown backbone {arch!r}; known: {sorted(BACKBONES)}")
        if norm not in NORM_MODES:
            raise ValueError(f"unknown norm mode {norm!r}; expected one of {NORM_MODES}")
        if style not in ("pytorch", "caffe"):
            raise ValueError(f"unknown style {style!r}; expected 'pytorch' or 'caffe'")
        if not -1 <= frozen_stages <= 4:
            raise ValueError(f"frozen_stages must be in [-1, 4], got {frozen_stages}")
        self.arch = arch
        self.norm = norm
        self.frozen_stages = frozen_stages
        self.style = style

        norm_layer = FrozenBatchNorm2d if norm == "frozen_bn" else nn.BatchNorm2d
        body = BACKBONES[arch](weights=None, norm_layer=norm_layer)
        del body.fc, body.avgpool  # classification head is not used (its keys are ignored on load)
        if style == "caffe":
            for name in _STAGES:
                block = getattr(body, name)[0]
                stride = block.conv2.stride
                block.conv1.stride, block.conv2.stride = stride, (1, 1)
        self.body = body

        self.fpn = FeaturePyramidNetwork(list(_IN_CHANNELS), out_channels, extra_blocks=LastLevelMaxPool())
        for m in self.fpn.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        self.out_channels = out_channels
        self._freeze()

    # -- freezing / BN mode -------------------------------------------------------------------------
    def _frozen_modules(self) -> list[nn.Module]:
        mods: list[nn.Module] = []
        if self.frozen_stages >= 0:
            mods += [self.body.conv1, self.body.bn1]
        mods += [getattr(self.body, _STAGES[i]) for i in range(self.frozen_stages)]
        return mods

    def _freeze(self) -> None:
        for m in self._frozen_modules():
            for p in m.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> ResNetFPN:
        """Like ``nn.Module.train`` but frozen stages and every BatchNorm stay in eval mode (mmdet norm_eval)."""
        super().train(mode)
        if mode:
            for m in self._frozen_modules():
                m.eval()
            for m in self.body.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        b = self.body
        x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        c2 = b.layer1(x)
        c3 = b.layer2(c2)
        c4 = b.layer3(c3)
        c5 = b.layer4(c4)
        outs = self.fpn(OrderedDict([("c2", c2), ("c3", c3), ("c4", c4), ("c5", c5)]))
        return OrderedDict(zip(FPN_LEVELS, outs.values()))


def load_backbone_weights(model: nn.Module, path: str | os.PathLike) -> dict[str, list[str]]:
    """Load a torchvision ImageNet classification state dict (e.g. ``resnet50-0676ba61.pth``) into the body.

    Args:
        model: a :class:`ResNetFPN`, or any module with a ``.backbone`` that is one (e.g. ``TwoStageDetector``).
        path: LOCAL file written by ``torch.save(state_dict)``; read with ``torch.load(weights_only=True)``.
            A dict wrapping the weights under ``"state_dict"`` or ``"model"`` is unwrapped.

    Returns:
        ``{"ignored": [...]}``: keys of the file that are deliberately skipped (the classifier ``fc.*``).

    Raises:
        FileNotFoundError: ``path`` does not exist (message names it).
        ValueError: the file is not a state dict, tensor shapes do not match, or keys are missing from the
            file / unexpected in it (message names the path and lists the keys). ``num_batches_tracked``
            buffers may be absent.
        TypeError: ``model`` has no ResNetFPN backbone.
    """
    backbone = model if isinstance(model, ResNetFPN) else getattr(model, "backbone", None)
    if not isinstance(backbone, ResNetFPN):
        raise TypeError(f"expected a ResNetFPN or a model with .backbone, got {type(model).__name__}")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MissingFileError(f"backbone weights not found: {path!r}. Fix: pass the local torchvision ImageNet "
                               f"state dict of the preset's backbone (refinemask.config.IMAGENET_WEIGHT_FILES names "
                               f"them, e.g. resnet50-0676ba61.pth)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path!r} does not hold a state dict of tensors")
    ignored = sorted(k for k in state if k.startswith("fc."))
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    try:
        result = backbone.body.load_state_dict(state, strict=False)
    except RuntimeError as e:  # size mismatch
        raise ValueError(f"cannot load backbone weights from {path!r} into {backbone.arch}: {e}") from e
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    unexpected = list(result.unexpected_keys)
    if missing or unexpected:
        raise ValueError(
            f"backbone weights {path!r} do not match {backbone.arch}: "
            f"missing keys {missing[:20]}{' ...' if len(missing) > 20 else ''} ({len(missing)}), "
            f"unexpected keys {unexpected[:20]}{' ...' if len(unexpected) > 20 else ''} ({len(unexpected)})"
        )
    return {"ignored": ignored}

"""The one registry of the model package: presets by name, mask branches and RoI heads by config class.

A plain-dict registry (detectron2's idea without its machinery). The model package registers its own presets
(``refinemask/presets/``) here and its own branches (:class:`~refinemask.config.FCNMaskConfig`,
:class:`~refinemask.config.RefineMaskConfig`) in :mod:`refinemask.models`; a plug-in package registers its own
when it is imported (``import baselines`` adds PointRend and HTC; the ``rmbench`` CLI does this). The model
package never imports a plug-in.

No torch import here: listing presets is cheap.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from eval.errors import UsageError

from .config import MaskHeadConfig, Preset
from .presets import MASK_RCNN_PRESETS, REFINEMASK_PRESETS

__all__ = [
    "PRESETS", "MASK_BRANCH_BUILDERS", "ROI_HEAD_BUILDERS", "register_presets", "register_mask_branch",
    "register_roi_heads", "get_preset", "list_presets", "UnknownPresetError",
]

#: preset name → :class:`Preset` (every registered family)
PRESETS: dict[str, Preset] = {}
#: mask-config class → ``builder(preset) -> MaskBranch`` (for presets with the standard RoI heads)
MASK_BRANCH_BUILDERS: dict[type, Callable[[Preset], Any]] = {}
#: mask-config class → ``builder(preset) -> nn.Module`` of RoI heads that replace the standard ones (HTC)
ROI_HEAD_BUILDERS: dict[type, Callable[[Preset], Any]] = {}


class UnknownPresetError(KeyError, UsageError):
    """An unknown preset name; the message lists the closest known names.

    A ``KeyError`` for dict-like callers and a ``ValueError`` so the CLI reports it as bad input (exit 2).
    """

    def __str__(self) -> str:  # KeyError quotes its message; show it as written
        return str(self.args[0]) if self.args else ""


def register_presets(presets: dict[str, Preset]) -> None:
    """Add presets to :data:`PRESETS`.

    Raises:
        ValueError: a name is already registered (with another value) or does not equal its preset's name.
    """
    for name, p in presets.items():
        if not isinstance(p, Preset) or name != p.name:
            raise ValueError(f"preset {name!r} must be a Preset registered under its own name")
        if name in PRESETS and PRESETS[name] != p:
            raise ValueError(f"preset {name!r} is registered twice")
        PRESETS[name] = p


def _register(table: dict, cfg_class: type, builder: Callable) -> None:
    if not (isinstance(cfg_class, type) and issubclass(cfg_class, MaskHeadConfig)):
        raise TypeError(f"{cfg_class!r} is not a MaskHeadConfig subclass")
    if table.get(cfg_class, builder) is not builder:
        raise ValueError(f"a builder for {cfg_class.__name__} is registered twice")
    table[cfg_class] = builder


def register_mask_branch(cfg_class: type, builder: Callable[[Preset], Any]) -> None:
    """Build presets whose ``mask_head_cfg`` is a ``cfg_class`` with ``builder(preset) -> MaskBranch``."""
    _register(MASK_BRANCH_BUILDERS, cfg_class, builder)


def register_roi_heads(cfg_class: type, builder: Callable[[Preset], Any]) -> None:
    """Build the whole RoI heads of presets whose ``mask_head_cfg`` is a ``cfg_class`` (``replaces_roi_heads``)."""
    _register(ROI_HEAD_BUILDERS, cfg_class, builder)


def get_preset(name: str) -> Preset:
    """The registered preset ``name``.

    Raises:
        UnknownPresetError: unknown name; the message gives the closest names and says that PointRend / HTC
            presets exist only once ``baselines`` is imported.
    """
    try:
        return PRESETS[name]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(name), PRESETS, n=5, cutoff=0.5)
        hint = (f"closest known presets: {', '.join(close)}" if close
                else f"none of the {len(PRESETS)} known presets is close")
        raise UnknownPresetError(
            f"unknown preset {name!r} ({hint}). Fix: pick a name from `rmbench models`; PointRend / HTC presets "
            f"are registered by `import baselines`") from None


def list_presets() -> list[str]:
    """Sorted names of every registered preset."""
    return sorted(PRESETS)


register_presets(MASK_RCNN_PRESETS)
register_presets(REFINEMASK_PRESETS)

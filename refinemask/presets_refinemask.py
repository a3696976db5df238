"""RefineMask presets, one per paper table row (plain data, no torch): filled by the RefineMask head's owner.

Each entry is a ``refinemask.config.Preset`` with ``mask_head="refinemask"`` and a ``mask_head_cfg``; ablation
presets change only what the paper's ablation changed (``dataclasses.replace`` of the default).
"""

from __future__ import annotations

REFINEMASK_PRESETS: dict = {}

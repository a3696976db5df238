"""PointRend and HTC, re-implemented on the shared trunk; importing this package registers them.

``import baselines`` adds to :mod:`refinemask.registry`:

- the PointRend and HTC presets (:data:`baselines.presets.BASELINE_PRESETS`, Tables 2 and 8);
- :class:`~baselines.presets.PointRendConfig` → :func:`baselines.point_rend.build_point_rend_branch` (a mask branch);
- :class:`~baselines.presets.HTCConfig` → :func:`baselines.htc.build_htc_roi_heads` (RoI heads as a whole).

The builders import their torch modules on first use, so registering (and listing presets) stays cheap. The model
package never imports this package; the ``rmbench`` CLI (the composition root) does.
"""

from __future__ import annotations

from refinemask.registry import register_mask_branch, register_presets, register_roi_heads

from .presets import BASELINE_PRESETS, HTCConfig, PointRendConfig

__all__ = ["BASELINE_PRESETS", "HTCConfig", "PointRendConfig"]


def _point_rend_branch(preset):
    from .point_rend import build_point_rend_branch

    return build_point_rend_branch(preset)


def _htc_roi_heads(preset):
    from .htc import build_htc_roi_heads

    return build_htc_roi_heads(preset)


register_presets(BASELINE_PRESETS)
register_mask_branch(PointRendConfig, _point_rend_branch)
register_roi_heads(HTCConfig, _htc_roi_heads)

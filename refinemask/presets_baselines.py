"""PointRend and HTC presets (paper Tables 2 and 8), plain data: filled by the baselines' owner.

PointRend presets set ``mask_head="point_rend"``; HTC presets set ``roi_head="htc"``.
"""

from __future__ import annotations

BASELINE_PRESETS: dict = {}

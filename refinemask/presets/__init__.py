"""The model package's own presets, one module per family, each a plain ``{name: Preset}`` dict.

- :mod:`.mask_rcnn`: Mask R-CNN rows of Tables 1, 2, 9 and 11.
- :mod:`.refinemask`: RefineMask rows of Tables 1, 3–9, 11 and 13 (and the official "faster and better" head).

PointRend and HTC presets live with their models in ``baselines/presets.py`` and are registered with
:mod:`refinemask.registry` when ``baselines`` is imported. Look presets up with
:func:`refinemask.registry.get_preset`, never through these dicts.
"""

from .mask_rcnn import MASK_RCNN_PRESETS
from .refinemask import REFINEMASK_PRESETS

__all__ = ["MASK_RCNN_PRESETS", "REFINEMASK_PRESETS"]

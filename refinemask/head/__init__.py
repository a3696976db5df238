"""RefineMask (CVPR 2021): semantic head, Semantic Fusion Module, multi-stage mask head and boundary-aware
refinement, plugged into the shared trunk as a :class:`~refinemask.detection.mask_branch.MaskBranch`.

* :mod:`.semantic` — the semantic head on P2 and its image-level foreground target (Sec. 3.1).
* :mod:`.sfm` — the Semantic Fusion Module and the Table 4 fusion blocks (Sec. 3.2, Fig. 3).
* :mod:`.boundary` — the boundary operator (Eq. 1 / appendix A.1), the BAR region, loss and merge (Eq. 2–6).
* :mod:`.refine_mask_head` — the branch itself; :func:`build_refinemask_branch` is what ``build_model`` calls.

The head's config (:class:`~refinemask.config.RefineMaskConfig`) lives in :mod:`refinemask.config` and its presets
in :mod:`refinemask.presets.refinemask` (plain data); checkpoint conversion in :mod:`refinemask.convert`.
"""

from refinemask.config import RefineMaskConfig

from .boundary import (
    bar_loss,
    bar_merge,
    bar_region,
    boundary_region,
    merge_stage_logits,
    propagate_prediction,
    refine_mask_loss,
)
from .refine_mask_head import RefineMaskBranch, build_refinemask_branch, point_roi_align, stage_channels
from .semantic import SemanticHead, semantic_loss, semantic_target
from .sfm import FUSIONS, SFM, ConvFusion, MultiBranchFusion, SimpleSFM, build_fusion

__all__ = [
    "RefineMaskConfig", "RefineMaskBranch", "build_refinemask_branch", "point_roi_align", "stage_channels",
    "SemanticHead", "semantic_target", "semantic_loss",
    "FUSIONS", "SFM", "SimpleSFM", "MultiBranchFusion", "ConvFusion", "build_fusion",
    "boundary_region", "bar_region", "bar_loss", "propagate_prediction", "bar_merge", "merge_stage_logits",
    "refine_mask_loss",
]

"""PointRend and HTC presets (paper Tables 2 and 8) and their branch configs — plain data, no torch.

PointRend presets carry a :class:`PointRendConfig` in ``mask_head_cfg`` (a mask branch); HTC presets an
:class:`HTCConfig`, whose class replaces the standard RoI heads as a whole (the cascade). The models live in
``baselines/point_rend.py`` and ``baselines/htc.py``.

Paper rows and how we read them:

* Table 2 ("Efficiency", all R50-FPN 1x): PointRend AP 35.6 / AP* 38.7 / 11.4 fps; HTC 37.4 / 40.7 / 4.4 fps.
* Table 8 (single-model results, † = the authors' implementation): PointRend† R50 AP_dev 36.8 / AP* 39.7,
  R101 38.2 / 41.4, X101‡ 41.1 / 44.4; HTC† R50 38.6 / 41.3, R101 39.7 / 42.5, X101 41.3 / 44.1. The paper does
  not name the schedule of the rows without ‡; the Mask R-CNN† and RefineMask R50/R101 rows of Table 8 repeat
  the **2x** numbers of Table 1 (AP* 37.7 / 39.3 and 41.5 / 42.3), so we give those rows the 2x schedule (an
  inference, recorded in each preset's notes). ‡ = 3x with multi-scale short side [640, 800].
* HTC without COCO-stuff (docs/models.md §5.4): three variants per HTC row — ``htc_*`` (the paper's HTC: 183-class
  COCO-stuff semantic branch; training needs the stuffthingmaps, see :attr:`HTCConfig.stuff_root`),
  ``htc_without_semantic_*`` (mmdet's own config, no semantic branch) and ``htc_thing_semantic_*`` (the same
  semantic branch trained on a per-pixel label map built from the instance masks, 81 classes).

``baselines/__init__.py`` registers :data:`BASELINE_PRESETS` and the two config classes with
``refinemask.registry`` (plain data here: no torch import).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

from refinemask.config import (
    SCHEDULE_1X,
    SCHEDULE_2X,
    SCHEDULE_3X,
    BoxHeadConfig,
    MaskHeadConfig,
    Preset,
    RPNConfig,
    preset_dict,
)
from refinemask.presets.mask_rcnn import MS_640_800_VALUES

__all__ = [
    "PointRendConfig", "HTCConfig", "POINT_REND_VARIANTS", "HTC_SEMANTIC_MODES", "STUFF_ROOT_ENV",
    "BASELINE_PRESETS",
]

#: ``PointRendConfig.variant`` values (docs/models.md §4.1 mmdet, §4.2 detectron2).
POINT_REND_VARIANTS = ("mmdet", "detectron2")
#: ``HTCConfig.semantic`` values (docs/models.md §5.1, §5.4).
HTC_SEMANTIC_MODES = ("stuff", "things", "none")
#: environment variable consulted when ``HTCConfig.stuff_root`` is None.
STUFF_ROOT_ENV = "RMBENCH_COCO_STUFF"


@dataclass(frozen=True)
class PointRendConfig(MaskHeadConfig):
    """PointRend mask branch (mmdet ``PointRendRoIHead`` + ``CoarseMaskHead`` + ``MaskPointHead``; docs/models.md §4).

    Attributes:
        variant: ``"mmdet"`` (default; mmdet 2.x as the RefineMask authors most likely ran it) or
            ``"detectron2"`` (docs/models.md §4.2). The variant switches (i) the coarse-head initialisation (mmdet:
            hidden FCs xavier-normal, logits FC weight constant 0.001; detectron2: hidden FCs Caffe2-xavier
            (kaiming-uniform a=1), logits FC N(0, 0.001)), (ii) the subdivision schedule (mmdet: upsample the
            7×7 coarse logits, skipping steps whose every cell would be recomputed; detectron2: a regular grid
            of point predictions at the initial resolution, doubled from 7 while 4·r² ≤ num_points → 28×28,
            then the remaining steps — the same 224×224 map), and (iii) ``train_on_pred_boxes``.
        in_feature / in_stride: the single FPN level for coarse features and fine-grained points (P2, 4 px).
        roi_size: coarse-head input side (14; point-sampled RoIAlign = aligned RoIAlign with 1 sample per bin).
        conv_dim / fc_dim / num_fcs: coarse head: 2×2 stride-2 conv 256 → 2 × FC 1024 → FC C·7·7.
        point_num_fcs / point_fc_dim / coarse_pred_each_layer: point head: 3 × Conv1d 256 (+ReLU), the C coarse
            logits re-attached after every layer, Conv1d → C.
        class_agnostic: one mask channel instead of C (both heads).
        train_num_points / oversample_ratio / importance_sample_ratio: 14·14 = 196 points per RoI in training:
            3·196 uniform candidates, the 0.75·196 = 147 most uncertain kept, 49 fresh uniform points added.
        subdivision_steps / subdivision_num_points / scale_factor: inference: 5 ×2-steps from 7×7 to 224×224,
            recomputing the 28·28 = 784 most uncertain cells per step.
        train_on_pred_boxes: train the mask branch on the box head's regressed positives (detectron2's
            ``TRAIN_ON_PRED_BOXES``); None → the variant's default (mmdet False, detectron2 True).
        loss_mask_weight / loss_point_weight: 1.0 / 1.0 (mmdet ``loss_mask`` on 7×7 targets, ``loss_point``).
    """

    kind: ClassVar[str] = "point_rend"
    method: ClassVar[str] = "PointRend"
    variant: str = "mmdet"
    in_feature: str = "p2"
    in_stride: int = 4
    roi_size: int = 14
    conv_dim: int = 256
    fc_dim: int = 1024
    num_fcs: int = 2
    point_num_fcs: int = 3
    point_fc_dim: int = 256
    coarse_pred_each_layer: bool = True
    class_agnostic: bool = False
    train_num_points: int = 14 * 14
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75
    subdivision_steps: int = 5
    subdivision_num_points: int = 28 * 28
    scale_factor: int = 2
    train_on_pred_boxes: bool | None = None
    loss_mask_weight: float = 1.0
    loss_point_weight: float = 1.0

    @property
    def coarse_size(self) -> int:
        """Side of the coarse logits (roi_size / 2 = 7)."""
        return self.roi_size // 2

    @property
    def use_pred_boxes(self) -> bool:
        """``train_on_pred_boxes`` resolved against the variant default."""
        if self.train_on_pred_boxes is None:
            return self.variant == "detectron2"
        return bool(self.train_on_pred_boxes)


@dataclass(frozen=True)
class HTCConfig(MaskHeadConfig):
    """Hybrid Task Cascade RoI heads (mmdet ``HybridTaskCascadeRoIHead``; docs/models.md §5).

    Shared RoI settings (sampler 512 / 25 %, GT added, CE + smooth-L1 β=1 box losses, test score 0.001 / NMS 0.5
    / 100 detections) come from ``Preset.roi``; the per-stage values are here.

    Attributes:
        semantic: ``"stuff"`` (the paper's HTC: ``FusedSemanticHead`` with 183 COCO-stuff thing+stuff classes,
            trained on ``stuffthingmaps`` PNGs), ``"things"`` (docs/models.md §5.4 option 2: same head, labels
            painted from the instance masks, ``num_classes + 1`` classes, 0 = background, 255 = crowd/padding) or
            ``"none"`` (mmdet ``htc_without_semantic_r50_fpn_1x_coco``).
        stuff_root: folder holding the COCO-stuff label PNGs of the training split (``<image stem>.png``, e.g.
            ``stuffthingmaps_trainval2017/train2017``); None → ``$RMBENCH_COCO_STUFF``. Needed only to *train*
            a ``semantic="stuff"`` model (building, counting and timing work without it); a set but missing
            folder is an error at build time, and training without ``targets[i]["semantic_seg"]`` raises a
            ValueError naming this field.
        num_stages / stage_iou_thrs / stage_loss_weights: 3; IoU 0.5 / 0.6 / 0.7 (pos = neg = min-pos IoU);
            weights 1 / 0.5 / 0.25 on each stage's box and mask losses.
        stage_bbox_stds: DeltaXYWH target stds per stage; the box coder weights are 1 / std exactly.
        interleaved / mask_info_flow: HTC's two execution flags (both True).
        semantic_fusion: RoI features the semantic embedding is added to: ``("bbox", "mask")``.
        semantic_num_classes: None → 183 for ``"stuff"``, ``num_classes + 1`` for ``"things"``.
        semantic_fusion_level: FPN level the semantic head fuses at (1 = P3, stride 8).
        semantic_loss_weight / semantic_ignore_index: 0.2 / 255 (CE, not scaled by stage weights).
    """

    kind: ClassVar[str] = "htc"
    method: ClassVar[str] = "HTC"
    replaces_roi_heads: ClassVar[bool] = True
    semantic: str = "stuff"
    stuff_root: str | None = None
    num_stages: int = 3
    stage_iou_thrs: tuple[float, ...] = (0.5, 0.6, 0.7)
    stage_loss_weights: tuple[float, ...] = (1.0, 0.5, 0.25)
    stage_bbox_stds: tuple[tuple[float, float, float, float], ...] = (
        (0.1, 0.1, 0.2, 0.2),
        (0.05, 0.05, 0.1, 0.1),
        (0.033, 0.033, 0.067, 0.067),
    )
    interleaved: bool = True
    mask_info_flow: bool = True
    semantic_fusion: tuple[str, ...] = ("bbox", "mask")
    semantic_num_classes: int | None = None
    semantic_fusion_level: int = 1
    semantic_loss_weight: float = 0.2
    semantic_ignore_index: int = 255

    @property
    def with_semantic(self) -> bool:
        return self.semantic != "none"

    def stuff_dir(self) -> Path | None:
        """The COCO-stuff label-map folder: :attr:`stuff_root`, else ``$RMBENCH_COCO_STUFF``, else None."""
        root = self.stuff_root or os.environ.get(STUFF_ROOT_ENV)
        return Path(root) if root else None

    def data_needs(self, preset_name: str) -> tuple[Path | None, bool]:
        """What the training data must add: (label-map folder for ``semantic="stuff"``, crowd masks for
        ``semantic="things"``); see :meth:`refinemask.config.MaskHeadConfig.data_needs`.

        Raises:
            ValueError: ``semantic="stuff"`` and no existing folder is configured (before any training).
        """
        if self.semantic == "stuff":
            root = self.stuff_dir()
            if root is None or not root.is_dir():
                where = "no folder is configured" if root is None else f"{str(root)!r} is not a folder"
                raise ValueError(
                    f"preset {preset_name!r} trains HTC's semantic branch on COCO-stuff label maps, but {where}. "
                    f"Fix: download stuffthingmaps_trainval2017.zip and set ${STUFF_ROOT_ENV} (or --cfg-options "
                    f"mask_head_cfg.stuff_root=DIR) to its train2017 folder, or use an htc_without_semantic_* / "
                    f"htc_thing_semantic_* preset")
            return root, False
        return None, self.semantic == "things"

    def stage_bbox_weights(self, stage: int) -> tuple[float, float, float, float]:
        """torchvision ``BoxCoder`` weights of ``stage`` = 1 / std (10,10,5,5), (20,20,10,10), (30.30,…,14.93,…)."""
        return tuple(1.0 / s for s in self.stage_bbox_stds[stage])  # type: ignore[return-value]

    def semantic_classes(self, num_classes: int) -> int:
        """Semantic logits: 183 (COCO-stuff), ``num_classes + 1`` (things + background) or 0 (no branch)."""
        if self.semantic == "none":
            return 0
        if self.semantic_num_classes is not None:
            return self.semantic_num_classes
        return 183 if self.semantic == "stuff" else num_classes + 1


# ------------------------------------------------------------------------------------------------------------
# PointRend presets (docs/models.md §4.1: same pytorch-R50, single-scale 1x recipe as the other models; only the mask
# branch differs)
# ------------------------------------------------------------------------------------------------------------
_PR_NOTE = (
    "mmdet PointRendRoIHead/CoarseMaskHead/MaskPointHead (docs/models.md §4.1) on our pytorch-style trunk (BN "
    "eval-mode, trainable affine, single-scale) as docs/models.md recommends; mmdet's own zoo config is caffe-R50 "
    "multi-scale (box 38.4 / mask 36.3)."
)

_POINT_REND_R50_1X = Preset(
    name="point_rend_r50_fpn_1x_coco",
    dataset="coco_2017",
    num_classes=80,
    mask_head_cfg=PointRendConfig(),
    paper_ref="Table 2 PointRend R50-FPN 1x (AP 35.6, AP* 38.7, 11.4 fps)",
    notes=_PR_NOTE,
)

_POINT_REND = (
    _POINT_REND_R50_1X,
    replace(
        _POINT_REND_R50_1X,
        name="point_rend_detectron2_r50_fpn_1x_coco",
        mask_head_cfg=PointRendConfig(variant="detectron2"),
        paper_ref="(no paper row) PointRend R50-FPN 1x, detectron2 head variant; d2 README mask AP 36.2",
        notes=(
            "detectron2 PointRend head (docs/models.md §4.2): train on predicted boxes, Caffe2-xavier coarse FCs, "
            "regular-grid subdivision start. The trunk stays ours (BN eval-mode, pytorch R50, single-scale), not "
            "detectron2's FrozenBN / MSRA R50 / multi-scale 90k-iteration recipe."
        ),
    ),
    replace(
        _POINT_REND_R50_1X,
        name="point_rend_r50_fpn_1x_detectron2_coco",
        mask_head_cfg=PointRendConfig(variant="detectron2"),
        backbone_style="caffe",
        norm="frozen_bn",
        train_scales=MS_640_800_VALUES,
        paper_ref="(no paper row) detectron2 model zoo pointrend_rcnn_R_50_FPN_1x_coco (d2 README mask AP 36.2)",
        notes=(
            "For detectron2 PointRend checkpoints converted with `rmbench convert --from detectron2` "
            "(baselines.convert.convert_detectron2_point_rend): detectron2 head variant on detectron2's trunk "
            "(MSRA caffe-style R50, FrozenBN, short side in {640..800 step 32}); 1x = mmdet's 12 epochs here "
            "(detectron2: 90k iterations of 16 images). Not parity-tested (detectron2 cannot be installed here)."
        ),
    ),
    replace(
        _POINT_REND_R50_1X,
        name="point_rend_r50_fpn_2x_coco",
        schedule=SCHEDULE_2X,
        paper_ref="Table 8 PointRend† R50-FPN (AP_dev 36.8, AP* 39.7, 11.4 fps)",
        notes=_PR_NOTE + " Schedule 2x inferred: the paper does not state it; Table 8's Mask R-CNN†/RefineMask "
        "R50 rows equal Table 1's 2x numbers.",
    ),
    replace(
        _POINT_REND_R50_1X,
        name="point_rend_r101_fpn_2x_coco",
        backbone="resnet101",
        schedule=SCHEDULE_2X,
        paper_ref="Table 8 PointRend† R101-FPN (AP_dev 38.2, AP* 41.4, 10.0 fps)",
        notes=_PR_NOTE + " Schedule 2x inferred (Table 8's Mask R-CNN†/RefineMask R101 rows equal Table 1's 2x).",
    ),
    replace(
        _POINT_REND_R50_1X,
        name="point_rend_x101_fpn_3x_ms_coco",
        backbone="resnext101_64x4d",
        schedule=SCHEDULE_3X,
        train_scales=((1333, 640), (1333, 800)),
        multiscale_mode="range",
        paper_ref="Table 8 PointRend†‡ X101-FPN 3x multi-scale [640, 800] (AP_dev 41.1, AP* 44.4, 6.7 fps)",
        notes=_PR_NOTE + " ResNeXt-101 64x4d with torchvision ImageNet weights (as mask_rcnn_x101_fpn_3x_ms_coco).",
    ),
)

# ------------------------------------------------------------------------------------------------------------
# HTC presets (docs/models.md §5): RPN smooth-L1 β=1/9 and 2000 train proposals; box losses CE + smooth-L1 β=1;
# test score threshold 0.001. Three semantic variants per row (docs/models.md §5.4).
# ------------------------------------------------------------------------------------------------------------
_HTC_RPN = RPNConfig(post_nms_top_n_train=2000, loss_bbox="smooth_l1", smooth_l1_beta=1.0 / 9.0)
_HTC_ROI = BoxHeadConfig(loss_bbox="smooth_l1", smooth_l1_beta=1.0, score_thresh=0.001)
_HTC_NOTE = (
    "mmdet configs/htc (docs/models.md §5). Deviation: mmdet's HTC RPN uses allowed_border=0 (anchors crossing the "
    "image border ignored in the RPN loss); our RPN ignores only batch-padding anchors (allowed_border=-1)."
)
_HTC_VARIANTS = {
    "stuff": ("htc", "semantic branch on COCO-stuff stuffthingmaps (183 classes): set HTCConfig.stuff_root or "
                     "$RMBENCH_COCO_STUFF to train."),
    "none": ("htc_without_semantic", "mmdet htc_without_semantic_r50_fpn_1x_coco: no semantic head, no fusion "
                                     "(docs/models.md §5.4 option 1); not the paper's HTC."),
    "things": ("htc_thing_semantic", "semantic branch trained on labels painted from the instance masks "
                                     "(81 classes, docs/models.md §5.4 option 2): HTC's compute, not the paper's HTC."),
}
_HTC_ROWS = (
    # (suffix, backbone, schedule, scales, mode, paper_ref, extra note)
    ("r50_fpn_1x_coco", "resnet50", SCHEDULE_1X, ((1333, 800),), "value",
     "Table 2 HTC R50-FPN 1x (AP 37.4, AP* 40.7, 4.4 fps)", ""),
    ("r50_fpn_2x_coco", "resnet50", SCHEDULE_2X, ((1333, 800),), "value",
     "Table 8 HTC† R50-FPN (AP_dev 38.6, AP* 41.3, 4.4 fps)",
     " Schedule 2x inferred (not stated; mmdet's HTC zoo uses 20 epochs)."),
    ("r101_fpn_2x_coco", "resnet101", SCHEDULE_2X, ((1333, 800),), "value",
     "Table 8 HTC† R101-FPN (AP_dev 39.7, AP* 42.5, 3.9 fps)",
     " Schedule 2x inferred (not stated; mmdet's HTC zoo uses 20 epochs)."),
    ("x101_fpn_2x_coco", "resnext101_64x4d", SCHEDULE_2X, ((1333, 800),), "value",
     "Table 8 HTC† X101-FPN (AP_dev 41.3, AP* 44.1, 3.4 fps)",
     " Schedule 2x inferred (not stated; no ‡ so single-scale). ResNeXt-101 64x4d, torchvision ImageNet weights."),
)


def _htc_presets() -> tuple[Preset, ...]:
    out = []
    for suffix, backbone, schedule, scales, mode, ref, extra in _HTC_ROWS:
        for semantic, (prefix, vnote) in _HTC_VARIANTS.items():
            variant_ref = ref if semantic == "stuff" else f"(variant of) {ref}"
            out.append(
                Preset(
                    name=f"{prefix}_{suffix}",
                    dataset="coco_2017",
                    num_classes=80,
                    backbone=backbone,
                    mask_head_cfg=HTCConfig(semantic=semantic),
                    schedule=schedule,
                    train_scales=scales,
                    multiscale_mode=mode,
                    rpn=_HTC_RPN,
                    roi=_HTC_ROI,
                    paper_ref=variant_ref,
                    notes=f"{_HTC_NOTE} {vnote}{extra}",
                )
            )
    return tuple(out)


#: every PointRend and HTC preset, registered by ``baselines/__init__.py``
BASELINE_PRESETS: dict[str, Preset] = preset_dict(*_POINT_REND, *_htc_presets())

"""RefineMask presets, one per paper table row (plain data, no torch).

Every preset is a :class:`refinemask.config.Preset` with a :class:`~refinemask.config.RefineMaskConfig` in
``mask_head_cfg``. What RefineMask changes relative to the Mask R-CNN trunk (docs/models.md §2.1): box-head loss
weights CE 2.0 / L1 2.0, gradient clipping at L2 norm 35, and the mask head. Ablation presets (paper Tables 3–7,
13) are ``dataclasses.replace`` of ``refinemask_r50_fpn_1x_coco`` that change only what the paper's ablation
changed; where the paper leaves a consequence open, the choice is stated in the preset's ``notes``.

Main rows: Table 1 / 8 (COCO R50 / R101 1x, 2x; X101 3x multi-scale; Table 8 also reports R50 / R101 3x
multi-scale and X101 without ‡), Table 9 (LVIS v1.0), Table 11 (Cityscapes), plus the official "faster and
better" head (docs/models.md §2.8, not in the paper).
"""

from __future__ import annotations

from dataclasses import replace

from refinemask.config import (
    SCHEDULE_1X,
    SCHEDULE_2X,
    SCHEDULE_3X,
    BoxHeadConfig,
    Preset,
    RefineMaskConfig,
    Schedule,
    preset_dict,
)

from .mask_rcnn import MS_640_800_VALUES

__all__ = ["REFINEMASK_PRESETS"]

# --------------------------------------------------------------------------------------------------------------
# main rows
# --------------------------------------------------------------------------------------------------------------
_RM_BOX = BoxHeadConfig(loss_cls_weight=2.0, loss_bbox_weight=2.0)  # paper Sec. 3.4: detection-head loss weight 2.0


def _clip(s: Schedule) -> Schedule:
    return replace(s, grad_clip_norm=35.0)


_R50_1X = Preset(
    name="refinemask_r50_fpn_1x_coco",
    dataset="coco_2017",
    num_classes=80,
    mask_head_cfg=RefineMaskConfig(),
    schedule=_clip(SCHEDULE_1X),
    roi=_RM_BOX,
    paper_ref="Table 1/2 RefineMask R50-FPN 1x (AP 37.3, AP* 40.9, APs* 24.1, APm* 48.8, APl* 58.0)",
    notes=(
        "configs/refinemask/coco/r50-refinemask-1x.py: RefineMaskHead (3 SFMs, 14->112), box CE/L1 weight 2.0, "
        "grad clip 35, 12 epochs lr 0.02 for 16 images (paper: 16 GPUs x 1 image). Mask targets are aligned "
        "RoIAlign of GT bitmaps (the original rasterises polygons at every size, docs/models.md §2.4/§9.4)."
    ),
)

_MS_640_800_RANGE = ((1333, 640), (1333, 800))

_MAIN = [
    _R50_1X,
    replace(
        _R50_1X,
        name="refinemask_r50_fpn_2x_coco",
        schedule=_clip(SCHEDULE_2X),
        paper_ref="Table 1/8 RefineMask R50-FPN 2x (AP 37.9, AP* 41.5; test-dev 38.2)",
        notes="configs/refinemask/coco/r50-refinemask-2x.py: 24 epochs, steps 16/22.",
    ),
    replace(
        _R50_1X,
        name="refinemask_r101_fpn_1x_coco",
        backbone="resnet101",
        paper_ref="Table 1 RefineMask R101-FPN 1x (AP 38.6, AP* 41.7)",
        notes="configs/refinemask/coco/r101-refinemask-1x.py: depth 101 only.",
    ),
    replace(
        _R50_1X,
        name="refinemask_r101_fpn_2x_coco",
        backbone="resnet101",
        schedule=_clip(SCHEDULE_2X),
        paper_ref="Table 1/8 RefineMask R101-FPN 2x (AP 38.8, AP* 42.3; test-dev 39.4)",
        notes="configs/refinemask/coco/r101-refinemask-2x.py.",
    ),
    replace(
        _R50_1X,
        name="refinemask_x101_fpn_3x_ms_coco",
        backbone="resnext101_64x4d",
        schedule=_clip(SCHEDULE_3X),
        train_scales=_MS_640_800_RANGE,
        multiscale_mode="range",
        paper_ref="Table 1/8 RefineMask‡ X101-FPN 3x multi-scale [640, 800] (AP 41.5, AP* 45.3; test-dev 41.8)",
        notes=(
            "No official config. Paper: 3x schedule, multi-scale short side [640, 800]; schedule as mmdet mstrain 3x "
            "(36 epochs, steps 27/33), like mask_rcnn_x101_fpn_3x_ms_coco. ResNeXt-101 64x4d with torchvision "
            "ImageNet weights (mmdet used open-mmlab://resnext101_64x4d)."
        ),
    ),
    replace(
        _R50_1X,
        name="refinemask_r50_fpn_3x_ms_coco",
        schedule=_clip(SCHEDULE_3X),
        train_scales=_MS_640_800_RANGE,
        multiscale_mode="range",
        paper_ref="Table 8 RefineMask‡ R50-FPN 3x multi-scale [640, 800] (test-dev 40.2, AP* 43.4)",
        notes="No official config; 3x multi-scale as refinemask_x101_fpn_3x_ms_coco with an R50 backbone.",
    ),
    replace(
        _R50_1X,
        name="refinemask_r101_fpn_3x_ms_coco",
        backbone="resnet101",
        schedule=_clip(SCHEDULE_3X),
        train_scales=_MS_640_800_RANGE,
        multiscale_mode="range",
        paper_ref="Table 8 RefineMask‡ R101-FPN 3x multi-scale [640, 800] (test-dev 41.2, AP* 44.6)",
        notes="No official config; 3x multi-scale as refinemask_x101_fpn_3x_ms_coco with an R101 backbone.",
    ),
    replace(
        _R50_1X,
        name="refinemask_x101_fpn_2x_coco",
        backbone="resnext101_64x4d",
        schedule=_clip(SCHEDULE_2X),
        paper_ref="Table 8 RefineMask X101-FPN without ‡ (test-dev 41.0, AP* 43.6)",
        notes=(
            "Schedule inferred: Table 8's un-starred R50/R101 RefineMask rows equal Table 1's 2x rows "
            "(AP* 41.5 / 42.3), so the un-starred X101 row is taken as 2x single-scale. No official config."
        ),
    ),
    Preset(
        name="refinemask_r50_fpn_1x_lvis",
        dataset="lvis_v1",
        num_classes=1203,
        mask_head_cfg=RefineMaskConfig(last_stage_class_agnostic=True),
        schedule=_clip(SCHEDULE_1X),
        train_scales=MS_640_800_VALUES,
        multiscale_mode="value",
        roi=replace(_RM_BOX, score_thresh=1e-4, detections_per_img=300),
        sampler="class_balanced",
        oversample_thr=1e-3,
        paper_ref="Table 9 RefineMask R50-FPN 1x LVIS v1.0 val (AP 25.5, APr 14.2, APc 24.3, APf 31.7)",
        notes=(
            "configs/refinemask/lvis/r50-refinemask-1x.py: 1203 classes, stage_num_classes [1203, 1203, 1203, 1] "
            "(class-agnostic last stage, paper Sec. 4.4), ClassBalancedDataset oversample_thr 1e-3, short side in "
            "{640..800 step 32}, score_thr 1e-4, 300 dets/img, grad clip 35. README reports 25.7 AP."
        ),
    ),
    Preset(
        name="refinemask_r50_fpn_cityscapes",
        dataset="cityscapes",
        num_classes=8,
        mask_head_cfg=RefineMaskConfig(),
        schedule=Schedule(epochs=8, lr_steps=(7,), base_lr=0.01, batch_size=8, dataset_repeat=8, grad_clip_norm=35.0),
        train_scales=((2048, 800), (2048, 1024)),
        multiscale_mode="range",
        test_scale=(2048, 1024),
        roi=replace(_RM_BOX, loss_bbox="smooth_l1", smooth_l1_beta=1.0),
        paper_ref="Table 11 RefineMask R50-FPN Cityscapes val (AP 37.6, APS 14.6, APM 34.0, APL 58.1)",
        notes=(
            "configs/refinemask/cityscapes/r50-refinemask.py: 8 classes (all stages class-specific), RepeatDataset "
            "x8 of 8 epochs (= 64), step [7], lr 0.01 for 8 GPUs x 1 image (GPU count of the paper run not stated), "
            "short side uniform in [800, 1024], test (2048, 1024), box CE x2 + SmoothL1(beta 1) x2, grad clip 35, "
            "ImageNet init, bitmap masks. Paper reports the median of three runs."
        ),
    ),
    replace(
        _R50_1X,
        name="refinemask_r50_fpn_1x_coco_simple",
        mask_head_cfg=RefineMaskConfig(
            head="simple",
            fusion="sfm_avg",
            last_stage_class_agnostic=True,
            pre_upsample_last_stage=False,
            stage_loss_weights=(0.5, 0.75, 0.75, 1.0),
        ),
        paper_ref="not in the paper: official 'faster and better' head (README, Dec 2021; no AP number given)",
        notes=(
            "configs/refinemask/coco/r50-refinemask-1x-faster-better.py (docs/models.md §2.8): SimpleRefineMaskHead — "
            "no semantic logits/mask/loss, point-sampled semantic RoI features, MultiBranchFusionAvg, instance mask "
            "concatenated before upsampling, stage classes [80, 80, 80, 1], last logits at 56 upsampled to 112, "
            "BARCrossEntropyLoss weights [0.5, 0.75, 0.75, 1.0]. Official: 2 images/GPU; total batch kept at 16."
        ),
    ),
]

# --------------------------------------------------------------------------------------------------------------
# ablations (paper Sec. 4.2; all R50-FPN 1x COCO)
# --------------------------------------------------------------------------------------------------------------
_DEFAULT_CFG = _R50_1X.mask_head_cfg


def _ablation(suffix: str, paper_ref: str, notes: str, **cfg_changes) -> Preset:
    return replace(
        _R50_1X,
        name=f"{_R50_1X.name}_{suffix}",
        mask_head_cfg=replace(_DEFAULT_CFG, **cfg_changes),
        paper_ref=paper_ref,
        notes=notes,
    )


_STAGE_ROWS = {1: (28, "35.7", "38.3"), 2: (56, "36.6", "40.3"), 3: (112, "37.3", "40.9"), 4: (224, "37.1", "41.0")}
_ABLATIONS = []
for _n, (_size, _ap, _aps) in _STAGE_ROWS.items():
    _sizes = tuple(14 * 2**i for i in range(_n + 1))
    _weights = tuple((0.25, 0.5, 0.75, 1.0, 1.0)[: _n + 1])
    _ABLATIONS.append(
        _ablation(
            f"stages{_n}",
            f"Table 3 {_n} refinement stage(s), output {_size}x{_size} (AP {_ap}, AP* {_aps})",
            (
                f"stage_sizes {_sizes}. The paper gives no loss weights for other stage counts: each stage keeps "
                "its default weight (initial 0.25, refinement stages 0.5/0.75/1.0), a 4th refinement stage gets "
                "1.0 like the last default stage. BAR applies from the third output on (start_stage 1), as in the "
                "code; channels keep halving (16 at 224)."
            ),
            stage_sizes=_sizes,
            stage_loss_weights=_weights,
        )
    )

_FUSION_ROWS = {
    "conv1x1": ("1 single 1x1 Conv", "35.8", "38.7"),
    "conv3x3": ("1 single 3x3 Conv", "36.3", "39.9"),
    "parallel3x3": ("3 parallel 3x3 Convs", "36.7", "39.9"),
    "sfm": ("SFM", "37.3", "40.9"),
}
for _kind, (_row, _ap, _aps) in _FUSION_ROWS.items():
    _ABLATIONS.append(
        _ablation(
            f"fusion_{_kind}",
            f"Table 4 fusion module '{_row}' (AP {_ap}, AP* {_aps})",
            (
                "Replaces the block after the SFM's 1x1 compression (the official fusion_type switch point); the "
                "concatenation, 1x1 compression, channel halving, upsampling and mask re-attachment are unchanged. "
                "'3 parallel 3x3' = the SFM's three branches and merge conv with dilation 1 for all three."
            ),
            fusion=_kind,
        )
    )

_ABLATIONS += [
    _ablation(
        "no_semantic",
        "Table 5 without the semantic head (AP 35.7, AP* 38.4)",
        (
            "No semantic head on P2: no semantic features, semantic mask or semantic loss; each SFM fuses the "
            "instance features and the instance mask only (fuse 1x1 from C+1 channels, C/2-1 fused channels + the "
            "instance mask after upsampling). Everything else (stages, BAR, weights) unchanged."
        ),
        semantic_head=False,
    ),
    _ablation(
        "last_stage_only",
        "Table 6 without multi-stage refinement: only the last stage supervised (AP* 39.5)",
        (
            "Stage loss weights (0, 0, 0, 1): the earlier stages are computed (architecture unchanged) but not "
            "supervised. BAR needs the supervised previous stage's prediction, so the last stage is trained and "
            "used on the full mask (bar=False); inference uses the last stage's output alone."
        ),
        stage_loss_weights=(0.0, 0.0, 0.0, 1.0),
        bar=False,
    ),
    _ablation(
        "no_bar",
        "Table 7 without boundary-aware refinement (AP 36.9, AP* 40.0)",
        "Every stage predicts and is supervised on the complete mask (mean BCE); inference uses the last stage only.",
        bar=False,
    ),
]
for _w, (_ap, _aps) in {1: ("37.2", "40.7"), 2: ("37.3", "40.9"), 3: ("37.3", "40.8")}.items():
    _ABLATIONS.append(
        _ablation(
            f"bw{_w}",
            f"Table 13 boundary width {_w} for BAR (AP {_ap}, AP* {_aps})",
            (
                f"Training boundary width d = {_w} (BAR region R^k); inference keeps width 1 (hard-coded in the "
                "official test code). The code's 0.1 threshold means >= "
                f"{int(0.1 * (2 * _w + 1) ** 2) + 1} opposite-label pixels in the {2 * _w + 1}x{2 * _w + 1} window."
            ),
            boundary_width_train=_w,
        )
    )

REFINEMASK_PRESETS: dict[str, Preset] = preset_dict(*_MAIN, *_ABLATIONS)

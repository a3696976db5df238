"""Mask R-CNN presets (paper Tables 1, 2, 9, 11): plain data built from ``refinemask.config``'s schemas.

Every value mirrors mmdetection 2.x's Mask R-CNN configs (docs/models.md "Mask R-CNN"). Units: scales are
(long side, short side) in pixels, mmdet's ``img_scale`` order; learning rates are for ``Schedule.batch_size``.
"""

from __future__ import annotations

from dataclasses import replace

from refinemask.config import (
    SCHEDULE_2X,
    SCHEDULE_3X,
    TORCHVISION_COCO_CATEGORY_IDS,
    BoxHeadConfig,
    Preset,
    RPNConfig,
    Schedule,
    preset_dict,
)

__all__ = ["MASK_RCNN_PRESETS", "MS_640_800_VALUES"]

#: mmdet LVIS v1 multi-scale: short side ∈ {640, 672, …, 800}, long ≤ 1333, one value drawn per image
MS_640_800_VALUES = tuple((1333, s) for s in range(640, 801, 32))

_COCO_R50_1X = Preset(
    name="mask_rcnn_r50_fpn_1x_coco",
    dataset="coco_2017",
    num_classes=80,
    paper_ref="Table 1/2 Mask R-CNN R50-FPN 1x (AP 34.7, AP* 36.8)",
    notes="mmdet configs/mask_rcnn/mask_rcnn_r50_fpn_1x_coco.py (docs/models.md §1.1, §3).",
)

MASK_RCNN_PRESETS: dict[str, Preset] = preset_dict(
    _COCO_R50_1X,
    replace(
        _COCO_R50_1X,
        name="mask_rcnn_r50_fpn_2x_coco",
        schedule=SCHEDULE_2X,
        paper_ref="Table 1 Mask R-CNN R50-FPN 2x (AP 35.4, AP* 37.7)",
        notes="mmdet mask_rcnn_r50_fpn_2x_coco.py: 24 epochs, steps 16/22.",
    ),
    replace(
        _COCO_R50_1X,
        name="mask_rcnn_r101_fpn_1x_coco",
        backbone="resnet101",
        paper_ref="Table 1 Mask R-CNN R101-FPN 1x (AP 36.1, AP* 38.4)",
        notes="mmdet mask_rcnn_r101_fpn_1x_coco.py (depth 101, torchvision://resnet101).",
    ),
    replace(
        _COCO_R50_1X,
        name="mask_rcnn_r101_fpn_2x_coco",
        backbone="resnet101",
        schedule=SCHEDULE_2X,
        paper_ref="Table 1 Mask R-CNN R101-FPN 2x (AP 36.6, AP* 39.3)",
        notes="mmdet mask_rcnn_r101_fpn_2x_coco.py.",
    ),
    replace(
        _COCO_R50_1X,
        name="mask_rcnn_x101_fpn_3x_ms_coco",
        backbone="resnext101_64x4d",
        schedule=SCHEDULE_3X,
        train_scales=((1333, 640), (1333, 800)),
        multiscale_mode="range",
        paper_ref="Table 1 Mask R-CNN X101-FPN 3x multi-scale [640, 800] (AP 39.4, AP* 41.8)",
        notes=(
            "Paper: 3x schedule, multi-scale short side range [640, 800]; schedule as mmdet's mstrain 3x "
            "(36 epochs, steps 27/33). ResNeXt-101 64x4d: mmdet used open-mmlab://resnext101_64x4d "
            "weights; we load torchvision's resnext101_64x4d IMAGENET1K_V1 (same architecture, "
            "different ImageNet recipe)."
        ),
    ),
    Preset(
        name="mask_rcnn_r50_fpn_1x_lvis",
        dataset="lvis_v1",
        num_classes=1203,
        train_scales=MS_640_800_VALUES,
        multiscale_mode="value",
        roi=BoxHeadConfig(score_thresh=1e-4, detections_per_img=300),
        sampler="class_balanced",
        oversample_thr=1e-3,
        paper_ref="Table 9 Mask R-CNN R50-FPN 1x on LVIS v1.0 val (AP 22.1, APr 10.1, APc 21.7, APf 30.0)",
        notes=(
            "LVIS v1.0 (paper Table 9) -> 1203 classes; mmdet 2.3's LVIS-v1 baseline config says 1230 "
            "(the v0.5 count, a bug; docs/models.md §8). mmdet mask_rcnn_r50_fpn_sample1e-3_mstrain_1x_lvis_v1: "
            "ClassBalancedDataset oversample_thr 1e-3, short side in {640..800 step 32}, "
            "score_thr 1e-4, 300 dets/img."
        ),
    ),
    Preset(
        name="mask_rcnn_r50_fpn_cityscapes",
        dataset="cityscapes",
        num_classes=8,
        schedule=Schedule(epochs=8, lr_steps=(7,), base_lr=0.01, batch_size=8, dataset_repeat=8),
        train_scales=((2048, 800), (2048, 1024)),
        multiscale_mode="range",
        test_scale=(2048, 1024),
        roi=BoxHeadConfig(loss_bbox="smooth_l1", smooth_l1_beta=1.0),
        paper_ref="Table 11 Mask R-CNN R50-FPN Cityscapes val (AP 33.8, APS 12.0, APM 31.5, APL 51.8)",
        notes=(
            "Paper: 64 epochs on fine annotations, multi-scale short side [800, 1024]. mmdet/RefineMask "
            "Cityscapes configs: RepeatDataset x8 of 8 epochs, step [7], lr 0.01 for 8 GPUs x 1 image "
            "(samples_per_gpu=1; the GPU count of the paper run is not stated), test (2048, 1024), box loss "
            "SmoothL1 beta 1. mmdet's own Cityscapes Mask R-CNN starts from a COCO checkpoint; we start "
            "from ImageNet like RefineMask's config (load_from=None). No grad clipping (the RefineMask "
            "Cityscapes config clips at 35)."
        ),
    ),
    Preset(
        name="mask_rcnn_r50_fpn_torchvision_coco",
        dataset="coco_2017",
        num_classes=90,
        norm="frozen_bn",
        conventions="torchvision",
        category_ids=TORCHVISION_COCO_CATEGORY_IDS,
        schedule=Schedule(epochs=26, lr_steps=(16, 22), warmup_iters=1000),
        rpn=RPNConfig(post_nms_top_n_train=2000, pre_nms_top_n_train=2000, loss_bbox="smooth_l1"),
        roi=BoxHeadConfig(loss_bbox="smooth_l1", smooth_l1_beta=1.0 / 9.0),
        paper_ref="(no paper row) torchvision maskrcnn_resnet50_fpn COCO_V1 (torchvision docs: box AP 37.9, mask AP "
                  "34.6)",
        notes=(
            "Reproduces torchvision.models.detection.maskrcnn_resnet50_fpn for checkpoints converted with "
            "`rmbench convert --from torchvision` (refinemask.convert_torchvision): FrozenBN, 4-conv FCN mask head, "
            "90 labels = COCO ids 1..90 (10 unused ids dropped from results), torchvision's test pipeline "
            "(refinemask.config.CONVENTIONS): resize/normalise order, rounded anchors, small-box filters, "
            "MultiScaleRoIAlign (aligned=False, sampling 2), its paste and > 0.5. Inference parity is tested "
            "(tests/test_convert_torchvision.py). Training uses our mmdet-style assigners/samplers with "
            "torchvision's losses and 26-epoch schedule; it is not a parity claim."
        ),
    ),
    *(
        Preset(
            name=f"mask_rcnn_{tag}_fpn_3x_detectron2_coco",
            dataset="coco_2017",
            num_classes=80,
            backbone=arch,
            backbone_style="caffe",
            norm="frozen_bn",
            schedule=SCHEDULE_3X,
            train_scales=MS_640_800_VALUES,
            multiscale_mode="value",
            paper_ref=f"(no paper row) detectron2 model zoo mask_rcnn_{tag.upper()}_FPN_3x (README mask AP {ap})",
            notes=(
                "For detectron2 model-zoo checkpoints converted with `rmbench convert --from detectron2` "
                "(refinemask.convert_detectron2): MSRA caffe-style ResNet (stride in the first 1x1 conv, BGR, "
                "mean (103.53, 116.28, 123.675), std 1), FrozenBN, short side in {640..800 step 32}. detectron2's "
                "test pipeline is mmdet's (aligned RoIAlign sampling 0, the same paste and >= 0.5) except that its "
                "RPN drops zero-size proposals before NMS and it resizes with PIL in the data loader; not "
                "parity-tested (detectron2 cannot be installed here). detectron2's 3x is 270k iterations of 16 "
                "images (~37 COCO epochs, steps at 210k/250k); the schedule here is mmdet's 3x (36 epochs, 27/33)."
            ),
        )
        for tag, arch, ap in (("r50", "resnet50", "37.2"), ("r101", "resnet101", "38.6"))
    ),
)

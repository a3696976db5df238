"""Named presets: one frozen dataclass per paper table row, kept in a plain dict (no registry).

Every value mirrors the official mmdetection-2.3 / RefineMask configs (model-spec §1.1, §2.1, §2.9, §3) and the
paper (Sec. 4: Table 1 COCO 1×/2×/3×-ms, Table 9 LVIS v1.0, Table 11 Cityscapes). Variants are made with
``dataclasses.replace``; other engineers add RefineMask / PointRend / HTC presets by adding entries whose
``mask_head`` names their branch (see ``refinemask.models.MASK_BRANCH_BUILDERS``).

This module is plain data (no torch import): ``refinemask.detection`` reads :class:`RPNConfig` and
:class:`BoxHeadConfig` from here, and tools can list presets cheaply.

Units: scales are (long side, short side) in pixels, mmdet's ``img_scale`` order; learning rates are for the
reference batch ``Schedule.batch_size`` (16 images unless stated) — scale linearly with ``Schedule.lr_for_batch``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

__all__ = [
    "RPNConfig", "BoxHeadConfig", "Schedule", "Preset", "PRESETS",
    "SCHEDULE_1X", "SCHEDULE_2X", "SCHEDULE_3X", "get_preset",
]


@dataclass(frozen=True)
class RPNConfig:
    """RPN hyper-parameters (mmdet ``train_cfg.rpn``, ``train_cfg.rpn_proposal``, ``test_cfg.rpn``)."""

    pos_iou_thr: float = 0.7
    neg_iou_thr: float = 0.3
    min_pos_iou: float = 0.3
    batch_size_per_image: int = 256
    positive_fraction: float = 0.5
    pre_nms_top_n_train: int = 2000  # per level
    post_nms_top_n_train: int = 1000  # per image (torchvision: 2000; HTC: 2000)
    pre_nms_top_n_test: int = 1000
    post_nms_top_n_test: int = 1000
    nms_thresh: float = 0.7
    loss_bbox: str = "l1"  # "l1" (mmdet Mask R-CNN / RefineMask) or "smooth_l1" (HTC: beta 1/9)
    smooth_l1_beta: float = 1.0 / 9.0
    loss_cls_weight: float = 1.0
    loss_bbox_weight: float = 1.0


@dataclass(frozen=True)
class BoxHeadConfig:
    """RoI-head hyper-parameters (mmdet ``train_cfg.rcnn`` / ``test_cfg.rcnn`` / ``bbox_head`` losses)."""

    pos_iou_thr: float = 0.5
    neg_iou_thr: float = 0.5
    min_pos_iou: float = 0.5
    batch_size_per_image: int = 512
    positive_fraction: float = 0.25
    add_gt_as_proposals: bool = True
    bbox_reg_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)  # = 1 / stds (0.1, 0.1, 0.2, 0.2)
    loss_bbox: str = "l1"  # "l1" (mmdet Mask R-CNN COCO/LVIS) or "smooth_l1" (Cityscapes, HTC: beta 1.0)
    smooth_l1_beta: float = 1.0
    loss_cls_weight: float = 1.0  # RefineMask: 2.0
    loss_bbox_weight: float = 1.0  # RefineMask: 2.0
    score_thresh: float = 0.05  # strict ">" as mmdet multiclass_nms
    nms_thresh: float = 0.5
    detections_per_img: int = 100


@dataclass(frozen=True)
class Schedule:
    """SGD step schedule (mmdet ``optimizer`` / ``lr_config`` / ``total_epochs``).

    Attributes:
        epochs: passes over the (repeated) dataset; total images seen = epochs · dataset_repeat · |train set|.
        lr_steps: epochs after which lr is multiplied by ``lr_gamma`` (mmdet ``step``).
        base_lr: learning rate for ``batch_size`` images per iteration.
        warmup_iters / warmup_ratio: linear warm-up from ``warmup_ratio · lr`` over the first iterations.
        grad_clip_norm: max L2 norm of all gradients (None = no clipping; RefineMask uses 35).
        dataset_repeat: mmdet ``RepeatDataset`` times (Cityscapes: 8 → 8 × 8 = 64 epochs).
    """

    epochs: int
    lr_steps: tuple[int, ...]
    base_lr: float = 0.02
    batch_size: int = 16
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_gamma: float = 0.1
    warmup_iters: int = 500
    warmup_ratio: float = 0.001
    grad_clip_norm: float | None = None
    dataset_repeat: int = 1

    def lr_for_batch(self, batch_size: int) -> float:
        """Linear scaling rule: ``base_lr · batch_size / self.batch_size`` (spec §8)."""
        return self.base_lr * batch_size / self.batch_size

    @property
    def effective_epochs(self) -> int:
        return self.epochs * self.dataset_repeat


SCHEDULE_1X = Schedule(epochs=12, lr_steps=(8, 11))
SCHEDULE_2X = Schedule(epochs=24, lr_steps=(16, 22))
SCHEDULE_3X = Schedule(epochs=36, lr_steps=(27, 33))  # mmdet mstrain 3x (paper Table 1 ‡ rows)

#: mmdet LVIS v1 multi-scale: short side ∈ {640, 672, …, 800}, long ≤ 1333, one value drawn per image
_MS_640_800_VALUES = tuple((1333, s) for s in range(640, 801, 32))


@dataclass(frozen=True)
class Preset:
    """One trainable/evaluable configuration (a paper table row).

    Attributes:
        name: preset key, e.g. ``"mask_rcnn_r50_fpn_1x_coco"``.
        dataset: ``"coco_2017"``, ``"lvis_v1"`` or ``"cityscapes"`` (train/val json of that dataset).
        num_classes: foreground classes C (background is extra, last index of the box classifier).
        backbone: key of ``refinemask.detection.BACKBONES``.
        backbone_style / norm / frozen_stages: see ``ResNetFPN`` (mmdet: pytorch, BN eval + trainable γ/β, 1).
        pretrained: ``"imagenet"`` = torchvision IMAGENET1K_V1 weights of ``backbone`` (mmdet
            ``torchvision://resnet50``); loaded by the caller with ``load_backbone_weights``.
        mask_head: which mask branch (``"fcn"`` = Mask R-CNN, ``"refinemask"``, ``"point_rend"``); a key of
            ``refinemask.models.MASK_BRANCH_BUILDERS``.
        mask_head_cfg: the branch's own frozen config dataclass (e.g. RefineMask's stages, fusion, BAR switches),
            or None for the branch's defaults.
        roi_head: ``"standard"`` (one box head + a mask branch) or ``"htc"`` (HTC's cascade replaces the RoI
            heads as a whole); a key of ``refinemask.models.ROI_HEAD_BUILDERS``.
        mask_class_agnostic: one mask channel instead of C.
        schedule: :class:`Schedule`.
        train_scales / multiscale_mode: (long, short) candidates; ``"value"`` picks one, ``"range"`` draws
            uniformly between them (mmdet ``multiscale_mode``).
        test_scale: (long, short) for inference.
        flip_ratio: horizontal flip probability in training.
        rpn / roi: :class:`RPNConfig`, :class:`BoxHeadConfig` (losses, sampling, test thresholds).
        sampler: ``"group"`` (aspect-ratio grouped, mmdet ``GroupSampler``) or ``"class_balanced"``
            (mmdet ``ClassBalancedDataset`` with ``oversample_thr``).
        paper_ref: where the paper reports this row. notes: deviations/uncertainties worth knowing.
    """

    name: str
    dataset: str
    num_classes: int
    backbone: str = "resnet50"
    backbone_style: str = "pytorch"
    norm: str = "bn_eval"
    frozen_stages: int = 1
    pretrained: str = "imagenet"
    mask_head: str = "fcn"
    mask_head_cfg: object | None = None
    roi_head: str = "standard"
    mask_class_agnostic: bool = False
    schedule: Schedule = SCHEDULE_1X
    train_scales: tuple[tuple[int, int], ...] = ((1333, 800),)
    multiscale_mode: str = "value"
    test_scale: tuple[int, int] = (1333, 800)
    flip_ratio: float = 0.5
    rpn: RPNConfig = field(default_factory=RPNConfig)
    roi: BoxHeadConfig = field(default_factory=BoxHeadConfig)
    sampler: str = "group"
    oversample_thr: float | None = None
    paper_ref: str = ""
    notes: str = ""

    @property
    def score_thresh(self) -> float:
        """Test score threshold (mmdet ``test_cfg.rcnn.score_thr``)."""
        return self.roi.score_thresh

    @property
    def max_dets(self) -> int:
        """Detections kept per image (mmdet ``test_cfg.rcnn.max_per_img``)."""
        return self.roi.detections_per_img

    @property
    def base_lr(self) -> float:
        return self.schedule.base_lr


_COCO_R50_1X = Preset(
    name="mask_rcnn_r50_fpn_1x_coco",
    dataset="coco_2017",
    num_classes=80,
    paper_ref="Table 1/2 Mask R-CNN R50-FPN 1x (AP 34.7, AP* 36.8)",
    notes="mmdet configs/mask_rcnn/mask_rcnn_r50_fpn_1x_coco.py (spec §1.1, §3).",
)

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
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
            train_scales=_MS_640_800_VALUES,
            multiscale_mode="value",
            roi=BoxHeadConfig(score_thresh=1e-4, detections_per_img=300),
            sampler="class_balanced",
            oversample_thr=1e-3,
            paper_ref="Table 9 Mask R-CNN R50-FPN 1x on LVIS v1.0 val (AP 22.1, APr 10.1, APc 21.7, APf 30.0)",
            notes=(
                "LVIS v1.0 (paper Table 9) -> 1203 classes; mmdet 2.3's LVIS-v1 baseline config says 1230 "
                "(the v0.5 count, a bug; spec §8). mmdet mask_rcnn_r50_fpn_sample1e-3_mstrain_1x_lvis_v1: "
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
    )
}


# The other models' presets are plain data too, kept beside their owners' code and merged here so PRESETS
# stays the one dict of names: RefineMask (Tables 1, 3-9, 11, 13) and the PointRend / HTC baselines (Tables 2, 8).
from refinemask.presets_refinemask import REFINEMASK_PRESETS  # noqa: E402
from refinemask.presets_baselines import BASELINE_PRESETS  # noqa: E402

for _name, _preset in {**REFINEMASK_PRESETS, **BASELINE_PRESETS}.items():
    if _name in PRESETS or _name != _preset.name:
        raise RuntimeError(f"preset {_name!r} is defined twice or under another name")
    PRESETS[_name] = _preset


def get_preset(name: str) -> Preset:
    """Preset by name. Raises KeyError listing the known presets."""
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; known presets: {', '.join(sorted(PRESETS))}") from None

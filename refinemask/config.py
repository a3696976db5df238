"""The schemas of a preset: frozen dataclasses, plain data (no torch import, no preset values).

A :class:`Preset` is one trainable/evaluable configuration (a paper table row); its mask branch is chosen by the
class of its ``mask_head_cfg`` (:class:`MaskHeadConfig` subclasses). The presets themselves are built in
``refinemask/presets/`` (one module per family) and ``baselines/presets.py``, and looked up through
``refinemask.registry`` (``get_preset``). Values mirror the official mmdetection-2.3 / RefineMask configs
(docs/models.md) and the paper (Sec. 4).

Units: scales are (long side, short side) in pixels, mmdet's ``img_scale`` order; learning rates are for the
reference batch ``Schedule.batch_size`` (16 images unless stated) — scale linearly with ``Schedule.lr_for_batch``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

__all__ = [
    "RPNConfig", "BoxHeadConfig", "Schedule", "Preset", "MaskHeadConfig", "FCNMaskConfig", "RefineMaskConfig",
    "SCHEDULE_1X", "SCHEDULE_2X", "SCHEDULE_3X", "REFINEMASK_HEADS", "REFINEMASK_FUSIONS", "preset_dict", "run_info",
    "IMAGENET_WEIGHT_FILES", "CONVENTIONS", "TORCHVISION_COCO_CATEGORY_IDS",
]

#: Pipeline conventions a preset can reproduce (``Preset.conventions``):
#:
#: - ``"mmdet"`` (every paper preset): mmdet 2.x test pipeline — ``int(x·s + 0.5)`` resize sizes, normalise after
#:   resizing, unrounded anchors on fixed strides 4…64, aligned RoIAlign (sampling 0, mmdet level rule), no
#:   small-box filters, grid-sample paste, ``prob >= 0.5``.
#: - ``"torchvision"`` (``torchvision.models.detection.MaskRCNN``, torchvision 0.29): normalise in [0, 1] units
#:   then resize with ``F.interpolate(scale_factor, recompute_scale_factor=True)`` (sizes ``floor(x·s)``), anchors
#:   rounded to integers on strides ``padded size // grid size``, RPN drops boxes under 1e-3 px and the box head
#:   boxes under 1e-2 px before NMS, ``MultiScaleRoIAlign`` (aligned=False, sampling_ratio=2, canonical level 4 /
#:   224 px), boxes rescaled by ``original / resized`` ratios, torchvision's ``paste_masks_in_image`` (1-px
#:   padding) and ``prob > 0.5``. Only defined for the FCN mask head (torchvision has no other).
CONVENTIONS = ("mmdet", "torchvision")

#: torchvision's COCO label space: label k (1…90) is COCO category id k, background 0; our contiguous label
#: k − 1. Ids 12, 26, 29, 30, 45, 66, 68, 69, 71, 83 are not COCO 2017 categories ("N/A" in torchvision's
#: ``_COCO_CATEGORIES``): their detections are dropped when results are written.
TORCHVISION_COCO_CATEGORY_IDS = tuple(range(1, 91))


#: backbone -> the torchvision ImageNet (IMAGENET1K_V1) state-dict file every preset starts from
#: (``--backbone-weights``; mmdet's ``torchvision://resnet50`` is the same file). torchvision downloads them to
#: ``~/.cache/torch/hub/checkpoints/`` on a machine with internet access (``torchvision.models.resnet50(weights=
#: "IMAGENET1K_V1")``); copy them into one folder for ``rmbench reproduce --backbone-weights DIR``.
IMAGENET_WEIGHT_FILES = {
    "resnet50": "resnet50-0676ba61.pth",
    "resnet101": "resnet101-63fe2227.pth",
    "resnext101_64x4d": "resnext101_64x4d-173b62eb.pth",
}


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
        """Linear scaling rule: ``base_lr · batch_size / self.batch_size`` (docs/models.md §8)."""
        return self.base_lr * batch_size / self.batch_size

    @property
    def effective_epochs(self) -> int:
        return self.epochs * self.dataset_repeat


SCHEDULE_1X = Schedule(epochs=12, lr_steps=(8, 11))
SCHEDULE_2X = Schedule(epochs=24, lr_steps=(16, 22))
SCHEDULE_3X = Schedule(epochs=36, lr_steps=(27, 33))  # mmdet mstrain 3x (paper Table 1 ‡ rows)



@dataclass(frozen=True)
class MaskHeadConfig:
    """Base class of every mask-branch config: the config's **class** selects the branch that is built.

    ``refinemask.registry`` maps each subclass to a builder ``(preset) -> MaskBranch`` (or, when
    :attr:`replaces_roi_heads`, to a builder of whole RoI heads, as HTC's cascade needs). The model package
    registers :class:`FCNMaskConfig` and :class:`RefineMaskConfig`; plug-in packages (``baselines``) register
    their own subclasses when imported.

    Class attributes:
        kind: short name of the branch (``"fcn"``, ``"refinemask"``, ``"point_rend"``, ``"htc"``), shown as
            ``Preset.mask_head`` and in provenance.
        method: the method's name in the paper's tables (``"Mask R-CNN"``, ``"RefineMask"``, ...).
        replaces_roi_heads: True when the builder makes the RoI heads as a whole (HTC), not just a mask branch.
    """

    kind: ClassVar[str] = ""
    method: ClassVar[str] = ""
    replaces_roi_heads: ClassVar[bool] = False

    def data_needs(self, preset_name: str) -> tuple[Path | None, bool]:
        """What the training data must add for this branch: (a per-image semantic label-map folder or None,
        whether crowd masks are needed). Default: nothing. HTC's config overrides it.

        Raises:
            ValueError: the data the branch needs is not configured (the message names the fix).
        """
        return None, False


@dataclass(frozen=True)
class FCNMaskConfig(MaskHeadConfig):
    """Mask R-CNN's FCN mask head (mmdet ``FCNMaskHead``; docs/models.md "Mask R-CNN").

    Attributes:
        num_convs / conv_dim: 4 × [3×3 conv 256 + ReLU]. roi_size: 14 (logits at 2 · roi_size = 28).
        loss_weight: 1.0 (BCE on the GT-class channel).
    """

    kind: ClassVar[str] = "fcn"
    method: ClassVar[str] = "Mask R-CNN"
    num_convs: int = 4
    conv_dim: int = 256
    roi_size: int = 14
    loss_weight: float = 1.0


#: head variants: the paper's ``RefineMaskHead`` and the official "faster and better" ``SimpleRefineMaskHead``
REFINEMASK_HEADS = ("original", "simple")
#: fusion blocks (paper Table 4 rows + the faster head's averaged SFM); see ``refinemask.head.sfm.build_fusion``
REFINEMASK_FUSIONS = ("conv1x1", "conv3x3", "parallel3x3", "sfm", "sfm_avg")


@dataclass(frozen=True)
class RefineMaskConfig(MaskHeadConfig):
    """Hyper-parameters of the RefineMask mask branch (official ``RefineMaskHead`` + ``RefineCrossEntropyLoss``).

    Attributes:
        head: ``"original"`` (paper; docs/models.md §2.2–2.7) or ``"simple"`` (faster and better, §2.8).
        num_instance_convs / num_semantic_convs: 2 / 4 (3×3, 256 channels, ReLU).
        channels: width of the instance path at 14×14 (256; halved by every SFM).
        roi_size: RoIAlign output for the instance features (14).
        stage_sizes: output size of every supervised stage (``stage_sup_size``): (14, 28, 56, 112) = the initial
            mask + 3 refinement stages (3 SFMs). Must start at ``roi_size`` and double. Table 3: 1–4 SFMs.
        stage_loss_weights: λ per stage (``stage_instance_loss_weight``; paper 0.25, 0.5, 0.75, 1.0).
        class_agnostic: every stage predicts one mask channel.
        last_stage_class_agnostic: only the last stage is class-agnostic (LVIS, ``stage_num_classes[-1] == 1``).
        fusion / dilations: SFM fusion block (Table 4) and its dilations (1, 3, 5).
        semantic_head: Table 5 switch; False removes the semantic head, semantic features/masks and loss.
        semantic_loss_weight: 1.0. semantic_stride: 4 (P2).
        mask_use_sigmoid: SFMs receive σ of the instance/semantic logits (True in every official config).
        bar: boundary-aware refinement (Table 7 switch). False: every stage is supervised on the full mask and
            inference uses the last stage's output alone.
        start_stage: last stage with a full-mask loss (1 → BAR on stages 2, 3); inference merges from it.
        boundary_width_train / boundary_width_test: d̂ = 2 in training (Table 13), 1 at inference.
        boundary_threshold: 0.1 = official code rule ``clamp(D, 0)/K² > 0.1``; 0.0 = appendix A.1 rule D > 0.
        pre_upsample_last_stage: simple head only; False computes the last logits at 56 and upsamples them.
        test_chunk_size: RoIs per mask-head call at inference (official ``interval=100``).
    """

    kind: ClassVar[str] = "refinemask"
    method: ClassVar[str] = "RefineMask"
    head: str = "original"
    num_instance_convs: int = 2
    num_semantic_convs: int = 4
    channels: int = 256
    roi_size: int = 14
    stage_sizes: tuple[int, ...] = (14, 28, 56, 112)
    stage_loss_weights: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
    class_agnostic: bool = False
    last_stage_class_agnostic: bool = False
    fusion: str = "sfm"
    dilations: tuple[int, ...] = (1, 3, 5)
    semantic_head: bool = True
    semantic_loss_weight: float = 1.0
    semantic_stride: int = 4
    mask_use_sigmoid: bool = True
    bar: bool = True
    start_stage: int = 1
    boundary_width_train: int = 2
    boundary_width_test: int = 1
    boundary_threshold: float = 0.1
    pre_upsample_last_stage: bool = True
    test_chunk_size: int = 100

    def __post_init__(self) -> None:
        if self.head not in REFINEMASK_HEADS:
            raise ValueError(f"RefineMaskConfig.head must be one of {REFINEMASK_HEADS}, got {self.head!r}")
        if self.fusion not in REFINEMASK_FUSIONS:
            raise ValueError(f"RefineMaskConfig.fusion must be one of {REFINEMASK_FUSIONS}, got {self.fusion!r}")
        sizes = tuple(self.stage_sizes)
        if len(sizes) < 2 or sizes[0] != self.roi_size or any(b != 2 * a for a, b in zip(sizes, sizes[1:])):
            raise ValueError(f"stage_sizes must start at roi_size={self.roi_size} and double, got {sizes}")
        if len(self.stage_loss_weights) != len(sizes):
            raise ValueError(f"{len(self.stage_loss_weights)} stage_loss_weights for {len(sizes)} stages")
        if self.channels // 2 ** (len(sizes) - 1) < 4:
            raise ValueError(f"{self.channels} channels cannot be halved {len(sizes) - 1} times")
        if not 0 <= self.start_stage < len(sizes):
            raise ValueError(f"start_stage {self.start_stage} out of range for {len(sizes)} stages")
        if self.boundary_width_train < 1 or self.boundary_width_test < 1:
            raise ValueError("boundary widths must be >= 1")
        if self.head == "simple" and not self.semantic_head:
            raise ValueError("the simple head always has semantic features (semantic_head=True)")

    @property
    def num_refine_stages(self) -> int:
        """Number of SFMs / refinement stages (3 by default)."""
        return len(self.stage_sizes) - 1

    @property
    def output_size(self) -> int:
        """Resolution of the final mask (112 by default)."""
        return self.stage_sizes[-1]



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
        mask_head_cfg: the branch's frozen config, a :class:`MaskHeadConfig` subclass whose class selects the
            branch (:class:`FCNMaskConfig` = Mask R-CNN, :class:`RefineMaskConfig`, baselines' PointRend / HTC
            configs); see ``refinemask.registry``. ``mask_head`` / ``roi_head`` are derived from it.
        mask_class_agnostic: one mask channel instead of C.
        schedule: :class:`Schedule`.
        train_scales / multiscale_mode: (long, short) candidates; ``"value"`` picks one, ``"range"`` draws
            uniformly between them (mmdet ``multiscale_mode``).
        test_scale: (long, short) for inference.
        flip_ratio: horizontal flip probability in training.
        rpn / roi: :class:`RPNConfig`, :class:`BoxHeadConfig` (losses, sampling, test thresholds).
        sampler: ``"group"`` (aspect-ratio grouped, mmdet ``GroupSampler``) or ``"class_balanced"``
            (mmdet ``ClassBalancedDataset`` with ``oversample_thr``).
        conventions: the test-pipeline conventions reproduced (:data:`CONVENTIONS`): ``"mmdet"`` for every paper
            preset, ``"torchvision"`` for presets that reproduce ``torchvision.models.detection`` checkpoints.
        category_ids: the dataset category id of each contiguous label when the model's label space is not the
            dataset's sorted category list (torchvision's 90 COCO ids, :data:`TORCHVISION_COCO_CATEGORY_IDS`);
            None → the dataset's categories in ascending id order (mmdet ``cat2label``). Labels whose id is not a
            category of the evaluated dataset are dropped from results.
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
    mask_head_cfg: MaskHeadConfig = field(default_factory=FCNMaskConfig)
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
    conventions: str = "mmdet"
    category_ids: tuple[int, ...] | None = None
    paper_ref: str = ""
    notes: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.mask_head_cfg, MaskHeadConfig):
            raise TypeError(f"preset {self.name!r}: mask_head_cfg must be a MaskHeadConfig (FCNMaskConfig, "
                            f"RefineMaskConfig, ...), got {type(self.mask_head_cfg).__name__}")
        if self.conventions not in CONVENTIONS:
            raise ValueError(f"preset {self.name!r}: conventions must be one of {CONVENTIONS}, got "
                             f"{self.conventions!r}")
        if self.conventions == "torchvision" and type(self.mask_head_cfg) is not FCNMaskConfig:
            raise ValueError(f"preset {self.name!r}: torchvision conventions are defined for the FCN mask head only")
        if self.category_ids is not None and (len(self.category_ids) != self.num_classes
                                              or len(set(self.category_ids)) != len(self.category_ids)):
            raise ValueError(f"preset {self.name!r}: category_ids must list {self.num_classes} distinct ids, one "
                             f"per label (got {len(self.category_ids)})")

    @property
    def mask_head(self) -> str:
        """Kind of mask branch (``"fcn"``, ``"refinemask"``, ``"point_rend"``, ``"htc"``), from the config class."""
        return self.mask_head_cfg.kind

    @property
    def roi_head(self) -> str:
        """``"standard"`` (box head + a mask branch) or the kind of RoI heads that replace them as a whole."""
        return self.mask_head_cfg.kind if self.mask_head_cfg.replaces_roi_heads else "standard"

    @property
    def method(self) -> str:
        """The method's name in the paper's tables (``"Mask R-CNN"``, ``"RefineMask"``, ...)."""
        return self.mask_head_cfg.method

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


def preset_dict(*presets: Preset) -> dict[str, Preset]:
    """``{preset.name: preset}`` in the given order.

    Raises:
        ValueError: two presets share a name.
    """
    out: dict[str, Preset] = {}
    for p in presets:
        if p.name in out:
            raise ValueError(f"preset {p.name!r} is defined twice")
        out[p.name] = p
    return out


def run_info(preset: Preset, dataset: str | None = None, **extra: Any) -> dict[str, Any]:
    """The ``"run"`` block of metrics.json: preset, method, backbone, schedule, dataset (+ extras; None dropped).

    The trainer and ``rmbench eval --preset`` add ``train`` / ``eval_set`` (see ``reports/protocol.py``).
    """
    method = preset.method  # the mask-config class's name of the method
    ep = preset.schedule.epochs
    sched = {12: "1x", 24: "2x", 36: "3x"}.get(ep, f"{ep}ep")
    if preset.schedule.dataset_repeat > 1:
        sched += f" (x{preset.schedule.dataset_repeat} repeat)"
    info = {"preset": preset.name, "method": method, "backbone": preset.backbone, "schedule": sched,
            "dataset": dataset or preset.dataset}
    info.update({k: v for k, v in extra.items() if v is not None})
    return info

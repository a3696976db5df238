"""Shared two-stage trunk: ResNet/ResNeXt-FPN, RPN, box RoI head, aligned RoIAlign, mask targets, paste, RLE,
and the mask-branch protocol that Mask R-CNN, PointRend and RefineMask plug into (model-spec §1, §9)."""

from .backbone import BACKBONES, FPN_LEVELS, FPN_STRIDES, NORM_MODES, ResNetFPN, load_backbone_weights
from .mask_branch import MaskBranch, mask_bce_loss, select_class_channel
from .masks import MASK_THRESHOLD, binarize_masks, encode_rle, mask_targets, paste_masks
from .model import PIXEL_STATS, DetectionTransform, ImageBatch, TwoStageDetector, rescale_size
from .poolers import MultiLevelRoIAlign, boxes_to_rois, map_roi_levels
from .roi_heads import BoxHeadConfig, RoIHeads, TwoFCBoxHead, fast_rcnn_loss, multiclass_nms
from .rpn import AnchorGenerator, RegionProposalNetwork, RPNConfig, RPNHead, max_iou_assign

__all__ = [
    "BACKBONES", "FPN_LEVELS", "FPN_STRIDES", "NORM_MODES", "ResNetFPN", "load_backbone_weights",
    "MaskBranch", "mask_bce_loss", "select_class_channel",
    "MASK_THRESHOLD", "binarize_masks", "encode_rle", "mask_targets", "paste_masks",
    "PIXEL_STATS", "DetectionTransform", "ImageBatch", "TwoStageDetector", "rescale_size",
    "MultiLevelRoIAlign", "boxes_to_rois", "map_roi_levels",
    "BoxHeadConfig", "RoIHeads", "TwoFCBoxHead", "fast_rcnn_loss", "multiclass_nms",
    "AnchorGenerator", "RegionProposalNetwork", "RPNConfig", "RPNHead", "max_iou_assign",
]

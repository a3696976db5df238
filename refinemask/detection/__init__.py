"""Shared two-stage trunk: ResNet/ResNeXt-FPN, RPN, box RoI head, aligned RoIAlign, mask targets, paste, RLE,
the mask-branch protocol that Mask R-CNN, PointRend and RefineMask plug into, and the default FCN mask branch
(docs/models.md)."""

from .backbone import BACKBONES, FPN_LEVELS, FPN_STRIDES, NORM_MODES, ResNetFPN, load_backbone_weights
from .fcn_mask_head import FCNMaskBranch, build_fcn_branch
from .mask_branch import MaskBranch, RoIBatch, mask_bce_loss, select_class_channel
from .masks import MASK_THRESHOLD, binarize_masks, encode_rle, mask_targets, paste_masks
from .model import PIXEL_STATS, DetectionTransform, ImageBatch, TwoStageDetector, rescale_size
from .poolers import MultiLevelRoIAlign, boxes_to_rois, map_roi_levels, roi_pooler
from .roi_heads import BoxHeadConfig, RoIHeads, TwoFCBoxHead, fast_rcnn_loss, multiclass_nms
from .rpn import AnchorGenerator, RegionProposalNetwork, RPNConfig, RPNHead, max_iou_assign

__all__ = [
    "BACKBONES", "FPN_LEVELS", "FPN_STRIDES", "NORM_MODES", "ResNetFPN", "load_backbone_weights",
    "MaskBranch", "RoIBatch", "mask_bce_loss", "select_class_channel", "FCNMaskBranch", "build_fcn_branch",
    "MASK_THRESHOLD", "binarize_masks", "encode_rle", "mask_targets", "paste_masks",
    "PIXEL_STATS", "DetectionTransform", "ImageBatch", "TwoStageDetector", "rescale_size",
    "MultiLevelRoIAlign", "boxes_to_rois", "map_roi_levels", "roi_pooler",
    "BoxHeadConfig", "RoIHeads", "TwoFCBoxHead", "fast_rcnn_loss", "multiclass_nms",
    "AnchorGenerator", "RegionProposalNetwork", "RPNConfig", "RPNHead", "max_iou_assign",
]

"""Datasets (COCO, LVIS, Cityscapes-as-COCO json) and samplers (aspect-ratio grouped, DDP-sharded, resumable).

Resize / normalise / pad live in the model's :class:`~refinemask.detection.DetectionTransform`; this package
yields original-resolution images and targets, with horizontal flip as the only augmentation.
"""

from .datasets import (
    STANDARD_LAYOUTS,
    DataPaths,
    DatasetError,
    InstanceDataset,
    collate,
    hflip_target,
    repeat_factors,
    resolve_data_paths,
    write_subset_json,
)
from .samplers import GroupedBatchSampler, expand_indices, inference_shard

__all__ = [
    "STANDARD_LAYOUTS", "DataPaths", "DatasetError", "InstanceDataset", "collate", "hflip_target",
    "repeat_factors", "resolve_data_paths", "write_subset_json",
    "GroupedBatchSampler", "expand_indices", "inference_shard",
]

"""Stateless functional ops in `keras.ops`: NumPy-testable, fixed shapes, XLA-compilable."""

from keras_maskrcnn_layers.ops.boxes import (
    box_areas,
    clip_boxes,
    decode_boxes,
    encode_boxes,
    pairwise_iou,
    scale_boxes,
)
from keras_maskrcnn_layers.ops.level_mapping import assign_fpn_levels
from keras_maskrcnn_layers.ops.nms import batched_nms
from keras_maskrcnn_layers.ops.paste_masks import paste_masks
from keras_maskrcnn_layers.ops.pyramid import flatten_pyramid
from keras_maskrcnn_layers.ops.roi_align import multilevel_roi_align, roi_align

__all__ = [
    "assign_fpn_levels",
    "batched_nms",
    "box_areas",
    "clip_boxes",
    "decode_boxes",
    "encode_boxes",
    "flatten_pyramid",
    "multilevel_roi_align",
    "pairwise_iou",
    "paste_masks",
    "roi_align",
    "scale_boxes",
]

"""Data for Mask R-CNN: generated shapes, COCO files, transforms and `tf.data` pipelines.

A *sample* is a dict like matterport's `Dataset.load_image` / `load_mask`
output: `"image"` uint8 `[H, W, 3]`, `"masks"` bool `[H, W, N]`,
`"class_ids"` int32 `[N]` in `1..NUM_CLASSES - 1`, optional `"image_id"`.
`prepare_sample` turns one into fixed-shape model inputs; `make_dataset`
batches them with `tf.data`.
"""

from keras_maskrcnn_layers.data.coco import CocoSamples, load_coco
from keras_maskrcnn_layers.data.image_meta import IMAGE_META_SIZE, compose_image_meta, parse_image_meta
from keras_maskrcnn_layers.data.pipeline import input_signature, make_dataset
from keras_maskrcnn_layers.data.sample import validate_sample
from keras_maskrcnn_layers.data.shapes import SHAPES_CLASS_NAMES, generate_shapes
from keras_maskrcnn_layers.data.transforms import (
    expand_mini_masks,
    extract_boxes,
    flip_sample_arrays,
    minimize_masks,
    prepare_sample,
    resize_image,
    resize_masks,
)

__all__ = [
    "IMAGE_META_SIZE",
    "SHAPES_CLASS_NAMES",
    "CocoSamples",
    "compose_image_meta",
    "expand_mini_masks",
    "extract_boxes",
    "flip_sample_arrays",
    "generate_shapes",
    "input_signature",
    "load_coco",
    "make_dataset",
    "minimize_masks",
    "parse_image_meta",
    "prepare_sample",
    "resize_image",
    "resize_masks",
    "validate_sample",
]

"""A `tf.data` input pipeline from samples to batched, fixed-shape model inputs.

Each element is `prepare_sample`'s output (images, image meta, padded
ground truth), batched by `BATCH_SIZE`. Training pipelines repeat forever,
reshuffle every epoch and drop the last partial batch, so every batch has
the static shape XLA compiles once.

Why not keras-cv's augmentation layers: keras-cv 0.9.0 (April 2024) is its
last release and does not import in this package's environment (Keras
3.15, TensorFlow 2.21): importing it needs `tensorflow-datasets`,
`dm-tree`, `regex` and `kagglehub`, and it declares the retired
`keras-core` package as a dependency. With those supplied, its
bounding-box augmenters (`RandomFlip(bounding_box_format=...)` and
friends) return ragged boxes and classes and treat `segmentation_masks` as
one semantic map: nothing keeps a per-instance mask tied to its box and
class id when an augmentation moves, clips or drops an instance. Flips
here are a few NumPy lines inside `prepare_sample`, applied before boxes
are computed from the masks, so boxes, masks and class ids agree by
construction.
"""

import collections.abc
import itertools

import numpy as np
import tensorflow as tf

from keras_maskrcnn_layers.data.image_meta import IMAGE_META_SIZE
from keras_maskrcnn_layers.data.transforms import gt_mask_shape, prepare_sample

AUGMENTATIONS = ("none", "flips", "flips+vertical")


def input_signature(config):
    """The `tf.TensorSpec` of one unbatched element, by key.

    Args:
        config: `MaskRCNNConfig`.

    Returns:
        dict: `"images"` float32 `IMAGE_SHAPE`; `"image_meta"` float32 `[8]`;
        `"gt_class_ids"` int32 `[M]`; `"gt_boxes"` float32 `[M, 4]`;
        `"gt_masks"` float32 `[M, mh, mw]`; `M = MAX_GT_INSTANCES`.

    Example:

    >>> import keras_maskrcnn_layers as kml
    >>> from keras_maskrcnn_layers.data import input_signature
    >>> spec = input_signature(kml.MaskRCNNConfig.preset("shapes"))
    >>> spec["gt_boxes"].shape.as_list(), spec["gt_boxes"].dtype.name
    ([8, 4], 'float32')
    """
    max_gt = config.MAX_GT_INSTANCES
    return {
        "images": tf.TensorSpec(tuple(config.IMAGE_SHAPE), tf.float32),
        "image_meta": tf.TensorSpec((IMAGE_META_SIZE,), tf.float32),
        "gt_class_ids": tf.TensorSpec((max_gt,), tf.int32),
        "gt_boxes": tf.TensorSpec((max_gt, 4), tf.float32),
        "gt_masks": tf.TensorSpec((max_gt,) + gt_mask_shape(config), tf.float32),
    }


def _draw_flip(rng, augment):
    if augment == "none":
        return None
    horizontal = rng.random() < 0.5
    vertical = augment == "flips+vertical" and rng.random() < 0.5
    if horizontal and vertical:
        return "both"
    return "horizontal" if horizontal else ("vertical" if vertical else None)


def make_dataset(samples, config, training=True, shuffle=None, augment=None, seed=0):
    """Builds a batched `tf.data.Dataset` of model inputs from samples.

    Args:
        samples: a list or any `collections.abc.Sequence` of samples (such
            as `generate_shapes` output or a `CocoSamples`). Samples are
            read by index, lazily, once per epoch.
        config: `MaskRCNNConfig`.
        training: bool. Repeat forever and drop the last partial batch
            (static batch size). Defaults to `True`.
        shuffle: bool or None. Reshuffle every epoch. Defaults to
            `training`.
        augment: `"none"`, `"flips"` (random left-right flips) or
            `"flips+vertical"` (also up-down), chosen per sample with
            probability 0.5 each, or None for `"flips"` when training and
            `"none"` otherwise.
        seed: int. Seeds shuffling and flips: equal seeds give equal
            pipelines. Defaults to `0`.

    Returns:
        `tf.data.Dataset` of dicts; see `input_signature` for the unbatched
        shapes. Batched by `BATCH_SIZE` (static when training; the last
        batch of an inference pipeline may be smaller).

    Raises:
        ValueError: for an empty or non-sequence `samples`, an unknown
            `augment`, or a first sample that `prepare_sample` rejects
            (checked now, so a broken loader fails here rather than as an
            opaque `tf.data` error later).

    Example:

    >>> import keras_maskrcnn_layers as kml
    >>> from keras_maskrcnn_layers.data import generate_shapes, make_dataset
    >>> config = kml.MaskRCNNConfig.preset("shapes", IMAGES_PER_GPU=2)
    >>> dataset = make_dataset(generate_shapes(3), config, training=False)
    >>> [tuple(batch["images"].shape) for batch in dataset]
    [(2, 128, 128, 3), (1, 128, 128, 3)]
    """
    if isinstance(samples, (str, bytes)) or not isinstance(samples, collections.abc.Sequence):
        raise ValueError(
            f"`samples` must be a list or a Sequence of sample dicts. Received: {type(samples).__name__}"
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"`seed` must be a non-negative integer. Received: seed={seed!r}")
    if len(samples) == 0:
        raise ValueError("`samples` is empty: a dataset needs at least one sample.")
    shuffle = bool(training) if shuffle is None else bool(shuffle)
    if augment is None:
        augment = "flips" if training else "none"
    if augment not in AUGMENTATIONS:
        raise ValueError(f"`augment` must be one of {AUGMENTATIONS} or None. Received: augment={augment!r}")
    prepare_sample(samples[0], config)

    count = len(samples)
    epochs = itertools.count()

    def generate():
        # One generator run per epoch (`repeat` calls it again): a fresh,
        # seeded stream per epoch reshuffles while staying reproducible.
        rng = np.random.default_rng([seed, next(epochs)])
        order = rng.permutation(count) if shuffle else np.arange(count)
        for index in order:
            yield prepare_sample(samples[int(index)], config, flip=_draw_flip(rng, augment))

    dataset = tf.data.Dataset.from_generator(generate, output_signature=input_signature(config))
    if training:
        dataset = dataset.repeat()
    dataset = dataset.batch(config.BATCH_SIZE, drop_remainder=bool(training))
    return dataset.prefetch(tf.data.AUTOTUNE)

"""ROI Align over an FPN pyramid with a tunable output size."""

import keras
from keras import ops

from keras_maskrcnn_layers.api_export import kml_export
from keras_maskrcnn_layers.ops._validation import check_boxes_values, check_pair, check_positive_int
from keras_maskrcnn_layers.ops.level_mapping import check_level_range
from keras_maskrcnn_layers.ops.pyramid import flatten_pyramid
from keras_maskrcnn_layers.ops.roi_align import multilevel_roi_align


@kml_export
class PyramidROIAlign(keras.layers.Layer):
    """Pools a fixed-size feature crop for each box from its FPN level.

    The level of a box is `floor(canonical_level + log2(sqrt(h * w) /
    canonical_size))` clamped to `[min_level, max_level]` (FPN paper,
    Eqn. 1); the box is then pooled by ROI Align (Mask R-CNN, He et al.
    2017) with the exact sampling rule of torchvision's and Detectron2's
    kernels, described in `kml.ops.multilevel_roi_align`.

    `pool_size` is the knob that sets the resolution of what the heads
    see: the mask branch reads its own `PyramidROIAlign`, so a larger mask
    pool (14 -> 28) gives finer masks.

    Args:
        pool_size: int or `(height, width)`. Output size per box. Defaults
            to `7`.
        sampling_ratio: int >= 1. Bilinear samples per bin along each axis.
            Defaults to `2`.
        aligned: bool. Half-pixel shift (Detectron2 ROIAlignV2). Defaults
            to `True`.
        min_level: int. Level of the first feature map. Defaults to `2`.
        max_level: int. Level of the last feature map. Defaults to `5`.
        canonical_size: float. Defaults to `224`.
        canonical_level: int. Defaults to `4`.
        **kwargs: base `keras.layers.Layer` arguments.

    Call arguments:
        boxes: float tensor `[B, N, 4]`, yxyx pixels of the input image.
            Rows that are all zeros are padding and pool to zeros.
        features: list of `max_level - min_level + 1` float tensors
            `[B, H_l, W_l, C]`, level `l` at stride `2**l`.
        flat_features: optional float tensor `[B, T, C]`, the output of
            `kml.FlattenPyramid` on `features`. Every call otherwise copies
            the pyramid into that table (all but the finest map with
            `sampling_ratio=1`, which it then reads in place); two layers
            that pool the same pyramid (box and mask heads) can share one.
            The layer then reads the table, and `features` only for their
            shapes.

    Returns:
        Tensor `[B, N, pool_h, pool_w, C]` in the layer's compute dtype.

    Example:

    >>> import numpy as np
    >>> import keras_maskrcnn_layers as kml
    >>> features = [np.random.rand(2, 256 // 2**l, 256 // 2**l, 16).astype("float32") for l in (2, 3, 4, 5)]
    >>> boxes = np.array([[[10, 10, 60, 90], [0, 0, 200, 250]]] * 2, "float32")
    >>> pooled = kml.PyramidROIAlign(pool_size=(14, 7))(boxes, features)
    >>> tuple(pooled.shape)
    (2, 2, 14, 7, 16)
    """

    def __init__(
        self,
        pool_size=7,
        sampling_ratio=2,
        aligned=True,
        min_level=2,
        max_level=5,
        canonical_size=224,
        canonical_level=4,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.pool_size = check_pair("pool_size", pool_size)
        self.sampling_ratio = check_positive_int("sampling_ratio", sampling_ratio)
        if not isinstance(aligned, bool):
            raise ValueError(f"`aligned` must be True or False. Received: aligned={aligned!r}")
        self.aligned = aligned
        (self.min_level, self.max_level, self.canonical_size, self.canonical_level) = check_level_range(
            min_level, max_level, canonical_size, canonical_level
        )
        # Boxes are pixels and must stay float32 under mixed precision.
        self._convert_input_args = False
        self._allow_non_tensor_positional_args = True

    @property
    def num_levels(self):
        return self.max_level - self.min_level + 1

    def build(self, boxes_shape=None, features_shape=None, flat_features_shape=None):
        # NumPy inputs reach `build` without shapes; `call` checks them then.
        if boxes_shape is not None and features_shape is not None:
            self._check_shapes(boxes_shape, features_shape)

    def _check_shapes(self, boxes_shape, features_shape):
        if len(boxes_shape) != 3 or boxes_shape[-1] != 4:
            raise ValueError(f"`boxes` must be [B, N, 4]. Received: shape={tuple(boxes_shape)}")
        if not isinstance(features_shape, (list, tuple)) or len(features_shape) != self.num_levels:
            count = len(features_shape) if isinstance(features_shape, (list, tuple)) else features_shape
            raise ValueError(
                f"`features` must be a list of {self.num_levels} maps for levels "
                f"{self.min_level}..{self.max_level}. Received: {count}"
            )
        channels = {tuple(s)[-1] for s in features_shape}
        if len(channels) != 1:
            raise ValueError(f"Every feature map must have the same channels. Received shapes: {features_shape}")

    def call(self, boxes, features, flat_features=None):
        if not isinstance(features, (list, tuple)):
            raise ValueError("`features` must be a list of [B, H_l, W_l, C] tensors, one per level.")
        boxes = ops.convert_to_tensor(boxes)
        features = [ops.convert_to_tensor(f) for f in features]
        self._check_shapes(boxes.shape, [f.shape for f in features])
        check_boxes_values("boxes", boxes)
        features = [ops.cast(f, self.compute_dtype) for f in features]
        if flat_features is not None:
            flat_features = ops.cast(flat_features, self.compute_dtype)
        return multilevel_roi_align(
            features,
            ops.cast(boxes, "float32"),
            output_size=self.pool_size,
            sampling_ratio=self.sampling_ratio,
            aligned=self.aligned,
            min_level=self.min_level,
            max_level=self.max_level,
            canonical_size=self.canonical_size,
            canonical_level=self.canonical_level,
            flat_features=flat_features,
        )

    def compute_output_shape(self, boxes_shape, features_shape, flat_features_shape=None):
        return (boxes_shape[0], boxes_shape[1], *self.pool_size, features_shape[0][-1])

    def compute_output_spec(self, boxes, features, flat_features=None):
        shape = self.compute_output_shape(boxes.shape, [f.shape for f in features])
        return keras.KerasTensor(shape, dtype=self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "pool_size": list(self.pool_size),
                "sampling_ratio": self.sampling_ratio,
                "aligned": self.aligned,
                "min_level": self.min_level,
                "max_level": self.max_level,
                "canonical_size": self.canonical_size,
                "canonical_level": self.canonical_level,
            }
        )
        return config


@kml_export
class FlattenPyramid(keras.layers.Layer):
    """Flattens FPN maps into the `[B, T, C]` table that `PyramidROIAlign` reads.

    `PyramidROIAlign` builds this table on every call, a copy of the whole
    pyramid (of all but the finest map with `sampling_ratio=1`). A model
    whose box and mask heads pool the same pyramid builds it once with this
    layer and passes it to both as `flat_features` (as `kml.build_mask_rcnn`
    does). Every map is flattened row-major and the
    maps are concatenated in order (`kml.ops.flatten_pyramid`).

    Call arguments:
        features: list of float tensors `[B, H_l, W_l, C]`.

    Returns:
        Tensor `[B, sum_l H_l * W_l, C]` in the layer's compute dtype.

    Example:

    >>> import numpy as np
    >>> import keras_maskrcnn_layers as kml
    >>> features = [np.random.rand(2, 256 // 2**l, 256 // 2**l, 16).astype("float32") for l in (2, 3, 4, 5)]
    >>> boxes = np.array([[[10, 10, 60, 90], [0, 0, 200, 250]]] * 2, "float32")
    >>> table = kml.FlattenPyramid()(features)
    >>> tuple(table.shape)
    (2, 5440, 16)
    >>> box_pool = kml.PyramidROIAlign(pool_size=7)(boxes, features, flat_features=table)
    >>> mask_pool = kml.PyramidROIAlign(pool_size=14)(boxes, features, flat_features=table)
    >>> tuple(box_pool.shape), tuple(mask_pool.shape)
    ((2, 2, 7, 7, 16), (2, 2, 14, 14, 16))
    """

    def call(self, features):
        if not isinstance(features, (list, tuple)):
            raise ValueError("`features` must be a list of [B, H_l, W_l, C] tensors.")
        return flatten_pyramid([ops.cast(f, self.compute_dtype) for f in features])

    def compute_output_shape(self, features_shape):
        sizes = [None if None in tuple(s)[1:3] else s[1] * s[2] for s in features_shape]
        total = None if None in sizes else sum(sizes)
        return (features_shape[0][0], total, features_shape[0][-1])

    def compute_output_spec(self, features):
        shape = self.compute_output_shape([f.shape for f in features])
        return keras.KerasTensor(shape, dtype=self.compute_dtype)

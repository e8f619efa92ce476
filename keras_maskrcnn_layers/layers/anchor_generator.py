"""Anchors for every level of a feature pyramid, in matterport's layout."""

import math

import keras
import numpy as np
from keras import ops

from keras_maskrcnn_layers.api_export import kml_export
from keras_maskrcnn_layers.ops._validation import check_image_shape, check_positive_int


def _as_float_tuple(name, values):
    if isinstance(values, (int, float)) and not isinstance(values, bool):
        values = (values,)
    if not isinstance(values, (tuple, list)) or len(values) == 0:
        raise ValueError(f"`{name}` must be a non-empty sequence of positive numbers. Received: {name}={values!r}")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 or math.isinf(v):
            raise ValueError(f"`{name}` must hold positive, finite numbers. Received: {name}={values!r}")
    return tuple(float(v) for v in values)


@kml_export
class AnchorGenerator(keras.layers.Layer):
    """Generates the anchors of a feature pyramid for a fixed image size.

    An anchor of scale `s` and ratio `r` (width / height) has height
    `s / sqrt(r)` and width `s * sqrt(r)`, centred at
    `((index + offset) * stride)` along each axis (Faster R-CNN, Ren et al.
    2015, Sec. 3.1). Level `l` has `ceil(height / stride_l)` by
    `ceil(width / stride_l)` feature cells, of which every `anchor_stride`-th
    along each axis carries anchors.

    Anchors are ordered level-major, then row-major over the feature cells,
    then scale-major and ratio-minor within a cell: the order of an RPN head
    output reshaped from `[B, H, W, A * 4]` to `[B, H * W * A, 4]`. With one
    scale per level this equals matterport's `generate_pyramid_anchors`.

    Args:
        scales: tuple of positive numbers (one per level), or tuple of tuples
            (several per level, the same number on every level so that one
            shared RPN head can predict them). Anchor sides in pixels.
            Defaults to `(32, 64, 128, 256, 512)`.
        ratios: tuple of positive numbers. Width / height. Defaults to
            `(0.5, 1.0, 2.0)`.
        strides: tuple of positive ints, one per level. Defaults to
            `(4, 8, 16, 32, 64)`.
        anchor_stride: int >= 1. Place anchors every `anchor_stride` feature
            cells. Defaults to `1`.
        offset: float. Anchor centre = `(index + offset) * stride`.
            Defaults to `0.0` (matterport); `0.5` centres anchors in cells.
        **kwargs: base `keras.layers.Layer` arguments.

    Call arguments:
        images: optional tensor `[B, H, W, C]` with static `H, W`; used only
            for its shape.
        image_shape: optional static `(height, width)`; give it or `images`.

    Returns:
        float32 tensor `[num_anchors, 4]`, yxyx pixels of the input image.
        `num_anchors = sum_l cells_l * anchors_per_location`.

    Example:

    >>> import keras_maskrcnn_layers as kml
    >>> generator = kml.AnchorGenerator(scales=(8, 16, 32, 64, 128))
    >>> anchors = generator(image_shape=(128, 128))
    >>> tuple(anchors.shape), generator.anchors_per_location
    ((4092, 4), 3)
    """

    def __init__(
        self,
        scales=(32, 64, 128, 256, 512),
        ratios=(0.5, 1.0, 2.0),
        strides=(4, 8, 16, 32, 64),
        anchor_stride=1,
        offset=0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(scales, (tuple, list)) or len(scales) == 0:
            raise ValueError(f"`scales` must be a non-empty tuple, one entry per level. Received: scales={scales!r}")
        per_level = [_as_float_tuple("scales", s) for s in scales]
        if len({len(s) for s in per_level}) != 1:
            raise ValueError(
                "`scales` must give the same number of scales on every level, so that a shared "
                f"RPN head can predict them. Received: scales={scales!r}"
            )
        self._level_scales = per_level
        self.ratios = _as_float_tuple("ratios", ratios)
        if not isinstance(strides, (tuple, list)) or len(strides) == 0:
            raise ValueError(f"`strides` must be a non-empty tuple of ints. Received: strides={strides!r}")
        self.strides = tuple(check_positive_int("strides", s) for s in strides)
        if len(self.strides) != len(per_level):
            raise ValueError(
                f"`scales` and `strides` must have one entry per level each. Received: "
                f"scales={scales!r} ({len(per_level)} levels), strides={strides!r} ({len(self.strides)} levels)"
            )
        self.anchor_stride = check_positive_int("anchor_stride", anchor_stride)
        if isinstance(offset, bool) or not isinstance(offset, (int, float)) or not math.isfinite(offset):
            raise ValueError(f"`offset` must be a finite number. Received: offset={offset!r}")
        self.offset = float(offset)
        self.scales = tuple(
            s[0] if not isinstance(orig, (tuple, list)) else s for s, orig in zip(per_level, scales)
        )
        self._convert_input_args = False
        self._allow_non_tensor_positional_args = True
        self.built = True

    @property
    def anchors_per_location(self):
        return len(self._level_scales[0]) * len(self.ratios)

    def level_shapes(self, image_shape):
        """`(rows, cols)` of anchor positions on each level."""
        height, width = check_image_shape("image_shape", image_shape)
        shapes = []
        for stride in self.strides:
            rows = math.ceil(math.ceil(height / stride) / self.anchor_stride)
            cols = math.ceil(math.ceil(width / stride) / self.anchor_stride)
            shapes.append((rows, cols))
        return shapes

    def num_anchors(self, image_shape):
        return sum(r * c for r, c in self.level_shapes(image_shape)) * self.anchors_per_location

    def anchors_numpy(self, image_shape):
        """The anchors as a float32 NumPy array `[num_anchors, 4]`."""
        height, width = check_image_shape("image_shape", image_shape)
        ratios = np.asarray(self.ratios, dtype=np.float64)
        levels = []
        for scales, stride in zip(self._level_scales, self.strides):
            # Cell shape [S * R]: scale-major, ratio-minor.
            s = np.repeat(np.asarray(scales, np.float64), len(ratios))
            r = np.tile(ratios, len(scales))
            heights = s / np.sqrt(r)
            widths = s * np.sqrt(r)
            rows = np.arange(0, math.ceil(height / stride), self.anchor_stride)
            cols = np.arange(0, math.ceil(width / stride), self.anchor_stride)
            cy = (rows + self.offset) * stride
            cx = (cols + self.offset) * stride
            cy, cx = np.meshgrid(cy, cx, indexing="ij")  # [rows, cols]
            cy = cy[:, :, None]
            cx = cx[:, :, None]
            boxes = np.stack(
                [
                    cy - 0.5 * heights,
                    cx - 0.5 * widths,
                    cy + 0.5 * heights,
                    cx + 0.5 * widths,
                ],
                axis=-1,
            )  # [rows, cols, S * R, 4]
            levels.append(boxes.reshape(-1, 4))
        return np.concatenate(levels, axis=0).astype(np.float32)

    def _resolve_shape(self, images, image_shape):
        if image_shape is not None and images is not None:
            raise ValueError("Pass either `images` or `image_shape` to AnchorGenerator, not both.")
        if image_shape is None:
            if images is None:
                raise ValueError("AnchorGenerator needs `image_shape=(height, width)` or an `images` tensor.")
            if len(images.shape) != 4:
                raise ValueError(f"`images` must be [B, H, W, C]. Received: shape={images.shape}")
            image_shape = tuple(images.shape[1:3])
            if None in image_shape:
                raise ValueError(
                    "`images` must have a static height and width to generate anchors. "
                    f"Received: shape={images.shape}"
                )
        return check_image_shape("image_shape", tuple(image_shape))

    def call(self, images=None, image_shape=None):
        image_shape = self._resolve_shape(images, image_shape)
        return ops.convert_to_tensor(self.anchors_numpy(image_shape), dtype="float32")

    def compute_output_spec(self, images=None, image_shape=None):
        image_shape = self._resolve_shape(images, image_shape)
        return keras.KerasTensor((self.num_anchors(image_shape), 4), dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "scales": [list(s) if isinstance(s, tuple) else s for s in self.scales],
                "ratios": list(self.ratios),
                "strides": list(self.strides),
                "anchor_stride": self.anchor_stride,
                "offset": self.offset,
            }
        )
        return config

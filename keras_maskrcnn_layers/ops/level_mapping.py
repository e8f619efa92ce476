"""Which FPN level a box is pooled from (FPN paper, Lin et al. 2017, Eqn. 1)."""

from keras import ops

from keras_maskrcnn_layers.ops._validation import check_positive_int


def check_level_range(min_level, max_level, canonical_size, canonical_level):
    min_level = check_positive_int("min_level", min_level, minimum=0)
    max_level = check_positive_int("max_level", max_level, minimum=0)
    if max_level < min_level:
        raise ValueError(
            f"`max_level` must be >= `min_level`. Received: min_level={min_level}, max_level={max_level}"
        )
    if isinstance(canonical_size, bool) or not isinstance(canonical_size, (int, float)) or canonical_size <= 0:
        raise ValueError(f"`canonical_size` must be a positive number. Received: canonical_size={canonical_size!r}")
    canonical_level = check_positive_int("canonical_level", canonical_level, minimum=0)
    return min_level, max_level, float(canonical_size), canonical_level


def assign_fpn_levels(boxes, min_level=2, max_level=5, canonical_size=224, canonical_level=4):
    """FPN level of each box: `floor(k0 + log2(sqrt(h * w) / canonical_size))`, clamped.

    Computed by comparing areas with the exact thresholds
    `(canonical_size * 2**(l - k0))**2` instead of taking a logarithm, so a
    box exactly on a level boundary (a 224 x 224 box, say) goes to the level
    the formula gives, on every backend and dtype. Zero-area boxes go to
    `min_level`.

    Args:
        boxes: float tensor `[..., 4]`, yxyx pixels of the input image.
        min_level: int. Lowest level. Defaults to `2`.
        max_level: int. Highest level. Defaults to `5`.
        canonical_size: float. Box side mapped to `canonical_level`
            (224, the ImageNet pre-training size). Defaults to `224`.
        canonical_level: int. `k0` of the FPN paper. Defaults to `4`.

    Returns:
        int32 tensor `[...]` with values in `[min_level, max_level]`.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> from keras_maskrcnn_layers import ops as kml_ops
    >>> boxes = np.array([[0, 0, 224, 224], [0, 0, 32, 32], [0, 0, 1000, 900]], "float32")
    >>> keras.ops.convert_to_numpy(kml_ops.assign_fpn_levels(boxes)).tolist()
    [4, 2, 5]
    """
    min_level, max_level, canonical_size, canonical_level = check_level_range(
        min_level, max_level, canonical_size, canonical_level
    )
    boxes = ops.cast(ops.convert_to_tensor(boxes), "float32")
    h = ops.maximum(boxes[..., 2] - boxes[..., 0], 0.0)
    w = ops.maximum(boxes[..., 3] - boxes[..., 1], 0.0)
    area = h * w
    level = ops.zeros_like(area, dtype="int32") + min_level
    for lvl in range(min_level + 1, max_level + 1):
        threshold = (canonical_size * 2.0 ** (lvl - canonical_level)) ** 2
        level = level + ops.cast(area >= threshold, "int32")
    return level

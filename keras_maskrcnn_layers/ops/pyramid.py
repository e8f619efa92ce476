"""The FPN pyramid as one table: what ROI Align reads."""

from keras import ops


def check_maps(features, expected=None, levels=""):
    """`features` as a list of rank-4 tensors of one channel count."""
    if not isinstance(features, (list, tuple)):
        raise ValueError("`features` must be a list of [B, H_l, W_l, C] tensors, one per level.")
    if expected is not None and len(features) != expected:
        raise ValueError(
            f"`features` must hold one map per level {levels} ({expected} maps). Received: {len(features)} maps"
        )
    if not features:
        raise ValueError("`features` must hold at least one map.")
    features = [ops.convert_to_tensor(f) for f in features]
    channels = features[0].shape[-1]
    for i, f in enumerate(features):
        if len(f.shape) != 4 or f.shape[-1] != channels:
            raise ValueError(
                f"Every feature map must be [B, H, W, {channels}]. Received: features[{i}] of shape {f.shape}"
            )
    return features


def check_table(table, features):
    """`table` as the `[B, T, C]` that `flatten_pyramid(features)` would give."""
    table = ops.convert_to_tensor(table)
    channels = features[0].shape[-1]
    if len(table.shape) != 3 or table.shape[-1] != channels:
        raise ValueError(
            f"`flat_features` must be [B, T, {channels}], the maps flattened by `flatten_pyramid`. "
            f"Received: shape={table.shape}"
        )
    sizes = [f.shape[1] * f.shape[2] if None not in f.shape[1:3] else None for f in features]
    if table.shape[1] is not None and None not in sizes and table.shape[1] != sum(sizes):
        raise ValueError(
            f"`flat_features` must have one row per map cell: {sum(sizes)} rows for maps of shapes "
            f"{[tuple(f.shape[1:3]) for f in features]}. Received: shape={table.shape}"
        )
    return table


def flatten_pyramid(features):
    """Flattens FPN maps into the one table that ROI Align reads.

    Every map is flattened row-major and the maps are concatenated in order.
    `multilevel_roi_align` and `kml.PyramidROIAlign` build this table on
    every call unless it is given to them as `flat_features` (with
    `sampling_ratio=1`, the table of all maps but the first, which they read
    in place); a model that pools the same pyramid several times (box and
    mask heads) builds it once.

    Args:
        features: list of tensors `[B, H_l, W_l, C]`.

    Returns:
        Tensor `[B, sum_l H_l * W_l, C]` in the dtype of `features[0]`.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> from keras_maskrcnn_layers import ops as kml_ops
    >>> features = [np.zeros((2, 8, 8, 4), "float32"), np.ones((2, 4, 4, 4), "float32")]
    >>> table = kml_ops.flatten_pyramid(features)
    >>> tuple(table.shape), float(keras.ops.convert_to_numpy(table)[0, 64:].min())
    ((2, 80, 4), 1.0)
    """
    features = check_maps(features)
    dtype = features[0].dtype
    batch, channels = ops.shape(features[0])[0], features[0].shape[-1]
    flat = [ops.reshape(ops.cast(f, dtype), (batch, -1, channels)) for f in features]
    return flat[0] if len(flat) == 1 else ops.concatenate(flat, axis=1)

"""ROI Align (He et al., Mask R-CNN, 2017), single- and multi-level, in keras.ops.

Semantics follow torchvision's and Detectron2's kernels (API.md):

- the box is scaled to the feature map; with `aligned=True` 0.5 is
  subtracted from every coordinate (Detectron2 ROIAlignV2), with
  `aligned=False` the ROI's height and width are clamped to at least 1;
- each of the `pool_h * pool_w` bins averages `sampling_ratio**2` bilinear
  samples at `start + bin_size * (i + (k + 0.5) / sampling_ratio)`;
- a sample with `y < -1` or `y > H` (likewise x) contributes 0; otherwise
  coordinates below 0 are clamped to 0 and samples past the last row or
  column read that row or column (no extrapolation).

The implementation never materialises the sampling grid: the features are
flattened to `[T, C]`, and for each sample offset and each of the four
bilinear corners one gather of `[B, N, pool_h, pool_w, C]` is weighted and
accumulated at once, so XLA fuses gather, multiply and add into one loop.

Gradients flow to the features only, through the hand-written backward of
`_roi_align_grad` (a loop of weighted scatter-adds, a few ROIs per step, or
two matmuls per map on small maps) instead of the automatic gradient of the
gathers. Given the maps rather than a table, the backward writes each map's
gradient directly, so the table is never differentiated and split.

The pyramid is read as one table `[B, T, C]` (`flatten_pyramid`). Building
it copies every map: on the standard benchmark 10-17 ms under TF XLA and
under `jax.jit` (with the benchmarks' malloc settings; see
benchmarks/README.md), close to pooling its 2 x 1000 boxes at pool 7 with
one sample per bin (12-21 ms). A model whose heads pool the same pyramid
several times flattens it once and passes the table as `flat_features`.
Given the maps with one sample per bin, the forward copies all but the
first (largest) map and reads that one where it lies
(`FIRST_MAP_IN_PLACE_MAX_SAMPLING_RATIO`).

With `box_indices` (ground-truth mask crops, which need no gradient) the
automatic gradient is kept.
"""

from keras import ops

from keras_maskrcnn_layers.ops import _roi_align_grad
from keras_maskrcnn_layers.ops._validation import check_pair, check_positive_int
from keras_maskrcnn_layers.ops.level_mapping import assign_fpn_levels, check_level_range
from keras_maskrcnn_layers.ops.pyramid import check_maps, check_table, flatten_pyramid


def _axis_samples(start, bin_size, pool, sampling_ratio):
    """Sample coordinates along one axis: `[B, N]` -> `[B, N, pool, sampling_ratio]`."""
    grid = ops.arange(pool, dtype="float32")[:, None] + (
        ops.arange(sampling_ratio, dtype="float32")[None, :] + 0.5
    ) / float(sampling_ratio)
    return start[..., None, None] + bin_size[..., None, None] * grid


def _axis_corners(coord, size):
    """The per-axis bilinear rule of torchvision's `bilinear_interpolate`.

    Args:
        coord: float `[B, N, pool, S]` sample coordinates.
        size: float `[B, N]` length of the axis on the box's level.

    Returns:
        `(low, high, w_low, w_high)`: int32 indices and float32 weights, the
        weights zero for samples outside `[-1, size]`.
    """
    size = size[..., None, None]
    inside = ops.logical_and(coord >= -1.0, coord <= size)
    coord = ops.maximum(coord, 0.0)
    low = ops.floor(coord)
    at_end = low >= size - 1.0
    low = ops.where(at_end, size - 1.0, low)
    high = ops.where(at_end, size - 1.0, low + 1.0)
    frac = ops.where(at_end, 0.0, coord - low)
    inside = ops.cast(inside, "float32")
    return (
        ops.cast(low, "int32"),
        ops.cast(high, "int32"),
        (1.0 - frac) * inside,
        frac * inside,
    )


def _sample_corners(boxes, height, width, scale, pool_size, sampling_ratio, aligned):
    """Bilinear corners of every sample, per axis.

    Returns:
        `(y_corners, x_corners)`, each the `(low, high, w_low, w_high)` of
        `_axis_corners`, of shape `[B, N, pool, sampling_ratio]`.
    """
    pool_h, pool_w = pool_size
    offset = 0.5 if aligned else 0.0
    y1 = boxes[..., 0] * scale - offset
    x1 = boxes[..., 1] * scale - offset
    roi_h = boxes[..., 2] * scale - offset - y1
    roi_w = boxes[..., 3] * scale - offset - x1
    if not aligned:
        roi_h = ops.maximum(roi_h, 1.0)
        roi_w = ops.maximum(roi_w, 1.0)
    ys = _axis_samples(y1, roi_h / pool_h, pool_h, sampling_ratio)
    xs = _axis_samples(x1, roi_w / pool_w, pool_w, sampling_ratio)
    return _axis_corners(ys, height), _axis_corners(xs, width)


def _gather_pool(flat_features, base, width, y_corners, x_corners, sampling_ratio):
    """The forward pass: one gather per sample offset and bilinear corner.

    Args:
        flat_features: `[T, C]`, every map flattened row-major.
        base: int32 `[B, N]`, row in `flat_features` of the box's map origin.
        width: float32 `[B, N]`, width of the box's map.

    Returns:
        float32 `[B, N, pool_h, pool_w, C]`.
    """
    y_low, y_high, wy_low, wy_high = y_corners
    x_low, x_high, wx_low, wx_high = x_corners
    row_stride = ops.cast(width, "int32")[..., None, None]
    base = base[..., None]
    y_terms = ((y_low * row_stride, wy_low), (y_high * row_stride, wy_high))
    x_terms = ((x_low, wx_low), (x_high, wx_high))
    norm = 1.0 / float(sampling_ratio * sampling_ratio)

    output = None
    for ky in range(sampling_ratio):
        for kx in range(sampling_ratio):
            for y_index, y_weight in y_terms:
                for x_index, x_weight in x_terms:
                    # [B, N, pool_h, 1] + [B, N, 1, pool_w] -> [B, N, pool_h, pool_w]
                    index = (base + y_index[..., ky])[..., :, None] + x_index[..., kx][..., None, :]
                    weight = y_weight[..., ky][..., :, None] * x_weight[..., kx][..., None, :] * norm
                    term = ops.cast(ops.take(flat_features, index, axis=0), "float32") * weight[..., None]
                    output = term if output is None else output + term
    return output


def _roi_align_flat(flat_features, boxes, base, height, width, scale, pool_size, sampling_ratio, aligned):
    """ROI Align over a flattened feature table, with the automatic gradient.

    Args:
        flat_features: `[T, C]`, every (image, level) map flattened row-major.
        boxes: float32 `[B, N, 4]`, yxyx pixels of the input image.
        base: int32 `[B, N]`, row in `flat_features` of the box's map origin.
        height, width: float32 `[B, N]`, size of the box's map.
        scale: float32 `[B, N]`, pixels-to-map factor (`1 / stride`).

    Returns:
        float32 `[B, N, pool_h, pool_w, C]`.
    """
    boxes = ops.stop_gradient(boxes)
    y_corners, x_corners = _sample_corners(boxes, height, width, scale, pool_size, sampling_ratio, aligned)
    return _gather_pool(flat_features, base, width, y_corners, x_corners, sampling_ratio)


# Given the maps rather than a table, the forward reads the first (finest,
# largest) map where it lies and flattens only the others when
# `sampling_ratio` is at most this (`_gather_first_in_place`): it skips
# copying the map that holds most of the pyramid (134 of 178 MB on the
# standard benchmark), at the price of a second set of gathers, which read
# one row for the boxes of the other levels. Measured on the standard
# benchmark (2 CPU cores, Intel Xeon, forward, medians of 9 calls in one
# process; every map flattened -> first map in place, and a ready table):
# - `sampling_ratio` 1, TF XLA: pool 7 27.2 -> 16.0 ms (table 14.7), pool 14
#   57.4 -> 48.1 ms (44.7); `jax.jit`: 27.0 -> 18.2 ms (12.5), 55.7 -> 47.1
#   ms (40.1).
# - `sampling_ratio` 2, TF XLA: pool 7 39.8 -> 32.9 ms (29.6), pool 14 70.7
#   -> 69.8 ms (56.6); `jax.jit`: 50.4 -> 48.6 ms (27.2), 81.9 -> 124.8 ms
#   (65.8). With sixteen gathers per bin the second set is no longer free
#   on every compiler, so two samples per bin and more flatten every map.
#   Nor would reading in place bring the maps' pool-7 forward under the
#   crop_and_resize baseline there (TF XLA 32.0-32.8 ms against 28.7-31.7;
#   docs/roi_align_speed.md has the runs).
FIRST_MAP_IN_PLACE_MAX_SAMPLING_RATIO = 1


def _gather_first_in_place(maps, offsets, total, level, width, y_corners, x_corners, sampling_ratio):
    """`_gather_pool` over the maps without copying the first one.

    Two sources are gathered for every box: the first map as it lies, and
    the table of the other maps (`flatten_pyramid(maps[1:])`). A box's
    output is taken from the source that holds its level. In the other its
    indices are 0, so that source reads one row for it, which is then
    dropped: selected, not weighted by zero, so that a NaN or infinity
    there stays out of other boxes' outputs.

    Args:
        maps: list of `[B, H_l, W_l, C]`, at least two.
        offsets: int32 scalars, row of every map's origin in one image's
            table of all maps; `total`, that table's rows.
        level: int32 `[B, N]`, index of each box's map.
        width, y_corners, x_corners: as for `_gather_pool`, on the box's
            own map.

    Returns:
        float32 `[B, N, pool_h, pool_w, C]`.
    """
    batch, channels = ops.shape(maps[0])[0], maps[0].shape[-1]
    images = ops.arange(batch, dtype="int32")[:, None]
    first_rows = offsets[1]
    on_first = ops.equal(level, 0)
    sources = (
        (ops.reshape(maps[0], (-1, channels)), images * first_rows, on_first),
        (
            ops.reshape(flatten_pyramid(maps[1:]), (-1, channels)),
            # The table of the others starts at map 1; level 0's negative offset is masked below.
            images * (ops.cast(total, "int32") - first_rows) + ops.take(ops.stack(offsets) - first_rows, level),
            ops.logical_not(on_first),
        ),
    )
    y_low, y_high, wy_low, wy_high = y_corners
    x_low, x_high, wx_low, wx_high = x_corners
    parts = []
    for flat, base, on in sources:
        on = ops.cast(on, "int32")
        mask = on[..., None, None]
        parts.append(
            _gather_pool(
                flat,
                base * on,
                width,
                (y_low * mask, y_high * mask, wy_low, wy_high),
                (x_low * mask, x_high * mask, wx_low, wx_high),
                sampling_ratio,
            )
        )
    return ops.where(on_first[..., None, None, None], parts[0], parts[1])


def _pool_maps(table, shapes, boxes, scales, level_fn, pool_size, sampling_ratio, aligned, valid_fn=None):
    """ROI Align of every box on its own map of a flattened pyramid.

    The forward is `_gather_pool` on the table. The gradient, when every
    shape is static, is `_roi_align_grad.table_gradient`; otherwise it is the
    automatic gradient of the gathers.

    Args:
        table: `[B, T, C]`, the maps flattened row-major and concatenated
            in order (`flatten_pyramid`); or the list of maps `[B, H, W, C]`,
            which the forward then flattens itself (all but the first up to
            `FIRST_MAP_IN_PLACE_MAX_SAMPLING_RATIO`), so that the gradient is
            computed for each map directly instead of for the table and then
            split.
        shapes: `(H, W)` of every map in the table, ints or scalar tensors.
        boxes: float32 `[B, N, 4]`, yxyx pixels of the input image.
        scales: list of floats, pixels-to-map factor of each map.
        level_fn: `boxes -> int32 [B, N]` index of each box's map, or `None`
            for a single map.
        valid_fn: `boxes -> float32 [B, N]`, 0 for boxes whose rows must be
            zeros, or `None`. It scales the sampling weights, so the forward
            gives zeros and the backward spreads nothing for those boxes, with
            no separate multiply for XLA to keep apart from the backward.

    Returns:
        float32 `[B, N, pool_h, pool_w, C]`. Gradients flow to `table` (to
        each map when given the maps), not to `boxes`.
    """

    maps = list(table) if isinstance(table, (list, tuple)) else None
    first_in_place = maps is not None and len(maps) > 1 and sampling_ratio <= FIRST_MAP_IN_PLACE_MAX_SAMPLING_RATIO

    def forward(boxes, table):
        boxes = ops.stop_gradient(boxes)
        batch, num_boxes = ops.shape(boxes)[0], ops.shape(boxes)[1]
        heights, widths, offsets = [], [], []
        total = 0
        for h, w in shapes:
            heights.append(ops.cast(h, "float32"))
            widths.append(ops.cast(w, "float32"))
            offsets.append(ops.cast(total, "int32"))
            total = total + h * w
        image_base = ops.arange(batch, dtype="int32")[:, None] * ops.cast(total, "int32")
        if level_fn is None:
            level = None
            fill = ops.ones((batch, num_boxes), "float32")
            height, width, scale = fill * heights[0], fill * widths[0], fill * float(scales[0])
            base = ops.broadcast_to(image_base, (batch, num_boxes))
        else:
            level = level_fn(boxes)
            height = ops.take(ops.stack(heights), level)
            width = ops.take(ops.stack(widths), level)
            scale = ops.take(ops.convert_to_tensor(scales, "float32"), level)
            base = image_base + ops.take(ops.stack(offsets), level)
        y_corners, x_corners = _sample_corners(boxes, height, width, scale, pool_size, sampling_ratio, aligned)
        if valid_fn is not None:
            valid = valid_fn(boxes)[..., None, None]
            y_corners = y_corners[:2] + tuple(w * valid for w in y_corners[2:])
        if first_in_place:
            out = _gather_first_in_place(table, offsets, total, level, width, y_corners, x_corners, sampling_ratio)
        else:
            table = flatten_pyramid(table) if maps is not None else table
            flat = ops.reshape(table, (-1, table.shape[-1]))
            out = _gather_pool(flat, base, width, y_corners, x_corners, sampling_ratio)
        return out, level, y_corners, x_corners, base, width

    static = all(isinstance(d, int) for shape in shapes for d in shape) and boxes.shape[1] is not None
    if not _roi_align_grad.DENSE_GRADIENT or not static:
        return forward(boxes, table)[0]

    # Every tensor the forward reads is an argument, none captured: JAX's
    # custom VJP may not close over values being differentiated.
    @ops.custom_gradient
    def pooled(boxes, *sources):
        out, level, y_corners, x_corners, base, width = forward(boxes, sources if maps else sources[0])

        def grad_fn(*upstream, variables=None):
            g = ops.cast(upstream[0], "float32")
            grad = _roi_align_grad.table_gradient(
                g, level, y_corners, x_corners, base, width, shapes, sampling_ratio, as_maps=maps is not None
            )
            grad = grad if maps is not None else [grad]
            # The boxes are constants (API.md).
            grads = (ops.zeros_like(boxes),) + tuple(ops.cast(d, s.dtype) for d, s in zip(grad, sources))
            # TensorFlow passes `variables` only when the forward read some,
            # which it cannot: the table arrives as a tensor.
            if variables is not None:
                return grads, [None] * len(variables)
            return grads

        return out, grad_fn

    return pooled(boxes, *maps) if maps is not None else pooled(boxes, table)


def _check_boxes_rank(boxes):
    if len(boxes.shape) != 3 or boxes.shape[-1] != 4:
        raise ValueError(f"`boxes` must have shape [B, N, 4] (yxyx pixels). Received: shape={boxes.shape}")


def roi_align(
    features, boxes, output_size, spatial_scale=1.0, sampling_ratio=2, aligned=True, box_indices=None
):
    """ROI Align on one feature map.

    Args:
        features: float tensor `[B, H, W, C]` (`[M, H, W, C]` with
            `box_indices`).
        boxes: float tensor `[B, N, 4]`, yxyx in the coordinates that
            `spatial_scale` maps onto the feature map (pixels of the input
            image with `spatial_scale = 1 / stride`).
        output_size: int or `(pool_h, pool_w)`.
        spatial_scale: float. Multiplies the box coordinates. Defaults to `1.0`.
        sampling_ratio: int >= 1. Bilinear samples per bin along each axis.
            Defaults to `2`.
        aligned: bool. Half-pixel shift of Detectron2's ROIAlignV2. Defaults
            to `True`.
        box_indices: optional int tensor `[B, N]`. Box `(b, n)` reads map
            `features[box_indices[b, n]]` instead of `features[b]` (as
            `tf.image.crop_and_resize` does); used to crop a different
            ground-truth mask for every ROI. Defaults to `None`.

    Returns:
        Tensor `[B, N, pool_h, pool_w, C]` in the dtype of `features`.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> from keras_maskrcnn_layers import ops as kml_ops
    >>> features = np.arange(16, dtype="float32").reshape(1, 4, 4, 1)
    >>> boxes = np.array([[[0.0, 0.0, 2.0, 2.0]]], "float32")
    >>> out = kml_ops.roi_align(features, boxes, output_size=1, sampling_ratio=1)
    >>> float(keras.ops.convert_to_numpy(out)[0, 0, 0, 0, 0])
    2.5
    """
    pool_size = check_pair("output_size", output_size)
    sampling_ratio = check_positive_int("sampling_ratio", sampling_ratio)
    if isinstance(spatial_scale, bool) or not isinstance(spatial_scale, (int, float)) or spatial_scale <= 0:
        raise ValueError(f"`spatial_scale` must be a positive number. Received: spatial_scale={spatial_scale!r}")
    features = ops.convert_to_tensor(features)
    boxes = ops.cast(ops.convert_to_tensor(boxes), "float32")
    _check_boxes_rank(boxes)
    if len(features.shape) != 4:
        raise ValueError(f"`features` must have shape [B, H, W, C]. Received: shape={features.shape}")
    if box_indices is None:
        _, height, width, channels = ops.shape(features)
        table = ops.reshape(features, (ops.shape(features)[0], -1, channels))
        out = _pool_maps(
            table, [(height, width)], boxes, [float(spatial_scale)], None, pool_size, sampling_ratio, bool(aligned)
        )
        return ops.cast(out, features.dtype)
    # Boxes read arbitrary maps here (ground-truth mask crops, which need no
    # gradient): the automatic gradient of the gathers serves.
    _, height, width, channels = ops.shape(features)
    batch, num_boxes = ops.shape(boxes)[0], ops.shape(boxes)[1]
    flat = ops.reshape(features, (-1, channels))
    base = ops.broadcast_to(ops.cast(box_indices, "int32") * (height * width), (batch, num_boxes))
    fill = ops.ones((batch, num_boxes), "float32")
    out = _roi_align_flat(
        flat,
        boxes,
        base,
        fill * ops.cast(height, "float32"),
        fill * ops.cast(width, "float32"),
        fill * float(spatial_scale),
        pool_size,
        sampling_ratio,
        bool(aligned),
    )
    return ops.cast(out, features.dtype)


def multilevel_roi_align(
    features,
    boxes,
    output_size,
    sampling_ratio=2,
    aligned=True,
    min_level=2,
    max_level=5,
    canonical_size=224,
    canonical_level=4,
    flat_features=None,
):
    """ROI Align over an FPN pyramid: each box is pooled from its own level.

    The level of a box is `assign_fpn_levels(boxes, ...)`; on level `l` the
    box is scaled by `1 / 2**l`. All levels are read from one table
    (`flatten_pyramid`), so a single set of gathers serves every box whatever
    its level; with `sampling_ratio=1` and no `flat_features`, the first map
    is read where it lies and only the others are copied into the table.
    Rows whose box is all zeros (padding, by the package's convention) give
    zeros.

    Args:
        features: list of float tensors `[B, H_l, W_l, C]` for levels
            `min_level..max_level` (stride `2**l`).
        boxes: float tensor `[B, N, 4]`, yxyx pixels of the input image.
        output_size: int or `(pool_h, pool_w)`.
        sampling_ratio: int >= 1. Defaults to `2`.
        aligned: bool. Defaults to `True`.
        min_level, max_level: ints. Levels of `features[0]` and
            `features[-1]`. Default to `2` and `5`.
        canonical_size, canonical_level: FPN paper Eqn. 1 constants.
            Default to `224` and `4`.
        flat_features: optional tensor `[B, T, C]`, `flatten_pyramid(features)`
            computed once by the caller. It is read instead of flattening
            `features` again, and gradients flow to it, not to `features`,
            whose shapes alone are then used. Defaults to `None`.

    Returns:
        Tensor `[B, N, pool_h, pool_w, C]` in the dtype of `features[0]`.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> from keras_maskrcnn_layers import ops as kml_ops
    >>> features = [np.ones((1, 64 // 2**l, 64 // 2**l, 8), "float32") for l in (2, 3, 4, 5)]
    >>> boxes = np.array([[[4.0, 4.0, 36.0, 44.0], [0.0, 0.0, 0.0, 0.0]]], "float32")
    >>> out = kml_ops.multilevel_roi_align(features, boxes, output_size=7)
    >>> tuple(out.shape), float(keras.ops.convert_to_numpy(out)[0, 1].max())
    ((1, 2, 7, 7, 8), 0.0)
    """
    pool_size = check_pair("output_size", output_size)
    sampling_ratio = check_positive_int("sampling_ratio", sampling_ratio)
    min_level, max_level, canonical_size, canonical_level = check_level_range(
        min_level, max_level, canonical_size, canonical_level
    )
    levels = f"{min_level}..{max_level}"
    features = check_maps(features, max_level - min_level + 1, levels)
    dtype = features[0].dtype
    boxes = ops.cast(ops.convert_to_tensor(boxes), "float32")
    _check_boxes_rank(boxes)
    if flat_features is None:
        # Flattened inside, so that the backward writes each map's gradient.
        table = [ops.cast(f, dtype) for f in features]
    else:
        table = ops.cast(check_table(flat_features, features), dtype)
    shapes = [tuple(ops.shape(f)[1:3]) for f in features]

    def level_fn(b):
        return assign_fpn_levels(b, min_level, max_level, canonical_size, canonical_level) - min_level

    def valid_fn(b):
        return ops.cast(ops.any(ops.not_equal(b, 0.0), axis=-1), "float32")

    scales = [2.0**-lvl for lvl in range(min_level, max_level + 1)]
    out = _pool_maps(table, shapes, boxes, scales, level_fn, pool_size, sampling_ratio, bool(aligned), valid_fn)
    return ops.cast(out, dtype)

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

Gradients flow to the features only, through a hand-written backward. The
automatic gradient of the gathers is one scatter-add per sample offset and
corner, each into its own zero copy of the whole feature table: slow on
XLA:CPU and gigabytes of memory. Two replacements:

- small maps (`_dense_gradient_pays`): no scatter at all. Sampling and bin
  averaging are separable, `out[i, j] = sum_yx Wy[i, y] Wx[j, x] F[y, x]`,
  so `dF = Wy^T g Wx` is two batched matmuls per map, over static chunks of
  ROIs to bound memory;
- large maps: every bin's upstream gradient is spread over the
  `(2 * sampling_ratio)^2` bilinear taps of its samples in one weighted
  scatter-add per chunk of ROIs (`_scatter_gradient`). On the standard
  benchmark (1024 px, P2..P5, 256 channels, 2 x 1000 ROIs, sampling ratio 2,
  2 CPU cores) forward + backward takes 2x (pool 7) to 3x (pool 14) less
  time than with the automatic gradient, and about half the allocator peak.

With `box_indices` (ground-truth mask crops, which need no gradient) the
automatic gradient is kept.
"""

from keras import ops

from keras_maskrcnn_layers.ops._validation import check_pair, check_positive_int
from keras_maskrcnn_layers.ops.level_mapping import assign_fpn_levels, check_level_range


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


# === Backward: dense separable weights, no scatter ===

# Bytes the backward's `[B, n, H_l, pool_w, C]` float32 intermediate may take
# (`B` counted as 1 when unknown); the ROIs are processed in static chunks of
# `n` boxes to stay under it.
_BACKWARD_CHUNK_BYTES = 64 * 2**20
# The dense backward is used while its multiply-adds stay within this many
# times the scatter-adds of the automatic gradient (see `_dense_gradient_pays`):
# a matmul multiply-add costs some 20 to 40 times less than a scatter-add there.
_DENSE_GRADIENT_MAX_COST_RATIO = 32.0
# False gives the automatic gradient of the gathers everywhere: the tests'
# reference for the hand-written one.
_DENSE_GRADIENT = True


def _axis_weights(corners, start, stop, size, sampling_ratio):
    """Per-bin weights of every map row (or column), for boxes `start:stop`.

    `Wy[b, n, i, y]` sums, over the samples of bin `i`, the bilinear weights
    that they put on row `y` (the rule of `_axis_corners`, out-of-range
    samples included), divided by `sampling_ratio`, so that the forward is
    `out[i, j] = sum_y sum_x Wy[i, y] Wx[j, x] F[y, x]`.

    Returns:
        float32 `[B, stop - start, pool, size]`.
    """
    low, high, w_low, w_high = (c[:, start:stop, ..., None] for c in corners)
    grid = ops.arange(size, dtype="int32")
    weights = ops.where(low == grid, w_low, 0.0) + ops.where(high == grid, w_high, 0.0)
    return ops.sum(weights, axis=3) / float(sampling_ratio)


def _dense_costs(height, width, pool_size):
    """Multiply-adds per box and channel of the backward on one map, y first and x first."""
    pool_h, pool_w = pool_size
    return pool_w * height * (pool_h + width), pool_h * width * (pool_w + height)


def _dense_gradient_pays(shapes, pool_size, sampling_ratio):
    """Whether the dense backward is worth it on maps of `shapes` (static `(H, W)`).

    Per box and channel it costs `min(pool_w * H * (pool_h + W), ...)`
    multiply-adds per map, against `4 * sampling_ratio**2 * pool_h * pool_w`
    scatter-adds for the automatic gradient: it grows with the maps' area.
    Measured under XLA on CPU (TF, 2 cores): on P2..P5 of a 128 px image
    (ratio 10 at pool 14, 16 at pool 7, sampling ratio 2) fwd+bwd is 1.6 to
    2.5x faster than the automatic gradient when the upstream gradient
    depends on the output elementwise (XLA then fuses the forward gathers
    into each of the scatters), and at par to 1.4x slower when it does not;
    on a 1024 px image (ratio ~800) it is ~25x slower.
    """
    if not all(isinstance(d, int) for shape in shapes for d in shape):
        return False
    dense = sum(min(_dense_costs(h, w, pool_size)) for h, w in shapes)
    scatter = 4 * sampling_ratio**2 * pool_size[0] * pool_size[1]
    return dense <= _DENSE_GRADIENT_MAX_COST_RATIO * scatter


def _map_gradient(upstream, y_corners, x_corners, on_map, map_shape, sampling_ratio):
    """Gradient of one feature map: `dF[y, x] = sum_n sum_ij Wy[i, y] Wx[j, x] g[i, j]`.

    Two batched contractions per chunk of boxes, e.g. with y first
    `h = einsum("bniy,bnijc->bnyjc", Wy, g)` then
    `dF += einsum("bnjx,bnyjc->byxc", Wx, h)`: matmuls, where the automatic
    gradient of the gathers is a scatter-add per sample and corner.

    Args:
        upstream: float32 `[B, N, pool_h, pool_w, C]`.
        on_map: float32 `[B, N]`, 1 for the boxes pooled from this map, or
            `None` when all are.
        map_shape: static `(H, W)` of the map.

    Returns:
        float32 `[B, H, W, C]`.
    """
    height, width = map_shape
    batch, num_boxes, pool_h, pool_w, channels = upstream.shape
    y_cost, x_cost = _dense_costs(height, width, (pool_h, pool_w))
    y_first = y_cost <= x_cost
    if num_boxes is None:
        bounds = [(0, None)]
    else:
        per_box = (height * pool_w if y_first else width * pool_h) * channels * 4 * (batch or 1)
        chunk = max(1, _BACKWARD_CHUNK_BYTES // per_box)
        # No boxes: one empty chunk still gives the zero gradient its shape.
        bounds = [(start, min(start + chunk, num_boxes)) for start in range(0, num_boxes, chunk)] or [(0, 0)]

    grad = None
    for start, stop in bounds:
        wy = _axis_weights(y_corners, start, stop, height, sampling_ratio)
        wx = _axis_weights(x_corners, start, stop, width, sampling_ratio)
        if on_map is not None:
            wy = wy * on_map[:, start:stop, None, None]
        g = upstream[:, start:stop]
        if y_first:
            part = ops.einsum("bnjx,bnyjc->byxc", wx, ops.einsum("bniy,bnijc->bnyjc", wy, g))
        else:
            part = ops.einsum("bniy,bnixc->byxc", wy, ops.einsum("bnjx,bnijc->bnixc", wx, g))
        grad = part if grad is None else grad + part
    return grad


# Bytes the scatter backward's weighted updates `[B, n, 2S*pool_h, 2S*pool_w, C]`
# may take per chunk of `n` boxes. Every chunk scatters into its own copy of
# the feature table, so fewer, larger chunks are faster: measured on the
# standard benchmark, pool 7 fwd+bwd takes 413 / 235 / 215 ms with chunks of
# 128 MB / 512 MB / 2 GB (one chunk there).
_SCATTER_CHUNK_BYTES = 2048 * 2**20


def _axis_taps(corners, sampling_ratio):
    """The `2 * sampling_ratio` bilinear taps of every bin along one axis: `[B, N, pool, 2S]`."""
    low, high, w_low, w_high = corners
    pool = low.shape[2]
    shape = (-1, low.shape[1], pool, 2 * sampling_ratio)
    return (
        ops.reshape(ops.stack([low, high], axis=-1), shape),
        ops.reshape(ops.stack([w_low, w_high], axis=-1), shape),
    )


def _scatter_gradient(upstream, base, width, y_corners, x_corners, sampling_ratio, num_rows):
    """Gradient of the flattened feature table: one weighted scatter-add per chunk of boxes.

    Every bin spreads its upstream gradient over the `(2S)^2` bilinear taps
    of its samples, weighted as in the forward, in a single scatter-add per
    chunk instead of one per sample and corner (the automatic gradient).

    Returns:
        float32 `[num_rows, C]`.
    """
    batch, num_boxes, pool_h, pool_w, channels = upstream.shape
    y_index, y_weight = _axis_taps(y_corners, sampling_ratio)
    x_index, x_weight = _axis_taps(x_corners, sampling_ratio)
    rows = base[..., None, None] + y_index * ops.cast(width, "int32")[..., None, None]
    index = rows[..., :, :, None, None] + x_index[..., None, None, :, :]
    weight = y_weight[..., :, :, None, None] * x_weight[..., None, None, :, :] / float(sampling_ratio**2)
    per_box = (batch or 1) * pool_h * pool_w * (2 * sampling_ratio) ** 2 * channels * 4
    chunk = max(1, _SCATTER_CHUNK_BYTES // per_box)
    grad = None
    for start in range(0, num_boxes, chunk):
        stop = min(start + chunk, num_boxes)
        g = upstream[:, start:stop, :, None, :, None, :]
        updates = g * weight[:, start:stop, ..., None]
        part = ops.scatter(
            ops.reshape(index[:, start:stop], (-1, 1)), ops.reshape(updates, (-1, channels)), (num_rows, channels)
        )
        grad = part if grad is None else grad + part
    return grad


def _pool_maps(features, boxes, scales, level_fn, pool_size, sampling_ratio, aligned):
    """ROI Align of every box on its own map among `features`.

    The forward is `_gather_pool` on all maps flattened into one table. The
    gradient, where `_dense_gradient_pays`, is `_map_gradient` per map, so
    it comes out in each map's shape without a scatter; otherwise it is the
    automatic gradient of the gathers.

    Args:
        features: list of `[B, H_l, W_l, C]` tensors of one dtype.
        boxes: float32 `[B, N, 4]`, yxyx pixels of the input image.
        scales: list of floats, pixels-to-map factor of each map.
        level_fn: `boxes -> int32 [B, N]` index of each box's map, or `None`
            for a single map.

    Returns:
        float32 `[B, N, pool_h, pool_w, C]`. Gradients flow to `features`
        only.
    """

    def forward(boxes, features):
        boxes = ops.stop_gradient(boxes)
        batch, num_boxes = ops.shape(boxes)[0], ops.shape(boxes)[1]
        channels = features[0].shape[-1]
        heights, widths, offsets = [], [], []
        total = 0
        for f in features:
            _, h, w, _ = ops.shape(f)
            heights.append(ops.cast(h, "float32"))
            widths.append(ops.cast(w, "float32"))
            offsets.append(ops.cast(total, "int32"))
            total = total + h * w
        flat = ops.concatenate([ops.reshape(f, (batch, -1, channels)) for f in features], axis=1)
        flat = ops.reshape(flat, (-1, channels))
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
        out = _gather_pool(flat, base, width, y_corners, x_corners, sampling_ratio)
        return out, level, y_corners, x_corners, base, width

    shapes = [tuple(f.shape[1:3]) for f in features]
    static = all(isinstance(d, int) for shape in shapes for d in shape) and boxes.shape[1] is not None
    if not _DENSE_GRADIENT or not static:
        return forward(boxes, features)[0]
    dense = _dense_gradient_pays(shapes, pool_size, sampling_ratio)

    # Every tensor the forward reads is an argument, none captured: JAX's
    # custom VJP may not close over values being differentiated.
    @ops.custom_gradient
    def pooled(boxes, *features):
        out, level, y_corners, x_corners, base, width = forward(boxes, features)

        def grad_fn(*upstream, variables=None):
            g = ops.cast(upstream[0], "float32")
            grads = [ops.zeros_like(boxes)]  # The boxes are constants (API.md).
            if dense:
                for index, (f, shape) in enumerate(zip(features, shapes)):
                    on_map = None if level is None else ops.cast(ops.equal(level, index), "float32")
                    grad = _map_gradient(g, y_corners, x_corners, on_map, shape, sampling_ratio)
                    grads.append(ops.cast(grad, f.dtype))
            else:
                total = sum(h * w for h, w in shapes)
                batch, channels = ops.shape(g)[0], g.shape[-1]
                flat = _scatter_gradient(g, base, width, y_corners, x_corners, sampling_ratio, batch * total)
                flat = ops.reshape(flat, (batch, total, channels))
                start = 0
                for f, (h, w) in zip(features, shapes):
                    grads.append(ops.cast(ops.reshape(flat[:, start : start + h * w], (batch, h, w, channels)), f.dtype))
                    start += h * w
            # TensorFlow passes `variables` only when the forward read some,
            # which it cannot: the features arrive as tensors.
            if variables is not None:
                return tuple(grads), [None] * len(variables)
            return tuple(grads)

        return out, grad_fn

    return pooled(boxes, *features)


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
        out = _pool_maps(
            [features], boxes, [float(spatial_scale)], None, pool_size, sampling_ratio, bool(aligned)
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
):
    """ROI Align over an FPN pyramid: each box is pooled from its own level.

    The level of a box is `assign_fpn_levels(boxes, ...)`; on level `l` the
    box is scaled by `1 / 2**l`. All levels are flattened into one table, so
    a single set of gathers serves every box whatever its level. Rows whose
    box is all zeros (padding, by the package's convention) give zeros.

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

    Returns:
        Tensor `[B, N, pool_h, pool_w, C]` in the dtype of `features[0]`.

    Example:

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
    if not isinstance(features, (list, tuple)):
        raise ValueError("`features` must be a list of [B, H_l, W_l, C] tensors, one per level.")
    expected = max_level - min_level + 1
    if len(features) != expected:
        raise ValueError(
            f"`features` must hold one map per level {min_level}..{max_level} ({expected} maps). "
            f"Received: {len(features)} maps"
        )
    features = [ops.convert_to_tensor(f) for f in features]
    dtype = features[0].dtype
    channels = features[0].shape[-1]
    for i, f in enumerate(features):
        if len(f.shape) != 4 or f.shape[-1] != channels:
            raise ValueError(
                f"Every feature map must be [B, H, W, {channels}]. Received: features[{i}] of shape {f.shape}"
            )
    boxes = ops.cast(ops.convert_to_tensor(boxes), "float32")
    _check_boxes_rank(boxes)

    def level_fn(b):
        return assign_fpn_levels(b, min_level, max_level, canonical_size, canonical_level) - min_level

    scales = [2.0**-lvl for lvl in range(min_level, max_level + 1)]
    features = [ops.cast(f, dtype) for f in features]
    out = _pool_maps(features, boxes, scales, level_fn, pool_size, sampling_ratio, bool(aligned))
    real = ops.cast(ops.any(ops.not_equal(boxes, 0.0), axis=-1), "float32")
    out = out * real[..., None, None, None]
    return ops.cast(out, dtype)

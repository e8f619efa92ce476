"""The hand-written backward of ROI Align: gradient of the flattened feature table.

The automatic gradient of `roi_align._gather_pool` is one scatter-add per
sample offset and bilinear corner, each into its own zero copy of the whole
feature table: slow on XLA:CPU and gigabytes of memory. `table_gradient`
replaces it with one of two formulations:

- small maps (`dense_gradient_pays`): no scatter at all. Sampling and bin
  averaging are separable, `out[i, j] = sum_yx Wy[i, y] Wx[j, x] F[y, x]`,
  so `dF = Wy^T g Wx` is two batched matmuls per map, over static chunks of
  ROIs to bound memory (`map_gradient`);
- large maps: every bin's upstream gradient is spread over the
  `(2 * sampling_ratio)^2` bilinear taps of its samples in one weighted
  scatter-add per chunk of ROIs, the chunks adding into one table in turn
  (`scatter_gradient`). On the standard benchmark (1024 px, P2..P5, 256
  channels, 2 x 1000 ROIs, sampling ratio 2, 2 CPU cores) forward +
  backward takes 2x (pool 7) to 3x (pool 14) less time than with the
  automatic gradient, with an allocator peak of about 0.3 GB instead of 3.5
  GB (pool 7) and 13 GB (pool 14).

The module-level settings are read at trace time, so tests may patch them.
"""

from keras import ops

# Bytes the backward's `[B, n, H_l, pool_w, C]` float32 intermediate may take
# (`B` counted as 1 when unknown); the ROIs are processed in static chunks of
# `n` boxes to stay under it.
BACKWARD_CHUNK_BYTES = 64 * 2**20
# The dense backward is used while its multiply-adds stay within this many
# times the scatter-adds of the automatic gradient (see `dense_gradient_pays`):
# a matmul multiply-add costs some 20 to 40 times less than a scatter-add there.
DENSE_GRADIENT_MAX_COST_RATIO = 32.0
# False gives the automatic gradient of the gathers everywhere: the tests'
# reference for the hand-written one.
DENSE_GRADIENT = True


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


def dense_gradient_pays(shapes, pool_size, sampling_ratio):
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
    return dense <= DENSE_GRADIENT_MAX_COST_RATIO * scatter


def map_gradient(upstream, y_corners, x_corners, on_map, map_shape, sampling_ratio):
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
        chunk = max(1, BACKWARD_CHUNK_BYTES // per_box)
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
# may take per chunk of `n` boxes; at most `MAX_SCATTER_CHUNKS` chunks, since
# every chunk is unrolled into the graph and compile time grows with them.
# Measured on the standard benchmark (TF XLA, 2 cores, pool 7 / 14): chunks of
# 128 / 64 / 32 MB give an allocator peak of 437 / 268 / 217 MB at pool 7
# (one 1.6 GB chunk: 1.8 GB) at the same speed, and first calls of 2.6 / 3.5
# / 6.1 s; at pool 14, 32 chunks (205 MB) peak at about 330 MB.
SCATTER_CHUNK_BYTES = 64 * 2**20
MAX_SCATTER_CHUNKS = 32


def _axis_taps(corners, sampling_ratio):
    """The `2 * sampling_ratio` bilinear taps of every bin along one axis: `[B, N, pool, 2S]`."""
    low, high, w_low, w_high = corners
    pool = low.shape[2]
    shape = (-1, low.shape[1], pool, 2 * sampling_ratio)
    return (
        ops.reshape(ops.stack([low, high], axis=-1), shape),
        ops.reshape(ops.stack([w_low, w_high], axis=-1), shape),
    )


def scatter_gradient(upstream, base, width, y_corners, x_corners, sampling_ratio, num_rows):
    """Gradient of the flattened feature table: one weighted scatter-add per chunk of boxes.

    Every bin spreads its upstream gradient over the `(2S)^2` bilinear taps
    of its samples, weighted as in the forward, in a single scatter-add per
    chunk instead of one per sample and corner (the automatic gradient).
    The chunks add into one table in turn, so only one chunk's updates are
    held at a time.

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
    chunk = max(1, SCATTER_CHUNK_BYTES // per_box, -(-num_boxes // MAX_SCATTER_CHUNKS))
    grad = ops.zeros((num_rows, channels), "float32")
    for start in range(0, num_boxes, chunk):
        stop = min(start + chunk, num_boxes)
        chunk_weight = weight[:, start:stop]
        if start > 0:
            # Adds exactly 0, but makes this chunk's updates depend on the
            # previous scatter: without it XLA computes every chunk's updates
            # before the first scatter and holds them all (1.8 GB instead of
            # 0.27 GB at pool 7 on the standard benchmark). `nan_to_num` keeps
            # a NaN or inf gradient from spreading through the product.
            chunk_weight = chunk_weight + ops.nan_to_num(grad[0, 0]) * 0.0
        updates = upstream[:, start:stop, :, None, :, None, :] * chunk_weight[..., None]
        grad = ops.scatter_update(
            grad, ops.reshape(index[:, start:stop], (-1, 1)), ops.reshape(updates, (-1, channels)), reduction="add"
        )
    return grad


def table_gradient(upstream, level, y_corners, x_corners, base, width, shapes, sampling_ratio):
    """Gradient of the flattened table `[B, T, C]` that `roi_align._pool_maps` read.

    Args:
        upstream: float32 `[B, N, pool_h, pool_w, C]`.
        level: int32 `[B, N]`, index of each box's map, or `None` for one map.
        y_corners, x_corners: the forward's `_sample_corners`.
        base: int32 `[B, N]`, row of the box's map origin in the table with
            the batch flattened in, `[B * T, C]`.
        width: float32 `[B, N]`, width of the box's map.
        shapes: static `(H, W)` of every map, in table order.

    Returns:
        float32 `[B, T, C]`.
    """
    batch, channels = ops.shape(upstream)[0], upstream.shape[-1]
    pool_size = tuple(upstream.shape[2:4])
    total = sum(h * w for h, w in shapes)
    if not dense_gradient_pays(shapes, pool_size, sampling_ratio):
        flat = scatter_gradient(upstream, base, width, y_corners, x_corners, sampling_ratio, batch * total)
        return ops.reshape(flat, (batch, total, channels))
    parts = []
    for index, shape in enumerate(shapes):
        on_map = None if level is None else ops.cast(ops.equal(level, index), "float32")
        grad = map_gradient(upstream, y_corners, x_corners, on_map, shape, sampling_ratio)
        parts.append(ops.reshape(grad, (batch, shape[0] * shape[1], channels)))
    return parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=1)

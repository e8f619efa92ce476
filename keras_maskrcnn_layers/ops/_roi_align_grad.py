"""The hand-written backward of ROI Align: gradient of the flattened feature table or of its maps.

The automatic gradient of `roi_align._gather_pool` is one scatter-add per
sample offset and bilinear corner, each into its own zero copy of the whole
feature table: slow on XLA:CPU and gigabytes of memory. `table_gradient`
replaces it with one of two formulations:

- small maps (`dense_gradient_pays`): no scatter at all. Sampling and bin
  averaging are separable, `out[i, j] = sum_yx Wy[i, y] Wx[j, x] F[y, x]`,
  so `dF = Wy^T g Wx` is two batched matmuls per map, over static chunks of
  ROIs to bound memory (`map_gradient`);
- large maps: every bin's upstream gradient is spread over the
  `(2 * sampling_ratio)^2` bilinear taps of its samples by weighted
  scatter-adds, in a loop over a few ROIs at a time (`scatter_gradient`
  for the table, `map_scatter_gradients` for the maps), each step's
  updates small (`SCATTER_CHUNK_BYTES`). On the standard benchmark (1024
  px, P2..P5, 256 channels, 2 x 1000 ROIs, sampling ratio 2, 2 CPU cores,
  JAX) forward + backward of the table took 75 ms at pool 7 and 225 ms at
  pool 14 on an AMD EPYC host (8 MB steps), and 152-156 / 487-508 ms on an
  Intel Xeon one (16 MB steps), with 196 / 197 MB of XLA buffers (the
  README); the automatic gradient of the gathers takes 3.5 GB (pool 7) and
  13 GB (pool 14) of allocator peak.

The loops are written for XLA, which updates the buffer in place at every
step. Without XLA, TensorFlow copies the whole buffer at every step
(`tensor_scatter_nd_add` cannot reuse a loop variable's memory): forward +
backward on the standard benchmark then takes 1.8 s at pool 7 and 8.5 s at
pool 14, against 0.09 s and 0.27 s under XLA.

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


# Bytes of the weighted updates `[n, 2S * pool_h, 2S * pool_w, C]` that one
# step of the scatter backward's loop computes and scatters, `n` boxes at a
# time: few enough steps that their fixed cost stays small, small enough
# that a step's updates stay near the cores. Measured on the standard
# benchmark (2 CPU cores, sampling ratio 2):
# - AMD EPYC host, fwd+bwd of the maps, JAX: at pool 7, steps of 4 to 12 MB
#   (5 to 15 boxes) all take 73-77 ms; at pool 14 (3.2 MB a box), one box a
#   step takes 247 ms, two (8 MB) 218 ms, three 222 ms; TF XLA 8 and 12 MB
#   within 3 %.
# - Intel Xeon host, the maps' backward alone, TF XLA, pool 14: two boxes
#   (8 MB) 556-564 ms, three to seven (12-24 MB) 503-519 ms, ten (32 MB)
#   539 ms, twenty (64 MB) 744 ms; pool 7: 8, 16 and 32 MB 186-210 ms.
#   `make bench`, two runs each way, 8 -> 16 MB: fwd+bwd at pool 14
#   504-594 -> 479-508 ms (TF XLA and JAX, maps and table), at pool 7
#   155-165 -> 149-158 ms; JAX XLA buffers 188 -> 197 MB.
# The 64 MB chunks unrolled into the graph that this loop replaced took
# 197 ms at pool 7 (AMD), steps of 3 / 6 / 13 / 31 MB 143 / 122 / 139 /
# 172 ms (before the boxes were sorted).
SCATTER_CHUNK_BYTES = 16 * 2**20


def _axis_taps(corners, sampling_ratio):
    """The `2 * sampling_ratio` bilinear taps of every bin along one axis: `[B, N, pool, 2S]`."""
    low, high, w_low, w_high = corners
    pool = low.shape[2]
    shape = (-1, low.shape[1], pool, 2 * sampling_ratio)
    return (
        ops.reshape(ops.stack([low, high], axis=-1), shape),
        ops.reshape(ops.stack([w_low, w_high], axis=-1), shape),
    )


def scatter_chunk_boxes(upstream_shape, sampling_ratio):
    """Boxes per step of the scatter loops, for an upstream of static `[B, N, pool_h, pool_w, C]`."""
    _, num_boxes, pool_h, pool_w, channels = upstream_shape
    per_box = pool_h * pool_w * (2 * sampling_ratio) ** 2 * channels * 4
    return max(1, min(num_boxes, SCATTER_CHUNK_BYTES // per_box))


def _box_taps(upstream, rows, y_weight, x_corners, sampling_ratio):
    """What the scatter loops read of each box, the batch flattened in: `[B * N, ...]` tensors.

    `rows` is int32 `[B, N, pool_h, 2S]`, the buffer row of each y tap's
    column 0, and `y_weight` the weight of each y tap (`_axis_taps`).
    `"first"` is the buffer row of each box's first tap, by which the loops
    order the boxes: neighbours in the buffer then share a step and its rows
    stay in cache (at pool 7, 92 ms instead of 110 ms for the standard
    benchmark's fwd+bwd on JAX; at pool 14, 263 ms instead of 300).
    """
    _, _, pool_h, pool_w, channels = upstream.shape
    taps = 2 * sampling_ratio
    x_index, x_weight = _axis_taps(x_corners, sampling_ratio)
    return {
        "rows": ops.reshape(rows, (-1, pool_h, taps)),
        "y_weight": ops.reshape(y_weight / float(sampling_ratio**2), (-1, pool_h, taps)),
        "x_index": ops.reshape(x_index, (-1, pool_w, taps)),
        "x_weight": ops.reshape(x_weight, (-1, pool_w, taps)),
        "upstream": ops.reshape(upstream, (-1, pool_h, pool_w, channels)),
        "first": ops.reshape(rows[..., 0, 0] + x_index[..., 0, 0], (-1,)),
    }


def _scatter_loop(box_taps, num_rows, chunk, count, offset, order):
    """Adds the taps of boxes `offset .. offset + count - 1` (of `order`) into a zero `[num_rows, C]` buffer.

    Each step takes `chunk` boxes, builds their `[chunk, pool_h, 2S,
    pool_w, 2S]` rows and weighted updates and adds them in one scatter.
    The last step is shifted back to end at the last box; the boxes it
    repeats, or that lie outside the range, add exact zeros to row 0.

    Args:
        box_taps: `_box_taps`.
        chunk: static int, boxes per step, at most the number of boxes.
        count, offset: int32 scalars.
        order: int32 `[B * N]` permutation of the boxes.
    """
    box_taps = {name: value for name, value in box_taps.items() if name != "first"}
    channels = box_taps["upstream"].shape[-1]
    total = ops.shape(box_taps["rows"])[0]

    def step(i, grad):
        first = offset + i * chunk
        position = ops.minimum(first, offset + count - chunk) + ops.arange(chunk, dtype="int32")
        fresh = ops.logical_and(position >= first, position < offset + count)
        boxes = ops.take(order, ops.clip(position, 0, total - 1))
        part = {name: ops.take(value, boxes, axis=0) for name, value in box_taps.items()}
        # [n, pool_h, 2S, 1, 1] + [n, 1, 1, pool_w, 2S] -> [n, pool_h, 2S, pool_w, 2S]
        index = part["rows"][:, :, :, None, None] + part["x_index"][:, None, None, :, :]
        index = ops.where(fresh[:, None, None, None, None], index, 0)
        weight = part["y_weight"][:, :, :, None, None] * part["x_weight"][:, None, None, :, :]
        updates = part["upstream"][:, :, None, :, None, :] * weight[..., None]
        # `where`, not a product: a NaN of a repeated box must not reach row 0.
        updates = ops.where(fresh[:, None, None, None, None, None], updates, 0.0)
        return ops.scatter_update(
            grad, ops.reshape(index, (-1, 1)), ops.reshape(updates, (-1, channels)), reduction="add"
        )

    steps = (count + chunk - 1) // chunk
    return ops.fori_loop(0, steps, step, ops.zeros((num_rows, channels), "float32"))


def _scatter_buffers(upstream, buffer, origin, width, y_corners, x_corners, sampling_ratio, sizes):
    """The scatter loops shared by the table's and the maps' gradients.

    Box `(b, n)` adds into buffer `buffer[b, n]` (of `len(sizes)`), whose
    rows of its map start at `origin[b, n]` and are `width[b, n]` apart. The
    boxes are argsorted by buffer, then by the row of their first tap, and
    one `_scatter_loop` per buffer walks that buffer's boxes.

    Args:
        upstream: float32 `[B, N, pool_h, pool_w, C]`, `N` static.
        buffer: int32 `[B, N]`, the buffer of each box.
        origin, width: int32 `[B, N]`.
        sizes: rows of every buffer, ints or int32 scalars.

    Returns:
        List of float32 `[size, C]`, one per buffer.
    """
    num_boxes, channels = upstream.shape[1], upstream.shape[-1]
    if num_boxes == 0:
        return [ops.zeros((size, channels), "float32") for size in sizes]
    y_index, y_weight = _axis_taps(y_corners, sampling_ratio)
    rows = origin[..., None, None] + y_index * width[..., None, None]
    box_taps = _box_taps(upstream, rows, y_weight, x_corners, sampling_ratio)
    # Every image holds `num_boxes` boxes, so the batch holds at least `chunk`.
    chunk = scatter_chunk_boxes(upstream.shape, sampling_ratio)
    # Each buffer's rows start after the previous buffers' in the sort key.
    starts = ops.stack([ops.cast(sum(sizes[:i]), "int32") for i in range(len(sizes))])
    buffer = ops.reshape(buffer, (-1,))
    order = ops.argsort(ops.take(starts, buffer) + box_taps["first"])
    sorted_buffer = ops.take(buffer, order)
    grads = []
    for index, size in enumerate(sizes):
        count = ops.sum(ops.cast(ops.equal(sorted_buffer, index), "int32"))
        offset = ops.sum(ops.cast(ops.less(sorted_buffer, index), "int32"))
        grads.append(_scatter_loop(box_taps, size, chunk, count, offset, order))
    return grads


def scatter_gradient(upstream, base, width, y_corners, x_corners, sampling_ratio, num_rows):
    """Gradient of the flattened feature table: a loop of weighted scatter-adds, a few boxes at a time.

    Every bin spreads its upstream gradient over the `(2S)^2` bilinear taps
    of its samples, weighted as in the forward. The loop (`_scatter_loop`)
    walks the boxes of the whole batch, in the order of their place in the
    table, `scatter_chunk_boxes` at a time, so nothing of size `N` is held
    beyond the upstream, each step's updates stay in cache, and the graph
    has one scatter whatever `N`.

    Args:
        upstream: float32 `[B, N, pool_h, pool_w, C]`, `N` static.
        base: int32 `[B, N]`, row in the `[B * T, C]` table of the box's map origin.
        width: float32 `[B, N]`, width of the box's map.
        y_corners, x_corners: the forward's `_sample_corners`.
        num_rows: rows of the table, `B * T`.

    Returns:
        float32 `[num_rows, C]`.
    """
    width = ops.cast(width, "int32")
    buffer = ops.zeros_like(base)
    return _scatter_buffers(upstream, buffer, base, width, y_corners, x_corners, sampling_ratio, [num_rows])[0]


def map_scatter_gradients(upstream, level, y_corners, x_corners, shapes, sampling_ratio):
    """Gradients of the maps themselves, one scatter loop per map.

    The boxes are ordered by level and place, and the loop of map `l`
    (`_scatter_loop`) walks the `n_l` boxes of that level, adding into a
    `[B * H_l * W_l, C]` buffer that is the map's gradient once reshaped.
    The maps' gradient then takes no more memory than the maps; splitting
    the table's gradient into maps held both (178 MB each on the standard
    benchmark).

    Args:
        upstream: float32 `[B, N, pool_h, pool_w, C]`, `N` static.
        level: int32 `[B, N]`, index of each box's map.
        y_corners, x_corners: the forward's `_sample_corners`.
        shapes: static `(H, W)` of every map.

    Returns:
        List of float32 `[B, H, W, C]`, one per map.
    """
    batch, channels = ops.shape(upstream)[0], upstream.shape[-1]
    width = ops.take(ops.convert_to_tensor([w for _, w in shapes], "int32"), level)
    area = ops.take(ops.convert_to_tensor([h * w for h, w in shapes], "int32"), level)
    # Rows within the box's own map, the batch flattened in: `[B * H_l * W_l, C]`.
    origin = ops.arange(batch, dtype="int32")[:, None] * area
    sizes = [batch * h * w for h, w in shapes]
    grads = _scatter_buffers(upstream, level, origin, width, y_corners, x_corners, sampling_ratio, sizes)
    return [ops.reshape(grad, (batch, h, w, channels)) for grad, (h, w) in zip(grads, shapes)]


def table_gradient(upstream, level, y_corners, x_corners, base, width, shapes, sampling_ratio, as_maps=False):
    """Gradient of the flattened table `[B, T, C]` that `roi_align._pool_maps` read, or of its maps.

    Args:
        upstream: float32 `[B, N, pool_h, pool_w, C]`.
        level: int32 `[B, N]`, index of each box's map, or `None` for one map.
        y_corners, x_corners: the forward's `_sample_corners`.
        base: int32 `[B, N]`, row of the box's map origin in the table with
            the batch flattened in, `[B * T, C]`.
        width: float32 `[B, N]`, width of the box's map.
        shapes: static `(H, W)` of every map, in table order.
        as_maps: bool. Return the gradient of every map instead of the table's.

    Returns:
        float32 `[B, T, C]`, or with `as_maps` a list of `[B, H, W, C]`.
    """
    batch, channels = ops.shape(upstream)[0], upstream.shape[-1]
    pool_size = tuple(upstream.shape[2:4])
    total = sum(h * w for h, w in shapes)
    if not dense_gradient_pays(shapes, pool_size, sampling_ratio):
        if as_maps:
            if level is None:
                level = ops.zeros(ops.shape(base), "int32")
            return map_scatter_gradients(upstream, level, y_corners, x_corners, shapes, sampling_ratio)
        flat = scatter_gradient(upstream, base, width, y_corners, x_corners, sampling_ratio, batch * total)
        return ops.reshape(flat, (batch, total, channels))
    maps = []
    for index, shape in enumerate(shapes):
        on_map = None if level is None else ops.cast(ops.equal(level, index), "float32")
        maps.append(map_gradient(upstream, y_corners, x_corners, on_map, shape, sampling_ratio))
    if as_maps:
        return maps
    parts = [ops.reshape(grad, (batch, h * w, channels)) for grad, (h, w) in zip(maps, shapes)]
    return parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=1)

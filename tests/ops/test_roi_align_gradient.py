"""The hand-written (dense, scatter-free) gradient of ROI Align.

Held to two independent references: central finite differences, exact up to
rounding because ROI Align is linear in the features, and the automatic
gradient of the gathers (`_roi_align_grad.DENSE_GRADIENT = False`). Every test
that checks the dense gradient also checks that it ran.
"""

import importlib

import keras
import numpy as np
import pytest

from keras_maskrcnn_layers import ops as kml_ops
from tests.backend_utils import backend, grad, jit, to_numpy

# The modules, not the `roi_align` function that `ops` re-exports under its name.
roi_align_module = importlib.import_module("keras_maskrcnn_layers.ops.roi_align")
grad_module = importlib.import_module("keras_maskrcnn_layers.ops._roi_align_grad")

RTOL = 1e-4
# 32 x 64 px image: P2 8x16, P3 4x8, P4 2x4, P5 1x2 (non-square, down to one row).
IMAGE_HW = (32, 64)
LEVELS = (2, 3, 4, 5)


@pytest.fixture
def dense_calls(monkeypatch):
    """Forces the dense backward (whatever the maps' size) and records its chunks.

    Each chunk of boxes builds `Wy` and `Wx` once per map: the fixture's list
    gets `(start, stop, map rows or columns)` for each.
    """
    monkeypatch.setattr(grad_module, "DENSE_GRADIENT_MAX_COST_RATIO", float("inf"))
    calls = []
    axis_weights = grad_module._axis_weights

    def counting(corners, start, stop, size, sampling_ratio):
        calls.append((start, stop, size))
        return axis_weights(corners, start, stop, size, sampling_ratio)

    monkeypatch.setattr(grad_module, "_axis_weights", counting)
    return calls


def compiled(fn):
    """`fn` under XLA, traced afresh: JAX caches traces by function, blind to module flags."""
    return jit(lambda *args: fn(*args))


def op_by_op_or_jax_jit(fn):
    """`fn` itself on TensorFlow; compiled on JAX, whose op-by-op mode compiles every op."""
    return compiled(fn) if backend() == "jax" else fn


def automatic_gradient(monkeypatch, loss, x, calls):
    """The reference: autodiff of the gathers, checked to be traced without the dense path."""
    before = len(calls)
    forwards = []
    gather_pool = roi_align_module._gather_pool

    def counting(*args):
        forwards.append(1)
        return gather_pool(*args)

    with monkeypatch.context() as patch:
        patch.setattr(grad_module, "DENSE_GRADIENT", False)
        patch.setattr(roi_align_module, "_gather_pool", counting)
        reference = grad(op_by_op_or_jax_jit(loss), x)
    assert forwards, "the reference gradient was not traced afresh"
    assert len(calls) == before, "the reference gradient must not run the dense backward"
    return reference


def assert_gradients_close(actual, expected):
    """Elementwise, relative to the largest entry: `|a - e| <= 1e-4 * (|e| + max|e|)`."""
    scale = np.abs(expected).max()
    assert scale > 0, "a vanishing reference gradient tests nothing"
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=RTOL * scale)


def finite_differences(pooled, arrays, upstream):
    """Central differences of `sum(pooled(arrays) * upstream)` w.r.t. every element of `arrays`.

    `pooled` maps a list of arrays, `k` copies of `arrays` stacked on the
    first axis, to the `k` copies of the `[B, N, ph, pw, C]` output, each
    copy independent of the others, so all `2 * size` perturbed copies run
    as one batch. A step of 1 is exact: the op is linear in the features.
    """
    sizes = [a.size for a in arrays]
    probes = sum(sizes)
    stacked = []
    offset = 0
    for a, size in zip(arrays, sizes):
        tiled = np.broadcast_to(a, (2, probes, *a.shape)).copy()
        view = tiled.reshape(2, probes, size)
        view[0, offset + np.arange(size), np.arange(size)] += 1.0
        view[1, offset + np.arange(size), np.arange(size)] -= 1.0
        stacked.append(tiled.reshape(2 * probes * a.shape[0], *a.shape[1:]))
        offset += size
    out = to_numpy(op_by_op_or_jax_jit(pooled)(stacked)).astype(np.float64).reshape(2, probes, *upstream.shape)
    loss = (out * upstream.astype(np.float64)).reshape(2, probes, -1).sum(axis=-1)
    flat = (loss[0] - loss[1]) / 2.0
    return np.split(flat, np.cumsum(sizes)[:-1])


def tricky_boxes(rng, batch, count, height, width):
    """Inside, across the border, fully outside, zero area and all-zero (padding) boxes."""
    centres = rng.uniform(-0.2, 1.2, size=(batch, count, 2)) * (height, width)
    sides = np.exp(rng.uniform(np.log(0.5), np.log(1.5 * max(height, width)), size=(batch, count, 2)))
    boxes = np.concatenate([centres - sides / 2, centres + sides / 2], axis=-1)
    boxes[:, 0] = (-0.3 * height, -0.2 * width, 1.4 * height, 1.1 * width)  # over every border
    boxes[:, 1] = (-3 * height, 2 * width, -2 * height, 3 * width)  # fully outside
    boxes[:, 2] = (0.5 * height, 0.5 * width, 0.5 * height, 0.5 * width)  # zero area
    boxes[:, 3] = 0.0  # padding
    boxes[:, 4] = (height - 1.2, width - 1.2, height + 0.4, width + 0.4)  # past the last row and column
    return boxes.astype("float32")


# === Single level ===


def single_level_case(seed, pool, sampling_ratio, aligned, scale=0.5):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(2, 5, 7, 3)).astype("float32")
    boxes = tricky_boxes(rng, 2, 9, 5 / scale, 7 / scale)
    upstream = rng.normal(size=(2, 9, *pool, 3)).astype("float32")
    kwargs = dict(output_size=pool, spatial_scale=scale, sampling_ratio=sampling_ratio, aligned=aligned)

    def loss(f):
        return keras.ops.sum(kml_ops.roi_align(f, boxes, **kwargs) * upstream)

    def pooled(arrays):
        copies = arrays[0].shape[0] // boxes.shape[0]
        return kml_ops.roi_align(arrays[0], np.tile(boxes, (copies, 1, 1)), **kwargs)

    return features, upstream, loss, pooled


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio, pool", [(1, (2, 3)), (2, (3, 1)), (3, (2, 2))])
def test_single_level(monkeypatch, dense_calls, aligned, sampling_ratio, pool):
    features, upstream, loss, pooled = single_level_case(sampling_ratio, pool, sampling_ratio, aligned)
    dense = grad(op_by_op_or_jax_jit(loss), features)
    assert dense_calls, "the dense backward did not run"
    (numeric,) = finite_differences(pooled, [features], upstream)
    assert_gradients_close(dense, numeric.reshape(features.shape))
    assert_gradients_close(dense, automatic_gradient(monkeypatch, loss, features, dense_calls))


def test_single_level_chunked_and_compiled(monkeypatch, dense_calls):
    features, _, loss, _ = single_level_case(5, (3, 2), 2, True)
    reference = automatic_gradient(monkeypatch, loss, features, dense_calls)
    monkeypatch.setattr(grad_module, "BACKWARD_CHUNK_BYTES", 1)
    under_xla = grad(compiled(loss), features)
    # One box per chunk.
    assert {(start, stop) for start, stop, _ in dense_calls} == {(n, n + 1) for n in range(9)}
    assert_gradients_close(under_xla, reference)


def test_box_indices_keeps_a_correct_automatic_gradient(dense_calls):
    rng = np.random.default_rng(11)
    maps = 3
    features = rng.normal(size=(maps, 6, 5, 2)).astype("float32")
    boxes = tricky_boxes(rng, 2, 6, 6, 5)
    box_indices = np.array([[2, 0, 1, 2, 1, 0], [1, 1, 0, 2, 2, 2]], "int32")
    upstream = rng.normal(size=(2, 6, 2, 3, 2)).astype("float32")

    def loss(f):
        return keras.ops.sum(kml_ops.roi_align(f, boxes, (2, 3), box_indices=box_indices) * upstream)

    def pooled(arrays):
        # Copy p of the maps sits at rows p * maps: point copy p of the boxes there.
        copies = arrays[0].shape[0] // maps
        indices = (box_indices[None] + maps * np.arange(copies)[:, None, None]).reshape(-1, box_indices.shape[1])
        return kml_ops.roi_align(arrays[0], np.tile(boxes, (copies, 1, 1)), (2, 3), box_indices=indices)

    analytic = grad(loss, features)
    assert not dense_calls, "boxes reading arbitrary maps keep the automatic gradient"
    (numeric,) = finite_differences(pooled, [features], upstream)
    assert_gradients_close(analytic, numeric.reshape(features.shape))


# === Multi level ===


def pyramid_case(seed, batch=2, count=14, channels=2):
    rng = np.random.default_rng(seed)
    height, width = IMAGE_HW
    features = [
        rng.normal(size=(batch, height // 2**lvl, width // 2**lvl, channels)).astype("float32") for lvl in LEVELS
    ]
    boxes = tricky_boxes(rng, batch, count, height, width)
    # Boxes of every level, side 1.1 * 224 * 2**(l - 4) px (FPN Eqn. 1), given by
    # their top-left corner: levels 2 to 4 centred, one more level 4 off centre.
    # P5 is 1 x 2 cells and its boxes 15.4: their corners let samples of every pool land.
    side = {lvl: 1.1 * 224 * 2.0 ** (lvl - 4) for lvl in LEVELS}

    def centred(lvl, cy, cx):
        return lvl, cy - side[lvl] / 2, cx - side[lvl] / 2

    corners = [
        centred(2, height / 2, width / 2),
        centred(3, height / 2, width / 2),
        centred(4, height / 2, width / 2),
        centred(4, 0.2 * height, 0.9 * width),
        (5, -246.4, -107.2),
        (5, -185.6, -107.2),
    ]
    for row, (lvl, y1, x1) in enumerate(corners, start=5):
        boxes[:, row] = (y1, x1, y1 + side[lvl], x1 + side[lvl])
    return features, boxes, rng


def flatten(arrays):
    return np.concatenate([a.reshape(-1) for a in arrays])


def as_table(maps):
    """The `[B, T, C]` table of `flatten_pyramid`, in NumPy."""
    return np.concatenate([m.reshape(m.shape[0], -1, m.shape[-1]) for m in maps], axis=1)


def unflatten(x, like):
    parts, start = [], 0
    for a in like:
        parts.append(keras.ops.reshape(x[start : start + a.size], a.shape))
        start += a.size
    return parts


def check_multilevel_gradient(monkeypatch, seed, aligned, sampling_ratio, pool, calls, backward, reference_calls):
    """The pyramid gradient of the backward that `calls` records, against both references.

    `reference_calls` is the list that must not grow while the automatic
    gradient is traced (the dense path's records; the scatter path has none).
    """
    features, boxes, rng = pyramid_case(seed)
    upstream = rng.normal(size=(*boxes.shape[:2], *pool, 2)).astype("float32")
    kwargs = dict(output_size=pool, sampling_ratio=sampling_ratio, aligned=aligned)

    def loss(x):
        return keras.ops.sum(kml_ops.multilevel_roi_align(unflatten(x, features), boxes, **kwargs) * upstream)

    def pooled(arrays):
        tiled = np.tile(boxes, (arrays[0].shape[0] // boxes.shape[0], 1, 1))
        return kml_ops.multilevel_roi_align(arrays, tiled, **kwargs)

    x = flatten(features)
    actual = grad(op_by_op_or_jax_jit(loss), x)
    assert calls, f"the {backward} backward did not run"
    assert_gradients_close(actual, flatten(finite_differences(pooled, features, upstream)))
    assert_gradients_close(actual, automatic_gradient(monkeypatch, loss, x, reference_calls))
    # Every level receives a gradient.
    assert all(np.any(part != 0) for part in np.split(actual, np.cumsum([f.size for f in features])[:-1]))


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio, pool", [(1, (3, 2)), (2, (2, 4)), (3, (3, 3))])
def test_multilevel(monkeypatch, dense_calls, aligned, sampling_ratio, pool):
    check_multilevel_gradient(
        monkeypatch, sampling_ratio, aligned, sampling_ratio, pool, dense_calls, "dense", dense_calls
    )


# P2 is 8 x 16 and the pool (4, 2): y first, 8 rows * pool width 2 * 2 channels * batch 2
# * 4 bytes = 256 bytes of intermediate a box.
@pytest.mark.parametrize(
    "chunk_bytes, p2_chunks", [(1, [(n, n + 1) for n in range(14)]), (5 * 256, [(0, 5), (5, 10), (10, 14)])]
)
def test_multilevel_chunked_and_compiled(monkeypatch, dense_calls, chunk_bytes, p2_chunks):
    features, boxes, rng = pyramid_case(21)
    upstream = rng.normal(size=(*boxes.shape[:2], 4, 2, 2)).astype("float32")

    def loss(x):
        return keras.ops.sum(kml_ops.multilevel_roi_align(unflatten(x, features), boxes, (4, 2)) * upstream)

    x = flatten(features)
    reference = automatic_gradient(monkeypatch, loss, x, dense_calls)
    monkeypatch.setattr(grad_module, "BACKWARD_CHUNK_BYTES", chunk_bytes)
    eager = grad(loss, x)
    # P2's 16 columns are the only map side of 16.
    assert sorted({(start, stop) for start, stop, size in dense_calls if size == 16}) == p2_chunks
    assert_gradients_close(eager, reference)
    if chunk_bytes == 1:
        return  # Compiling 14 chunks x 4 maps is slow; the uneven chunks are compiled.
    dense_calls.clear()
    under_xla = grad(compiled(loss), x)
    assert dense_calls, "the compiled gradient did not run the dense backward"
    assert_gradients_close(under_xla, reference)


@pytest.mark.parametrize("path", ["dense", "scatter"])
def test_multilevel_low_precision(request, path):
    calls = request.getfixturevalue(f"{path}_calls")
    features, boxes, rng = pyramid_case(3)
    upstream = rng.normal(size=(*boxes.shape[:2], 3, 3, 2)).astype("float32")

    def loss(dtype):
        def fn(x):
            levels = [keras.ops.cast(f, dtype) for f in unflatten(x, features)]
            out = kml_ops.multilevel_roi_align(levels, boxes, 3)
            assert keras.backend.standardize_dtype(out.dtype) == dtype
            return keras.ops.sum(keras.ops.cast(out, "float32") * upstream)

        return fn

    x = flatten(features)
    full = grad(loss("float32"), x)
    low = grad(loss("bfloat16"), x)
    assert calls, f"the {path} backward did not run"
    np.testing.assert_allclose(low, full, atol=0.05 * np.abs(full).max())


def test_no_gradient_flows_to_boxes(dense_calls):
    features, boxes, _ = pyramid_case(4)

    def loss(b):
        return keras.ops.sum(kml_ops.multilevel_roi_align(features, b, 3))

    assert np.all(grad(loss, boxes) == 0)
    assert dense_calls


# === The scatter backward (large maps) ===


@pytest.fixture
def scatter_calls(monkeypatch):
    """Forces the scatter backward (whatever the maps' size) and records its calls.

    The list gets `"table"` for each call of the table's loop
    (`scatter_gradient`) and `"maps"` for the per-map loops.
    """
    monkeypatch.setattr(grad_module, "DENSE_GRADIENT_MAX_COST_RATIO", 0.0)
    calls = []
    for name, kind in (("scatter_gradient", "table"), ("map_scatter_gradients", "maps")):
        original = getattr(grad_module, name)

        def counting(*args, original=original, kind=kind):
            calls.append(kind)
            return original(*args)

        monkeypatch.setattr(grad_module, name, counting)
    return calls


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio, pool", [(1, (3, 2)), (2, (2, 4)), (3, (3, 3))])
def test_multilevel_scatter(monkeypatch, scatter_calls, aligned, sampling_ratio, pool):
    check_multilevel_gradient(
        monkeypatch, sampling_ratio + 40, aligned, sampling_ratio, pool, scatter_calls, "scatter", []
    )
    assert set(scatter_calls) == {"maps"}, "the maps' gradient comes from the per-map loops"


@pytest.mark.parametrize("limit, sampling_ratio", [(0, 1), (2, 2)])
@pytest.mark.parametrize("path", ["dense", "scatter"])
def test_multilevel_other_forward_layout(monkeypatch, request, path, limit, sampling_ratio):
    """Both backwards, and the automatic gradient, with the forward layout the default leaves out here.

    By default the maps' forward reads P2 in place at sampling ratio 1 and
    flattens every map at 2 (`FIRST_MAP_IN_PLACE_MAX_SAMPLING_RATIO`); the
    tests above cover those, this one the other way round.
    """
    calls = request.getfixturevalue(f"{path}_calls")
    monkeypatch.setattr(roi_align_module, "FIRST_MAP_IN_PLACE_MAX_SAMPLING_RATIO", limit)
    reference_calls = calls if path == "dense" else []
    check_multilevel_gradient(
        monkeypatch, 60 + sampling_ratio, True, sampling_ratio, (3, 2), calls, path, reference_calls
    )


@pytest.mark.parametrize("batch", [1, 2])
def test_scatter_table_gradient_equals_maps_gradient(scatter_calls, batch):
    """`flat_features` takes the table's loop; its gradient is the maps' gradient, flattened."""
    features, boxes, rng = pyramid_case(25, batch=batch)
    upstream = rng.normal(size=(*boxes.shape[:2], 3, 4, 2)).astype("float32")

    def from_maps(x):
        return keras.ops.sum(kml_ops.multilevel_roi_align(unflatten(x, features), boxes, (3, 4)) * upstream)

    def from_table(table):
        pooled = kml_ops.multilevel_roi_align(features, boxes, (3, 4), flat_features=table)
        return keras.ops.sum(pooled * upstream)

    table = as_table(features)
    table_grad = grad(compiled(from_table), table)
    assert scatter_calls == ["table"]
    map_grads = grad(compiled(from_maps), flatten(features))
    assert scatter_calls == ["table", "maps"]
    parts = np.split(map_grads, np.cumsum([f.size for f in features])[:-1])
    expected = as_table([p.reshape(f.shape) for p, f in zip(parts, features)])
    assert_gradients_close(table_grad, expected)
    assert np.any(table_grad != 0)


def level_counts(boxes):
    """Boxes of every level over the whole batch: what each per-map loop walks."""
    levels = to_numpy(kml_ops.assign_fpn_levels(boxes)).reshape(-1)
    return np.bincount(levels - LEVELS[0], minlength=len(LEVELS))


@pytest.mark.parametrize("chunk_bytes, chunk", [(5 * 1024, 5), (9 * 1024, 9)])
def test_scatter_table_loop_against_automatic_gradient(monkeypatch, scatter_calls, chunk_bytes, chunk):
    """`flat_features`: one loop over the 28 boxes of the batch, the last step shifted back."""
    features, boxes, rng = pyramid_case(26)
    upstream = rng.normal(size=(*boxes.shape[:2], 4, 2, 2)).astype("float32")
    table = as_table(features)
    assert boxes.shape[0] * boxes.shape[1] % chunk != 0

    def loss(t):
        return keras.ops.sum(kml_ops.multilevel_roi_align(features, boxes, (4, 2), flat_features=t) * upstream)

    reference = automatic_gradient(monkeypatch, loss, table, [])
    monkeypatch.setattr(grad_module, "SCATTER_CHUNK_BYTES", chunk_bytes)
    assert grad_module.scatter_chunk_boxes(upstream.shape, 2) == chunk
    assert_gradients_close(grad(loss, table), reference)
    assert_gradients_close(grad(compiled(loss), table), reference)
    assert scatter_calls == ["table", "table"]


# One box's updates: 4 x 2 bins * 16 taps * 2 channels * 4 bytes = 1024 bytes.
# Each map's loop walks that level's boxes of the whole batch; at 5 and 7 per
# step some level leaves a remainder, so its last step is shifted back over
# boxes already added, which must add nothing twice.
@pytest.mark.parametrize("chunk_bytes, chunk", [(5 * 1024, 5), (1, 1), (7 * 1024 + 1, 7), (2**30, 14)])
def test_scatter_loop_steps_and_compiled(monkeypatch, scatter_calls, chunk_bytes, chunk):
    features, boxes, rng = pyramid_case(22)
    upstream = rng.normal(size=(*boxes.shape[:2], 4, 2, 2)).astype("float32")

    def loss(x):
        return keras.ops.sum(kml_ops.multilevel_roi_align(unflatten(x, features), boxes, (4, 2)) * upstream)

    x = flatten(features)
    if chunk in (5, 7):
        # Some level's loop has a last step shifted back over boxes already added.
        assert np.any(level_counts(boxes) % chunk != 0)
    reference = automatic_gradient(monkeypatch, loss, x, [])
    monkeypatch.setattr(grad_module, "SCATTER_CHUNK_BYTES", chunk_bytes)
    assert grad_module.scatter_chunk_boxes(upstream.shape, 2) == chunk
    updates_rows = []
    scatter_update = keras.ops.scatter_update

    def counting(inputs, indices, updates, reduction=None):
        updates_rows.append(updates.shape[0])
        return scatter_update(inputs, indices, updates, reduction=reduction)

    monkeypatch.setattr(grad_module.ops, "scatter_update", counting)
    assert_gradients_close(grad(loss, x), reference)
    # Every step scatters `chunk` boxes * 8 bins * 16 taps.
    assert updates_rows and set(updates_rows) == {chunk * 128}
    scatter_calls.clear()
    assert_gradients_close(grad(compiled(loss), x), reference)
    assert scatter_calls, "the compiled gradient did not run the scatter backward"


@pytest.mark.parametrize("source", ["maps", "table"])
def test_scatter_gradient_of_no_boxes_is_zero(scatter_calls, source):
    features, boxes, _ = pyramid_case(24)
    no_boxes = boxes[:, :0]

    def loss(x):
        if source == "maps":
            return keras.ops.sum(kml_ops.multilevel_roi_align(unflatten(x, features), no_boxes, 3))
        table = keras.ops.reshape(x, (2, -1, 2))
        return keras.ops.sum(kml_ops.multilevel_roi_align(features, no_boxes, 3, flat_features=table))

    gradient = grad(loss, flatten(features))
    assert scatter_calls == [source]
    np.testing.assert_array_equal(gradient, 0.0)


# One box per step; or all 14 in one step, so that every level's loop also
# reads the boxes of the levels before it (masked out), the NaN box among them.
@pytest.mark.parametrize("chunk_bytes", [1, 2**30])
def test_scatter_gradient_of_nan_stays_where_it_is(monkeypatch, scatter_calls, chunk_bytes):
    """A NaN upstream reaches only the taps of its own bin, whichever step of the loop it is in."""
    features, boxes, _ = pyramid_case(23, batch=1)
    boxes[0, 0] = (0.0, 0.0, 20.0, 20.0)  # level 2, its taps include the table's row 0
    monkeypatch.setattr(grad_module, "SCATTER_CHUNK_BYTES", chunk_bytes)

    def table_gradient(upstream):
        def loss(x):
            return keras.ops.sum(kml_ops.multilevel_roi_align(unflatten(x, features), boxes, 3) * upstream)

        return grad(loss, flatten(features))

    upstream = np.ones((*boxes.shape[:2], 3, 3, 2), "float32")
    upstream[0, 0] = 0.0
    upstream[0, 0, 0, 0] = np.nan  # box 0's first bin
    with np.errstate(invalid="ignore"):
        table = table_gradient(upstream)
    only_first_bin = np.zeros_like(upstream)
    only_first_bin[0, 0, 0, 0] = 1.0
    touched = table_gradient(only_first_bin) != 0
    assert scatter_calls and touched[0]
    np.testing.assert_array_equal(np.isnan(table), touched)


# === When the dense backward is used ===


def test_dense_gradient_only_where_it_pays():
    pays = grad_module.dense_gradient_pays
    small = [(128 // 2**lvl, 128 // 2**lvl) for lvl in LEVELS]
    large = [(1024 // 2**lvl, 1024 // 2**lvl) for lvl in LEVELS]
    assert pays(small, (14, 14), 2) and pays(small, (7, 7), 2)
    assert not pays(large, (7, 7), 2) and not pays(large, (14, 14), 2)
    assert not pays([(None, 32)], (7, 7), 2), "unknown map sizes keep the automatic gradient"

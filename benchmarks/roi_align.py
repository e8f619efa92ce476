"""Speed and memory of `kml.PyramidROIAlign` against the matterport-style baseline.

What is measured, side by side, on one synthetic FPN workload:

- `kml.PyramidROIAlign` under the TensorFlow backend, inside
  `tf.function(jit_compile=True)` (XLA) and `tf.function(jit_compile=False)`;
- the same layer under the JAX backend inside `jax.jit` (a child process,
  because Keras fixes its backend once per process);
- the baseline that matterport Mask R-CNN users run today: one
  `tf.image.crop_and_resize` per FPN level, boxes assigned to levels by the
  *rounded* log2 rule, results put back into box order; a plain
  `tf.function`, since CropAndResize has no XLA CPU kernel;
- where torch and torchvision are installed, `torchvision.ops.roi_align`
  (aligned) run per level as detectron2's `ROIPooler` runs it, in a child
  process, on CUDA where torch sees a GPU.

Each layer configuration is run for every `sampling_ratio` and `pool` asked
for, forward only and forward + backward (the gradient with respect to the
feature maps of `sum(output * upstream)`, `upstream` a fixed random tensor).

For every configuration the first call is timed on its own ("compile s":
tracing, compilation and one run), then `warmup` calls are run untimed and
`repeats` calls are timed one by one; the table reports their median.
While the timed calls run, a thread samples the resident set size every
millisecond; "peak extra MB" is the highest sample minus the RSS just
before the timed calls. That figure is approximate: allocators keep freed
memory for reuse, so memory already reserved by the warm-up is not seen.
TensorFlow with oneDNN keeps all large CPU buffers that way, so its rows
also report the peak bytes in use of TensorFlow's CPU allocator, and the
JAX rows the buffers XLA assigned to the compiled step. The script restarts
itself under the malloc settings of `_common.BENCHMARK_MALLOC_ENV` (unless
`--system-malloc`), with which glibc keeps freed memory as well.

Below the timings, a second table counts the memory traffic of each
forward from the boxes alone (`traffic_rows`): the feature-map pixels its
gathers must read, the output it writes and the whole tensors it copies.
`--traffic-only` prints that table without timing anything.

Run `python benchmarks/roi_align.py --help` for the options, or import
`run_benchmark` and `format_table` from another script.
"""

import argparse
import json
import math
import os
import sys

import numpy as np

if __package__ in (None, ""):  # Run as a script: make the `benchmarks` package importable.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import (  # noqa: E402
    BYTES_PER_MB,
    RESULTS_DIR,
    SYSTEM_MALLOC_FLAG,
    SYSTEM_MALLOC_HELP,
    Benchmark,
    Logger,
    TfAllocatorPeak,
    error_text,
    fmt,
    machine_info,
    machine_lines,
    package_versions,
    render_table,
    run_json_child,
    select_backend,
    use_benchmark_malloc,
    write_json,
)

LEVELS = (2, 3, 4, 5)
MIN_SIDE_PX = 16.0
MAX_SIDE_PX = 512.0
SEED = 0
DTYPE = "float32"
STANDARD_WORKLOAD = {"batch": 2, "image_size": 1024, "channels": 256, "num_boxes": 1000}
SMALL_WORKLOAD = {"batch": 2, "image_size": 1024, "channels": 64, "num_boxes": 200}
DEFAULT_REPEATS = {False: 5, True: 3}
DEFAULT_POOL_SIZES = (7, 14)
DEFAULT_SAMPLING_RATIOS = (1, 2)
FORWARD = "fwd"
BACKWARD = "fwd+bwd"
LAYER_IMPL = "kml.PyramidROIAlign"
FLAT_IMPL = "kml.PyramidROIAlign, flat table"
FLATTEN_IMPL = "kml.FlattenPyramid"
BASELINE_IMPL = "matterport crop_and_resize"
TORCH_IMPL = "torchvision roi_align"
# FPN Eqn. 1 by its area thresholds, as `kml.ops.assign_fpn_levels`: a box
# goes to LEVELS[0] plus the number of thresholds its area reaches.
LEVEL_AREA_THRESHOLDS = tuple((224.0 * 2.0 ** (level - 4)) ** 2 for level in LEVELS[1:])
FORWARD_TOLERANCE = 1e-4
GRADIENT_RELATIVE_TOLERANCE = 1e-4
FINGERPRINT_RELATIVE_TOLERANCE = 1e-4

_log = Logger("roi_align")


# --------------------------------------------------------------------------
# Workload


def box_levels(boxes):
    """FPN level of each yxyx box by `LEVEL_AREA_THRESHOLDS`: `[..., 4]` -> int `[...]`.

    Plain arithmetic, so it serves NumPy arrays and torch tensors alike.
    """
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    return LEVELS[0] + sum(area >= threshold for threshold in LEVEL_AREA_THRESHOLDS)


def workload_spec(small):
    spec = dict(SMALL_WORKLOAD if small else STANDARD_WORKLOAD)
    spec.update(
        name="small" if small else "standard",
        levels=list(LEVELS),
        feature_sizes=[spec["image_size"] // 2**level for level in LEVELS],
        box_side_px=[MIN_SIDE_PX, MAX_SIDE_PX],
        dtype=DTYPE,
        seed=SEED,
    )
    return spec


def make_boxes(workload):
    """`[B, N, 4]` yxyx pixel boxes, sides log-uniform, at least 3/4 of each side inside.

    Sides span `workload["box_side_px"]` (16-512 px unless given), which
    must not exceed twice the image side.
    """
    rng = np.random.default_rng(workload["seed"])
    size = workload["image_size"]
    shape = (workload["batch"], workload["num_boxes"])
    min_side, max_side = workload.get("box_side_px", (MIN_SIDE_PX, MAX_SIDE_PX))
    log_min, log_max = math.log(min_side), math.log(max_side)
    heights = np.exp(rng.uniform(log_min, log_max, shape))
    widths = np.exp(rng.uniform(log_min, log_max, shape))
    # Centres within a quarter side of the border: boxes may overhang a little, as
    # real proposals do, and clipping then only trims them.
    cy = rng.uniform(heights / 4, size - heights / 4)
    cx = rng.uniform(widths / 4, size - widths / 4)
    boxes = np.stack([cy - heights / 2, cx - widths / 2, cy + heights / 2, cx + widths / 2], axis=-1)
    return np.clip(boxes, 0.0, size).astype(DTYPE)


def make_features(workload):
    rng = np.random.default_rng(workload["seed"] + 1)
    return [
        rng.standard_normal((workload["batch"], side, side, workload["channels"]), dtype=np.float32)
        for side in workload["feature_sizes"]
    ]


def make_upstream(workload, pool):
    """A random upstream, not ones, so that the gradient weighs every output differently.

    `pool=None` gives the upstream of the flattened table instead.
    """
    rng = np.random.default_rng(workload["seed"] + 100 + (pool or 0))
    if pool is None:
        shape = table_shape(workload)
    else:
        shape = (workload["batch"], workload["num_boxes"], pool, pool, workload["channels"])
    return rng.standard_normal(shape, dtype=np.float32)


def table_shape(workload):
    """`[B, T, C]` of the table of every map (`kml.ops.flatten_pyramid`)."""
    return (workload["batch"], sum(side**2 for side in workload["feature_sizes"]), workload["channels"])


def flatten_numpy(features):
    """`kml.ops.flatten_pyramid` in NumPy: the table the flat rows read, built once."""
    return np.concatenate([f.reshape(f.shape[0], -1, f.shape[-1]) for f in features], axis=1)


def output_mb(workload, pool):
    count = workload["batch"] * workload["num_boxes"] * pool * pool * workload["channels"]
    return count * np.dtype(DTYPE).itemsize / BYTES_PER_MB


def fingerprint(array):
    """Sum and sum of squares in float64: comparable across processes at no transfer cost."""
    values = np.asarray(array, dtype=np.float64)
    return [float(values.sum()), float(np.square(values).sum())]


# --------------------------------------------------------------------------
# Measurement


def _row(impl, backend, xla, sampling_ratio, pool, pass_name, workload):
    return {
        "impl": impl,
        "backend": backend,
        "xla": xla,
        "sampling_ratio": sampling_ratio,
        "pool": pool,
        "pass": pass_name,
        "output_mb": output_mb(workload, pool),
        "median_ms": None,
        "min_ms": None,
        "max_ms": None,
        "times_ms": [],
        "compile_s": None,
        "peak_extra_mb": None,
        "rss_samples": 0,
        "allocator_peak_extra_mb": None,
        "xla_buffers_mb": None,
        "ratio_to_baseline": None,
        "ratio_to_torchvision": None,
        "error": None,
    }


def _describe(row):
    sr = "-" if row["sampling_ratio"] is None else row["sampling_ratio"]
    return f"{row['impl']} [{row['backend']}, xla={row['xla']}] sr={sr} pool={row['pool']} {row['pass']}"


def _run_row(row, bench, warmup, repeats):
    """Fills `row` with the timings of `bench`; a failing configuration is recorded, not fatal."""
    _log(f"timing {_describe(row)}")
    try:
        row.update(bench.measure(warmup, repeats))
    except Exception as error:  # A backend error in one config must not lose the others.
        row["error"] = error_text(error)
        _log(f"FAILED {_describe(row)}: {row['error']}")
        return row
    _log(f"  median {row['median_ms']:.1f} ms, first call {row['compile_s']:.2f} s")
    return row


def _relative_diff(a, b):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


# --------------------------------------------------------------------------
# TensorFlow: the layer with and without XLA, and the baseline


def matterport_style_roi_align(boxes, feature_maps, pool, image_size):
    """ROI pooling the way matterport's `PyramidROIAlign` does it, written from its description.

    Args:
        boxes: float32 `[B, N, 4]`, yxyx pixels of a square `image_size` image.
        feature_maps: `[B, H_l, W_l, C]` for levels 2..5.
        pool: int, output side.
        image_size: int, side of the input image in pixels.

    Returns:
        `[B, N, pool, pool, C]` in the order of `boxes`.
    """
    import tensorflow as tf

    # crop_and_resize takes boxes in [0, 1] image coordinates, as matterport keeps them.
    normalized = boxes / float(image_size)
    y1, x1, y2, x2 = tf.unstack(normalized, axis=-1)
    image_area = float(image_size * image_size)
    log2_scale = tf.math.log(tf.sqrt((y2 - y1) * (x2 - x1)) / (224.0 / math.sqrt(image_area))) / math.log(2.0)
    level = tf.clip_by_value(4 + tf.cast(tf.round(log2_scale), tf.int32), LEVELS[0], LEVELS[-1])

    pooled, positions = [], []
    for feature_map, lvl in zip(feature_maps, LEVELS):
        picked = tf.where(tf.equal(level, lvl))
        # As in matterport, no gradient flows into the box coordinates.
        level_boxes = tf.stop_gradient(tf.gather_nd(normalized, picked))
        box_indices = tf.stop_gradient(tf.cast(picked[:, 0], tf.int32))
        pooled.append(
            tf.image.crop_and_resize(feature_map, level_boxes, box_indices, [pool, pool], method="bilinear")
        )
        positions.append(picked)
    pooled = tf.concat(pooled, axis=0)
    positions = tf.concat(positions, axis=0)
    batch, num_boxes = tf.shape(boxes)[0], tf.shape(boxes)[1]
    # Matterport sorts (image, box) keys with top_k to undo the grouping by level;
    # argsort of the flat box position does the same.
    flat_position = positions[:, 0] * tf.cast(num_boxes, tf.int64) + positions[:, 1]
    pooled = tf.gather(pooled, tf.argsort(flat_position))
    return tf.reshape(pooled, [batch, num_boxes, pool, pool, tf.shape(feature_maps[0])[-1]])


def _tf_step(pool_fn, backward, jit_compile):
    """A `tf.function` running `pool_fn(boxes, features)`, or its features' gradient."""
    import tensorflow as tf

    if not backward:
        return tf.function(lambda boxes, features, upstream: pool_fn(boxes, features), jit_compile=jit_compile)

    def forward_backward(boxes, features, upstream):
        with tf.GradientTape() as tape:
            tape.watch(features)
            loss = tf.reduce_sum(pool_fn(boxes, features) * upstream)
        return tape.gradient(loss, features)

    return tf.function(forward_backward, jit_compile=jit_compile)


def _tf_bench(pool_fn, tensors, backward, jit_compile):
    step = _tf_step(pool_fn, backward, jit_compile)
    return Benchmark(lambda: step(*tensors), allocator_stats=TfAllocatorPeak)


def _passes(include_backward):
    return (FORWARD, BACKWARD) if include_backward else (FORWARD,)


def _tf_baseline_rows(tensors, workload, pool, passes, warmup, repeats):
    def pool_fn(boxes, features):
        return matterport_style_roi_align(boxes, features, pool, workload["image_size"])

    rows = []
    for pass_name in passes:
        bench = _tf_bench(pool_fn, tensors, pass_name == BACKWARD, jit_compile=False)
        row = _row(BASELINE_IMPL, "tensorflow", False, None, pool, pass_name, workload)
        rows.append(_run_row(row, bench, warmup, repeats))
    return rows


def _compare_xla(benches, sanity, key, pass_name):
    """First calls of the XLA and plain steps, compared; records the result in `sanity`."""
    try:
        xla_out = benches[True].first_call()
        plain_out = benches[False].first_call()
    except Exception as error:  # The timing pass reports the failing step itself.
        sanity[key] = {"ok": False, "error": error_text(error)}
        _log(f"sanity check {key}: {_check_text(sanity[key])}")
        return None
    if pass_name == FORWARD:
        check = _forward_check(xla_out, plain_out)
    else:
        diff = max(_relative_diff(x, p) for x, p in zip(xla_out, plain_out))
        check = {"metric": "max abs diff / max abs grad", "value": diff, "ok": diff < GRADIENT_RELATIVE_TOLERANCE}
    sanity[key] = check
    _log(f"sanity check {key}: {_check_text(check)}")
    return plain_out


def _forward_check(xla_out, plain_out):
    xla_out, plain_out = np.asarray(xla_out), np.asarray(plain_out)
    diff = np.abs(xla_out - plain_out)
    # float32 sums of N(0, 1) features round differently with and without
    # XLA, so the bound scales with the value (as np.allclose); how many
    # elements are off tells a rounding outlier from a wrong result.
    bound = FORWARD_TOLERANCE * (1.0 + np.abs(plain_out))
    above = int(np.count_nonzero(diff > bound))
    return {
        "metric": "max abs diff",
        "value": float(diff.max()),
        "ok": above == 0,
        "elements_above_tolerance": above,
        "elements": int(diff.size),
    }


def _check_text(check):
    if "error" in check:
        return f"could not run ({check['error']})"
    text = f"{check['metric']} {check['value']:.2e}"
    if check["ok"]:
        return f"{text} ok"
    if "elements_above_tolerance" in check:
        text += (
            f" ({check['elements_above_tolerance']} of {check['elements']} elements beyond "
            f"{FORWARD_TOLERANCE:g} * (1 + |value|))"
        )
    return f"{text} ABOVE TOLERANCE"


def _tf_layer_rows(tensors, workload, pool, sampling_ratio, passes, warmup, repeats, sanity, fingerprints):
    import keras_maskrcnn_layers as kml

    layer = kml.PyramidROIAlign(pool_size=pool, sampling_ratio=sampling_ratio, aligned=True, min_level=2, max_level=5)
    rows = []
    for pass_name in passes:
        benches = {xla: _tf_bench(layer, tensors, pass_name == BACKWARD, xla) for xla in (True, False)}
        key = f"tf xla vs no xla, sr={sampling_ratio} pool={pool} {pass_name}"
        plain_out = _compare_xla(benches, sanity, key, pass_name)
        if pass_name == FORWARD and plain_out is not None:
            fingerprints[f"sr={sampling_ratio} pool={pool}"] = fingerprint(plain_out)
        del plain_out
        for xla, bench in benches.items():
            row = _row(LAYER_IMPL, "tensorflow", xla, sampling_ratio, pool, pass_name, workload)
            rows.append(_run_row(row, bench, warmup, repeats))
    return rows


def _tf_flat_rows(tensors, table, workload, pool, sampling_ratios, passes, warmup, repeats, fingerprints):
    """The table alone (`FlattenPyramid`), then the layer reading it: XLA only."""
    import tensorflow as tf

    import keras_maskrcnn_layers as kml

    boxes, features, upstream = tensors
    rows = []
    table_upstream = tf.constant(make_upstream(workload, None))
    for pass_name in passes:
        flatten_tensors = (boxes, features, table_upstream)
        bench = _tf_bench(lambda b, f: kml.ops.flatten_pyramid(f), flatten_tensors, pass_name == BACKWARD, True)
        row = _row(FLATTEN_IMPL, "tensorflow", True, None, pool, pass_name, workload)
        rows.append(_run_row(row, bench, warmup, repeats))
    del table_upstream
    for sampling_ratio in sampling_ratios:
        layer = kml.PyramidROIAlign(pool_size=pool, sampling_ratio=sampling_ratio, aligned=True)

        def pool_fn(b, flat, layer=layer):
            return layer(b, features, flat_features=flat)

        for pass_name in passes:
            bench = _tf_bench(pool_fn, (boxes, table, upstream), pass_name == BACKWARD, True)
            row = _row(FLAT_IMPL, "tensorflow", True, sampling_ratio, pool, pass_name, workload)
            if pass_name == FORWARD:
                _record_fingerprint(bench, row, fingerprints, prefix="flat tensorflow ")
            rows.append(_run_row(row, bench, warmup, repeats))
    return rows


def _record_fingerprint(bench, row, fingerprints, prefix="", to_numpy=np.asarray):
    """Fingerprints `bench`'s first forward output under `prefix + "sr=.. pool=.."`.

    The layer on the maps and torchvision have no prefix; the flat-table
    rows have `"flat <backend> "`, for `_flat_sanity`.
    """
    try:
        output = bench.first_call()
    except Exception as error:  # The timing pass records the failure in the row.
        _log(f"first call failed for {_describe(row)}: {error_text(error)}")
        return
    fingerprints[f"{prefix}sr={row['sampling_ratio']} pool={row['pool']}"] = fingerprint(to_numpy(output))


def _fingerprint_check(value, reference):
    """A sanity entry: relative difference of two fingerprints."""
    diff = _relative_diff(value, reference)
    return {
        "metric": "relative diff of (sum, sum of squares)",
        "value": diff,
        "ok": diff < FINGERPRINT_RELATIVE_TOLERANCE,
    }


def _flat_sanity(fingerprints, flat_fingerprints):
    """The layer reading the flat table against the layer on the maps (TF, no XLA)."""
    checks = {}
    for key, flat_print in flat_fingerprints.items():
        if not key.startswith("flat "):
            continue
        backend, config = key.split(" ", 2)[1:]
        if config not in fingerprints:
            continue
        checks[f"flat table ({backend}) vs maps (tf no xla), {config} fwd"] = _fingerprint_check(
            flat_print, fingerprints[config]
        )
    return checks


def _tensorflow_rows(workload, pool_sizes, sampling_ratios, include_backward, warmup, repeats):
    import tensorflow as tf

    boxes = tf.constant(make_boxes(workload))
    features = [tf.constant(f) for f in make_features(workload)]
    passes = _passes(include_backward)
    table = tf.constant(flatten_numpy(make_features(workload)))
    rows, sanity, fingerprints, flat_fingerprints = [], {}, {}, {}
    for pool in pool_sizes:
        tensors = (boxes, features, tf.constant(make_upstream(workload, pool)))
        rows += _tf_baseline_rows(tensors, workload, pool, passes, warmup, repeats)
        for sampling_ratio in sampling_ratios:
            rows += _tf_layer_rows(
                tensors, workload, pool, sampling_ratio, passes, warmup, repeats, sanity, fingerprints
            )
        rows += _tf_flat_rows(
            tensors, table, workload, pool, sampling_ratios, passes, warmup, repeats, flat_fingerprints
        )
        del tensors
    sanity.update(_flat_sanity(fingerprints, flat_fingerprints))
    return rows, sanity, {**fingerprints, **flat_fingerprints}


# --------------------------------------------------------------------------
# Memory traffic of the forward: a count from the boxes, not a measurement


def _distinct_per_row(values):
    """Number of distinct non-negative values in each row of an int array; -1 marks no read."""
    ordered = np.sort(values, axis=1)
    fresh = np.concatenate(
        [ordered[:, :1] >= 0, (ordered[:, 1:] != ordered[:, :-1]) & (ordered[:, 1:] >= 0)], axis=1
    )
    return fresh.sum(axis=1)


def roi_align_axis_reads(start, end, size, pool, sampling_ratio):
    """Rows (or columns) of one map axis that the layer's gathers read, per box.

    Every sample's two bilinear corners are read, those of samples outside
    the map too (their weight is zero, their index clamped), as the gathers
    of `kml.ops.roi_align` do.

    Args:
        start, end: float `[N]`, box edges in map pixels, after the
            half-pixel shift of `aligned=True`.
        size: `[N]`, length of the axis on each box's map.

    Returns:
        int `[N]`.
    """
    # In float32 and in the order of `_sample_corners`, for the same reason
    # as in `crop_and_resize_axis_reads`.
    start, end = np.asarray(start, np.float32), np.asarray(end, np.float32)
    samples = (np.arange(sampling_ratio, dtype=np.float32) + np.float32(0.5)) / np.float32(sampling_ratio)
    grid = (np.arange(pool, dtype=np.float32)[:, None] + samples[None, :]).ravel()
    coord = np.maximum(start[:, None] + ((end - start) / np.float32(pool))[:, None] * grid, np.float32(0))
    last = np.asarray(size, np.float32)[:, None] - 1
    low = np.minimum(np.floor(coord), last)
    high = np.minimum(low + 1, last)
    return _distinct_per_row(np.concatenate([low, high], axis=1).astype(np.int64))


def crop_and_resize_axis_reads(start, end, size, pool):
    """The same for `tf.image.crop_and_resize`, whose samples outside the map read nothing.

    Args:
        start, end: float `[N]`, box edges in `[0, 1]` map coordinates.
        size: `[N]`, length of the axis on each box's map.

    Returns:
        int `[N]`.
    """
    # In float32 and in the kernel's order of operations: a box ending on
    # the image's edge then reads the last two columns, as the kernel does.
    start, end = np.asarray(start, np.float32), np.asarray(end, np.float32)
    last = np.asarray(size, np.float32) - 1
    if pool > 1:
        step = (end - start) * last / np.float32(pool - 1)
        coord = (start * last)[:, None] + np.arange(pool, dtype=np.float32) * step[:, None]
    else:
        coord = (np.float32(0.5) * (start + end) * last)[:, None]
    inside = np.tile((coord >= 0) & (coord <= last[:, None]), 2)
    rows = np.where(inside, np.concatenate([np.floor(coord), np.ceil(coord)], axis=1), -1)
    return _distinct_per_row(rows.astype(np.int64))


def feature_mb_read(workload, pool, sampling_ratio=None):
    """MB of feature-map pixels one forward's gathers touch, box by box.

    For every box, the distinct pixels of its map that its gathers touch,
    times the bytes of a pixel's channels, summed over the boxes. A pixel
    that two boxes touch counts twice: in the caller's box order it has
    usually left the cache before the second box reads it, though it need
    not have. `sampling_ratio=None` counts the baseline (one sample per
    bin, not aligned, rounded level rule, as `matterport_style_roi_align`).
    """
    boxes = make_boxes(workload).reshape(-1, 4)
    image_size = workload["image_size"]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    if sampling_ratio is None:
        with np.errstate(divide="ignore"):
            level = 4 + np.round(np.log2(np.sqrt(area) / 224.0))
    else:
        level = box_levels(boxes)
    level = np.clip(np.nan_to_num(level, neginf=LEVELS[0]), LEVELS[0], LEVELS[-1]).astype(np.int64)
    size = np.asarray(workload["feature_sizes"])[level - LEVELS[0]]
    if sampling_ratio is None:
        norm = boxes / np.float32(image_size)
        rows = crop_and_resize_axis_reads(norm[:, 0], norm[:, 2], size, pool)
        cols = crop_and_resize_axis_reads(norm[:, 1], norm[:, 3], size, pool)
    else:
        edges = boxes * (2.0**-level).astype(np.float32)[:, None] - np.float32(0.5)
        rows = roi_align_axis_reads(edges[:, 0], edges[:, 2], size, pool, sampling_ratio)
        cols = roi_align_axis_reads(edges[:, 1], edges[:, 3], size, pool, sampling_ratio)
    pixel_bytes = workload["channels"] * np.dtype(workload["dtype"]).itemsize
    return float(np.sum(rows * cols)) * pixel_bytes / BYTES_PER_MB


def table_mb(workload):
    """MB of the table of every map, `table_shape`."""
    return np.prod(table_shape(workload)) * np.dtype(workload["dtype"]).itemsize / BYTES_PER_MB


def maps_copy_mb(workload, sampling_ratio):
    """MB of the table that the layer, given the maps, builds on every call.

    The table of every map; with few samples per bin
    (`FIRST_MAP_IN_PLACE_MAX_SAMPLING_RATIO` of `kml.ops.roi_align`'s
    module) the table of all maps but the first, which the layer reads
    where it lies.
    """
    import importlib

    in_place_up_to = importlib.import_module(
        "keras_maskrcnn_layers.ops.roi_align"
    ).FIRST_MAP_IN_PLACE_MAX_SAMPLING_RATIO
    if sampling_ratio > in_place_up_to:
        return table_mb(workload)
    first = workload["batch"] * workload["feature_sizes"][0] ** 2 * workload["channels"]
    return table_mb(workload) - first * np.dtype(workload["dtype"]).itemsize / BYTES_PER_MB


def traffic_rows(workload, pool_sizes, sampling_ratios):
    """The forward's memory traffic per configuration, from `feature_mb_read` and the tensor sizes.

    `copies_mb` counts whole tensors read and written again: the table the
    layer builds from the maps on every call (`maps_copy_mb`), and the
    baseline's concatenation of its four levels and its reordering into box
    order. The layer's figures are those of its compiled forward, whose
    gathers XLA fuses into one loop; without XLA, every gather is a tensor
    of its own.
    """
    rows = []
    for pool in pool_sizes:
        output = output_mb(workload, pool)
        baseline = feature_mb_read(workload, pool)
        configs = [(BASELINE_IMPL, None, baseline, 4 * output)]
        for sampling_ratio in sampling_ratios:
            read = feature_mb_read(workload, pool, sampling_ratio)
            copies = 2 * maps_copy_mb(workload, sampling_ratio)
            configs += [(LAYER_IMPL, sampling_ratio, read, copies), (FLAT_IMPL, sampling_ratio, read, 0.0)]
        rows += [
            dict(
                impl=impl, pool=pool, sampling_ratio=sampling_ratio, feature_mb=read,
                feature_ratio=read / baseline, output_mb=output, copies_mb=copies,
            )
            for impl, sampling_ratio, read, copies in configs
        ]
    return rows


TRAFFIC_HEADER = ["impl", "pool", "sampling_ratio", "feature MB read", "x baseline reads", "output MB", "copies MB"]


def format_traffic(rows):
    """The lines of the traffic table of `traffic_rows`, with its legend."""
    cells = [
        [
            row["impl"],
            str(row["pool"]),
            fmt(row["sampling_ratio"], "d"),
            f"{row['feature_mb']:.0f}",
            f"{row['feature_ratio']:.2f}",
            f"{row['output_mb']:.0f}",
            f"{row['copies_mb']:.0f}",
        ]
        for row in rows
    ]
    return render_table(TRAFFIC_HEADER, cells, set(TRAFFIC_HEADER) - {"impl"}) + [
        "",
        "feature MB read: per box, the distinct map pixels its forward's gathers touch, times a pixel's bytes",
        "(all channels), summed over boxes (counted from the boxes, not measured; a pixel two boxes share counts",
        "twice). copies MB: whole tensors read and written again (the table built from the maps on every call,",
        "without the first map at sampling_ratio 1, which the layer then reads in place;",
        "the baseline's concatenation of its levels and its reordering into box order). output MB: written once.",
        "The layer's rows count its XLA-compiled forward, whose gathers are fused; without XLA it moves far more.",
    ]


# --------------------------------------------------------------------------
# JAX (run in a child process with the JAX backend)


def _jax_step(pool_fn, backward):
    """`jax.jit` of `pool_fn(boxes, x, const)`, or of its gradient with respect to `x`.

    Returns:
        `(step, lower)`: both take `(boxes, x, const, upstream)`; `step` runs
        the jitted function, `lower` lowers it for `_xla_buffers_mb`.
    """
    import jax
    import jax.numpy as jnp

    if not backward:
        forward = jax.jit(lambda boxes, x, const, upstream: pool_fn(boxes, x, const))
        return forward, forward.lower

    # Inputs are arguments, not closure constants, so XLA does not embed them.
    def loss(x, boxes, const, upstream):
        return jnp.sum(pool_fn(boxes, x, const) * upstream)

    grad = jax.jit(jax.grad(loss))
    return (
        lambda boxes, x, const, upstream: grad(x, boxes, const, upstream),
        lambda boxes, x, const, upstream: grad.lower(x, boxes, const, upstream),
    )


def _xla_buffers_mb(lowered):
    """Temporary plus output buffers XLA assigned to a compiled JAX step, in MB; None if not reported.

    Unlike the resident set size, this does not depend on what the allocator
    keeps: it is the memory the step needs beyond its arguments.
    """
    analysis = lowered.compile().memory_analysis()
    if analysis is None:
        return None
    extra = analysis.temp_size_in_bytes + analysis.output_size_in_bytes - analysis.alias_size_in_bytes
    return extra / BYTES_PER_MB


def _jax_bench_rows(pool_fn, impl, tensors, workload, sampling_ratio, pool, passes, warmup, repeats, fingerprints):
    import jax

    rows = []
    for pass_name in passes:
        step, lower = _jax_step(pool_fn, pass_name == BACKWARD)
        bench = Benchmark(lambda step=step: step(*tensors), sync=jax.block_until_ready)
        row = _row(impl, "jax", True, sampling_ratio, pool, pass_name, workload)
        if pass_name == FORWARD and impl == LAYER_IMPL:
            _record_fingerprint(bench, row, fingerprints)
        elif pass_name == FORWARD and impl == FLAT_IMPL:
            _record_fingerprint(bench, row, fingerprints, prefix="flat jax ")
        rows.append(_run_row(row, bench, warmup, repeats))
        if row["error"] is None:
            try:
                row["xla_buffers_mb"] = _xla_buffers_mb(lower(*tensors))
            except Exception as error:  # The timings stand without the memory figure.
                _log(f"no XLA buffer sizes for {_describe(row)}: {error_text(error)}")
    return rows


def _jax_rows(workload, pool_sizes, sampling_ratios, include_backward, warmup, repeats):
    import jax.numpy as jnp

    import keras_maskrcnn_layers as kml

    boxes = jnp.asarray(make_boxes(workload))
    features = [jnp.asarray(f) for f in make_features(workload)]
    table = jnp.asarray(flatten_numpy(make_features(workload)))
    passes = _passes(include_backward)
    rows, fingerprints = [], {}
    for pool in pool_sizes:
        upstream = jnp.asarray(make_upstream(workload, pool))
        for sampling_ratio in sampling_ratios:
            layer = kml.PyramidROIAlign(
                pool_size=pool, sampling_ratio=sampling_ratio, aligned=True, min_level=2, max_level=5
            )
            args = (workload, sampling_ratio, pool, passes, warmup, repeats, fingerprints)
            rows += _jax_bench_rows(
                lambda b, maps, _, layer=layer: layer(b, maps), LAYER_IMPL, (boxes, features, None, upstream), *args
            )
            rows += _jax_bench_rows(
                lambda b, flat, maps, layer=layer: layer(b, maps, flat_features=flat),
                FLAT_IMPL,
                (boxes, table, features, upstream),
                *args,
            )
        table_upstream = jnp.asarray(make_upstream(workload, None))
        rows += _jax_bench_rows(
            lambda b, maps, _: kml.ops.flatten_pyramid(maps),
            FLATTEN_IMPL,
            (boxes, features, None, table_upstream),
            workload, None, pool, passes, warmup, repeats, fingerprints,
        )
        del upstream, table_upstream
    return rows, fingerprints


def _child_command(backend, small, pool_sizes, sampling_ratios, include_backward, warmup, repeats):
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--backend",
        backend,
        "--warmup",
        str(warmup),
        "--repeats",
        str(repeats),
        "--pool-sizes",
        *map(str, pool_sizes),
        "--sampling-ratios",
        *map(str, sampling_ratios),
    ]
    if small:
        command.append("--small")
    if not include_backward:
        command.append("--no-backward")
    return command


# `--backend` of each child: its label and the Keras backend it starts with
# (torchvision's child does not import Keras).
CHILDREN = {"jax": ("JAX", "jax"), "torch": ("torchvision", None)}


def _run_child(backend, small, pool_sizes, sampling_ratios, include_backward, warmup, repeats):
    """Runs the JAX or torchvision rows in a fresh process and returns its JSON, or an error dict."""
    label, keras_backend = CHILDREN[backend]
    command = _child_command(backend, small, pool_sizes, sampling_ratios, include_backward, warmup, repeats)
    return run_json_child(command, _log, prefix="roi_align_bench_", label=label, keras_backend=keras_backend)


# --------------------------------------------------------------------------
# torchvision (optional, in a child process of its own)


def torchvision_installed():
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("torch", "torchvision"))


def torchvision_pyramid_roi_align(boxes, features, pool, sampling_ratio):
    """Multilevel ROI Align the way detectron2's `ROIPooler` runs it, on `torchvision.ops.roi_align`.

    One aligned `roi_align` call per level, each box on the level of
    `LEVEL_AREA_THRESHOLDS` (the layer's rule), results written back in box
    order. Written from detectron2's description, not copied.

    Args:
        boxes: float32 torch tensor `[B, N, 4]`, yxyx pixels.
        features: list of float32 torch tensors `[B, C, H, W]`, P2 first.

    Returns:
        `[B * N, C, pool, pool]`, in box order.
    """
    import torch
    from torchvision.ops import roi_align

    batch, num_boxes = boxes.shape[:2]
    flat = boxes.reshape(-1, 4)
    image = torch.arange(batch, dtype=flat.dtype, device=flat.device).repeat_interleave(num_boxes)
    # torchvision's box format: (image index, x1, y1, x2, y2).
    rois = torch.stack([image, flat[:, 1], flat[:, 0], flat[:, 3], flat[:, 2]], dim=1)
    level = box_levels(flat)
    output = features[0].new_zeros((rois.shape[0], features[0].shape[1], pool, pool))
    for lvl, feature_map in zip(LEVELS, features):
        chosen = torch.nonzero(level == lvl).squeeze(1)
        pooled = roi_align(
            feature_map, rois[chosen], (pool, pool), spatial_scale=2.0**-lvl, sampling_ratio=sampling_ratio,
            aligned=True,
        )
        output = output.index_put((chosen,), pooled)
    return output


def to_nchw(array, device="cpu"):
    """A channels-last NumPy array as a contiguous channels-first torch tensor on `device`."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(array, -1, 1))).to(device)


def torch_inputs(workload, device="cpu"):
    """The workload in torch's layout, converted once outside the timed calls: `(boxes [B, N, 4], maps)`.

    The maps are `[B, C, H, W]`, P2 first.
    """
    import torch

    return torch.from_numpy(make_boxes(workload)).to(device), [to_nchw(f, device) for f in make_features(workload)]


def torch_upstream(workload, pool, device="cpu"):
    """`make_upstream` in the layout of torchvision's output, `[B * N, C, pool, pool]`."""
    return to_nchw(make_upstream(workload, pool).reshape(-1, pool, pool, workload["channels"]), device)


def _torch_rows(workload, pool_sizes, sampling_ratios, include_backward, warmup, repeats):
    """torchvision's rows, on CUDA where torch sees a GPU, else on the CPU."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"

    def sync(outputs):
        if device == "cuda":
            torch.cuda.synchronize()
        return outputs

    boxes, maps = torch_inputs(workload, device)
    leaves = [m.clone().requires_grad_() for m in maps]
    rows, fingerprints = [], {}
    for pool in pool_sizes:
        upstream = torch_upstream(workload, pool, device)
        for sampling_ratio in sampling_ratios:

            def forward(sampling_ratio=sampling_ratio, pool=pool):
                with torch.no_grad():
                    return torchvision_pyramid_roi_align(boxes, maps, pool, sampling_ratio)

            def forward_backward(sampling_ratio=sampling_ratio, pool=pool, upstream=upstream):
                output = torchvision_pyramid_roi_align(boxes, leaves, pool, sampling_ratio)
                return torch.autograd.grad(output, leaves, grad_outputs=upstream)

            for pass_name in _passes(include_backward):
                bench = Benchmark(forward if pass_name == FORWARD else forward_backward, sync=sync)
                row = _row(TORCH_IMPL, f"torch ({device})", False, sampling_ratio, pool, pass_name, workload)
                if pass_name == FORWARD:
                    _record_fingerprint(bench, row, fingerprints, to_numpy=lambda out: out.cpu().numpy())
                rows.append(_run_row(row, bench, warmup, repeats))
        del upstream
    return rows, fingerprints


# --------------------------------------------------------------------------
# Report


def _ratios_to(rows, field, reference_impl, key, applies):
    """Sets `row[field]` to the row's median over the `reference_impl` row's with the same `key(row)`."""
    references = {key(row): row["median_ms"] for row in rows if row["impl"] == reference_impl and row["median_ms"]}
    for row in rows:
        reference = references.get(key(row))
        if reference and applies(row) and row["median_ms"] is not None:
            row[field] = row["median_ms"] / reference


def _add_ratios(rows):
    """Ratios to the baseline (same pool and pass), and the layer's to torchvision (same configuration)."""
    _ratios_to(rows, "ratio_to_baseline", BASELINE_IMPL, lambda row: (row["pool"], row["pass"]), lambda row: True)
    _ratios_to(
        rows, "ratio_to_torchvision", TORCH_IMPL,
        lambda row: (row["sampling_ratio"], row["pool"], row["pass"]),
        lambda row: row["impl"] in (LAYER_IMPL, FLAT_IMPL),
    )


def _child_sanity(name, tf_fingerprints, child_fingerprints):
    """A child's forward output (`name`) against TF's without XLA, via sum and sum of squares."""
    checks = {}
    for key, child_print in child_fingerprints.items():
        if key not in tf_fingerprints:
            continue
        checks[f"{name} vs tf no xla, {key} fwd"] = _fingerprint_check(child_print, tf_fingerprints[key])
    return checks


def _merge_child(result, name, child, tf_fingerprints):
    if "error" in child:
        result["errors"].append(child["error"])
        return
    result["rows"] += child["rows"]
    result[f"versions_{name}_process"] = child["versions"]
    result["sanity"].update(_child_sanity(name, tf_fingerprints, child["fingerprints"]))
    result["sanity"].update(_flat_sanity(tf_fingerprints, child["fingerprints"]))


def run_benchmark(
    small=False,
    pool_sizes=DEFAULT_POOL_SIZES,
    sampling_ratios=DEFAULT_SAMPLING_RATIOS,
    repeats=None,
    warmup=1,
    include_jax=True,
    include_backward=True,
    include_torch=None,
):
    """Runs the TensorFlow rows here and, if asked, the JAX and torchvision rows in child processes.

    Keras must not have been imported with a backend other than TensorFlow.
    `include_torch=None` runs torchvision's rows if torch and torchvision
    are installed (they are not dependencies of this package).

    Returns:
        The JSON-ready result: `rows`, `machine`, `versions`, `workload`,
        `settings`, `traffic` (`traffic_rows`), `sanity` (XLA vs no-XLA
        agreement, and the other frameworks against TF), `notes` and
        `errors`.
    """
    select_backend("tensorflow")
    repeats = DEFAULT_REPEATS[bool(small)] if repeats is None else repeats
    pool_sizes, sampling_ratios = tuple(pool_sizes), tuple(sampling_ratios)
    workload = workload_spec(small)
    notes = []
    if include_torch is None:
        include_torch = torchvision_installed()
        if not include_torch:
            notes.append("no torchvision rows: torch and torchvision are not installed")
    child_args = (small, pool_sizes, sampling_ratios, include_backward, warmup, repeats)
    # The children run first: TensorFlow's CPU allocator keeps the
    # gigabytes of the forward+backward rows for the life of this process,
    # and both together do not fit in 24 GB at the standard workload.
    children = {}
    if include_jax:
        children["jax"] = _run_child("jax", *child_args)
    if include_torch:
        children["torchvision"] = _run_child("torch", *child_args)
    rows, sanity, tf_fingerprints = _tensorflow_rows(
        workload, pool_sizes, sampling_ratios, include_backward, warmup, repeats
    )
    result = {
        "machine": machine_info(),
        "versions": package_versions(),
        "workload": workload,
        "settings": {
            "pool_sizes": list(pool_sizes),
            "sampling_ratios": list(sampling_ratios),
            "repeats": repeats,
            "warmup": warmup,
            "include_jax": include_jax,
            "include_torch": include_torch,
            "include_backward": include_backward,
            "aligned": True,
        },
        "rows": rows,
        "traffic": traffic_rows(workload, pool_sizes, sampling_ratios),
        "sanity": sanity,
        "notes": notes,
        "errors": [],
    }
    for name, child in children.items():
        _merge_child(result, name, child, tf_fingerprints)
    result["errors"] += [f"{_describe(row)}: {row['error']}" for row in result["rows"] if row["error"]]
    _add_ratios(result["rows"])
    return result


def _sort_key(row):
    order = {
        (BASELINE_IMPL, "tensorflow"): 0,
        (LAYER_IMPL, "tensorflow"): 2,
        (LAYER_IMPL, "jax"): 3,
        (FLATTEN_IMPL, "tensorflow"): 4,
        (FLAT_IMPL, "tensorflow"): 5,
        (FLATTEN_IMPL, "jax"): 6,
        (FLAT_IMPL, "jax"): 7,
    }
    rank = 1 if row["impl"] == TORCH_IMPL else order.get((row["impl"], row["backend"]), 8)
    return (
        row["pool"],
        row["pass"] != FORWARD,
        rank,
        not row["xla"],
        row["sampling_ratio"] or 0,
    )


def _table_cells(row):
    failed = "FAILED" if row["error"] else "-"
    return [
        row["impl"],
        row["backend"],
        "jit" if row["backend"] == "jax" else ("yes" if row["xla"] else "no"),
        fmt(row["sampling_ratio"], "d"),
        str(row["pool"]),
        row["pass"],
        fmt(row["median_ms"], ".1f", failed),
        fmt(row["ratio_to_baseline"], ".2f"),
        fmt(row["ratio_to_torchvision"], ".2f"),
        fmt(row["peak_extra_mb"], ".0f"),
        fmt(row["allocator_peak_extra_mb"], ".0f"),
        fmt(row["xla_buffers_mb"], ".0f"),
        fmt(row["compile_s"], ".2f"),
    ]


TORCH_RATIO_COLUMN = "x torchvision"
TABLE_HEADER = [
    "impl",
    "backend",
    "xla",
    "sampling_ratio",
    "pool",
    "pass",
    "median ms",
    "x baseline time",
    TORCH_RATIO_COLUMN,
    "peak extra MB",
    "TF alloc peak MB",
    "JAX XLA buffers MB",
    "compile s",
]
RIGHT_ALIGNED = set(TABLE_HEADER) - {"impl", "backend", "xla", "pass"}


def _header_lines(result):
    workload, settings = result["workload"], result["settings"]
    maps = ", ".join(f"P{lvl} {side}x{side}" for lvl, side in zip(workload["levels"], workload["feature_sizes"]))
    return machine_lines(result["machine"], result["versions"]) + [
        f"workload ({workload['name']}): batch {workload['batch']}, "
        f"{workload['image_size']}x{workload['image_size']} image, {maps}, "
        f"{workload['channels']} channels, {workload['num_boxes']} boxes/image "
        f"(sides log-uniform {workload['box_side_px'][0]:g}-{workload['box_side_px'][1]:g} px), "
        f"{workload['dtype']}, seed {workload['seed']}",
        f"timing: median of {settings['repeats']} calls after {settings['warmup']} warm-up call(s); "
        f"aligned=True",
    ]


def _sanity_lines(result):
    return [f"sanity {key}: {_check_text(check)}" for key, check in result["sanity"].items()]


def format_table(result):
    """The human-readable report of a `run_benchmark` result."""
    lines = _header_lines(result) + _sanity_lines(result)
    pools = sorted({row["pool"] for row in result["rows"]})
    lines += [f"output tensor, pool {pool}: {output_mb(result['workload'], pool):.1f} MB" for pool in pools]
    lines.append("")
    rows = sorted(result["rows"], key=_sort_key)
    header, cells = TABLE_HEADER, [_table_cells(row) for row in rows]
    has_torch = any(row["impl"] == TORCH_IMPL for row in rows)
    if not has_torch:
        drop = TABLE_HEADER.index(TORCH_RATIO_COLUMN)
        header = header[:drop] + header[drop + 1 :]
        cells = [c[:drop] + c[drop + 1 :] for c in cells]
    lines += render_table(header, cells, RIGHT_ALIGNED)
    lines += [
        "",
        "x baseline time: median / median of the baseline row with the same pool and pass (< 1 is faster).",
        "compile s: wall time of the first call (trace + compile + one run).",
        "peak extra MB: max RSS during the timed calls minus RSS before them; approximate (allocator caching).",
        "TF alloc peak MB: TensorFlow CPU allocator's peak bytes in use during the timed calls minus those before.",
        "JAX XLA buffers MB: temporary + output buffers of the compiled step (`memory_analysis()`), "
        "beyond its arguments.",
        "baseline: one bilinear sample per bin, not aligned, rounded level assignment; not numerically comparable.",
        f"{FLATTEN_IMPL}: the [B, T, C] table of P2-P5 that the layer otherwise builds on every call (pool and "
        "sampling_ratio do not apply; repeated per pool).",
        f"{FLAT_IMPL}: the layer given that table as `flat_features`, built once outside the timed call (as "
        "kml.build_mask_rcnn shares one table between its box and mask heads); fwd+bwd is the table's gradient.",
    ]
    if has_torch:
        lines += [
            f"{TORCH_RATIO_COLUMN}: median / median of the torchvision row with the same sampling_ratio, pool and "
            "pass.",
            f"{TORCH_IMPL}: torchvision.ops.roi_align (aligned), one call per level as detectron2's ROIPooler, "
            "results put back in box order; eager, NCHW maps converted once outside the timed calls.",
        ]
    if result.get("traffic"):
        lines += ["", "Memory traffic of the forward:", ""] + format_traffic(result["traffic"])
    lines += [f"note: {note}" for note in result.get("notes", [])]
    lines += [f"error: {error}" for error in result["errors"]]
    return "\n".join(lines)


# --------------------------------------------------------------------------
# Command line


def _parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--small", action="store_true", help="64 channels, 200 boxes per image")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per config (default 5, small 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls after the first call")
    parser.add_argument("--pool-sizes", type=int, nargs="+", default=list(DEFAULT_POOL_SIZES))
    parser.add_argument("--sampling-ratios", type=int, nargs="+", default=list(DEFAULT_SAMPLING_RATIOS))
    parser.add_argument("--quick-configs", action="store_true", help="only pool 7 and sampling_ratio 2")
    parser.add_argument("--no-jax", action="store_true", help="skip the JAX child process")
    parser.add_argument(
        "--no-torch", action="store_true", help="skip torchvision's rows (run by default when torchvision is installed)"
    )
    parser.add_argument("--no-backward", action="store_true", help="forward pass only")
    parser.add_argument(
        "--traffic-only", action="store_true", help="print the forward's memory traffic table only, time nothing"
    )
    parser.add_argument("--output", default=None, help="JSON path (default benchmarks/results/roi_align[_small].json)")
    parser.add_argument(SYSTEM_MALLOC_FLAG, action="store_true", help=SYSTEM_MALLOC_HELP)
    parser.add_argument(
        "--backend", choices=("tensorflow", "jax", "torch"), default="tensorflow", help=argparse.SUPPRESS
    )
    parser.add_argument("--child-json", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick_configs:
        args.pool_sizes, args.sampling_ratios = [7], [2]
    if args.repeats is None:
        args.repeats = DEFAULT_REPEATS[args.small]
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0")
    if (args.backend != "tensorflow") != (args.child_json is not None):
        parser.error("--backend jax or torch and --child-json go together (their rows run in a child process)")
    return args


def _child_main(args):
    """The JAX or torchvision rows: written to `--child-json` for the parent to merge."""
    _log.name = f"roi_align {args.backend} child"
    if args.backend == "jax":
        select_backend("jax")
        rows_fn, versions = _jax_rows, package_versions
    else:
        rows_fn, versions = _torch_rows, lambda: package_versions(extra=("torch", "torchvision"))
    rows, fingerprints = rows_fn(
        workload_spec(args.small), args.pool_sizes, args.sampling_ratios, not args.no_backward,
        args.warmup, args.repeats,
    )
    with open(args.child_json, "w") as handle:
        json.dump({"rows": rows, "fingerprints": fingerprints, "versions": versions()}, handle)


def main(argv=None):
    args = _parse_args(argv)
    if args.child_json is not None:
        _child_main(args)
        return
    if args.traffic_only:
        print("\n".join(format_traffic(traffic_rows(workload_spec(args.small), args.pool_sizes, args.sampling_ratios))))
        return
    result = run_benchmark(
        small=args.small,
        pool_sizes=args.pool_sizes,
        sampling_ratios=args.sampling_ratios,
        repeats=args.repeats,
        warmup=args.warmup,
        include_jax=not args.no_jax,
        include_backward=not args.no_backward,
        include_torch=False if args.no_torch else None,
    )
    output = args.output or os.path.join(RESULTS_DIR, "roi_align_small.json" if args.small else "roi_align.json")
    write_json(result, output)
    print(format_table(result))
    _log(f"wrote {output}")


if __name__ == "__main__":
    use_benchmark_malloc()
    main()

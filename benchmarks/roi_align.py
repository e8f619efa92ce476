"""Speed and memory of `kml.PyramidROIAlign` against the matterport-style baseline.

What is measured, side by side, on one synthetic FPN workload:

- `kml.PyramidROIAlign` under the TensorFlow backend, inside
  `tf.function(jit_compile=True)` (XLA) and `tf.function(jit_compile=False)`;
- the same layer under the JAX backend inside `jax.jit` (a child process,
  because Keras fixes its backend once per process);
- the baseline that matterport Mask R-CNN users run today: one
  `tf.image.crop_and_resize` per FPN level, boxes assigned to levels by the
  *rounded* log2 rule, results put back into box order; a plain
  `tf.function`, since CropAndResize has no XLA CPU kernel.

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
also report the peak bytes in use of TensorFlow's CPU allocator.

Run `python benchmarks/roi_align.py --help` for the options, or import
`run_benchmark` and `format_table` from another script.
"""

import argparse
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from importlib import metadata

import numpy as np

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
BASELINE_IMPL = "matterport crop_and_resize"
FORWARD_TOLERANCE = 1e-4
GRADIENT_RELATIVE_TOLERANCE = 1e-4
FINGERPRINT_RELATIVE_TOLERANCE = 1e-4
RSS_SAMPLE_INTERVAL_S = 0.001
BYTES_PER_MB = 1e6
RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

_START = time.perf_counter()
_LOG_TAG = {"name": "roi_align"}


def _log(message):
    # stderr keeps stdout for the table, and shows progress on long runs.
    elapsed = time.perf_counter() - _START
    print(f"[{_LOG_TAG['name']} {elapsed:7.1f}s] {message}", file=sys.stderr, flush=True)


def _select_backend(backend):
    """Points Keras at `backend`; Keras reads the choice once, at its import."""
    if "keras" in sys.modules:
        import keras

        if keras.backend.backend() != backend:
            raise RuntimeError(
                f"Keras was already imported with the {keras.backend.backend()!r} backend; "
                f"this benchmark needs {backend!r}. Import it before keras, or run it as a script."
            )
        return
    os.environ["KERAS_BACKEND"] = backend


# --------------------------------------------------------------------------
# Workload


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
    """`[B, N, 4]` yxyx pixel boxes, sides log-uniform, at least 3/4 of each side inside."""
    rng = np.random.default_rng(workload["seed"])
    size = workload["image_size"]
    shape = (workload["batch"], workload["num_boxes"])
    log_min, log_max = math.log(MIN_SIDE_PX), math.log(MAX_SIDE_PX)
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
    # A random upstream, not ones, so that the gradient weighs every output differently.
    rng = np.random.default_rng(workload["seed"] + 100 + pool)
    shape = (workload["batch"], workload["num_boxes"], pool, pool, workload["channels"])
    return rng.standard_normal(shape, dtype=np.float32)


def output_mb(workload, pool):
    count = workload["batch"] * workload["num_boxes"] * pool * pool * workload["channels"]
    return count * np.dtype(DTYPE).itemsize / BYTES_PER_MB


def fingerprint(array):
    """Sum and sum of squares in float64: comparable across processes at no transfer cost."""
    values = np.asarray(array, dtype=np.float64)
    return [float(values.sum()), float(np.square(values).sum())]


# --------------------------------------------------------------------------
# Measurement


def _rss_bytes():
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None


class PeakRSS:
    """Highest resident set size seen while the `with` block runs, from a sampling thread.

    Compiled TF and JAX calls release the GIL while they compute, so the
    sampler keeps running during the part that allocates.
    """

    def __init__(self, interval_s=RSS_SAMPLE_INTERVAL_S):
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = None
        self.before = None
        self.peak = None
        self.samples = 0

    def __enter__(self):
        gc.collect()
        self.before = _rss_bytes()
        self.peak = self.before
        if self.before is not None:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(self._interval_s):
            self._record()

    def _record(self):
        rss = _rss_bytes()
        self.samples += 1
        if rss is not None and rss > self.peak:
            self.peak = rss

    def __exit__(self, *exc_info):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._record()
        return False

    @property
    def extra_mb(self):
        if self.before is None:
            return None
        return max(self.peak - self.before, 0) / BYTES_PER_MB


class TfAllocatorPeak:
    """Peak bytes in use in TensorFlow's CPU allocator while the `with` block runs.

    With oneDNN (TensorFlow's default on x86) large CPU tensors come from a
    pool that is never given back, so RSS stops moving after the first call;
    the allocator's own counters still see every call's working set.
    """

    def __init__(self):
        self.extra_mb = None
        self._before = None

    def __enter__(self):
        import tensorflow as tf

        try:
            tf.config.experimental.reset_memory_stats("CPU:0")
            self._before = tf.config.experimental.get_memory_info("CPU:0")["current"]
        except ValueError:  # Raised by allocators without statistics (oneDNN off).
            self._before = None
        return self

    def __exit__(self, *exc_info):
        import tensorflow as tf

        if self._before is not None:
            peak = tf.config.experimental.get_memory_info("CPU:0")["peak"]
            self.extra_mb = max(peak - self._before, 0) / BYTES_PER_MB
        return False


class _NoAllocatorStats:
    extra_mb = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False


class Benchmark:
    """One compiled callable: its first call, then the timed calls.

    Args:
        call: runs one step and returns its outputs.
        sync: waits until the outputs exist (JAX dispatches asynchronously;
            TensorFlow's eager CPU calls return when done).
        allocator_stats: makes a context manager whose `extra_mb` is the
            framework allocator's peak during the timed calls.
    """

    def __init__(self, call, sync=lambda outputs: outputs, allocator_stats=_NoAllocatorStats):
        self._call = call
        self._sync = sync
        self._allocator_stats = allocator_stats
        self.compile_s = None

    def first_call(self):
        start = time.perf_counter()
        outputs = self._sync(self._call())
        self.compile_s = time.perf_counter() - start
        return outputs

    def measure(self, warmup, repeats):
        if self.compile_s is None:
            self.first_call()
        for _ in range(warmup):
            self._sync(self._call())
        times_ms = []
        with PeakRSS() as memory, self._allocator_stats() as allocator:
            for _ in range(repeats):
                start = time.perf_counter()
                self._sync(self._call())
                times_ms.append((time.perf_counter() - start) * 1e3)
        return {
            "median_ms": statistics.median(times_ms),
            "min_ms": min(times_ms),
            "max_ms": max(times_ms),
            "times_ms": times_ms,
            "compile_s": self.compile_s,
            "peak_extra_mb": memory.extra_mb,
            "rss_samples": memory.samples,
            "allocator_peak_extra_mb": allocator.extra_mb,
        }


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
        "ratio_to_baseline": None,
        "error": None,
    }


def _describe(row):
    sr = "-" if row["sampling_ratio"] is None else row["sampling_ratio"]
    return f"{row['impl']} [{row['backend']}, xla={row['xla']}] sr={sr} pool={row['pool']} {row['pass']}"


def _error_text(error):
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {first_line[:300]}"


def _run_row(row, bench, warmup, repeats):
    """Fills `row` with the timings of `bench`; a failing configuration is recorded, not fatal."""
    _log(f"timing {_describe(row)}")
    try:
        row.update(bench.measure(warmup, repeats))
    except Exception as error:  # A backend error in one config must not lose the others.
        row["error"] = _error_text(error)
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
        sanity[key] = {"ok": False, "error": _error_text(error)}
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


def _tensorflow_rows(workload, pool_sizes, sampling_ratios, include_backward, warmup, repeats):
    import tensorflow as tf

    boxes = tf.constant(make_boxes(workload))
    features = [tf.constant(f) for f in make_features(workload)]
    passes = _passes(include_backward)
    rows, sanity, fingerprints = [], {}, {}
    for pool in pool_sizes:
        tensors = (boxes, features, tf.constant(make_upstream(workload, pool)))
        rows += _tf_baseline_rows(tensors, workload, pool, passes, warmup, repeats)
        for sampling_ratio in sampling_ratios:
            rows += _tf_layer_rows(
                tensors, workload, pool, sampling_ratio, passes, warmup, repeats, sanity, fingerprints
            )
        del tensors
    return rows, sanity, fingerprints


# --------------------------------------------------------------------------
# JAX (run in a child process with the JAX backend)


def _jax_step(layer, backward):
    import jax
    import jax.numpy as jnp

    if not backward:
        return jax.jit(lambda boxes, features, upstream: layer(boxes, features))

    # Inputs are arguments, not closure constants, so XLA does not embed them.
    def loss(features, boxes, upstream):
        return jnp.sum(layer(boxes, features) * upstream)

    grad = jax.jit(jax.grad(loss))
    return lambda boxes, features, upstream: grad(features, boxes, upstream)


def _jax_rows(workload, pool_sizes, sampling_ratios, include_backward, warmup, repeats):
    import jax
    import jax.numpy as jnp

    import keras_maskrcnn_layers as kml

    boxes = jnp.asarray(make_boxes(workload))
    features = [jnp.asarray(f) for f in make_features(workload)]
    rows, fingerprints = [], {}
    for pool in pool_sizes:
        tensors = (boxes, features, jnp.asarray(make_upstream(workload, pool)))
        for sampling_ratio in sampling_ratios:
            layer = kml.PyramidROIAlign(
                pool_size=pool, sampling_ratio=sampling_ratio, aligned=True, min_level=2, max_level=5
            )
            for pass_name in _passes(include_backward):
                step = _jax_step(layer, pass_name == BACKWARD)
                bench = Benchmark(lambda step=step: step(*tensors), sync=jax.block_until_ready)
                row = _row(LAYER_IMPL, "jax", True, sampling_ratio, pool, pass_name, workload)
                if pass_name == FORWARD:
                    _jax_fingerprint(bench, row, fingerprints)
                rows.append(_run_row(row, bench, warmup, repeats))
        del tensors
    return rows, fingerprints


def _jax_fingerprint(bench, row, fingerprints):
    """Fingerprints the first forward output, for the parent to compare with TensorFlow's."""
    try:
        output = bench.first_call()
    except Exception as error:  # The timing pass records the failure in the row.
        _log(f"first call failed for {_describe(row)}: {_error_text(error)}")
        return
    fingerprints[f"sr={row['sampling_ratio']} pool={row['pool']}"] = fingerprint(output)


def _child_command(child_json, small, pool_sizes, sampling_ratios, include_backward, warmup, repeats):
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--backend",
        "jax",
        "--child-json",
        child_json,
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


def _run_jax_child(small, pool_sizes, sampling_ratios, include_backward, warmup, repeats):
    """Runs the JAX rows in a fresh process and returns its JSON, or an error dict."""
    with tempfile.TemporaryDirectory(prefix="roi_align_bench_") as tmp:
        child_json = os.path.join(tmp, "jax.json")
        command = _child_command(child_json, small, pool_sizes, sampling_ratios, include_backward, warmup, repeats)
        env = dict(os.environ, KERAS_BACKEND="jax")
        _log("starting the JAX child process")
        # The child's progress goes straight to our stderr; its stdout is kept off the table.
        completed = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True, check=False)
        if completed.stdout:
            print(completed.stdout, file=sys.stderr, end="")
        if completed.returncode != 0 or not os.path.exists(child_json):
            return {"error": f"JAX child process exited with code {completed.returncode}"}
        with open(child_json) as handle:
            return json.load(handle)


# --------------------------------------------------------------------------
# Report


def _cpu_model():
    try:
        output = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        output = ""
    for line in output.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _memory_gb():
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024 / 1e9
    except (OSError, ValueError):
        pass
    return None


def machine_info():
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable,
        "memory_gb": _memory_gb(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def package_versions():
    versions = {}
    for name in ("tensorflow", "keras", "jax", "jaxlib", "numpy", "keras-maskrcnn-layers"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _add_ratios(rows):
    baselines = {
        (row["pool"], row["pass"]): row["median_ms"]
        for row in rows
        if row["impl"] == BASELINE_IMPL and row["median_ms"]
    }
    for row in rows:
        baseline = baselines.get((row["pool"], row["pass"]))
        if baseline and row["median_ms"] is not None:
            row["ratio_to_baseline"] = row["median_ms"] / baseline


def _jax_sanity(tf_fingerprints, jax_fingerprints):
    """JAX's forward output against TF's without XLA, via sum and sum of squares."""
    checks = {}
    for key, jax_print in jax_fingerprints.items():
        if key not in tf_fingerprints:
            continue
        diff = _relative_diff(jax_print, tf_fingerprints[key])
        checks[f"jax vs tf no xla, {key} fwd"] = {
            "metric": "relative diff of (sum, sum of squares)",
            "value": diff,
            "ok": diff < FINGERPRINT_RELATIVE_TOLERANCE,
        }
    return checks


def _merge_jax(result, child, tf_fingerprints):
    if "error" in child:
        result["errors"].append(child["error"])
        return
    result["rows"] += child["rows"]
    result["versions_jax_process"] = child["versions"]
    result["sanity"].update(_jax_sanity(tf_fingerprints, child["fingerprints"]))


def run_benchmark(
    small=False,
    pool_sizes=DEFAULT_POOL_SIZES,
    sampling_ratios=DEFAULT_SAMPLING_RATIOS,
    repeats=None,
    warmup=1,
    include_jax=True,
    include_backward=True,
):
    """Runs the TensorFlow rows here and, if asked, the JAX rows in a child process.

    Keras must not have been imported with a backend other than TensorFlow.

    Returns:
        The JSON-ready result: `rows`, `machine`, `versions`, `workload`,
        `settings`, `sanity` (XLA vs no-XLA agreement) and `errors`.
    """
    _select_backend("tensorflow")
    repeats = DEFAULT_REPEATS[bool(small)] if repeats is None else repeats
    pool_sizes, sampling_ratios = tuple(pool_sizes), tuple(sampling_ratios)
    workload = workload_spec(small)
    # The JAX child runs first: TensorFlow's CPU allocator keeps the
    # gigabytes of the forward+backward rows for the life of this process,
    # and both together do not fit in 24 GB at the standard workload.
    child = None
    if include_jax:
        child = _run_jax_child(small, pool_sizes, sampling_ratios, include_backward, warmup, repeats)
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
            "include_backward": include_backward,
            "aligned": True,
        },
        "rows": rows,
        "sanity": sanity,
        "errors": [],
    }
    if child is not None:
        _merge_jax(result, child, tf_fingerprints)
    result["errors"] += [f"{_describe(row)}: {row['error']}" for row in result["rows"] if row["error"]]
    _add_ratios(result["rows"])
    return result


def _sort_key(row):
    order = {(BASELINE_IMPL, "tensorflow"): 0, (LAYER_IMPL, "tensorflow"): 1, (LAYER_IMPL, "jax"): 2}
    return (
        row["pool"],
        row["pass"] != FORWARD,
        order.get((row["impl"], row["backend"]), 3),
        not row["xla"],
        row["sampling_ratio"] or 0,
    )


def _fmt(value, spec, missing="-"):
    return missing if value is None else format(value, spec)


def _table_cells(row):
    failed = "FAILED" if row["error"] else "-"
    return [
        row["impl"],
        row["backend"],
        "jit" if row["backend"] == "jax" else ("yes" if row["xla"] else "no"),
        _fmt(row["sampling_ratio"], "d"),
        str(row["pool"]),
        row["pass"],
        _fmt(row["median_ms"], ".1f", failed),
        _fmt(row["ratio_to_baseline"], ".2f"),
        _fmt(row["peak_extra_mb"], ".0f"),
        _fmt(row["allocator_peak_extra_mb"], ".0f"),
        _fmt(row["compile_s"], ".2f"),
    ]


TABLE_HEADER = [
    "impl",
    "backend",
    "xla",
    "sampling_ratio",
    "pool",
    "pass",
    "median ms",
    "x baseline time",
    "peak extra MB",
    "TF alloc peak MB",
    "compile s",
]
RIGHT_ALIGNED = set(TABLE_HEADER) - {"impl", "backend", "xla", "pass"}


def _render(header, body):
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def render(cells):
        parts = [
            cell.rjust(width) if name in RIGHT_ALIGNED else cell.ljust(width)
            for name, cell, width in zip(header, cells, widths)
        ]
        return " | ".join(parts).rstrip()

    rule = "-+-".join("-" * width for width in widths)
    return [render(header), rule, *(render(cells) for cells in body)]


def _header_lines(result):
    machine, versions, workload, settings = (
        result["machine"], result["versions"], result["workload"], result["settings"]
    )
    memory = f", {machine['memory_gb']:.0f} GB RAM" if machine["memory_gb"] else ""
    version_text = ", ".join(f"{name} {version}" for name, version in versions.items() if version)
    maps = ", ".join(f"P{lvl} {side}x{side}" for lvl, side in zip(workload["levels"], workload["feature_sizes"]))
    return [
        f"machine: {machine['cpu_model']}, {machine['cpu_count']} CPUs "
        f"({machine['usable_cpus']} usable){memory}; {machine['platform']}",
        f"versions: python {machine['python']}, {version_text}",
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
    lines += _render(TABLE_HEADER, [_table_cells(row) for row in rows])
    lines += [
        "",
        "x baseline time: median / median of the baseline row with the same pool and pass (< 1 is faster).",
        "compile s: wall time of the first call (trace + compile + one run).",
        "peak extra MB: max RSS during the timed calls minus RSS before them; approximate (allocator caching).",
        "TF alloc peak MB: TensorFlow CPU allocator's peak bytes in use during the timed calls minus those before.",
        "baseline: one bilinear sample per bin, not aligned, rounded level assignment; not numerically comparable.",
    ]
    lines += [f"error: {error}" for error in result["errors"]]
    return "\n".join(lines)


# --------------------------------------------------------------------------
# Command line


def _parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="64 channels, 200 boxes per image")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per config (default 5, small 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls after the first call")
    parser.add_argument("--pool-sizes", type=int, nargs="+", default=list(DEFAULT_POOL_SIZES))
    parser.add_argument("--sampling-ratios", type=int, nargs="+", default=list(DEFAULT_SAMPLING_RATIOS))
    parser.add_argument("--quick-configs", action="store_true", help="only pool 7 and sampling_ratio 2")
    parser.add_argument("--no-jax", action="store_true", help="skip the JAX child process")
    parser.add_argument("--no-backward", action="store_true", help="forward pass only")
    parser.add_argument("--output", default=None, help="JSON path (default benchmarks/results/roi_align[_small].json)")
    parser.add_argument("--backend", choices=("tensorflow", "jax"), default="tensorflow", help=argparse.SUPPRESS)
    parser.add_argument("--child-json", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick_configs:
        args.pool_sizes, args.sampling_ratios = [7], [2]
    if args.repeats is None:
        args.repeats = DEFAULT_REPEATS[args.small]
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0")
    if (args.backend == "jax") != (args.child_json is not None):
        parser.error("--backend jax and --child-json go together (the JAX rows run in a child process)")
    return args


def _child_main(args):
    """The JAX half: writes its rows to `--child-json` for the parent to merge."""
    _select_backend("jax")
    _LOG_TAG["name"] = "roi_align jax child"
    rows, fingerprints = _jax_rows(
        workload_spec(args.small), args.pool_sizes, args.sampling_ratios, not args.no_backward, args.warmup, args.repeats
    )
    with open(args.child_json, "w") as handle:
        json.dump({"rows": rows, "fingerprints": fingerprints, "versions": package_versions()}, handle)


def _write_json(result, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as handle:
        json.dump(result, handle, indent=2)


def main(argv=None):
    args = _parse_args(argv)
    if args.child_json is not None:
        _child_main(args)
        return
    result = run_benchmark(
        small=args.small,
        pool_sizes=args.pool_sizes,
        sampling_ratios=args.sampling_ratios,
        repeats=args.repeats,
        warmup=args.warmup,
        include_jax=not args.no_jax,
        include_backward=not args.no_backward,
    )
    output = args.output or os.path.join(RESULTS_DIR, "roi_align_small.json" if args.small else "roi_align.json")
    _write_json(result, output)
    print(format_table(result))
    _log(f"wrote {output}")


if __name__ == "__main__":
    main()

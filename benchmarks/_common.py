"""Helpers shared by the benchmark scripts: timing, memory, machine description, reporting.

Nothing here imports Keras, TensorFlow or JAX at module level, so a script
can choose its Keras backend after importing this module.
"""

import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from importlib import metadata

RSS_SAMPLE_INTERVAL_S = 0.001
BYTES_PER_MB = 1e6
RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
BASE_PACKAGES = ("tensorflow", "keras", "jax", "jaxlib", "numpy", "keras-maskrcnn-layers")

# glibc malloc settings the benchmarks run under (`use_benchmark_malloc`). By
# default glibc hands a thread other than the main one its own arena, which
# cannot hold blocks over 64 MB, so such blocks are mmap-ed on every
# allocation and munmap-ed on free. JAX's CPU runtime allocates every output
# and temporary buffer that way from its worker threads: a 400 MB output is
# faulted in page by page on every call (about 180 ms of system time per
# call at pool 14 on the standard ROI Align workload). One arena and
# thresholds above any buffer here keep freed memory for reuse instead.
BENCHMARK_MALLOC_ENV = {
    "MALLOC_ARENA_MAX": "1",
    "MALLOC_MMAP_THRESHOLD_": str(4 * 2**30),
    "MALLOC_TRIM_THRESHOLD_": str(8 * 2**30),
}
SYSTEM_MALLOC_FLAG = "--system-malloc"
# Set in a restarted process, which then never restarts again.
_RESTARTED_VARIABLE = "KML_BENCHMARK_MALLOC_RESTARTED"
SYSTEM_MALLOC_HELP = (
    "run under the system's malloc settings instead of restarting with "
    + " ".join(f"{name}={value}" for name, value in BENCHMARK_MALLOC_ENV.items())
)

_START = time.perf_counter()


class Logger:
    """Progress lines on stderr, tagged with a name and the seconds since start.

    stderr keeps stdout for the table, and shows progress on long runs.

    Args:
        name: str. The tag; a child process renames its logger.
    """

    def __init__(self, name):
        self.name = name

    def __call__(self, message):
        elapsed = time.perf_counter() - _START
        print(f"[{self.name} {elapsed:7.1f}s] {message}", file=sys.stderr, flush=True)


def select_backend(backend):
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


def benchmark_malloc_restart(argv, environ=None, interpreter_argv=None):
    """The command and environment to restart a script with under `BENCHMARK_MALLOC_ENV`.

    Args:
        argv: list of str, the script's `sys.argv`.
        environ: mapping, the environment. Defaults to `os.environ`.
        interpreter_argv: list of str, the whole command line including the
            interpreter's own options (`sys.orig_argv`). Defaults to
            `sys.executable` followed by `argv`.

    Returns:
        `(command, environment)`, or `None` when no restart is needed:
        `SYSTEM_MALLOC_FLAG` is in `argv`, the C library is not glibc, the
        interpreter is unknown, the settings are already in the environment
        (a child process inherits them), or this process is itself a restart
        (whatever its environment says, so that it can never loop).
    """
    environ = os.environ if environ is None else environ
    if SYSTEM_MALLOC_FLAG in argv[1:] or platform.libc_ver()[0] != "glibc" or not sys.executable:
        return None
    if all(environ.get(name) == value for name, value in BENCHMARK_MALLOC_ENV.items()):
        return None
    if environ.get(_RESTARTED_VARIABLE):
        print(
            f"warning: restarted under {BENCHMARK_MALLOC_ENV}, but the environment does not hold them; "
            "carrying on with what glibc was given",
            file=sys.stderr,
        )
        return None
    command = [sys.executable, *(interpreter_argv[1:] if interpreter_argv else argv)]
    return command, {**environ, **BENCHMARK_MALLOC_ENV, _RESTARTED_VARIABLE: "1"}


def use_benchmark_malloc():
    """Restarts the running script under `BENCHMARK_MALLOC_ENV` unless it already runs so.

    glibc reads these settings once, when the process starts, so they cannot
    be set from inside; call this first thing in a script's `__main__`
    block, before the frameworks are imported. The interpreter's own
    options (`-X`, `-W`, `-m module`) are kept.
    """
    restart = benchmark_malloc_restart(sys.argv, interpreter_argv=getattr(sys, "orig_argv", None))
    if restart is not None:
        command, environ = restart
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(command[0], command, environ)


def malloc_settings():
    """The `BENCHMARK_MALLOC_ENV` variables set in this process, for the report; `{}` for the defaults."""
    return {name: os.environ[name] for name in BENCHMARK_MALLOC_ENV if name in os.environ}


def error_text(error):
    """`Type: first line` of an exception, short enough for a table footnote."""
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {first_line[:300]}"


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


class NoAllocatorStats:
    """Stands in for `TfAllocatorPeak` where the framework reports no allocator statistics."""

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

    def __init__(self, call, sync=lambda outputs: outputs, allocator_stats=NoAllocatorStats):
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


def jax_sync(outputs):
    """Waits for a JAX result: its calls return before the work is done."""
    import jax

    return jax.block_until_ready(outputs)


def run_json_child(command, log, prefix, label="JAX", keras_backend="jax"):
    """Runs `command --child-json PATH` in a fresh process and returns the JSON it wrote.

    Keras fixes its backend once per process, so the JAX rows of a benchmark
    run in a child started with `KERAS_BACKEND=jax`; rows of another
    framework run in a child of their own, so that neither framework's
    allocator or thread pools weigh on the other's figures.

    Args:
        command: list of str, the child's command line without `--child-json`.
        log: `Logger` of the parent.
        prefix: str. Prefix of the temporary directory.
        label: str. Names the child in the log and in errors.
        keras_backend: str or None. `KERAS_BACKEND` of the child; None
            leaves the parent's.

    Returns:
        The child's JSON, or `{"error": ...}` if it failed.
    """
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        child_json = os.path.join(tmp, "child.json")
        env = dict(os.environ)
        if keras_backend is not None:
            env["KERAS_BACKEND"] = keras_backend
        # The child inherits the malloc environment; the flag keeps it from
        # restarting under other settings than ours.
        if malloc_settings() != BENCHMARK_MALLOC_ENV:
            command = [*command, SYSTEM_MALLOC_FLAG]
        log(f"starting the {label} child process")
        # The child's progress goes straight to our stderr; its stdout is kept off the table.
        completed = subprocess.run(
            [*command, "--child-json", child_json], env=env, stdout=subprocess.PIPE, text=True, check=False
        )
        if completed.stdout:
            print(completed.stdout, file=sys.stderr, end="")
        if completed.returncode != 0 or not os.path.exists(child_json):
            return {"error": f"{label} child process exited with code {completed.returncode}"}
        with open(child_json) as handle:
            return json.load(handle)


# --------------------------------------------------------------------------
# Machine and versions


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
    """CPU model and counts, memory, platform and Python version of this machine."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable,
        "memory_gb": _memory_gb(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "malloc": malloc_settings(),
    }


def package_versions(extra=()):
    """Installed versions of the benchmarked stack (None where absent), plus `extra` packages."""
    versions = {}
    for name in (*BASE_PACKAGES, *extra):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


# --------------------------------------------------------------------------
# Report


def fmt(value, spec, missing="-"):
    return missing if value is None else format(value, spec)


def machine_lines(machine, versions):
    """The header lines naming the machine, the package versions and the malloc settings."""
    memory = f", {machine['memory_gb']:.0f} GB RAM" if machine["memory_gb"] else ""
    version_text = ", ".join(f"{name} {version}" for name, version in versions.items() if version)
    malloc = machine.get("malloc")
    malloc_text = " ".join(f"{name}={value}" for name, value in malloc.items()) if malloc else "system defaults"
    return [
        f"machine: {machine['cpu_model']}, {machine['cpu_count']} CPUs "
        f"({machine['usable_cpus']} usable){memory}; {machine['platform']}",
        f"versions: python {machine['python']}, {version_text}",
        f"malloc: {malloc_text}",
    ]


def render_table(header, body, right_aligned):
    """Lines of a `|`-separated table; columns named in `right_aligned` are right-aligned."""
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def render(cells):
        parts = [
            cell.rjust(width) if name in right_aligned else cell.ljust(width)
            for name, cell, width in zip(header, cells, widths)
        ]
        return " | ".join(parts).rstrip()

    rule = "-+-".join("-" * width for width in widths)
    return [render(header), rule, *(render(cells) for cells in body)]


def write_json(result, path):
    """Writes `result` to `path`, creating its directory (`benchmarks/results/` is git-ignored)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as handle:
        json.dump(result, handle, indent=2)

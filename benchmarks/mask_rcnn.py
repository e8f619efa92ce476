"""Inference time per image of the `"coco"` Mask R-CNN, its split by stage, and ROI Align against the ROI count.

Two measurements, both under the TensorFlow backend:

1. The `"coco"` preset (ResNet-50-FPN, 1024 x 1024 input, 81 classes,
   random weights: nothing is downloaded) built by
   `kml.build_mask_rcnn(config, "inference")`, batch 1, called inside
   `tf.function(jit_compile=True)` (XLA) and, unless `--no-plain`,
   `tf.function(jit_compile=False)`. The time is split into three stages
   by timing three models built from the same layers and weights:

   - "to FPN": images -> P2..P6 (normalisation, backbone, FPN);
   - "to proposals": images -> proposals (the above, RPN head, anchors,
     `ProposalLayer`);
   - "full": the inference model (the above, box ROI Align, box head,
     `DetectionLayer`, mask ROI Align, mask head).

   backbone+FPN = t(to FPN); RPN = t(to proposals) - t(to FPN); ROI heads
   = t(full) - t(to proposals); each is also given as a share of t(full).

2. `kml.PyramidROIAlign` alone, forward, with XLA, on feature maps of the
   model's P2..P5 shapes and channels, batch 1, against the number of ROIs
   for several pool sizes; a plot (PNG) and a table.

Each configuration times a first call ("compile s": tracing, compilation
and one run), then `warmup` untimed calls, then `repeats` timed calls; the
tables report their median.

Run `python benchmarks/mask_rcnn.py --help` for the options, or import
`run_benchmark` and `format_table` from another script.
"""

import argparse
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
    select_backend,
    use_benchmark_malloc,
    write_json,
)
from benchmarks.roi_align import make_boxes, make_features  # noqa: E402

SEED = 0
# Batch 1, and every detection kept whatever its score: an untrained box
# head is unsure everywhere, and the mask branch should see a full batch.
BENCHMARK_SETTINGS = {"IMAGES_PER_GPU": 1, "DETECTION_MIN_CONFIDENCE": 0.0}
SMALL_SETTINGS = {
    "IMAGE_MIN_DIM": 256,
    "IMAGE_MAX_DIM": 256,
    "BACKBONE": "small",
    "TOP_DOWN_PYRAMID_SIZE": 64,
    "FPN_CLASSIF_FC_LAYERS_SIZE": 256,
    "PRE_NMS_LIMIT": 1000,
    "POST_NMS_ROIS_TRAINING": 500,  # unused in inference; must not exceed PRE_NMS_LIMIT
    "POST_NMS_ROIS_INFERENCE": 200,
    "DETECTION_MAX_INSTANCES": 20,
}
DEFAULT_ROI_COUNTS = {False: (100, 250, 500, 1000, 2000), True: (25, 50, 100)}
DEFAULT_POOL_SIZES = (7, 14, 28)
DEFAULT_REPEATS = {False: 5, True: 3}
PREFIXES = ("to FPN", "to proposals", "full")
STAGES = (
    ("backbone+FPN", None, "to FPN"),
    ("RPN head+anchors+proposals", "to FPN", "to proposals"),
    ("ROI heads (box+detection+mask)", "to proposals", "full"),
)
FULL_STAGE = "full model"
MIN_LEVEL, MAX_LEVEL = 2, 5
SWEEP_MIN_SIDE_PX, SWEEP_MAX_SIDE_PX = 16.0, 512.0

_log = Logger("mask_rcnn")


# --------------------------------------------------------------------------
# The model and its prefixes


def model_config(small, **overrides):
    """The `"coco"` preset at batch 1 (shrunk with `small`), with `overrides` on top."""
    import keras_maskrcnn_layers as kml

    settings = {**BENCHMARK_SETTINGS, **(SMALL_SETTINGS if small else {}), **overrides}
    return kml.MaskRCNNConfig.preset("coco", **settings)


def favour_objects(model):
    """Biases the untrained box classifier away from background (as the model tests do).

    With random weights nearly every ROI is background and few detections
    survive, which would leave the mask branch pooling zero boxes.
    """
    classifier = model.get_layer("box_head").classifier
    bias = np.linspace(4.0, 0.0, classifier.bias.shape[0]).astype("float32")
    bias[0] = -5.0
    classifier.bias.assign(bias)


def build_prefix_models(config):
    """The inference model and two models ending inside it, sharing its layers and weights.

    Returns:
        dict `{"to FPN": images -> [P2..P6], "to proposals": images ->
        proposals [1, POST_NMS_ROIS_INFERENCE, 4], "full": the model}`.
    """
    import keras

    import keras_maskrcnn_layers as kml

    keras.utils.set_random_seed(SEED)
    model = kml.build_mask_rcnn(config, "inference")
    favour_objects(model)
    images = model.input["images"]
    return {
        "to FPN": keras.Model(images, model.get_layer("fpn").output, name="to_fpn"),
        "to proposals": keras.Model(images, model.get_layer("proposals").output[0], name="to_proposals"),
        "full": model,
    }


def make_inputs(config):
    """Batch-1 inputs: uniform random pixels, and the meta of an image filling the input."""
    from keras_maskrcnn_layers.data import compose_image_meta

    height, width, channels = config.IMAGE_SHAPE
    rng = np.random.default_rng(SEED)
    images = rng.uniform(0.0, 255.0, (1, height, width, channels)).astype(np.float32)
    meta = compose_image_meta((height, width, channels), (0, 0, height, width), 1.0)[None]
    return {"images": images, "image_meta": meta}


def _timing_fields():
    return {
        "median_ms": None,
        "min_ms": None,
        "max_ms": None,
        "times_ms": [],
        "compile_s": None,
        "peak_extra_mb": None,
        "rss_samples": 0,
        "allocator_peak_extra_mb": None,
        "error": None,
    }


def _model_row(prefix, xla):
    return {"prefix": prefix, "xla": xla, **_timing_fields()}


def _sweep_row(pool, rois, channels):
    output_mb = rois * pool * pool * channels * np.dtype("float32").itemsize / BYTES_PER_MB
    return {"pool": pool, "rois": rois, "output_mb": output_mb, **_timing_fields()}


def _run(row, description, bench, warmup, repeats):
    """Fills `row` with the timings of `bench`; a failing configuration is recorded, not fatal."""
    _log(f"timing {description}")
    try:
        row.update(bench.measure(warmup, repeats))
    except Exception as error:  # One failing configuration must not lose the others.
        row["error"] = error_text(error)
        _log(f"FAILED {description}: {row['error']}")
        return row
    _log(f"  median {row['median_ms']:.1f} ms, first call {row['compile_s']:.2f} s")
    return row


def _detections(outputs, config):
    count = int(np.asarray(outputs["num_detections"])[0])
    return {"num_detections": count, "max_detections": config.DETECTION_MAX_INSTANCES}


def model_rows(config, include_plain, warmup, repeats):
    """Times every prefix model with XLA and, if asked, without.

    Returns:
        Tuple `(rows, detections)`: one row per (prefix, xla); and, per XLA
        setting, how many detections the full model returned (the mask
        branch pools `DETECTION_MAX_INSTANCES` boxes either way; with real
        boxes when the count is full).
    """
    import tensorflow as tf

    models = build_prefix_models(config)
    inputs = {key: tf.constant(value) for key, value in make_inputs(config).items()}
    rows, detections = [], {}
    for xla in (True, False) if include_plain else (True,):
        for prefix in PREFIXES:
            model = models[prefix]
            model_inputs = inputs if prefix == "full" else inputs["images"]
            step = tf.function(lambda x, model=model: model(x, training=False), jit_compile=xla)
            bench = Benchmark(lambda step=step, x=model_inputs: step(x), allocator_stats=TfAllocatorPeak)
            row = _model_row(prefix, xla)
            if prefix == "full":
                try:
                    detections[f"xla={xla}"] = _detections(bench.first_call(), config)
                    _log(f"full model, xla={xla}: {detections[f'xla={xla}']}")
                except Exception as error:  # The timing pass records the failure in the row.
                    _log(f"first call of the full model failed: {error_text(error)}")
            rows.append(_run(row, f"{prefix} [xla={xla}]", bench, warmup, repeats))
    return rows, detections


def stage_rows(rows):
    """Stage times as differences of prefix times, and their shares of the full model."""
    medians = {(row["prefix"], row["xla"]): row["median_ms"] for row in rows}
    stages = []
    for xla in sorted({row["xla"] for row in rows}, reverse=True):
        full = medians.get(("full", xla))
        for name, start, end in (*STAGES, (FULL_STAGE, None, "full")):
            end_ms = medians.get((end, xla))
            start_ms = 0.0 if start is None else medians.get((start, xla))
            ms = None if end_ms is None or start_ms is None else end_ms - start_ms
            share = ms / full if ms is not None and full else None
            stages.append({"stage": name, "xla": xla, "ms_per_image": ms, "share": share})
    return stages


# --------------------------------------------------------------------------
# ROI Align against the number of ROIs


def sweep_workload(config, roi_counts, pool_sizes):
    """P2..P5 of the model's input at its pyramid width, batch 1."""
    size = config.IMAGE_MAX_DIM
    return {
        "batch": 1,
        "image_size": size,
        "channels": config.TOP_DOWN_PYRAMID_SIZE,
        "levels": list(range(MIN_LEVEL, MAX_LEVEL + 1)),
        "feature_sizes": [size // 2**level for level in range(MIN_LEVEL, MAX_LEVEL + 1)],
        "roi_counts": list(roi_counts),
        "pool_sizes": list(pool_sizes),
        "sampling_ratio": config.ROI_SAMPLING_RATIO,
        "aligned": config.ROI_ALIGNED,
        # As in benchmarks/roi_align.py: 16-512 px at 1024 px, at most half the image.
        "box_side_px": [SWEEP_MIN_SIDE_PX, min(SWEEP_MAX_SIDE_PX, size / 2)],
        "dtype": "float32",
        "seed": SEED,
    }


def roi_align_rows(workload, warmup, repeats):
    """`kml.PyramidROIAlign` forward under `tf.function(jit_compile=True)`, per pool size and ROI count."""
    import tensorflow as tf

    import keras_maskrcnn_layers as kml

    features = [tf.constant(f) for f in make_features(workload)]
    rows = []
    for pool in workload["pool_sizes"]:
        layer = kml.PyramidROIAlign(
            pool_size=pool,
            sampling_ratio=workload["sampling_ratio"],
            aligned=workload["aligned"],
            min_level=MIN_LEVEL,
            max_level=MAX_LEVEL,
        )
        for count in workload["roi_counts"]:
            boxes = tf.constant(make_boxes({**workload, "num_boxes": count}))
            # A new tf.function per ROI count: one compiled program per shape, as in the model.
            step = tf.function(lambda b, f, layer=layer: layer(b, f), jit_compile=True)
            bench = Benchmark(lambda step=step, b=boxes: step(b, features), allocator_stats=TfAllocatorPeak)
            row = _sweep_row(pool, count, workload["channels"])
            rows.append(_run(row, f"PyramidROIAlign pool={pool} rois={count}", bench, warmup, repeats))
    return rows


def plot_roi_align(rows, workload, path):
    """ROI Align time against the ROI count, one line per pool size, log-log; written as PNG to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    figure, axis = plt.subplots(figsize=(6.4, 4.4))
    for pool in workload["pool_sizes"]:
        points = [(row["rois"], row["median_ms"]) for row in rows if row["pool"] == pool and row["median_ms"]]
        if points:
            axis.plot(*zip(*points), marker="o", label=f"pool {pool}x{pool}")
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xticks(workload["roi_counts"], [str(count) for count in workload["roi_counts"]])
    # Plain numbers at 1-2-5 steps: a run can span less than a decade of times.
    axis.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    for minor in (axis.xaxis, axis.yaxis):
        minor.set_minor_formatter(ticker.NullFormatter())
    axis.set_xlabel("ROIs per image")
    axis.set_ylabel("median forward time (ms)")
    sides = ", ".join(f"{side}²" for side in workload["feature_sizes"])
    axis.set_title(
        f"kml.PyramidROIAlign, XLA, batch 1\nP2-P5 {sides}, {workload['channels']} channels, "
        f"sampling_ratio {workload['sampling_ratio']}",
        fontsize=10,
    )
    axis.grid(True, which="both", alpha=0.3)
    axis.legend()
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


# --------------------------------------------------------------------------
# Run and report


CONFIG_KEYS = (
    "NAME", "BACKBONE", "IMAGE_SHAPE", "BATCH_SIZE", "NUM_CLASSES", "TOP_DOWN_PYRAMID_SIZE",
    "FPN_CLASSIF_FC_LAYERS_SIZE", "PRE_NMS_LIMIT", "POST_NMS_ROIS_INFERENCE", "RPN_NMS_THRESHOLD", "POOL_SIZE",
    "MASK_POOL_SIZE", "MASK_SHAPE", "MASK_HEAD_CONVS", "ROI_SAMPLING_RATIO", "DETECTION_MAX_INSTANCES",
    "DETECTION_MIN_CONFIDENCE",
)


def _config_summary(config):
    """The settings that shape the work, JSON-ready."""
    summary = {}
    for key in CONFIG_KEYS:
        value = getattr(config, key)
        summary[key] = list(value) if isinstance(value, tuple) else value
    return summary


def run_benchmark(
    small=False,
    config=None,
    include_model=True,
    include_plain=True,
    include_roi_align=True,
    roi_counts=None,
    pool_sizes=DEFAULT_POOL_SIZES,
    repeats=None,
    warmup=1,
    plot_path=None,
):
    """Times the model's stages and the ROI Align sweep under TensorFlow.

    Keras must not have been imported with a backend other than TensorFlow.

    Args:
        small: bool. 256 px, the "small" backbone, fewer proposals and ROIs.
        config: optional `MaskRCNNConfig` instead of `model_config(small)`
            (tests pass a tiny one); batch 1 is what is fed either way.
        include_model: bool. Time the model and its prefixes.
        include_plain: bool. Also time them without XLA.
        include_roi_align: bool. Run the ROI Align sweep.
        roi_counts: ROIs per image of the sweep; defaults to 100..2000
            (25..100 with `small`).
        pool_sizes: pool sizes of the sweep. Defaults to `(7, 14, 28)`.
        repeats: int. Timed calls per configuration; defaults to 5 (3 with
            `small`).
        warmup: int. Untimed calls between the first call and the timed ones.
        plot_path: optional str. Where to write the sweep's PNG; no plot
            when None.

    Returns:
        The JSON-ready result: `machine`, `versions`, `config`, `settings`,
        `model_rows`, `stages`, `detections`, `roi_align` (workload and
        rows), `plot` and `errors`.
    """
    select_backend("tensorflow")
    repeats = DEFAULT_REPEATS[bool(small)] if repeats is None else repeats
    config = config or model_config(small)
    roi_counts = DEFAULT_ROI_COUNTS[bool(small)] if roi_counts is None else roi_counts
    result = {
        "machine": machine_info(),
        "versions": package_versions(extra=("matplotlib",)),
        "config": _config_summary(config),
        "settings": {
            "small": small,
            "repeats": repeats,
            "warmup": warmup,
            "include_plain": include_plain,
            "batch": 1,
            "weights": "random (seed 0), box classifier biased towards objects",
        },
        "model_rows": [],
        "stages": [],
        "detections": {},
        "roi_align": None,
        "plot": None,
        "errors": [],
    }
    if include_model:
        rows, detections = model_rows(config, include_plain, warmup, repeats)
        result.update(model_rows=rows, stages=stage_rows(rows), detections=detections)
        result["errors"] += [f"{row['prefix']} xla={row['xla']}: {row['error']}" for row in rows if row["error"]]
    if include_roi_align:
        workload = sweep_workload(config, roi_counts, pool_sizes)
        rows = roi_align_rows(workload, warmup, repeats)
        result["roi_align"] = {"workload": workload, "rows": rows}
        result["errors"] += [f"ROI Align pool={r['pool']} rois={r['rois']}: {r['error']}" for r in rows if r["error"]]
        if plot_path is not None:
            plot_roi_align(rows, workload, plot_path)
            result["plot"] = plot_path
    return result


def _header_lines(result):
    config, settings = result["config"], result["settings"]
    height, width, _ = config["IMAGE_SHAPE"]
    return machine_lines(result["machine"], result["versions"]) + [
        f"model: preset {config['NAME']!r}, backbone {config['BACKBONE']}, {height}x{width} input, batch 1, "
        f"{config['NUM_CLASSES']} classes, {config['PRE_NMS_LIMIT']} -> {config['POST_NMS_ROIS_INFERENCE']} "
        f"proposals, {config['DETECTION_MAX_INSTANCES']} detections, pools {config['POOL_SIZE']}/"
        f"{config['MASK_POOL_SIZE']}, masks {config['MASK_SHAPE'][0]}x{config['MASK_SHAPE'][1]}; {settings['weights']}",
        f"timing: median of {settings['repeats']} calls after {settings['warmup']} warm-up call(s)",
    ]


def _model_lines(result):
    if not result["model_rows"]:
        return []
    lines = [f"detections of the full model: {key}: {value['num_detections']} of {value['max_detections']}"
             for key, value in result["detections"].items()]
    lines += ["", "prefix models (ms per image):"]
    body = [
        [row["prefix"], "yes" if row["xla"] else "no", fmt(row["median_ms"], ".1f", "FAILED"),
         fmt(row["compile_s"], ".2f")]
        for row in result["model_rows"]
    ]
    lines += render_table(["prefix", "xla", "median ms", "compile s"], body, {"median ms", "compile s"})
    lines += ["", "stages (differences of prefix medians):"]
    body = [
        [stage["stage"], "yes" if stage["xla"] else "no", fmt(stage["ms_per_image"], ".1f"),
         fmt(None if stage["share"] is None else 100 * stage["share"], ".1f")]
        for stage in result["stages"]
    ]
    lines += render_table(["stage", "xla", "ms per image", "share %"], body, {"ms per image", "share %"})
    return lines


def _roi_align_lines(result):
    if result["roi_align"] is None:
        return []
    workload, rows = result["roi_align"]["workload"], result["roi_align"]["rows"]
    sides = ", ".join(f"P{lvl} {side}x{side}" for lvl, side in zip(workload["levels"], workload["feature_sizes"]))
    lines = [
        "",
        f"kml.PyramidROIAlign forward, XLA, batch 1: {sides}, {workload['channels']} channels, "
        f"sampling_ratio {workload['sampling_ratio']}, aligned={workload['aligned']}, box sides log-uniform "
        f"{workload['box_side_px'][0]:g}-{workload['box_side_px'][1]:g} px",
    ]
    body = [
        [str(row["pool"]), str(row["rois"]), fmt(row["median_ms"], ".2f", "FAILED"),
         fmt(None if row["median_ms"] is None else 1e3 * row["median_ms"] / row["rois"], ".1f"),
         fmt(row["output_mb"], ".1f"), fmt(row["compile_s"], ".2f")]
        for row in rows
    ]
    header = ["pool", "ROIs", "median ms", "us per ROI", "output MB", "compile s"]
    lines += render_table(header, body, set(header))
    if result["plot"]:
        lines.append(f"plot: {result['plot']}")
    return lines


def format_table(result):
    """The human-readable report of a `run_benchmark` result."""
    lines = _header_lines(result) + _model_lines(result) + _roi_align_lines(result)
    lines += [
        "",
        "compile s: wall time of the first call (trace + compile + one run).",
        "stage ms: backbone+FPN = t(to FPN); RPN = t(to proposals) - t(to FPN); ROI heads = t(full) - t(to proposals).",
    ]
    lines += [f"error: {error}" for error in result["errors"]]
    return "\n".join(lines)


# --------------------------------------------------------------------------
# Command line


def _parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument(
        "--small", action="store_true",
        help="256 px input, 'small' backbone, 64 channels, 1000 -> 200 proposals, 20 detections, 25-100 ROIs",
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per configuration (default 5, small 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls after the first call")
    parser.add_argument("--no-plain", action="store_true", help="time the model with XLA only")
    parser.add_argument("--skip-model", action="store_true", help="only the ROI Align sweep")
    parser.add_argument("--skip-roi-align", action="store_true", help="only the model and its stages")
    parser.add_argument("--roi-counts", type=int, nargs="+", default=None, help="ROIs per image of the sweep")
    parser.add_argument("--pool-sizes", type=int, nargs="+", default=list(DEFAULT_POOL_SIZES))
    parser.add_argument("--output", default=None, help="JSON path (default benchmarks/results/mask_rcnn[_small].json)")
    parser.add_argument(SYSTEM_MALLOC_FLAG, action="store_true", help=SYSTEM_MALLOC_HELP)
    parser.add_argument(
        "--plot", default=None, help="PNG path (default benchmarks/results/mask_rcnn_roi_align[_small].png)"
    )
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = DEFAULT_REPEATS[args.small]
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0")
    if args.skip_model and args.skip_roi_align:
        parser.error("--skip-model and --skip-roi-align leave nothing to run")
    return args


def main(argv=None):
    args = _parse_args(argv)
    suffix = "_small" if args.small else ""
    plot = args.plot or os.path.join(RESULTS_DIR, f"mask_rcnn_roi_align{suffix}.png")
    result = run_benchmark(
        small=args.small,
        include_model=not args.skip_model,
        include_plain=not args.no_plain,
        include_roi_align=not args.skip_roi_align,
        roi_counts=args.roi_counts,
        pool_sizes=args.pool_sizes,
        repeats=args.repeats,
        warmup=args.warmup,
        plot_path=plot,
    )
    output = args.output or os.path.join(RESULTS_DIR, f"mask_rcnn{suffix}.json")
    write_json(result, output)
    print(format_table(result))
    _log(f"wrote {output}")


if __name__ == "__main__":
    use_benchmark_malloc()
    main()

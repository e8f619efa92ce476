"""Speed of `kml.ProposalLayer` against matterport's top-k, decode, clip and `tf.image.non_max_suppression`.

What is measured, side by side, on the same synthetic RPN outputs:

- `kml.ProposalLayer` under the TensorFlow backend, inside
  `tf.function(jit_compile=True)` (XLA) and, unless `--no-plain`,
  `tf.function(jit_compile=False)`;
- the same layer under the JAX backend inside `jax.jit` (a child process,
  because Keras fixes its backend once per process);
- the pipeline that matterport Mask R-CNN users run today: top-k of the
  scores, the same box decoding, clipping to the image, then
  `tf.image.non_max_suppression` image by image, in a plain `tf.function`;
- `tf.image.non_max_suppression` alone, image by image, on the decoded and
  clipped boxes of that pipeline: the reference of the issue's target
  ("at most 1.5 times the time of tf.image.non_max_suppression on the same
  decoded boxes").

The anchors are those of a `kml.AnchorGenerator` with the `"coco"` preset's
scales, ratios and strides. Scores rise with an anchor's overlap with a
few random "objects" and deltas pull it onto its object, plus noise, as a
trained RPN would: the top-k candidates crowd around the objects and NMS
has real suppression work to do. Every implementation's kept boxes are
compared with the baseline's.

Each row times a first call ("compile s": tracing, compilation and one
run), then `warmup` untimed calls, then `repeats` timed calls; the table
reports their median.

Run `python benchmarks/proposals.py --help` for the options, or import
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
    RESULTS_DIR,
    SYSTEM_MALLOC_FLAG,
    SYSTEM_MALLOC_HELP,
    Benchmark,
    Logger,
    TfAllocatorPeak,
    error_text,
    fmt,
    jax_sync,
    machine_info,
    machine_lines,
    package_versions,
    render_table,
    run_json_child,
    select_backend,
    use_benchmark_malloc,
    write_json,
)

SEED = 0
STANDARD_WORKLOAD = {
    "batch": 2,
    "image_size": 1024,
    "pre_nms_topk": 6000,
    "post_nms_topk": 1000,
    "nms_iou_threshold": 0.7,
    "objects_per_image": 20,
}
SMALL_WORKLOAD = {
    "batch": 2,
    "image_size": 256,
    "pre_nms_topk": 1000,
    "post_nms_topk": 200,
    "nms_iou_threshold": 0.7,
    "objects_per_image": 5,
}
RPN_BOX_STD = (0.1, 0.1, 0.2, 0.2)
# Synthetic objectness: logit = SLOPE * (max IoU with an object) + OFFSET + noise.
SCORE_IOU_SLOPE = 8.0
SCORE_OFFSET = -4.0
SCORE_NOISE = 0.5
DELTA_STD = 0.5  # Noise in units of RPN_BOX_STD: boxes move by about 5% of their side.
REGRESSION_FULL_IOU = 0.5  # Anchors at this IoU with an object or more are regressed onto it.
OBJECT_MIN_SIDE_PX = 32.0
DEFAULT_REPEATS = {False: 10, True: 5}
LAYER_IMPL = "kml.ProposalLayer"
BASELINE_IMPL = "matterport top-k+decode+clip+NMS"
NMS_IMPL = "tf.image.non_max_suppression"
IDENTICAL_ATOL_PX = 1e-3
MATCH_IOU = 0.999

_log = Logger("proposals")


# --------------------------------------------------------------------------
# Workload


def coco_anchor_settings():
    """Scales, ratios and strides of the `"coco"` preset (imports Keras: choose the backend first)."""
    import keras_maskrcnn_layers as kml

    config = kml.MaskRCNNConfig.preset("coco")
    return {
        "scales": list(config.RPN_ANCHOR_SCALES),
        "ratios": list(config.RPN_ANCHOR_RATIOS),
        "strides": list(config.BACKBONE_STRIDES),
        "anchor_stride": config.RPN_ANCHOR_STRIDE,
    }


def workload_spec(small, anchor_settings):
    spec = dict(SMALL_WORKLOAD if small else STANDARD_WORKLOAD)
    spec.update(
        name="small" if small else "standard",
        anchors=anchor_settings,
        box_std=list(RPN_BOX_STD),
        score_model=f"sigmoid({SCORE_IOU_SLOPE:g} * max IoU with an object {SCORE_OFFSET:+g} + N(0, {SCORE_NOISE:g}))",
        delta_std=DELTA_STD,
        dtype="float32",
        seed=SEED,
    )
    return spec


def make_anchors(workload):
    """`[A, 4]` yxyx pixel anchors from `kml.AnchorGenerator`, as NumPy."""
    import keras_maskrcnn_layers as kml

    settings = workload["anchors"]
    generator = kml.AnchorGenerator(
        scales=tuple(settings["scales"]),
        ratios=tuple(settings["ratios"]),
        strides=tuple(settings["strides"]),
        anchor_stride=settings["anchor_stride"],
    )
    return generator.anchors_numpy((workload["image_size"], workload["image_size"]))


def pairwise_iou(boxes1, boxes2):
    """IoU `[N, M]` of yxyx boxes `[N, 4]` and `[M, 4]`, in float64 NumPy; 0 where both are empty."""
    a = np.asarray(boxes1, np.float64)[:, None, :]
    b = np.asarray(boxes2, np.float64)[None, :, :]
    inter_h = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    inter_w = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = inter_h * inter_w
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def make_objects(rng, workload):
    """`[G, 4]` random object boxes inside the image, sides log-uniform from 32 px to half the image."""
    size = workload["image_size"]
    count = workload["objects_per_image"]
    log_min, log_max = math.log(OBJECT_MIN_SIDE_PX), math.log(size / 2)
    heights = np.exp(rng.uniform(log_min, log_max, count))
    widths = np.exp(rng.uniform(log_min, log_max, count))
    y1 = rng.uniform(0, size - heights)
    x1 = rng.uniform(0, size - widths)
    return np.stack([y1, x1, y1 + heights, x1 + widths], axis=-1)


def _target_deltas(anchors, targets, box_std):
    """`kml.ops.encode_boxes` in NumPy: the deltas `[N, 4]` that move `anchors [N, 4]` onto `targets [N, 4]`."""
    anchors, targets = anchors.astype(np.float64), targets.astype(np.float64)
    ah, aw = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    th, tw = targets[:, 2] - targets[:, 0], targets[:, 3] - targets[:, 1]
    dy = (targets[:, 0] + 0.5 * th - anchors[:, 0] - 0.5 * ah) / ah
    dx = (targets[:, 1] + 0.5 * tw - anchors[:, 1] - 0.5 * aw) / aw
    return np.stack([dy, dx, np.log(th / ah), np.log(tw / aw)], axis=-1) / np.asarray(box_std)


def make_rpn_outputs(workload, anchors):
    """Seeded synthetic RPN outputs: scores `[B, A]` in (0, 1) and deltas `[B, A, 4]`, float32.

    Random scores would spread the top-k over the image and NMS would keep
    nearly everything. A trained RPN scores anchors on objects highly and
    regresses them onto the object, so its top-k crowds into tight clusters
    that NMS has to thin out. Here, per image, a few random boxes play the
    objects: an anchor's logit rises with its best IoU with them (plus
    noise), and its deltas move it towards that object in proportion to the
    IoU (all the way from IoU 0.5 up), plus small noise.
    """
    rng = np.random.default_rng(workload["seed"])
    scores, deltas = [], []
    for _ in range(workload["batch"]):
        objects = make_objects(rng, workload)
        iou = pairwise_iou(anchors, objects)
        best = iou.argmax(axis=1)
        best_iou = iou[np.arange(len(best)), best]
        logits = SCORE_IOU_SLOPE * best_iou + SCORE_OFFSET + rng.normal(0.0, SCORE_NOISE, best_iou.shape)
        scores.append(1.0 / (1.0 + np.exp(-logits)))
        target = _target_deltas(anchors, objects[best], workload["box_std"])
        pull = np.clip(best_iou / REGRESSION_FULL_IOU, 0.0, 1.0)[:, None]
        deltas.append(pull * target + rng.normal(0.0, DELTA_STD, (anchors.shape[0], 4)))
    return np.stack(scores).astype(np.float32), np.stack(deltas).astype(np.float32)


# --------------------------------------------------------------------------
# Agreement of kept boxes


def compare_kept(boxes, count, reference, reference_count):
    """How far one image's kept boxes agree with the baseline's.

    Args:
        boxes: `[K, 4]` kept boxes, in order; only the first `count` count.
        count: int, boxes kept.
        reference: `[K', 4]` the baseline's kept boxes, in order.
        reference_count: int, boxes the baseline kept.

    Returns:
        dict: `kept`, `baseline_kept`, `identical` (same box at the same
        rank within 1e-3 px), `first_difference` (rank of the first that is
        not, or None), `matched` (boxes with an IoU of at least 0.999 with
        some baseline box, in any order) and `ok` (same count, all matched).
    """
    boxes, reference = np.asarray(boxes)[:count], np.asarray(reference)[:reference_count]
    shared = min(count, reference_count)
    same = np.all(np.abs(boxes[:shared] - reference[:shared]) <= IDENTICAL_ATOL_PX, axis=-1)
    differing = np.flatnonzero(~same)
    matched = 0
    if count and reference_count:
        matched = int(np.count_nonzero(pairwise_iou(boxes, reference).max(axis=1) >= MATCH_IOU))
    return {
        "kept": int(count),
        "baseline_kept": int(reference_count),
        "identical": int(np.count_nonzero(same)),
        "first_difference": int(differing[0]) if differing.size else (None if count == reference_count else shared),
        "matched": matched,
        "ok": bool(count == reference_count and matched == count),
    }


def _agreement(name, proposals, scores, baseline):
    """Per-image `compare_kept` of a layer's output (valid rows have score > 0) with the baseline."""
    proposals, scores = np.asarray(proposals), np.asarray(scores)
    images = []
    for image in range(proposals.shape[0]):
        count = int(np.count_nonzero(scores[image] > 0))
        images.append(
            compare_kept(proposals[image], count, baseline["proposals"][image], int(baseline["counts"][image]))
        )
    check = {"images": images, "ok": all(image["ok"] for image in images)}
    _log(f"agreement {name}: {_agreement_text(check)}")
    return check


def _agreement_text(check):
    if "error" in check:
        return f"could not run ({check['error']})"
    parts = [
        f"image {i}: kept {c['kept']} vs {c['baseline_kept']}, {c['identical']} identical at the same rank, "
        f"{c['matched']} matched at IoU >= {MATCH_IOU}"
        for i, c in enumerate(check["images"])
    ]
    return "; ".join(parts) + ("; ok" if check["ok"] else "; DIFFERS")


# --------------------------------------------------------------------------
# TensorFlow: the baseline, NMS alone and the layer


def _decode_matterport(anchors, deltas):
    """matterport's `apply_box_deltas_graph`: deltas already multiplied by the std."""
    import tensorflow as tf

    height = anchors[..., 2] - anchors[..., 0]
    width = anchors[..., 3] - anchors[..., 1]
    center_y = anchors[..., 0] + 0.5 * height + deltas[..., 0] * height
    center_x = anchors[..., 1] + 0.5 * width + deltas[..., 1] * width
    height = height * tf.exp(deltas[..., 2])
    width = width * tf.exp(deltas[..., 3])
    return tf.stack(
        [center_y - 0.5 * height, center_x - 0.5 * width, center_y + 0.5 * height, center_x + 0.5 * width], axis=-1
    )


def matterport_style_proposals(scores, deltas, anchors, workload):
    """matterport's `ProposalLayer`, in pixels rather than normalised coordinates.

    Top-k of the scores, the same decoding as `kml.ops.decode_boxes`,
    clipping to the image, then one `tf.image.non_max_suppression` per image
    (matterport's `batch_slice` is the same Python loop over the images);
    kept boxes are zero-padded to `post_nms_topk`. Pixels instead of
    `[0, 1]` coordinates make the boxes directly comparable with the
    layer's; IoU, hence NMS, does not depend on the unit.

    Args:
        scores: float32 `[B, A]`.
        deltas: float32 `[B, A, 4]`, `(dy, dx, dh, dw)` before the std.
        anchors: float32 `[A, 4]`, yxyx pixels.
        workload: dict from `workload_spec`.

    Returns:
        Tuple `(proposals [B, post, 4], counts [B], boxes [B, pre, 4],
        top_scores [B, pre])`: the last two are NMS's inputs.
    """
    import tensorflow as tf

    size = float(workload["image_size"])
    k = min(workload["pre_nms_topk"], scores.shape[1])
    top_scores, index = tf.math.top_k(scores, k=k, sorted=True)
    deltas = tf.gather(deltas, index, batch_dims=1) * tf.constant(workload["box_std"], tf.float32)
    boxes = _decode_matterport(tf.gather(anchors, index), deltas)
    boxes = tf.clip_by_value(boxes, 0.0, size)
    proposals, counts = _nms_per_image(boxes, top_scores, workload)
    return proposals, counts, boxes, top_scores


def _nms_per_image(boxes, scores, workload):
    """`tf.image.non_max_suppression` on each image, kept boxes zero-padded to `post_nms_topk`."""
    import tensorflow as tf

    post = workload["post_nms_topk"]
    proposals, counts = [], []
    for image in range(boxes.shape[0]):
        kept = tf.image.non_max_suppression(boxes[image], scores[image], post, workload["nms_iou_threshold"])
        picked = tf.gather(boxes[image], kept)
        proposals.append(tf.pad(picked, [(0, post - tf.shape(picked)[0]), (0, 0)]))
        counts.append(tf.shape(kept)[0])
    return tf.stack(proposals), tf.stack(counts)


def _scanned(boxes, scores, workload):
    """Per image, 1 + the rank of the last kept candidate: how far down the list greedy NMS had to go."""
    import tensorflow as tf

    scanned = []
    for image in range(boxes.shape[0]):
        kept = tf.image.non_max_suppression(
            boxes[image], scores[image], workload["post_nms_topk"], workload["nms_iou_threshold"]
        )
        scanned.append(int(tf.reduce_max(kept)) + 1 if kept.shape[0] else 0)
    return scanned


def _row(impl, backend, xla):
    return {
        "impl": impl,
        "backend": backend,
        "xla": xla,
        "median_ms": None,
        "min_ms": None,
        "max_ms": None,
        "times_ms": [],
        "compile_s": None,
        "peak_extra_mb": None,
        "rss_samples": 0,
        "allocator_peak_extra_mb": None,
        "ratio_to_nms": None,
        "ratio_to_baseline": None,
        "error": None,
    }


def _describe(row):
    return f"{row['impl']} [{row['backend']}, xla={row['xla']}]"


def _run_row(row, bench, warmup, repeats):
    """Fills `row` with the timings of `bench`; a failing configuration is recorded, not fatal."""
    _log(f"timing {_describe(row)}")
    try:
        row.update(bench.measure(warmup, repeats))
    except Exception as error:  # A backend error in one row must not lose the others.
        row["error"] = error_text(error)
        _log(f"FAILED {_describe(row)}: {row['error']}")
        return row
    _log(f"  median {row['median_ms']:.1f} ms, first call {row['compile_s']:.2f} s")
    return row


def _layer(workload):
    import keras_maskrcnn_layers as kml

    return kml.ProposalLayer(
        pre_nms_topk=workload["pre_nms_topk"],
        post_nms_topk=workload["post_nms_topk"],
        nms_iou_threshold=workload["nms_iou_threshold"],
        box_std=tuple(workload["box_std"]),
    )


def _first_output(bench, row, checks, name, baseline):
    """First call of a layer row, its agreement with the baseline recorded in `checks`."""
    try:
        proposals, scores = bench.first_call()
    except Exception as error:  # The timing pass records the failure in the row.
        checks[name] = {"ok": False, "error": error_text(error)}
        _log(f"first call failed for {_describe(row)}: {error_text(error)}")
        return
    checks[name] = _agreement(name, proposals, scores, baseline)


def _tensorflow_rows(workload, include_plain, warmup, repeats):
    import tensorflow as tf

    anchors = make_anchors(workload)
    scores, deltas = make_rpn_outputs(workload, anchors)
    inputs = (tf.constant(scores), tf.constant(deltas), tf.constant(anchors))
    rows, checks = [], {}

    baseline_step = tf.function(lambda s, d, a: matterport_style_proposals(s, d, a, workload), jit_compile=False)
    baseline_bench = Benchmark(lambda: baseline_step(*inputs), allocator_stats=TfAllocatorPeak)
    proposals, counts, boxes, top_scores = baseline_bench.first_call()
    baseline = {
        "proposals": proposals.numpy(),
        "counts": counts.numpy(),
        "scanned": _scanned(boxes, top_scores, workload),
    }
    _log(
        f"baseline kept {baseline['counts'].tolist()} boxes per image, the last of them at candidate "
        f"{baseline['scanned']} of {workload['pre_nms_topk']}"
    )

    nms_step = tf.function(lambda b, s: _nms_per_image(b, s, workload), jit_compile=False)
    nms_bench = Benchmark(lambda: nms_step(boxes, top_scores), allocator_stats=TfAllocatorPeak)
    rows.append(_run_row(_row(NMS_IMPL, "tensorflow", False), nms_bench, warmup, repeats))
    rows.append(_run_row(_row(BASELINE_IMPL, "tensorflow", False), baseline_bench, warmup, repeats))

    layer = _layer(workload)
    image_shape = (workload["image_size"], workload["image_size"])
    for xla in (True, False) if include_plain else (True,):
        step = tf.function(lambda s, d, a: layer(s, d, a, image_shape=image_shape), jit_compile=xla)
        bench = Benchmark(lambda step=step: step(*inputs), allocator_stats=TfAllocatorPeak)
        row = _row(LAYER_IMPL, "tensorflow", xla)
        _first_output(bench, row, checks, f"tf xla={xla} vs baseline", baseline)
        rows.append(_run_row(row, bench, warmup, repeats))
    return rows, checks, baseline


# --------------------------------------------------------------------------
# JAX (run in a child process with the JAX backend)


def _jax_rows(workload, warmup, repeats):
    """The layer under `jax.jit`; returns its row and its first output as lists for the parent."""
    import jax
    import jax.numpy as jnp

    anchors = make_anchors(workload)
    scores, deltas = make_rpn_outputs(workload, anchors)
    inputs = (jnp.asarray(scores), jnp.asarray(deltas), jnp.asarray(anchors))
    layer = _layer(workload)
    image_shape = (workload["image_size"], workload["image_size"])
    step = jax.jit(lambda s, d, a: layer(s, d, a, image_shape=image_shape))
    bench = Benchmark(lambda: step(*inputs), sync=jax_sync)
    row = _row(LAYER_IMPL, "jax", True)
    output = None
    try:
        proposals, kept_scores = bench.first_call()
        output = {"proposals": np.asarray(proposals).tolist(), "scores": np.asarray(kept_scores).tolist()}
    except Exception as error:  # The timing pass records the failure in the row.
        _log(f"first call failed for {_describe(row)}: {error_text(error)}")
    return [_run_row(row, bench, warmup, repeats)], output


def _child_command(small, warmup, repeats):
    command = [sys.executable, os.path.abspath(__file__), "--backend", "jax"]
    command += ["--warmup", str(warmup), "--repeats", str(repeats)]
    if small:
        command.append("--small")
    return command


def _merge_jax(result, child, baseline):
    if "error" in child:
        result["errors"].append(child["error"])
        return
    result["rows"] += child["rows"]
    result["versions_jax_process"] = child["versions"]
    if child["output"] is not None:
        output = child["output"]
        result["agreement"]["jax jit vs baseline"] = _agreement(
            "jax jit vs baseline", output["proposals"], output["scores"], baseline
        )


# --------------------------------------------------------------------------
# Report


def _add_ratios(rows):
    reference = {row["impl"]: row["median_ms"] for row in rows if row["impl"] in (NMS_IMPL, BASELINE_IMPL)}
    for row in rows:
        if row["median_ms"] is None:
            continue
        if reference.get(NMS_IMPL):
            row["ratio_to_nms"] = row["median_ms"] / reference[NMS_IMPL]
        if reference.get(BASELINE_IMPL):
            row["ratio_to_baseline"] = row["median_ms"] / reference[BASELINE_IMPL]


def run_benchmark(small=False, repeats=None, warmup=1, include_jax=True, include_plain=True, workload=None):
    """Runs the TensorFlow rows here and, if asked, the JAX row in a child process.

    Keras must not have been imported with a backend other than TensorFlow.

    Args:
        small: bool. The small workload (256 px image, top 1000 -> 200).
        repeats: int. Timed calls per row; defaults to 10 (5 with `small`).
        warmup: int. Untimed calls between the first call and the timed ones.
        include_jax: bool. Also time the layer under JAX in a child process.
        include_plain: bool. Also time the layer without XLA.
        workload: optional dict from `workload_spec` with entries changed
            (tests shrink it); not passed to the JAX child, so it needs
            `include_jax=False`.

    Returns:
        The JSON-ready result: `rows`, `machine`, `versions`, `workload`,
        `settings`, `agreement` (kept boxes against the baseline's) and
        `errors`.
    """
    select_backend("tensorflow")
    if workload is not None and include_jax:
        raise ValueError("A custom `workload` is not passed to the JAX child: use include_jax=False.")
    repeats = DEFAULT_REPEATS[bool(small)] if repeats is None else repeats
    workload = workload or workload_spec(small, coco_anchor_settings())
    workload["num_anchors"] = int(make_anchors(workload).shape[0])
    child = _run_jax_child(small, warmup, repeats) if include_jax else None
    rows, agreement, baseline = _tensorflow_rows(workload, include_plain, warmup, repeats)
    result = {
        "machine": machine_info(),
        "versions": package_versions(),
        "workload": workload,
        "settings": {"repeats": repeats, "warmup": warmup, "include_jax": include_jax, "include_plain": include_plain},
        "baseline_kept": baseline["counts"].tolist(),
        "baseline_last_kept_rank": baseline["scanned"],
        "rows": rows,
        "agreement": agreement,
        "errors": [],
    }
    if child is not None:
        _merge_jax(result, child, baseline)
    result["errors"] += [f"{_describe(row)}: {row['error']}" for row in result["rows"] if row["error"]]
    _add_ratios(result["rows"])
    return result


def _run_jax_child(small, warmup, repeats):
    """Runs the JAX row in a fresh process and returns its JSON, or an error dict."""
    return run_json_child(_child_command(small, warmup, repeats), _log, prefix="proposals_bench_")


def _sort_key(row):
    order = {NMS_IMPL: 0, BASELINE_IMPL: 1, LAYER_IMPL: 2}
    return (order.get(row["impl"], 3), row["backend"] == "jax", not row["xla"])


def _table_cells(row):
    failed = "FAILED" if row["error"] else "-"
    return [
        row["impl"],
        row["backend"],
        "jit" if row["backend"] == "jax" else ("yes" if row["xla"] else "no"),
        fmt(row["median_ms"], ".1f", failed),
        fmt(row["ratio_to_nms"], ".2f"),
        fmt(row["ratio_to_baseline"], ".2f"),
        fmt(row["compile_s"], ".2f"),
    ]


TABLE_HEADER = ["impl", "backend", "xla", "median ms", "x NMS alone", "x baseline", "compile s"]
RIGHT_ALIGNED = {"median ms", "x NMS alone", "x baseline", "compile s"}


def _header_lines(result):
    workload, settings, anchors = result["workload"], result["settings"], result["workload"]["anchors"]
    return machine_lines(result["machine"], result["versions"]) + [
        f"workload ({workload['name']}): batch {workload['batch']}, {workload['image_size']}x{workload['image_size']} "
        f"image, {workload['num_anchors']} anchors (scales {anchors['scales']}, ratios {anchors['ratios']}, "
        f"strides {anchors['strides']}), top {workload['pre_nms_topk']} -> NMS at IoU "
        f"{workload['nms_iou_threshold']:g} -> at most {workload['post_nms_topk']}",
        f"scores: {workload['score_model']} around {workload['objects_per_image']} random objects per image; "
        f"deltas pull towards them, noise N(0, {workload['delta_std']:g}); seed {workload['seed']}",
        f"baseline NMS kept {result['baseline_kept']} boxes per image, the last at candidate "
        f"{result['baseline_last_kept_rank']} of {workload['pre_nms_topk']}",
        f"timing: median of {settings['repeats']} calls after {settings['warmup']} warm-up call(s)",
    ]


def format_table(result):
    """The human-readable report of a `run_benchmark` result."""
    lines = _header_lines(result)
    lines += [f"agreement {name}: {_agreement_text(check)}" for name, check in result["agreement"].items()]
    lines.append("")
    rows = sorted(result["rows"], key=_sort_key)
    lines += render_table(TABLE_HEADER, [_table_cells(row) for row in rows], RIGHT_ALIGNED)
    lines += [
        "",
        f"x NMS alone: median / median of {NMS_IMPL} on the baseline's decoded boxes (issue target: <= 1.5).",
        "x baseline: median / median of the whole matterport pipeline (top-k, decode, clip, NMS).",
        "compile s: wall time of the first call (trace + compile + one run).",
        f"agreement: kept boxes against the baseline's; identical = same box at the same rank within "
        f"{IDENTICAL_ATOL_PX:g} px.",
    ]
    lines += [f"error: {error}" for error in result["errors"]]
    return "\n".join(lines)


# --------------------------------------------------------------------------
# Command line


def _parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument(
        "--small", action="store_true", help="256 px image (16,368 anchors), top 1000 -> 200 proposals"
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per row (default 10, small 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls after the first call")
    parser.add_argument("--no-jax", action="store_true", help="skip the JAX child process")
    parser.add_argument("--no-plain", action="store_true", help="skip kml.ProposalLayer without XLA")
    parser.add_argument("--output", default=None, help="JSON path (default benchmarks/results/proposals[_small].json)")
    parser.add_argument(SYSTEM_MALLOC_FLAG, action="store_true", help=SYSTEM_MALLOC_HELP)
    parser.add_argument("--backend", choices=("tensorflow", "jax"), default="tensorflow", help=argparse.SUPPRESS)
    parser.add_argument("--child-json", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = DEFAULT_REPEATS[args.small]
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0")
    if (args.backend == "jax") != (args.child_json is not None):
        parser.error("--backend jax and --child-json go together (the JAX row runs in a child process)")
    return args


def _child_main(args):
    """The JAX half: writes its row and kept boxes to `--child-json` for the parent to merge."""
    select_backend("jax")
    _log.name = "proposals jax child"
    workload = workload_spec(args.small, coco_anchor_settings())
    rows, output = _jax_rows(workload, args.warmup, args.repeats)
    with open(args.child_json, "w") as handle:
        json.dump({"rows": rows, "output": output, "versions": package_versions()}, handle)


def main(argv=None):
    args = _parse_args(argv)
    if args.child_json is not None:
        _child_main(args)
        return
    result = run_benchmark(
        small=args.small,
        repeats=args.repeats,
        warmup=args.warmup,
        include_jax=not args.no_jax,
        include_plain=not args.no_plain,
    )
    output = args.output or os.path.join(RESULTS_DIR, "proposals_small.json" if args.small else "proposals.json")
    write_json(result, output)
    print(format_table(result))
    _log(f"wrote {output}")


if __name__ == "__main__":
    use_benchmark_malloc()
    main()

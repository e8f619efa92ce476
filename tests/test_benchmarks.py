"""Smoke tests of the benchmark scripts on tiny workloads: they run, report and agree; no timing is asserted."""

import importlib
import json
import os
import platform
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_maskrcnn_layers as kml
from benchmarks import _common, mask_rcnn, proposals, roi_align
from tests import backend_utils

tensorflow_only = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="the benchmarks time the TensorFlow backend in this process"
)
glibc_only = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="the benchmark malloc settings are glibc's"
)


def tiny_mask_rcnn_config():
    """The benchmark's "coco" config shrunk to a 64 px model that compiles in seconds."""
    return mask_rcnn.model_config(
        small=True,
        IMAGE_MIN_DIM=64,
        IMAGE_MAX_DIM=64,
        TOP_DOWN_PYRAMID_SIZE=16,
        FPN_CLASSIF_FC_LAYERS_SIZE=32,
        MASK_HEAD_CONVS=1,
        PRE_NMS_LIMIT=200,
        POST_NMS_ROIS_TRAINING=100,
        POST_NMS_ROIS_INFERENCE=30,
        TRAIN_ROIS_PER_IMAGE=32,
        DETECTION_MAX_INSTANCES=6,
        RPN_ANCHOR_SCALES=(8, 16, 24, 32, 48),
        NUM_CLASSES=3,
    )


def test_render_table_aligns_named_columns():
    lines = _common.render_table(["name", "ms"], [["a", "1.0"], ["long", "10.0"]], {"ms"})
    assert lines == ["name |   ms", "-----+-----", "a    |  1.0", "long | 10.0"]


def test_machine_and_versions_are_json_ready():
    info = {"machine": _common.machine_info(), "versions": _common.package_versions(extra=("matplotlib",))}
    assert info["machine"]["cpu_count"] >= 1
    assert info["versions"]["keras"] == keras.__version__
    assert "matplotlib" in info["versions"]
    json.dumps(info)


@glibc_only
def test_benchmark_malloc_restart_only_when_needed():
    argv = ["benchmarks/roi_align.py", "--small"]
    command, environ = _common.benchmark_malloc_restart(argv, {"PATH": "/bin"})
    assert command == [sys.executable, *argv]
    assert environ == {"PATH": "/bin", **_common.BENCHMARK_MALLOC_ENV, "KML_BENCHMARK_MALLOC_RESTARTED": "1"}
    # Already restarted (or a child that inherited them): no second restart.
    assert _common.benchmark_malloc_restart(argv, environ) is None
    # Asked for the system's settings: no restart, even with a partial environment.
    partial = {"MALLOC_ARENA_MAX": "1"}
    assert _common.benchmark_malloc_restart([*argv, _common.SYSTEM_MALLOC_FLAG], partial) is None
    assert _common.benchmark_malloc_restart(argv, partial) is not None
    # A restarted process whose settings were overridden (a wrapper) carries on instead of looping.
    assert _common.benchmark_malloc_restart(argv, {**partial, "KML_BENCHMARK_MALLOC_RESTARTED": "1"}) is None
    # The interpreter's own options survive the restart.
    command, _ = _common.benchmark_malloc_restart(argv, {}, interpreter_argv=["python", "-X", "dev", *argv])
    assert command == [sys.executable, "-X", "dev", *argv]


@pytest.mark.parametrize("settings, flagged", [(_common.BENCHMARK_MALLOC_ENV, False), ({}, True)])
def test_json_child_runs_under_its_parents_malloc_settings(monkeypatch, settings, flagged):
    for name in _common.BENCHMARK_MALLOC_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    calls = []

    def fake_run(command, env, **kwargs):
        calls.append((command, env))
        with open(command[-1], "w") as handle:
            json.dump({"rows": []}, handle)
        return subprocess.CompletedProcess(command, 0, stdout="")

    monkeypatch.setattr(_common.subprocess, "run", fake_run)
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    assert _common.run_json_child(["python", "child.py"], lambda message: None, prefix="test_") == {"rows": []}
    assert _common.run_json_child(
        ["python", "child.py"], lambda message: None, prefix="test_", label="torchvision", keras_backend=None
    ) == {"rows": []}
    (jax_command, jax_env), (torch_command, torch_env) = calls
    assert (_common.SYSTEM_MALLOC_FLAG in jax_command) == flagged
    assert (_common.SYSTEM_MALLOC_FLAG in torch_command) == flagged
    assert jax_env["KERAS_BACKEND"] == "jax"
    # A child of another framework keeps the parent's backend setting.
    assert torch_env["KERAS_BACKEND"] == "tensorflow"


def test_failed_json_child_names_itself(monkeypatch):
    monkeypatch.setattr(
        _common.subprocess, "run", lambda command, env, **kwargs: subprocess.CompletedProcess(command, 3, stdout="")
    )
    result = _common.run_json_child(["python", "child.py"], lambda message: None, prefix="test_", label="torchvision")
    assert result == {"error": "torchvision child process exited with code 3"}


@glibc_only
@pytest.mark.parametrize("flag, expected", [([], _common.BENCHMARK_MALLOC_ENV), ([_common.SYSTEM_MALLOC_FLAG], {})])
def test_use_benchmark_malloc_restarts_the_script(tmp_path, flag, expected):
    script = tmp_path / "script.py"
    script.write_text(
        "import json, sys\n"
        f"sys.path.insert(0, {os.path.dirname(os.path.dirname(os.path.abspath(__file__)))!r})\n"
        "from benchmarks import _common\n"
        "print('start', flush=True)\n"
        "_common.use_benchmark_malloc()\n"
        "print(json.dumps(_common.malloc_settings()))\n"
    )
    environ = {k: v for k, v in os.environ.items() if k not in _common.BENCHMARK_MALLOC_ENV}
    completed = subprocess.run(
        [sys.executable, str(script), *flag], env=environ, capture_output=True, text=True, check=True
    )
    lines = completed.stdout.splitlines()
    # One start line per process: two when the script restarted itself.
    assert lines.count("start") == (2 if expected else 1)
    assert json.loads(lines[-1]) == expected


def test_machine_lines_name_the_malloc_settings():
    machine = {**_common.machine_info(), "malloc": {"MALLOC_ARENA_MAX": "1"}}
    assert _common.machine_lines(machine, {})[-1] == "malloc: MALLOC_ARENA_MAX=1"
    assert _common.machine_lines({**machine, "malloc": {}}, {})[-1] == "malloc: system defaults"


def test_compare_kept_counts_identical_and_matched_boxes():
    reference = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], "float32")
    swapped = reference[[0, 2, 1]]
    check = proposals.compare_kept(swapped, 3, reference, 3)
    assert (check["identical"], check["first_difference"], check["matched"], check["ok"]) == (1, 1, 3, True)
    check = proposals.compare_kept(reference, 2, reference, 3)
    assert (check["identical"], check["first_difference"], check["matched"], check["ok"]) == (2, 2, 2, False)


@pytest.mark.parametrize(
    "module, argv",
    [
        (proposals, ["--repeats", "0"]),
        (proposals, ["--backend", "jax"]),
        (roi_align, ["--backend", "torch"]),
        (roi_align, ["--child-json", "out.json"]),
        (mask_rcnn, ["--skip-model", "--skip-roi-align"]),
        (mask_rcnn, ["--warmup", "-1"]),
    ],
)
def test_command_lines_reject_bad_arguments(module, argv):
    with pytest.raises(SystemExit):
        module._parse_args(argv)


@tensorflow_only
def test_proposals_benchmark_runs_and_agrees_with_the_baseline():
    workload = proposals.workload_spec(small=True, anchor_settings=proposals.coco_anchor_settings())
    workload.update(image_size=128, pre_nms_topk=300, post_nms_topk=50, objects_per_image=3)
    result = proposals.run_benchmark(workload=workload, include_jax=False, repeats=1, warmup=0)
    assert not result["errors"]
    impls = sorted((row["impl"], row["xla"]) for row in result["rows"])
    assert impls == sorted(
        [(proposals.NMS_IMPL, False), (proposals.BASELINE_IMPL, False),
         (proposals.LAYER_IMPL, True), (proposals.LAYER_IMPL, False)]
    )
    assert all(row["ratio_to_nms"] is not None for row in result["rows"])
    assert set(result["agreement"]) == {"tf xla=True vs baseline", "tf xla=False vs baseline"}
    assert all(check["ok"] for check in result["agreement"].values()), result["agreement"]
    assert "x NMS alone" in proposals.format_table(result)
    json.dumps(result)


def test_proposals_synthetic_rpn_outputs_crowd_around_objects():
    workload = proposals.workload_spec(small=True, anchor_settings=proposals.coco_anchor_settings())
    anchors = proposals.make_anchors(workload)
    scores, deltas = proposals.make_rpn_outputs(workload, anchors)
    assert scores.shape == (2, anchors.shape[0]) and deltas.shape == (2, anchors.shape[0], 4)
    assert np.all((scores > 0) & (scores < 1))
    # The best candidates decode onto the objects: many overlap the best one beyond NMS's threshold.
    top = np.argsort(-scores[0])[:100]
    boxes = keras.ops.convert_to_numpy(kml.ops.decode_boxes(deltas[0, top], anchors[top], workload["box_std"]))
    assert np.count_nonzero(proposals.pairwise_iou(boxes[:1], boxes)[0] > workload["nms_iou_threshold"]) > 5


def test_mask_rcnn_stages_are_differences_of_prefix_times():
    medians = {("to FPN", True): 10.0, ("to proposals", True): 14.0, ("full", True): 20.0, ("to FPN", False): 12.0}
    rows = [{"prefix": prefix, "xla": xla, "median_ms": ms} for (prefix, xla), ms in medians.items()]
    stages = {(s["stage"], s["xla"]): (s["ms_per_image"], s["share"]) for s in mask_rcnn.stage_rows(rows)}
    names = [name for name, _, _ in mask_rcnn.STAGES] + [mask_rcnn.FULL_STAGE]
    assert [stages[(name, True)] for name in names] == [(10.0, 0.5), (4.0, 0.2), (6.0, 0.3), (20.0, 1.0)]
    # Without the full model's time, the plain rows have times where they can but no shares.
    assert [stages[(name, False)] for name in names] == [(12.0, None), (None, None), (None, None), (None, None)]


@tensorflow_only
def test_mask_rcnn_benchmark_runs_and_plots(tmp_path):
    config = tiny_mask_rcnn_config()
    plot = tmp_path / "roi_align.png"
    result = mask_rcnn.run_benchmark(
        config=config, include_plain=False, roi_counts=(4, 8), pool_sizes=(7,), repeats=1, warmup=0,
        plot_path=str(plot),
    )
    assert not result["errors"]
    assert [(row["prefix"], row["xla"]) for row in result["model_rows"]] == [
        ("to FPN", True), ("to proposals", True), ("full", True)
    ]
    shares = [s["share"] for s in result["stages"] if s["stage"] != mask_rcnn.FULL_STAGE]
    assert len(shares) == 3 and sum(shares) == pytest.approx(1.0)
    # The biased classifier fills every detection slot, so the mask branch pools real boxes.
    assert result["detections"]["xla=True"]["num_detections"] == config.DETECTION_MAX_INSTANCES
    assert [(row["pool"], row["rois"]) for row in result["roi_align"]["rows"]] == [(7, 4), (7, 8)]
    assert plot.exists() and plot.stat().st_size > 0
    text = mask_rcnn.format_table(result)
    assert "ROI heads" in text and "us per ROI" in text
    json.dumps(result)


@tensorflow_only
def test_roi_align_benchmark_still_runs_after_the_shared_helpers_moved():
    result = roi_align.run_benchmark(
        small=True, pool_sizes=(7,), sampling_ratios=(2,), include_jax=False, include_backward=False,
        include_torch=False, repeats=1, warmup=0,
    )
    assert not result["errors"]
    assert all(check["ok"] for check in result["sanity"].values())
    # The layer reading a table flattened once gives what it gives on the maps.
    assert any(key.startswith("flat table (tensorflow)") for key in result["sanity"])
    impls = {row["impl"] for row in result["rows"]}
    assert {roi_align.FLAT_IMPL, roi_align.FLATTEN_IMPL} <= impls
    text = roi_align.format_table(result)
    assert "x baseline time" in text and "feature MB read" in text
    assert {row["impl"] for row in result["traffic"]} == {
        roi_align.BASELINE_IMPL, roi_align.LAYER_IMPL, roi_align.FLAT_IMPL
    }


def test_torchvision_ratios_and_rows_in_the_table():
    workload = roi_align.workload_spec(small=True)

    def row(impl, backend, xla, sampling_ratio, pass_name, ms):
        return {**roi_align._row(impl, backend, xla, sampling_ratio, 7, pass_name, workload), "median_ms": ms}

    fwd, bwd = roi_align.FORWARD, roi_align.BACKWARD
    rows = [
        row(roi_align.BASELINE_IMPL, "tensorflow", False, None, fwd, 10.0),
        row(roi_align.TORCH_IMPL, "torch (cpu)", False, 2, fwd, 20.0),
        row(roi_align.TORCH_IMPL, "torch (cpu)", False, 2, bwd, 80.0),
        row(roi_align.LAYER_IMPL, "tensorflow", True, 2, fwd, 15.0),
        row(roi_align.FLAT_IMPL, "jax", True, 2, bwd, 60.0),
        # No torchvision row at sampling_ratio 1: no ratio.
        row(roi_align.LAYER_IMPL, "tensorflow", True, 1, fwd, 5.0),
        row(roi_align.FLATTEN_IMPL, "tensorflow", True, None, fwd, 4.0),
    ]
    roi_align._add_ratios(rows)
    assert [r["ratio_to_torchvision"] for r in rows] == [None, None, None, 0.75, 0.75, None, None]
    # Every forward row is against the baseline's forward; no baseline fwd+bwd here, so no ratio.
    assert [r["ratio_to_baseline"] for r in rows] == [1.0, 2.0, None, 1.5, None, 0.5, 0.4]
    ordered = sorted(rows, key=roi_align._sort_key)
    # torchvision's forward comes right after the baseline's.
    assert [r["impl"] for r in ordered[:2]] == [roi_align.BASELINE_IMPL, roi_align.TORCH_IMPL]
    result = {
        "machine": _common.machine_info(), "versions": {}, "workload": workload,
        "settings": {"repeats": 1, "warmup": 0}, "rows": rows, "sanity": {}, "notes": ["a note"], "errors": [],
    }
    text = roi_align.format_table(result)
    assert "x torchvision" in text and "torch (cpu)" in text and "note: a note" in text


@tensorflow_only
def test_roi_align_benchmark_says_when_torchvision_is_missing(monkeypatch):
    monkeypatch.setattr(roi_align, "torchvision_installed", lambda: False)
    real_run_child = roi_align._run_child

    def run_child(backend, *args):
        assert backend != "torch", "no torchvision child expected"
        return real_run_child(backend, *args)

    monkeypatch.setattr(roi_align, "_run_child", run_child)
    result = roi_align.run_benchmark(
        small=True, pool_sizes=(7,), sampling_ratios=(1,), include_jax=False, include_backward=False,
        repeats=1, warmup=0,
    )
    assert result["notes"] == ["no torchvision rows: torch and torchvision are not installed"]
    assert result["settings"]["include_torch"] is False
    assert roi_align.TORCH_IMPL not in {row["impl"] for row in result["rows"]}
    # No torchvision row, no torchvision column.
    text = roi_align.format_table(result)
    assert roi_align.TORCH_RATIO_COLUMN not in text and "note: no torchvision rows" in text


def test_torch_child_writes_its_rows_and_torchs_versions(monkeypatch, tmp_path):
    calls = []

    def fake_rows(workload, pool_sizes, sampling_ratios, include_backward, warmup, repeats):
        calls.append((workload["name"], pool_sizes, sampling_ratios, include_backward, warmup, repeats))
        return [{"impl": roi_align.TORCH_IMPL}], {"sr=2 pool=7": [1.0, 2.0]}

    monkeypatch.setattr(roi_align, "_torch_rows", fake_rows)
    out = tmp_path / "child.json"
    roi_align.main(["--backend", "torch", "--child-json", str(out), "--small", "--pool-sizes", "7",
                    "--sampling-ratios", "2", "--no-backward", "--repeats", "2", "--warmup", "0"])
    assert calls == [("small", [7], [2], False, 0, 2)]
    child = json.loads(out.read_text())
    assert child["rows"] == [{"impl": roi_align.TORCH_IMPL}] and child["fingerprints"] == {"sr=2 pool=7": [1.0, 2.0]}
    assert {"torch", "torchvision", "keras"} <= set(child["versions"])


# torchvision's side of `test_torchvision_rows_agree_with_the_layer`, run in a fresh
# process: importing torchvision after TensorFlow crashes the process (torch
# 2.14, torchvision 0.29), which is also why the benchmark runs it in a child.
TORCH_SIDE = """
import json, sys
import numpy as np
import torch
from benchmarks import roi_align

workload, pool, out_path = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
boxes, maps = roi_align.torch_inputs(workload)
maps = [m.requires_grad_() for m in maps]
upstream = roi_align.torch_upstream(workload, pool)
arrays = {}
for sampling_ratio in (1, 2):
    out = roi_align.torchvision_pyramid_roi_align(boxes, maps, pool, sampling_ratio)
    grads = torch.autograd.grad(out, maps, grad_outputs=upstream)
    arrays[f"out{sampling_ratio}"] = out.detach().numpy()
    arrays[f"grad{sampling_ratio}"] = roi_align.flatten_numpy([g.numpy().transpose(0, 2, 3, 1) for g in grads])
rows, fingerprints = roi_align._torch_rows(workload, (pool,), (2,), True, warmup=0, repeats=1)
np.savez(out_path, **arrays)
print(json.dumps({"rows": rows, "fingerprints": fingerprints}))
"""


def test_torchvision_rows_agree_with_the_layer(tmp_path):
    """torchvision's kernel, an independent implementation, against the layer: forward and gradient."""
    if not roi_align.torchvision_installed():
        pytest.skip("torch and torchvision are not installed (not dependencies of this package)")
    workload = roi_align.workload_spec(small=True)
    workload.update(image_size=512, channels=4, num_boxes=40, box_side_px=[24.0, 1000.0])
    workload["feature_sizes"] = [512 // 2**level for level in roi_align.LEVELS]
    boxes = roi_align.make_boxes(workload)
    levels = roi_align.box_levels(boxes)
    np.testing.assert_array_equal(levels, keras.ops.convert_to_numpy(kml.ops.assign_fpn_levels(boxes)))
    assert len(np.unique(levels)) == len(roi_align.LEVELS), "the boxes must use every level"
    pool, out_path = 7, tmp_path / "torch.npz"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    completed = subprocess.run(
        [sys.executable, "-c", TORCH_SIDE, json.dumps(workload), str(pool), str(out_path)],
        cwd=root, capture_output=True, text=True, check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    torch_side = json.loads(completed.stdout.strip().splitlines()[-1])
    arrays = np.load(out_path)
    maps = roi_align.make_features(workload)
    table = roi_align.flatten_numpy(maps)
    upstream = roi_align.make_upstream(workload, pool)
    outputs = {}
    for sampling_ratio in (1, 2):
        layer = kml.PyramidROIAlign(
            pool_size=pool, sampling_ratio=sampling_ratio, aligned=True, min_level=2, max_level=5
        )
        expected = outputs[sampling_ratio] = backend_utils.to_numpy(layer(boxes, maps))
        got = arrays[f"out{sampling_ratio}"].transpose(0, 2, 3, 1).reshape(expected.shape)
        np.testing.assert_allclose(got, expected, atol=1e-4)
        # The gradient of sum(output * upstream) with respect to the maps, as the benchmark's fwd+bwd.
        layer_grad = backend_utils.grad(lambda t: keras.ops.sum(layer(boxes, maps, flat_features=t) * upstream), table)
        np.testing.assert_allclose(arrays[f"grad{sampling_ratio}"], layer_grad, atol=1e-4)
    # The benchmark's own rows: both passes ran, and the forward's fingerprint is the layer's.
    rows = torch_side["rows"]
    assert [(row["pass"], row["error"]) for row in rows] == [(roi_align.FORWARD, None), (roi_align.BACKWARD, None)]
    check = roi_align._fingerprint_check(torch_side["fingerprints"]["sr=2 pool=7"], roi_align.fingerprint(outputs[2]))
    assert check["ok"], check


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="the benchmark's JAX rows run under the JAX backend")
def test_roi_align_jax_rows_report_the_compiled_buffers():
    workload = roi_align.workload_spec(small=True)
    workload.update(image_size=128, channels=8, num_boxes=16, box_side_px=[16.0, 128.0])
    workload["feature_sizes"] = [128 // 2**level for level in roi_align.LEVELS]
    rows, fingerprints = roi_align._jax_rows(workload, (7,), (2,), True, warmup=0, repeats=1)
    assert all(row["error"] is None for row in rows)
    assert {key.startswith("flat jax ") for key in fingerprints} == {True, False}
    table_mb = workload["batch"] * sum(s * s for s in workload["feature_sizes"]) * workload["channels"] * 4 / 1e6
    by_config = {(row["impl"], row["pass"]): row["xla_buffers_mb"] for row in rows}
    # The forward's buffers hold at least its output; fwd+bwd's at least the gradient it returns.
    assert by_config[(roi_align.FLAT_IMPL, roi_align.FORWARD)] >= roi_align.output_mb(workload, 7)
    assert by_config[(roi_align.FLAT_IMPL, roi_align.BACKWARD)] >= table_mb
    assert by_config[(roi_align.FLATTEN_IMPL, roi_align.FORWARD)] >= table_mb


@pytest.mark.parametrize(
    "start, end, size, pool, sampling_ratio, expected",
    [
        # Samples at 1 and 3 read rows 1-2 and 3-4.
        (0.0, 4.0, 8, 2, 1, 4),
        # Samples at 0.5, 1.5, 2.5 and 3.5 read rows 0-4: five, not eight.
        (0.0, 4.0, 8, 2, 2, 5),
        # Samples at 7 and 9 on a map of 8 rows both read the last row only.
        (6.0, 10.0, 8, 2, 1, 1),
        # A sample at -2 is outside (weight 0) but the gather still reads rows 0 and 1.
        (-3.0, 1.0, 8, 2, 1, 2),
    ],
)
def test_roi_align_axis_reads_hand_cases(start, end, size, pool, sampling_ratio, expected):
    reads = roi_align.roi_align_axis_reads(np.array([start]), np.array([end]), np.array([size]), pool, sampling_ratio)
    assert reads.tolist() == [expected]


@pytest.mark.parametrize(
    "start, end, size, pool, expected",
    [
        # Samples at 0, 2 and 4 fall on pixels: one row each.
        (0.0, 1.0, 5, 3, 3),
        # Samples at 0.5 and 2.5: rows 0-1 and 2-3.
        (0.125, 0.625, 5, 2, 4),
        # Samples at -4, -1 and 2: the two outside read nothing.
        (-1.0, 0.5, 5, 3, 1),
        # Samples at 2, 4 and 6 on a map of 5 rows: the last reads nothing.
        (0.5, 1.5, 5, 3, 2),
        # One bin samples the box centre, 1.5: rows 1 and 2.
        (0.25, 0.5, 5, 1, 2),
    ],
)
def test_crop_and_resize_axis_reads_hand_cases(start, end, size, pool, expected):
    reads = roi_align.crop_and_resize_axis_reads(np.array([start]), np.array([end]), np.array([size]), pool)
    assert reads.tolist() == [expected]


def _small_traffic_workload():
    workload = roi_align.workload_spec(small=True)
    workload.update(image_size=128, channels=4, num_boxes=40, box_side_px=[4.0, 256.0])
    workload["feature_sizes"] = [128 // 2**level for level in roi_align.LEVELS]
    return workload


@pytest.mark.parametrize("pool, sampling_ratio", [(3, 1), (7, 2)])
def test_feature_mb_read_counts_the_pixels_the_layer_gathers(monkeypatch, pool, sampling_ratio):
    """Against the table rows that the layer's forward passes to its gathers, box by box."""
    # The package's `ops.roi_align` is the function; these are the modules.
    roi_align_op = importlib.import_module("keras_maskrcnn_layers.ops.roi_align")
    grad_module = importlib.import_module("keras_maskrcnn_layers.ops._roi_align_grad")
    workload = _small_traffic_workload()
    features = [np.zeros((workload["batch"], side, side, 1), "float32") for side in workload["feature_sizes"]]
    table_rows = workload["batch"] * sum(side * side for side in workload["feature_sizes"])
    gathered = []
    take = keras.ops.take

    def recording_take(x, indices, axis=None):
        if axis == 0 and x.shape[0] == table_rows:
            gathered.append(keras.ops.convert_to_numpy(indices))
        return take(x, indices, axis=axis)

    # Without the hand-written gradient the forward runs eagerly, so its indices can be read.
    monkeypatch.setattr(grad_module, "DENSE_GRADIENT", False)
    monkeypatch.setattr(roi_align_op.ops, "take", recording_take)
    # On a table, every box's gathers read its own pixels only (given the maps at sampling
    # ratio 1, the boxes of the other levels also read row 0 of P2, which the select drops).
    table = kml.ops.flatten_pyramid(features)
    kml.ops.multilevel_roi_align(
        features, roi_align.make_boxes(workload), pool, sampling_ratio=sampling_ratio, flat_features=table
    )
    assert len(gathered) == 4 * sampling_ratio**2
    # [B, N, pool * pool * taps]: every row each box's gathers read.
    rows = np.concatenate([g.reshape(g.shape[0], g.shape[1], -1) for g in gathered], axis=-1)
    pixels = sum(len(np.unique(box_rows)) for box_rows in rows.reshape(-1, rows.shape[-1]))
    expected = pixels * workload["channels"] * 4 / 1e6
    assert roi_align.feature_mb_read(workload, pool, sampling_ratio) == pytest.approx(expected)


@pytest.mark.parametrize("sampling_ratio", [1, 2])
def test_maps_copy_mb_is_what_the_layer_flattens(monkeypatch, sampling_ratio):
    """Against the maps that the layer's forward passes to `flatten_pyramid`."""
    roi_align_op = importlib.import_module("keras_maskrcnn_layers.ops.roi_align")
    workload = _small_traffic_workload()
    features = [
        np.zeros((workload["batch"], side, side, workload["channels"]), "float32") for side in workload["feature_sizes"]
    ]
    flattened = []
    flatten = roi_align_op.flatten_pyramid

    def recording_flatten(maps):
        flattened.append(sum(int(np.prod(m.shape)) * 4 for m in maps) / 1e6)
        return flatten(maps)

    monkeypatch.setattr(roi_align_op, "flatten_pyramid", recording_flatten)
    layer = kml.PyramidROIAlign(pool_size=3, sampling_ratio=sampling_ratio)
    layer(roi_align.make_boxes(workload), features)
    assert flattened == [pytest.approx(roi_align.maps_copy_mb(workload, sampling_ratio))]


@tensorflow_only
def test_feature_mb_read_counts_the_pixels_crop_and_resize_reads():
    """Against TensorFlow's kernel: the pixels with a gradient are the pixels it read."""
    import tensorflow as tf

    workload = _small_traffic_workload()
    pool = 5
    boxes = roi_align.make_boxes(workload).reshape(1, -1, 4)
    features = [tf.Variable(tf.ones((1, side, side, 1))) for side in workload["feature_sizes"]]
    pixels = 0
    for n in range(boxes.shape[1]):
        with tf.GradientTape() as tape:
            out = roi_align.matterport_style_roi_align(boxes[:, n : n + 1], features, pool, workload["image_size"])
            # Distinct positive weights, so that no two reads cancel.
            loss = tf.reduce_sum(out * tf.reshape(tf.range(1.0, pool * pool + 1.0), (1, 1, pool, pool, 1)))
        grads = tape.gradient(loss, features)
        pixels += sum(int(np.count_nonzero(g.numpy())) for g in grads if g is not None)
    expected = pixels * workload["channels"] * 4 / 1e6
    assert roi_align.feature_mb_read(workload, pool) == pytest.approx(expected)


def test_traffic_rows_name_every_configuration_against_its_baseline():
    workload = _small_traffic_workload()
    rows = roi_align.traffic_rows(workload, (7, 14), (1, 2))
    assert len(rows) == 2 * (1 + 2 * 2)
    baseline = {row["pool"]: row for row in rows if row["impl"] == roi_align.BASELINE_IMPL}
    for row in rows:
        assert row["feature_ratio"] == pytest.approx(row["feature_mb"] / baseline[row["pool"]]["feature_mb"])
        assert row["output_mb"] == pytest.approx(roi_align.output_mb(workload, row["pool"]))
    flat = [row for row in rows if row["impl"] == roi_align.FLAT_IMPL]
    maps = [row for row in rows if row["impl"] == roi_align.LAYER_IMPL]
    assert all(row["copies_mb"] == 0 for row in flat)
    first_map_mb = workload["batch"] * workload["feature_sizes"][0] ** 2 * workload["channels"] * 4 / 1e6
    for row in maps:
        copied = roi_align.table_mb(workload) - (first_map_mb if row["sampling_ratio"] == 1 else 0.0)
        assert row["copies_mb"] == pytest.approx(2 * copied)
    table = roi_align.flatten_numpy(roi_align.make_features(workload))
    assert roi_align.table_mb(workload) == pytest.approx(table.nbytes / 1e6)
    # The baseline's concatenation and reordering each read and write its output.
    assert all(row["copies_mb"] == pytest.approx(4 * row["output_mb"]) for row in baseline.values())
    # Twice the samples per axis never read fewer pixels.
    by_config = {(row["impl"], row["pool"], row["sampling_ratio"]): row["feature_mb"] for row in rows}
    assert by_config[(roi_align.FLAT_IMPL, 7, 2)] > by_config[(roi_align.FLAT_IMPL, 7, 1)]
    text = "\n".join(roi_align.format_traffic(rows))
    assert "x baseline reads" in text

"""Mask-size diagnostics on hand-made masks whose answers are known, and a brute-force boundary F."""

import math
import os
import subprocess
import sys

import numpy as np
import pytest

from keras_maskrcnn_layers.evaluation import MaskSizeReport, boundary_f_score, mask_size_report

SIZE = 128


def rectangles(boxes, size=SIZE):
    """`[size, size, N]` masks of filled rectangles `(y1, x1, y2, x2)`, end exclusive."""
    masks = np.zeros((size, size, len(boxes)), bool)
    for i, (y1, x1, y2, x2) in enumerate(boxes):
        masks[y1:y2, x1:x2, i] = True
    return masks


def sample(boxes, class_ids, size=SIZE):
    return {"image": np.zeros((size, size, 3), np.uint8), "masks": rectangles(boxes, size), "class_ids": class_ids}


def result(boxes, class_ids, scores, size=SIZE):
    return {"masks": rectangles(boxes, size), "class_ids": class_ids, "scores": scores}


# === Boundary F-score ===


def reference_boundary_f(pred, gt, tolerance):
    """DAVIS's F by definition: loops for the boundary, all pairwise distances for matching."""

    def boundary(mask):
        height, width = mask.shape
        points = []
        for y in range(height):
            for x in range(width):
                if not mask[y, x]:
                    continue
                neighbours = [(y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)]
                if any(not (0 <= v < height and 0 <= u < width) or not mask[v, u] for v, u in neighbours):
                    points.append((y, x))
        return np.asarray(points, np.float64).reshape(-1, 2)

    def matched_share(points, others):
        distances = np.sqrt(((points[:, None, :] - others[None, :, :]) ** 2).sum(-1))
        return np.mean(distances.min(axis=1) <= tolerance + 1e-9)

    p, g = boundary(pred), boundary(gt)
    if len(p) == 0 and len(g) == 0:
        return 1.0
    if len(p) == 0 or len(g) == 0:
        return 0.0
    precision, recall = matched_share(p, g), matched_share(g, p)
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def test_shifted_square_by_hand():
    truth = rectangles([(10, 10, 20, 20)], 32)[:, :, 0]
    shifted = rectangles([(10, 11, 20, 21)], 32)[:, :, 0]
    # 36 boundary pixels each; exactly the 9 + 9 top and bottom pixels in
    # columns 11..19 coincide, so P = R = 0.5 at tolerance 0.
    assert boundary_f_score(shifted, truth, tolerance=0) == 0.5
    assert boundary_f_score(shifted, truth, tolerance=1) == 1.0
    assert boundary_f_score(truth, truth, tolerance=0) == 1.0


def test_default_tolerance_is_davis():
    # ceil(0.008 * sqrt(2) * 128) = 2 px: a 2 px shift matches, a 3 px one does not.
    truth = rectangles([(40, 40, 80, 80)])[:, :, 0]
    two = rectangles([(40, 42, 80, 82)])[:, :, 0]
    three = rectangles([(40, 43, 80, 83)])[:, :, 0]
    assert boundary_f_score(two, truth) == 1.0
    assert boundary_f_score(three, truth) == boundary_f_score(three, truth, tolerance=2) < 1.0


def test_empty_masks():
    empty = np.zeros((8, 8), bool)
    full = np.ones((8, 8), bool)
    assert boundary_f_score(empty, empty) == 1.0
    assert boundary_f_score(full, empty) == 0.0
    assert boundary_f_score(empty, full) == 0.0


def test_image_border_counts_as_outside():
    full = np.ones((6, 6), bool)
    inner = np.zeros((6, 6), bool)
    inner[1:5, 1:5] = True
    # The full mask's boundary is the image's outer ring (20 px); the inner
    # square's is the ring one pixel in (12 px). At tolerance 1 all of the
    # inner ring matches but the outer ring's 4 corners (sqrt(2) away) do
    # not: P = 16/20, R = 1, F = 8/9.
    assert boundary_f_score(full, inner, tolerance=0) == 0.0
    assert boundary_f_score(full, inner, tolerance=1) == pytest.approx(8 / 9)
    assert boundary_f_score(full, inner, tolerance=1.5) == 1.0


@pytest.mark.parametrize("tolerance", [0, 1, 1.5, 2, 3.7, None])
def test_matches_brute_force(tolerance):
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[:24, :30]
    for _ in range(6):
        cy, cx, ry, rx = rng.uniform(0, 24), rng.uniform(0, 30), rng.uniform(2, 12), rng.uniform(2, 12)
        blob = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        noisy = blob ^ (rng.uniform(size=blob.shape) < 0.05)
        expected_tolerance = math.ceil(0.008 * math.hypot(24, 30)) if tolerance is None else tolerance
        expected = reference_boundary_f(noisy, blob, expected_tolerance)
        assert boundary_f_score(noisy, blob, tolerance) == pytest.approx(expected, abs=1e-12)


def test_numeric_masks_are_accepted():
    truth = rectangles([(2, 2, 6, 6)], 8)[:, :, 0]
    assert boundary_f_score(truth.astype(np.float32), truth.astype(np.uint8)) == 1.0


def test_boundary_bad_arguments():
    mask = np.zeros((8, 8), bool)
    with pytest.raises(ValueError, match="same shape"):
        boundary_f_score(mask, np.zeros((8, 9), bool))
    with pytest.raises(ValueError, match=r"pred_mask.*\[H, W\]"):
        boundary_f_score(np.zeros((8, 8, 1), bool), mask)
    nan = np.zeros((8, 8))
    nan[0, 0] = np.nan
    with pytest.raises(ValueError, match="gt_mask.*NaN"):
        boundary_f_score(mask, nan)
    with pytest.raises(ValueError, match="pred_mask.*0 and 1"):
        boundary_f_score(np.full((8, 8), 2.0), mask)
    with pytest.raises(ValueError, match="tolerance"):
        boundary_f_score(mask, mask, tolerance=-1)


# === Report ===


def test_mask_twice_the_area_reports_ratio_two():
    truth = sample([(10, 10, 20, 20)], [1])
    prediction = result([(10, 10, 30, 20)], [1], [0.9])
    report = mask_size_report([prediction], [truth])
    instances = report.instances
    assert instances["area_ratio"].tolist() == [2.0]
    assert instances["iou"].tolist() == [0.5]
    assert instances["gt_area"].tolist() == [100] and instances["pred_area"].tolist() == [200]
    assert instances["size"].tolist() == ["small"]
    # Half of the prediction's 60 boundary pixels lie on the true square's
    # ring, whose 36 pixels are all within 2 px of it.
    stats = report.summary()["small"]
    assert stats["median_area_ratio"] == stats["mean_area_ratio"] == 2.0
    assert 0.0 < stats["mean_boundary_f"] < 1.0


def test_perfect_masks_by_size():
    truth = sample([(2, 2, 12, 12), (60, 60, 100, 100), (0, 0, 100, 100)], [1, 2, 3])
    report = mask_size_report([result([(2, 2, 12, 12), (60, 60, 100, 100), (0, 0, 100, 100)], [1, 2, 3],
                                      [0.5, 0.6, 0.7])], [truth])
    summary = report.summary()
    assert list(summary) == ["small", "medium", "large", "all"]
    for name in ("small", "medium", "large"):
        assert summary[name]["count"] == 1
        assert summary[name]["missed"] == summary[name]["false_positives"] == 0
        for key in ("median_area_ratio", "mean_area_ratio", "mean_iou", "mean_boundary_f"):
            assert summary[name][key] == 1.0
    assert summary["all"]["count"] == 3
    assert report.instances["gt_area"].tolist() == [100, 1600, 10000]


def test_wrong_class_is_missed_and_false_positive():
    truth = sample([(0, 0, 40, 40)], [1])
    prediction = result([(0, 0, 10, 10)], [2], [0.9])
    summary = mask_size_report([prediction], [truth]).summary()
    # The missed object is binned by its true area, the false positive by its own.
    assert summary["medium"]["missed"] == 1 and summary["medium"]["false_positives"] == 0
    assert summary["small"]["false_positives"] == 1 and summary["small"]["missed"] == 0
    assert summary["all"]["count"] == 0 and math.isnan(summary["all"]["mean_iou"])


def test_greedy_matching_by_score():
    truth = sample([(0, 0, 10, 10)], [1])
    # The higher-scored prediction overlaps less (IoU 0.6) yet takes the object.
    predictions = result([(0, 0, 10, 10), (0, 0, 6, 10)], [1, 1], [0.3, 0.8])
    report = mask_size_report([predictions], [truth])
    assert report.instances["pred_index"].tolist() == [1]
    assert report.instances["iou"][0] == pytest.approx(0.6)
    assert report.false_positives["pred_index"].tolist() == [0]


def test_threshold_is_inclusive():
    truth = sample([(0, 0, 10, 10)], [1])
    prediction = result([(0, 0, 5, 10)], [1], [0.9])
    assert mask_size_report([prediction], [truth], iou_threshold=0.5).summary()["all"]["count"] == 1
    assert mask_size_report([prediction], [truth], iou_threshold=0.51).summary()["all"]["missed"] == 1


def test_no_ground_truth_and_no_predictions(tmp_path):
    empty_result = {"masks": np.zeros((0,)), "class_ids": [], "scores": []}
    report = mask_size_report([empty_result, result([], [], [])], [sample([], []), sample([], [])])
    assert isinstance(report, MaskSizeReport)
    assert all(len(column) == 0 for column in report.instances.values())
    summary = report.summary()
    assert summary["all"]["count"] == summary["all"]["missed"] == summary["all"]["false_positives"] == 0
    assert math.isnan(summary["all"]["median_area_ratio"])
    assert " - " in report.table()
    figure = report.plot(str(tmp_path / "empty.png"))
    assert len(figure.axes) == 2 and os.path.getsize(tmp_path / "empty.png") > 0


def test_predictions_on_an_image_without_objects_are_false_positives():
    report = mask_size_report([result([(0, 0, 40, 40), (5, 5, 6, 6)], [1, 3], [0.9, 0.2])], [sample([], [])])
    assert report.false_positives["pred_index"].tolist() == [0, 1]
    assert report.false_positives["size"].tolist() == ["medium", "small"]
    assert report.summary()["all"]["false_positives"] == 2


def test_empty_ground_truth_masks_are_left_out():
    truth = sample([(2, 2, 12, 12), (0, 0, 0, 0)], [1, 1])
    summary = mask_size_report([result([], [], [])], [truth]).summary()
    assert summary["all"]["missed"] == 1


def test_custom_size_ranges():
    truth = sample([(0, 0, 5, 5), (20, 20, 30, 30), (40, 40, 100, 100)], [1, 1, 1])
    prediction = result([(0, 0, 5, 5), (20, 20, 30, 30), (40, 40, 100, 100)], [1, 1, 1], [0.9, 0.8, 0.7])
    report = mask_size_report([prediction], [truth], size_ranges={"tiny": (0, 50), "mid": (50, 1000)})
    summary = report.summary()
    assert list(summary) == ["tiny", "mid", "all"]
    # The 3600 px object lies in no range: it counts only under "all".
    assert (summary["tiny"]["count"], summary["mid"]["count"], summary["all"]["count"]) == (1, 1, 3)
    assert report.instances["size"].tolist() == ["tiny", "mid", None]


def test_table_is_aligned_and_plot_saves(tmp_path):
    truth = sample([(10, 10, 20, 20), (30, 30, 80, 80)], [1, 2])
    prediction = result([(10, 10, 30, 20), (30, 30, 80, 80)], [1, 2], [0.9, 0.8])
    report = mask_size_report([prediction], [truth])
    lines = report.table().splitlines()
    assert len({len(line) for line in lines[1:]}) == 1  # header, rule and rows
    assert lines[3].split()[:3] == ["small", "1", "0"] and "2.000" in lines[3]
    path = tmp_path / "sizes.png"
    report.plot(str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_bad_arguments():
    truth = sample([(0, 0, 10, 10)], [1])
    good = result([(0, 0, 10, 10)], [1], [0.9])
    with pytest.raises(ValueError, match="same length"):
        mask_size_report([good], [truth, truth])
    with pytest.raises(ValueError, match="iou_threshold"):
        mask_size_report([good], [truth], iou_threshold=0.0)
    with pytest.raises(ValueError, match=r"results\[0\].*masks"):
        mask_size_report([dict(good, masks=good["masks"][:64])], [truth])
    with pytest.raises(ValueError, match=r"results\[0\].*scores"):
        mask_size_report([dict(good, scores=[0.9, 0.1])], [truth])
    with pytest.raises(ValueError, match=r"results\[0\].*NaN"):
        mask_size_report([dict(good, scores=[np.nan])], [truth])
    with pytest.raises(ValueError, match=r"samples\[0\].*class_ids"):
        mask_size_report([good], [dict(truth, class_ids=[1, 2])])
    with pytest.raises(ValueError, match=r"size_ranges\['a'\]"):
        mask_size_report([good], [truth], size_ranges={"a": (10, 5)})
    with pytest.raises(ValueError, match="boundary_tolerance"):
        mask_size_report([good], [truth], boundary_tolerance=-2)


def test_evaluation_does_not_import_tensorflow():
    code = "import sys, keras_maskrcnn_layers.evaluation; print('tensorflow' in sys.modules)"
    env = dict(os.environ, KERAS_BACKEND="jax")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

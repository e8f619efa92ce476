"""COCO metrics on hand-made cases whose answers are known in advance."""

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from keras_maskrcnn_layers.evaluation import (
    STAT_NAMES,
    CocoAccumulator,
    coco_evaluate,
    extract_boxes,
    results_to_coco,
    samples_to_coco,
)

SIZE = 128


def make_sample(boxes, class_ids, size=SIZE):
    """A sample whose instances are filled rectangles `(y1, x1, y2, x2)`, end exclusive."""
    masks = np.zeros((size, size, len(boxes)), bool)
    for i, (y1, x1, y2, x2) in enumerate(boxes):
        masks[y1:y2, x1:x2, i] = True
    return {"image": np.zeros((size, size, 3), np.uint8), "masks": masks, "class_ids": np.array(class_ids, np.int32)}


def make_result(masks, class_ids, scores, rois=None):
    rois = extract_boxes(masks).astype(np.float32) if rois is None else np.asarray(rois, np.float32)
    return {
        "rois": rois,
        "class_ids": np.array(class_ids, np.int32),
        "scores": np.array(scores, np.float32),
        "masks": masks,
    }


def perfect_result(sample):
    count = len(sample["class_ids"])
    return make_result(sample["masks"].copy(), sample["class_ids"], np.ones(count))


def empty_result(size=SIZE):
    return make_result(np.zeros((size, size, 0), bool), [], [], rois=np.zeros((0, 4)))


def stat_keys(prefix, names=STAT_NAMES):
    return [prefix + name for name in names]


ALL_STAT_KEYS = stat_keys("bbox_") + stat_keys("mask_")
AP_KEYS = ("ap", "ap50", "ap75")


@pytest.fixture
def three_sizes():
    """One small (100 px), one medium (1600 px) and one large (10000 px) object.

    At most one instance per image and class, so that AR at 1 detection is
    defined by matching alone.
    """
    return [
        make_sample([(2, 2, 12, 12), (60, 60, 100, 100)], [1, 2]),
        make_sample([(10, 10, 110, 110)], [1]),
    ]


def test_extract_boxes_matterport_convention():
    masks = np.zeros((10, 12, 3), bool)
    masks[3:7, 2:9, 0] = True
    masks[0, 11, 1] = True
    boxes = extract_boxes(masks)
    np.testing.assert_array_equal(boxes, [[3, 2, 7, 9], [0, 11, 1, 12], [0, 0, 0, 0]])
    assert boxes.dtype == np.int32
    assert extract_boxes(np.zeros((4, 4, 0), bool)).shape == (0, 4)


# pycocotools' `decode` trips NumPy 2's `__array__(copy=...)` deprecation; metrics never decode.
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_samples_to_coco_rle_round_trip_and_xywh(three_sizes):
    dataset = samples_to_coco(three_sizes)
    assert [image["id"] for image in dataset["images"]] == [0, 1]
    assert [c["id"] for c in dataset["categories"]] == [1, 2]
    annotations = dataset["annotations"]
    assert [a["id"] for a in annotations] == [1, 2, 3]
    assert [a["area"] for a in annotations] == [100.0, 1600.0, 10000.0]
    assert annotations[1]["bbox"] == [60.0, 60.0, 40.0, 40.0]
    decoded = mask_utils.decode([annotations[2]["segmentation"]])[:, :, 0].astype(bool)
    np.testing.assert_array_equal(decoded, three_sizes[1]["masks"][:, :, 0])


# pycocotools' `decode` trips NumPy 2's `__array__(copy=...)` deprecation; metrics never decode.
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_results_to_coco_box_and_mask_entries():
    masks = np.zeros((16, 16, 2), bool)
    masks[1:4, 2:8, 0] = True
    result = make_result(masks, [1, 2], [0.9, 0.3], rois=[[1, 2, 4, 8], [0, 0, 5, 5]])
    boxes = results_to_coco([result], iou_type="bbox")
    assert boxes[0] == {"image_id": 0, "category_id": 1, "score": pytest.approx(0.9), "bbox": [2.0, 1.0, 6.0, 3.0]}
    assert results_to_coco([result], iou_type="bbox", class_ids=[2])[0]["category_id"] == 2
    segms = results_to_coco([result], iou_type="segm")
    assert all("bbox" not in entry for entry in segms)
    np.testing.assert_array_equal(mask_utils.decode([segms[0]["segmentation"]])[:, :, 0].astype(bool), masks[:, :, 0])


def test_perfect_predictions_score_one(three_sizes):
    results = [perfect_result(sample) for sample in three_sizes]
    metrics = coco_evaluate(three_sizes, results)
    for key in ALL_STAT_KEYS:
        assert metrics[key] == pytest.approx(1.0), key
    assert metrics["num_images"] == 2
    assert metrics["num_ground_truth"] == 3
    assert metrics["num_detections"] == 3


def test_wrong_class_scores_zero(three_sizes):
    results = []
    for sample in three_sizes:
        result = perfect_result(sample)
        result["class_ids"] = np.full_like(result["class_ids"], 3)
        results.append(result)
    metrics = coco_evaluate(three_sizes, results)
    for prefix in ("bbox_", "mask_"):
        for key in stat_keys(prefix, AP_KEYS + ("ar100",)):
            assert metrics[key] == 0.0, key


def test_iou_of_exactly_0_6_counts_at_ap50_not_at_ap75():
    sample = make_sample([(20, 20, 30, 30)], [1])
    predicted = np.zeros((SIZE, SIZE, 1), bool)
    predicted[20:26, 20:30, 0] = True
    truth = sample["masks"][:, :, 0]
    intersection = np.logical_and(truth, predicted[:, :, 0]).sum()
    union = np.logical_or(truth, predicted[:, :, 0]).sum()
    assert intersection / union == 0.6
    metrics = coco_evaluate([sample], [make_result(predicted, [1], [0.8])])
    # COCOeval matches when IoU >= threshold; ten thresholds 0.50:0.05:0.95.
    expected_ap = np.mean(0.6 >= np.linspace(0.5, 0.95, 10))
    # The box of the predicted mask has the same IoU 0.6 with the true box.
    for prefix in ("bbox_", "mask_"):
        assert metrics[prefix + "ap50"] == pytest.approx(1.0)
        assert metrics[prefix + "ap75"] == 0.0
        assert metrics[prefix + "ap"] == pytest.approx(expected_ap)


def test_lower_scored_duplicates_do_not_lower_ap(three_sizes):
    results = []
    for sample in three_sizes:
        result = perfect_result(sample)
        duplicate = perfect_result(sample)
        results.append(
            make_result(
                np.concatenate([result["masks"], duplicate["masks"]], axis=-1),
                np.concatenate([result["class_ids"], duplicate["class_ids"]]),
                np.concatenate([result["scores"], np.full(len(duplicate["scores"]), 0.5)]),
            )
        )
    metrics = coco_evaluate(three_sizes, results)
    assert metrics["num_detections"] == 6
    for key in stat_keys("bbox_", AP_KEYS + ("ar100",)) + stat_keys("mask_", AP_KEYS + ("ar100",)):
        assert metrics[key] == pytest.approx(1.0), key


def test_no_detections_scores_zero(three_sizes):
    metrics = coco_evaluate(three_sizes, [empty_result(), empty_result()])
    assert metrics["num_detections"] == 0
    for key in ALL_STAT_KEYS:
        assert metrics[key] == 0.0, key


def test_empty_result_arrays_of_any_shape_mean_no_detections(three_sizes):
    bare = {"rois": np.zeros((0,)), "class_ids": np.zeros((0,), int), "scores": np.zeros((0,)), "masks": np.zeros((0,))}
    results = [perfect_result(three_sizes[0]), bare]
    metrics = coco_evaluate(three_sizes, results)
    assert metrics["num_detections"] == 2
    # Two of three objects found, each at the top of its class's ranking.
    assert metrics["mask_ap_small"] == pytest.approx(1.0)
    assert metrics["mask_ap_large"] == 0.0


def test_false_positive_on_image_without_ground_truth_lowers_precision():
    with_object = make_sample([(20, 20, 30, 30)], [1])
    without = make_sample([], [])
    hit = perfect_result(with_object)
    hit["scores"] = np.array([0.5], np.float32)
    false_positive = make_result(make_sample([(50, 50, 60, 60)], [1])["masks"], [1], [0.9])
    samples = [with_object, without]

    clean = coco_evaluate(samples, [hit, empty_result()])
    assert clean["mask_ap"] == pytest.approx(1.0)
    # Ranked first, the false positive halves precision at every recall.
    above = coco_evaluate(samples, [hit, false_positive])
    assert above["num_ground_truth"] == 1 and above["num_detections"] == 2
    for prefix in ("bbox_", "mask_"):
        assert above[prefix + "ap"] == pytest.approx(0.5)
    # Ranked below the hit, it leaves interpolated precision at 1.
    false_positive["scores"] = np.array([0.1], np.float32)
    below = coco_evaluate(samples, [hit, false_positive])
    assert below["mask_ap"] == pytest.approx(1.0)


def test_areas_and_categories_without_ground_truth_are_minus_one():
    sample = make_sample([(2, 2, 12, 12)], [1])
    metrics = coco_evaluate([sample], [perfect_result(sample)])
    assert metrics["mask_ap_small"] == pytest.approx(1.0)
    assert metrics["mask_ap_medium"] == -1.0
    assert metrics["bbox_ap_large"] == -1.0

    nothing = coco_evaluate([make_sample([], [])], [empty_result()])
    assert nothing["num_ground_truth"] == 0
    for key in ALL_STAT_KEYS:
        assert nothing[key] == -1.0, key


def test_class_ids_restricts_evaluation(three_sizes):
    results = [perfect_result(sample) for sample in three_sizes]
    results[0]["class_ids"] = np.array([1, 3], np.int32)
    assert coco_evaluate(three_sizes, results)["mask_ap"] == pytest.approx(0.5)
    metrics = coco_evaluate(three_sizes, results, class_ids=[1])
    assert metrics["mask_ap"] == pytest.approx(1.0)
    assert metrics["num_ground_truth"] == 2 and metrics["num_detections"] == 2


def test_empty_ground_truth_masks_are_left_out():
    sample = make_sample([(2, 2, 12, 12), (0, 0, 0, 0)], [1, 1])
    result = make_result(sample["masks"][:, :, :1], [1], [1.0])
    metrics = coco_evaluate([sample], [result])
    assert metrics["num_ground_truth"] == 1
    assert metrics["mask_ar100"] == pytest.approx(1.0)


def test_iou_types_select_keys_and_bbox_needs_no_masks(three_sizes):
    results = [perfect_result(sample) for sample in three_sizes]
    for result in results:
        del result["masks"]
    metrics = coco_evaluate(three_sizes, results, iou_types="bbox")
    assert set(metrics) == set(stat_keys("bbox_")) | {"num_images", "num_ground_truth", "num_detections"}
    assert metrics["bbox_ap"] == pytest.approx(1.0)


def test_silent_unless_verbose(three_sizes, capsys):
    results = [perfect_result(sample) for sample in three_sizes]
    coco_evaluate(three_sizes, results, iou_types=("segm",))
    assert capsys.readouterr().out == ""
    coco_evaluate(three_sizes, results, iou_types=("segm",), verbose=True)
    assert "Average Precision" in capsys.readouterr().out


def test_bad_arguments_raise(three_sizes):
    results = [perfect_result(sample) for sample in three_sizes]
    with pytest.raises(ValueError, match="same length"):
        coco_evaluate(three_sizes, results[:1])
    with pytest.raises(ValueError, match="must not be empty"):
        coco_evaluate([], [])
    with pytest.raises(ValueError, match="iou_types"):
        coco_evaluate(three_sizes, results, iou_types=("keypoints",))
    with pytest.raises(ValueError, match="iou_types"):
        coco_evaluate(three_sizes, results, iou_types=())

    wrong_sample = dict(three_sizes[0], masks=three_sizes[0]["masks"][:64])
    with pytest.raises(ValueError, match=r"samples\[0\].*masks"):
        coco_evaluate([wrong_sample, three_sizes[1]], results)
    wrong_result = dict(results[1], masks=results[1]["masks"][:, :64])
    with pytest.raises(ValueError, match=r"results\[1\].*masks"):
        coco_evaluate(three_sizes, [results[0], wrong_result])
    with pytest.raises(ValueError, match=r"samples\[0\].*channels"):
        coco_evaluate([dict(three_sizes[0], class_ids=[1]), three_sizes[1]], results)
    with pytest.raises(ValueError, match="scores"):
        coco_evaluate(three_sizes, [dict(results[0], scores=[1.0]), results[1]])
    with pytest.raises(ValueError, match="rois"):
        coco_evaluate(three_sizes, [dict(results[0], rois=np.zeros((2, 5))), results[1]])
    with pytest.raises(ValueError, match="background"):
        coco_evaluate(three_sizes, [dict(results[0], class_ids=[0, 1]), results[1]])


def random_case(seed, count=7):
    """Rectangles of three classes, and detections that shift, drop, duplicate and invent some."""
    rng = np.random.default_rng(seed)
    samples, results = [], []
    for _ in range(count):
        n = int(rng.integers(0, 4))
        corners = rng.integers(0, SIZE - 40, size=(n, 2))
        sides = rng.integers(4, 40, size=(n, 2))
        boxes = [(y, x, y + h, x + w) for (y, x), (h, w) in zip(corners, sides)]
        sample = make_sample(boxes, rng.integers(1, 4, size=n))
        samples.append(sample)
        masks = np.roll(sample["masks"], int(rng.integers(-3, 4)), axis=0)
        masks = np.concatenate([masks, np.zeros((SIZE, SIZE, 1), bool)], axis=-1)
        masks[5:15, 5:25, -1] = True  # a false positive on every image
        class_ids = np.concatenate([sample["class_ids"], [int(rng.integers(1, 4))]])
        results.append(make_result(masks, class_ids, rng.uniform(0.1, 1.0, size=n + 1)))
    return samples, results


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("chunks", [[7], [3, 4], [1, 1, 5], [1] * 7])
def test_accumulated_chunks_equal_one_evaluation(seed, chunks):
    samples, results = random_case(seed)
    expected = coco_evaluate(samples, results)
    evaluation = CocoAccumulator()
    start = 0
    for size in chunks:
        evaluation.add(samples[start : start + size], results[start : start + size])
        start += size
    assert evaluation.num_images == 7
    assert evaluation.evaluate() == expected
    assert 0.0 < expected["mask_ap50"] < 1.0, "the case must be neither perfect nor empty"


def test_accumulator_checks():
    samples, results = random_case(2, count=2)
    with pytest.raises(ValueError, match="must not be empty"):
        CocoAccumulator().evaluate()
    with pytest.raises(ValueError, match="same length"):
        CocoAccumulator().add(samples, results[:1])
    with pytest.raises(ValueError, match="iou_types"):
        CocoAccumulator(iou_types=("mask",))
    evaluation = CocoAccumulator()
    evaluation.add(samples[:1], results[:1])
    bad = dict(results[1], masks=results[1]["masks"][:64])
    with pytest.raises(ValueError, match=r"results\[1\]"):
        evaluation.add(samples[1:], [bad])
    assert evaluation.num_images == 1, "a chunk that fails adds nothing"

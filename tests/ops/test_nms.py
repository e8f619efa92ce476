import numpy as np
import pytest

from keras_maskrcnn_layers import ops as kml_ops
from tests import reference
from tests.backend_utils import jit, to_numpy


def clustered_boxes(rng, count, extent=200.0):
    """Boxes in clusters so that NMS has real work to do."""
    centres = rng.uniform(0, extent, size=(count // 8 + 1, 2))
    picks = centres[rng.integers(0, len(centres), size=count)] + rng.normal(0, 4, size=(count, 2))
    sides = rng.uniform(8, 40, size=(count, 2))
    return np.concatenate([picks - sides / 2, picks + sides / 2], axis=-1).astype("float32")


def test_hand_case():
    boxes = np.array(
        [[0, 0, 10, 10], [0, 1, 10, 11], [0, 20, 10, 30], [0, 21, 10, 31], [50, 50, 60, 60]], "float32"
    )
    scores = np.array([0.9, 0.95, 0.5, 0.3, 0.8], "float32")
    # Box 1 (0.95) suppresses box 0 (IoU 9/11); box 2 suppresses box 3 (IoU 9/11).
    indices, count = kml_ops.batched_nms(boxes, scores, max_output_size=5, iou_threshold=0.5)
    assert to_numpy(indices).tolist() == [1, 4, 2, 0, 0]
    assert int(to_numpy(count)) == 3
    # At a threshold above 9/11 nothing is suppressed.
    indices, count = kml_ops.batched_nms(boxes, scores, max_output_size=5, iou_threshold=0.9)
    assert to_numpy(indices).tolist() == [1, 0, 4, 2, 3]


@pytest.mark.parametrize("iou_threshold", [0.3, 0.5, 0.7])
@pytest.mark.parametrize("max_output_size", [5, 40, 500])
def test_matches_greedy_nms(iou_threshold, max_output_size):
    rng = np.random.default_rng(int(iou_threshold * 10) + max_output_size)
    boxes = np.stack([clustered_boxes(rng, 300) for _ in range(2)])
    scores = rng.uniform(size=(2, 300)).astype("float32")
    indices, count = kml_ops.batched_nms(boxes, scores, max_output_size, iou_threshold)
    indices, count = to_numpy(indices), to_numpy(count)
    assert indices.shape == (2, max_output_size)
    for b in range(2):
        expected = reference.greedy_nms(boxes[b], scores[b], iou_threshold, max_output_size)
        assert count[b] == len(expected)
        assert indices[b, : count[b]].tolist() == expected
        assert np.all(indices[b, count[b] :] == 0)


def test_score_threshold_and_non_finite_scores():
    rng = np.random.default_rng(3)
    boxes = clustered_boxes(rng, 60)
    scores = rng.uniform(size=60).astype("float32")
    scores[:10] = -np.inf
    scores[10:13] = np.nan
    indices, count = kml_ops.batched_nms(boxes, scores, 60, 0.5, score_threshold=0.2)
    expected = reference.greedy_nms(boxes, np.nan_to_num(scores, nan=-np.inf), 0.5, 60, score_threshold=0.2)
    assert to_numpy(indices)[: int(to_numpy(count))].tolist() == expected


def test_class_aware():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]], "float32")
    scores = np.array([0.9, 0.8, 0.7], "float32")
    classes = np.array([1, 2, 1])
    indices, count = kml_ops.batched_nms(boxes, scores, 3, 0.5, classes=classes)
    assert to_numpy(indices)[: int(to_numpy(count))].tolist() == [0, 1]


def test_max_output_larger_than_candidates_and_all_invalid():
    boxes = np.zeros((2, 4, 4), "float32")
    boxes[0] = [[0, 0, 5, 5], [10, 10, 15, 15], [0, 0, 5, 5], [20, 20, 25, 25]]
    scores = np.full((2, 4), -np.inf, "float32")
    scores[0] = [0.1, 0.2, 0.3, 0.4]
    indices, count = kml_ops.batched_nms(boxes, scores, 10, 0.5)
    assert to_numpy(count).tolist() == [3, 0]
    assert to_numpy(indices)[0, :3].tolist() == [3, 2, 1]
    assert np.all(to_numpy(indices)[1] == 0)


def test_xla_equals_eager():
    rng = np.random.default_rng(4)
    boxes = np.stack([clustered_boxes(rng, 400) for _ in range(2)])
    scores = rng.uniform(size=(2, 400)).astype("float32")

    def fn(b, s):
        return kml_ops.batched_nms(b, s, 100, 0.6)

    eager = [to_numpy(x) for x in fn(boxes, scores)]
    compiled = [to_numpy(x) for x in jit(fn)(boxes, scores)]
    for e, c in zip(eager, compiled):
        np.testing.assert_array_equal(c, e)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"max_output_size": 0, "iou_threshold": 0.5}, "max_output_size"),
        ({"max_output_size": 5, "iou_threshold": 1.5}, "iou_threshold"),
        ({"max_output_size": 5, "iou_threshold": -0.1}, "iou_threshold"),
        ({"max_output_size": 5, "iou_threshold": float("nan")}, "iou_threshold"),
    ],
)
def test_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        kml_ops.batched_nms(np.zeros((3, 4), "float32"), np.zeros(3, "float32"), **kwargs)


def test_bad_shapes():
    with pytest.raises(ValueError, match="boxes"):
        kml_ops.batched_nms(np.zeros((3, 5), "float32"), np.zeros(3, "float32"), 2)
    with pytest.raises(ValueError, match="scores"):
        kml_ops.batched_nms(np.zeros((2, 3, 4), "float32"), np.zeros(3, "float32"), 2)

import numpy as np
import pytest

from keras_maskrcnn_layers import ops as kml_ops
from keras_maskrcnn_layers.ops.nms import TILE_SIZE
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


def greedy_nms_classes(boxes, scores, classes, iou_threshold, max_output_size, score_threshold=-np.inf):
    """`reference.greedy_nms` where only boxes of the same class suppress each other."""
    keep = []
    for i in np.argsort(-scores, kind="stable"):
        if not scores[i] > score_threshold:
            continue
        if all(classes[i] != classes[k] or reference.iou(boxes[i], boxes[k]) <= iou_threshold for k in keep):
            keep.append(int(i))
        if len(keep) == max_output_size:
            break
    return keep


def assert_matches(indices, count, expected_per_image):
    indices, count = to_numpy(indices), to_numpy(count)
    for b, expected in enumerate(expected_per_image):
        assert count[b] == len(expected), f"image {b}"
        assert indices[b, : count[b]].tolist() == expected, f"image {b}"
        assert np.all(indices[b, count[b] :] == 0), f"image {b}"


@pytest.mark.parametrize(
    "num_boxes",
    [1, 5, TILE_SIZE - 1, TILE_SIZE, TILE_SIZE + 1, 3 * TILE_SIZE - 17],
    ids=["1", "5", "tile-1", "tile", "tile+1", "3tiles-17"],
)
def test_matches_greedy_nms_across_tile_sizes(num_boxes):
    rng = np.random.default_rng(num_boxes)
    boxes = np.stack([clustered_boxes(rng, num_boxes, extent=60.0) for _ in range(3)])
    scores = rng.uniform(size=(3, num_boxes)).astype("float32")
    scores[2, rng.uniform(size=num_boxes) < 0.5] = -np.inf
    max_output_size = max(1, num_boxes // 4)
    indices, count = kml_ops.batched_nms(boxes, scores, max_output_size, 0.5)
    assert_matches(indices, count, [reference.greedy_nms(b, s, 0.5, max_output_size) for b, s in zip(boxes, scores)])


def test_images_stop_at_different_times():
    # Image 0 fills max_output_size in its first tile, image 1 keeps few boxes
    # spread over several tiles, image 2 has no candidate at all.
    rng = np.random.default_rng(5)
    n = 2 * TILE_SIZE + 40
    boxes = np.stack([clustered_boxes(rng, n, extent=2000.0), clustered_boxes(rng, n, extent=30.0), np.zeros((n, 4))])
    boxes = boxes.astype("float32")
    scores = rng.uniform(size=(3, n)).astype("float32")
    scores[1, rng.uniform(size=n) < 0.9] = 0.1
    scores[2] = -np.inf
    for max_output_size in (10, 60, n + 5):
        indices, count = kml_ops.batched_nms(boxes, scores, max_output_size, 0.6, score_threshold=0.2)
        expected = [
            reference.greedy_nms(b, s, 0.6, max_output_size, score_threshold=0.2) for b, s in zip(boxes, scores)
        ]
        assert_matches(indices, count, expected)
    assert to_numpy(count)[2] == 0


def test_tied_scores_keep_the_lower_index():
    # Few distinct scores and many near-duplicate boxes: the order among equal
    # scores (lower index first, as `ops.top_k`) decides which box survives.
    rng = np.random.default_rng(6)
    n = TILE_SIZE + 60
    boxes = np.stack([clustered_boxes(rng, n, extent=80.0) for _ in range(2)])
    scores = rng.integers(1, 5, size=(2, n)).astype("float32") / 4
    indices, count = kml_ops.batched_nms(boxes, scores, n, 0.4)
    assert_matches(indices, count, [reference.greedy_nms(b, s, 0.4, n) for b, s in zip(boxes, scores)])
    same = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]], "float32")
    indices, count = kml_ops.batched_nms(same, np.array([0.5, 0.7, 0.7], "float32"), 3, 0.5)
    assert to_numpy(indices).tolist() == [1, 0, 0] and int(to_numpy(count)) == 1


def test_chain_of_overlaps():
    # Box k overlaps box k + 1 (IoU 0.6) but not box k + 2 (IoU 1/3): greedy
    # keeps every other box. Each box's fate hangs on the one before it, the
    # longest chain of dependencies for the fixed point, across tile borders.
    n = 2 * TILE_SIZE + 3
    left = 2.5 * np.arange(n)
    boxes = np.stack([np.zeros(n), left, np.full(n, 10.0), left + 10.0], axis=-1).astype("float32")
    scores = np.linspace(1.0, 0.5, n).astype("float32")
    indices, count = kml_ops.batched_nms(boxes, scores, n, 0.5)
    kept = to_numpy(indices)[: int(to_numpy(count))].tolist()
    assert kept == list(range(0, n, 2)) == reference.greedy_nms(boxes, scores, 0.5, n)
    # Reversed scores: the chain is settled from its other end.
    indices, count = kml_ops.batched_nms(boxes, scores[::-1].copy(), n, 0.5)
    assert to_numpy(indices)[: int(to_numpy(count))].tolist() == list(range(n - 1, -1, -2))


def test_all_suppressed_by_the_first():
    boxes = np.tile(np.array([[5, 5, 50, 50]], "float32"), (TILE_SIZE + 9, 1))
    boxes[:, 2] += np.linspace(0, 1, len(boxes))
    scores = np.random.default_rng(7).uniform(size=len(boxes)).astype("float32")
    indices, count = kml_ops.batched_nms(boxes, scores, 20, 0.5)
    assert int(to_numpy(count)) == 1
    assert to_numpy(indices).tolist() == [int(np.argmax(scores))] + [0] * 19


def test_last_kept_slot_suppresses_the_next_tile():
    # Boxes 0, 1 and 2 are kept in tile 0 (the fillers are copies of box 0);
    # box 2, in the last filled slot, must suppress its copy in tile 1.
    disjoint = np.array([[0, 0, 10, 10], [0, 20, 10, 30], [0, 40, 10, 50]], "float32")
    fillers = np.tile(disjoint[:1], (TILE_SIZE - 3, 1))  # suppressed by box 0
    boxes = np.concatenate([disjoint, fillers, disjoint[2:]])
    scores = np.concatenate([[0.9, 0.8, 0.7], np.linspace(0.69, 0.61, TILE_SIZE - 3), [0.6]]).astype("float32")
    indices, count = kml_ops.batched_nms(boxes, scores, 4, 0.5)
    assert to_numpy(indices).tolist() == [0, 1, 2, 0]
    assert int(to_numpy(count)) == 3


def test_zero_area_boxes_and_iou_threshold_zero():
    boxes = np.array([[0, 0, 10, 10], [5, 5, 5, 5], [0, 0, 0, 0], [0, 0, 10, 10], [0, 10, 10, 20]], "float32")
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5], "float32")
    # Zero-area boxes overlap nothing; touching boxes have IoU 0, not above 0.
    indices, count = kml_ops.batched_nms(boxes, scores, 5, 0.0)
    assert to_numpy(indices)[: int(to_numpy(count))].tolist() == [0, 1, 2, 4]


@pytest.mark.parametrize("max_output_size", [3, 50])
def test_class_aware_matches_per_class_greedy(max_output_size):
    rng = np.random.default_rng(8 + max_output_size)
    n = TILE_SIZE + 77
    boxes = np.stack([clustered_boxes(rng, n, extent=50.0) for _ in range(2)])
    scores = rng.uniform(size=(2, n)).astype("float32")
    scores[rng.uniform(size=(2, n)) < 0.3] = -np.inf  # as DetectionLayer drops weak boxes
    classes = rng.integers(0, 4, size=(2, n)).astype("int32")
    indices, count = kml_ops.batched_nms(boxes, scores, max_output_size, 0.3, classes=classes)
    expected = [greedy_nms_classes(b, s, c, 0.3, max_output_size) for b, s, c in zip(boxes, scores, classes)]
    assert_matches(indices, count, expected)


def test_unbatched_equals_batched():
    rng = np.random.default_rng(9)
    boxes = clustered_boxes(rng, TILE_SIZE + 30)
    scores = rng.uniform(size=len(boxes)).astype("float32")
    classes = rng.integers(0, 3, size=len(boxes))
    single = kml_ops.batched_nms(boxes, scores, 40, 0.5, classes=classes)
    batched = kml_ops.batched_nms(boxes[None], scores[None], 40, 0.5, classes=classes[None])
    assert to_numpy(single[0]).shape == (40,) and to_numpy(single[1]).shape == ()
    np.testing.assert_array_equal(to_numpy(single[0]), to_numpy(batched[0])[0])
    assert int(to_numpy(single[1])) == int(to_numpy(batched[1])[0])


def test_no_boxes():
    indices, count = kml_ops.batched_nms(np.zeros((2, 0, 4), "float32"), np.zeros((2, 0), "float32"), 3)
    assert to_numpy(indices).tolist() == [[0, 0, 0], [0, 0, 0]]
    assert to_numpy(count).tolist() == [0, 0]


@pytest.mark.parametrize("with_classes", [False, True])
def test_compiled_equals_eager_across_tiles(with_classes):
    rng = np.random.default_rng(10)
    n = 2 * TILE_SIZE + 50
    boxes = np.stack([clustered_boxes(rng, n, extent=100.0) for _ in range(2)])
    scores = (rng.integers(0, 20, size=(2, n)) / 20).astype("float32")  # with ties
    # TensorFlow's eager top_k does not sort a row holding NaN once k is large.
    scores[1, : n // 2] = np.nan
    classes = rng.integers(0, 3, size=(2, n)).astype("int32") if with_classes else None

    def fn(b, s):
        return kml_ops.batched_nms(b, s, 90, 0.5, score_threshold=0.1, classes=classes)

    eager = [to_numpy(x) for x in fn(boxes, scores)]
    compiled = [to_numpy(x) for x in jit(fn)(boxes, scores)]
    for e, c in zip(eager, compiled):
        np.testing.assert_array_equal(c, e)
    if not with_classes:
        clean = np.nan_to_num(scores, nan=-np.inf)
        assert_matches(*eager, [reference.greedy_nms(b, s, 0.5, 90, score_threshold=0.1) for b, s in zip(boxes, clean)])

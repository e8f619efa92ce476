import math

import numpy as np
import pytest

import keras_maskrcnn_layers as kml
from tests import reference
from tests.backend_utils import to_numpy
from tests.layer_test_case import run_layer_test

STD = (0.1, 0.1, 0.2, 0.2)


# Every test feeds [2, 30] ROIs of 4 classes, so that the JAX backend
# compiles each eager op once for the file.
COUNT, CLASSES = 30, 4


def hand_case():
    """Two images, classes 0..2 used of 4, eight ROIs then padding; see the comments per row."""
    rois = np.zeros((2, COUNT, 4), "float32")
    probs = np.zeros((2, COUNT, CLASSES), "float32")
    deltas = np.zeros((2, COUNT, CLASSES, 4), "float32")
    rows = [
        # image 0, window (0, 0, 64, 64)
        ([10, 10, 30, 30], [0.05, 0.9, 0.05]),  # class 1, dy = 1 -> (12, 10, 32, 30): kept
        ([11, 11, 31, 31], [0.1, 0.8, 0.1]),  # class 1, IoU 0.82 with row 0: suppressed
        ([11, 11, 31, 31], [0.05, 0.2, 0.75]),  # same box, class 2: kept
        ([40, 40, 60, 60], [0.4, 0.6, 0.0]),  # score 0.6 < 0.7: dropped
        ([40, 40, 60, 60], [0.95, 0.05, 0.0]),  # background: dropped
        ([40, 40, 60, 60], [0.1, 0.05, 0.85]),  # class 2, width doubled -> (40, 30, 60, 70), clipped at 64
        ([0, 0, 0, 0], [0.0, 1.0, 0.0]),  # padding: dropped whatever its score
        ([0, 0, 0, 0], [1.0, 0.0, 0.0]),
    ]
    for k, (box, p) in enumerate(rows):
        rois[0, k], probs[0, k, :3] = box, p
    deltas[0, 0, 1] = [1.0, 0.0, 0.0, 0.0]
    deltas[0, 0, 2] = [0.0, 0.0, 5.0, 5.0]  # deltas of other classes are not used
    deltas[0, 5, 2] = [0.0, 0.0, 0.0, math.log(2.0) / 0.2]
    # image 1, window (8, 8, 48, 56): two boxes clipped to it, the rest background.
    rois[1, :2] = [[0, 0, 20, 20], [30, 30, 60, 70]]
    probs[1, :2, :3] = [[0.05, 0.9, 0.05], [0.1, 0.1, 0.8]]
    rois[1, 2:8] = [5, 5, 15, 15]
    probs[1, 2:8, :3] = [0.9, 0.1, 0.0]
    window = np.array([[0, 0, 64, 64], [8, 8, 48, 56]], "float32")
    return rois, probs, deltas, window


def test_hand_case():
    rois, probs, deltas, window = hand_case()
    boxes, class_ids, scores, count = (to_numpy(o) for o in kml.layers.DetectionLayer(max_detections=5)(
        rois, probs, deltas, window
    ))
    assert count.tolist() == [3, 2] and count.dtype == np.int32
    np.testing.assert_allclose(
        boxes[0], [[12, 10, 32, 30], [40, 30, 60, 64], [11, 11, 31, 31], [0, 0, 0, 0], [0, 0, 0, 0]], atol=1e-4
    )
    assert class_ids.tolist() == [[1, 2, 2, 0, 0], [1, 2, 0, 0, 0]]
    np.testing.assert_allclose(scores, [[0.9, 0.85, 0.75, 0, 0], [0.9, 0.8, 0, 0, 0]], rtol=1e-6)
    np.testing.assert_allclose(boxes[1], [[8, 8, 20, 20], [30, 30, 48, 56], [0] * 4, [0] * 4, [0] * 4], atol=1e-4)
    for b in range(2):
        ref = reference.detections(rois[b], probs[b], deltas[b], window[b], 0.7, 0.3, 5, STD)
        np.testing.assert_allclose(boxes[b], ref[0], atol=1e-4)
        assert class_ids[b].tolist() == ref[1].tolist() and count[b] == ref[3]


def test_image_shape_max_detections_and_thresholds():
    rois, probs, deltas, window = hand_case()
    layer = kml.layers.DetectionLayer(max_detections=2)
    boxes, class_ids, scores, count = (to_numpy(o) for o in layer(rois, probs, deltas, image_shape=(64, 64)))
    assert count.tolist() == [2, 2]
    assert class_ids.tolist() == [[1, 2], [1, 2]]
    np.testing.assert_allclose(boxes[0], [[12, 10, 32, 30], [40, 30, 60, 64]], atol=1e-4)
    np.testing.assert_allclose(boxes[1], [[0, 0, 20, 20], [30, 30, 60, 64]], atol=1e-4)

    # Thresholds are settings: min_confidence 0.5 admits row 3 (0.6); NMS at 0.9 keeps row 1 (IoU 0.82).
    layer = kml.layers.DetectionLayer(max_detections=8, min_confidence=0.5, nms_iou_threshold=0.9)
    _, class_ids, scores, count = (to_numpy(o) for o in layer(rois, probs, deltas, window))
    assert count[0] == 5
    np.testing.assert_allclose(scores[0, :5], [0.9, 0.85, 0.8, 0.75, 0.6], rtol=1e-6)


def random_case(seed, batch=2, count=COUNT, classes=CLASSES):
    rng = np.random.default_rng(seed)
    yx = rng.uniform(0, 80, size=(batch, count, 2))
    rois = np.concatenate([yx, yx + rng.uniform(8, 40, size=(batch, count, 2))], axis=-1).astype("float32")
    rois[:, -3:] = 0  # padding rows
    logits = rng.normal(0, 2.0, size=(batch, count, classes))
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    deltas = rng.normal(0, 1.0, size=(batch, count, classes, 4)).astype("float32")
    window = np.array([[0, 0, 96, 96], [4, 8, 90, 80]], "float32")[:batch]
    return rois, probs.astype("float32"), deltas, window


def test_matches_numpy_reference():
    rois, probs, deltas, window = random_case(0)
    layer = kml.layers.DetectionLayer(max_detections=10, min_confidence=0.4, nms_iou_threshold=0.3)
    boxes, class_ids, scores, count = (to_numpy(o) for o in layer(rois, probs, deltas, window))
    for b in range(2):
        ref_boxes, ref_classes, ref_scores, ref_count = reference.detections(
            rois[b], probs[b], deltas[b], window[b], 0.4, 0.3, 10, STD
        )
        assert ref_count >= 4, "the case must keep several boxes"
        assert count[b] == ref_count
        np.testing.assert_allclose(boxes[b], ref_boxes, atol=1e-3)
        np.testing.assert_array_equal(class_ids[b], ref_classes)
        np.testing.assert_allclose(scores[b], ref_scores, rtol=1e-6)


def test_layer_checks():
    rois, probs, deltas, window = random_case(1)
    run_layer_test(
        kml.layers.DetectionLayer(max_detections=6, min_confidence=0.4),
        [rois, probs, deltas, window],
        expected_output_shapes=[(2, 6, 4), (2, 6), (2, 6), (2,)],
        float32_outputs=(0, 2),
        atol=1e-4,
    )


def test_all_background_gives_zeros():
    rois, probs, deltas, window = random_case(2)
    probs = np.zeros_like(probs)
    probs[..., 0] = 1.0
    out = [to_numpy(o) for o in kml.layers.DetectionLayer(max_detections=4)(rois, probs, deltas, window)]
    assert out[3].tolist() == [0, 0]
    for o in out[:3]:
        assert np.all(o == 0)


def test_bad_arguments():
    for kwargs, name in [
        ({"max_detections": 0}, "max_detections"),
        ({"max_detections": 10.0}, "max_detections"),
        ({"min_confidence": 1.5}, "min_confidence"),
        ({"min_confidence": "high"}, "min_confidence"),
        ({"nms_iou_threshold": -0.1}, "nms_iou_threshold"),
        ({"box_std": (0.1, 0.1, 0.2)}, "box_std"),
        ({"box_std": (0.1, 0.0, 0.2, 0.2)}, "box_std"),
    ]:
        with pytest.raises(ValueError, match=name):
            kml.layers.DetectionLayer(**kwargs)
    rois, probs, deltas, _ = hand_case()
    layer = kml.layers.DetectionLayer()
    with pytest.raises(ValueError, match="window"):
        layer(rois, probs, deltas)
    with pytest.raises(ValueError, match="image_shape"):
        layer(rois, probs, deltas, image_shape=(64,))


def test_scalar_box_std_raises_value_error():
    with pytest.raises(ValueError, match="box_std"):
        kml.layers.DetectionLayer(box_std=0.1)


def test_bad_inputs():
    rois, probs, deltas, window = hand_case()
    layer = kml.layers.DetectionLayer()
    with pytest.raises(ValueError, match="class counts K"):
        layer(rois, probs, deltas[:, :, :2], window)
    with pytest.raises(ValueError, match="ROI counts N"):
        layer(rois[:, :4], probs, deltas, window)
    with pytest.raises(ValueError, match=r"`deltas` must be \[B, N, K, 4\]"):
        layer(rois, probs, deltas[..., 0], window)
    xyxy = rois.copy()
    xyxy[0, 0] = [30, 10, 10, 30]
    with pytest.raises(ValueError, match="xyxy"):
        layer(xyxy, probs, deltas, window)
    nan = probs.copy()
    nan[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="class_probabilities"):
        layer(rois, nan, deltas, window)
    with pytest.raises(ValueError, match="logits"):
        layer(rois, probs * 10 - 5, deltas, window)
    inf = deltas.copy()
    inf[0, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="deltas"):
        layer(rois, probs, inf, window)


def test_no_rois_no_detections():
    layer = kml.layers.DetectionLayer(max_detections=4)
    out = [to_numpy(o) for o in layer(np.zeros((2, 0, 4), "float32"), np.zeros((2, 0, 3), "float32"),
                                       np.zeros((2, 0, 3, 4), "float32"), image_shape=(64, 64))]
    assert [o.shape for o in out] == [(2, 4, 4), (2, 4), (2, 4), (2,)]
    assert all(np.all(o == 0) for o in out)

import math

import numpy as np
import pytest

from keras_maskrcnn_layers import ops as kml_ops
from tests import reference
from tests.backend_utils import jit, to_numpy

STD = (0.1, 0.1, 0.2, 0.2)


def random_boxes(rng, count, extent=100.0):
    yx = rng.uniform(0, extent, size=(count, 2))
    hw = rng.uniform(1, extent, size=(count, 2))
    return np.concatenate([yx, yx + hw], axis=-1).astype("float32")


def test_encode_hand_computed():
    anchors = np.array([[0, 0, 10, 20]], "float32")
    boxes = np.array([[5, 10, 25, 30]], "float32")
    # Anchor centre (5, 10), size (10, 20); box centre (15, 20), size (20, 20).
    expected = [[(15 - 5) / 10 / 0.1, (20 - 10) / 20 / 0.1, math.log(2.0) / 0.2, math.log(1.0) / 0.2]]
    np.testing.assert_allclose(to_numpy(kml_ops.encode_boxes(boxes, anchors, STD)), expected, rtol=1e-5)


def test_decode_matches_reference_and_inverts_encode():
    rng = np.random.default_rng(0)
    anchors = random_boxes(rng, 200)
    boxes = random_boxes(rng, 200)
    deltas = to_numpy(kml_ops.encode_boxes(boxes, anchors, STD))
    np.testing.assert_allclose(to_numpy(kml_ops.decode_boxes(deltas, anchors, STD)), boxes, atol=1e-3)
    noise = rng.normal(size=(200, 4)).astype("float32")
    np.testing.assert_allclose(
        to_numpy(kml_ops.decode_boxes(noise, anchors, STD)), reference.decode(noise, anchors, STD), rtol=1e-4, atol=1e-3
    )


def test_decode_clamps_huge_scale_deltas():
    anchors = np.array([[0, 0, 16, 16]], "float32")
    deltas = np.array([[0, 0, 1e4, 1e4]], "float32")
    out = to_numpy(kml_ops.decode_boxes(deltas, anchors, STD))
    assert np.all(np.isfinite(out))
    # exp(log(1000 / 16)) * 16 = 1000 px.
    np.testing.assert_allclose(out[0, 2] - out[0, 0], 1000.0, rtol=1e-4)


def test_decode_broadcasts_and_compiles():
    rng = np.random.default_rng(1)
    anchors = random_boxes(rng, 50)
    deltas = rng.normal(size=(3, 50, 4)).astype("float32")
    eager = to_numpy(kml_ops.decode_boxes(deltas, anchors))
    compiled = to_numpy(jit(lambda d, a: kml_ops.decode_boxes(d, a))(deltas, anchors))
    np.testing.assert_allclose(compiled, eager, atol=1e-5)
    assert eager.shape == (3, 50, 4)


def test_clip_boxes():
    boxes = np.array([[-5, -1, 50, 70], [3, 4, 5, 6], [100, 100, 120, 130]], "float32")
    out = to_numpy(kml_ops.clip_boxes(boxes, (32, 64)))
    np.testing.assert_array_equal(out, [[0, 0, 32, 64], [3, 4, 5, 6], [32, 64, 32, 64]])


def test_pairwise_iou_hand_computed():
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 0]], "float32")
    b = np.array([[0, 0, 10, 10], [5, 5, 15, 15], [20, 20, 30, 30]], "float32")
    np.testing.assert_allclose(
        to_numpy(kml_ops.pairwise_iou(a, b)), [[1.0, 25 / 175, 0.0], [0.0, 0.0, 0.0]], rtol=1e-6
    )


@pytest.mark.parametrize("box_std", [(0.1, 0.1, 0.2), (0.1, 0.1, 0.0, 0.2), (-1, 1, 1, 1)])
def test_bad_box_std(box_std):
    with pytest.raises(ValueError, match="box_std"):
        kml_ops.decode_boxes(np.zeros((1, 4)), np.ones((1, 4)), box_std)


@pytest.mark.parametrize("image_shape", [(0, 10), (10,), "ab", (10.5, 3)])
def test_bad_image_shape(image_shape):
    with pytest.raises(ValueError, match="image_shape"):
        kml_ops.clip_boxes(np.zeros((1, 4), "float32"), image_shape)

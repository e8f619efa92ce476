import math

import keras
import numpy as np
import pytest

import keras_maskrcnn_layers as kml
from tests.backend_utils import to_numpy
from tests.layer_test_case import run_layer_test

STRIDES = (4, 8, 16, 32, 64)
SCALES = (8, 16, 32, 64, 128)
RATIOS = (0.5, 1.0, 2.0)


def pyramid(image_shape, channels, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    return [
        rng.normal(size=(batch, math.ceil(image_shape[0] / s), math.ceil(image_shape[1] / s), channels)).astype(
            "float32"
        )
        for s in STRIDES
    ]


IMAGE, CHANNELS, FILTERS = (64, 64), 4, 8


def test_layer_checks_and_probabilities():
    # The head shares its weights over levels and knows nothing of their
    # geometry; five levels of one size make the JAX backend compile each
    # eager op once per dtype instead of once per level and dtype.
    rng = np.random.default_rng(0)
    features = [rng.normal(size=(2, 4, 6, CHANNELS)).astype("float32") for _ in STRIDES]
    total = 5 * 4 * 6 * 3
    logits, probs, deltas = run_layer_test(
        kml.layers.RPNHead(3, filters=FILTERS),
        [features],
        expected_output_shapes=[(2, total), (2, total), (2, total, 4)],
        float32_outputs=(0, 1, 2),
        atol=1e-4,
    )
    assert logits.dtype == probs.dtype == deltas.dtype == np.float32
    np.testing.assert_allclose(probs, 1 / (1 + np.exp(-logits.astype(np.float64))), rtol=1e-5, atol=1e-6)


def test_output_size_matches_anchor_generator():
    for image_shape, anchor_stride in [((64, 96), 1), ((64, 96), 2), ((40, 24), 1), ((40, 24), 3)]:
        anchors = kml.AnchorGenerator(scales=SCALES, ratios=RATIOS, strides=STRIDES, anchor_stride=anchor_stride)
        head = kml.layers.RPNHead(3, filters=4, anchor_stride=anchor_stride)
        levels = [keras.Input(f.shape[1:]) for f in pyramid(image_shape, 2, batch=1)]
        logits, probs, deltas = head(levels)
        expected = anchors.num_anchors(image_shape)
        assert tuple(logits.shape) == tuple(probs.shape) == (None, expected), (image_shape, anchor_stride)
        assert tuple(deltas.shape) == (None, expected, 4)


def test_order_matches_anchor_generator():
    # Channel 0 of every level holds a code of (level, row, column); the shared
    # 3x3 conv copies it through its centre tap (ReLU keeps it, it is >= 0),
    # the objectness conv adds 0.25 * k for anchor k, the box conv 10 k + j
    # for coordinate j. Each anchor's (level, cell, ratio) is then read back
    # from the box AnchorGenerator puts at the same index.
    image_shape, channels, filters, a = IMAGE, CHANNELS, FILTERS, len(RATIOS)

    def code(level, row, col):
        return 1000.0 * level + 32.0 * row + col

    features = []
    for level, s in enumerate(STRIDES):
        rows, cols = math.ceil(image_shape[0] / s), math.ceil(image_shape[1] / s)
        f = np.zeros((2, rows, cols, channels), "float32")
        f[:, :, :, 0] = code(level, *np.mgrid[:rows, :cols])
        f[:, :, :, 1:] = -5.0  # channels the kernels ignore
        features.append(f)
    head = kml.layers.RPNHead(a, filters=filters)
    head(features)
    shared = np.zeros((3, 3, channels, filters), "float32")
    shared[1, 1, 0, 0] = 1.0
    head.shared.set_weights([shared, np.zeros(filters, "float32")])
    objectness = np.zeros((1, 1, filters, a), "float32")
    objectness[0, 0, 0, :] = 1.0
    head.objectness.set_weights([objectness, 0.25 * np.arange(a, dtype="float32")])
    box = np.zeros((1, 1, filters, 4 * a), "float32")
    box[0, 0, 0, :] = 1.0
    box_bias = (10 * np.arange(a)[:, None] + np.arange(4)[None, :]).reshape(-1).astype("float32")
    head.box.set_weights([box, box_bias])
    logits, probs, deltas = (to_numpy(o)[0] for o in head(features))

    anchors = to_numpy(kml.AnchorGenerator(scales=SCALES, ratios=RATIOS, strides=STRIDES)(image_shape=image_shape))
    assert len(anchors) == len(logits)
    for i, (y1, x1, y2, x2) in enumerate(anchors.astype(np.float64)):
        h, w = y2 - y1, x2 - x1
        level = SCALES.index(int(round(math.sqrt(h * w))))
        k = RATIOS.index(min(RATIOS, key=lambda r: abs(r - w / h)))
        row, col = int(round((y1 + y2) / 2 / STRIDES[level])), int(round((x1 + x2) / 2 / STRIDES[level]))
        expected = code(level, row, col)
        assert logits[i] == pytest.approx(expected + 0.25 * k, abs=1e-3), (i, level, row, col, k)
        np.testing.assert_allclose(deltas[i], expected + 10 * k + np.arange(4), atol=1e-3)


def test_bad_arguments():
    for kwargs, name in [
        ({"anchors_per_location": 0}, "anchors_per_location"),
        ({"anchors_per_location": 1.5}, "anchors_per_location"),
        ({"anchors_per_location": 3, "filters": 0}, "filters"),
        ({"anchors_per_location": 3, "anchor_stride": 0}, "anchor_stride"),
        ({"anchors_per_location": 3, "anchor_stride": "2"}, "anchor_stride"),
    ]:
        with pytest.raises(ValueError, match=name):
            kml.layers.RPNHead(**kwargs)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="a traced unknown batch size is TensorFlow's")
@pytest.mark.parametrize("anchor_stride", [1, 2])
def test_anchor_count_stays_static_when_the_batch_size_is_not(anchor_stride):
    # Evaluation pipelines keep a last partial batch, so their batch size is
    # traced as unknown; ProposalLayer needs the anchor count all the same.
    import tensorflow as tf

    head = kml.layers.RPNHead(3, filters=FILTERS, anchor_stride=anchor_stride)
    features = pyramid(IMAGE, CHANNELS)
    expected = [tuple(to_numpy(t).shape[1:]) for t in head(features)]
    specs = [tf.TensorSpec((None, *f.shape[1:]), "float32") for f in features]
    traced = tf.function(lambda *maps: head(list(maps)), input_signature=specs).get_concrete_function()
    assert [tuple(t.shape.as_list()) for t in traced.structured_outputs] == [(None, *shape) for shape in expected]


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="a traced unknown map size is TensorFlow's")
def test_maps_of_unknown_size_still_trace():
    import tensorflow as tf

    head = kml.layers.RPNHead(3, filters=FILTERS)
    specs = [tf.TensorSpec((None, None, None, CHANNELS), "float32")] * 2
    traced = tf.function(lambda *maps: head(list(maps)), input_signature=specs).get_concrete_function()
    assert [t.shape.as_list() for t in traced.structured_outputs] == [[None, None], [None, None], [None, None, 4]]
    maps = pyramid(IMAGE, CHANNELS)[:2]
    eager = [to_numpy(t) for t in head(maps)]
    for got, expected in zip(traced(*maps), eager):
        np.testing.assert_allclose(to_numpy(got), expected, rtol=1e-5, atol=1e-6)

import keras
import numpy as np
import pytest

import keras_maskrcnn_layers as kml
from tests import reference
from tests.backend_utils import to_numpy
from tests.layer_test_case import run_layer_test

IMAGE = 128


def pyramid(rng, batch=2, channels=4):
    return [rng.normal(size=(batch, IMAGE // 2**lvl, IMAGE // 2**lvl, channels)).astype("float32") for lvl in (2, 3, 4, 5)]


def boxes_on_all_levels(rng, batch=2, count=24):
    centres = rng.uniform(-20, IMAGE + 20, size=(batch, count, 2))
    sides = np.exp(rng.uniform(np.log(4), np.log(520), size=(batch, count, 2)))
    boxes = np.concatenate([centres - sides / 2, centres + sides / 2], axis=-1).astype("float32")
    boxes[:, 0] = (-20, -30, 480, 470)  # level 5
    boxes[:, 1] = (10, 10, 20, 20)  # level 2
    boxes[:, 2] = 0.0  # padding
    boxes[:, 3] = (50, 60, 50, 60)  # zero area
    return boxes


@pytest.mark.parametrize("pool_size", [7, (14, 6)])
@pytest.mark.parametrize("sampling_ratio, aligned", [(2, True), (1, False)])
def test_matches_reference(pool_size, sampling_ratio, aligned):
    rng = np.random.default_rng(0)
    features, boxes = pyramid(rng), boxes_on_all_levels(rng)
    layer = kml.PyramidROIAlign(pool_size=pool_size, sampling_ratio=sampling_ratio, aligned=aligned)
    out = to_numpy(layer(boxes, features))
    pool = (pool_size, pool_size) if isinstance(pool_size, int) else pool_size
    expected = reference.multilevel_roi_align(features, boxes, pool, sampling_ratio, aligned)
    np.testing.assert_allclose(out, expected, atol=1e-4, rtol=1e-4)


def test_other_level_range():
    rng = np.random.default_rng(1)
    features = [rng.normal(size=(1, IMAGE // 2**lvl, IMAGE // 2**lvl, 2)).astype("float32") for lvl in (3, 4, 5, 6)]
    boxes = boxes_on_all_levels(rng, batch=1)
    out = to_numpy(kml.PyramidROIAlign(pool_size=3, min_level=3, max_level=6)(boxes, features))
    expected = reference.multilevel_roi_align(features, boxes, (3, 3), 2, True, min_level=3, max_level=6)
    np.testing.assert_allclose(out, expected, atol=1e-4, rtol=1e-4)


def test_layer_checks():
    rng = np.random.default_rng(2)
    layer = kml.PyramidROIAlign(pool_size=(5, 4))
    run_layer_test(
        layer,
        [boxes_on_all_levels(rng, count=10), pyramid(rng, channels=3)],
        expected_output_shapes=[(2, 10, 5, 4, 3)],
        atol=1e-4,
    )


def test_layer_checks_with_a_flat_table():
    rng = np.random.default_rng(5)
    features = pyramid(rng, channels=3)
    boxes = boxes_on_all_levels(rng, count=10)
    table = to_numpy(kml.FlattenPyramid()(features))
    out = run_layer_test(
        kml.PyramidROIAlign(pool_size=(5, 4)),
        [boxes, features, table],
        expected_output_shapes=[(2, 10, 5, 4, 3)],
        atol=1e-4,
    )
    expected = reference.multilevel_roi_align(features, boxes, (5, 4), 2, True)
    np.testing.assert_allclose(out[0], expected, atol=1e-4, rtol=1e-4)


def test_flatten_pyramid_layer_checks():
    rng = np.random.default_rng(6)
    features = pyramid(rng, channels=3)
    out = run_layer_test(kml.FlattenPyramid(), [features], expected_output_shapes=[(2, 32**2 + 16**2 + 8**2 + 4**2, 3)])
    expected = np.concatenate([f.reshape(2, -1, 3) for f in features], axis=1)
    np.testing.assert_array_equal(out[0], expected)
    with pytest.raises(ValueError, match="list"):
        kml.FlattenPyramid()(features[0])


def test_one_table_serves_two_layers_in_a_training_step():
    rng = np.random.default_rng(7)
    image = keras.Input((IMAGE, IMAGE, 3))
    rois = keras.Input((6, 4))
    x, levels = image, []
    for lvl in range(1, 6):
        x = keras.layers.Conv2D(4, 3, strides=2, padding="same")(x)
        if lvl >= 2:
            levels.append(x)
    table = kml.FlattenPyramid()(levels)
    small = kml.PyramidROIAlign(pool_size=3)(rois, levels, flat_features=table)
    large = kml.PyramidROIAlign(pool_size=6)(rois, levels, flat_features=table)
    model = keras.Model([image, rois], [small, large])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse", jit_compile=True)
    before = [w.copy() for w in model.get_weights()]
    images = rng.uniform(size=(2, IMAGE, IMAGE, 3)).astype("float32")
    targets = [np.ones((2, 6, 3, 3, 4), "float32"), np.ones((2, 6, 6, 6, 4), "float32")]
    model.train_on_batch([images, boxes_on_all_levels(rng, count=6)], targets)
    # The gradient reaches every level's conv through the shared table.
    assert all(not np.allclose(b, a) for b, a in zip(before, model.get_weights()))


def test_gradient_reaches_a_backbone_in_a_training_step():
    rng = np.random.default_rng(3)
    image = keras.Input((IMAGE, IMAGE, 3))
    rois = keras.Input((6, 4))
    x = image
    levels = []
    for lvl in range(1, 6):
        x = keras.layers.Conv2D(4, 3, strides=2, padding="same")(x)
        if lvl >= 2:
            levels.append(x)
    pooled = kml.PyramidROIAlign(pool_size=3)(rois, levels)
    model = keras.Model([image, rois], pooled)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse", jit_compile=True)
    before = [w.copy() for w in model.get_weights()]
    images = rng.uniform(size=(2, IMAGE, IMAGE, 3)).astype("float32")
    model.train_on_batch([images, boxes_on_all_levels(rng, count=6)], np.ones((2, 6, 3, 3, 4), "float32"))
    # Every level got a box, so every conv feeding a level has a gradient.
    assert all(not np.allclose(b, a) for b, a in zip(before, model.get_weights()))


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"pool_size": 0}, "pool_size"),
        ({"pool_size": -7}, "pool_size"),
        ({"pool_size": (7, 0)}, "pool_size"),
        ({"pool_size": "7"}, "pool_size"),
        ({"sampling_ratio": 0}, "sampling_ratio"),
        ({"aligned": "yes"}, "aligned"),
        ({"min_level": 5, "max_level": 2}, "max_level"),
        ({"canonical_size": 0}, "canonical_size"),
    ],
)
def test_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        kml.PyramidROIAlign(**kwargs)


def test_bad_argument_message_quotes_the_value_given():
    with pytest.raises(ValueError, match=r"Received: pool_size=-7$"):
        kml.PyramidROIAlign(pool_size=-7)


def test_bad_inputs():
    rng = np.random.default_rng(4)
    features, boxes = pyramid(rng), boxes_on_all_levels(rng)
    layer = kml.PyramidROIAlign()
    with pytest.raises(ValueError, match="4 maps"):
        layer(boxes, features[:3])
    flipped = boxes.copy()
    flipped[0, 5] = (50, 50, 10, 60)
    with pytest.raises(ValueError, match="xyxy"):
        kml.PyramidROIAlign()(flipped, features)
    nan = boxes.copy()
    nan[1, 4, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        kml.PyramidROIAlign()(nan, features)
    with pytest.raises(ValueError, match="boxes"):
        kml.PyramidROIAlign()(boxes[..., :3], features)
    table = to_numpy(kml.FlattenPyramid()(features))
    with pytest.raises(ValueError, match="one row per map cell"):
        kml.PyramidROIAlign()(boxes, features, flat_features=table[:, 1:])

import math

import keras
import numpy as np
import pytest

import keras_maskrcnn_layers as kml
from tests import reference
from tests.backend_utils import to_numpy
from tests.layer_test_case import check_config_round_trip, run_layer_test


@pytest.mark.parametrize("image_shape", [(128, 128), (100, 60), (1024, 1024)])
@pytest.mark.parametrize("anchor_stride", [1, 2])
def test_matches_matterport_layout(image_shape, anchor_stride):
    scales, ratios, strides = (32, 64, 128, 256, 512), (0.5, 1, 2), (4, 8, 16, 32, 64)
    layer = kml.AnchorGenerator(scales=scales, ratios=ratios, strides=strides, anchor_stride=anchor_stride)
    shapes = [(math.ceil(image_shape[0] / s), math.ceil(image_shape[1] / s)) for s in strides]
    expected = reference.matterport_pyramid_anchors(scales, ratios, shapes, strides, anchor_stride)
    out = to_numpy(layer(image_shape=image_shape))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-3)
    assert layer.num_anchors(image_shape) == len(expected)


def test_several_scales_per_level_and_offset():
    scales = ((8, 11), (16, 22), (32, 44))
    layer = kml.AnchorGenerator(scales=scales, ratios=(0.5, 1.0, 2.0), strides=(4, 8, 16), offset=0.5)
    out = to_numpy(layer(image_shape=(40, 24)))
    expected = reference.anchors_by_loops(scales, (0.5, 1.0, 2.0), (4, 8, 16), (40, 24), 1, 0.5)
    np.testing.assert_allclose(out, expected, atol=1e-4)
    assert layer.anchors_per_location == 6


def test_order_matches_a_reshaped_rpn_head():
    # An RPN output [1, H, W, A * 4] reshaped to [1, H * W * A, 4] puts anchor a
    # of cell (r, c) at row (r * W + c) * A + a: check the centre of that row.
    layer = kml.AnchorGenerator(scales=(16,), ratios=(0.5, 1.0, 2.0), strides=(8,), offset=0.5)
    out = to_numpy(layer(image_shape=(32, 48)))
    rows, cols, a = 4, 6, 3
    assert out.shape == (rows * cols * a, 4)
    for r, c, k in [(0, 0, 0), (1, 2, 1), (3, 5, 2)]:
        box = out[(r * cols + c) * a + k]
        np.testing.assert_allclose(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), ((r + 0.5) * 8, (c + 0.5) * 8))
        h, w = box[2] - box[0], box[3] - box[1]
        np.testing.assert_allclose(w / h, (0.5, 1.0, 2.0)[k], rtol=1e-5)
        np.testing.assert_allclose(math.sqrt(h * w), 16, rtol=1e-5)


def test_image_tensor_gives_the_same_anchors():
    layer = kml.AnchorGenerator(scales=(8, 16, 32, 64, 128))
    from_shape = to_numpy(layer(image_shape=(64, 96)))
    from_images = to_numpy(layer(np.zeros((2, 64, 96, 3), "float32")))
    np.testing.assert_array_equal(from_images, from_shape)


def test_layer_checks():
    layer = kml.AnchorGenerator(scales=(8, 16, 32, 64, 128))
    run_layer_test(
        layer,
        [np.zeros((2, 64, 64, 3), "float32")],
        expected_output_shapes=[(layer.num_anchors((64, 64)), 4)],
        float32_outputs=(0,),
        outputs_have_batch=False,
    )


def test_symbolic_output_has_no_batch_axis():
    layer = kml.AnchorGenerator(scales=(8, 16, 32, 64, 128))
    anchors = layer(keras.Input((64, 64, 3)))
    assert tuple(anchors.shape) == (layer.num_anchors((64, 64)), 4)


def test_mixed_precision_keeps_float32():
    layer = kml.AnchorGenerator(dtype="mixed_float16")
    assert keras.backend.standardize_dtype(layer(image_shape=(256, 256)).dtype) == "float32"


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"scales": (32, 64), "strides": (4, 8, 16)}, "scales"),
        ({"scales": ((8, 16), (32,)), "strides": (4, 8)}, "scales"),
        ({"scales": (32, -64), "strides": (4, 8)}, "scales"),
        ({"scales": (), "strides": ()}, "scales"),
        ({"ratios": (0.5, 0.0)}, "ratios"),
        ({"ratios": ()}, "ratios"),
        ({"strides": (4, 8, 16, 32, 0)}, "strides"),
        ({"strides": (4, 8, 16, 32, 6.5)}, "strides"),
        ({"anchor_stride": 0}, "anchor_stride"),
        ({"offset": float("nan")}, "offset"),
    ],
)
def test_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        kml.AnchorGenerator(**kwargs)


def test_bad_call():
    layer = kml.AnchorGenerator()
    with pytest.raises(ValueError, match="image_shape"):
        layer(image_shape=(0, 64))
    with pytest.raises(ValueError, match="image_shape"):
        layer()


def test_config_keeps_tuple_scales():
    layer = kml.AnchorGenerator(scales=((8, 12), (16, 24)), strides=(4, 8))
    clone = check_config_round_trip(layer)
    np.testing.assert_array_equal(to_numpy(clone(image_shape=(32, 32))), to_numpy(layer(image_shape=(32, 32))))

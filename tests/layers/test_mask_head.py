import numpy as np
import pytest

import keras_maskrcnn_layers as kml
from tests.backend_utils import to_numpy
from tests.layer_test_case import run_layer_test


@pytest.mark.parametrize("pool, factor", [(14, 2), (14, 4), (28, 2), (28, 4), (7, 1)])
@pytest.mark.parametrize("upsample", ["transpose", "bilinear", "nearest"])
def test_output_resolution(pool, factor, upsample):
    head = kml.MaskHead(num_classes=3, num_convs=1, conv_filters=4, upsample=upsample, upsample_factor=factor)
    out = to_numpy(head(np.random.default_rng(0).normal(size=(1, 2, pool, pool, 5)).astype("float32")))
    assert out.shape == (1, 2, pool * factor, pool * factor, 3)
    assert np.all((out >= 0) & (out <= 1)), "sigmoid probabilities"


def test_class_agnostic_has_one_channel():
    head = kml.MaskHead(num_classes=7, num_convs=0, conv_filters=4, class_agnostic=True)
    assert to_numpy(head(np.zeros((2, 3, 4, 4, 2), "float32"))).shape == (2, 3, 8, 8, 1)


@pytest.mark.parametrize("upsample", ["transpose", "bilinear"])
def test_layer_checks(upsample):
    rng = np.random.default_rng(1)
    layer = kml.MaskHead(num_classes=2, num_convs=2, conv_filters=8, upsample=upsample, upsample_factor=2)
    run_layer_test(
        layer,
        [rng.normal(size=(2, 3, 7, 7, 4)).astype("float32")],
        expected_output_shapes=[(2, 3, 14, 14, 2)],
        atol=1e-5,
    )


def test_rois_are_independent():
    rng = np.random.default_rng(2)
    head = kml.MaskHead(num_classes=2, num_convs=2, conv_filters=4)
    x = rng.normal(size=(2, 3, 6, 6, 3)).astype("float32")
    full = to_numpy(head(x))
    single = to_numpy(head(x[1:2, 2:3]))
    np.testing.assert_allclose(single[0, 0], full[1, 2], atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"num_classes": 0}, "num_classes"),
        ({"num_classes": 2, "upsample": "cubic"}, "upsample"),
        ({"num_classes": 2, "upsample_factor": 0}, "upsample_factor"),
        ({"num_classes": 2, "upsample_factor": 1.5}, "upsample_factor"),
        ({"num_classes": 2, "num_convs": -1}, "num_convs"),
        ({"num_classes": 2, "conv_filters": 0}, "conv_filters"),
        ({"num_classes": 2, "class_agnostic": 1}, "class_agnostic"),
    ],
)
def test_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        kml.MaskHead(**kwargs)


def test_bad_input_rank():
    with pytest.raises(ValueError, match="roi_features"):
        kml.MaskHead(num_classes=2)(np.zeros((2, 7, 7, 4), "float32"))

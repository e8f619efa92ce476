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
        float32_outputs=(0,),
        atol=1e-5,
    )


def test_class_ids_select_each_rois_mask():
    rng = np.random.default_rng(3)
    head = kml.MaskHead(num_classes=3, num_convs=1, conv_filters=4)
    x = rng.normal(size=(2, 3, 7, 7, 4)).astype("float32")
    class_ids = np.array([[0, 1, 2], [2, 2, 1]], "int32")
    every = to_numpy(head(x))
    chosen = to_numpy(head(x, class_ids))
    assert chosen.shape == (2, 3, 14, 14)
    for b in range(2):
        for n in range(3):
            np.testing.assert_allclose(chosen[b, n], every[b, n, :, :, class_ids[b, n]], atol=1e-6)


def test_class_ids_out_of_range():
    head = kml.MaskHead(num_classes=3, num_convs=0, conv_filters=4)
    with pytest.raises(ValueError, match="class_ids"):
        head(np.zeros((1, 2, 7, 7, 4), "float32"), np.array([[1, 3]], "int32"))


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_sigmoid_runs_in_float32(policy):
    # One output channel whose logit is exactly 9 (bias 9, zero kernel): in
    # float16 or bfloat16 a sigmoid would round it to 1.
    head = kml.MaskHead(num_classes=1, num_convs=0, conv_filters=4, upsample_factor=1, dtype=policy)
    x = np.zeros((1, 1, 2, 2, 4), "float32")
    head(x)
    head.predictor.kernel.assign(np.zeros(head.predictor.kernel.shape))
    head.predictor.bias.assign(np.full(head.predictor.bias.shape, 9.0))
    out = to_numpy(head(x))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, 1.0 / (1.0 + np.exp(-9.0)), rtol=1e-6)
    assert np.all(out < 1.0)


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


def test_no_rois():
    head = kml.MaskHead(num_classes=3, num_convs=1, conv_filters=4)
    x = np.zeros((2, 0, 7, 7, 4), "float32")
    assert to_numpy(head(x)).shape == (2, 0, 14, 14, 3)
    assert to_numpy(head(x, np.zeros((2, 0), "int32"))).shape == (2, 0, 14, 14)

import math

import keras
import numpy as np
import pytest

import keras_maskrcnn_layers as kml
from keras_maskrcnn_layers.layers.mask_rcnn_losses import LOSS_NAMES
from keras_maskrcnn_layers.ops import losses
from tests.backend_utils import to_numpy
from tests.layer_test_case import run_layer_test

INPUT_NAMES = (
    "rpn_match",
    "rpn_target_deltas",
    "rpn_logits",
    "rpn_deltas",
    "target_class_ids",
    "target_deltas",
    "target_masks",
    "roi_valid",
    "class_logits",
    "box_deltas",
    "masks",
)


def loss_inputs(seed=0, batch=2, anchors=12, rois=5, classes=3, side=4):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, classes, size=(batch, rois)).astype("int32")
    ids[:, 0] = 1  # at least one positive ROI per image
    return {
        "rpn_match": rng.integers(-1, 2, size=(batch, anchors)).astype("int32"),
        "rpn_target_deltas": rng.normal(size=(batch, anchors, 4)).astype("float32"),
        "rpn_logits": rng.normal(size=(batch, anchors)).astype("float32"),
        "rpn_deltas": rng.normal(size=(batch, anchors, 4)).astype("float32"),
        "target_class_ids": ids,
        "target_deltas": rng.normal(size=(batch, rois, 4)).astype("float32"),
        "target_masks": (rng.uniform(size=(batch, rois, side, side)) > 0.5).astype("float32"),
        "roi_valid": np.arange(rois)[None, :].repeat(batch, 0) < np.array([[rois], [rois - 2]]),
        "class_logits": rng.normal(size=(batch, rois, classes)).astype("float32"),
        "box_deltas": rng.normal(size=(batch, rois, classes, 4)).astype("float32"),
        "masks": rng.uniform(0.05, 0.95, size=(batch, rois, side, side, classes)).astype("float32"),
    }


def expected_values(x):
    return {
        "rpn_class_loss": losses.rpn_class_loss(x["rpn_match"], x["rpn_logits"]),
        "rpn_bbox_loss": losses.rpn_box_loss(x["rpn_match"], x["rpn_target_deltas"], x["rpn_deltas"]),
        "mrcnn_class_loss": losses.head_class_loss(x["target_class_ids"], x["class_logits"], x["roi_valid"]),
        "mrcnn_bbox_loss": losses.head_box_loss(x["target_class_ids"], x["target_deltas"], x["box_deltas"]),
        "mrcnn_mask_loss": losses.mask_loss(x["target_class_ids"], x["target_masks"], x["masks"]),
    }


@keras.saving.register_keras_serializable(package="kml_tests")
class PositionalMaskRCNNLosses(kml.layers.MaskRCNNLosses):
    """Takes the eleven tensors positionally and returns the losses as a list.

    `run_layer_test` feeds positional arrays and flattens list outputs; it
    cannot feed a dict nor read one back. This adapter only packs the dict
    and unpacks the result; the computation is the layer's.
    """

    def call(self, *tensors):
        out = super().call(dict(zip(INPUT_NAMES, tensors)))
        return [out[name] for name in LOSS_NAMES]

    def compute_output_spec(self, *tensors):
        out = super().compute_output_spec(dict(zip(INPUT_NAMES, tensors)))
        return [out[name] for name in LOSS_NAMES]


def test_layer_checks():
    x = loss_inputs()
    out = run_layer_test(
        PositionalMaskRCNNLosses({"rpn_class_loss": 2.0}),
        [x[name] for name in INPUT_NAMES],
        expected_output_shapes=[(2,)] * 5,
        float32_outputs=(0, 1, 2, 3, 4),
        atol=1e-5,
    )
    values = expected_values(x)
    for name, o in zip(LOSS_NAMES, out):
        np.testing.assert_allclose(o, float(to_numpy(values[name])), rtol=1e-5)


def test_adds_exactly_the_weighted_sum():
    x = loss_inputs(seed=1)
    weights = {"rpn_class_loss": 2.0, "mrcnn_mask_loss": 0.5, "rpn_bbox_loss": 0.0}
    layer = kml.layers.MaskRCNNLosses(weights)
    out = layer(x)
    assert sorted(out) == sorted(LOSS_NAMES)
    values = {name: float(to_numpy(v)) for name, v in expected_values(x).items()}
    for name in LOSS_NAMES:
        o = to_numpy(out[name])
        assert o.shape == (2,) and o.dtype == np.float32
        np.testing.assert_allclose(o, values[name], rtol=1e-6)
    assert len(layer.losses) == 1
    full = {name: weights.get(name, 1.0) for name in LOSS_NAMES}
    expected = sum(full[name] * values[name] for name in LOSS_NAMES)
    np.testing.assert_allclose(float(to_numpy(layer.losses[0])), expected, rtol=1e-5)
    assert layer.get_config()["loss_weights"] == full


def test_model_carries_the_loss():
    x = loss_inputs(seed=2)
    inputs = {name: keras.Input(v.shape[1:], dtype=str(v.dtype), name=name) for name, v in x.items()}
    model = keras.Model(inputs, kml.layers.MaskRCNNLosses({"mrcnn_class_loss": 3.0})(inputs))
    model(x)
    values = {name: float(to_numpy(v)) for name, v in expected_values(x).items()}
    expected = sum(values.values()) + 2.0 * values["mrcnn_class_loss"]
    assert len(model.losses) == 1
    np.testing.assert_allclose(float(to_numpy(model.losses[0])), expected, rtol=1e-5)


def test_batch_without_objects_is_finite():
    x = loss_inputs(seed=3)
    x["rpn_match"][:] = np.where(x["rpn_match"] == 1, 0, x["rpn_match"])
    x["target_class_ids"][:] = 0
    layer = kml.layers.MaskRCNNLosses()
    out = {name: float(to_numpy(v)[0]) for name, v in layer(x).items()}
    assert out["rpn_bbox_loss"] == out["mrcnn_bbox_loss"] == out["mrcnn_mask_loss"] == 0.0
    assert math.isfinite(out["rpn_class_loss"]) and out["rpn_class_loss"] > 0
    assert math.isfinite(out["mrcnn_class_loss"]) and out["mrcnn_class_loss"] > 0
    np.testing.assert_allclose(float(to_numpy(layer.losses[0])), sum(out.values()), rtol=1e-6)


def test_unknown_loss_names():
    for weights in ({"rpn_class": 1.0}, {"mask_loss": 2.0, "rpn_class_loss": 1.0}, [1.0]):
        with pytest.raises(ValueError, match="loss_weights"):
            kml.layers.MaskRCNNLosses(weights)


def test_bad_loss_weight_values():
    failures = []
    for weights in ({"rpn_class_loss": None}, {"rpn_class_loss": "heavy"}, {"rpn_class_loss": float("nan")}, 2.0):
        try:
            kml.layers.MaskRCNNLosses(weights)
            failures.append(f"{weights!r}: accepted")
        except Exception as error:  # noqa: BLE001 - the test is about which error
            if not isinstance(error, ValueError) or "loss_weights" not in str(error):
                failures.append(f"{weights!r}: {error!r}")
    assert not failures, failures

import numpy as np
import pytest

import keras_maskrcnn_layers as kml
from tests.backend_utils import to_numpy
from tests.layer_test_case import run_layer_test


def test_layer_checks_and_probabilities():
    rng = np.random.default_rng(0)
    logits, probs, deltas = run_layer_test(
        kml.layers.BoxHead(num_classes=3, fc_size=16),
        [rng.normal(size=(2, 4, 7, 7, 4)).astype("float32")],
        expected_output_shapes=[(2, 4, 3), (2, 4, 3), (2, 4, 3, 4)],
        float32_outputs=(0, 1, 2),
        atol=1e-4,
    )
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    np.testing.assert_allclose(probs, e / e.sum(axis=-1, keepdims=True), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, rtol=1e-5)


def test_deltas_are_class_major():
    # Zero kernel and bias 0..4K-1 on the regressor: delta j of class k is 4 k + j
    # (matterport reshapes [N, 4K] to [N, K, 4]).
    head = kml.layers.BoxHead(num_classes=3, fc_size=4, num_fcs=1)
    x = np.ones((1, 2, 2, 2, 1), "float32")
    head(x)
    head.regressor.set_weights([np.zeros((4, 12), "float32"), np.arange(12, dtype="float32")])
    _, _, deltas = head(x)
    np.testing.assert_array_equal(to_numpy(deltas)[0, 1], np.arange(12).reshape(3, 4))


def test_rois_are_independent():
    # Changing the features of ROI (1, 2) changes its outputs and no other row's.
    rng = np.random.default_rng(2)
    head = kml.layers.BoxHead(num_classes=3, fc_size=8)
    x = rng.normal(size=(2, 3, 4, 4, 3)).astype("float32")
    changed = x.copy()
    changed[1, 2] = rng.normal(size=(4, 4, 3))
    before = [to_numpy(o) for o in head(x)]
    after = [to_numpy(o) for o in head(changed)]
    others = np.ones((2, 3), bool)
    others[1, 2] = False
    for b, a in zip(before, after):
        np.testing.assert_allclose(a[others], b[others], atol=1e-6)
        assert not np.allclose(a[1, 2], b[1, 2])


def test_bad_arguments_and_input_rank():
    for kwargs, name in [
        ({"num_classes": 1}, "num_classes"),
        ({"num_classes": 2.0}, "num_classes"),
        ({"num_classes": 3, "fc_size": 0}, "fc_size"),
        ({"num_classes": 3, "num_fcs": 0}, "num_fcs"),
        ({"num_classes": 3, "num_fcs": None}, "num_fcs"),
    ]:
        with pytest.raises(ValueError, match=name):
            kml.layers.BoxHead(**kwargs)
    with pytest.raises(ValueError, match="roi_features"):
        kml.layers.BoxHead(num_classes=3, fc_size=4)(np.zeros((2, 7, 7, 4), "float32"))

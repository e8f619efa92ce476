import keras
import numpy as np
import pytest

import keras_maskrcnn_layers as kml
from tests.backend_utils import to_numpy
from tests.layer_test_case import run_layer_test


def backbone_stages(size, channels, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    return [
        rng.normal(size=(batch, size // 2**level, size // 2**level, c)).astype("float32")
        for level, c in zip((2, 3, 4, 5), channels)
    ]


def upsample(x):
    return np.repeat(np.repeat(x, 2, axis=1), 2, axis=2)


# Every test feeds the same shapes (a 128 x 128 input, 4 channels), so that
# the JAX backend compiles each eager op once for the whole file.
SIZE, CHANNELS = 128, 4


def test_layer_checks_and_p6():
    p2, p3, p4, p5, p6 = run_layer_test(
        kml.layers.FeaturePyramid(filters=CHANNELS),
        [backbone_stages(SIZE, (CHANNELS,) * 4)],
        expected_output_shapes=[(2, 32, 32, 4), (2, 16, 16, 4), (2, 8, 8, 4), (2, 4, 4, 4), (2, 2, 2, 4)],
        atol=1e-4,
    )
    # P6 subsamples P5 by 2 (max pooling with a 1 x 1 window).
    np.testing.assert_array_equal(p6, p5[:, ::2, ::2])


def test_top_down_sum_by_hand():
    # Lateral 1x1 kernels = 2 * identity and 3x3 smoothing kernels = 3 * identity
    # at the centre tap, zero biases: P_l = 3 * (2 C_l + up(M_{l+1})) with the
    # merged map M_l = 2 C_l + up(M_{l+1}), M_5 = 2 C_5 (FPN paper, Fig. 3).
    # Smoothing must act after the merge and not feed the level below.
    filters = CHANNELS
    c2, c3, c4, c5 = backbone_stages(SIZE, (filters,) * 4, seed=1)
    layer = kml.layers.FeaturePyramid(filters=filters)
    layer([c2, c3, c4, c5])
    eye = np.eye(filters, dtype="float32")
    centre = np.zeros((3, 3, filters, filters), "float32")
    centre[1, 1] = 3 * eye
    for lateral in layer.laterals:
        lateral.set_weights([2 * eye[None, None], np.zeros(filters, "float32")])
    for smooth in layer.smooth:
        smooth.set_weights([centre, np.zeros(filters, "float32")])
    p2, p3, p4, p5, p6 = (to_numpy(p) for p in layer([c2, c3, c4, c5]))

    m5 = 2 * c5
    m4 = 2 * c4 + upsample(m5)
    m3 = 2 * c3 + upsample(m4)
    m2 = 2 * c2 + upsample(m3)
    for out, merged in zip((p2, p3, p4, p5), (m2, m3, m4, m5)):
        np.testing.assert_allclose(out, 3 * merged, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(p6, 3 * m5[:, ::2, ::2])


def test_bad_input_size_and_arguments():
    # 100 is not a multiple of 32: C5 (4x4) upsampled to 8x8 does not meet C4 (7x7).
    features = [np.zeros((1, s, s, 2), "float32") for s in (25, 13, 7, 4)]
    with pytest.raises(ValueError, match="half the size"):
        kml.layers.FeaturePyramid(filters=4)(features)
    with pytest.raises(ValueError, match="features"):
        kml.layers.FeaturePyramid(filters=4)(features[:3])
    for filters in (0, -4, 2.5, "256", True):
        with pytest.raises(ValueError, match="filters"):
            kml.layers.FeaturePyramid(filters=filters)


def test_bad_input_size_is_caught_when_building_a_model():
    with pytest.raises(ValueError, match="half the size"):
        kml.layers.FeaturePyramid(filters=4)([keras.Input((s, s, 2)) for s in (25, 13, 7, 4)])

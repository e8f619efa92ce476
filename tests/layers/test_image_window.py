import numpy as np
import pytest

import keras_maskrcnn_layers as kml
from tests.layer_test_case import run_layer_test


def meta():
    return np.stack(
        [
            kml.data.compose_image_meta((64, 32, 3), (0, 32, 128, 96), 2.0, image_id=7),
            kml.data.compose_image_meta((100, 100, 3), (14, 14, 114, 114), 1.0),
        ]
    )


def test_reads_the_window_columns():
    window = run_layer_test(kml.layers.ImageWindow(), [meta()], expected_output_shapes=[(2, 4)], float32_outputs=(0,))
    np.testing.assert_array_equal(window[0], [[0, 32, 128, 96], [14, 14, 114, 114]])


def test_bad_meta_shape():
    with pytest.raises(ValueError, match=r"`image_meta` must be \[B, 8\]"):
        kml.layers.ImageWindow()(meta()[:, :6])

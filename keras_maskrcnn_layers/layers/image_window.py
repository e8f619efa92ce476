"""The image's window inside the padded network input, read from its meta vector."""

import keras

from keras_maskrcnn_layers.api_export import kml_export
from keras_maskrcnn_layers.ops._validation import check_shape

# Columns of `(win_y1, win_x1, win_y2, win_x2)` in the layout of
# `kml.data.compose_image_meta`.
WINDOW_COLUMNS = slice(2, 6)


@kml_export
class ImageWindow(keras.layers.Layer):
    """Reads the window `(y1, x1, y2, x2)` of each image from its image meta.

    The window is where the resized image lies inside the padded network
    input. `DetectionLayer` clips detections to it. The meta layout is
    `kml.data.compose_image_meta`'s: `[orig_h, orig_w, win_y1, win_x1,
    win_y2, win_x2, scale, image_id]`.

    Call arguments:
        image_meta: float tensor `[B, 8]`.

    Returns:
        float32 tensor `[B, 4]`, yxyx pixels of the network input.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> import keras_maskrcnn_layers as kml
    >>> meta = np.stack([kml.data.compose_image_meta((64, 32, 3), (0, 32, 128, 96), 2.0)])
    >>> keras.ops.convert_to_numpy(kml.layers.ImageWindow()(meta)).tolist()
    [[0.0, 32.0, 128.0, 96.0]]
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        # Pixel coordinates stay float32 under mixed precision.
        self._convert_input_args = False
        self._allow_non_tensor_positional_args = True

    def call(self, image_meta):
        image_meta = keras.ops.convert_to_tensor(image_meta)
        check_shape("image_meta", image_meta.shape, "[B, 8]")
        return keras.ops.cast(image_meta[:, WINDOW_COLUMNS], "float32")

    def compute_output_spec(self, image_meta):
        check_shape("image_meta", image_meta.shape, "[B, 8]")
        return keras.KerasTensor((image_meta.shape[0], 4), "float32")

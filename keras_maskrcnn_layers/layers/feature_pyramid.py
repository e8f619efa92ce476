"""Feature Pyramid Network top-down pathway (Lin et al. 2017)."""

import keras

from keras_maskrcnn_layers.api_export import kml_export
from keras_maskrcnn_layers.ops._validation import check_positive_int


@kml_export
class FeaturePyramid(keras.layers.Layer):
    """Builds P2..P6 from backbone stages C2..C5.

    Each `C_l` goes through a 1x1 lateral convolution; from the top, every
    level adds the 2x nearest-upsampled level above (FPN paper, Fig. 3);
    a 3x3 convolution smooths each sum. P6 subsamples P5 by 2 (max pooling
    with a 1x1 window, as matterport and the paper's RPN).

    Args:
        filters: int. Channels of every pyramid level
            (`TOP_DOWN_PYRAMID_SIZE`). Defaults to `256`.
        **kwargs: base `keras.layers.Layer` arguments.

    Call arguments:
        features: list `[C2, C3, C4, C5]` of `[B, H_l, W_l, C_l]` tensors,
            level `l` at stride `2**l`, each half the size of the one before.

    Returns:
        List `[P2, P3, P4, P5, P6]` of `[B, H_l, W_l, filters]` tensors.

    Example:

    >>> import numpy as np
    >>> import keras_maskrcnn_layers as kml
    >>> c = [np.zeros((1, 64 // 2**l, 64 // 2**l, 8), "float32") for l in (2, 3, 4, 5)]
    >>> [tuple(p.shape) for p in kml.layers.FeaturePyramid(filters=16)(c)]
    [(1, 16, 16, 16), (1, 8, 8, 16), (1, 4, 4, 16), (1, 2, 2, 16), (1, 1, 1, 16)]
    """

    def __init__(self, filters=256, **kwargs):
        super().__init__(**kwargs)
        self.filters = check_positive_int("filters", filters)
        sub = {"dtype": self.dtype_policy}
        self.laterals = [keras.layers.Conv2D(filters, 1, name=f"fpn_c{l}p{l}", **sub) for l in range(2, 6)]
        self.smooth = [keras.layers.Conv2D(filters, 3, padding="same", name=f"fpn_p{l}", **sub) for l in range(2, 6)]
        self.upsample = keras.layers.UpSampling2D(2, **sub)
        self.p6 = keras.layers.MaxPooling2D(pool_size=1, strides=2, name="fpn_p6", **sub)

    def _check_sizes(self, features_shape):
        if not isinstance(features_shape, (list, tuple)) or len(features_shape) != 4:
            raise ValueError(f"`features` must be a list [C2, C3, C4, C5]. Received: {features_shape}")
        for below, above in zip(features_shape[:-1], features_shape[1:]):
            hw_below, hw_above = tuple(below[1:3]), tuple(above[1:3])
            if None in hw_below or None in hw_above:
                continue
            if hw_below != (2 * hw_above[0], 2 * hw_above[1]):
                raise ValueError(
                    f"Each backbone stage must be exactly half the size of the one below; got "
                    f"{hw_below} under {hw_above}. Use an input size that is a multiple of 64."
                )

    def build(self, features_shape):
        self._check_sizes(features_shape)
        for i, shape in enumerate(features_shape):
            self.laterals[i].build(shape)
            self.smooth[i].build((*shape[:-1], self.filters))

    def call(self, features):
        laterals = [layer(c) for layer, c in zip(self.laterals, features)]
        top_down = [laterals[-1]]
        for lateral in reversed(laterals[:-1]):
            above = self.upsample(top_down[0])
            if tuple(above.shape[1:3]) != tuple(lateral.shape[1:3]) and None not in lateral.shape[1:3]:
                raise ValueError(
                    f"Each backbone stage must be exactly half the size of the one below; got "
                    f"{tuple(lateral.shape[1:3])} under {tuple(top_down[0].shape[1:3])}. "
                    "Use an input size that is a multiple of 64."
                )
            top_down.insert(0, lateral + above)
        outputs = [layer(p) for layer, p in zip(self.smooth, top_down)]
        return outputs + [self.p6(outputs[-1])]

    def compute_output_shape(self, features_shape):
        self._check_sizes(features_shape)
        shapes = [(*s[:-1], self.filters) for s in features_shape]
        b, h, w, _ = shapes[-1]
        half = lambda d: None if d is None else (d + 1) // 2  # noqa: E731
        return shapes + [(b, half(h), half(w), self.filters)]

    def get_config(self):
        config = super().get_config()
        config.update({"filters": self.filters})
        return config

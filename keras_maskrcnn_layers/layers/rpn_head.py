"""The Region Proposal Network head, shared across pyramid levels."""

import keras
from keras import ops

from keras_maskrcnn_layers.api_export import kml_export
from keras_maskrcnn_layers.ops._validation import check_positive_int


@kml_export
class RPNHead(keras.layers.Layer):
    """Objectness and box deltas for every anchor of every level.

    One 3x3 convolution (stride `anchor_stride`) with ReLU, then a 1x1
    convolution for the objectness logit and one for the 4 deltas of each of
    the `anchors_per_location` anchors (Faster R-CNN, Sec. 3.1), applied
    with the same weights to every level. Outputs are flattened level by
    level in the order of `AnchorGenerator`.

    Args:
        anchors_per_location: int. Scales per level times ratios.
        filters: int. Channels of the shared convolution. Defaults to `512`.
        anchor_stride: int. Defaults to `1`.
        **kwargs: base `keras.layers.Layer` arguments.

    Call arguments:
        features: list of `[B, H_l, W_l, C]` pyramid levels (P2..P6).

    Returns:
        Tuple `(logits, probabilities, deltas)`: float32 `[B, A]`, `[B, A]`
        and `[B, A, 4]`, `A` the number of anchors of all levels.

    Example:

    >>> import numpy as np
    >>> import keras_maskrcnn_layers as kml
    >>> p = [np.zeros((1, 32 // 2**l, 32 // 2**l, 8), "float32") for l in (2, 3, 4, 5)]
    >>> logits, probs, deltas = kml.layers.RPNHead(3, filters=8)(p)
    >>> tuple(logits.shape), tuple(deltas.shape)
    ((1, 255), (1, 255, 4))
    """

    def __init__(self, anchors_per_location, filters=512, anchor_stride=1, **kwargs):
        super().__init__(**kwargs)
        self.anchors_per_location = check_positive_int("anchors_per_location", anchors_per_location)
        self.filters = check_positive_int("filters", filters)
        self.anchor_stride = check_positive_int("anchor_stride", anchor_stride)
        sub = {"dtype": self.dtype_policy}
        a = self.anchors_per_location
        self.shared = keras.layers.Conv2D(
            filters, 3, strides=anchor_stride, padding="same", activation="relu", name="rpn_conv_shared", **sub
        )
        self.objectness = keras.layers.Conv2D(a, 1, name="rpn_class_raw", **sub)
        self.box = keras.layers.Conv2D(4 * a, 1, name="rpn_bbox_pred", **sub)

    def build(self, features_shape):
        shape = features_shape[0]
        self.shared.build(shape)
        hidden = self.shared.compute_output_shape(shape)
        self.objectness.build(hidden)
        self.box.build(hidden)

    def call(self, features):
        logits, deltas = [], []
        for feature in features:
            hidden = self.shared(feature)
            height, width = hidden.shape[1], hidden.shape[2]
            if height is not None and width is not None:
                # A static anchor count even when the batch size is not
                # (evaluation's last batch): TensorFlow cannot infer the -1
                # of `(batch_tensor, -1)`, and `ProposalLayer` needs it.
                count = height * width * self.anchors_per_location
                logit_shape, delta_shape = (-1, count), (-1, count, 4)
            else:
                batch = ops.shape(feature)[0]
                logit_shape, delta_shape = (batch, -1), (batch, -1, 4)
            logits.append(ops.reshape(ops.cast(self.objectness(hidden), "float32"), logit_shape))
            deltas.append(ops.reshape(ops.cast(self.box(hidden), "float32"), delta_shape))
        logits = ops.concatenate(logits, axis=1)
        return logits, ops.sigmoid(logits), ops.concatenate(deltas, axis=1)

    def compute_output_spec(self, features):
        total = 0
        for f in features:
            h, w = f.shape[1], f.shape[2]
            total += -(-h // self.anchor_stride) * -(-w // self.anchor_stride) * self.anchors_per_location
        b = features[0].shape[0]
        return (
            keras.KerasTensor((b, total), "float32"),
            keras.KerasTensor((b, total), "float32"),
            keras.KerasTensor((b, total, 4), "float32"),
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "anchors_per_location": self.anchors_per_location,
                "filters": self.filters,
                "anchor_stride": self.anchor_stride,
            }
        )
        return config

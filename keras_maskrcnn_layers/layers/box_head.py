"""The box branch: classification and class-specific box refinement per ROI."""

import keras
from keras import ops

from keras_maskrcnn_layers.api_export import kml_export
from keras_maskrcnn_layers.ops._validation import check_positive_int


@kml_export
class BoxHead(keras.layers.Layer):
    """Class scores and per-class deltas from pooled ROI features.

    The FPN "2fc" head (FPN paper, Sec. 4.2; matterport's
    `fpn_classifier_graph`): flatten, `num_fcs` fully connected layers with
    ReLU, then a linear classifier over `num_classes` and a linear regressor
    of 4 deltas per class.

    Args:
        num_classes: int >= 2. Classes including background.
        fc_size: int. Width of the hidden layers
            (`FPN_CLASSIF_FC_LAYERS_SIZE`). Defaults to `1024`.
        num_fcs: int >= 1. Hidden layers. Defaults to `2`.
        **kwargs: base `keras.layers.Layer` arguments.

    Call arguments:
        roi_features: float tensor `[B, N, P_h, P_w, C]`.

    Returns:
        Tuple `(class_logits, class_probabilities, deltas)`: float32
        `[B, N, num_classes]`, `[B, N, num_classes]` and
        `[B, N, num_classes, 4]`.

    Example:

    >>> import numpy as np
    >>> import keras_maskrcnn_layers as kml
    >>> head = kml.layers.BoxHead(num_classes=3, fc_size=32)
    >>> logits, probs, deltas = head(np.zeros((2, 5, 7, 7, 8), "float32"))
    >>> tuple(probs.shape), tuple(deltas.shape)
    ((2, 5, 3), (2, 5, 3, 4))
    """

    def __init__(self, num_classes, fc_size=1024, num_fcs=2, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = check_positive_int("num_classes", num_classes, minimum=2)
        self.fc_size = check_positive_int("fc_size", fc_size)
        self.num_fcs = check_positive_int("num_fcs", num_fcs)
        sub = {"dtype": self.dtype_policy}
        self.fcs = [keras.layers.Dense(fc_size, activation="relu", name=f"box_fc{i + 1}", **sub) for i in range(num_fcs)]
        self.classifier = keras.layers.Dense(num_classes, name="box_class_logits", **sub)
        self.regressor = keras.layers.Dense(4 * num_classes, name="box_deltas", **sub)

    def build(self, roi_features_shape):
        if len(roi_features_shape) != 5:
            raise ValueError(f"`roi_features` must be [B, N, P_h, P_w, C]. Received: {tuple(roi_features_shape)}")
        size = 1
        for d in roi_features_shape[2:]:
            size *= d
        shape = (None, size)
        for layer in self.fcs:
            layer.build(shape)
            shape = (None, self.fc_size)
        self.classifier.build(shape)
        self.regressor.build(shape)

    def call(self, roi_features):
        batch, count = ops.shape(roi_features)[0], ops.shape(roi_features)[1]
        size = 1
        for d in roi_features.shape[2:]:
            size *= d
        x = ops.reshape(roi_features, (-1, size))
        for layer in self.fcs:
            x = layer(x)
        logits = ops.reshape(ops.cast(self.classifier(x), "float32"), (batch, count, self.num_classes))
        deltas = ops.reshape(ops.cast(self.regressor(x), "float32"), (batch, count, self.num_classes, 4))
        return logits, ops.softmax(logits, axis=-1), deltas

    def compute_output_spec(self, roi_features):
        b, n = roi_features.shape[:2]
        k = self.num_classes
        return (
            keras.KerasTensor((b, n, k), "float32"),
            keras.KerasTensor((b, n, k), "float32"),
            keras.KerasTensor((b, n, k, 4), "float32"),
        )

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes, "fc_size": self.fc_size, "num_fcs": self.num_fcs})
        return config

"""The Mask R-CNN mask branch with a configurable output resolution."""

import keras
import numpy as np
from keras import ops

from keras_maskrcnn_layers.api_export import kml_export
from keras_maskrcnn_layers.ops._validation import check_positive_int, concrete_value

UPSAMPLE_MODES = ("transpose", "bilinear", "nearest")


@kml_export
class MaskHead(keras.layers.Layer):
    """Predicts a soft mask per ROI and class from pooled ROI features.

    `num_convs` 3x3 convolutions with ReLU (Mask R-CNN, He et al. 2017,
    Fig. 4), then an upsampling by `upsample_factor`, then a 1x1 convolution
    with a sigmoid per class. The output side is `pool side *
    upsample_factor`, so a 14 px pool gives 28 px masks with factor 2 and
    56 px masks with factor 4, and a 28 px pool gives 56 or 112 px masks.

    Upsampling modes:
    - `"transpose"`: a transposed convolution with kernel and stride
      `upsample_factor`, then ReLU (the paper's 2x2 deconvolution for
      factor 2).
    - `"bilinear"` / `"nearest"`: fixed interpolation by `upsample_factor`
      followed by a 3x3 convolution with ReLU.
    With `upsample_factor=1` no upsampling layer is built.

    Args:
        num_classes: int >= 1. Classes including background.
        num_convs: int >= 0. Convolutions before upsampling. Defaults to `4`.
        conv_filters: int >= 1. Channels of every convolution. Defaults to
            `256`.
        upsample: one of `"transpose"`, `"bilinear"`, `"nearest"`. Defaults
            to `"transpose"`.
        upsample_factor: int >= 1. Defaults to `2`.
        class_agnostic: bool. One mask per ROI instead of one per class.
            Defaults to `False`.
        **kwargs: base `keras.layers.Layer` arguments.

    Call arguments:
        roi_features: float tensor `[B, N, P_h, P_w, C]`.
        class_ids: optional int tensor `[B, N]`. When given, each ROI's mask
            of that class is returned (the class-agnostic mask if
            `class_agnostic`), as at inference time.

    Returns:
        float32 mask probabilities `[B, N, P_h * upsample_factor,
        P_w * upsample_factor, num_classes]` (last axis 1 if
        `class_agnostic`; no last axis with `class_ids`). The sigmoid runs
        in float32 under mixed precision too: in float16 (bfloat16) it
        rounds to exactly 1 from a logit of about 8 (6), where the mask
        loss's gradient would vanish.

    Example:

    >>> import numpy as np
    >>> import keras_maskrcnn_layers as kml
    >>> head = kml.MaskHead(num_classes=3, num_convs=2, conv_filters=16, upsample_factor=4)
    >>> masks = head(np.zeros((1, 5, 14, 14, 8), "float32"))
    >>> tuple(masks.shape)
    (1, 5, 56, 56, 3)
    """

    def __init__(
        self,
        num_classes,
        num_convs=4,
        conv_filters=256,
        upsample="transpose",
        upsample_factor=2,
        class_agnostic=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.num_convs = check_positive_int("num_convs", num_convs, minimum=0)
        self.conv_filters = check_positive_int("conv_filters", conv_filters)
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"`upsample` must be one of {UPSAMPLE_MODES}. Received: upsample={upsample!r}")
        self.upsample = upsample
        self.upsample_factor = check_positive_int("upsample_factor", upsample_factor)
        if not isinstance(class_agnostic, bool):
            raise ValueError(f"`class_agnostic` must be True or False. Received: class_agnostic={class_agnostic!r}")
        self.class_agnostic = class_agnostic

        sub = {"dtype": self.dtype_policy}
        self.convs = [
            keras.layers.Conv2D(conv_filters, 3, padding="same", activation="relu", name=f"mask_conv{i + 1}", **sub)
            for i in range(self.num_convs)
        ]
        self.upsample_layers = []
        if self.upsample_factor > 1:
            f = self.upsample_factor
            if upsample == "transpose":
                self.upsample_layers = [
                    keras.layers.Conv2DTranspose(
                        conv_filters, f, strides=f, activation="relu", name="mask_deconv", **sub
                    )
                ]
            else:
                self.upsample_layers = [
                    keras.layers.UpSampling2D(size=f, interpolation=upsample, name="mask_upsample", **sub),
                    keras.layers.Conv2D(
                        conv_filters, 3, padding="same", activation="relu", name="mask_upsample_conv", **sub
                    ),
                ]
        self.predictor = keras.layers.Conv2D(self.num_outputs, 1, name="mask_predictor", **sub)

    @property
    def num_outputs(self):
        return 1 if self.class_agnostic else self.num_classes

    def build(self, roi_features_shape, class_ids_shape=None):
        if len(roi_features_shape) != 5:
            raise ValueError(
                f"`roi_features` must be [B, N, P_h, P_w, C]. Received: shape={tuple(roi_features_shape)}"
            )
        shape = (None, *roi_features_shape[2:])
        for layer in [*self.convs, *self.upsample_layers, self.predictor]:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)

    def call(self, roi_features, class_ids=None):
        if roi_features.shape[1] == 0:
            # No ROIs: TensorFlow's convolutions refuse an empty batch.
            batch = ops.shape(roi_features)[0]
            out_shape = self.compute_output_shape(
                roi_features.shape, None if class_ids is None else class_ids.shape
            )
            return ops.zeros((batch, *out_shape[1:]), "float32")
        shape = ops.shape(roi_features)
        x = ops.reshape(roi_features, (-1, *roi_features.shape[2:]))
        for layer in [*self.convs, *self.upsample_layers, self.predictor]:
            x = layer(x)
        masks = ops.sigmoid(ops.cast(ops.reshape(x, (shape[0], shape[1], *x.shape[1:])), "float32"))
        if class_ids is None:
            return masks
        if self.class_agnostic:
            return masks[..., 0]
        self._check_class_ids(class_ids)
        one_hot = ops.one_hot(ops.cast(class_ids, "int32"), self.num_classes, dtype=masks.dtype)
        return ops.sum(masks * one_hot[:, :, None, None, :], axis=-1)

    def _check_class_ids(self, class_ids):
        # A class id outside [0, num_classes) would one-hot to zeros and
        # return an empty mask without a word.
        value = concrete_value(class_ids)
        if value is None or value.size == 0:
            return
        if np.any(value < 0) or np.any(value >= self.num_classes):
            raise ValueError(
                f"`class_ids` must lie in [0, {self.num_classes}). Received values from "
                f"{value.min()} to {value.max()}"
            )

    def compute_output_shape(self, roi_features_shape, class_ids_shape=None):
        b, n, ph, pw, _ = roi_features_shape
        f = self.upsample_factor
        if class_ids_shape is not None:
            return (b, n, ph * f, pw * f)
        return (b, n, ph * f, pw * f, self.num_outputs)

    def compute_output_spec(self, roi_features, class_ids=None):
        shape = self.compute_output_shape(
            roi_features.shape, None if class_ids is None else class_ids.shape
        )
        return keras.KerasTensor(shape, dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "num_convs": self.num_convs,
                "conv_filters": self.conv_filters,
                "upsample": self.upsample,
                "upsample_factor": self.upsample_factor,
                "class_agnostic": self.class_agnostic,
            }
        )
        return config

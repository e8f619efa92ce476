"""The five Mask R-CNN losses as one layer that adds them to its model."""

import math

import keras
from keras import ops

from keras_maskrcnn_layers.api_export import kml_export
from keras_maskrcnn_layers.ops import losses

LOSS_NAMES = ("rpn_class_loss", "rpn_bbox_loss", "mrcnn_class_loss", "mrcnn_bbox_loss", "mrcnn_mask_loss")


@kml_export
class MaskRCNNLosses(keras.layers.Layer):
    """Computes the five losses and adds their weighted sum with `add_loss`.

    RPN objectness (binary cross-entropy over sampled anchors), RPN box
    (smooth L1 on positive anchors), head class (softmax cross-entropy over
    sampled ROIs), head box (smooth L1 on the true class of positive ROIs)
    and mask (binary cross-entropy on the true class's mask only); see
    `kml.ops.losses`.

    Args:
        loss_weights: dict from the names in `LOSS_NAMES` to floats
            (`LOSS_WEIGHTS`). Defaults to 1.0 each.
        **kwargs: base `keras.layers.Layer` arguments.

    Call arguments:
        inputs: dict with `rpn_match [B, A]`, `rpn_target_deltas [B, A, 4]`,
            `rpn_logits [B, A]`, `rpn_deltas [B, A, 4]`,
            `target_class_ids [B, T]`, `target_deltas [B, T, 4]`,
            `target_masks [B, T', h, w]`, `roi_valid [B, T]`,
            `class_logits [B, T, K]`, `box_deltas [B, T, K, 4]`,
            `masks [B, T', h, w, K]`, and optionally `mask_class_ids
            [B, T']` when the mask branch ran on the first `T' <= T` ROIs
            only (by default `target_class_ids`).

    Returns:
        Dict from each loss name to a float32 tensor `[B]` holding the
        batch's loss (repeated per image so that Keras can batch it).

    Example:

    A positive, an unsampled (`-1`) and a negative anchor, a positive and a
    background ROI, every prediction at even odds: each cross-entropy is `log 2`, and
    the box losses are 0 because the deltas match their targets. The added
    loss weighs the mask term twice.

    >>> import numpy as np
    >>> import keras_maskrcnn_layers as kml
    >>> inputs = {
    ...     "rpn_match": np.array([[1, -1, 0]], "int32"),
    ...     "rpn_target_deltas": np.zeros((1, 3, 4), "float32"),
    ...     "rpn_logits": np.zeros((1, 3), "float32"),
    ...     "rpn_deltas": np.zeros((1, 3, 4), "float32"),
    ...     "target_class_ids": np.array([[1, 0]], "int32"),
    ...     "target_deltas": np.zeros((1, 2, 4), "float32"),
    ...     "target_masks": np.ones((1, 2, 4, 4), "float32"),
    ...     "roi_valid": np.array([[True, True]]),
    ...     "class_logits": np.zeros((1, 2, 2), "float32"),
    ...     "box_deltas": np.zeros((1, 2, 2, 4), "float32"),
    ...     "masks": np.full((1, 2, 4, 4, 2), 0.5, "float32"),
    ... }
    >>> layer = kml.layers.MaskRCNNLosses({"mrcnn_mask_loss": 2.0})
    >>> values = layer(inputs)
    >>> {name: round(float(value[0]), 4) for name, value in values.items()}
    {'rpn_class_loss': 0.6931, 'rpn_bbox_loss': 0.0, 'mrcnn_class_loss': 0.6931, 'mrcnn_bbox_loss': 0.0, 'mrcnn_mask_loss': 0.6931}
    >>> round(float(layer.losses[0]), 4)
    2.7726
    """

    def __init__(self, loss_weights=None, **kwargs):
        super().__init__(**kwargs)
        weights = {name: 1.0 for name in LOSS_NAMES}
        if loss_weights is not None:
            if not isinstance(loss_weights, dict):
                raise ValueError(
                    f"`loss_weights` must be a dict from loss names to numbers. Received: loss_weights={loss_weights!r}"
                )
            unknown = set(loss_weights) - set(LOSS_NAMES)
            if unknown:
                raise ValueError(f"`loss_weights` has unknown names {sorted(unknown)}; known: {LOSS_NAMES}")
            for name, value in loss_weights.items():
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                    raise ValueError(
                        f"`loss_weights[{name!r}]` must be a finite number >= 0. Received: {value!r}"
                    )
                weights[name] = float(value)
        self.loss_weights = weights

    def call(self, inputs):
        values = {
            "rpn_class_loss": losses.rpn_class_loss(inputs["rpn_match"], inputs["rpn_logits"]),
            "rpn_bbox_loss": losses.rpn_box_loss(
                inputs["rpn_match"], inputs["rpn_target_deltas"], inputs["rpn_deltas"]
            ),
            "mrcnn_class_loss": losses.head_class_loss(
                inputs["target_class_ids"], inputs["class_logits"], inputs["roi_valid"]
            ),
            "mrcnn_bbox_loss": losses.head_box_loss(
                inputs["target_class_ids"], inputs["target_deltas"], inputs["box_deltas"]
            ),
            "mrcnn_mask_loss": losses.mask_loss(
                inputs.get("mask_class_ids", inputs["target_class_ids"]), inputs["target_masks"], inputs["masks"]
            ),
        }
        self.add_loss(sum(self.loss_weights[name] * values[name] for name in LOSS_NAMES))
        batch = ops.shape(inputs["rpn_match"])[0]
        return {name: ops.broadcast_to(value, (batch,)) for name, value in values.items()}

    def compute_output_spec(self, inputs):
        b = inputs["rpn_match"].shape[0]
        return {name: keras.KerasTensor((b,), "float32") for name in LOSS_NAMES}

    def get_config(self):
        config = super().get_config()
        config.update({"loss_weights": dict(self.loss_weights)})
        return config

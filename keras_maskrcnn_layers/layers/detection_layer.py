"""Final detections: refine, score-filter and per-class NMS the ROIs."""

import keras
from keras import ops

from keras_maskrcnn_layers.api_export import kml_export
from keras_maskrcnn_layers.ops._validation import (
    check_boxes_values,
    check_finite,
    check_image_shape,
    check_positive_int,
    check_probabilities,
    check_probability,
    check_same_size,
    check_shape,
)
from keras_maskrcnn_layers.ops.boxes import _check_box_std, decode_boxes
from keras_maskrcnn_layers.ops.nms import batched_nms


@kml_export
class DetectionLayer(keras.layers.Layer):
    """Turns classified ROIs into at most `max_detections` boxes per image.

    For each ROI (matterport's `refine_detections_graph`): take the most
    likely class, apply that class's deltas, clip to the image window, drop
    background and scores below `min_confidence`, run NMS per class at
    `nms_iou_threshold`, and keep the `max_detections` highest scores.

    Args:
        max_detections: int (`DETECTION_MAX_INSTANCES`). Defaults to `100`.
        min_confidence: float in `[0, 1]` (`DETECTION_MIN_CONFIDENCE`).
            Defaults to `0.7`.
        nms_iou_threshold: float in `[0, 1]` (`DETECTION_NMS_THRESHOLD`).
            Defaults to `0.3`.
        box_std: four floats (`BBOX_STD_DEV`). Defaults to
            `(0.1, 0.1, 0.2, 0.2)`.
        **kwargs: base `keras.layers.Layer` arguments.

    Call arguments:
        rois: float tensor `[B, N, 4]`, yxyx pixels, zero rows padding.
        class_probabilities: float tensor `[B, N, K]`.
        deltas: float tensor `[B, N, K, 4]`.
        window: optional float tensor `[B, 4]`, the part of the input that
            holds the image (yxyx pixels); boxes are clipped to it.
        image_shape: static `(height, width)`, used when `window` is None.

    Returns:
        Tuple `(boxes, class_ids, scores, num_detections)`: float32
        `[B, D, 4]`, int32 `[B, D]`, float32 `[B, D]`, int32 `[B]`; rows past
        `num_detections` are zeros; sorted by score.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> import keras_maskrcnn_layers as kml
    >>> rois = np.array([[[10, 10, 30, 30], [11, 11, 31, 31], [0, 0, 0, 0]]], "float32")
    >>> probs = np.array([[[0.1, 0.9], [0.2, 0.8], [1.0, 0.0]]], "float32")
    >>> boxes, class_ids, scores, count = kml.layers.DetectionLayer(max_detections=4)(
    ...     rois, probs, np.zeros((1, 3, 2, 4), "float32"), image_shape=(64, 64))
    >>> int(keras.ops.convert_to_numpy(count)[0]), keras.ops.convert_to_numpy(class_ids)[0].tolist()
    (1, [1, 0, 0, 0])
    """

    def __init__(
        self,
        max_detections=100,
        min_confidence=0.7,
        nms_iou_threshold=0.3,
        box_std=(0.1, 0.1, 0.2, 0.2),
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.max_detections = check_positive_int("max_detections", max_detections)
        self.min_confidence = check_probability("min_confidence", min_confidence)
        self.nms_iou_threshold = check_probability("nms_iou_threshold", nms_iou_threshold)
        self.box_std = tuple(_check_box_std(box_std))
        self._convert_input_args = False
        self._allow_non_tensor_positional_args = True

    def _check_inputs(self, rois, probs, deltas):
        check_shape("rois", rois.shape, "[B, N, 4]")
        check_shape("class_probabilities", probs.shape, "[B, N, K]")
        check_shape("deltas", deltas.shape, "[B, N, K, 4]")
        check_same_size(
            "The ROI counts N of `rois`, `class_probabilities` and `deltas`",
            ("rois", rois.shape[1]),
            ("class_probabilities", probs.shape[1]),
            ("deltas", deltas.shape[1]),
        )
        check_same_size(
            "The class counts K of `class_probabilities` and `deltas`",
            ("class_probabilities", probs.shape[2]),
            ("deltas", deltas.shape[2]),
        )
        check_boxes_values("rois", rois)
        check_probabilities("class_probabilities", probs)
        check_finite("deltas", deltas)

    def call(self, rois, class_probabilities, deltas, window=None, image_shape=None):
        rois, class_probabilities, deltas = (ops.convert_to_tensor(x) for x in (rois, class_probabilities, deltas))
        self._check_inputs(rois, class_probabilities, deltas)
        if rois.shape[1] == 0:
            # No ROIs, no detections (the reductions below need a row).
            batch = ops.shape(rois)[0]
            return (
                ops.zeros((batch, self.max_detections, 4), "float32"),
                ops.zeros((batch, self.max_detections), "int32"),
                ops.zeros((batch, self.max_detections), "float32"),
                ops.zeros((batch,), "int32"),
            )
        rois = ops.cast(rois, "float32")
        probs = ops.cast(class_probabilities, "float32")
        deltas = ops.cast(deltas, "float32")
        class_ids = ops.cast(ops.argmax(probs, axis=-1), "int32")
        scores = ops.max(probs, axis=-1)
        one_hot = ops.one_hot(class_ids, probs.shape[-1], dtype="float32")
        class_deltas = ops.sum(deltas * one_hot[..., None], axis=2)
        boxes = decode_boxes(class_deltas, rois, self.box_std)
        if window is None:
            if image_shape is None:
                raise ValueError("DetectionLayer needs `window` or `image_shape`.")
            height, width = check_image_shape("image_shape", image_shape)
            window = ops.convert_to_tensor([[0.0, 0.0, float(height), float(width)]])
        window = ops.cast(window, "float32")
        low = ops.stack([window[:, 0], window[:, 1], window[:, 0], window[:, 1]], axis=-1)[:, None, :]
        high = ops.stack([window[:, 2], window[:, 3], window[:, 2], window[:, 3]], axis=-1)[:, None, :]
        boxes = ops.minimum(ops.maximum(boxes, low), high)

        real = ops.any(ops.not_equal(rois, 0.0), axis=-1)
        keep = ops.logical_and(ops.logical_and(real, class_ids > 0), scores >= self.min_confidence)
        candidate_scores = ops.where(keep, scores, float("-inf"))
        index, count = batched_nms(
            boxes, candidate_scores, self.max_detections, self.nms_iou_threshold, classes=class_ids
        )
        valid = ops.arange(self.max_detections, dtype="int32")[None, :] < count[:, None]
        out_boxes = ops.where(valid[..., None], ops.take_along_axis(boxes, index[..., None], axis=1), 0.0)
        out_classes = ops.where(valid, ops.take_along_axis(class_ids, index, axis=1), 0)
        out_scores = ops.where(valid, ops.take_along_axis(scores, index, axis=1), 0.0)
        return out_boxes, out_classes, out_scores, count

    def compute_output_spec(self, rois, class_probabilities, deltas, window=None, image_shape=None):
        b, d = rois.shape[0], self.max_detections
        return (
            keras.KerasTensor((b, d, 4), "float32"),
            keras.KerasTensor((b, d), "int32"),
            keras.KerasTensor((b, d), "float32"),
            keras.KerasTensor((b,), "int32"),
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "max_detections": self.max_detections,
                "min_confidence": self.min_confidence,
                "nms_iou_threshold": self.nms_iou_threshold,
                "box_std": list(self.box_std),
            }
        )
        return config

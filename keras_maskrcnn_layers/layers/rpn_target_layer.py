"""Training targets of the RPN: which anchors are objects, and their deltas."""

import keras
from keras import ops

from keras_maskrcnn_layers.api_export import kml_export
from keras_maskrcnn_layers.ops._validation import (
    check_boxes_values,
    check_not_empty,
    check_positive_int,
    check_probability,
    check_same_size,
    check_seed,
    check_shape,
)
from keras_maskrcnn_layers.ops.boxes import _check_box_std, encode_boxes, pairwise_iou
from keras_maskrcnn_layers.ops.sampling import random_subset


@kml_export
class RPNTargetLayer(keras.layers.Layer):
    """Labels anchors against the ground truth and samples a balanced set.

    Faster R-CNN, Sec. 3.1.2: an anchor is positive when its IoU with some
    ground-truth box reaches `positive_iou`, or when it is the best anchor of
    some box; negative when its best IoU is below `negative_iou`; the rest
    are ignored. At most `anchors_per_image * positive_fraction` positives
    are sampled at random, and negatives fill the sample to
    `anchors_per_image`. Computed in the graph with fixed shapes (matterport
    does it in NumPy in its data generator).

    Args:
        anchors_per_image: int. Sampled anchors per image
            (`RPN_TRAIN_ANCHORS_PER_IMAGE`). Defaults to `256`.
        positive_fraction: float in `[0, 1]`. Defaults to `0.5`.
        positive_iou: float. Defaults to `0.7`.
        negative_iou: float. Defaults to `0.3`.
        box_std: four floats (`RPN_BBOX_STD_DEV`). Defaults to
            `(0.1, 0.1, 0.2, 0.2)`.
        seed: optional int for the sampling. Defaults to `None`.
        **kwargs: base `keras.layers.Layer` arguments.

    Call arguments:
        anchors: float tensor `[A, 4]`, yxyx pixels.
        gt_boxes: float tensor `[B, G, 4]`, zero rows are padding.
        gt_class_ids: int tensor `[B, G]`, 0 on padding.

    Returns:
        Tuple `(match, target_deltas)`: int32 `[B, A]` (1 positive,
        0 negative, -1 not sampled) and float32 `[B, A, 4]` (zero except on
        positives).

    Example:

    >>> import keras
    >>> import numpy as np
    >>> import keras_maskrcnn_layers as kml
    >>> anchors = kml.AnchorGenerator(scales=(8, 16, 32, 64, 128))(image_shape=(64, 64))
    >>> gt_boxes = np.array([[[10, 10, 40, 30], [0, 0, 0, 0]]], "float32")
    >>> match, deltas = kml.layers.RPNTargetLayer(anchors_per_image=64, seed=1)(
    ...     anchors, gt_boxes, np.array([[1, 0]]))
    >>> counts = keras.ops.convert_to_numpy(match)
    >>> int((counts == 1).sum()) >= 1, int((counts >= 0).sum())
    (True, 64)
    """

    def __init__(
        self,
        anchors_per_image=256,
        positive_fraction=0.5,
        positive_iou=0.7,
        negative_iou=0.3,
        box_std=(0.1, 0.1, 0.2, 0.2),
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.anchors_per_image = check_positive_int("anchors_per_image", anchors_per_image)
        self.positive_fraction = check_probability("positive_fraction", positive_fraction)
        self.positive_iou = check_probability("positive_iou", positive_iou)
        self.negative_iou = check_probability("negative_iou", negative_iou)
        if self.negative_iou > self.positive_iou:
            raise ValueError(
                f"`negative_iou` ({negative_iou}) must not exceed `positive_iou` ({positive_iou})."
            )
        self.box_std = tuple(_check_box_std(box_std))
        self.seed = check_seed("seed", seed)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self._convert_input_args = False
        self._allow_non_tensor_positional_args = True

    def _check_inputs(self, anchors, gt_boxes, gt_class_ids):
        check_shape("anchors", anchors.shape, "[A, 4]")
        check_shape("gt_boxes", gt_boxes.shape, "[B, G, 4]")
        check_shape("gt_class_ids", gt_class_ids.shape, "[B, G]")
        check_same_size(
            "The instance counts G of `gt_boxes` and `gt_class_ids`",
            ("gt_boxes", gt_boxes.shape[1]),
            ("gt_class_ids", gt_class_ids.shape[1]),
        )
        check_not_empty("gt_boxes", gt_boxes.shape, 1, "instance column (G = 0)")
        check_boxes_values("anchors", anchors)
        check_boxes_values("gt_boxes", gt_boxes)

    def call(self, anchors, gt_boxes, gt_class_ids):
        anchors, gt_boxes, gt_class_ids = (ops.convert_to_tensor(x) for x in (anchors, gt_boxes, gt_class_ids))
        self._check_inputs(anchors, gt_boxes, gt_class_ids)
        anchors = ops.cast(anchors, "float32")
        gt_boxes = ops.stop_gradient(ops.cast(gt_boxes, "float32"))
        gt_valid = ops.convert_to_tensor(gt_class_ids) > 0
        iou = pairwise_iou(anchors[None], gt_boxes)  # [B, A, G]
        iou = ops.where(gt_valid[:, None, :], iou, -1.0)
        best_iou = ops.max(iou, axis=2)
        best_gt = ops.argmax(iou, axis=2)

        # The best anchor of every box is positive, so that no object goes
        # without an anchor (ties all count, as in matterport).
        gt_best = ops.max(iou, axis=1, keepdims=True)
        is_best = ops.logical_and(iou >= gt_best, gt_best > 0.0)
        positive = ops.logical_or(best_iou >= self.positive_iou, ops.any(is_best, axis=2))
        negative = ops.logical_and(best_iou < self.negative_iou, ops.logical_not(positive))

        shape = ops.shape(best_iou)
        max_positive = int(self.anchors_per_image * self.positive_fraction)
        positive = random_subset(positive, max_positive, keras.random.uniform(shape, seed=self.seed_generator))
        num_negative = self.anchors_per_image - ops.sum(ops.cast(positive, "int32"), axis=1)
        negative = random_subset(
            negative, num_negative, keras.random.uniform(shape, seed=self.seed_generator), self.anchors_per_image
        )
        match = ops.where(positive, 1, ops.where(negative, 0, -1))

        matched = ops.take_along_axis(gt_boxes, best_gt[..., None], axis=1)
        safe = ops.where(positive[..., None], matched, ops.broadcast_to(anchors[None], ops.shape(matched)))
        deltas = encode_boxes(safe, anchors[None], self.box_std)
        deltas = ops.where(positive[..., None], deltas, 0.0)
        return ops.cast(match, "int32"), ops.stop_gradient(deltas)

    def compute_output_spec(self, anchors, gt_boxes, gt_class_ids):
        b, a = gt_boxes.shape[0], anchors.shape[0]
        return keras.KerasTensor((b, a), "int32"), keras.KerasTensor((b, a, 4), "float32")

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "anchors_per_image": self.anchors_per_image,
                "positive_fraction": self.positive_fraction,
                "positive_iou": self.positive_iou,
                "negative_iou": self.negative_iou,
                "box_std": list(self.box_std),
                "seed": self.seed,
            }
        )
        return config

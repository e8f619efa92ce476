"""Sampled ROIs and their class, box and mask targets for the heads."""

import keras
from keras import ops

from keras_maskrcnn_layers.api_export import kml_export
from keras_maskrcnn_layers.ops._validation import (
    check_boxes_values,
    check_finite,
    check_image_shape,
    check_not_empty,
    check_pair,
    check_positive_int,
    check_probability,
    check_same_size,
    check_seed,
    check_shape,
)
from keras_maskrcnn_layers.ops.boxes import _check_box_std, check_box_scale, encode_boxes, pairwise_iou, scale_boxes
from keras_maskrcnn_layers.ops.roi_align import roi_align
from keras_maskrcnn_layers.ops.sampling import first_true_indices, random_subset


@kml_export
class DetectionTargetLayer(keras.layers.Layer):
    """Samples `train_rois_per_image` ROIs and builds their training targets.

    The ground-truth boxes are added to the proposals (Detectron2's
    `proposal_append_gt`), so the heads see positives from the first step
    even while the RPN is still poor. A ROI is positive when its best IoU
    with a ground-truth box is at least `positive_iou`, negative otherwise
    (Mask R-CNN, Sec. 3.1). Up to `train_rois_per_image * roi_positive_ratio`
    positives are drawn at random and negatives fill the rest, so images
    without objects still train the classifier on background (matterport
    keeps exactly 1:2 and samples nothing from such images).

    Targets of a positive ROI: the class of its ground truth, the deltas
    from the ROI to that box divided by `box_std`, and the box's mask
    cropped to the ROI (scaled by `mask_box_scale` about its centre) by ROI
    Align at `mask_shape` and thresholded at 0.5.
    Ground-truth masks are either full-image masks or mini masks (the mask
    cropped to its box, matterport's `USE_MINI_MASK`).

    Args:
        train_rois_per_image: int. ROIs per image (`TRAIN_ROIS_PER_IMAGE`).
            Defaults to `200`.
        roi_positive_ratio: float in `[0, 1]`. Defaults to `0.33`.
        mask_shape: int or `(h, w)`. Size of mask targets (`MASK_SHAPE`).
            Defaults to `28`.
        box_std: four floats (`BBOX_STD_DEV`). Defaults to
            `(0.1, 0.1, 0.2, 0.2)`.
        positive_iou: float. Defaults to `0.5`.
        use_mini_mask: bool. Whether `gt_masks` are mini masks. Defaults to
            `False`.
        image_shape: `(height, width)` of the input image; needed only with
            full masks whose size differs from it. Defaults to `None`.
        mask_box_scale: float > 0. Mask targets cover the ROI enlarged by
            this factor (`MASK_BOX_SCALE`), so the mask branch can learn the
            parts of an object that a tight box cuts off. Defaults to `1.0`.
        seed: optional int. Defaults to `None`.
        **kwargs: base `keras.layers.Layer` arguments.

    Call arguments:
        proposals: float tensor `[B, P, 4]`, yxyx pixels, zero rows padding.
        gt_class_ids: int tensor `[B, G]`, 0 on padding.
        gt_boxes: float tensor `[B, G, 4]`, yxyx pixels.
        gt_masks: float tensor `[B, G, m_h, m_w]` in {0, 1}: full masks at
            the image size, or mini masks.

    Returns:
        Tuple `(rois, class_ids, deltas, masks, valid)`: float32
        `[B, T, 4]` yxyx pixels, int32 `[B, T]`, float32 `[B, T, 4]`,
        float32 `[B, T, mask_h, mask_w]`, bool `[B, T]`; `T =
        train_rois_per_image`; positives come first; padded rows are zeros
        with `valid` False.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> import keras_maskrcnn_layers as kml
    >>> layer = kml.layers.DetectionTargetLayer(train_rois_per_image=8, mask_shape=14, seed=0)
    >>> proposals = np.array([[[10, 10, 40, 40], [50, 50, 60, 60], [0, 0, 0, 0]]], "float32")
    >>> masks = np.zeros((1, 1, 64, 64), "float32"); masks[0, 0, 12:40, 10:38] = 1
    >>> rois, class_ids, deltas, roi_masks, valid = layer(
    ...     proposals, np.array([[2]]), np.array([[[12, 10, 40, 38]]], "float32"), masks)
    >>> keras.ops.convert_to_numpy(class_ids)[0, :3].tolist(), int(keras.ops.convert_to_numpy(valid).sum())
    ([2, 2, 0], 3)
    """

    def __init__(
        self,
        train_rois_per_image=200,
        roi_positive_ratio=0.33,
        mask_shape=28,
        box_std=(0.1, 0.1, 0.2, 0.2),
        positive_iou=0.5,
        use_mini_mask=False,
        image_shape=None,
        mask_box_scale=1.0,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.train_rois_per_image = check_positive_int("train_rois_per_image", train_rois_per_image)
        self.roi_positive_ratio = check_probability("roi_positive_ratio", roi_positive_ratio)
        self.mask_shape = check_pair("mask_shape", mask_shape)
        self.box_std = tuple(_check_box_std(box_std))
        self.positive_iou = check_probability("positive_iou", positive_iou)
        if self.positive_iou == 0.0:
            # IoU >= 0 holds for every proposal, degenerate ones included,
            # whose deltas to their box are infinite.
            raise ValueError(f"`positive_iou` must be > 0. Received: positive_iou={positive_iou!r}")
        if not isinstance(use_mini_mask, bool):
            raise ValueError(f"`use_mini_mask` must be True or False. Received: {use_mini_mask!r}")
        self.use_mini_mask = use_mini_mask
        self.image_shape = None if image_shape is None else check_image_shape("image_shape", image_shape)
        self.mask_box_scale = check_box_scale("mask_box_scale", mask_box_scale)
        self.seed = check_seed("seed", seed)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self._convert_input_args = False
        self._allow_non_tensor_positional_args = True

    def _check_inputs(self, proposals, gt_class_ids, gt_boxes, gt_masks):
        check_shape("proposals", proposals.shape, "[B, N, 4]")
        check_shape("gt_class_ids", gt_class_ids.shape, "[B, G]")
        check_shape("gt_boxes", gt_boxes.shape, "[B, G, 4]")
        check_shape("gt_masks", gt_masks.shape, "[B, G, m_h, m_w]")
        check_same_size(
            "The instance counts G of `gt_class_ids`, `gt_boxes` and `gt_masks`",
            ("gt_class_ids", gt_class_ids.shape[1]),
            ("gt_boxes", gt_boxes.shape[1]),
            ("gt_masks", gt_masks.shape[1]),
        )
        check_not_empty("gt_boxes", gt_boxes.shape, 1, "instance column (G = 0)")
        check_boxes_values("proposals", proposals)
        check_boxes_values("gt_boxes", gt_boxes)
        check_finite("gt_masks", gt_masks)

    def call(self, proposals, gt_class_ids, gt_boxes, gt_masks):
        proposals, gt_class_ids, gt_boxes, gt_masks = (
            ops.convert_to_tensor(x) for x in (proposals, gt_class_ids, gt_boxes, gt_masks)
        )
        self._check_inputs(proposals, gt_class_ids, gt_boxes, gt_masks)
        proposals = ops.stop_gradient(ops.cast(proposals, "float32"))
        gt_boxes = ops.stop_gradient(ops.cast(gt_boxes, "float32"))
        gt_class_ids = ops.cast(gt_class_ids, "int32")
        gt_masks = ops.stop_gradient(ops.cast(gt_masks, "float32"))
        gt_valid = gt_class_ids > 0
        num_gt = gt_boxes.shape[1]

        # === Candidates: proposals plus the ground truth ===
        candidates = ops.concatenate([proposals, ops.where(gt_valid[..., None], gt_boxes, 0.0)], axis=1)
        real = ops.any(ops.not_equal(candidates, 0.0), axis=-1)
        iou = ops.where(gt_valid[:, None, :], pairwise_iou(candidates, gt_boxes), -1.0)
        best_iou = ops.max(iou, axis=2)
        best_gt = ops.argmax(iou, axis=2)
        positive = ops.logical_and(real, best_iou >= self.positive_iou)
        negative = ops.logical_and(real, ops.logical_not(positive))

        # === Sampling ===
        total = self.train_rois_per_image
        shape = ops.shape(best_iou)
        max_positive = int(round(total * self.roi_positive_ratio))
        positive = random_subset(positive, max_positive, keras.random.uniform(shape, seed=self.seed_generator))
        num_negative = total - ops.sum(ops.cast(positive, "int32"), axis=1)
        negative = random_subset(negative, num_negative, keras.random.uniform(shape, seed=self.seed_generator), total)
        pos_index, pos_found = first_true_indices(positive, total)
        neg_index, neg_found = first_true_indices(negative, total)
        # Positives first, then negatives, in `total` slots.
        order_index = ops.concatenate([pos_index, neg_index], axis=1)
        order_found = ops.concatenate([pos_found, neg_found], axis=1)
        slot, valid = first_true_indices(order_found, total)
        index = ops.take_along_axis(order_index, slot, axis=1)
        is_positive = ops.logical_and(valid, slot < total)

        # === Targets ===
        rois = ops.take_along_axis(candidates, index[..., None], axis=1)
        rois = ops.where(valid[..., None], rois, 0.0)
        roi_gt = ops.take_along_axis(best_gt, index, axis=1)
        class_ids = ops.where(is_positive, ops.take_along_axis(gt_class_ids, roi_gt, axis=1), 0)
        matched = ops.take_along_axis(gt_boxes, roi_gt[..., None], axis=1)
        safe_rois = ops.where(is_positive[..., None], rois, matched + ops.convert_to_tensor([0.0, 0.0, 1.0, 1.0]))
        deltas = ops.where(is_positive[..., None], encode_boxes(matched, safe_rois, self.box_std), 0.0)
        masks = self._mask_targets(scale_boxes(rois, self.mask_box_scale), matched, roi_gt, gt_masks, num_gt)
        masks = ops.where(is_positive[..., None, None], masks, 0.0)
        return rois, class_ids, deltas, masks, valid

    def _mask_targets(self, rois, matched, roi_gt, gt_masks, num_gt):
        """Crops each ROI's ground-truth mask by ROI Align and thresholds it."""
        batch = ops.shape(rois)[0]
        mask_h, mask_w = gt_masks.shape[2], gt_masks.shape[3]
        if self.use_mini_mask:
            # A mini mask spans its box: map the ROI into the box's frame.
            gt_h = ops.maximum(matched[..., 2] - matched[..., 0], 1e-3)
            gt_w = ops.maximum(matched[..., 3] - matched[..., 1], 1e-3)
            y1 = (rois[..., 0] - matched[..., 0]) / gt_h * mask_h
            x1 = (rois[..., 1] - matched[..., 1]) / gt_w * mask_w
            y2 = (rois[..., 2] - matched[..., 0]) / gt_h * mask_h
            x2 = (rois[..., 3] - matched[..., 1]) / gt_w * mask_w
            boxes = ops.stack([y1, x1, y2, x2], axis=-1)
        elif self.image_shape is not None and (mask_h, mask_w) != self.image_shape:
            scale = ops.convert_to_tensor(
                [mask_h / self.image_shape[0], mask_w / self.image_shape[1]] * 2, "float32"
            )
            boxes = rois * scale
        else:
            boxes = rois
        features = ops.reshape(gt_masks, (-1, mask_h, mask_w, 1))
        box_indices = ops.arange(batch, dtype="int32")[:, None] * num_gt + ops.cast(roi_gt, "int32")
        crops = roi_align(features, boxes, self.mask_shape, sampling_ratio=2, aligned=True, box_indices=box_indices)
        return ops.cast(crops[..., 0] >= 0.5, "float32")

    def compute_output_spec(self, proposals, gt_class_ids, gt_boxes, gt_masks):
        b, t = proposals.shape[0], self.train_rois_per_image
        return (
            keras.KerasTensor((b, t, 4), "float32"),
            keras.KerasTensor((b, t), "int32"),
            keras.KerasTensor((b, t, 4), "float32"),
            keras.KerasTensor((b, t, *self.mask_shape), "float32"),
            keras.KerasTensor((b, t), "bool"),
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "train_rois_per_image": self.train_rois_per_image,
                "roi_positive_ratio": self.roi_positive_ratio,
                "mask_shape": list(self.mask_shape),
                "box_std": list(self.box_std),
                "positive_iou": self.positive_iou,
                "use_mini_mask": self.use_mini_mask,
                "image_shape": None if self.image_shape is None else list(self.image_shape),
                "mask_box_scale": self.mask_box_scale,
                "seed": self.seed,
            }
        )
        return config

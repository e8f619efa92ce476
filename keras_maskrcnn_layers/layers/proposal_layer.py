"""Region proposals from RPN outputs: decode, clip, top-k, NMS."""

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
)
from keras_maskrcnn_layers.ops.boxes import _check_box_std, clip_boxes, decode_boxes
from keras_maskrcnn_layers.ops.nms import batched_nms


@kml_export
class ProposalLayer(keras.layers.Layer):
    """Turns RPN scores and deltas into a fixed number of proposals per image.

    Keeps the `pre_nms_topk` anchors of highest objectness, applies their
    deltas (Faster R-CNN, Eqn. 2, scaled by `box_std`), clips the boxes to
    the image, drops boxes with a side below `min_size`, and runs greedy NMS
    at `nms_iou_threshold`, keeping at most `post_nms_topk` (Mask R-CNN,
    He et al. 2017; matterport's `ProposalLayer`).

    Args:
        pre_nms_topk: int >= 1. Candidates kept before NMS (matterport's
            `PRE_NMS_LIMIT`). Defaults to `6000`.
        post_nms_topk: int >= 1. Proposals returned per image. Defaults to
            `1000`.
        nms_iou_threshold: float in `[0, 1]`. Defaults to `0.7`.
        box_std: four positive floats. Defaults to `(0.1, 0.1, 0.2, 0.2)`.
        min_size: float >= 0. Boxes with height or width below it are
            dropped. Defaults to `0.0`.
        **kwargs: base `keras.layers.Layer` arguments.

    Call arguments:
        rpn_scores: float tensor `[B, A]`, objectness probabilities.
        rpn_deltas: float tensor `[B, A, 4]`, `(dy, dx, dh, dw)`.
        anchors: float tensor `[A, 4]` or `[B, A, 4]`, yxyx pixels.
        image_shape: static `(height, width)` of the input image.

    Returns:
        Tuple `(proposals, scores)`: `proposals` float32
        `[B, post_nms_topk, 4]`, yxyx pixels clipped to the image, sorted by
        score descending; `scores` float32 `[B, post_nms_topk]`. Padded rows
        are all zeros; the valid rows are those with `scores > 0`.

    Example:

    >>> import numpy as np
    >>> import keras_maskrcnn_layers as kml
    >>> anchors = kml.AnchorGenerator(scales=(8, 16, 32, 64, 128))(image_shape=(64, 64))
    >>> num_anchors = anchors.shape[0]
    >>> rng = np.random.default_rng(0)
    >>> scores = rng.uniform(size=(2, num_anchors)).astype("float32")
    >>> deltas = rng.normal(size=(2, num_anchors, 4)).astype("float32")
    >>> layer = kml.ProposalLayer(pre_nms_topk=300, post_nms_topk=50)
    >>> proposals, proposal_scores = layer(scores, deltas, anchors, image_shape=(64, 64))
    >>> tuple(proposals.shape), tuple(proposal_scores.shape)
    ((2, 50, 4), (2, 50))
    """

    def __init__(
        self,
        pre_nms_topk=6000,
        post_nms_topk=1000,
        nms_iou_threshold=0.7,
        box_std=(0.1, 0.1, 0.2, 0.2),
        min_size=0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.pre_nms_topk = check_positive_int("pre_nms_topk", pre_nms_topk)
        self.post_nms_topk = check_positive_int("post_nms_topk", post_nms_topk)
        self.nms_iou_threshold = check_probability("nms_iou_threshold", nms_iou_threshold)
        self.box_std = tuple(_check_box_std(box_std))
        if isinstance(min_size, bool) or not isinstance(min_size, (int, float)) or not min_size >= 0:
            raise ValueError(f"`min_size` must be a number >= 0. Received: min_size={min_size!r}")
        self.min_size = float(min_size)
        # Boxes in pixels lose whole pixels in float16: keep inputs as given.
        self._convert_input_args = False
        self._allow_non_tensor_positional_args = True
        self.built = True

    def _check_inputs(self, rpn_scores, rpn_deltas, anchors):
        if len(rpn_scores.shape) != 2:
            raise ValueError(f"`rpn_scores` must be [B, A]. Received: shape={rpn_scores.shape}")
        if len(rpn_deltas.shape) != 3 or rpn_deltas.shape[-1] != 4:
            raise ValueError(f"`rpn_deltas` must be [B, A, 4]. Received: shape={rpn_deltas.shape}")
        if len(anchors.shape) not in (2, 3) or anchors.shape[-1] != 4:
            raise ValueError(f"`anchors` must be [A, 4] or [B, A, 4]. Received: shape={anchors.shape}")
        counts = {rpn_scores.shape[1], rpn_deltas.shape[1], anchors.shape[-2]}
        counts.discard(None)
        if len(counts) > 1:
            raise ValueError(
                "`rpn_scores`, `rpn_deltas` and `anchors` must have the same number of anchors. "
                f"Received shapes: {rpn_scores.shape}, {rpn_deltas.shape}, {anchors.shape}"
            )
        if rpn_scores.shape[1] is None:
            raise ValueError("The number of anchors must be static.")
        check_probabilities("rpn_scores", rpn_scores)
        check_finite("rpn_deltas", rpn_deltas)
        check_boxes_values("anchors", anchors)

    def call(self, rpn_scores, rpn_deltas, anchors, image_shape=None):
        if image_shape is None:
            raise ValueError("ProposalLayer needs `image_shape=(height, width)`.")
        image_shape = check_image_shape("image_shape", image_shape)
        rpn_scores = ops.cast(ops.convert_to_tensor(rpn_scores), "float32")
        rpn_deltas = ops.cast(ops.convert_to_tensor(rpn_deltas), "float32")
        anchors = ops.cast(ops.convert_to_tensor(anchors), "float32")
        self._check_inputs(rpn_scores, rpn_deltas, anchors)

        k = min(self.pre_nms_topk, rpn_scores.shape[1])
        top_scores, top_index = ops.top_k(rpn_scores, k=k, sorted=True)
        deltas = ops.take_along_axis(rpn_deltas, top_index[..., None], axis=1)
        if len(anchors.shape) == 2:
            anchors = ops.take(anchors, top_index, axis=0)
        else:
            anchors = ops.take_along_axis(anchors, top_index[..., None], axis=1)
        boxes = clip_boxes(decode_boxes(deltas, anchors, self.box_std), image_shape)
        if self.min_size > 0:
            small = ops.logical_or(
                boxes[..., 2] - boxes[..., 0] < self.min_size,
                boxes[..., 3] - boxes[..., 1] < self.min_size,
            )
            top_scores = ops.where(small, float("-inf"), top_scores)

        # Strictly positive scores only, so that `scores > 0` marks exactly
        # the valid rows (a probability that underflowed to 0 is no proposal).
        index, count = batched_nms(
            boxes, top_scores, self.post_nms_topk, self.nms_iou_threshold, score_threshold=0.0
        )
        valid = ops.arange(self.post_nms_topk, dtype="int32")[None, :] < count[:, None]
        proposals = ops.take_along_axis(boxes, index[..., None], axis=1)
        scores = ops.take_along_axis(top_scores, index, axis=1)
        proposals = ops.where(valid[..., None], proposals, 0.0)
        scores = ops.where(valid, scores, 0.0)
        return proposals, scores

    def compute_output_spec(self, rpn_scores, rpn_deltas, anchors, image_shape=None):
        batch = rpn_scores.shape[0]
        return (
            keras.KerasTensor((batch, self.post_nms_topk, 4), dtype="float32"),
            keras.KerasTensor((batch, self.post_nms_topk), dtype="float32"),
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "pre_nms_topk": self.pre_nms_topk,
                "post_nms_topk": self.post_nms_topk,
                "nms_iou_threshold": self.nms_iou_threshold,
                "box_std": list(self.box_std),
                "min_size": self.min_size,
            }
        )
        return config

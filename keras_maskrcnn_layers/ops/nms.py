"""Fixed-shape greedy non-maximum suppression, batched, XLA-compilable."""

from keras import ops

from keras_maskrcnn_layers.ops._validation import check_positive_int, check_probability
from keras_maskrcnn_layers.ops.boxes import pairwise_iou
from keras_maskrcnn_layers.ops.sampling import first_true_indices


def batched_nms(
    boxes,
    scores,
    max_output_size,
    iou_threshold=0.5,
    score_threshold=float("-inf"),
    classes=None,
):
    """Greedy NMS over a batch of images, with fixed-size padded output.

    Boxes are visited in descending score order; a box is kept unless a kept
    box of higher score overlaps it with IoU strictly above `iou_threshold`
    (the rule of `tf.image.non_max_suppression` and torchvision). Boxes whose
    score is not strictly above `score_threshold` (and NaN scores) are never
    kept. Zero-area boxes overlap nothing. With `classes`, only boxes of the
    same class suppress each other (the coordinate-offset trick of
    torchvision's `batched_nms`).

    The loop runs one step per candidate and stops as soon as every image
    has `max_output_size` boxes, so it compiles under XLA with no
    data-dependent shape.

    Args:
        boxes: float tensor `[B, N, 4]` (or `[N, 4]`), yxyx.
        scores: float tensor `[B, N]` (or `[N]`).
        max_output_size: int. How many indices to return per image.
        iou_threshold: float in `[0, 1]`. Defaults to `0.5`.
        score_threshold: float. Candidates need a score strictly above it.
            Defaults to `-inf` (only `-inf` and NaN scores are dropped).
        classes: optional int tensor `[B, N]` (or `[N]`). Class of each box
            for class-aware suppression. Defaults to `None`.

    Returns:
        Tuple `(indices, valid_count)`: `indices` int32 `[B, max_output_size]`
        (or `[max_output_size]`) into `N`, in descending score order, with
        padded rows set to 0; `valid_count` int32 `[B]` (or scalar), the
        number of real rows.

    Example:

    >>> import numpy as np
    >>> from keras_maskrcnn_layers import ops as kml_ops
    >>> boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], "float32")
    >>> scores = np.array([0.9, 0.8, 0.7], "float32")
    >>> indices, count = kml_ops.batched_nms(boxes, scores, max_output_size=3, iou_threshold=0.5)
    >>> keras.ops.convert_to_numpy(indices).tolist(), int(count)
    ([0, 2, 0], 2)
    """
    max_output_size = check_positive_int("max_output_size", max_output_size)
    iou_threshold = check_probability("iou_threshold", iou_threshold)
    boxes = ops.cast(ops.convert_to_tensor(boxes), "float32")
    scores = ops.cast(ops.convert_to_tensor(scores), "float32")
    unbatched = len(boxes.shape) == 2
    if len(boxes.shape) not in (2, 3) or boxes.shape[-1] != 4:
        raise ValueError(f"`boxes` must have shape [B, N, 4] or [N, 4]. Received: shape={boxes.shape}")
    if len(scores.shape) != len(boxes.shape) - 1:
        raise ValueError(
            f"`scores` must have shape [B, N] or [N] to match `boxes` {boxes.shape}. "
            f"Received: shape={scores.shape}"
        )
    if unbatched:
        boxes = ops.expand_dims(boxes, 0)
        scores = ops.expand_dims(scores, 0)
        if classes is not None:
            classes = ops.expand_dims(ops.convert_to_tensor(classes), 0)

    num_boxes = boxes.shape[1]
    if num_boxes is None:
        raise ValueError("`boxes` must have a static number of boxes N for fixed-shape NMS.")

    if classes is not None:
        # Shift each class into its own disjoint region so that boxes of
        # different classes never overlap (torchvision `batched_nms`).
        classes = ops.cast(classes, "float32")
        span = ops.max(boxes, axis=(1, 2)) - ops.min(boxes, axis=(1, 2)) + 1.0
        boxes = boxes + ops.expand_dims(classes * span[:, None], -1)

    sorted_scores, order = ops.top_k(scores, k=num_boxes, sorted=True)
    sorted_boxes = ops.take_along_axis(boxes, ops.expand_dims(order, -1), axis=1)
    candidate = sorted_scores > score_threshold
    positions = ops.arange(num_boxes, dtype="int32")
    batch = ops.shape(boxes)[0]

    def cond(i, keep, suppressed, count):
        return ops.logical_and(i < num_boxes, ops.any(count < max_output_size))

    def body(i, keep, suppressed, count):
        box = ops.take(sorted_boxes, i, axis=1)
        keep_i = ops.logical_and(
            ops.logical_and(ops.take(candidate, i, axis=1), ops.logical_not(ops.take(suppressed, i, axis=1))),
            count < max_output_size,
        )
        overlaps = ops.logical_and(pairwise_iou(box[:, None], sorted_boxes)[:, 0] > iou_threshold, positions > i)
        suppressed = ops.logical_or(suppressed, ops.logical_and(overlaps, keep_i[:, None]))
        keep = ops.logical_or(keep, ops.logical_and(positions == i, keep_i[:, None]))
        return i + 1, keep, suppressed, count + ops.cast(keep_i, "int32")

    init = (
        ops.convert_to_tensor(0, "int32"),
        ops.zeros((batch, num_boxes), "bool"),
        ops.zeros((batch, num_boxes), "bool"),
        ops.zeros((batch,), "int32"),
    )
    _, keep, _, count = ops.while_loop(cond, body, init)

    # Kept positions in ascending order are kept boxes by descending score.
    sorted_position, valid = first_true_indices(keep, max_output_size)
    indices = ops.take_along_axis(order, sorted_position, axis=1)
    indices = ops.where(valid, indices, 0)
    indices = ops.cast(indices, "int32")
    if unbatched:
        return indices[0], count[0]
    return indices, count

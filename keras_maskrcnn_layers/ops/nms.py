"""Fixed-shape greedy non-maximum suppression, batched, XLA-compilable."""

from keras import ops

from keras_maskrcnn_layers.ops._validation import check_positive_int, check_probability
from keras_maskrcnn_layers.ops.boxes import pairwise_iou

# Candidates per loop step. A step costs two IoU matrices, `[tile, kept slots]`
# and `[tile, tile]`: 128 was the fastest of 64 to 1024 on XLA:CPU for both
# the proposal (6000 -> 1000) and the detection (1000 -> 100) workloads.
TILE_SIZE = 128


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

    The sorted boxes go through in tiles of `TILE_SIZE`, one loop step per
    tile (the tiled NMS of TF Model Garden's `non_max_suppression_padded`):
    a step drops the tile's candidates that overlap a box kept by earlier
    tiles (one IoU matrix against the at most `max_output_size` kept boxes),
    then settles suppression within the tile by iterating to the greedy
    fixed point (one `[tile, tile]` IoU matrix). The loop stops as soon as
    every image has `max_output_size` boxes or no candidates left; every
    shape is static, so it compiles under XLA.

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

    >>> import keras
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

    batch = ops.shape(boxes)[0]
    if num_boxes == 0:
        count = ops.zeros((batch,), "int32")
        indices = ops.zeros((batch, max_output_size), "int32")
        return (indices[0], count[0]) if unbatched else (indices, count)

    # NaN is never kept; as -inf it cannot upset the sort either (TensorFlow's
    # eager top_k leaves a row holding NaN unsorted when k is large).
    scores = ops.where(ops.isnan(scores), float("-inf"), scores)
    sorted_scores, order = ops.top_k(scores, k=num_boxes, sorted=True)
    order = ops.cast(order, "int32")
    sorted_boxes = ops.take_along_axis(boxes, ops.expand_dims(order, -1), axis=1)
    candidate = sorted_scores > score_threshold

    tile = min(TILE_SIZE, num_boxes)
    num_tiles = -(-num_boxes // tile)
    padding = num_tiles * tile - num_boxes
    if padding:
        # Padding is never a candidate, so it is never kept.
        sorted_boxes = ops.pad(sorted_boxes, [[0, 0], [0, padding], [0, 0]])
        candidate = ops.pad(candidate, [[0, 0], [0, padding]])
        order = ops.pad(order, [[0, 0], [0, padding]])
    # An image is done past its last candidate.
    positions = ops.arange(num_tiles * tile, dtype="int32")
    end = ops.max(ops.where(candidate, positions + 1, 0), axis=1)
    tile_positions = ops.arange(tile, dtype="int32")
    earlier = tile_positions[:, None] < tile_positions[None, :]
    image_of_row = ops.repeat(ops.arange(batch, dtype="int32"), tile)

    def cond(t, kept_boxes, kept_indices, count):
        unfinished = ops.logical_and(count < max_output_size, t * tile < end)
        return ops.logical_and(t < num_tiles, ops.any(unfinished))

    def body(t, kept_boxes, kept_indices, count):
        start = t * tile
        tile_boxes = ops.slice(sorted_boxes, [0, start, 0], [batch, tile, 4])
        tile_candidate = ops.slice(candidate, [0, start], [batch, tile])

        # Suppression by the boxes kept in earlier tiles. XLA:CPU runs the
        # `any` over kept boxes faster as a product with ones; sums of 0/1
        # are exact, so `> 0` is the same test.
        filled = ops.arange(max_output_size, dtype="int32")[None, :] < count[:, None]
        overlaps = ops.logical_and(
            pairwise_iou(tile_boxes, kept_boxes[:, :max_output_size]) > iou_threshold, filled[:, None, :]
        )
        hit = ops.einsum("btk,k->bt", ops.cast(overlaps, "float32"), ops.ones((max_output_size,))) > 0.0
        tile_candidate = ops.logical_and(tile_candidate, ops.logical_not(hit))

        within = ops.logical_and(pairwise_iou(tile_boxes, tile_boxes) > iou_threshold, earlier)
        keep = _greedy_within_tile(tile_candidate, within)

        # Append the kept boxes and their indices at slots count, count + 1, ...;
        # the rest (and kept boxes past max_output_size) go to the spare last slot.
        slot = count[:, None] + ops.cumsum(ops.cast(keep, "int32"), axis=1) - 1
        slot = ops.where(ops.logical_and(keep, slot < max_output_size), slot, max_output_size)
        at = ops.stack([image_of_row, ops.reshape(slot, [-1])], axis=1)
        kept_boxes = ops.scatter_update(kept_boxes, at, ops.reshape(tile_boxes, [-1, 4]))
        tile_order = ops.slice(order, [0, start], [batch, tile])
        kept_indices = ops.scatter_update(kept_indices, at, ops.reshape(tile_order, [-1]))
        count = count + ops.sum(ops.cast(keep, "int32"), axis=1)
        return t + 1, kept_boxes, kept_indices, count

    init = (
        ops.convert_to_tensor(0, "int32"),
        ops.zeros((batch, max_output_size + 1, 4), "float32"),
        ops.zeros((batch, max_output_size + 1), "int32"),
        ops.zeros((batch,), "int32"),
    )
    _, _, kept_indices, count = ops.while_loop(cond, body, init)
    indices = kept_indices[:, :max_output_size]
    count = ops.minimum(count, max_output_size)
    if unbatched:
        return indices[0], count[0]
    return indices, count


def _greedy_within_tile(candidate, overlaps):
    """Greedy NMS inside one tile: which of the `candidate` boxes `[B, T]` are kept.

    `overlaps[b, j, i]` says that box `j` comes before box `i` and overlaps
    it. Iterates `keep[i] = candidate[i] & ~any(keep[j] & overlaps[j, i])`
    until `keep` stops changing. `keep[i]` only depends on the entries before
    it, so after `r` rounds the first `r` entries are final and the fixed
    point is exactly the greedy result; clustered proposals settle in two to
    four rounds, a chain of `T` boxes each overlapping only its neighbours
    in `T`.
    """
    # The `any` as a matrix product, faster on XLA:CPU: sums of 0/1 are exact,
    # so `> 0` is the same test.
    overlaps = ops.cast(overlaps, "float32")

    def step(keep, _):
        hit = ops.einsum("bj,bji->bi", ops.cast(keep, "float32"), overlaps) > 0.0
        return ops.logical_and(candidate, ops.logical_not(hit)), keep

    keep, _ = ops.while_loop(
        lambda keep, previous: ops.any(ops.not_equal(keep, previous)), step, step(candidate, candidate)
    )
    return keep

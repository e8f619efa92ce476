"""The five Mask R-CNN losses (He et al. 2017, Sec. 3; matterport's definitions).

Every loss averages over a set that can be empty (an image without objects
has no positive ROI); an empty set gives 0, never NaN.
"""

from keras import ops


def _safe_mean(total, count):
    return total / ops.maximum(ops.cast(count, "float32"), 1.0)


def smooth_l1(diff):
    """Elementwise smooth L1 (Huber with delta 1): `0.5 x**2` below 1, `|x| - 0.5` above."""
    absolute = ops.abs(diff)
    return ops.where(absolute < 1.0, 0.5 * diff * diff, absolute - 0.5)


def rpn_class_loss(match, logits):
    """Binary cross-entropy of RPN objectness over the sampled anchors.

    Args:
        match: int tensor `[B, A]`: 1 positive, 0 negative, -1 ignored.
        logits: float tensor `[B, A]`, objectness logits.

    Returns:
        Scalar float32: mean over anchors with `match >= 0`.
    """
    logits = ops.cast(logits, "float32")
    used = ops.cast(match >= 0, "float32")
    labels = ops.cast(match == 1, "float32")
    per_anchor = ops.binary_crossentropy(labels[..., None], logits[..., None], from_logits=True)
    per_anchor = ops.reshape(per_anchor, ops.shape(labels))
    return _safe_mean(ops.sum(per_anchor * used), ops.sum(used))


def rpn_box_loss(match, target_deltas, pred_deltas):
    """Smooth L1 of RPN deltas on positive anchors.

    Args:
        match: int tensor `[B, A]` (1 marks positives).
        target_deltas: float tensor `[B, A, 4]`.
        pred_deltas: float tensor `[B, A, 4]`.

    Returns:
        Scalar float32: mean over the coordinates of positive anchors.
    """
    positive = ops.cast(match == 1, "float32")[..., None]
    loss = smooth_l1(ops.cast(target_deltas, "float32") - ops.cast(pred_deltas, "float32")) * positive
    return _safe_mean(ops.sum(loss), 4.0 * ops.sum(positive))


def head_class_loss(target_class_ids, class_logits, valid):
    """Softmax cross-entropy of the box head over the sampled ROIs.

    Args:
        target_class_ids: int tensor `[B, T]` (0 background).
        class_logits: float tensor `[B, T, K]`.
        valid: bool tensor `[B, T]`, real (non-padding) ROIs.

    Returns:
        Scalar float32: mean over valid ROIs.
    """
    per_roi = ops.sparse_categorical_crossentropy(
        ops.cast(target_class_ids, "int32"), ops.cast(class_logits, "float32"), from_logits=True
    )
    valid = ops.cast(valid, "float32")
    return _safe_mean(ops.sum(per_roi * valid), ops.sum(valid))


def _pick_class(values, class_ids):
    """`values [B, T, K, ...]` -> `[B, T, ...]` at each ROI's class."""
    one_hot = ops.one_hot(ops.cast(class_ids, "int32"), values.shape[2], dtype=values.dtype)
    extra = len(values.shape) - 3
    one_hot = ops.reshape(one_hot, (*ops.shape(one_hot), *([1] * extra)))
    return ops.sum(values * one_hot, axis=2)


def head_box_loss(target_class_ids, target_deltas, pred_deltas):
    """Smooth L1 of the box head's deltas for the true class of positive ROIs.

    Args:
        target_class_ids: int tensor `[B, T]`; positives have a class > 0.
        target_deltas: float tensor `[B, T, 4]`.
        pred_deltas: float tensor `[B, T, K, 4]`.

    Returns:
        Scalar float32: mean over the coordinates of positive ROIs.
    """
    positive = ops.cast(target_class_ids > 0, "float32")[..., None]
    pred = _pick_class(ops.cast(pred_deltas, "float32"), target_class_ids)
    loss = smooth_l1(ops.cast(target_deltas, "float32") - pred) * positive
    return _safe_mean(ops.sum(loss), 4.0 * ops.sum(positive))


def mask_loss(target_class_ids, target_masks, pred_masks):
    """Per-pixel binary cross-entropy on the mask of the true class only.

    The mask branch predicts one mask per class and only the true class's
    mask is penalised, which decouples masks from classification (Mask
    R-CNN, Sec. 3). A class-agnostic head (one channel) is read as is.

    Args:
        target_class_ids: int tensor `[B, T]`; positives have a class > 0.
        target_masks: float tensor `[B, T, h, w]` in {0, 1}.
        pred_masks: float tensor `[B, T, h, w, K]` (or `K = 1`) of
            probabilities.

    Returns:
        Scalar float32: mean over the pixels of positive ROIs.
    """
    pred = ops.transpose(ops.cast(pred_masks, "float32"), (0, 1, 4, 2, 3))
    if pred.shape[2] == 1:
        pred = pred[:, :, 0]
    else:
        pred = _pick_class(pred, target_class_ids)
    positive = ops.cast(target_class_ids > 0, "float32")
    pred = ops.clip(pred, 1e-7, 1.0 - 1e-7)
    target = ops.cast(target_masks, "float32")
    per_pixel = -(target * ops.log(pred) + (1.0 - target) * ops.log(1.0 - pred))
    pixels = float(target_masks.shape[2] * target_masks.shape[3])
    return _safe_mean(ops.sum(per_pixel * positive[..., None, None]), pixels * ops.sum(positive))

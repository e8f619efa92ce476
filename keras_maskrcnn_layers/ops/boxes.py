"""Box coding and clipping in `(y1, x1, y2, x2)` pixel coordinates.

Delta coding follows Faster R-CNN (Ren et al., 2015, Eqn. 2) as matterport's
Mask R-CNN uses it: deltas are divided by `box_std` on encoding and
multiplied by it on decoding.
"""

import math

import keras
import numpy as np
from keras import ops

from keras_maskrcnn_layers.ops._validation import check_image_shape

# Detectron2 / torchvision clamp: exp(dh) never exceeds 1000 / 16.
BBOX_XFORM_CLIP = math.log(1000.0 / 16.0)


def _check_box_std(box_std):
    if isinstance(box_std, np.ndarray):
        box_std = box_std.tolist()
    if (
        not isinstance(box_std, (tuple, list))
        or len(box_std) != 4
        or any(isinstance(s, bool) or not isinstance(s, (int, float)) or not s > 0 for s in box_std)
    ):
        raise ValueError(
            f"`box_std` must be four positive numbers (dy, dx, dh, dw). Received: box_std={box_std!r}"
        )
    return [float(s) for s in box_std]


def _centers_and_sizes(boxes):
    h = boxes[..., 2] - boxes[..., 0]
    w = boxes[..., 3] - boxes[..., 1]
    cy = boxes[..., 0] + 0.5 * h
    cx = boxes[..., 1] + 0.5 * w
    return cy, cx, h, w


def encode_boxes(boxes, anchors, box_std=(0.1, 0.1, 0.2, 0.2)):
    """Encodes target boxes as deltas `(dy, dx, dh, dw)` relative to anchors.

    `dy = (cy - cy_a) / h_a / std_y`, `dh = log(h / h_a) / std_h`, likewise
    for x and w (Faster R-CNN, Eqn. 2).

    Args:
        boxes: float tensor `[..., 4]`. Target boxes, yxyx pixels.
        anchors: float tensor broadcastable to `boxes`. Reference boxes with
            positive height and width.
        box_std: four floats. Divisors of the deltas. Defaults to
            `(0.1, 0.1, 0.2, 0.2)`.

    Returns:
        Float tensor `[..., 4]` of deltas.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> from keras_maskrcnn_layers import ops as kml_ops
    >>> anchors = np.array([[0.0, 0.0, 10.0, 10.0]], "float32")
    >>> boxes = np.array([[1.0, 1.0, 11.0, 11.0]], "float32")
    >>> np.round(keras.ops.convert_to_numpy(kml_ops.encode_boxes(boxes, anchors)), 3)
    array([[1., 1., 0., 0.]], dtype=float32)
    """
    std = _check_box_std(box_std)
    boxes = ops.convert_to_tensor(boxes, "float32")
    anchors = ops.convert_to_tensor(anchors, "float32")
    cy, cx, h, w = _centers_and_sizes(boxes)
    acy, acx, ah, aw = _centers_and_sizes(anchors)
    dy = (cy - acy) / ah
    dx = (cx - acx) / aw
    dh = ops.log(h / ah)
    dw = ops.log(w / aw)
    return ops.stack([dy / std[0], dx / std[1], dh / std[2], dw / std[3]], axis=-1)


def decode_boxes(deltas, anchors, box_std=(0.1, 0.1, 0.2, 0.2), clamp=BBOX_XFORM_CLIP):
    """Applies deltas `(dy, dx, dh, dw)` to anchors; the inverse of `encode_boxes`.

    Deltas are multiplied by `box_std`, then `cy += dy * h`, `cx += dx * w`,
    `h *= exp(dh)`, `w *= exp(dw)`, with `dh, dw` clamped at `clamp` so that
    nothing overflows.

    Args:
        deltas: float tensor `[..., 4]`.
        anchors: float tensor broadcastable to `deltas`, yxyx pixels.
        box_std: four floats. Multipliers of the deltas. Defaults to
            `(0.1, 0.1, 0.2, 0.2)`.
        clamp: float. Upper bound on the scaled `dh, dw`. Defaults to
            `log(1000 / 16)`.

    Returns:
        Float32 tensor `[..., 4]`: decoded boxes, yxyx pixels (not clipped).

    Example:

    >>> import keras
    >>> import numpy as np
    >>> from keras_maskrcnn_layers import ops as kml_ops
    >>> anchors = np.array([[0.0, 0.0, 10.0, 10.0]], "float32")
    >>> deltas = np.array([[1.0, 1.0, 0.0, 0.0]], "float32")
    >>> np.round(keras.ops.convert_to_numpy(kml_ops.decode_boxes(deltas, anchors)), 3)
    array([[ 1.,  1., 11., 11.]], dtype=float32)
    """
    std = _check_box_std(box_std)
    deltas = ops.cast(ops.convert_to_tensor(deltas), "float32")
    anchors = ops.cast(ops.convert_to_tensor(anchors), "float32")
    acy, acx, ah, aw = _centers_and_sizes(anchors)
    dy = deltas[..., 0] * std[0]
    dx = deltas[..., 1] * std[1]
    dh = ops.minimum(deltas[..., 2] * std[2], clamp)
    dw = ops.minimum(deltas[..., 3] * std[3], clamp)
    cy = acy + dy * ah
    cx = acx + dx * aw
    h = ah * ops.exp(dh)
    w = aw * ops.exp(dw)
    return ops.stack([cy - 0.5 * h, cx - 0.5 * w, cy + 0.5 * h, cx + 0.5 * w], axis=-1)


def clip_boxes(boxes, image_shape):
    """Clips yxyx pixel boxes to `[0, height] x [0, width]`.

    Args:
        boxes: float tensor `[..., 4]`, yxyx pixels.
        image_shape: `(height, width)` of the network input image.

    Returns:
        Tensor like `boxes`, every coordinate inside the image.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> from keras_maskrcnn_layers import ops as kml_ops
    >>> boxes = np.array([[-5.0, 2.0, 40.0, 70.0]], "float32")
    >>> keras.ops.convert_to_numpy(kml_ops.clip_boxes(boxes, (32, 64)))
    array([[ 0.,  2., 32., 64.]], dtype=float32)
    """
    height, width = check_image_shape("image_shape", image_shape)
    boxes = ops.convert_to_tensor(boxes)
    limits = ops.convert_to_tensor([height, width, height, width], dtype=boxes.dtype)
    return ops.minimum(ops.maximum(boxes, ops.cast(0, boxes.dtype)), limits)


def check_box_scale(name, value):
    """A finite box scale > 0, as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not 0 < float(value) < math.inf:
        raise ValueError(f"`{name}` must be a finite number > 0. Received: {name}={value!r}")
    return float(value)


def scale_boxes(boxes, scale):
    """Scales yxyx boxes about their centres by `scale` (height and width alike).

    Args:
        boxes: float tensor `[..., 4]`, yxyx pixels.
        scale: float > 0. `1.0` returns the boxes unchanged.

    Returns:
        Float tensor like `boxes`. Boxes are not clipped to the image.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> from keras_maskrcnn_layers import ops as kml_ops
    >>> boxes = np.array([[10.0, 20.0, 30.0, 60.0]], "float32")
    >>> keras.ops.convert_to_numpy(kml_ops.scale_boxes(boxes, 1.5))
    array([[ 5., 10., 35., 70.]], dtype=float32)
    """
    if check_box_scale("scale", scale) == 1.0:
        return boxes
    cy, cx, h, w = _centers_and_sizes(boxes)
    half_h, half_w = 0.5 * scale * h, 0.5 * scale * w
    return ops.stack([cy - half_h, cx - half_w, cy + half_h, cx + half_w], axis=-1)


def box_areas(boxes):
    """Areas of yxyx boxes `[..., 4]` -> `[...]`; degenerate boxes give 0."""
    h = ops.maximum(boxes[..., 2] - boxes[..., 0], 0.0)
    w = ops.maximum(boxes[..., 3] - boxes[..., 1], 0.0)
    return h * w


def pairwise_iou(boxes1, boxes2):
    """Intersection over union of every pair: `[..., N, 4]`, `[..., M, 4]` -> `[..., N, M]`.

    Pairs whose union is empty (two zero-area boxes) have IoU 0.
    """
    b1 = ops.expand_dims(boxes1, -2)
    b2 = ops.expand_dims(boxes2, -3)
    inter_h = ops.maximum(ops.minimum(b1[..., 2], b2[..., 2]) - ops.maximum(b1[..., 0], b2[..., 0]), 0.0)
    inter_w = ops.maximum(ops.minimum(b1[..., 3], b2[..., 3]) - ops.maximum(b1[..., 1], b2[..., 1]), 0.0)
    inter = inter_h * inter_w
    union = ops.expand_dims(box_areas(boxes1), -1) + ops.expand_dims(box_areas(boxes2), -2) - inter
    return ops.where(union > 0.0, inter / ops.maximum(union, 1e-12), 0.0)

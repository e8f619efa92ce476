"""Pastes per-ROI soft masks back into image-sized masks, with fixed shapes.

The mask head predicts an `m_h x m_w` grid of probabilities over each box.
Pasting maps every image pixel centre inside the box to the grid's
continuous coordinates and interpolates bilinearly, the inverse of the
aligned ROI Align that produced the mask targets: pixel centre `p + 0.5`
reads cell coordinate `(p + 0.5 - y1) / (y2 - y1) * m_h - 0.5`.

Padding (Detectron2's `paste_masks_in_image`): the grid gets `padding`
cells of zeros on each side and the box grows by the same proportion, so
the edge cells are interpolated towards zero over the half cell beyond
their centres instead of being held constant up to the box edge. At
`threshold=0.5` this never moves a pixel whose edge cell is certain (1.0);
it trims soft edges (edge probability below 1).

The interpolation is separable: one `[H, m_h]` and one `[W, m_w]` weight
matrix per mask, two batched matrix products, no gather and no
data-dependent shape, so the op compiles with XLA on every backend.
"""

import keras
import numpy as np
from keras import ops

from keras_maskrcnn_layers.ops._validation import (
    check_boxes_values,
    check_image_shape,
    check_mask_threshold,
    concrete_value,
)
from keras_maskrcnn_layers.ops.boxes import check_box_scale, scale_boxes


def _check_inputs(masks, boxes, padding):
    if isinstance(padding, bool) or not isinstance(padding, (int, np.integer)) or padding < 0:
        raise ValueError(f"`padding` must be an integer >= 0. Received: padding={padding!r}")
    if len(masks.shape) < 3:
        raise ValueError(f"`masks` must be [..., N, m_h, m_w]. Received: masks.shape={tuple(masks.shape)}")
    if tuple(boxes.shape) != (*masks.shape[:-2], 4):
        raise ValueError(
            f"`boxes` must be [..., N, 4] with the same leading shape as `masks` [..., N, m_h, m_w]. "
            f"Received: boxes.shape={tuple(boxes.shape)}, masks.shape={tuple(masks.shape)}"
        )
    check_boxes_values("boxes", boxes)
    value = concrete_value(masks)
    if value is not None and value.size and not np.all(np.isfinite(value)):
        raise ValueError("`masks` contains NaN or infinite values.")


def _axis_weights(start, end, cells, padding, size):
    """Interpolation weights `[..., size, cells]` of one axis.

    Row `p` holds the weights with which image pixel `p` reads the `cells`
    real mask cells; the `padding` zero cells on either side carry weight
    but no value, so they are simply left out.
    """
    padded = cells + 2 * padding
    centre, half = 0.5 * (start + end), 0.5 * (end - start) * (padded / cells)
    start, length = centre - half, 2.0 * half
    pixel = ops.arange(size, dtype="float32") + 0.5
    offset = pixel - start[..., None]
    inside = (offset >= 0.0) & (offset <= length[..., None]) & (length[..., None] > 0.0)
    coord = offset / ops.maximum(length, 1e-6)[..., None] * padded - 0.5
    coord = ops.clip(coord, 0.0, padded - 1.0)
    low = ops.floor(coord)
    frac = coord - low
    high = ops.minimum(low + 1.0, padded - 1.0)
    index = ops.arange(cells, dtype="float32") + padding
    weights = ops.cast(ops.equal(low[..., None], index), "float32") * (1.0 - frac)[..., None]
    weights += ops.cast(ops.equal(high[..., None], index), "float32") * frac[..., None]
    return weights * ops.cast(inside, "float32")[..., None]


def paste_masks(masks, boxes, image_shape, threshold=0.5, padding=1, box_scale=1.0):
    """Pastes soft ROI masks into their boxes on an image of `image_shape`.

    Every mask gets its own full-size output channel, so overlapping
    instances stay separate. Pixels whose centres fall outside the (scaled,
    padded) box are 0; boxes may cross the image border.

    Args:
        masks: float tensor `[..., N, m_h, m_w]` of probabilities, as the
            mask head predicts them for each box.
        boxes: float tensor `[..., N, 4]`, yxyx pixels of the target image.
            All-zero (padding) boxes paste nothing.
        image_shape: static `(height, width)` of the target image.
        threshold: float in `(0, 1]` or None. Pixels whose pasted
            probability is at least `threshold` are foreground; None keeps
            the soft values (`DETECTION_MASK_THRESHOLD`). 0 is refused: it
            would mark every pixel, outside the box too. Defaults to `0.5`.
        padding: int >= 0. Zero cells added on each side of the mask before
            resizing, with the box enlarged to match (`MASK_PASTE_PADDING`).
            Defaults to `1`.
        box_scale: float > 0. The mask spans the box scaled by this factor
            about its centre (`MASK_BOX_SCALE`); use the factor the mask
            branch cropped its ROIs with. Defaults to `1.0`.

    Returns:
        Bool tensor `[..., N, height, width]`; float32 when `threshold` is
        None.

    Raises:
        ValueError: for mismatched shapes, NaN masks or boxes, boxes with
            `y2 < y1` or `x2 < x1`, or a bad setting.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> from keras_maskrcnn_layers import ops as kml_ops
    >>> mask = np.ones((1, 4, 4), "float32")
    >>> box = np.array([[1.0, 2.0, 3.0, 6.0]], "float32")
    >>> pasted = kml_ops.paste_masks(mask, box, (4, 8))
    >>> keras.ops.convert_to_numpy(pasted)[0].astype(int)
    array([[0, 0, 0, 0, 0, 0, 0, 0],
           [0, 0, 1, 1, 1, 1, 0, 0],
           [0, 0, 1, 1, 1, 1, 0, 0],
           [0, 0, 0, 0, 0, 0, 0, 0]])
    """
    height, width = check_image_shape("image_shape", image_shape)
    threshold = None if threshold is None else check_mask_threshold("threshold", threshold)
    box_scale = check_box_scale("box_scale", box_scale)
    masks = ops.convert_to_tensor(masks)
    boxes = ops.convert_to_tensor(boxes)
    _check_inputs(masks, boxes, padding)
    masks = ops.cast(masks, "float32")
    boxes = scale_boxes(ops.cast(boxes, "float32"), box_scale)
    rows = _axis_weights(boxes[..., 0], boxes[..., 2], masks.shape[-2], padding, height)
    cols = _axis_weights(boxes[..., 1], boxes[..., 3], masks.shape[-1], padding, width)
    pasted = ops.matmul(ops.matmul(rows, masks), ops.swapaxes(cols, -1, -2))
    if threshold is None:
        return pasted
    return pasted >= threshold

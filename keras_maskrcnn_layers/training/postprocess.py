"""From padded network outputs back to the original image: boxes and pasted masks."""

import numpy as np


def _axis_taps(start, end, size, first, last):
    """Bilinear taps into a mask axis of `size` cells spanning `[start, end]` pixels.

    Pixel `p` (centre `p + 0.5`) of the image reads the mask at
    `(p + 0.5 - start) / (end - start) * size - 0.5`, clamped to the edge
    cells; pixels whose centre lies outside the box get weight 0.
    """
    centres = np.arange(first, last, dtype=np.float64) + 0.5
    inside = (centres >= start) & (centres <= end)
    coord = np.clip((centres - start) / (end - start) * size - 0.5, 0.0, size - 1)
    low = np.floor(coord).astype(np.int64)
    high = np.minimum(low + 1, size - 1)
    frac = coord - low
    return low, high, frac, inside


def paste_mask(mask, box, image_shape, threshold=0.5):
    """Pastes a soft ROI mask into its box on an image of `image_shape`.

    Args:
        mask: float array `[m_h, m_w]` of probabilities.
        box: `(y1, x1, y2, x2)` in pixels of the target image.
        image_shape: `(height, width)`.
        threshold: float. Pixels at or above it are foreground; None keeps
            the soft values. Defaults to `0.5`.

    Returns:
        bool array `[height, width]` (float32 when `threshold` is None).
    """
    height, width = image_shape
    out = np.zeros((height, width), np.float32)
    y1, x1, y2, x2 = (float(v) for v in box)
    r0, r1 = max(int(np.floor(y1)), 0), min(int(np.ceil(y2)), height)
    c0, c1 = max(int(np.floor(x1)), 0), min(int(np.ceil(x2)), width)
    if y2 - y1 > 0 and x2 - x1 > 0 and r1 > r0 and c1 > c0:
        mask = np.asarray(mask, np.float32)
        ylo, yhi, fy, yin = _axis_taps(y1, y2, mask.shape[0], r0, r1)
        xlo, xhi, fx, xin = _axis_taps(x1, x2, mask.shape[1], c0, c1)
        fy, fx = fy[:, None], fx[None, :]
        rows = mask[ylo] * (1.0 - fy) + mask[yhi] * fy
        values = rows[:, xlo] * (1.0 - fx) + rows[:, xhi] * fx
        out[r0:r1, c0:c1] = values * (yin[:, None] & xin[None, :])
    if threshold is None:
        return out
    return out >= threshold


def unmold_detections(outputs, index, image_meta, mask_threshold):
    """One image's detections in the original image's pixels.

    Args:
        outputs: dict of batched inference-model outputs (NumPy).
        index: int. Image within the batch.
        image_meta: float array `[8]` (see `kml.data.parse_image_meta`).
        mask_threshold: float. Threshold of the pasted masks.

    Returns:
        dict with `rois [n, 4]` float32, `class_ids [n]` int32, `scores [n]`
        float32 and `masks [H, W, n]` bool, at the original size.
    """
    count = int(outputs["num_detections"][index])
    original = (int(image_meta[0]), int(image_meta[1]))
    window = np.asarray(image_meta[2:6], np.float32)
    scale = float(image_meta[6])
    boxes = np.asarray(outputs["detection_boxes"][index, :count], np.float32)
    shift = np.array([window[0], window[1], window[0], window[1]], np.float32)
    boxes = (boxes - shift) / scale
    limits = np.array([original[0], original[1], original[0], original[1]], np.float32)
    boxes = np.clip(boxes, 0.0, limits)
    soft = np.asarray(outputs["detection_masks"][index, :count], np.float32)
    masks = np.zeros((*original, count), bool)
    for k in range(count):
        masks[..., k] = paste_mask(soft[k], boxes[k], original, mask_threshold)
    return {
        "rois": boxes,
        "class_ids": np.asarray(outputs["detection_class_ids"][index, :count], np.int32),
        "scores": np.asarray(outputs["detection_scores"][index, :count], np.float32),
        "masks": masks,
    }

"""From padded network outputs back to the original image: boxes and pasted masks."""

import keras
import numpy as np

from keras_maskrcnn_layers.ops.paste_masks import paste_masks

# Masks pasted per call: bounds the float32 buffer at this many full images.
PASTE_CHUNK = 16


def unmold_detections(outputs, index, image_meta, mask_threshold=0.5, padding=1, box_scale=1.0):
    """One image's detections in the original image's pixels.

    Args:
        outputs: dict of batched inference-model outputs (NumPy).
        index: int. Image within the batch.
        image_meta: float array `[8]` (see `kml.data.parse_image_meta`).
        mask_threshold: float. Threshold of the pasted masks
            (`DETECTION_MASK_THRESHOLD`). Defaults to `0.5`.
        padding: int. `MASK_PASTE_PADDING`. Defaults to `1`.
        box_scale: float. `MASK_BOX_SCALE`. Defaults to `1.0`.

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
    masks = np.zeros((count, *original), bool)
    for start in range(0, count, PASTE_CHUNK):
        chunk = slice(start, start + PASTE_CHUNK)
        pasted = paste_masks(soft[chunk], boxes[chunk], original, mask_threshold, padding, box_scale)
        masks[chunk] = keras.ops.convert_to_numpy(pasted)
    return {
        "rois": boxes,
        "class_ids": np.asarray(outputs["detection_class_ids"][index, :count], np.int32),
        "scores": np.asarray(outputs["detection_scores"][index, :count], np.float32),
        "masks": np.moveaxis(masks, 0, -1),
    }

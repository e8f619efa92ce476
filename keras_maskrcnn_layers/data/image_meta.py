"""The image meta vector: how a network input maps back to its original image.

Layout (float32 `[8]`): `[orig_h, orig_w, win_y1, win_x1, win_y2, win_x2,
scale, image_id]`, with `image_id = -1` when the sample has none. It is a
shorter version of matterport's meta (which also carries the input shape,
fixed here by the config, and per-class activity flags, unused here).
"""

import numpy as np

IMAGE_META_SIZE = 8


def compose_image_meta(original_shape, window, scale, image_id=None):
    """Packs what `parse_image_meta` unpacks.

    Args:
        original_shape: `(height, width)` or `(height, width, channels)` of
            the image before resizing.
        window: `(y1, x1, y2, x2)`. The image inside the padded network
            input, in input pixels.
        scale: float. Resize factor applied to the original image.
        image_id: int or None. Defaults to `None` (stored as -1).

    Returns:
        float32 array `[8]`.

    Example:

    >>> from keras_maskrcnn_layers.data import compose_image_meta
    >>> compose_image_meta((64, 32, 3), (0, 32, 128, 96), 2.0, image_id=7)
    array([ 64.,  32.,   0.,  32., 128.,  96.,   2.,   7.], dtype=float32)
    """
    image_id = -1 if image_id is None else image_id
    values = [original_shape[0], original_shape[1], *window, scale, image_id]
    return np.asarray(values, dtype=np.float32)


def parse_image_meta(meta):
    """Unpacks image meta vectors into named parts.

    Args:
        meta: array `[8]` or `[B, 8]` (NumPy or anything `np.asarray` takes).

    Returns:
        dict with `"original_image_shape"` int32 `[..., 2]` (height, width),
        `"window"` float32 `[..., 4]` (y1, x1, y2, x2 in input pixels),
        `"scale"` float32 `[...]`, `"image_id"` int64 `[...]` (-1 if none).

    Example:

    >>> from keras_maskrcnn_layers.data import parse_image_meta
    >>> parts = parse_image_meta([64, 32, 0, 32, 128, 96, 2, -1])
    >>> parts["window"], float(parts["scale"]), int(parts["image_id"])
    (array([  0.,  32., 128.,  96.], dtype=float32), 2.0, -1)
    """
    meta = np.asarray(meta, dtype=np.float32)
    if meta.ndim not in (1, 2) or meta.shape[-1] != IMAGE_META_SIZE:
        raise ValueError(f"`meta` must have shape [{IMAGE_META_SIZE}] or [B, {IMAGE_META_SIZE}]. Received {meta.shape}")
    return {
        "original_image_shape": np.round(meta[..., 0:2]).astype(np.int32),
        "window": meta[..., 2:6],
        "scale": meta[..., 6],
        "image_id": np.round(meta[..., 7]).astype(np.int64),
    }

"""Bilinear and nearest-neighbour resizing in NumPy, pixel centres at `i + 0.5`.

Bilinear sampling uses the half-pixel convention of OpenCV's `INTER_LINEAR`
(and of `skimage.transform.resize(order=1)` away from the border): output
pixel `i` reads the input at `(i + 0.5) * in / out - 0.5`, clamped to the
edge pixels. There is no anti-aliasing, as in matterport's resizing.
"""

import numpy as np


def _source_coordinates(in_size, out_size):
    """Bilinear taps along one axis: pixel centres at `i + 0.5` on both grids."""
    src = (np.arange(out_size, dtype=np.float64) + 0.5) * (in_size / out_size) - 0.5
    src = np.clip(src, 0.0, in_size - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, in_size - 1)
    return lo, hi, (src - lo).astype(np.float32)


def resize_bilinear(array, out_h, out_w):
    """Resizes the first two axes of a float32 array `[H, W, ...]`."""
    h, w = array.shape[:2]
    if (h, w) == (out_h, out_w):
        return array
    tail = (1,) * (array.ndim - 2)
    y0, y1, fy = _source_coordinates(h, out_h)
    x0, x1, fx = _source_coordinates(w, out_w)
    fy = fy.reshape((-1, 1) + tail)
    fx = fx.reshape((1, -1) + tail)
    rows = array[y0] * (1.0 - fy) + array[y1] * fy
    return rows[:, x0] * (1.0 - fx) + rows[:, x1] * fx


def nearest_indices(in_size, out_size):
    """Input index read by each output pixel: the one under its centre."""
    src = np.floor((np.arange(out_size) + 0.5) * (in_size / out_size)).astype(np.int64)
    return np.minimum(src, in_size - 1)

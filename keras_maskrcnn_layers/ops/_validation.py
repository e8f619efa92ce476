"""Argument checks shared by ops and layers.

Every check raises `ValueError` naming the argument and the value given,
as API.md requires. Checks on tensor *values* run only where the values
are concrete (eager calls); traced and compiled calls cannot raise on data,
so they skip them.
"""

import math

import numpy as np


def check_positive_int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"`{name}` must be an integer >= {minimum}. Received: {name}={value!r}")
    if value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}. Received: {name}={value!r}")
    return int(value)


def check_probability(name, value):
    """A threshold in [0, 1], such as an IoU threshold."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise ValueError(f"`{name}` must be a number in [0, 1]. Received: {name}={value!r}")
    if not 0.0 <= float(value) <= 1.0 or math.isnan(float(value)):
        raise ValueError(f"`{name}` must be a number in [0, 1]. Received: {name}={value!r}")
    return float(value)


def check_mask_threshold(name, value):
    """A threshold in (0, 1] on pasted mask probabilities: every pasted pixel,
    outside the box too, is >= 0, so 0 would mark the whole image."""
    value = check_probability(name, value)
    if value == 0.0:
        raise ValueError(
            f"`{name}` must be in (0, 1]: every pasted pixel, those outside the box included, is >= 0. "
            f"Received: {name}=0.0"
        )
    return value


def check_seed(name, value):
    """None or an int >= 0 (Keras seed generators refuse negative seeds on JAX)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0):
        raise ValueError(f"`{name}` must be None or an integer >= 0. Received: {name}={value!r}")
    return None if value is None else int(value)


def check_pair(name, value, minimum=1):
    """An int or an (h, w) pair of ints, each >= minimum; returns a tuple."""
    pair = value
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        pair = (value, value)
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise ValueError(
            f"`{name}` must be an int or a pair (height, width) of ints. Received: {name}={value!r}"
        )
    for v in pair:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
            raise ValueError(
                f"`{name}` must hold integers >= {minimum}. Received: {name}={value!r}"
            )
    return (int(pair[0]), int(pair[1]))


def check_image_shape(name, value):
    """A static (height, width) pair of positive ints; a longer shape keeps its first two."""
    if not isinstance(value, (tuple, list)) or len(value) < 2:
        raise ValueError(
            f"`{name}` must be a static (height, width) pair of positive ints. "
            f"Received: {name}={value!r}"
        )
    h, w = value[0], value[1]
    for v in (h, w):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(
                f"`{name}` must be a static (height, width) pair of positive ints. "
                f"Received: {name}={value!r}"
            )
    return (int(h), int(w))


def concrete_value(x):
    """Returns `x` as a NumPy array when its values are known, else None.

    Symbolic Keras tensors, `tf.function` graph tensors and JAX tracers have
    no values yet; value checks are skipped for them.
    """
    if isinstance(x, np.ndarray):
        return x
    if x is None or type(x).__name__ == "KerasTensor":
        return None
    try:
        return np.asarray(x)
    except Exception:  # Traced tensors refuse conversion; that is expected.
        return None


def check_boxes_values(name, boxes):
    """Raises on NaN/inf coordinates or boxes with y2 < y1 or x2 < x1 (eager only)."""
    value = concrete_value(boxes)
    if value is None or value.size == 0:
        return
    value = value.astype(np.float64)
    if not np.all(np.isfinite(value)):
        raise ValueError(f"`{name}` contains NaN or infinite coordinates.")
    bad = (value[..., 2] < value[..., 0]) | (value[..., 3] < value[..., 1])
    if np.any(bad):
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"`{name}` must be (y1, x1, y2, x2) with y2 >= y1 and x2 >= x1; "
            f"box at index {first} is {value[first].tolist()}. Are the boxes in xyxy order?"
        )


def check_shape(name, shape, layout):
    """Checks a static shape against a layout such as `"[B, N, 4]"`.

    Letters stand for any size; integers must match. Returns the shape as a
    tuple. The message names the argument, the layout and the shape given.
    """
    dims = [d.strip() for d in layout.strip("[]").split(",")]
    shape = tuple(shape)
    ok = len(shape) == len(dims) and all(
        not d.isdigit() or s is None or s == int(d) for d, s in zip(dims, shape)
    )
    if not ok:
        raise ValueError(f"`{name}` must be {layout}. Received: shape={shape}")
    return shape


def check_same_size(label, *named_sizes):
    """Raises unless the known sizes of `(name, size)` pairs agree (e.g. G)."""
    known = {size for _, size in named_sizes if size is not None}
    if len(known) > 1:
        given = ", ".join(f"{name}: {size}" for name, size in named_sizes)
        raise ValueError(f"{label} must agree. Received {given}")


def check_not_empty(name, shape, axis, what):
    """A zero-size axis the op cannot reduce over; padding with zeros is the way to say 'none'."""
    if shape[axis] == 0:
        raise ValueError(
            f"`{name}` has no {what}. Pass at least one row: an all-zero (padding) row "
            f"means no instance. Received: shape={tuple(shape)}"
        )


def _check_finite_array(name, value):
    bad = ~np.isfinite(value.astype(np.float64))
    if np.any(bad):
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"`{name}` contains NaN or infinite values: {value[first]} at index {first}.")


def check_finite(name, x):
    """Raises on NaN or infinite values (eager only)."""
    value = concrete_value(x)
    if value is not None and value.size:
        _check_finite_array(name, value)


def check_probabilities(name, x):
    """Raises unless every value lies in [0, 1] (eager only)."""
    value = concrete_value(x)
    if value is None or value.size == 0:
        return
    _check_finite_array(name, value)
    if np.any(value < 0) or np.any(value > 1):
        raise ValueError(
            f"`{name}` must hold probabilities in [0, 1]. Received values from {value.min()} to "
            f"{value.max()}; were logits passed?"
        )

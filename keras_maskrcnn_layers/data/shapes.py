"""A generated data set of squares, circles and triangles (matterport's "shapes").

Small enough to train a Mask R-CNN on a CPU in minutes, yet with what makes
instance segmentation hard: overlapping, occluding instances of several
classes. Shapes are drawn with NumPy by testing pixel centres against each
shape, so no imaging library is needed.
"""

import math

import numpy as np

SHAPES_CLASS_NAMES = ("BG", "square", "circle", "triangle")

# Sides of 12..60 px on a 128 px image; scaled with the image's short side.
_REFERENCE_SIDE = 128
_MIN_SIZE, _MAX_SIZE = 12.0, 60.0
_MIN_AREA = 20
# Shapes must stand out from the background and from each other: minimum L1
# distance over RGB.
_MIN_COLOUR_DISTANCE = 90
# Draws per colour before settling for the most distinct one drawn: with a few
# shapes a draw is rejected well under half the time, so only crowded images
# (dozens of shapes, where the colour space runs out) ever reach the limit.
_COLOUR_DRAWS = 256


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}. Received: {name}={value!r}")
    return int(value)


def _shape_mask(kind, cy, cx, size, yy, xx):
    """Pixels whose centre lies inside the shape; `yy, xx` are centre grids."""
    half = size / 2.0
    if kind == 1:  # square, axis-aligned
        return (np.abs(yy - cy) <= half) & (np.abs(xx - cx) <= half)
    if kind == 2:  # circle of diameter `size`
        return (yy - cy) ** 2 + (xx - cx) ** 2 <= half**2
    # Equilateral triangle pointing up, side `size`, centred on its centroid.
    height = size * math.sqrt(3.0) / 2.0
    apex = cy - 2.0 * height / 3.0
    base = cy + height / 3.0
    return (yy <= base) & (yy >= apex) & (np.abs(xx - cx) <= (yy - apex) * half / height)


def _colour_far_from(rng, others):
    """A random colour at least `_MIN_COLOUR_DISTANCE` from `others`, or the farthest of a bounded number of draws."""
    others = np.asarray(others)
    best, best_distance = None, -1
    for _ in range(_COLOUR_DRAWS):
        colour = rng.integers(0, 256, size=3)
        distance = np.abs(others - colour).sum(axis=-1).min()
        if distance >= _MIN_COLOUR_DISTANCE:
            return colour
        if distance > best_distance:
            best, best_distance = colour, distance
    return best


def _generate_one(rng, height, width, max_instances, empty_fraction, min_area, image_id):
    background = rng.integers(0, 256, size=3)
    image = np.empty((height, width, 3), np.uint8)
    image[:] = background
    count = 0 if rng.random() < empty_fraction else int(rng.integers(1, max_instances + 1))
    unit = min(height, width) / _REFERENCE_SIDE
    yy = np.arange(height, dtype=np.float32)[:, None] + 0.5
    xx = np.arange(width, dtype=np.float32)[None, :] + 0.5
    masks = np.zeros((height, width, count), bool)
    class_ids = np.zeros((count,), np.int32)
    colours = [background]
    for i in range(count):
        kind = int(rng.integers(1, len(SHAPES_CLASS_NAMES)))
        size = min(rng.uniform(_MIN_SIZE, _MAX_SIZE) * unit, 0.9 * min(height, width))
        # Keep the whole shape inside the image: a cut-off shape would look
        # like another class.
        cy = rng.uniform(size / 2.0, height - size / 2.0)
        cx = rng.uniform(size / 2.0, width - size / 2.0)
        drawn = _shape_mask(kind, cy, cx, size, yy, xx)
        colours.append(_colour_far_from(rng, colours))
        image[drawn] = colours[-1]
        # Later shapes occlude earlier ones: earlier masks lose those pixels.
        masks[drawn, :i] = False
        masks[..., i] = drawn
        class_ids[i] = kind
    visible = masks.sum(axis=(0, 1)) >= min_area
    return {
        "image": image,
        "masks": masks[..., visible],
        "class_ids": class_ids[visible],
        "image_id": image_id,
    }


def generate_shapes(count, height=128, width=128, seed=0, max_instances=4, empty_fraction=0.05, min_area=None):
    """Generates images of squares, circles and triangles with instance masks.

    Each image has a random solid background and 1..`max_instances` shapes
    (none with probability `empty_fraction`) of random class, colour (set
    apart from the background and the other shapes as far as the colour
    space allows: with dozens of shapes some colours come closer), size
    (sides of 12..60 px at 128 px, scaled with the short side) and position,
    fully inside the image. Shapes may overlap; later shapes hide earlier
    ones, whose masks lose the hidden pixels, and instances left with less
    than `min_area` visible pixels are dropped.

    Args:
        count: int >= 0. Number of images.
        height: int >= 16. Image height. Defaults to `128`.
        width: int >= 16. Image width. Defaults to `128`.
        seed: int. Seed of the generator; equal seeds give equal samples.
            Defaults to `0`.
        max_instances: int >= 1. Most shapes per image. Defaults to `4`.
        empty_fraction: float in [0, 1]. Probability of an image with no
            shapes. Defaults to `0.05`.
        min_area: int or None. Fewest visible pixels an instance keeps.
            Defaults to `None`: 20 px at 128 x 128, scaled with the image
            area (at least 1).

    Returns:
        list of samples: dicts with `"image"` uint8 `[H, W, 3]`, `"masks"`
        bool `[H, W, N]`, `"class_ids"` int32 `[N]` (1 square, 2 circle,
        3 triangle; names in `SHAPES_CLASS_NAMES`) and `"image_id"` (the
        index).

    Example:

    >>> from keras_maskrcnn_layers.data import SHAPES_CLASS_NAMES, generate_shapes
    >>> samples = generate_shapes(2, height=64, width=96, seed=1)
    >>> samples[0]["image"].shape, samples[0]["masks"].dtype
    ((64, 96, 3), dtype('bool'))
    >>> SHAPES_CLASS_NAMES[1:]
    ('square', 'circle', 'triangle')
    """
    count = _check_int("count", count, 0)
    height = _check_int("height", height, 16)
    width = _check_int("width", width, 16)
    max_instances = _check_int("max_instances", max_instances, 1)
    if isinstance(empty_fraction, bool) or not isinstance(empty_fraction, (int, float)) or not (
        0.0 <= empty_fraction <= 1.0
    ):
        raise ValueError(f"`empty_fraction` must be a number in [0, 1]. Received: empty_fraction={empty_fraction!r}")
    if min_area is None:
        min_area = max(1, round(_MIN_AREA * height * width / _REFERENCE_SIDE**2))
    min_area = _check_int("min_area", min_area, 1)
    rng = np.random.default_rng(seed)
    return [_generate_one(rng, height, width, max_instances, empty_fraction, min_area, i) for i in range(count)]

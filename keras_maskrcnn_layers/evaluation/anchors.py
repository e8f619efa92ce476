"""How well anchors fit the ground truth, and anchor scales and ratios that fit better.

The RPN learns only from anchors that overlap an object: an object whose
best anchor IoU is below the positive threshold (0.7, Faster R-CNN Sec. 3.1.2)
is a positive only through the "best anchor" rule, and one below 0.5 is
hard to propose at all. `anchor_coverage` measures that for the anchors of
`kml.AnchorGenerator` without building them, and `suggest_anchor_scales`
searches scales and ratios that cover more objects. NumPy only.
"""

import dataclasses
import itertools
import math

import numpy as np

from keras_maskrcnn_layers.evaluation._utils import check_boxes, format_table, format_value

# Aspect ratios (width / height) that `suggest_anchor_scales` chooses from.
CANDIDATE_RATIOS = (1 / 4, 1 / 3, 1 / 2, 2 / 3, 1.0, 3 / 2, 2.0, 3.0, 4.0)
COVERAGE_THRESHOLDS = (0.5, 0.7)
# Boxes are processed in chunks of this many, to bound memory.
_CHUNK = 4096


# === Argument checks ===


def _positive_numbers(name, values):
    if isinstance(values, (int, float)) and not isinstance(values, bool):
        values = (values,)
    if not isinstance(values, (tuple, list)) or not values:
        raise ValueError(f"`{name}` must be a non-empty sequence of positive numbers. Received: {name}={values!r}")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < math.inf:
            raise ValueError(f"`{name}` must hold positive, finite numbers. Received: {name}={values!r}")
    return tuple(float(v) for v in values)


def _strides(strides):
    if not isinstance(strides, (tuple, list)) or not strides:
        raise ValueError(f"`strides` must be a non-empty sequence of positive ints. Received: strides={strides!r}")
    if any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1 for s in strides):
        raise ValueError(f"`strides` must hold positive ints. Received: strides={strides!r}")
    return tuple(int(s) for s in strides)


def _level_scales(scales, num_levels):
    """One tuple of scales per level, the same number on each (as `AnchorGenerator`)."""
    if not isinstance(scales, (tuple, list)) or len(scales) != num_levels:
        raise ValueError(
            f"`scales` must have one entry per level of `strides` ({num_levels}). Received: scales={scales!r}"
        )
    per_level = [_positive_numbers("scales", s) for s in scales]
    if len({len(s) for s in per_level}) != 1:
        raise ValueError(f"`scales` must give the same number of scales on every level. Received: scales={scales!r}")
    return per_level


def _image_shape(image_shape):
    if not isinstance(image_shape, (tuple, list)) or len(image_shape) < 2:
        raise ValueError(f"`image_shape` must be (height, width). Received: image_shape={image_shape!r}")
    height, width = image_shape[:2]
    for side in (height, width):
        if isinstance(side, bool) or not isinstance(side, (int, np.integer)) or side < 1:
            raise ValueError(f"`image_shape` must be positive ints (height, width). Received: {image_shape!r}")
    return int(height), int(width)


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive int. Received: {name}={value!r}")
    return int(value)


def _offset(offset):
    if isinstance(offset, bool) or not isinstance(offset, (int, float)) or not math.isfinite(offset):
        raise ValueError(f"`offset` must be a finite number. Received: offset={offset!r}")
    return float(offset)


# === Geometry ===


@dataclasses.dataclass(frozen=True)
class _Grid:
    """Anchor centres of one image: `(k * anchor_stride + offset) * stride`, `k < rows` (or `cols`)."""

    image_shape: tuple
    anchor_stride: int
    offset: float

    def counts(self, stride):
        height, width = self.image_shape
        # AnchorGenerator: ceil(side / stride) feature cells, every anchor_stride-th one.
        return (
            math.ceil(math.ceil(height / stride) / self.anchor_stride),
            math.ceil(math.ceil(width / stride) / self.anchor_stride),
        )

    def nearest(self, centres, stride, count):
        """The anchor centre nearest to each of `centres`, along one axis."""
        k = np.clip(np.round((centres / stride - self.offset) / self.anchor_stride), 0, count - 1)
        return (k * self.anchor_stride + self.offset) * stride


def _shape_ious(boxes, heights, widths, strides, grid):
    """IoU `[N, A]` of each box with the best-placed anchor of each of `A` anchor shapes.

    Along each axis the overlap of a box and an anchor shrinks as their
    centres move apart, and the IoU grows with the overlap, so the best
    anchor of a shape is the one on the grid point nearest the box centre,
    taken independently in y and x.
    """
    rows, cols = np.asarray([grid.counts(s) for s in strides], np.float64).T
    strides = np.asarray(strides, np.float64)
    cy = 0.5 * (boxes[:, 0:1] + boxes[:, 2:3])
    cx = 0.5 * (boxes[:, 1:2] + boxes[:, 3:4])
    ay, ax = grid.nearest(cy, strides, rows), grid.nearest(cx, strides, cols)
    inter_h = np.minimum(boxes[:, 2:3], ay + 0.5 * heights) - np.maximum(boxes[:, 0:1], ay - 0.5 * heights)
    inter_w = np.minimum(boxes[:, 3:4], ax + 0.5 * widths) - np.maximum(boxes[:, 1:2], ax - 0.5 * widths)
    inter = np.clip(inter_h, 0.0, None) * np.clip(inter_w, 0.0, None)
    box_areas = (boxes[:, 2:3] - boxes[:, 0:1]) * (boxes[:, 3:4] - boxes[:, 1:2])
    return inter / (box_areas + heights * widths - inter)


def _anchor_shapes(level_scales, ratios, strides):
    """Height, width and stride `[A]` of every anchor shape: level, scale, ratio."""
    shapes = [
        (s / math.sqrt(r), s * math.sqrt(r), stride)
        for scales, stride in zip(level_scales, strides)
        for s in scales
        for r in ratios
    ]
    return tuple(np.asarray(column, np.float64) for column in zip(*shapes))


def _best_ious(boxes, level_scales, ratios, strides, grid):
    heights, widths, shape_strides = _anchor_shapes(level_scales, ratios, strides)
    best = np.zeros(boxes.shape[0])
    for start in range(0, boxes.shape[0], _CHUNK):
        chunk = boxes[start : start + _CHUNK]
        best[start : start + _CHUNK] = _shape_ious(chunk, heights, widths, shape_strides, grid).max(axis=1)
    return best


def anchor_coverage(boxes, scales, ratios, strides, image_shape, anchor_stride=1, offset=0.0):
    """The best IoU of each box with the anchors that `kml.AnchorGenerator` makes.

    The anchors are those of `kml.AnchorGenerator(scales, ratios, strides,
    anchor_stride, offset)(image_shape=image_shape)`: height `s / sqrt(r)`
    and width `s * sqrt(r)`, centred at `(index + offset) * stride` on
    `ceil(side / stride)` cells per axis (every `anchor_stride`-th), not
    clipped to the image. They are never built: for each anchor shape only
    the grid point nearest the box centre can give the best IoU, so the cost
    is `N * num_shapes`, whatever the image size.

    Args:
        boxes: float array `[N, 4]`, yxyx pixels of the network input.
        scales: tuple of positive numbers, one per level, or of tuples
            (several per level). Anchor sides in pixels.
        ratios: tuple of positive numbers. Width / height.
        strides: tuple of positive ints, one per level.
        image_shape: `(height, width)` of the network input.
        anchor_stride: int >= 1. Defaults to `1`.
        offset: float. Defaults to `0.0`, as `AnchorGenerator`.

    Returns:
        float64 array `[N]`: the best anchor IoU of each box (0 for a box
        of zero area).

    Raises:
        ValueError: if `boxes` is not `[N, 4]`, holds NaN or inf or a box
            with `y2 < y1` or `x2 < x1`, or the anchor settings are invalid
            (as `AnchorGenerator` would say).

    Example:

    >>> from keras_maskrcnn_layers.evaluation import anchor_coverage
    >>> boxes = [[16, 16, 48, 48], [0, 0, 16, 64]]
    >>> anchor_coverage(boxes, (32, 64), (0.5, 1.0, 2.0), (16, 32), (64, 64)).round(3)
    array([1.   , 0.333])
    """
    boxes = check_boxes("boxes", boxes)
    strides = _strides(strides)
    grid = _Grid(_image_shape(image_shape), _positive_int("anchor_stride", anchor_stride), _offset(offset))
    return _best_ious(boxes, _level_scales(scales, len(strides)), _positive_numbers("ratios", ratios), strides, grid)


def _coverage(best_ious):
    return {t: float(np.mean(best_ious >= t)) if best_ious.size else math.nan for t in COVERAGE_THRESHOLDS}


# === Suggestion ===


@dataclasses.dataclass
class AnchorSuggestion:
    """Anchor scales and ratios suggested by `suggest_anchor_scales`, with their coverage.

    Attributes:
        scales: tuple of floats, one per level (`RPN_ANCHOR_SCALES`).
        ratios: tuple of floats, width / height (`RPN_ANCHOR_RATIOS`).
        coverage: dict IoU threshold (0.5, 0.7) -> share of the boxes whose
            best anchor reaches it.
        current_scales: the scales compared against, or `None`.
        current_ratios: the ratios compared against, or `None`.
        current_coverage: their coverage dict, or `None`.
        num_boxes: int. Boxes measured.
    """

    scales: tuple
    ratios: tuple
    coverage: dict
    current_scales: tuple = None
    current_ratios: tuple = None
    current_coverage: dict = None
    num_boxes: int = 0

    def table(self):
        """Suggested (and current) anchors and their coverage as an aligned text table."""
        rows = [("suggested", self.scales, self.ratios, self.coverage)]
        if self.current_coverage is not None:
            rows.append(("current", self.current_scales, self.current_ratios, self.current_coverage))
        header = ("anchors", "scales", "ratios (w/h)") + tuple(f"IoU >= {t:g}" for t in COVERAGE_THRESHOLDS)
        body = [
            (name, _format_numbers(scales), _format_numbers(ratios))
            + tuple(format_value(coverage[t], percent=True) for t in COVERAGE_THRESHOLDS)
            for name, scales, ratios, coverage in rows
        ]
        title = f"Share of {self.num_boxes} ground-truth boxes whose best anchor reaches the IoU"
        return title + "\n" + format_table(header, body)


def _format_numbers(values):
    return "(" + ", ".join(_format_numbers(v) if isinstance(v, tuple) else f"{v:.4g}" for v in values) + ")"


def _round_scale(value):
    value = round(value, 2)
    return int(value) if value == int(value) else value


def _base_candidates(image_shape, steps_per_octave):
    """Level-0 scales `2**(k / steps_per_octave)` from 1 px to the image's long side."""
    top = math.ceil(steps_per_octave * math.log2(max(image_shape)))
    return [2.0 ** (k / steps_per_octave) for k in range(top + 1)]


def _ratio_table(boxes, bases, ratios, strides, grid):
    """Best IoU `[R, K, N]` per ratio and level-0 scale, over the levels (scales `base * 2**level`)."""
    table = np.zeros((len(ratios), len(bases), boxes.shape[0]))
    for j, ratio in enumerate(ratios):
        for k, base in enumerate(bases):
            level_scales = [(base * 2.0**level,) for level in range(len(strides))]
            table[j, k] = _best_ious(boxes, level_scales, (ratio,), strides, grid)
    return table


def _search(table, ratio_sets, ratios):
    """The (ratio set, base index) of highest coverage at 0.7, then at 0.5, then mean IoU.

    Remaining ties go to the set of ratios closest to 1 (extreme anchors
    only where they help), then to the smaller base.
    """
    best_key, best = None, None
    for ratio_set in ratio_sets:
        ious = table[list(ratio_set)].max(axis=0)  # [K, N]
        spread = -sum(abs(math.log(ratios[j])) for j in ratio_set)
        keys = zip((ious >= 0.7).mean(axis=1), (ious >= 0.5).mean(axis=1), ious.mean(axis=1))
        for k, key in enumerate(keys):
            if best_key is None or key + (spread,) > best_key:
                best_key, best = key + (spread,), (ratio_set, k)
    return best


def _ratio_sets(ratios, candidate_ratios, num_ratios):
    """The ratios to search with, and the sets of their indices to try."""
    if ratios is not None:
        ratios = _positive_numbers("ratios", ratios)
        return ratios, [tuple(range(len(ratios)))]
    candidates = _positive_numbers("candidate_ratios", candidate_ratios)
    size = _positive_int("num_ratios", num_ratios)
    if size > len(candidates):
        raise ValueError(f"`num_ratios` ({size}) exceeds the {len(candidates)} `candidate_ratios`.")
    return candidates, list(itertools.combinations(range(len(candidates)), size))


def _default_image_shape(boxes, strides):
    """The smallest multiple of the largest stride that holds every box."""
    step = max(strides)
    bottom = float(boxes[:, 2].max()) if boxes.size else 1.0
    right = float(boxes[:, 3].max()) if boxes.size else 1.0
    return (max(step, step * math.ceil(bottom / step)), max(step, step * math.ceil(right / step)))


def suggest_anchor_scales(
    boxes,
    strides,
    ratios=None,
    image_shape=None,
    current_scales=None,
    current_ratios=None,
    anchor_stride=1,
    offset=0.0,
    num_ratios=3,
    candidate_ratios=CANDIDATE_RATIOS,
    steps_per_octave=4,
    max_boxes=20000,
    seed=0,
):
    """Suggests anchor scales (and ratios) that give more boxes a well-fitting anchor.

    Scales are one per level, `base * 2**level`, as the default pyramid's
    `(32, 64, 128, 256, 512)`; the level-0 `base` is searched on the grid
    `2**(k / steps_per_octave)` from 1 px to the image's long side. Without
    `ratios`, every set of `num_ratios` ratios from `candidate_ratios` is
    tried together with every base. The winner has the largest share of
    boxes whose best anchor IoU (`anchor_coverage`) is >= 0.7, then >= 0.5,
    then the highest mean best IoU, then the ratios closest to 1 (the least
    sum of `|log(ratio)|`), then the smaller base. The search runs on at
    most `max_boxes` boxes (a random subset); the coverage reported is over
    all of them.

    Args:
        boxes: float array `[N, 4]`, yxyx pixels of the network input
            (`N >= 1`).
        strides: tuple of positive ints, one per level
            (`BACKBONE_STRIDES`).
        ratios: tuple of positive numbers or None. Keep these ratios and
            search the scales only. Defaults to `None`: choose them too.
        image_shape: `(height, width)` of the network input or None.
            Defaults to `None`: the smallest multiple of the largest stride
            that holds every box.
        current_scales: optional scales (`RPN_ANCHOR_SCALES`) to report the
            coverage of, for comparison. Defaults to `None`.
        current_ratios: ratios that go with `current_scales`. Defaults to
            `None`: `AnchorGenerator`'s `(0.5, 1.0, 2.0)`.
        anchor_stride: int >= 1. Defaults to `1`.
        offset: float. Anchor centre = `(index + offset) * stride`.
            Defaults to `0.0`.
        num_ratios: int >= 1. Ratios to choose when `ratios` is None.
            Defaults to `3`.
        candidate_ratios: tuple of positive numbers to choose from. Defaults
            to `CANDIDATE_RATIOS`, 1/4 to 4.
        steps_per_octave: int >= 1. Fineness of the base-scale grid.
            Defaults to `4`.
        max_boxes: int >= 1. Most boxes the search looks at. Defaults to
            `20000`.
        seed: int. Seed of the subset. Defaults to `0`.

    Returns:
        An `AnchorSuggestion` with `.scales`, `.ratios`, `.coverage`,
        `.current_coverage` and `.table()`.

    Raises:
        ValueError: if `boxes` is empty, not `[N, 4]`, holds NaN or a box
            with `y2 < y1` or `x2 < x1`, or another argument is invalid.

    Example:

    >>> import numpy as np
    >>> from keras_maskrcnn_layers.evaluation import suggest_anchor_scales
    >>> centres = np.arange(8, 120, 8.0)
    >>> boxes = np.array([[c - 8, c - 8, c + 8, c + 8] for c in centres])
    >>> suggestion = suggest_anchor_scales(boxes, strides=(8, 16), image_shape=(128, 128),
    ...                                    current_scales=(32, 64))
    >>> suggestion.scales, suggestion.ratios, suggestion.coverage[0.7], suggestion.current_coverage[0.7]
    ((16, 32), (0.67, 1, 1.5), 1.0, 0.0)
    """
    boxes = check_boxes("boxes", boxes)
    if boxes.shape[0] == 0:
        raise ValueError("`boxes` must hold at least one box to suggest anchors for.")
    strides = _strides(strides)
    shape = _default_image_shape(boxes, strides) if image_shape is None else _image_shape(image_shape)
    grid = _Grid(shape, _positive_int("anchor_stride", anchor_stride), _offset(offset))
    candidates, ratio_sets = _ratio_sets(ratios, candidate_ratios, num_ratios)
    bases = _base_candidates(shape, _positive_int("steps_per_octave", steps_per_octave))
    sample = boxes
    if boxes.shape[0] > _positive_int("max_boxes", max_boxes):
        sample = boxes[np.random.default_rng(seed).choice(boxes.shape[0], max_boxes, replace=False)]
    ratio_set, k = _search(_ratio_table(sample, bases, candidates, strides, grid), ratio_sets, candidates)
    scales = tuple(_round_scale(bases[k] * 2.0**level) for level in range(len(strides)))
    chosen = tuple(_round_scale(candidates[j]) for j in ratio_set)
    coverage = _coverage(_best_ious(boxes, [(s,) for s in scales], chosen, strides, grid))
    suggestion = AnchorSuggestion(scales, chosen, coverage, num_boxes=int(boxes.shape[0]))
    if current_scales is not None:
        level_scales = _level_scales(current_scales, len(strides))
        if current_ratios is None:
            current_ratios = (0.5, 1.0, 2.0)  # AnchorGenerator's default
        current_ratios = _positive_numbers("current_ratios", current_ratios)
        suggestion.current_scales = tuple(s[0] if len(s) == 1 else s for s in level_scales)
        suggestion.current_ratios = current_ratios
        suggestion.current_coverage = _coverage(_best_ious(boxes, level_scales, current_ratios, strides, grid))
    return suggestion

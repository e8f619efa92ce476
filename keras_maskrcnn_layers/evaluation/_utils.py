"""Argument checks, size bins, IoUs and text tables shared by the diagnostics (NumPy only)."""

import math

import numpy as np

# COCO's object sizes, by area in pixels of the original image (Lin et al. 2014).
COCO_SIZE_RANGES = {"small": (0.0, 32.0**2), "medium": (32.0**2, 96.0**2), "large": (96.0**2, math.inf)}


# === Argument checks ===


def check_mask(name, mask, ndim):
    """`mask` as a bool array of `ndim` dimensions; numbers must be 0 or 1."""
    mask = np.asarray(mask)
    if mask.ndim != ndim:
        layout = "[H, W]" if ndim == 2 else "[H, W, N]"
        raise ValueError(f"`{name}` must have shape {layout}. Received: {name}.shape={mask.shape}")
    if mask.dtype == bool:
        return mask
    if not np.issubdtype(mask.dtype, np.number):
        raise ValueError(f"`{name}` must be bool or numeric. Received: dtype {mask.dtype}")
    if np.isnan(mask).any():
        raise ValueError(f"`{name}` contains NaN.")
    others = np.setdiff1d(mask, (0, 1))
    if others.size:
        raise ValueError(f"`{name}` must hold only 0 and 1 (or bools). Received values such as {others[:5].tolist()}")
    return mask.astype(bool)


def check_boxes(name, boxes):
    """`boxes` as float64 `[N, 4]` yxyx, finite, with `y2 >= y1` and `x2 >= x1`."""
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.size == 0:
        return boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"`{name}` must have shape [N, 4] (y1, x1, y2, x2). Received: {name}.shape={boxes.shape}")
    if not np.isfinite(boxes).all():
        raise ValueError(f"`{name}` must be finite. Received NaN or inf in rows {_bad_rows(~np.isfinite(boxes))}")
    reversed_rows = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if reversed_rows.any():
        first = int(np.flatnonzero(reversed_rows)[0])
        raise ValueError(
            f"`{name}` must be (y1, x1, y2, x2) with y2 >= y1 and x2 >= x1. Received: {name}[{first}]="
            f"{boxes[first].tolist()} (rows {_bad_rows(reversed_rows[:, None])})"
        )
    return boxes


def _bad_rows(bad):
    return np.flatnonzero(bad.any(axis=1))[:5].tolist()


def check_threshold(name, value):
    """An IoU threshold in `(0, 1]`."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not 0.0 < value <= 1.0:
        raise ValueError(f"`{name}` must be a number in (0, 1]. Received: {name}={value!r}")
    return float(value)


def check_thresholds(name, values):
    """A non-empty tuple of IoU thresholds in `(0, 1]`."""
    if isinstance(values, (int, float)):
        values = (values,)
    if not isinstance(values, (tuple, list)) or not values:
        raise ValueError(f"`{name}` must be a non-empty sequence of IoU thresholds. Received: {name}={values!r}")
    return tuple(check_threshold(name, v) for v in values)


def check_size_ranges(size_ranges):
    """`size_ranges` (dict name -> `(lo, hi)` areas) or COCO's, as an ordered dict of float pairs."""
    if size_ranges is None:
        return dict(COCO_SIZE_RANGES)
    if not isinstance(size_ranges, dict) or not size_ranges:
        raise ValueError(f"`size_ranges` must be a non-empty dict name -> (lo, hi). Received: {size_ranges!r}")
    ranges = {}
    for name, bounds in size_ranges.items():
        if name == "all" or not isinstance(name, str):
            raise ValueError(f"`size_ranges` names must be strings other than 'all'. Received: {name!r}")
        try:
            lo, hi = (float(v) for v in bounds)
        except (TypeError, ValueError):
            raise ValueError(f"`size_ranges[{name!r}]` must be a pair (lo, hi). Received: {bounds!r}") from None
        if math.isnan(lo) or math.isnan(hi) or lo < 0 or hi <= lo:
            raise ValueError(f"`size_ranges[{name!r}]` must satisfy 0 <= lo < hi. Received: {bounds!r}")
        ranges[name] = (lo, hi)
    return ranges


def check_sample(sample, index):
    """The `masks` (bool `[H, W, N]`) and `class_ids` (int64 `[N]`) of `samples[index]`, checked."""
    name = f"samples[{index}]"
    shape = tuple(np.shape(sample["image"])[:2])
    masks = check_mask(f"{name}['masks']", sample["masks"], ndim=3)
    class_ids = np.asarray(sample["class_ids"]).reshape(-1).astype(np.int64)
    if masks.shape[:2] != shape:
        raise ValueError(f"{name}: `masks` must have the image's (H, W) {shape}. Received: {masks.shape}")
    if masks.shape[-1] != class_ids.shape[0]:
        raise ValueError(f"{name}: `masks` has {masks.shape[-1]} channels but `class_ids` {class_ids.shape[0]}.")
    return masks, class_ids


def check_same_length(name_a, values_a, name_b, values_b):
    """Raises unless the two sequences have the same length."""
    if len(values_a) != len(values_b):
        raise ValueError(
            f"`{name_a}` and `{name_b}` must have the same length. Received: {len(values_a)} {name_a} "
            f"and {len(values_b)} {name_b}"
        )


# === Sizes and overlaps ===


def size_bins(areas, ranges):
    """Name of the first range `lo <= area < hi` holding each area, or `None`."""
    bins = np.full(len(areas), None, dtype=object)
    for name, (lo, hi) in reversed(list(ranges.items())):
        bins[(np.asarray(areas) >= lo) & (np.asarray(areas) < hi)] = name
    return bins


def mask_ious(pred, gt, pairs=None):
    """IoU `[n, N]` of bool masks `pred [n, H, W]` and `gt [N, H, W]`.

    Each pair is intersected on the overlap of the two masks' bounding boxes,
    so memory stays at one mask; pairs left out by the bool `pairs [n, N]`
    (and pairs whose boxes do not overlap) get 0.
    """
    pred_boxes, gt_boxes = _mask_boxes(pred), _mask_boxes(gt)
    pred_areas = pred.sum(axis=(1, 2))
    gt_areas = gt.sum(axis=(1, 2))
    ious = np.zeros((pred.shape[0], gt.shape[0]))
    if pairs is None:
        pairs = np.ones(ious.shape, bool)
    for p, g in zip(*np.nonzero(pairs)):
        y1, x1 = np.maximum(pred_boxes[p, :2], gt_boxes[g, :2])
        y2, x2 = np.minimum(pred_boxes[p, 2:], gt_boxes[g, 2:])
        if y2 <= y1 or x2 <= x1:
            continue
        inter = np.count_nonzero(pred[p, y1:y2, x1:x2] & gt[g, y1:y2, x1:x2])
        ious[p, g] = inter / (pred_areas[p] + gt_areas[g] - inter)
    return ious


def _mask_boxes(masks):
    """`[n, 4]` yxyx boxes of `masks [n, H, W]`, end exclusive; `(0, 0, 0, 0)` when empty."""
    rows, cols = masks.any(axis=2), masks.any(axis=1)
    boxes = np.zeros((masks.shape[0], 4), np.int64)
    for i in np.flatnonzero(rows.any(axis=1)):
        ys, xs = np.flatnonzero(rows[i]), np.flatnonzero(cols[i])
        boxes[i] = (ys[0], xs[0], ys[-1] + 1, xs[-1] + 1)
    return boxes


def box_ious(boxes_a, boxes_b):
    """IoU `[n, m]` of yxyx boxes `[n, 4]` and `[m, 4]`; 0 where the union is empty."""
    a, b = boxes_a[:, None, :], boxes_b[None, :, :]
    inter_h = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0.0, None)
    inter_w = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0.0, None)
    inter = inter_h * inter_w
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


# === Text ===


def format_value(value, percent=False):
    """A table cell: `-` for NaN, 3 decimals or a percentage for floats."""
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if value is None or math.isnan(value):
        return "-"
    return f"{100.0 * value:.1f}%" if percent else f"{value:.3f}"


def format_table(header, rows):
    """Right-aligned columns (the first left-aligned) under a rule."""
    cells = [list(map(str, header))] + [list(map(str, row)) for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]

    def line(row):
        first = row[0].ljust(widths[0])
        return "  ".join([first] + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])])

    lines = [line(cells[0]), "-" * len(line(cells[0]))]
    return "\n".join(lines + [line(row) for row in cells[1:]])

"""Mask quality by object size: area ratio, mask IoU and boundary F-score of matched instances.

Mask AP says how often masks are good enough; these diagnostics say how
they go wrong. Predicted masks that are systematically too large or too
small for one size of object (an area ratio far from 1), or right in area
but ragged at the edges (a low boundary F-score at a fair IoU), point at
the mask resolution (`MASK_SHAPE`, `MASK_POOL_SIZE`) or at the mask
threshold rather than at the detector. NumPy only; `plot` imports
matplotlib when called.
"""

import math

import numpy as np

from keras_maskrcnn_layers.evaluation._utils import (
    check_mask,
    check_same_length,
    check_sample,
    check_size_ranges,
    check_threshold,
    format_table,
    format_value,
    mask_ious,
    size_bins,
)

# DAVIS's default boundary tolerance, as a fraction of the image diagonal
# (Perazzi et al. 2016, "A Benchmark Dataset and Evaluation Methodology for
# Video Object Segmentation", Sec. 3.1).
DAVIS_BOUNDARY_FRACTION = 0.008

_INSTANCE_KEYS = (
    "image", "gt_index", "pred_index", "class_id", "score", "gt_area", "pred_area", "area_ratio", "iou",
    "boundary_f", "size",
)
_MISSED_KEYS = ("image", "gt_index", "class_id", "gt_area", "size")
_FALSE_POSITIVE_KEYS = ("image", "pred_index", "class_id", "score", "pred_area", "size")
_DTYPES = {
    **dict.fromkeys(("image", "gt_index", "pred_index", "class_id", "gt_area", "pred_area"), np.int64),
    **dict.fromkeys(("score", "area_ratio", "iou", "boundary_f"), np.float64),
    "size": object,
}
_SUMMARY_KEYS = (
    "count", "missed", "false_positives", "median_area_ratio", "mean_area_ratio", "mean_iou", "mean_boundary_f",
)


# === Boundary F-score ===


def _boundary(mask):
    """Mask pixels with a 4-neighbour outside the mask; the image border counts as outside."""
    padded = np.pad(mask, 1)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~interior


def _dilate(mask, radius):
    """Pixels within Euclidean distance `radius` of a True pixel of `mask` (a disk dilation)."""
    height, width = mask.shape
    # counts[:, j] = True pixels left of column j, so a run of a row is one subtraction.
    counts = np.zeros((height, width + 1), np.int64)
    np.cumsum(mask, axis=1, out=counts[:, 1:])
    cols = np.arange(width)
    out = np.zeros_like(mask)
    reach = math.floor(radius)
    for dy in range(-min(reach, height - 1), min(reach, height - 1) + 1):
        # The disk's row at vertical offset dy spans |dx| <= sqrt(r^2 - dy^2).
        half = math.floor(math.sqrt(radius * radius - dy * dy))
        run = counts[:, np.minimum(cols + half + 1, width)] - counts[:, np.maximum(cols - half, 0)] > 0
        if dy >= 0:
            out[dy:] |= run[: height - dy]
        else:
            out[:dy] |= run[-dy:]
    return out


def _check_tolerance(name, tolerance):
    if tolerance is None:
        return None
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not 0 <= tolerance < math.inf:
        raise ValueError(f"`{name}` must be a finite number of pixels >= 0. Received: {name}={tolerance!r}")
    return float(tolerance)


def boundary_f_score(pred_mask, gt_mask, tolerance=None):
    """Boundary F-measure of a predicted mask against the ground truth (DAVIS's `F`).

    The boundary of a mask is its pixels that have a 4-neighbour outside the
    mask (pixels on the image border count as having one). A boundary pixel
    of one mask is matched when a boundary pixel of the other lies within
    `tolerance` pixels, in Euclidean distance (DAVIS dilates by a disk).
    Precision is the matched share of the predicted boundary, recall the
    matched share of the true boundary, and the score their harmonic mean
    (Perazzi et al. 2016, Sec. 3.1).

    Args:
        pred_mask: bool array `[H, W]` (or numbers 0 and 1).
        gt_mask: bool array `[H, W]`, the same shape.
        tolerance: float >= 0 or None. Match distance in pixels. Defaults to
            `None`: DAVIS's `ceil(0.008 * sqrt(H**2 + W**2))`, 2 px on a
            128 x 128 image and 12 px on 1024 x 1024.

    Returns:
        Python float in `[0, 1]`: 1.0 when both masks are empty, 0.0 when
        exactly one is.

    Raises:
        ValueError: if a mask is not 2-D, holds NaN or values other than 0
            and 1, the shapes differ, or `tolerance` is negative.

    Example:

    >>> import numpy as np
    >>> from keras_maskrcnn_layers.evaluation import boundary_f_score
    >>> truth = np.zeros((32, 32), bool)
    >>> truth[10:20, 10:20] = True
    >>> shifted = np.roll(truth, 1, axis=1)
    >>> boundary_f_score(shifted, truth, tolerance=0), boundary_f_score(shifted, truth, tolerance=1)
    (0.5, 1.0)
    """
    pred = check_mask("pred_mask", pred_mask, ndim=2)
    gt = check_mask("gt_mask", gt_mask, ndim=2)
    if pred.shape != gt.shape:
        raise ValueError(
            f"`pred_mask` and `gt_mask` must have the same shape. Received: {pred.shape} and {gt.shape}"
        )
    tolerance = _check_tolerance("tolerance", tolerance)
    if tolerance is None:
        tolerance = math.ceil(DAVIS_BOUNDARY_FRACTION * math.hypot(*pred.shape))
    rows = np.flatnonzero((pred | gt).any(axis=1))
    cols = np.flatnonzero((pred | gt).any(axis=0))
    if rows.size == 0:
        return 1.0
    if not pred.any() or not gt.any():
        return 0.0
    # One empty row and column around both masks keep their boundaries as
    # on the full image, and the dilation needs nothing farther out.
    window = (
        slice(max(rows[0] - 1, 0), rows[-1] + 2),
        slice(max(cols[0] - 1, 0), cols[-1] + 2),
    )
    pred_edge, gt_edge = _boundary(pred[window]), _boundary(gt[window])
    precision = (pred_edge & _dilate(gt_edge, tolerance)).sum() / pred_edge.sum()
    recall = (gt_edge & _dilate(pred_edge, tolerance)).sum() / gt_edge.sum()
    if precision + recall == 0:
        return 0.0
    return float(2.0 * precision * recall / (precision + recall))


# === Matching ===


def _predictions(result, index, shape):
    name = f"results[{index}]"
    class_ids = np.asarray(result["class_ids"]).reshape(-1).astype(np.int64)
    scores = np.asarray(result["scores"], np.float64).reshape(-1)
    n = class_ids.shape[0]
    masks = np.asarray(result["masks"])
    if n == 0 and masks.size == 0:
        masks = np.zeros(shape + (0,), bool)
    masks = check_mask(f"{name}['masks']", masks, ndim=3)
    if masks.shape != shape + (n,):
        raise ValueError(
            f"{name}: `masks` must have shape {shape + (n,)} (the sample's image size, one channel per "
            f"class id). Received: {masks.shape}"
        )
    if scores.shape[0] != n:
        raise ValueError(f"{name}: {scores.shape[0]} `scores` for {n} `class_ids`.")
    if np.isnan(scores).any():
        raise ValueError(f"{name}: `scores` contains NaN.")
    return masks, class_ids, scores


def _match(ious, pred_ids, scores, gt_ids, threshold):
    """COCO's greedy matching; returns the prediction matched to each ground truth, or -1.

    By descending score, each prediction takes the unmatched ground truth of
    its class with the highest IoU, if that IoU is `>= threshold`.
    """
    gt_match = np.full(gt_ids.shape[0], -1)
    for p in np.argsort(-scores, kind="stable"):
        free = (gt_ids == pred_ids[p]) & (gt_match < 0)
        if not free.any():
            continue
        candidate = np.where(free, ious[p], -1.0)
        g = int(np.argmax(candidate))
        if candidate[g] >= threshold:
            gt_match[g] = p
    return gt_match


def _image_rows(index, result, sample, iou_threshold, tolerance):
    """Matched, missed and false-positive rows of one image (without size bins)."""
    gt_masks, gt_ids = check_sample(sample, index)
    pred_masks, pred_ids, scores = _predictions(result, index, gt_masks.shape[:2])
    # One contiguous [n, H, W] array per side: instances are read one at a time.
    gt_masks = np.ascontiguousarray(np.moveaxis(gt_masks, -1, 0))
    pred_masks = np.ascontiguousarray(np.moveaxis(pred_masks, -1, 0))
    gt_areas, pred_areas = gt_masks.sum(axis=(1, 2)), pred_masks.sum(axis=(1, 2))
    kept = np.flatnonzero(gt_areas > 0)
    ious = mask_ious(pred_masks, gt_masks[kept], pairs=pred_ids[:, None] == gt_ids[kept][None, :])
    gt_match = _match(ious, pred_ids, scores, gt_ids[kept], iou_threshold)
    matched, missed = [], []
    for column, (g, p) in enumerate(zip(kept.tolist(), gt_match.tolist())):
        gt_row = {"image": index, "gt_index": g, "class_id": int(gt_ids[g]), "gt_area": int(gt_areas[g])}
        if p < 0:
            missed.append(gt_row)
            continue
        matched.append(
            {
                **gt_row,
                "pred_index": p,
                "score": float(scores[p]),
                "pred_area": int(pred_areas[p]),
                "area_ratio": float(pred_areas[p] / gt_areas[g]),
                "iou": float(ious[p, column]),
                "boundary_f": boundary_f_score(pred_masks[p], gt_masks[g], tolerance),
            }
        )
    unmatched = sorted(set(range(pred_ids.shape[0])) - set(gt_match.tolist()))
    false_positives = [
        {"image": index, "pred_index": p, "class_id": int(pred_ids[p]), "score": float(scores[p]),
         "pred_area": int(pred_areas[p])}
        for p in unmatched
    ]
    return matched, missed, false_positives


# === Report ===


def _columns(rows, keys):
    return {key: np.array([row[key] for row in rows], dtype=_DTYPES[key]) for key in keys}


def _mean(values):
    return float(np.mean(values)) if len(values) else math.nan


def _median(values):
    return float(np.median(values)) if len(values) else math.nan


class MaskSizeReport:
    """Per-instance mask quality of matched detections, with summaries by object size.

    Built by `mask_size_report`. Tables are dicts of equal-length NumPy
    arrays, one row per instance; `"size"` holds the size bin's name (or
    `None` for an area in no bin).

    Attributes:
        instances: matched pairs: `"image"`, `"gt_index"`, `"pred_index"`,
            `"class_id"`, `"score"`, `"gt_area"` and `"pred_area"` (pixels),
            `"area_ratio"` (predicted / true area), `"iou"` (mask IoU),
            `"boundary_f"` and `"size"` (bin of the true area).
        missed: unmatched ground truth: `"image"`, `"gt_index"`,
            `"class_id"`, `"gt_area"`, `"size"`.
        false_positives: unmatched detections: `"image"`, `"pred_index"`,
            `"class_id"`, `"score"`, `"pred_area"` and `"size"` (bin of the
            predicted area).
        size_ranges: dict name -> `(lo, hi)`, `lo <= area < hi`.
        iou_threshold: float. The matching threshold.
    """

    def __init__(self, instances, missed, false_positives, size_ranges, iou_threshold):
        self.instances = instances
        self.missed = missed
        self.false_positives = false_positives
        self.size_ranges = dict(size_ranges)
        self.iou_threshold = iou_threshold

    def _bin_names(self):
        return list(self.size_ranges) + ["all"]

    def summary(self):
        """Counts and means per size bin and over all instances.

        Returns:
            dict bin name (and `"all"`) -> dict with `"count"` (matched
            instances), `"missed"`, `"false_positives"` (ints) and
            `"median_area_ratio"`, `"mean_area_ratio"`, `"mean_iou"`,
            `"mean_boundary_f"` (floats, NaN without matched instances).
        """
        summary = {}
        for name in self._bin_names():

            def rows(table, name=name):
                return np.ones(len(table["size"]), bool) if name == "all" else table["size"] == name

            matched = rows(self.instances)
            ratios = self.instances["area_ratio"][matched]
            summary[name] = {
                "count": int(matched.sum()),
                "missed": int(rows(self.missed).sum()),
                "false_positives": int(rows(self.false_positives).sum()),
                "median_area_ratio": _median(ratios),
                "mean_area_ratio": _mean(ratios),
                "mean_iou": _mean(self.instances["iou"][matched]),
                "mean_boundary_f": _mean(self.instances["boundary_f"][matched]),
            }
        return summary

    def table(self):
        """The summary as an aligned text table, one row per size bin."""
        header = ("size", "matched", "missed", "false pos.", "median ratio", "mean ratio", "mean IoU", "boundary F")
        rows = [
            [name] + [format_value(stats[key]) for key in _SUMMARY_KEYS]
            for name, stats in self.summary().items()
        ]
        title = f"Mask quality of matched instances (mask IoU >= {self.iou_threshold:g}); ratio = predicted / true area"
        return title + "\n" + format_table(header, rows)

    def plot(self, path=None):
        """Area ratios (box plot, log scale) and mean IoU / boundary F per size bin.

        The figure is built without `pyplot`, so no GUI backend is needed or
        switched; PNG files are rendered by Agg.

        Args:
            path: optional file path; the figure is saved there when given.
                Defaults to `None`.

        Returns:
            A `matplotlib.figure.Figure`.
        """
        from matplotlib.figure import Figure

        names = list(self.size_ranges)
        figure = Figure(figsize=(11, 4), layout="constrained")
        ratio_axes, quality_axes = figure.subplots(1, 2)
        ratios = [self.instances["area_ratio"][self.instances["size"] == name] for name in names]
        ratio_axes.boxplot(ratios, tick_labels=[f"{n}\n(n={len(r)})" for n, r in zip(names, ratios)])
        ratio_axes.axhline(1.0, color="grey", linestyle="--", linewidth=1)
        ratio_axes.set_yscale("log")
        ratio_axes.set_ylabel("predicted / true mask area")
        ratio_axes.set_title("Area ratio by object size")
        summary = self.summary()
        x = np.arange(len(names) + 1)
        for shift, key, label in ((-0.2, "mean_iou", "mask IoU"), (0.2, "mean_boundary_f", "boundary F")):
            quality_axes.bar(x + shift, [summary[name][key] for name in self._bin_names()], 0.4, label=label)
        quality_axes.set_xticks(x, self._bin_names())
        quality_axes.set_ylim(0.0, 1.0)
        quality_axes.set_title("Mean quality of matched masks")
        quality_axes.legend(loc="lower right")
        if path is not None:
            figure.savefig(path, dpi=100)
        return figure


def mask_size_report(results, samples, iou_threshold=0.5, size_ranges=None, boundary_tolerance=None):
    """Compares detected masks with the ground truth, instance by instance, by object size.

    Per image, detections are matched to ground truth of their own class as
    COCO does: by descending score, each detection takes the unmatched
    ground-truth instance with the highest mask IoU, if that IoU is at
    least `iou_threshold`. Each match records the true and predicted mask
    areas, their ratio (predicted / true: 2.0 for a mask twice too large),
    the mask IoU and the boundary F-score (`boundary_f_score`). Unmatched
    ground truth counts as missed (in the bin of its area) and unmatched
    detections as false positives (in the bin of their predicted area).
    Ground-truth instances with empty masks are left out, as
    `coco_evaluate` does.

    Args:
        results: sequence of dicts as `MaskRCNN.detect` returns them:
            `"class_ids"` int `[n]`, `"scores"` float `[n]`, `"masks"` bool
            `[H, W, n]` at the original image size (`"rois"` is not read).
            `n` may be 0.
        samples: sequence of dicts, one per result in the same order:
            `"image"` `[H, W, 3]`, `"masks"` bool `[H, W, N]`,
            `"class_ids"` int `[N]`. `N` may be 0.
        iou_threshold: float in `(0, 1]`. Defaults to `0.5`.
        size_ranges: dict name -> `(lo, hi)` of areas in pixels of the
            original image, `lo <= area < hi`; an area falls in the first
            range that holds it. Defaults to `None`, COCO's `small` (below
            32**2), `medium` (below 96**2) and `large`.
        boundary_tolerance: float or None. `tolerance` of
            `boundary_f_score`. Defaults to `None`, DAVIS's.

    Returns:
        A `MaskSizeReport` with `.instances`, `.missed`,
        `.false_positives`, `.summary()`, `.table()` and `.plot(path)`.

    Raises:
        ValueError: if `results` and `samples` differ in length, a mask's
            size differs from its image's, counts disagree within a result
            or sample, masks or scores hold NaN, or an argument is out of
            range.

    Example:

    >>> import numpy as np
    >>> from keras_maskrcnn_layers.evaluation import mask_size_report
    >>> truth = np.zeros((64, 64, 1), bool)
    >>> truth[10:20, 10:20, 0] = True
    >>> pred = np.zeros((64, 64, 1), bool)
    >>> pred[10:30, 10:20, 0] = True
    >>> sample = {"image": np.zeros((64, 64, 3), "uint8"), "masks": truth, "class_ids": [1]}
    >>> result = {"class_ids": [1], "scores": [0.9], "masks": pred}
    >>> report = mask_size_report([result], [sample])
    >>> float(report.instances["area_ratio"][0]), report.summary()["small"]["mean_iou"]
    (2.0, 0.5)
    """
    check_same_length("results", results, "samples", samples)
    iou_threshold = check_threshold("iou_threshold", iou_threshold)
    ranges = check_size_ranges(size_ranges)
    boundary_tolerance = _check_tolerance("boundary_tolerance", boundary_tolerance)
    matched, missed, false_positives = [], [], []
    for index, (result, sample) in enumerate(zip(results, samples)):
        rows = _image_rows(index, result, sample, iou_threshold, boundary_tolerance)
        for table, image_rows in zip((matched, missed, false_positives), rows):
            table.extend(image_rows)
    for rows, area_key in ((matched, "gt_area"), (missed, "gt_area"), (false_positives, "pred_area")):
        for row, name in zip(rows, size_bins([row[area_key] for row in rows], ranges)):
            row["size"] = name
    return MaskSizeReport(
        _columns(matched, _INSTANCE_KEYS),
        _columns(missed, _MISSED_KEYS),
        _columns(false_positives, _FALSE_POSITIVE_KEYS),
        ranges,
        iou_threshold,
    )

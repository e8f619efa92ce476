"""Slow, independent NumPy references written from the papers' definitions.

Loops over boxes, bins and samples on purpose: these are the ground truth the
vectorised keras.ops implementations are held to, and should be obviously
right on reading, not fast.
"""

import math

import numpy as np


# === ROI Align (Mask R-CNN; torchvision / Detectron2 sampling rule) ===


def bilinear(feature_map, y, x):
    """One bilinear sample of `feature_map [H, W, C]` at `(y, x)`."""
    height, width, channels = feature_map.shape
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return np.zeros(channels)
    y = max(y, 0.0)
    x = max(x, 0.0)
    y_low, x_low = int(math.floor(y)), int(math.floor(x))
    if y_low >= height - 1:
        y_low = y_high = height - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_low = x_high = width - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1.0 - ly, 1.0 - lx
    f = feature_map.astype(np.float64)
    return (
        hy * hx * f[y_low, x_low]
        + hy * lx * f[y_low, x_high]
        + ly * hx * f[y_high, x_low]
        + ly * lx * f[y_high, x_high]
    )


def roi_align_one(feature_map, box, pool_size, scale, sampling_ratio, aligned):
    """ROI Align of one box `(y1, x1, y2, x2)` on one map -> `[ph, pw, C]`."""
    pool_h, pool_w = pool_size
    offset = 0.5 if aligned else 0.0
    y1, x1, y2, x2 = (float(c) * scale - offset for c in box)
    roi_h, roi_w = y2 - y1, x2 - x1
    if not aligned:
        roi_h, roi_w = max(roi_h, 1.0), max(roi_w, 1.0)
    bin_h, bin_w = roi_h / pool_h, roi_w / pool_w
    out = np.zeros((pool_h, pool_w, feature_map.shape[-1]))
    for i in range(pool_h):
        for j in range(pool_w):
            total = 0.0
            for ky in range(sampling_ratio):
                for kx in range(sampling_ratio):
                    y = y1 + bin_h * (i + (ky + 0.5) / sampling_ratio)
                    x = x1 + bin_w * (j + (kx + 0.5) / sampling_ratio)
                    total = total + bilinear(feature_map, y, x)
            out[i, j] = total / (sampling_ratio * sampling_ratio)
    return out


def roi_align(features, boxes, pool_size, scale, sampling_ratio, aligned):
    """`features [B, H, W, C]`, `boxes [B, N, 4]` -> `[B, N, ph, pw, C]`."""
    b, n = boxes.shape[:2]
    out = np.zeros((b, n, *pool_size, features.shape[-1]))
    for i in range(b):
        for k in range(n):
            out[i, k] = roi_align_one(features[i], boxes[i, k], pool_size, scale, sampling_ratio, aligned)
    return out


def fpn_level(box, min_level, max_level, canonical_size=224.0, canonical_level=4):
    """FPN paper Eqn. 1, clamped; zero area maps to `min_level`."""
    area = max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)
    if area <= 0:
        return min_level
    level = math.floor(canonical_level + math.log2(math.sqrt(area) / canonical_size))
    return min(max(level, min_level), max_level)


def multilevel_roi_align(features, boxes, pool_size, sampling_ratio, aligned, min_level=2, max_level=5):
    """Each box pooled from its own level; all-zero (padding) boxes give zeros."""
    b, n = boxes.shape[:2]
    out = np.zeros((b, n, *pool_size, features[0].shape[-1]))
    for i in range(b):
        for k in range(n):
            box = boxes[i, k].astype(np.float64)
            if not np.any(box != 0):
                continue
            level = fpn_level(box, min_level, max_level)
            out[i, k] = roi_align_one(
                features[level - min_level][i], box, pool_size, 2.0**-level, sampling_ratio, aligned
            )
    return out


# === Boxes and NMS ===


def iou(a, b):
    inter_h = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
    inter_w = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
    inter = inter_h * inter_w
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def greedy_nms(boxes, scores, iou_threshold, max_output_size, score_threshold=-np.inf):
    """Textbook greedy NMS: visit by descending score, keep unless a kept box overlaps."""
    order = np.argsort(-scores, kind="stable")
    keep = []
    for i in order:
        if not scores[i] > score_threshold:
            continue
        if all(iou(boxes[i], boxes[k]) <= iou_threshold for k in keep):
            keep.append(int(i))
        if len(keep) == max_output_size:
            break
    return keep


def decode(deltas, anchors, box_std, clamp=math.log(1000.0 / 16.0)):
    out = np.zeros_like(anchors, dtype=np.float64)
    for k in range(len(anchors)):
        y1, x1, y2, x2 = anchors[k].astype(np.float64)
        h, w = y2 - y1, x2 - x1
        cy, cx = y1 + 0.5 * h, x1 + 0.5 * w
        dy, dx, dh, dw = deltas[k].astype(np.float64) * np.asarray(box_std)
        cy, cx = cy + dy * h, cx + dx * w
        h, w = h * math.exp(min(dh, clamp)), w * math.exp(min(dw, clamp))
        out[k] = (cy - 0.5 * h, cx - 0.5 * w, cy + 0.5 * h, cx + 0.5 * w)
    return out


def proposals(scores, deltas, anchors, image_shape, pre_nms, post_nms, iou_threshold, box_std, min_size=0.0):
    """decode -> clip -> top-k -> size filter -> NMS -> pad, for one image."""
    boxes = decode(deltas, anchors, box_std)
    height, width = image_shape
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, height)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, width)
    top = np.argsort(-scores, kind="stable")[:pre_nms]
    boxes, scores = boxes[top], scores[top].astype(np.float64)
    if min_size > 0:
        small = (boxes[:, 2] - boxes[:, 0] < min_size) | (boxes[:, 3] - boxes[:, 1] < min_size)
        scores = np.where(small, -np.inf, scores)
    keep = greedy_nms(boxes, scores, iou_threshold, post_nms)
    out_boxes = np.zeros((post_nms, 4))
    out_scores = np.zeros(post_nms)
    out_boxes[: len(keep)] = boxes[keep]
    out_scores[: len(keep)] = scores[keep]
    return out_boxes, out_scores


# === Anchors ===


def matterport_pyramid_anchors(scales, ratios, feature_shapes, feature_strides, anchor_stride):
    """matterport's generate_pyramid_anchors layout (one scale per level), rebuilt with meshgrids."""
    levels = []
    for scale, shape, stride in zip(scales, feature_shapes, feature_strides):
        s, r = np.meshgrid(np.array([scale], np.float64), np.array(ratios, np.float64))
        s, r = s.flatten(), r.flatten()
        heights, widths = s / np.sqrt(r), s * np.sqrt(r)
        shifts_y = np.arange(0, shape[0], anchor_stride) * stride
        shifts_x = np.arange(0, shape[1], anchor_stride) * stride
        shifts_x, shifts_y = np.meshgrid(shifts_x, shifts_y)
        box_widths, box_centers_x = np.meshgrid(widths, shifts_x)
        box_heights, box_centers_y = np.meshgrid(heights, shifts_y)
        centers = np.stack([box_centers_y, box_centers_x], axis=2).reshape([-1, 2])
        sizes = np.stack([box_heights, box_widths], axis=2).reshape([-1, 2])
        levels.append(np.concatenate([centers - 0.5 * sizes, centers + 0.5 * sizes], axis=1))
    return np.concatenate(levels, axis=0)


def anchors_by_loops(level_scales, ratios, strides, image_shape, anchor_stride, offset):
    """API.md's order spelled out: level, row, column, scale, ratio."""
    out = []
    for scales, stride in zip(level_scales, strides):
        rows = math.ceil(image_shape[0] / stride)
        cols = math.ceil(image_shape[1] / stride)
        for row in range(0, rows, anchor_stride):
            for col in range(0, cols, anchor_stride):
                cy, cx = (row + offset) * stride, (col + offset) * stride
                for s in scales:
                    for r in ratios:
                        h, w = s / math.sqrt(r), s * math.sqrt(r)
                        out.append((cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2))
    return np.asarray(out)


# === Training targets (Faster R-CNN Sec. 3.1.2; Mask R-CNN Sec. 3.1) ===


def encode(boxes, anchors, box_std):
    """Faster R-CNN Eqn. 2 deltas of each box against its anchor, divided by `box_std`."""
    out = np.zeros((len(boxes), 4))
    for k in range(len(boxes)):
        y1, x1, y2, x2 = np.asarray(boxes[k], np.float64)
        ay1, ax1, ay2, ax2 = np.asarray(anchors[k], np.float64)
        h, w, ah, aw = y2 - y1, x2 - x1, ay2 - ay1, ax2 - ax1
        dy = ((y1 + 0.5 * h) - (ay1 + 0.5 * ah)) / ah
        dx = ((x1 + 0.5 * w) - (ax1 + 0.5 * aw)) / aw
        out[k] = np.array([dy, dx, math.log(h / ah), math.log(w / aw)]) / np.asarray(box_std)
    return out


def rpn_labels(anchors, gt_boxes, gt_class_ids, positive_iou, negative_iou):
    """Labels of one image before sampling: 1 positive, 0 negative, -1 neither; and each anchor's best gt.

    Positive: best IoU >= `positive_iou`, or the anchor is (one of) the best
    anchors of some box with IoU > 0. Negative: best IoU < `negative_iou`
    and not positive. Padding gt (class 0) is ignored.
    """
    valid = [g for g in range(len(gt_boxes)) if gt_class_ids[g] > 0]
    labels = np.full(len(anchors), -1)
    best_gt = np.zeros(len(anchors), int)
    ious = np.array([[iou(a, gt_boxes[g]) for g in valid] for a in anchors]).reshape(len(anchors), len(valid))
    for k in range(len(anchors)):
        best = ious[k].max() if valid else -1.0
        if valid:
            best_gt[k] = valid[int(np.argmax(ious[k]))]
        if best < negative_iou:
            labels[k] = 0
        if best >= positive_iou:
            labels[k] = 1
    for j in range(len(valid)):
        top = ious[:, j].max()
        if top > 0:
            labels[ious[:, j] == top] = 1
    return labels, best_gt


def detection_targets(proposals, gt_class_ids, gt_boxes, gt_masks, total, positive_iou, box_std, mask_shape):
    """Targets of one image when nothing needs sampling (every candidate fits in `total`).

    Candidates are the non-zero proposals then the valid gt boxes; positives
    (best IoU >= `positive_iou`) first, then negatives, each in candidate
    order; mask targets are ROI Align (aligned, 2 samples per bin) of the
    matched full-image mask, thresholded at 0.5. Returns `(rois, class_ids,
    deltas, masks, valid)` padded to `total`.
    """
    valid_gt = [g for g in range(len(gt_boxes)) if gt_class_ids[g] > 0]
    candidates = [p for p in proposals if np.any(p != 0)] + [gt_boxes[g] for g in valid_gt]
    positives, negatives = [], []
    for box in candidates:
        ious = [iou(box, gt_boxes[g]) for g in valid_gt]
        if ious and max(ious) >= positive_iou:
            positives.append((box, valid_gt[int(np.argmax(ious))]))
        else:
            negatives.append((box, None))
    rows = positives + negatives
    assert len(rows) <= total, "the reference covers only cases that need no sampling"
    rois = np.zeros((total, 4))
    class_ids = np.zeros(total, int)
    deltas = np.zeros((total, 4))
    masks = np.zeros((total, *mask_shape))
    valid = np.zeros(total, bool)
    for t, (box, g) in enumerate(rows):
        rois[t], valid[t] = box, True
        if g is None:
            continue
        class_ids[t] = gt_class_ids[g]
        deltas[t] = encode([gt_boxes[g]], [box], box_std)[0]
        crop = roi_align_one(gt_masks[g][..., None], box, mask_shape, 1.0, 2, True)[..., 0]
        masks[t] = crop >= 0.5
    return rois, class_ids, deltas, masks, valid


def detections(rois, probs, deltas, window, min_confidence, iou_threshold, max_detections, box_std):
    """matterport's refine_detections for one image: best class, decode, clip, filter, class-wise NMS."""
    class_ids = np.argmax(probs, axis=-1)
    scores = probs[np.arange(len(rois)), class_ids].astype(np.float64)
    boxes = decode(deltas[np.arange(len(rois)), class_ids], rois, box_std)
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], window[0], window[2])
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], window[1], window[3])
    keep = []
    for i in np.argsort(-scores, kind="stable"):
        if not np.any(rois[i] != 0) or class_ids[i] == 0 or scores[i] < min_confidence:
            continue
        same_class = [k for k in keep if class_ids[k] == class_ids[i]]
        if all(iou(boxes[i], boxes[k]) <= iou_threshold for k in same_class):
            keep.append(int(i))
        if len(keep) == max_detections:
            break
    out_boxes = np.zeros((max_detections, 4))
    out_classes = np.zeros(max_detections, int)
    out_scores = np.zeros(max_detections)
    out_boxes[: len(keep)] = boxes[keep]
    out_classes[: len(keep)] = class_ids[keep]
    out_scores[: len(keep)] = scores[keep]
    return out_boxes, out_classes, out_scores, len(keep)


# === Sampling ===


def first_true_indices(valid, k):
    """Positions of the first `k` True entries of each row (0-padded) and which are real."""
    indices = np.zeros((len(valid), k), int)
    found = np.zeros((len(valid), k), bool)
    for b, row in enumerate(valid):
        hits = np.flatnonzero(row)[:k]
        indices[b, : len(hits)] = hits
        found[b, : len(hits)] = True
    return indices, found


# === Pasting masks back (inverse of aligned ROI Align; Detectron2 padding) ===


def paste_mask(mask, box, image_shape, threshold, padding, box_scale):
    """One mask pasted pixel by pixel: the grid padded with zeros, the box scaled, then enlarged to match."""
    mask = np.pad(np.asarray(mask, np.float64), padding)
    cells_h, cells_w = mask.shape[0] - 2 * padding, mask.shape[1] - 2 * padding
    y1, x1, y2, x2 = (float(v) for v in box)
    cy, cx = (y1 + y2) / 2, (x1 + x2) / 2
    half_h = (y2 - y1) / 2 * box_scale * mask.shape[0] / cells_h
    half_w = (x2 - x1) / 2 * box_scale * mask.shape[1] / cells_w
    top, left, bottom, right = cy - half_h, cx - half_w, cy + half_h, cx + half_w
    out = np.zeros(image_shape, np.float64)
    if bottom <= top or right <= left:
        return out if threshold is None else out >= threshold
    for r in range(image_shape[0]):
        for c in range(image_shape[1]):
            py, px = r + 0.5, c + 0.5
            if not (top <= py <= bottom and left <= px <= right):
                continue
            gy = (py - top) / (bottom - top) * mask.shape[0] - 0.5
            gx = (px - left) / (right - left) * mask.shape[1] - 0.5
            out[r, c] = bilinear(mask[..., None], gy, gx)[0]
    return out if threshold is None else out >= threshold

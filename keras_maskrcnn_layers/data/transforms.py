"""NumPy transforms from a sample to network inputs, with matterport's semantics.

Resizing follows matterport's `utils.resize_image` / `resize_mask`: images
are resized bilinearly (pixel centres at half-integers, no anti-aliasing),
masks with nearest neighbour, to `round(side * scale)` pixels, then
zero-padded. Boxes follow matterport's
`extract_bboxes`: `(y1, x1, y2, x2)` with `y2, x2` one past the last pixel.
Mini masks (Mask R-CNN's memory saver) are each mask cropped to its box and
resized to a fixed small shape.

Everything here is written from those definitions; none of matterport's or
scikit-image's code is used.
"""

import warnings

import numpy as np

from keras_maskrcnn_layers.config import resize_geometry
from keras_maskrcnn_layers.data._resample import nearest_indices, resize_bilinear
from keras_maskrcnn_layers.data.image_meta import compose_image_meta
from keras_maskrcnn_layers.data.sample import validate_sample

# === Helpers ===


def _check_int_box(box, height, width, name):
    y1, x1, y2, x2 = (int(round(float(v))) for v in box)
    if y1 < 0 or x1 < 0 or y2 > height or x2 > width:
        raise ValueError(f"`{name}` has a box {tuple(box)} outside the image of shape ({height}, {width}).")
    return y1, x1, y2, x2


# === Images and masks ===


def resize_image(image, min_dim=None, max_dim=None, min_scale=None, mode="square"):
    """Resizes and pads an image to the fixed network input size.

    Modes (matterport's, with one fixed input size for every mode):

    - `"square"`: scale up (never down) so the short side reaches
      `min_dim`, but scale down if the long side would then exceed
      `max_dim`; pad to `max_dim x max_dim`, centred.
    - `"pad64"`: scale up only (so the short side reaches `min_dim`, or by
      `min_scale`); pad to `max_dim x max_dim`, centred. Raises if the
      result does not fit.
    - `"none"`: no resize; pad bottom and right to `max_dim x max_dim`.
      Raises if the image does not fit.

    In every mode a `min_scale` larger than the computed scale wins, as in
    matterport (except `"none"`, which never resizes).

    Args:
        image: array `[H, W, C]`. Any real dtype; the result keeps it
            (integers are rounded and clipped).
        min_dim: int or None. Target of the short side. Defaults to `None`.
        max_dim: int. Side of the square network input. Required.
        min_scale: float or None. Lower bound of the scale. Defaults to
            `None`.
        mode: `"square"`, `"pad64"` or `"none"`. Defaults to `"square"`.

    Returns:
        Tuple `(image, window, scale, padding)`: the `[max_dim, max_dim, C]`
        image; `window` `(y1, x1, y2, x2)` ints, the image inside the padded
        input (y2, x2 exclusive); `scale` float; `padding`
        `[(top, bottom), (left, right), (0, 0)]`.

    Example:

    >>> import numpy as np
    >>> from keras_maskrcnn_layers.data import resize_image
    >>> image = np.zeros((64, 32, 3), "uint8")
    >>> resized, window, scale, padding = resize_image(image, 128, 128, mode="square")
    >>> resized.shape, window, scale
    ((128, 128, 3), (0, 32, 128, 96), 2.0)
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"`image` must have shape [H, W, C]. Received shape {image.shape}")
    if mode not in ("square", "pad64", "none"):
        raise ValueError(f"`mode` must be 'square', 'pad64' or 'none'. Received: mode={mode!r}")
    if isinstance(max_dim, bool) or not isinstance(max_dim, (int, np.integer)) or max_dim < 1:
        raise ValueError(f"`max_dim` must be a positive int (the input side). Received: max_dim={max_dim!r}")
    h, w = image.shape[:2]
    scale, (new_h, new_w), (top, left) = resize_geometry(h, w, min_dim, max_dim, min_scale, mode)
    if new_h > max_dim or new_w > max_dim:
        raise ValueError(
            f"Image of shape {image.shape[:2]} scaled by {scale:g} to ({new_h}, {new_w}) does not fit the "
            f"{max_dim}x{max_dim} network input (mode {mode!r}, which never scales down). Use mode 'square', "
            f"a larger IMAGE_MAX_DIM, or smaller images."
        )
    if (new_h, new_w) != (h, w):
        resized = resize_bilinear(image.astype(np.float32), new_h, new_w)
        if np.issubdtype(image.dtype, np.integer):
            info = np.iinfo(image.dtype)
            resized = np.clip(np.round(resized), info.min, info.max)
        image = resized.astype(image.dtype)
    padding = [(top, max_dim - new_h - top), (left, max_dim - new_w - left), (0, 0)]
    image = np.pad(image, padding, mode="constant", constant_values=0)
    return image, (top, left, top + new_h, left + new_w), float(scale), padding


def resize_masks(masks, scale, padding):
    """Resizes and pads instance masks the way `resize_image` did the image.

    Args:
        masks: bool array `[H, W, N]`.
        scale: float. The `scale` returned by `resize_image`.
        padding: the `padding` returned by `resize_image`.

    Returns:
        bool array `[H', W', N]` aligned with the resized image (nearest
        neighbour, so masks stay binary).

    Example:

    >>> import numpy as np
    >>> from keras_maskrcnn_layers.data import resize_masks
    >>> masks = np.zeros((64, 32, 1), bool)
    >>> resize_masks(masks, 2.0, [(0, 0), (32, 32), (0, 0)]).shape
    (128, 128, 1)
    """
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"`masks` must have shape [H, W, N]. Received shape {masks.shape}")
    h, w = masks.shape[:2]
    new_h, new_w = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    if (new_h, new_w) != (h, w):
        masks = masks[nearest_indices(h, new_h)][:, nearest_indices(w, new_w)]
    return np.pad(masks.astype(bool), [tuple(padding[0]), tuple(padding[1]), (0, 0)], mode="constant")


def flip_sample_arrays(image, masks, flip):
    """Flips an image `[H, W, C]` and its masks `[H, W, N]` together.

    Args:
        image: array `[H, W, C]`.
        masks: array `[H, W, N]`.
        flip: `None`, `"horizontal"` (left-right), `"vertical"` (up-down)
            or `"both"`.

    Returns:
        Tuple `(image, masks)`, flipped contiguous arrays.

    Example:

    >>> import numpy as np
    >>> from keras_maskrcnn_layers.data import flip_sample_arrays
    >>> image, masks = np.arange(3).reshape(1, 3, 1), np.array([[[1], [0], [0]]], bool)
    >>> image, masks = flip_sample_arrays(image, masks, "horizontal")
    >>> image.ravel().tolist(), masks.ravel().tolist()
    ([2, 1, 0], [False, False, True])
    """
    if flip not in (None, "horizontal", "vertical", "both"):
        raise ValueError(f"`flip` must be None, 'horizontal', 'vertical' or 'both'. Received: flip={flip!r}")
    if flip in ("horizontal", "both"):
        image, masks = image[:, ::-1], masks[:, ::-1]
    if flip in ("vertical", "both"):
        image, masks = image[::-1], masks[::-1]
    return np.ascontiguousarray(image), np.ascontiguousarray(masks)


# === Boxes and mini masks ===


def extract_boxes(masks):
    """Tight boxes of instance masks, matterport's `extract_bboxes` convention.

    Args:
        masks: bool array `[H, W, N]`.

    Returns:
        float32 array `[N, 4]`, `(y1, x1, y2, x2)` pixels with `y2, x2` one
        past the last mask pixel. Empty masks give all-zero rows.

    Example:

    >>> import numpy as np
    >>> from keras_maskrcnn_layers.data import extract_boxes
    >>> masks = np.zeros((10, 10, 1), bool)
    >>> masks[2:5, 3:9, 0] = True
    >>> extract_boxes(masks)
    array([[2., 3., 5., 9.]], dtype=float32)
    """
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"`masks` must have shape [H, W, N]. Received shape {masks.shape}")
    masks = masks.astype(bool)
    h, w = masks.shape[:2]
    rows = masks.any(axis=1)  # [H, N]
    cols = masks.any(axis=0)  # [W, N]
    present = rows.any(axis=0)
    y1 = rows.argmax(axis=0)
    y2 = h - rows[::-1].argmax(axis=0)
    x1 = cols.argmax(axis=0)
    x2 = w - cols[::-1].argmax(axis=0)
    boxes = np.stack([y1, x1, y2, x2], axis=-1).astype(np.float32)
    return np.where(present[:, None], boxes, 0.0).astype(np.float32)


def minimize_masks(boxes, masks, mini_shape):
    """Crops each mask to its box and resizes it to `mini_shape`.

    Args:
        boxes: array `[N, 4]`, yxyx pixels (as from `extract_boxes`).
        masks: bool array `[H, W, N]`.
        mini_shape: `(mh, mw)`.

    Returns:
        bool array `[N, mh, mw]` (instance-first), bilinear resize
        thresholded at 0.5. Zero-area boxes give all-zero masks.

    Example:

    >>> import numpy as np
    >>> from keras_maskrcnn_layers.data import extract_boxes, minimize_masks
    >>> masks = np.zeros((10, 10, 1), bool)
    >>> masks[2:6, 2:6, 0] = True
    >>> minimize_masks(extract_boxes(masks), masks, (2, 2)).astype(int)
    array([[[1, 1],
            [1, 1]]])
    """
    masks = np.asarray(masks)
    boxes = np.asarray(boxes)
    if masks.ndim != 3 or boxes.ndim != 2 or boxes.shape != (masks.shape[-1], 4):
        raise ValueError(
            f"`boxes` must be [N, 4] for `masks` [H, W, N]. Received boxes {boxes.shape}, masks {masks.shape}"
        )
    mh, mw = (int(s) for s in mini_shape)
    h, w = masks.shape[:2]
    out = np.zeros((masks.shape[-1], mh, mw), dtype=bool)
    for i, box in enumerate(boxes):
        y1, x1, y2, x2 = _check_int_box(box, h, w, "boxes")
        if y2 <= y1 or x2 <= x1:
            continue
        crop = masks[y1:y2, x1:x2, i].astype(np.float32)
        out[i] = resize_bilinear(crop, mh, mw) >= 0.5
    return out


def expand_mini_masks(boxes, mini_masks, image_shape):
    """Pastes mini masks back into full-size masks: the inverse of `minimize_masks`.

    Args:
        boxes: array `[N, 4]`, yxyx pixels inside the image.
        mini_masks: array `[N, mh, mw]` (bool or probabilities in [0, 1]).
        image_shape: `(H, W)` or `(H, W, C)`.

    Returns:
        bool array `[H, W, N]` (the sample layout).

    Example:

    >>> import numpy as np
    >>> from keras_maskrcnn_layers.data import expand_mini_masks
    >>> full = expand_mini_masks([[2, 2, 6, 6]], np.ones((1, 2, 2), bool), (8, 8))
    >>> full.shape, int(full.sum())
    ((8, 8, 1), 16)
    """
    mini_masks = np.asarray(mini_masks)
    boxes = np.asarray(boxes)
    if mini_masks.ndim != 3 or boxes.ndim != 2 or boxes.shape != (mini_masks.shape[0], 4):
        raise ValueError(
            f"`boxes` must be [N, 4] for `mini_masks` [N, mh, mw]. "
            f"Received boxes {boxes.shape}, mini_masks {mini_masks.shape}"
        )
    h, w = int(image_shape[0]), int(image_shape[1])
    out = np.zeros((h, w, mini_masks.shape[0]), dtype=bool)
    for i, box in enumerate(boxes):
        y1, x1, y2, x2 = _check_int_box(box, h, w, "boxes")
        if y2 <= y1 or x2 <= x1:
            continue
        out[y1:y2, x1:x2, i] = resize_bilinear(mini_masks[i].astype(np.float32), y2 - y1, x2 - x1) >= 0.5
    return out


# === From a sample to model inputs ===


def gt_mask_shape(config):
    """`(mh, mw)` of `gt_masks`: `MINI_MASK_SHAPE` or the input size."""
    return tuple(config.MINI_MASK_SHAPE) if config.USE_MINI_MASK else tuple(config.IMAGE_SHAPE[:2])


def prepare_sample(sample, config, flip=None):
    """Turns one sample into the padded, fixed-shape arrays the model takes.

    Steps: check the sample, flip (before anything else, so boxes and masks
    stay consistent), resize and pad (`IMAGE_RESIZE_MODE`,
    `IMAGE_MIN_DIM`, `IMAGE_MAX_DIM`, `IMAGE_MIN_SCALE`), drop instances
    whose mask is empty after resizing, keep the first `MAX_GT_INSTANCES`
    (warning when more were given), compute boxes from the resized masks,
    crop masks to mini masks if `USE_MINI_MASK`, and zero-pad.

    Args:
        sample: dict with `"image"` uint8 `[H, W, 3]`, `"masks"` bool
            `[H, W, N]`, `"class_ids"` int `[N]` in `1..NUM_CLASSES - 1`,
            optional `"image_id"` int.
        config: `MaskRCNNConfig`.
        flip: `None`, `"horizontal"`, `"vertical"` or `"both"`. Defaults
            to `None`.

    Returns:
        dict of unbatched NumPy arrays, `M = MAX_GT_INSTANCES`:
        `"images"` float32 `IMAGE_SHAPE`, raw 0..255 values (the model
        subtracts `MEAN_PIXEL`); `"image_meta"` float32 `[8]` (see
        `parse_image_meta`); `"gt_class_ids"` int32 `[M]`, 0 on padding;
        `"gt_boxes"` float32 `[M, 4]` yxyx pixels of the network input, 0
        on padding; `"gt_masks"` float32 `[M, mh, mw]` in {0, 1}, with
        `(mh, mw) = MINI_MASK_SHAPE` if `USE_MINI_MASK` else
        `IMAGE_SHAPE[:2]` (mini masks are the masks cropped to their boxes).

    Raises:
        ValueError: for a bad sample (see `validate_sample`) or an image
            that does not fit the input in modes `"pad64"` and `"none"`.

    Example:

    >>> import keras_maskrcnn_layers as kml
    >>> from keras_maskrcnn_layers.data import generate_shapes, prepare_sample
    >>> config = kml.MaskRCNNConfig.preset("shapes")
    >>> inputs = prepare_sample(generate_shapes(1)[0], config)
    >>> {k: v.shape for k, v in inputs.items()}["gt_masks"]
    (8, 128, 128)
    """
    checked = validate_sample(sample, num_classes=config.NUM_CLASSES, channels=config.IMAGE_CHANNEL_COUNT)
    image, masks, class_ids = checked["image"], checked["masks"], checked["class_ids"]
    image, masks = flip_sample_arrays(image, masks, flip)
    original_shape = image.shape
    try:
        image, window, scale, padding = resize_image(
            image.astype(np.float32),
            min_dim=config.IMAGE_MIN_DIM,
            max_dim=config.IMAGE_MAX_DIM,
            min_scale=config.IMAGE_MIN_SCALE,
            mode=config.IMAGE_RESIZE_MODE,
        )
    except ValueError as error:
        raise ValueError(f"Sample (image_id={checked['image_id']!r}): {error}") from error
    masks = resize_masks(masks, scale, padding)

    # Tiny instances can vanish when the image is scaled down; an empty mask
    # has no box and would teach the heads nothing.
    keep = masks.any(axis=(0, 1))
    masks, class_ids = masks[..., keep], class_ids[keep]
    max_gt = config.MAX_GT_INSTANCES
    if class_ids.shape[0] > max_gt:
        # One fixed message, so Python's warning filter shows it once rather
        # than once per sample of a long pipeline.
        warnings.warn(
            f"A sample has more than MAX_GT_INSTANCES={max_gt} instances; only the first {max_gt} are kept. "
            "Raise MAX_GT_INSTANCES to train on all of them.",
            stacklevel=2,
        )
        masks, class_ids = masks[..., :max_gt], class_ids[:max_gt]
    boxes = extract_boxes(masks)
    if config.USE_MINI_MASK:
        instance_masks = minimize_masks(boxes, masks, config.MINI_MASK_SHAPE)
    else:
        instance_masks = np.transpose(masks, (2, 0, 1))

    n = class_ids.shape[0]
    gt_class_ids = np.zeros((max_gt,), np.int32)
    gt_boxes = np.zeros((max_gt, 4), np.float32)
    gt_masks = np.zeros((max_gt,) + gt_mask_shape(config), np.float32)
    gt_class_ids[:n] = class_ids
    gt_boxes[:n] = boxes
    gt_masks[:n] = instance_masks
    return {
        "images": image.astype(np.float32),
        "image_meta": compose_image_meta(original_shape, window, scale, checked["image_id"]),
        "gt_class_ids": gt_class_ids,
        "gt_boxes": gt_boxes,
        "gt_masks": gt_masks,
    }

"""The sample contract shared by every data source, and its check.

A sample is what matterport's `Dataset.load_image` / `load_mask` give:

- `"image"`: uint8 `[H, W, 3]` (RGB).
- `"masks"`: bool `[H, W, N]`, one channel per instance; instances may
  overlap.
- `"class_ids"`: int32 `[N]`, values in `1..NUM_CLASSES - 1` (0 is the
  background).
- `"image_id"` (optional): an integer id, carried into the image meta.

`N` may be 0. Bad samples raise a `ValueError` naming the key and what is
wrong, so that a broken loader fails at its first sample rather than
training on garbage.
"""

import numpy as np

# The image meta stores the id as float32, which holds integers exactly only
# up to 2**24.
MAX_IMAGE_ID = 2**24


def _where(sample):
    image_id = sample.get("image_id") if isinstance(sample, dict) else None
    return "" if image_id is None else f" (image_id={image_id!r})"


def check_image(image, channels, label):
    """An image as an array: `[H, W, channels]` of finite real numbers in `[0, 255]`.

    The image rule of `validate_sample`, also applied by `MaskRCNN.detect`;
    `label` names the image in the messages.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != channels:
        raise ValueError(f"{label} must have shape [H, W, {channels}]. Received shape {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"{label} is empty. Received shape {image.shape}")
    if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        raise ValueError(f"{label} must hold real numbers. Received dtype {image.dtype}")
    if image.dtype != np.uint8:
        if not np.all(np.isfinite(image)):
            raise ValueError(f"{label} contains NaN or infinite values.")
        if image.min() < 0 or image.max() > 255:
            raise ValueError(
                f"{label} values must lie in [0, 255]. Received range [{image.min()}, {image.max()}]"
            )
    return image


def validate_sample(sample, num_classes=None, channels=3):
    """Checks a sample and returns it with canonical dtypes.

    Args:
        sample: dict. `"image"`, `"masks"`, `"class_ids"` and optionally
            `"image_id"`, as described in this module's docstring. Masks may
            also be given as integers or floats holding only 0 and 1;
            images as any real dtype holding values in `[0, 255]`.
        num_classes: int or None. `NUM_CLASSES` (background included); when
            given, class ids must be below it. Defaults to `None`.
        channels: int. Expected number of image channels. Defaults to `3`.

    Returns:
        A new dict: `"image"` as given (checked), `"masks"` bool
        `[H, W, N]`, `"class_ids"` int32 `[N]`, `"image_id"` int or None.

    Raises:
        ValueError: for a missing key, a wrong rank or shape, masks and
            class ids of different `N`, a class id out of range, NaN or
            infinite values, or masks that are not binary.

    Example:

    >>> import numpy as np
    >>> from keras_maskrcnn_layers.data import validate_sample
    >>> sample = {"image": np.zeros((4, 6, 3), "uint8"),
    ...           "masks": np.ones((4, 6, 1), bool), "class_ids": [2]}
    >>> validate_sample(sample, num_classes=3)["class_ids"]
    array([2], dtype=int32)
    """
    if not isinstance(sample, dict):
        raise ValueError(f"A sample must be a dict with 'image', 'masks' and 'class_ids'. Received: {type(sample)}")
    missing = [k for k in ("image", "masks", "class_ids") if k not in sample]
    if missing:
        raise ValueError(f"Sample{_where(sample)} lacks key(s) {missing}. Received keys: {sorted(sample)}")
    where = _where(sample)

    image = check_image(sample["image"], channels, f"Sample{where}: 'image'")

    masks = np.asarray(sample["masks"])
    if masks.ndim != 3 or masks.shape[:2] != image.shape[:2]:
        raise ValueError(
            f"Sample{where}: 'masks' must have shape [H, W, N] with the image's H, W = {image.shape[:2]}. "
            f"Received shape {masks.shape}"
        )
    if masks.dtype != bool:
        if not (np.issubdtype(masks.dtype, np.integer) or np.issubdtype(masks.dtype, np.floating)):
            raise ValueError(f"Sample{where}: 'masks' must be bool. Received dtype {masks.dtype}")
        if masks.size and not np.all((masks == 0) | (masks == 1)):
            bad = masks[(masks != 0) & (masks != 1)].ravel()[:3]
            raise ValueError(
                f"Sample{where}: 'masks' must be bool or hold only 0 and 1 (dtype {masks.dtype}). "
                f"Found values such as {bad.tolist()}"
            )
        masks = masks.astype(bool)

    class_ids = np.asarray(sample["class_ids"])
    if class_ids.ndim != 1:
        raise ValueError(f"Sample{where}: 'class_ids' must have shape [N]. Received shape {class_ids.shape}")
    if class_ids.size and not np.issubdtype(class_ids.dtype, np.integer):
        if class_ids.dtype == bool or not np.issubdtype(class_ids.dtype, np.floating):
            raise ValueError(f"Sample{where}: 'class_ids' must be integers. Received dtype {class_ids.dtype}")
        if not np.all(np.isfinite(class_ids)) or not np.all(class_ids == np.round(class_ids)):
            raise ValueError(f"Sample{where}: 'class_ids' must be whole numbers. Received {class_ids.tolist()}")
    class_ids = class_ids.astype(np.int32)
    if class_ids.shape[0] != masks.shape[-1]:
        raise ValueError(
            f"Sample{where}: 'masks' has {masks.shape[-1]} instance(s) but 'class_ids' has {class_ids.shape[0]}."
        )
    high = "NUM_CLASSES - 1" if num_classes is None else f"{num_classes - 1} (NUM_CLASSES - 1)"
    if class_ids.size and (class_ids.min() < 1 or (num_classes is not None and class_ids.max() >= num_classes)):
        raise ValueError(
            f"Sample{where}: 'class_ids' must lie in 1..{high}; 0 is the background. Received {class_ids.tolist()}"
        )

    image_id = sample.get("image_id")
    if image_id is not None:
        if isinstance(image_id, (bool, np.bool_)) or not isinstance(image_id, (int, np.integer)):
            raise ValueError(f"Sample: 'image_id' must be an integer or None. Received {image_id!r}")
        if not 0 <= int(image_id) < MAX_IMAGE_ID:
            raise ValueError(
                f"Sample: 'image_id' must lie in [0, 2**24) to survive the float32 image meta. Received {image_id}"
            )
        image_id = int(image_id)
    return {"image": image, "masks": masks, "class_ids": class_ids, "image_id": image_id}

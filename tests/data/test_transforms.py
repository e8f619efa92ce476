import numpy as np
import pytest

from keras_maskrcnn_layers.data import (
    expand_mini_masks,
    extract_boxes,
    flip_sample_arrays,
    minimize_masks,
    resize_image,
    resize_masks,
)


def disc(height, width, cy, cx, radius):
    yy, xx = np.mgrid[:height, :width] + 0.5
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2


def iou(a, b):
    return np.logical_and(a, b).sum() / np.logical_or(a, b).sum()


# === extract_boxes ===


def test_extract_boxes_hand_made():
    masks = np.zeros((20, 30, 3), bool)
    masks[2:5, 7:12, 0] = True  # rows 2..4, cols 7..11
    masks[10, 29, 1] = True  # a single pixel at the corner column
    boxes = extract_boxes(masks)
    assert boxes.dtype == np.float32 and boxes.shape == (3, 4)
    np.testing.assert_array_equal(boxes, [[2, 7, 5, 12], [10, 29, 11, 30], [0, 0, 0, 0]])


def test_extract_boxes_of_non_convex_mask():
    masks = np.zeros((10, 10, 1), bool)
    masks[1, 2, 0] = masks[8, 6, 0] = True
    np.testing.assert_array_equal(extract_boxes(masks), [[1, 2, 9, 7]])


def test_extract_boxes_no_instances():
    assert extract_boxes(np.zeros((5, 5, 0), bool)).shape == (0, 4)


# === resize_image ===


def test_square_mode_known_window_and_scale():
    image = np.full((64, 32, 3), 200, np.uint8)
    resized, window, scale, padding = resize_image(image, min_dim=128, max_dim=128, mode="square")
    assert resized.shape == (128, 128, 3) and resized.dtype == np.uint8
    assert scale == 2.0
    assert window == (0, 32, 128, 96)
    assert padding == [(0, 0), (32, 32), (0, 0)]
    assert np.all(resized[:, 32:96] == 200) and np.all(resized[:, :32] == 0) and np.all(resized[:, 96:] == 0)


def test_square_mode_scales_down_large_images_and_never_below_need():
    image = np.zeros((300, 200, 3), np.uint8)
    resized, window, scale, _ = resize_image(image, min_dim=100, max_dim=128, mode="square")
    assert scale == pytest.approx(128 / 300)
    assert window == (0, (128 - 85) // 2, 128, (128 - 85) // 2 + 85)
    # A 100x100 image with min_dim 64: matterport scales up only, so it stays 100 px.
    _, window, scale, _ = resize_image(np.zeros((100, 100, 3)), min_dim=64, max_dim=128, mode="square")
    assert scale == 1.0 and window == (14, 14, 114, 114)


def test_min_scale_wins():
    _, window, scale, _ = resize_image(np.zeros((20, 30, 3)), min_dim=10, max_dim=128, min_scale=3, mode="square")
    assert scale == 3.0 and window == (34, 19, 94, 109)


def test_pad64_mode_scales_up_only_and_pads_centred():
    image = np.zeros((40, 50, 3), np.uint8)
    resized, window, scale, _ = resize_image(image, min_dim=80, max_dim=128, mode="pad64")
    assert resized.shape == (128, 128, 3)
    assert scale == 2.0
    assert window == (24, 14, 104, 114)
    _, window, scale, _ = resize_image(np.zeros((100, 120, 3)), min_dim=64, max_dim=128, mode="pad64")
    assert scale == 1.0 and window == (14, 4, 114, 124)


def test_pad64_mode_raises_when_it_does_not_fit():
    with pytest.raises(ValueError, match="does not fit"):
        resize_image(np.zeros((100, 200, 3)), min_dim=64, max_dim=128, mode="pad64")


def test_none_mode_pads_bottom_right():
    image = np.arange(30 * 40 * 3).reshape(30, 40, 3) % 251
    resized, window, scale, padding = resize_image(image.astype(np.uint8), min_dim=800, max_dim=64, mode="none")
    assert scale == 1.0 and window == (0, 0, 30, 40)
    assert padding == [(0, 34), (0, 24), (0, 0)]
    np.testing.assert_array_equal(resized[:30, :40], image)
    assert not resized[30:].any() and not resized[:, 40:].any()
    with pytest.raises(ValueError, match="does not fit"):
        resize_image(np.zeros((65, 10, 3)), max_dim=64, mode="none")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"image": np.zeros((10, 10)), "max_dim": 64},
        {"image": np.zeros((10, 10, 3)), "max_dim": 64, "mode": "crop"},
        {"image": np.zeros((10, 10, 3)), "max_dim": None},
    ],
)
def test_resize_image_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        resize_image(**kwargs)


# === resize_masks ===


@pytest.mark.parametrize("shape, min_dim, max_dim", [((64, 32), 128, 128), ((300, 200), 100, 128), ((50, 70), 64, 64)])
def test_masks_follow_the_image(shape, min_dim, max_dim):
    mask = disc(*shape, shape[0] * 0.4, shape[1] * 0.6, min(shape) * 0.3)
    mask |= disc(*shape, shape[0] * 0.8, shape[1] * 0.2, min(shape) * 0.15)
    image = np.repeat(mask[..., None] * 255, 3, axis=-1).astype(np.uint8)
    resized, window, scale, padding = resize_image(image, min_dim=min_dim, max_dim=max_dim, mode="square")
    masks = resize_masks(mask[..., None], scale, padding)
    assert masks.shape == (max_dim, max_dim, 1) and masks.dtype == bool
    agreement = np.mean((resized[..., 0] > 127) == masks[..., 0])
    assert agreement > 0.99
    y1, x1, y2, x2 = window
    assert not masks[:y1].any() and not masks[y2:].any() and not masks[:, :x1].any() and not masks[:, x2:].any()


def test_masks_resize_exactly_at_integer_scale():
    masks = np.zeros((4, 4, 1), bool)
    masks[1, 2, 0] = True
    out = resize_masks(masks, 2.0, [(0, 0), (0, 0), (0, 0)])
    expected = np.zeros((8, 8), bool)
    expected[2:4, 4:6] = True
    np.testing.assert_array_equal(out[..., 0], expected)


# === mini masks ===


def test_mini_mask_round_trip_of_a_disc():
    masks = disc(100, 120, 40, 70, 25)[..., None]
    boxes = extract_boxes(masks)
    mini = minimize_masks(boxes, masks, (28, 28))
    assert mini.shape == (1, 28, 28) and mini.dtype == bool
    back = expand_mini_masks(boxes, mini, (100, 120, 3))
    assert back.shape == (100, 120, 1) and back.dtype == bool
    assert iou(back[..., 0], masks[..., 0]) > 0.9


def test_mini_mask_is_the_crop_resized():
    masks = np.zeros((20, 20, 1), bool)
    masks[4:8, 10:18, 0] = True
    masks[4:6, 10:14, 0] = False  # top-left quarter of the box is empty
    mini = minimize_masks(extract_boxes(masks), masks, (4, 4))
    np.testing.assert_array_equal(mini[0].astype(int), [[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]])


def test_mini_masks_zero_area_box_and_bad_shapes():
    masks = np.zeros((10, 10, 1), bool)
    assert not minimize_masks(np.zeros((1, 4)), masks, (5, 5)).any()
    with pytest.raises(ValueError):
        minimize_masks(np.zeros((2, 4)), masks, (5, 5))
    with pytest.raises(ValueError, match="outside"):
        expand_mini_masks([[0, 0, 11, 5]], np.ones((1, 3, 3)), (10, 10))


# === flips ===


@pytest.mark.parametrize("flip", ["horizontal", "vertical", "both"])
def test_flips_keep_boxes_and_masks_consistent(flip):
    height, width = 40, 60
    masks = np.zeros((height, width, 2), bool)
    masks[5:15, 10:30, 0] = True
    masks[20:38, 41:59, 1] = disc(18, 18, 9, 9, 8)
    image = (masks[..., :1] * 255).repeat(3, axis=-1).astype(np.uint8)
    boxes = extract_boxes(masks)
    flipped_image, flipped_masks = flip_sample_arrays(image, masks, flip)
    mirrored = boxes.copy()
    if flip in ("horizontal", "both"):
        mirrored[:, [1, 3]] = width - boxes[:, [3, 1]]
    if flip in ("vertical", "both"):
        mirrored[:, [0, 2]] = height - boxes[:, [2, 0]]
    np.testing.assert_array_equal(extract_boxes(flipped_masks), mirrored)
    np.testing.assert_array_equal(flipped_image[..., 0] > 0, flipped_masks[..., 0])


def test_bad_flip():
    with pytest.raises(ValueError, match="flip"):
        flip_sample_arrays(np.zeros((2, 2, 3)), np.zeros((2, 2, 0), bool), "diagonal")

import warnings

import numpy as np
import pytest

import keras_maskrcnn_layers as kml
from keras_maskrcnn_layers.data import (
    expand_mini_masks,
    extract_boxes,
    generate_shapes,
    parse_image_meta,
    prepare_sample,
    validate_sample,
)

KEYS = {"images", "image_meta", "gt_class_ids", "gt_boxes", "gt_masks"}


def config(**overrides):
    return kml.MaskRCNNConfig.preset("shapes", **overrides)


def hand_sample(height=64, width=32, image_id=5):
    """A rectangle (class 1) and a smaller rectangle (class 3)."""
    image = np.full((height, width, 3), 10, np.uint8)
    masks = np.zeros((height, width, 2), bool)
    masks[8:24, 4:20, 0] = True
    masks[40:50, 20:30, 1] = True
    image[masks[..., 0]] = 200
    return {"image": image, "masks": masks, "class_ids": np.array([1, 3], np.int32), "image_id": image_id}


@pytest.mark.parametrize("use_mini_mask, mask_shape", [(False, (128, 128)), (True, (56, 56))])
def test_shapes_and_dtypes(use_mini_mask, mask_shape):
    cfg = config(USE_MINI_MASK=use_mini_mask)
    out = prepare_sample(generate_shapes(1, seed=4, empty_fraction=0.0)[0], cfg)
    assert set(out) == KEYS
    assert out["images"].shape == (128, 128, 3) and out["images"].dtype == np.float32
    assert out["image_meta"].shape == (8,) and out["image_meta"].dtype == np.float32
    assert out["gt_class_ids"].shape == (8,) and out["gt_class_ids"].dtype == np.int32
    assert out["gt_boxes"].shape == (8, 4) and out["gt_boxes"].dtype == np.float32
    assert out["gt_masks"].shape == (8,) + mask_shape and out["gt_masks"].dtype == np.float32
    assert set(np.unique(out["gt_masks"]).tolist()) <= {0.0, 1.0}


def test_values_of_a_hand_made_sample():
    out = prepare_sample(hand_sample(), config())
    # 64x32 into 128 square: scale 2, window (0, 32, 128, 96).
    meta = parse_image_meta(out["image_meta"])
    np.testing.assert_array_equal(meta["original_image_shape"], [64, 32])
    np.testing.assert_array_equal(meta["window"], [0, 32, 128, 96])
    assert meta["scale"] == 2.0 and meta["image_id"] == 5
    # Raw pixel values, not mean-subtracted; zero padding outside the window.
    assert out["images"].max() == 200.0 and out["images"][:, :32].max() == 0.0
    np.testing.assert_array_equal(out["gt_class_ids"], [1, 3, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(out["gt_boxes"][:2], [[16, 40, 48, 72], [80, 72, 100, 92]])
    assert not out["gt_boxes"][2:].any() and not out["gt_masks"][2:].any()
    # Full masks are instance-first and agree with the boxes and the image.
    np.testing.assert_array_equal(extract_boxes(np.transpose(out["gt_masks"][:2], (1, 2, 0)) > 0), out["gt_boxes"][:2])
    # Bilinear image and nearest-neighbour mask agree at scale 2 (midpoint 105).
    np.testing.assert_array_equal(out["gt_masks"][0] > 0, out["images"][..., 0] > 105)


def test_mini_masks_are_crops_of_the_boxes():
    cfg = config(USE_MINI_MASK=True, MINI_MASK_SHAPE=(28, 28))
    sample = generate_shapes(1, seed=8, empty_fraction=0.0)[0]
    full = prepare_sample(sample, config(USE_MINI_MASK=False))
    mini = prepare_sample(sample, cfg)
    np.testing.assert_array_equal(full["gt_boxes"], mini["gt_boxes"])
    n = int((mini["gt_class_ids"] > 0).sum())
    assert mini["gt_masks"].shape == (8, 28, 28)
    expanded = expand_mini_masks(mini["gt_boxes"][:n], mini["gt_masks"][:n], (128, 128))
    for i in range(n):
        a, b = expanded[..., i], full["gt_masks"][i] > 0
        assert (a & b).sum() / (a | b).sum() > 0.8


@pytest.mark.parametrize("flip", ["horizontal", "vertical"])
def test_flip_keeps_boxes_masks_and_image_consistent(flip):
    cfg = config()
    sample = hand_sample(64, 64)
    plain, flipped = prepare_sample(sample, cfg), prepare_sample(sample, cfg, flip=flip)
    axis = 1 if flip == "horizontal" else 0
    np.testing.assert_array_equal(flipped["images"], np.flip(plain["images"], axis=axis))
    np.testing.assert_array_equal(flipped["gt_masks"], np.flip(plain["gt_masks"], axis=axis + 1))
    mirrored = plain["gt_boxes"][:2].copy()
    columns = [1, 3] if flip == "horizontal" else [0, 2]
    mirrored[:, columns] = 128 - plain["gt_boxes"][:2][:, columns[::-1]]
    np.testing.assert_array_equal(flipped["gt_boxes"][:2], mirrored)
    np.testing.assert_array_equal(flipped["image_meta"], plain["image_meta"])


def test_zero_instances_give_all_zero_ground_truth():
    sample = {"image": np.zeros((50, 60, 3), np.uint8), "masks": np.zeros((50, 60, 0), bool), "class_ids": []}
    for use_mini in (False, True):
        out = prepare_sample(sample, config(USE_MINI_MASK=use_mini))
        assert not out["gt_class_ids"].any() and not out["gt_boxes"].any() and not out["gt_masks"].any()
        assert out["image_meta"][-1] == -1


def test_instances_empty_after_resizing_are_dropped():
    masks = np.zeros((512, 512, 2), bool)
    masks[100, 100, 0] = True  # one pixel: vanishes at scale 1/4
    masks[200:300, 200:300, 1] = True
    sample = {"image": np.zeros((512, 512, 3), np.uint8), "masks": masks, "class_ids": [2, 1]}
    out = prepare_sample(sample, config())
    np.testing.assert_array_equal(out["gt_class_ids"][:2], [1, 0])
    np.testing.assert_array_equal(out["gt_boxes"][0], [50, 50, 75, 75])


def test_more_than_max_gt_instances_warns_and_keeps_the_first():
    masks = np.zeros((128, 128, 10), bool)
    for i in range(10):
        masks[i * 12 : i * 12 + 10, 5:15, i] = True
    class_ids = np.array([1, 2, 3, 1, 2, 3, 1, 2, 3, 1])
    sample = {"image": np.zeros((128, 128, 3), np.uint8), "masks": masks, "class_ids": class_ids}
    with pytest.warns(UserWarning, match="MAX_GT_INSTANCES=8"):
        out = prepare_sample(sample, config())
    np.testing.assert_array_equal(out["gt_class_ids"], class_ids[:8])
    np.testing.assert_array_equal(out["gt_boxes"][:, 0], np.arange(8) * 12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prepare_sample(hand_sample(), config())


def good():
    return hand_sample()


def with_changes(**changes):
    sample = good()
    sample.update(changes)
    return sample


BAD_SAMPLES = {
    "class ids count": (with_changes(class_ids=np.array([1])), "2 instance"),
    "class id 0": (with_changes(class_ids=np.array([0, 1])), "background"),
    "class id too big": (with_changes(class_ids=np.array([1, 4])), "NUM_CLASSES"),
    "float class ids": (with_changes(class_ids=np.array([1.5, 2.0])), "whole numbers"),
    "grayscale image": (with_changes(image=np.zeros((64, 32), np.uint8)), r"\[H, W, 3\]"),
    "rgba image": (with_changes(image=np.zeros((64, 32, 4), np.uint8)), r"\[H, W, 3\]"),
    "nan image": (with_changes(image=np.full((64, 32, 3), np.nan, np.float32)), "NaN"),
    "image out of range": (with_changes(image=np.full((64, 32, 3), 300.0)), r"\[0, 255\]"),
    "masks not binary": (with_changes(masks=np.full((64, 32, 2), 0.5)), "only 0 and 1"),
    "masks wrong size": (with_changes(masks=np.zeros((32, 64, 2), bool)), "masks"),
    "masks 2d": (with_changes(masks=np.zeros((64, 32), bool)), "masks"),
    "string masks": (with_changes(masks=np.full((64, 32, 2), "x")), "bool"),
    "image id": (with_changes(image_id="abc"), "image_id"),
    "missing key": ({"image": np.zeros((4, 4, 3), np.uint8)}, "lacks"),
    "not a dict": ([np.zeros((4, 4, 3))], "dict"),
}


@pytest.mark.parametrize("name", sorted(BAD_SAMPLES))
def test_bad_samples_raise(name):
    sample, message = BAD_SAMPLES[name]
    with pytest.raises(ValueError, match=message):
        prepare_sample(sample, config())


def test_integer_masks_of_zeros_and_ones_are_accepted():
    sample = with_changes(masks=good()["masks"].astype(np.uint8))
    assert validate_sample(sample)["masks"].dtype == bool
    expected = prepare_sample(good(), config())["gt_boxes"]
    np.testing.assert_array_equal(prepare_sample(sample, config())["gt_boxes"], expected)


def test_image_too_large_for_pad64_names_the_sample():
    cfg = config(IMAGE_RESIZE_MODE="pad64", IMAGE_MIN_DIM=64)
    with pytest.raises(ValueError, match=r"image_id=5.*does not fit"):
        prepare_sample(hand_sample(200, 100), cfg)

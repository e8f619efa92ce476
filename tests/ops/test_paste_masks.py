"""`paste_masks` against the pixel-by-pixel NumPy reference and hand-computed cases."""

import numpy as np
import pytest

from keras_maskrcnn_layers import ops as kml_ops
from tests import reference
from tests.backend_utils import jit, to_numpy

IMAGE = (24, 32)


def random_case(seed, count=6, cells=(7, 9)):
    rng = np.random.default_rng(seed)
    masks = rng.uniform(0, 1, size=(count, *cells)).astype("float32")
    y1 = rng.uniform(-6, 20, count)
    x1 = rng.uniform(-6, 28, count)
    boxes = np.stack([y1, x1, y1 + rng.uniform(0.5, 16, count), x1 + rng.uniform(0.5, 16, count)], -1)
    return masks, boxes.astype("float32")


def reference_paste(masks, boxes, threshold, padding, box_scale, image=IMAGE):
    return np.stack(
        [reference.paste_mask(m, b, image, threshold, padding, box_scale) for m, b in zip(masks, boxes)]
    )


@pytest.mark.parametrize("padding", [0, 1, 2])
@pytest.mark.parametrize("box_scale", [1.0, 1.3])
def test_soft_masks_match_reference(padding, box_scale):
    # Boxes cross every border, and some are smaller than a pixel.
    masks, boxes = random_case(padding * 10 + int(box_scale * 10))
    got = to_numpy(kml_ops.paste_masks(masks, boxes, IMAGE, None, padding, box_scale))
    np.testing.assert_allclose(got, reference_paste(masks, boxes, None, padding, box_scale), atol=1e-5)


@pytest.mark.parametrize("threshold", [0.2, 0.5, 0.8])
def test_thresholded_masks_match_reference(threshold):
    masks, boxes = random_case(7)
    got = to_numpy(kml_ops.paste_masks(masks, boxes, IMAGE, threshold))
    soft = reference_paste(masks, boxes, None, 1, 1.0)
    assert got.dtype == bool
    # Pixels within float32 rounding of the threshold may go either way.
    decided = np.abs(soft - threshold) > 1e-5
    np.testing.assert_array_equal(got[decided], (soft >= threshold)[decided])


def test_leading_batch_dims_and_padding_boxes():
    masks, boxes = random_case(3, count=4)
    boxes[3] = 0.0
    got = to_numpy(kml_ops.paste_masks(masks.reshape(2, 2, 7, 9), boxes.reshape(2, 2, 4), IMAGE, None))
    assert got.shape == (2, 2, *IMAGE)
    np.testing.assert_allclose(got.reshape(4, *IMAGE), reference_paste(masks, boxes, None, 1, 1.0), atol=1e-5)
    assert not got[1, 1].any()


def test_hand_computed_without_padding_fills_the_box():
    # 2x2 cells over an 8x8 box at (4, 4): pixel centres 4.5 .. 11.5 read
    # cell coordinates -0.25 .. 1.25, clamped to the edge cells.
    mask = np.array([[[0.0, 1.0], [1.0, 1.0]]], "float32")
    got = to_numpy(kml_ops.paste_masks(mask, np.array([[4, 4, 12, 12]], "float32"), (16, 16), None, padding=0))
    row = [0.0, 0.0, 0.125, 0.375, 0.625, 0.875, 1.0, 1.0]
    np.testing.assert_allclose(got[0, 4, 4:12], row, atol=1e-6)
    np.testing.assert_allclose(got[0, 11, 4:12], np.ones(8), atol=1e-6)
    assert not got[0, :4].any() and not got[0, :, 12:].any()


def test_hand_computed_padding_fades_edges_to_zero():
    # One cell of ones over x in [4, 12); padding 1 makes it [-4, 20) over 3
    # cells (0, 1, 0) with centres at 0, 8 and 16. The value falls linearly
    # from 1 at x = 8 to 0 at x = 0 and 16: pixel centre p + 0.5 reads
    # 1 - |p + 0.5 - 8| / 8. In y the box is centred on the row's centre 0.5,
    # where the weight is 1.
    mask = np.ones((1, 1, 1), "float32")
    got = to_numpy(kml_ops.paste_masks(mask, np.array([[-3.5, 4, 4.5, 12]], "float32"), (1, 24), None))
    row = got[0, 0]
    expected = np.clip(1.0 - np.abs(np.arange(24) + 0.5 - 8.0) / 8.0, 0.0, None)
    np.testing.assert_allclose(row, expected, atol=1e-6)
    # Thresholded at 0.5 the mask covers exactly the box [4, 12).
    binary = to_numpy(kml_ops.paste_masks(mask, np.array([[0, 4, 24, 12]], "float32"), (24, 24)))
    assert np.flatnonzero(binary[0, 12]).tolist() == list(range(4, 12))


def test_box_scale_pastes_into_the_enlarged_box():
    # A mask predicted over the box scaled by 2: its central half is the box.
    mask = np.zeros((1, 8, 8), "float32")
    mask[0, 2:6, 2:6] = 1.0
    box = np.array([[8, 8, 16, 16]], "float32")
    got = to_numpy(kml_ops.paste_masks(mask, box, (24, 24), 0.5, padding=0, box_scale=2.0))
    expected = np.zeros((24, 24), bool)
    expected[8:16, 8:16] = True
    np.testing.assert_array_equal(got[0], expected)


def test_jit_equals_eager():
    masks, boxes = random_case(11)
    eager = to_numpy(kml_ops.paste_masks(masks, boxes, IMAGE, None, 1, 1.2))
    compiled = to_numpy(jit(lambda m, b: kml_ops.paste_masks(m, b, IMAGE, None, 1, 1.2))(masks, boxes))
    np.testing.assert_allclose(compiled, eager, atol=1e-6)


def test_scale_boxes_hand_computed():
    boxes = np.array([[0, 0, 10, 20], [0, 0, 0, 0]], "float32")
    np.testing.assert_allclose(to_numpy(kml_ops.scale_boxes(boxes, 1.2)), [[-1, -2, 11, 22], [0, 0, 0, 0]])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"threshold": 1.5}, "threshold"),
        ({"threshold": True}, "threshold"),
        ({"padding": -1}, "padding"),
        ({"padding": 1.0}, "padding"),
        ({"box_scale": 0.0}, "box_scale"),
        ({"box_scale": float("nan")}, "box_scale"),
        ({"image_shape": (0, 8)}, "image_shape"),
    ],
)
def test_bad_settings_raise(kwargs, match):
    args = {"masks": np.ones((1, 4, 4), "float32"), "boxes": np.array([[0, 0, 4, 4]], "float32"),
            "image_shape": (8, 8), **kwargs}
    with pytest.raises(ValueError, match=match):
        kml_ops.paste_masks(**args)


def test_bad_inputs_raise():
    mask = np.ones((2, 4, 4), "float32")
    with pytest.raises(ValueError, match="boxes"):
        kml_ops.paste_masks(mask, np.zeros((3, 4), "float32"), (8, 8))
    with pytest.raises(ValueError, match="masks"):
        kml_ops.paste_masks(np.ones((4, 4), "float32"), np.zeros((4,), "float32"), (8, 8))
    with pytest.raises(ValueError, match="xyxy"):
        kml_ops.paste_masks(mask, np.array([[0, 4, 4, 0], [0, 0, 1, 1]], "float32"), (8, 8))
    nan = mask.copy()
    nan[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        kml_ops.paste_masks(nan, np.zeros((2, 4), "float32"), (8, 8))


def test_threshold_zero_is_refused():
    # Every pasted value is >= 0, so 0 would mark the whole image, padding boxes included.
    with pytest.raises(ValueError, match="threshold"):
        kml_ops.paste_masks(np.ones((1, 4, 4), "float32"), np.zeros((1, 4), "float32"), (8, 8), threshold=0.0)

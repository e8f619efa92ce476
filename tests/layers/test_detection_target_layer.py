"""DetectionTargetLayer: targets against a NumPy reference, masks, sampling invariants.

Sampling draws from a `keras.random.SeedGenerator` that advances per call,
so `run_layer_test` (which compares a fresh clone with an already-called
layer) runs on a case where every candidate fits in the output and the
result does not depend on the draw; draws that really sample are checked
by hand for what holds for any draw, eager and compiled.
"""

import keras
import numpy as np
import pytest

import keras_maskrcnn_layers as kml
from tests import reference
from tests.backend_utils import to_numpy
from tests.layer_test_case import run_layer_test

STD = (0.1, 0.1, 0.2, 0.2)
SIZE = 64


def hand_case():
    """Two objects on a 64 x 64 image and six proposals with hand-computed IoUs.

    gt 0: a disc of radius 8 centred at (16, 16), box (8, 8, 24, 24), class 1.
    gt 1: an L (the 24 x 20 box minus its top-right 12 x 10), box
    (32, 30, 56, 50), class 2. gt 2 is padding. Image 1 has the same
    proposals and no object. Every test feeds these batch-2 shapes, so the
    JAX backend compiles each eager op once.
    """
    yy, xx = np.mgrid[:SIZE, :SIZE] + 0.5
    masks = np.zeros((1, 3, SIZE, SIZE), "float32")
    masks[0, 0] = (yy - 16) ** 2 + (xx - 16) ** 2 <= 64
    masks[0, 1, 32:56, 30:50] = 1
    masks[0, 1, 32:44, 40:50] = 0
    gt_boxes = np.array([[[8, 8, 24, 24], [32, 30, 56, 50], [0, 0, 0, 0]]], "float32")
    gt_ids = np.array([[1, 2, 0]], "int32")
    proposals = np.array(
        [
            [
                [8, 8, 24, 24],  # = gt 0: IoU 1, positive
                [8, 8, 24, 28],  # 256 / 320 = 0.8 with gt 0: positive
                [32, 30, 56, 42],  # 288 / 480 = 0.6 with gt 1: positive
                [0, 0, 8, 8],  # touches gt 0 only at a corner: IoU 0, negative
                [8, 16, 24, 32],  # 128 / 384 = 0.33 with gt 0: negative
                [40, 0, 60, 20],  # IoU 0: negative
                [0, 0, 0, 0],  # padding
                [0, 0, 0, 0],  # padding
            ]
        ],
        "float32",
    )
    empty = [np.zeros_like(x) for x in (gt_ids, gt_boxes, masks)]
    return (
        np.concatenate([proposals, proposals]),
        np.concatenate([gt_ids, empty[0]]),
        np.concatenate([gt_boxes, empty[1]]),
        np.concatenate([masks, empty[2]]),
    )


def layer(**kwargs):
    settings = dict(train_rois_per_image=12, roi_positive_ratio=0.5, mask_shape=16, seed=1)
    settings.update(kwargs)
    return kml.layers.DetectionTargetLayer(**settings)


def run(target_layer, *inputs):
    return [to_numpy(o) for o in target_layer(*inputs)]


def test_layer_checks_where_nothing_is_sampled_out():
    # Image 1 has no object: its 6 proposals are all negatives.
    out = run_layer_test(
        layer(),
        list(hand_case()),
        expected_output_shapes=[(2, 12, 4), (2, 12), (2, 12, 4), (2, 12, 16, 16), (2, 12)],
        float32_outputs=(0, 2, 3),
    )
    assert [o.dtype for o in out] == [np.float32, np.int32, np.float32, np.float32, bool]
    assert out[4].sum(axis=1).tolist() == [8, 6]


def test_hand_case_against_numpy_reference():
    proposals, ids, boxes, masks = hand_case()
    best_iou = [max(reference.iou(p, g) for g in boxes[0, :2]) for p in proposals[0, :6]]
    np.testing.assert_allclose(best_iou, [1.0, 0.8, 0.6, 0.0, 1 / 3, 0.0], rtol=1e-6)
    out = run(layer(), proposals, ids, boxes, masks)
    refs = [
        reference.detection_targets(proposals[b], ids[b], boxes[b], masks[b], 12, 0.5, STD, (16, 16)) for b in range(2)
    ]
    for b, ref in enumerate(refs):
        for o, r in zip(out, ref):
            np.testing.assert_allclose(o[b].astype(np.float64), r, rtol=1e-5, atol=1e-5)
    ref = refs[0]
    rois, class_ids, deltas, roi_masks, valid = (o[0] for o in out)
    # 5 positives (3 proposals and the 2 appended gt boxes) first, then 3
    # negatives, each in candidate order; 4 padding rows.
    expected_rois = np.concatenate([proposals[0, [0, 1, 2]], boxes[0, :2], proposals[0, [3, 4, 5]], np.zeros((4, 4))])
    np.testing.assert_array_equal(rois, expected_rois)
    np.testing.assert_array_equal(ref[0], expected_rois)
    assert (class_ids > 0).sum() == 5 and ((class_ids == 0) & valid).sum() == 3
    assert class_ids.tolist() == [1, 1, 2, 1, 2, 0, 0, 0, 0, 0, 0, 0] == ref[1].tolist()
    assert valid.tolist() == [True] * 8 + [False] * 4 == ref[4].tolist()
    np.testing.assert_allclose(deltas, ref[2], rtol=1e-5, atol=1e-5)
    # (8, 8, 24, 28) -> (8, 8, 24, 24): centre x moves -2 on width 20, width 16 / 20.
    np.testing.assert_allclose(deltas[1], [0, -2 / 20 / 0.1, 0, np.log(16 / 20) / 0.2], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(deltas[[0, 3, 4]], 0.0)
    np.testing.assert_array_equal(roi_masks, ref[3])
    np.testing.assert_array_equal(deltas[5:], 0.0)
    np.testing.assert_array_equal(roi_masks[5:], 0.0)

    # Image 1 has no object: its 6 proposals come back as negatives, nothing NaN.
    rois, class_ids, deltas, roi_masks, valid = (o[1] for o in out)
    for o in out:
        assert np.all(np.isfinite(o.astype(np.float32)))
    np.testing.assert_array_equal(rois[:6], proposals[1, :6])
    assert valid.tolist() == [True] * 6 + [False] * 6
    assert np.all(class_ids == 0) and np.all(deltas == 0) and np.all(roi_masks == 0)


def test_mask_of_a_roi_equal_to_its_box_is_the_resized_mask():
    proposals, ids, boxes, masks = hand_case()
    # At the box's own size the target is the crop itself.
    _, _, _, roi_masks, _ = (o[0] for o in run(layer(), proposals, ids, boxes, masks))
    np.testing.assert_array_equal(roi_masks[0], masks[0, 0, 8:24, 8:24])
    np.testing.assert_array_equal(roi_masks[3], masks[0, 0, 8:24, 8:24])
    # The L of gt 1 at twice its box size is the crop upsampled by nearest neighbour.
    _, _, _, roi_masks, _ = (o[0] for o in run(layer(mask_shape=(48, 40)), proposals, ids, boxes, masks))
    crop = masks[0, 1, 32:56, 30:50]
    np.testing.assert_array_equal(roi_masks[4], np.repeat(np.repeat(crop, 2, axis=0), 2, axis=1))


def test_mask_box_scale_crops_the_enlarged_roi():
    proposals, ids, boxes, masks = hand_case()
    # ROI (8, 8, 24, 24) scaled by 2 is (0, 0, 32, 32): at 32 px the target
    # is that crop of the mask, the disc with its margin.
    outputs = run(layer(mask_shape=32, mask_box_scale=2.0), proposals, ids, boxes, masks)
    rois, roi_masks = outputs[0][0], outputs[3][0]
    # The returned ROIs stay unscaled: the box head regresses from them.
    np.testing.assert_array_equal(rois[0], [8, 8, 24, 24])
    np.testing.assert_array_equal(roi_masks[0], masks[0, 0, 0:32, 0:32])


def mini_masks(masks, boxes, shape):
    """matterport's minimize_mask with a nearest-neighbour resize: each crop to `shape`."""
    out = np.zeros((*masks.shape[:2], *shape), "float32")
    for b in range(masks.shape[0]):
        for g in range(masks.shape[1]):
            y1, x1, y2, x2 = boxes[b, g].astype(int)
            if y2 <= y1:
                continue
            crop = masks[b, g, y1:y2, x1:x2]
            rows = np.floor((np.arange(shape[0]) + 0.5) * crop.shape[0] / shape[0]).astype(int)
            cols = np.floor((np.arange(shape[1]) + 0.5) * crop.shape[1] / shape[1]).astype(int)
            out[b, g] = crop[rows][:, cols]
    return out


def on_boundary(target):
    """Pixels whose 3 x 3 neighbourhood holds both 0 and 1."""
    padded = np.pad(target, 1, mode="edge")
    windows = np.stack([padded[i : i + target.shape[0], j : j + target.shape[1]] for i in range(3) for j in range(3)])
    return windows.min(axis=0) != windows.max(axis=0)


def test_mini_masks_match_full_masks():
    # Measured: a mini mask at the box size (16) gives identical targets; an
    # upsampled one (56, matterport's MINI_MASK_SHAPE; 28 alike) differs in
    # at most 2 of 256 pixels of a ROI (about 1 %), the lossy 12 x 12 in at
    # most 6 (about 2 %); every differing pixel lies on the object's boundary.
    proposals, ids, boxes, masks = hand_case()
    full = run(layer(), proposals, ids, boxes, masks)
    for shape, max_diff in [((16, 16), 0), ((56, 56), 3), ((12, 12), 8)]:
        mini = run(layer(use_mini_mask=True), proposals, ids, boxes, mini_masks(masks, boxes, shape))
        for i in (0, 1, 2, 4):
            np.testing.assert_array_equal(mini[i], full[i])
        for a, b in zip(full[3][0], mini[3][0]):
            differ = a != b
            assert differ.sum() <= max_diff, (shape, differ.sum())
            assert np.all(on_boundary(a)[differ]), shape


def test_full_masks_at_another_resolution_use_image_shape():
    # Masks stored at half the image size: ROIs are mapped by image_shape.
    # The L of gt 1 has even corners, so halving loses nothing: its targets
    # (rows 2 and 4) differ in at most 2 pixels; the disc of radius 8 becomes
    # one of radius 4 and its targets (rows 0, 1, 3) differ on a rim of at
    # most 32 of 256 pixels (measured 24). Without image_shape the ROIs would
    # land outside the half-size masks.
    proposals, ids, boxes, masks = hand_case()
    half = masks[:, :, ::2, ::2]
    full = run(layer(), proposals, ids, boxes, masks)
    halved = run(layer(image_shape=(SIZE, SIZE)), proposals, ids, boxes, half)
    for i in (0, 1, 2, 4):
        np.testing.assert_array_equal(halved[i], full[i])
    differ = (halved[3][0] != full[3][0]).sum(axis=(1, 2))
    assert differ[[2, 4]].max() <= 2 and differ[[0, 1, 3]].max() <= 32, differ
    unmapped = run(layer(), proposals, ids, boxes, half)[3][0]
    assert (unmapped[4] != full[3][0, 4]).sum() > 100


def test_gt_boxes_are_appended_as_candidates():
    # Proposals far from every object: the only positives are the gt boxes.
    proposals, ids, boxes, masks = hand_case()
    far = np.zeros_like(proposals)
    far[:, :2] = [[0, 40, 10, 60], [50, 0, 60, 10]]
    rois, class_ids, deltas, roi_masks, valid = (o[0] for o in run(layer(), far, ids, boxes, masks))
    np.testing.assert_array_equal(rois[:4], [boxes[0, 0], boxes[0, 1], far[0, 0], far[0, 1]])
    assert class_ids.tolist()[:4] == [1, 2, 0, 0] and valid.sum() == 4
    np.testing.assert_allclose(deltas[:2], 0.0, atol=1e-6)
    np.testing.assert_array_equal(roi_masks[0], masks[0, 0, 8:24, 8:24])


def random_case(seed, batch=2, count=40):
    """Half the proposals jittered around 3 objects, half anywhere: more than the slots of each kind."""
    rng = np.random.default_rng(seed)
    boxes = np.array([[8, 8, 24, 24], [32, 30, 56, 50], [10, 36, 30, 60]], "float32")
    owner = rng.integers(0, 3, size=(batch, count // 2))
    near = boxes[owner] + rng.normal(0, 3.0, size=(batch, count // 2, 4))
    corner = rng.uniform(0, SIZE - 4, size=(batch, count // 2, 2))
    anywhere = np.concatenate([corner, corner + rng.uniform(4, 20, size=(batch, count // 2, 2))], axis=-1)
    proposals = np.clip(np.concatenate([near, anywhere], axis=1), 0, SIZE)
    proposals[..., 2:] = np.maximum(proposals[..., 2:], proposals[..., :2] + 1)
    masks = np.zeros((batch, 3, SIZE, SIZE), "float32")
    for g, (y1, x1, y2, x2) in enumerate(boxes.astype(int)):
        masks[:, g, y1:y2, x1:x2] = 1
    gt = np.broadcast_to(boxes, (batch, 3, 4)).copy()
    return proposals.astype("float32"), np.tile([[1, 2, 3]], (batch, 1)).astype("int32"), gt, masks


def check_any_draw(out, proposals, ids, gt, total, max_positive):
    """What holds for every draw: counts, order, labels and targets of each row."""
    rois, class_ids, deltas, roi_masks, valid = out
    for b in range(len(rois)):
        candidates = np.concatenate([proposals[b], gt[b]])
        ious = np.array([[reference.iou(c, g) for g in gt[b]] for c in candidates])
        num_pos = int((ious.max(axis=1) >= 0.5).sum())
        assert num_pos > max_positive and len(candidates) - num_pos > total, "the case must need sampling"
        positive = class_ids[b] > 0
        assert positive.sum() == max_positive
        assert valid[b].sum() == total, "negatives fill the rest"
        assert np.all(positive[: positive.sum()]), "positives first"
        for t in range(total):
            if not valid[b, t]:
                assert np.all(rois[b, t] == 0)
                continue
            row = [reference.iou(rois[b, t], g) for g in gt[b]]
            assert any(np.allclose(rois[b, t], c) for c in candidates)
            if positive[t]:
                g = int(np.argmax(row))
                assert row[g] >= 0.5 and class_ids[b, t] == ids[b, g]
                expected = reference.encode([gt[b, g]], [rois[b, t]], STD)[0]
                np.testing.assert_allclose(deltas[b, t], expected, rtol=1e-4, atol=1e-4)
            else:
                assert max(row) < 0.5
                assert np.all(deltas[b, t] == 0) and np.all(roi_masks[b, t] == 0)


def test_compiled_draws_keep_the_invariants():
    proposals, ids, gt, masks = random_case(0)
    inputs = [keras.Input((40, 4)), keras.Input((3,), dtype="int32"), keras.Input((3, 4)), keras.Input((3, SIZE, SIZE))]
    model = keras.Model(inputs, layer(train_rois_per_image=16, roi_positive_ratio=0.25, mask_shape=8, seed=3)(*inputs))
    model.compile(jit_compile=True)
    draws = []
    for _ in range(2):
        out = [to_numpy(o) for o in model.predict_on_batch([proposals, ids, gt, masks])]
        assert [o.shape for o in out] == [(2, 16, 4), (2, 16), (2, 16, 4), (2, 16, 8, 8), (2, 16)]
        check_any_draw(out, proposals, ids, gt, 16, 4)
        draws.append(out[0])
    assert not np.array_equal(draws[0], draws[1]), "each call draws a new sample"


def test_bad_arguments():
    for kwargs, name in [
        ({"train_rois_per_image": 0}, "train_rois_per_image"),
        ({"train_rois_per_image": 12.0}, "train_rois_per_image"),
        ({"roi_positive_ratio": 1.2}, "roi_positive_ratio"),
        ({"mask_shape": 0}, "mask_shape"),
        ({"mask_shape": (28, 28, 1)}, "mask_shape"),
        ({"box_std": (1, 1, 1)}, "box_std"),
        ({"box_std": (0.1, 0.1, -0.2, 0.2)}, "box_std"),
        ({"positive_iou": 1.5}, "positive_iou"),
        ({"use_mini_mask": "yes"}, "use_mini_mask"),
        ({"use_mini_mask": 1}, "use_mini_mask"),
        ({"image_shape": (64,)}, "image_shape"),
        ({"image_shape": (64, 0)}, "image_shape"),
        ({"seed": "x"}, "seed"),
    ]:
        with pytest.raises(ValueError, match=name):
            kml.layers.DetectionTargetLayer(**kwargs)


def test_scalar_box_std_raises_value_error():
    with pytest.raises(ValueError, match="box_std"):
        kml.layers.DetectionTargetLayer(box_std=0.1)


def test_positive_iou_zero_is_refused():
    # Every proposal has IoU >= 0, degenerate ones too, whose deltas are infinite.
    with pytest.raises(ValueError, match="positive_iou"):
        kml.layers.DetectionTargetLayer(positive_iou=0.0)


def test_bad_inputs():
    proposals, ids, gt, masks = hand_case()
    target_layer = layer()
    with pytest.raises(ValueError, match="instance counts G"):
        target_layer(proposals, ids, gt, masks[:, :2])
    with pytest.raises(ValueError, match="instance counts G"):
        target_layer(proposals, ids[:, :2], gt, masks)
    with pytest.raises(ValueError, match="G = 0"):
        target_layer(proposals, ids[:, :0], gt[:, :0], masks[:, :0])
    with pytest.raises(ValueError, match=r"`gt_masks` must be \[B, G, m_h, m_w\]"):
        target_layer(proposals, ids, gt, masks[:, :, 0])
    with pytest.raises(ValueError, match=r"`proposals` must be \[B, N, 4\]"):
        target_layer(proposals[..., :3], ids, gt, masks)
    xyxy = gt.copy()
    xyxy[0, 0] = [8, 24, 24, 8]
    with pytest.raises(ValueError, match="xyxy"):
        target_layer(proposals, ids, xyxy, masks)
    nan = proposals.copy()
    nan[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="proposals"):
        target_layer(nan, ids, gt, masks)
    nan_masks = masks.copy()
    nan_masks[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="gt_masks"):
        target_layer(proposals, ids, gt, nan_masks)

"""RPNTargetLayer: labelling against a NumPy reference, sampling caps, compiled invariants.

The layer samples with a `keras.random.SeedGenerator` whose state advances
on every call, so two calls of one layer draw different subsets and
`run_layer_test`'s jit-vs-eager and save/load comparisons (a fresh clone
against an already-called layer) cannot hold on a draw that really samples.
They do hold where sampling is forced, with fewer candidates than slots, so
the helper runs on such a case; draws that really sample are checked by
hand for what holds for any draw, eager and compiled.
"""

import keras
import numpy as np
import pytest

import keras_maskrcnn_layers as kml
from tests import reference
from tests.backend_utils import backend, to_numpy
from tests.layer_test_case import check_config_round_trip, run_layer_test

STD = (0.1, 0.1, 0.2, 0.2)

# gt 0 = (0, 0, 10, 10), gt 1 = (40, 40, 60, 60). IoUs noted per anchor.
HAND_ANCHORS = np.array(
    [
        [0, 0, 10, 10],  # 1.0 with gt 0: positive
        [0, 0, 10, 12],  # 100 / 120 = 0.83 with gt 0: positive
        [0, 0, 10, 20],  # 0.5 with gt 0: ignored
        [40, 40, 52, 52],  # 144 / 400 = 0.36 with gt 1, its best anchor: positive
        [40, 40, 50, 50],  # 0.25 with gt 1: negative
        [100, 100, 110, 110],  # 0: negative
        [0, 0, 25, 25],  # 0.16 with gt 0: negative
        [5, 0, 15, 10],  # 50 / 150 = 0.33 with gt 0: ignored
    ],
    "float32",
)
HAND_LABELS = [1, 1, -1, 1, 0, 0, 0, -1]
# Image 0 is the hand case; image 1 has one gt box whose only overlapping
# anchor (3) is its best, the other 7 anchors negatives. Every test feeds
# these batch-2 shapes, so the JAX backend compiles each eager op once.
HAND_GT = np.array([[[0, 0, 10, 10], [40, 40, 60, 60], [0, 0, 0, 0]], [[50, 50, 60, 61], [0] * 4, [0] * 4]], "float32")
HAND_IDS = np.array([[1, 3, 0], [2, 0, 0]], "int32")


@keras.saving.register_keras_serializable(package="kml_tests")
class BatchedAnchorsRPNTargetLayer(kml.layers.RPNTargetLayer):
    """Takes anchors as `[B, A, 4]` copies so that `run_layer_test` can feed them.

    The helper makes every input a `keras.Input` with an unknown first axis,
    which would leave the anchor count of an `[A, 4]` input unknown; this
    adapter only drops the copies and leaves the computation to the layer.
    """

    def call(self, anchors, gt_boxes, gt_class_ids):
        return super().call(anchors[0], gt_boxes, gt_class_ids)

    def compute_output_spec(self, anchors, gt_boxes, gt_class_ids):
        return super().compute_output_spec(anchors[0], gt_boxes, gt_class_ids)


def test_layer_checks_where_nothing_is_sampled_out():
    # Every candidate fits in the 16 slots, so the output does not depend on the draw.
    layer = BatchedAnchorsRPNTargetLayer(anchors_per_image=16, positive_fraction=0.5, seed=3)
    match, deltas = run_layer_test(
        layer,
        [np.stack([HAND_ANCHORS] * 2), HAND_GT, HAND_IDS],
        expected_output_shapes=[(2, 8), (2, 8, 4)],
        float32_outputs=(1,),
    )
    assert match.dtype == np.int32 and deltas.dtype == np.float32
    assert match.tolist() == [HAND_LABELS, [0, 0, 0, 1, 0, 0, 0, 0]]


def test_hand_case_labels_and_deltas():
    layer = kml.layers.RPNTargetLayer(anchors_per_image=16, seed=0)
    both = [to_numpy(o) for o in layer(HAND_ANCHORS, HAND_GT, HAND_IDS)]
    assert both[0][1].tolist() == [0, 0, 0, 1, 0, 0, 0, 0]
    match, deltas = both[0][0], both[1][0]
    labels, best_gt = reference.rpn_labels(HAND_ANCHORS, HAND_GT[0], HAND_IDS[0], 0.7, 0.3)
    assert labels.tolist() == HAND_LABELS, "the hand-noted IoUs"
    assert match.tolist() == HAND_LABELS
    positive = match == 1
    expected = reference.encode(HAND_GT[0][best_gt[positive]], HAND_ANCHORS[positive], STD)
    np.testing.assert_allclose(deltas[positive], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(deltas[~positive], 0.0)
    # Anchor 0 is gt 0 itself; anchor 3 (40, 40, 52, 52) -> gt 1 (40, 40, 60, 60):
    # centre moves 4 px on a 12 px anchor, size grows 20 / 12.
    np.testing.assert_allclose(deltas[0], 0.0, atol=1e-6)
    d = 4 / 12 / 0.1, np.log(20 / 12) / 0.2
    np.testing.assert_allclose(deltas[3], [d[0], d[0], d[1], d[1]], rtol=1e-5)

    # Thresholds are inclusive settings: with positive_iou 0.5 anchor 2 (IoU
    # exactly 0.5) turns positive; with negative_iou 0.34 anchor 7 (0.33) negative.
    layer = kml.layers.RPNTargetLayer(anchors_per_image=16, positive_iou=0.5, negative_iou=0.34, seed=0)
    match = to_numpy(layer(HAND_ANCHORS, HAND_GT, HAND_IDS)[0])[0]
    assert match.tolist() == [1, 1, 1, 1, 0, 0, 0, 0]


def generator_anchors():
    return to_numpy(kml.AnchorGenerator(scales=(8, 16, 32, 64, 128))(image_shape=(64, 64)))


def many_objects():
    """Image 0: 6 objects, with more positive anchors than the cap; image 1: no object."""
    boxes = np.zeros((2, 6, 4), "float32")
    boxes[0] = [[0, 0, 16, 16], [20, 4, 36, 20], [40, 40, 56, 56], [4, 40, 20, 56], [30, 30, 62, 62], [8, 8, 40, 40]]
    ids = np.array([[1, 2, 1, 1, 2, 1], [0] * 6], "int32")
    return boxes, ids


def check_any_draw(match, deltas, anchors, gt, ids, anchors_per_image, positive_fraction):
    """What holds for every draw: caps, totals, subsets of the labels, deltas."""
    cap = int(anchors_per_image * positive_fraction)
    for b in range(len(gt)):
        labels, best_gt = reference.rpn_labels(anchors, gt[b], ids[b], 0.7, 0.3)
        positive, negative = match[b] == 1, match[b] == 0
        assert set(np.unique(match[b])) <= {-1, 0, 1}
        assert positive.sum() == min(cap, (labels == 1).sum())
        assert positive.sum() + negative.sum() == anchors_per_image, "enough negatives to fill the sample"
        assert np.all(labels[positive] == 1) and np.all(labels[negative] == 0)
        expected = reference.encode(gt[b][best_gt[positive]], anchors[positive], STD)
        np.testing.assert_allclose(deltas[b][positive], expected, rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(deltas[b][~positive], 0.0)
        assert np.all(np.isfinite(deltas[b]))


def test_sampling_caps_and_zero_gt_image():
    anchors = generator_anchors()
    gt, ids = many_objects()
    labels, _ = reference.rpn_labels(anchors, gt[0], ids[0], 0.7, 0.3)
    assert (labels == 1).sum() == 15, "the case must exceed the positive cap of 8"
    layer = kml.layers.RPNTargetLayer(anchors_per_image=64, positive_fraction=0.125, seed=5)
    match, deltas = (to_numpy(o) for o in layer(anchors, gt, ids))
    check_any_draw(match, deltas, anchors, gt, ids, 64, 0.125)
    assert (match[0] == 1).sum() == 8
    # The image without objects: all 64 sampled anchors are negatives.
    assert (match[1] == 1).sum() == 0 and (match[1] == 0).sum() == 64
    np.testing.assert_array_equal(deltas[1], 0.0)


def test_compiled_draws_keep_the_invariants_and_spread():
    anchors = generator_anchors()
    gt, ids = many_objects()
    labels, _ = reference.rpn_labels(anchors, gt[0], ids[0], 0.7, 0.3)
    layer = kml.layers.RPNTargetLayer(anchors_per_image=64, positive_fraction=0.125, seed=5)
    # Anchors enter with their static shape (batch_shape), as in build_mask_rcnn.
    inputs = [keras.Input(batch_shape=anchors.shape), keras.Input((6, 4)), keras.Input((6,), dtype="int32")]
    model = keras.Model(inputs, layer(*inputs))
    model.compile(jit_compile=True)
    draws = []
    for _ in range(20):
        match, deltas = (to_numpy(o) for o in model.predict_on_batch([anchors, gt, ids]))
        draws.append(match[0] == 1)
        if len(draws) <= 2:
            assert match.shape == (2, len(anchors)) and match.dtype == np.int32
            assert deltas.shape == (2, len(anchors), 4) and deltas.dtype == np.float32
            check_any_draw(match, deltas, anchors, gt, ids, 64, 0.125)
    assert not np.array_equal(draws[0], draws[1]), "each call draws a new sample"
    # Over 20 draws every positive candidate of image 0 gets drawn at least
    # once (each of the 15 is kept with probability 8 / 15 per draw).
    np.testing.assert_array_equal(np.any(draws, axis=0), labels == 1)


def test_seed_makes_first_draws_repeatable():
    anchors = generator_anchors()
    gt, ids = many_objects()

    def first_draw(seed):
        return to_numpy(kml.layers.RPNTargetLayer(anchors_per_image=64, seed=seed)(anchors, gt, ids)[0])

    np.testing.assert_array_equal(first_draw(11), first_draw(11))
    assert not np.array_equal(first_draw(11), first_draw(12))
    clone = check_config_round_trip(kml.layers.RPNTargetLayer(anchors_per_image=64, seed=11))
    np.testing.assert_array_equal(to_numpy(clone(anchors, gt, ids)[0]), first_draw(11))


def test_bad_arguments():
    for kwargs, name in [
        ({"anchors_per_image": 0}, "anchors_per_image"),
        ({"anchors_per_image": 25.6}, "anchors_per_image"),
        ({"positive_fraction": 1.5}, "positive_fraction"),
        ({"positive_iou": -0.1}, "positive_iou"),
        ({"negative_iou": 2}, "negative_iou"),
        ({"negative_iou": 0.8, "positive_iou": 0.7}, "negative_iou"),
        ({"box_std": (0.1, 0.1, 0.2)}, "box_std"),
        ({"box_std": (0.1, 0.1, 0.2, 0.0)}, "box_std"),
        ({"seed": "x"}, "seed"),
        ({"seed": 1.5}, "seed"),
    ]:
        with pytest.raises(ValueError, match=name):
            kml.layers.RPNTargetLayer(**kwargs)


def test_scalar_box_std_raises_value_error():
    with pytest.raises(ValueError, match="box_std"):
        kml.layers.RPNTargetLayer(box_std=0.1)


def test_negative_seed_is_rejected_or_works_on_every_backend():
    try:
        layer = kml.layers.RPNTargetLayer(anchors_per_image=16, seed=-3)
    except ValueError as error:
        assert "seed" in str(error)
        return
    match = to_numpy(layer(HAND_ANCHORS, HAND_GT, HAND_IDS)[0])
    assert match[0].tolist() == HAND_LABELS


def test_bad_inputs():
    layer = kml.layers.RPNTargetLayer(anchors_per_image=16)
    with pytest.raises(ValueError, match=r"`anchors` must be \[A, 4\]"):
        layer(np.stack([HAND_ANCHORS] * 2), HAND_GT, HAND_IDS)
    with pytest.raises(ValueError, match="instance counts G"):
        layer(HAND_ANCHORS, HAND_GT, HAND_IDS[:, :2])
    with pytest.raises(ValueError, match="G = 0"):
        layer(HAND_ANCHORS, HAND_GT[:, :0], HAND_IDS[:, :0])
    xyxy = HAND_GT.copy()
    xyxy[0, 1] = [40, 60, 60, 40]
    with pytest.raises(ValueError, match="xyxy"):
        layer(HAND_ANCHORS, xyxy, HAND_IDS)
    nan = HAND_GT.copy()
    nan[1, 0, 2] = np.nan
    with pytest.raises(ValueError, match="gt_boxes"):
        layer(HAND_ANCHORS, nan, HAND_IDS)
    bad_anchors = HAND_ANCHORS.copy()
    bad_anchors[2, 0] = np.inf
    with pytest.raises(ValueError, match="anchors"):
        layer(bad_anchors, HAND_GT, HAND_IDS)

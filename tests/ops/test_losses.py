import math

import numpy as np

from keras_maskrcnn_layers.ops import losses
from tests.backend_utils import backend, grad, jit, to_numpy


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def test_rpn_class_loss_hand_value():
    match = np.array([[1, 0, -1, 1], [-1, 0, -1, -1]], "int32")
    logits = np.array([[2.0, -1.0, 5.0, 0.0], [9.0, 3.0, -9.0, 0.5]], "float32")
    # Used anchors: (0,0) positive, (0,1) negative, (0,3) positive, (1,1) negative.
    terms = [-math.log(sigmoid(2.0)), -math.log(1 - sigmoid(-1.0)), math.log(2.0), -math.log(1 - sigmoid(3.0))]
    np.testing.assert_allclose(float(to_numpy(losses.rpn_class_loss(match, logits))), np.mean(terms), rtol=1e-5)


def test_smooth_l1_and_rpn_box_loss_hand_values():
    x = np.array([-2.0, -0.5, 0.0, 0.5, 1.0, 3.0], "float32")
    # 0.5 x**2 below 1, |x| - 0.5 from 1 on (both give 0.5 at 1).
    np.testing.assert_allclose(to_numpy(losses.smooth_l1(x)), [1.5, 0.125, 0.0, 0.125, 0.5, 2.5], rtol=1e-6)
    match = np.array([[1, 0, 1, -1]], "int32")
    target = np.array([[[0.0, 1.0, 2.0, -1.0], [5, 5, 5, 5], [0.5, 0.5, 0.0, 0.0], [7, 7, 7, 7]]], "float32")
    pred = np.array([[[0.5, 1.0, 0.0, 0.0], [0, 0, 0, 0], [0.0, 0.0, 0.0, 3.0], [0, 0, 0, 0]]], "float32")
    # Positive anchors 0 and 2: diffs (-0.5, 0, 2, -1) and (0.5, 0.5, 0, -3).
    expected = (0.125 + 0 + 1.5 + 0.5 + 0.125 + 0.125 + 0 + 2.5) / 8
    np.testing.assert_allclose(float(to_numpy(losses.rpn_box_loss(match, target, pred))), expected, rtol=1e-6)


def test_head_class_loss_hand_value():
    ids = np.array([[2, 0, 1, 0]], "int32")
    logits = np.array([[[0.0, 0.0, math.log(2.0)], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 5.0, 0.0]]], "float32")
    valid = np.array([[True, True, True, False]])
    # Softmax CE: -log(2/4), -log(e/(e+2)), -log(1/3); the last row is padding.
    expected = (math.log(2.0) - math.log(math.e / (math.e + 2)) + math.log(3.0)) / 3
    out = float(to_numpy(losses.head_class_loss(ids, logits, valid)))
    np.testing.assert_allclose(out, expected, rtol=1e-5)


def test_head_box_loss_uses_the_true_class_deltas():
    ids = np.array([[2, 0, 1]], "int32")
    target = np.array([[[1.0, 0.0, 0.0, 0.0], [9, 9, 9, 9], [0.0, 0.0, 2.0, 0.0]]], "float32")
    pred = np.zeros((1, 3, 3, 4), "float32")
    pred[0, 0, 2] = [0.0, 0.0, 0.0, 0.5]  # class 2 of ROI 0
    pred[0, 0, 1] = [100, 100, 100, 100]  # other classes are ignored
    pred[0, 2, 1] = [0.0, 0.0, 0.0, 0.0]
    pred[0, 2, 2] = [50, 50, 50, 50]
    # ROI 0 diffs (1, 0, 0, -0.5); ROI 2 diffs (0, 0, 2, 0); ROI 1 is background.
    expected = (0.5 + 0 + 0 + 0.125 + 0 + 0 + 1.5 + 0) / 8
    np.testing.assert_allclose(float(to_numpy(losses.head_box_loss(ids, target, pred))), expected, rtol=1e-6)


def bce(p, t):
    p = min(max(p, 1e-7), 1 - 1e-7)
    return -(t * math.log(p) + (1 - t) * math.log(1 - p))


def test_mask_loss_picks_the_true_class_channel():
    ids = np.array([[1, 0, 2]], "int32")
    target = np.array([[[[1, 0], [0, 1]], [[1, 1], [1, 1]], [[0, 0], [1, 1]]]], "float32")
    pred = np.full((1, 3, 2, 2, 3), 0.5, "float32")
    pred[0, 0, :, :, 1] = [[0.9, 0.2], [0.4, 0.7]]
    pred[0, 2, :, :, 2] = [[0.1, 0.0], [0.8, 1.0]]  # 0 and 1 are clipped to 1e-7
    terms = [bce(p, t) for p, t in zip([0.9, 0.2, 0.4, 0.7], [1, 0, 0, 1])]
    terms += [bce(p, t) for p, t in zip([0.1, 0.0, 0.8, 1.0], [0, 0, 1, 1])]
    out = float(to_numpy(losses.mask_loss(ids, target, pred)))
    np.testing.assert_allclose(out, np.mean(terms), rtol=1e-4)


def test_mask_loss_class_agnostic_channel():
    ids = np.array([[3, 0]], "int32")
    target = np.array([[[[1, 0], [0, 1]], [[1, 1], [1, 1]]]], "float32")
    pred = np.full((1, 2, 2, 2, 1), 0.25, "float32")
    # Only ROI 0 counts, whatever its class: every pixel has p = 0.25.
    expected = np.mean([bce(0.25, t) for t in (1, 0, 0, 1)])
    np.testing.assert_allclose(float(to_numpy(losses.mask_loss(ids, target, pred))), expected, rtol=1e-5)


EMPTY = {
    "rpn_class": (losses.rpn_class_loss, [np.full((2, 5), -1, "int32"), np.ones((2, 5), "float32")], 1),
    "rpn_box": (
        losses.rpn_box_loss,
        [np.array([[0, -1, 0, 0, -1]] * 2, "int32"), np.ones((2, 5, 4), "float32"), np.zeros((2, 5, 4), "float32")],
        2,
    ),
    "head_class": (
        losses.head_class_loss,
        [np.ones((2, 3), "int32"), np.ones((2, 3, 4), "float32"), np.zeros((2, 3), bool)],
        1,
    ),
    "head_box": (
        losses.head_box_loss,
        [np.zeros((2, 3), "int32"), np.ones((2, 3, 4), "float32"), np.zeros((2, 3, 4, 4), "float32")],
        2,
    ),
    "mask": (
        losses.mask_loss,
        [np.zeros((2, 3), "int32"), np.ones((2, 3, 4, 4), "float32"), np.zeros((2, 3, 4, 4, 4), "float32")],
        2,
    ),
}


def test_empty_sets_give_exactly_zero_and_finite_gradients():
    # On JAX an eager gradient compiles every primitive on its own: one jit
    # per loss is several times faster there (and slower on TensorFlow).
    compiled = jit if backend() == "jax" else (lambda fn: fn)
    for name, (fn, args, pred_index) in EMPTY.items():
        assert float(to_numpy(fn(*args))) == 0.0, name

        def of_prediction(x, fn=fn, args=args, pred_index=pred_index):
            return fn(*args[:pred_index], x, *args[pred_index + 1 :])

        g = grad(compiled(of_prediction), args[pred_index])
        assert np.all(np.isfinite(g)) and np.all(g == 0), name


def test_losses_compile_to_the_same_values():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 3, size=(2, 6)).astype("int32")
    target = rng.normal(size=(2, 6, 4)).astype("float32")
    pred = rng.normal(size=(2, 6, 3, 4)).astype("float32")
    masks = (rng.uniform(size=(2, 6, 5, 5)) > 0.5).astype("float32")
    pred_masks = rng.uniform(size=(2, 6, 5, 5, 3)).astype("float32")
    for fn, args in [(losses.head_box_loss, (ids, target, pred)), (losses.mask_loss, (ids, masks, pred_masks))]:
        np.testing.assert_allclose(to_numpy(jit(fn)(*args)), to_numpy(fn(*args)), rtol=1e-5)

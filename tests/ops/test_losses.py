import math

import numpy as np
import pytest

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


# --- Slow NumPy references -------------------------------------------------
# Written from the definitions (Mask R-CNN, Sec. 3; Faster R-CNN, Sec. 3.1.2)
# with explicit per-element loops in float64, independent of the package. The
# anchor convention is the package's: `match` 1 positive, 0 negative, -1 not
# sampled (matterport's is 1 / -1 / 0; `RPNTargetLayer` documents this one).

MASK_EPS = 1e-7


def ref_log_sigmoid(x):
    """`log(1 / (1 + exp(-x)))` without overflow."""
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def ref_smooth_l1(d):
    return 0.5 * d * d if abs(d) < 1.0 else abs(d) - 0.5


def ref_mean(total, count):
    return total / count if count else 0.0


def ref_rpn_class_loss(match, logits):
    """Binary cross-entropy of sigmoid(logit) against `match == 1`, averaged over `match >= 0`."""
    total, count = 0.0, 0
    for b in range(match.shape[0]):
        for a in range(match.shape[1]):
            if match[b, a] < 0:
                continue
            x = float(logits[b, a])
            # -log p for positives, -log(1 - p) = -log sigmoid(-x) for negatives.
            total += -ref_log_sigmoid(x) if match[b, a] == 1 else -ref_log_sigmoid(-x)
            count += 1
    return ref_mean(total, count)


def ref_rpn_box_loss(match, target, pred):
    """Smooth L1 over the 4 coordinates of positive anchors, averaged over those coordinates."""
    total, count = 0.0, 0
    for b in range(match.shape[0]):
        for a in range(match.shape[1]):
            if match[b, a] != 1:
                continue
            for i in range(4):
                total += ref_smooth_l1(float(target[b, a, i]) - float(pred[b, a, i]))
                count += 1
    return ref_mean(total, count)


def ref_head_class_loss(ids, logits, valid):
    """Softmax cross-entropy `logsumexp(l) - l[true]`, averaged over valid ROIs."""
    total, count = 0.0, 0
    for b in range(ids.shape[0]):
        for t in range(ids.shape[1]):
            if not valid[b, t]:
                continue
            row = [float(v) for v in logits[b, t]]
            top = max(row)
            log_norm = top + math.log(sum(math.exp(v - top) for v in row))
            total += log_norm - row[int(ids[b, t])]
            count += 1
    return ref_mean(total, count)


def ref_head_box_loss(ids, target, pred):
    """Smooth L1 on the true class's 4 deltas of ROIs with class > 0, averaged over coordinates."""
    total, count = 0.0, 0
    for b in range(ids.shape[0]):
        for t in range(ids.shape[1]):
            k = int(ids[b, t])
            if k <= 0:
                continue
            for i in range(4):
                total += ref_smooth_l1(float(target[b, t, i]) - float(pred[b, t, k, i]))
                count += 1
    return ref_mean(total, count)


def ref_mask_loss(ids, target, pred, high=1.0 - MASK_EPS):
    """Per-pixel BCE of the true class's mask (the only one with `K = 1`) of ROIs with class > 0.

    Probabilities are clipped to `[1e-7, high]`; the op clips in float32,
    where `1 - 1e-7` rounds to `1 - 2**-23`, which a caller passes as `high`.
    """
    total, count = 0.0, 0
    classes = pred.shape[-1]
    for b in range(ids.shape[0]):
        for t in range(ids.shape[1]):
            k = int(ids[b, t])
            if k <= 0:
                continue
            channel = 0 if classes == 1 else k
            for y in range(target.shape[2]):
                for x in range(target.shape[3]):
                    p = min(max(float(pred[b, t, y, x, channel]), MASK_EPS), high)
                    z = float(target[b, t, y, x])
                    total += -(z * math.log(p) + (1.0 - z) * math.log(1.0 - p))
                    count += 1
    return ref_mean(total, count)


def test_references_on_hand_values():
    # The references themselves, on cases small enough to do by hand.
    assert ref_rpn_class_loss(np.array([[1, 0, -1]]), np.array([[0.0, 0.0, 7.0]])) == math.log(2.0)
    assert ref_rpn_box_loss(np.array([[1, 0]]), np.array([[[2.0, 0.5, 0, 0]] * 2]), np.zeros((1, 2, 4))) == 1.625 / 4
    assert ref_head_class_loss(np.array([[1, 0]]), np.zeros((1, 2, 4)), np.array([[True, False]])) == math.log(4.0)
    pred = np.zeros((1, 2, 3, 4))
    pred[0, 0, 2] = [0.0, 0.0, 3.0, 0.0]
    assert ref_head_box_loss(np.array([[2, 0]]), np.ones((1, 2, 4)), pred) == (0.5 + 0.5 + 1.5 + 0.5) / 4
    masks = np.full((1, 2, 1, 2, 3), 0.5)
    masks[0, 0, 0, :, 1] = [0.25, 0.0]
    expected = (-math.log(0.25) - math.log(1.0 - MASK_EPS)) / 2
    assert ref_mask_loss(np.array([[1, 0]]), np.array([[[[1.0, 0.0]], [[1.0, 1.0]]]]), masks) == expected


# --- Random inputs ----------------------------------------------------------
# `case`: "mixed" (every kind of element), "no_positive" (negatives, ignored
# anchors, background and padding ROIs only), "all_positive" and "empty"
# (nothing counted at all: the loss is 0).
CASES = ["mixed", "no_positive", "all_positive", "empty"]
SEEDS = [0, 1, 2]
# Shapes by seed, shared by the cases: eager JAX compiles each primitive once per shape.
RPN_SHAPES = [(1, 3), (2, 17), (3, 39)]
HEAD_SHAPES = [(1, 2, 2, 1, 1), (2, 7, 3, 3, 5), (3, 11, 5, 4, 2)]  # batch, rois, classes, h, w


def random_logits(rng, shape):
    """Mostly moderate logits, with a few large ones (saturated sigmoids / softmaxes)."""
    x = rng.normal(scale=2.0, size=shape)
    big = rng.uniform(size=shape) < 0.1
    x[big] = rng.choice([-1.0, 1.0], size=int(big.sum())) * rng.uniform(8.0, 15.0, size=int(big.sum()))
    return x.astype("float32")


def random_match(rng, shape, case):
    choices = {"mixed": [1, 0, -1], "no_positive": [0, -1], "all_positive": [1], "empty": [-1]}[case]
    match = rng.choice(choices, size=shape).astype("int32")
    if case == "mixed":
        match.flat[:3] = [1, 0, -1]
    return match


def random_class_ids(rng, shape, classes, case):
    """Class ids in `0..K-1` (0 background or padding)."""
    if case == "mixed":
        ids = rng.integers(0, classes, size=shape)
        ids.flat[:2] = [0, classes - 1]
    elif case == "all_positive":
        ids = rng.integers(1, classes, size=shape)
    else:
        ids = np.zeros(shape, int)
    return ids.astype("int32")


def random_deltas(rng, shape, scale=1.5):
    """Deltas whose differences fall on both sides of smooth L1's knee at 1."""
    return rng.normal(scale=scale, size=shape).astype("float32")


def away_from_knee(target, pred, margin=0.02):
    """`pred` moved so that no `|target - pred|` lies within `margin` of 1 (the knee of smooth L1)."""
    diff = target.astype(np.float64) - pred
    near = np.abs(np.abs(diff) - 1.0) < margin
    return np.where(near, pred - np.sign(diff) * 4 * margin, pred).astype("float32")


def random_masks(rng, shape, low=1e-3):
    target = (rng.uniform(size=shape[:-1]) > 0.5).astype("float32")
    pred = rng.uniform(low, 1.0 - low, size=shape).astype("float32")
    return target, pred


def assert_loss_close(out, expected):
    out = float(to_numpy(out))
    if expected == 0.0:
        assert out == 0.0
    else:
        np.testing.assert_allclose(out, expected, rtol=1e-5)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("case", CASES)
def test_rpn_losses_match_the_reference(case, seed):
    rng = np.random.default_rng([seed, CASES.index(case), 1])
    shape = RPN_SHAPES[seed]
    match = random_match(rng, shape, case)
    logits = random_logits(rng, shape)
    target, pred = random_deltas(rng, (*shape, 4)), random_deltas(rng, (*shape, 4))
    assert_loss_close(losses.rpn_class_loss(match, logits), ref_rpn_class_loss(match, logits))
    assert_loss_close(losses.rpn_box_loss(match, target, pred), ref_rpn_box_loss(match, target, pred))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("case", CASES)
def test_head_losses_match_the_reference(case, seed):
    rng = np.random.default_rng([seed, CASES.index(case), 2])
    batch, rois, classes, h, w = HEAD_SHAPES[seed]
    ids = random_class_ids(rng, (batch, rois), classes, case)
    # head_class counts valid ROIs whatever their class; "empty" has none, the
    # other cases mix real ROIs with padding rows (garbage ids and logits).
    valid = rng.uniform(size=(batch, rois)) < (0.0 if case == "empty" else 0.75)
    if case != "empty":
        valid.flat[0] = True
    logits = random_logits(rng, (batch, rois, classes))
    assert_loss_close(losses.head_class_loss(ids, logits, valid), ref_head_class_loss(ids, logits, valid))

    target, pred = random_deltas(rng, (batch, rois, 4)), random_deltas(rng, (batch, rois, classes, 4))
    assert_loss_close(losses.head_box_loss(ids, target, pred), ref_head_box_loss(ids, target, pred))

    for channels in (classes, 1):  # per-class and class-agnostic mask heads
        target_masks, pred_masks = random_masks(rng, (batch, rois, h, w, channels))
        out = losses.mask_loss(ids, target_masks, pred_masks)
        assert_loss_close(out, ref_mask_loss(ids, target_masks, pred_masks))


def test_mask_loss_saturated_probabilities_match_the_clipped_reference():
    rng = np.random.default_rng(7)
    ids = np.array([[1, 2, 0, 2], [0, 0, 1, 1]], "int32")
    target, pred = random_masks(rng, (2, 4, 3, 3, 3))
    # Exact 0 and 1 (and values beyond the clip) against both targets.
    pred[rng.uniform(size=pred.shape) < 0.3] = 0.0
    pred[rng.uniform(size=pred.shape) < 0.3] = 1.0
    pred[0, 0, 0, 0, 1], pred[0, 1, 0, 0, 2] = 1e-9, 1.0 - 1e-9
    high = float(np.float32(1.0) - np.float32(MASK_EPS))  # the op's upper clip in float32
    assert_loss_close(losses.mask_loss(ids, target, pred), ref_mask_loss(ids, target, pred, high=high))
    # Clipped pixels pass no gradient, and none is NaN or infinite.
    compiled = jit if backend() == "jax" else (lambda fn: fn)
    g = grad(compiled(lambda p: losses.mask_loss(ids, target, p)), pred)
    assert np.all(np.isfinite(g))
    assert np.all(g[(pred < MASK_EPS) | (pred > high)] == 0)


# --- Gradients against central finite differences of the references --------


def finite_differences(fn, x, step=1e-6):
    """Central differences of the float64 scalar `fn(x)` with respect to every element of `x`."""
    x = x.astype(np.float64)
    out = np.zeros_like(x)
    for i in range(x.size):
        plus, minus = x.copy(), x.copy()
        plus.flat[i] += step
        minus.flat[i] -= step
        out.flat[i] = (fn(plus) - fn(minus)) / (2 * step)
    return out


def op_gradient(fn, x):
    # On JAX an eager gradient compiles every primitive on its own; one jit is faster.
    compiled = jit if backend() == "jax" else (lambda f: f)
    return grad(compiled(fn), x)


def assert_gradient_matches(actual, expected):
    """Elementwise within 1e-5 relative, plus 1e-5 of the largest entry (float32 op vs float64 FD)."""
    scale = np.abs(expected).max()
    assert scale > 0, "a vanishing reference gradient tests nothing"
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * scale)
    # What the loss does not count gets exactly no gradient.
    assert np.all(actual[expected == 0] == 0)


@pytest.mark.parametrize("seed", [0, 1])
def test_rpn_class_loss_gradient(seed):
    rng = np.random.default_rng([seed, 10])
    match = random_match(rng, (2, 9), "mixed")
    logits = random_logits(rng, (2, 9))
    expected = finite_differences(lambda x: ref_rpn_class_loss(match, x), logits)
    assert_gradient_matches(op_gradient(lambda x: losses.rpn_class_loss(match, x), logits), expected)


@pytest.mark.parametrize("seed", [0, 1])
def test_rpn_box_loss_gradient(seed):
    rng = np.random.default_rng([seed, 11])
    match = random_match(rng, (2, 7), "mixed")
    target = random_deltas(rng, (2, 7, 4))
    pred = away_from_knee(target, random_deltas(rng, (2, 7, 4)))
    expected = finite_differences(lambda x: ref_rpn_box_loss(match, target, x), pred)
    assert_gradient_matches(op_gradient(lambda x: losses.rpn_box_loss(match, target, x), pred), expected)


@pytest.mark.parametrize("seed", [0, 1])
def test_head_class_loss_gradient(seed):
    rng = np.random.default_rng([seed, 12])
    ids = random_class_ids(rng, (2, 5), 4, "mixed")
    valid = rng.uniform(size=(2, 5)) < 0.7
    valid[0, 0], valid[1, -1] = True, False
    logits = random_logits(rng, (2, 5, 4))
    expected = finite_differences(lambda x: ref_head_class_loss(ids, x, valid), logits)
    out = op_gradient(lambda x: losses.head_class_loss(ids, x, valid), logits)
    assert_gradient_matches(out, expected)


@pytest.mark.parametrize("seed", [0, 1])
def test_head_box_loss_gradient(seed):
    rng = np.random.default_rng([seed, 13])
    ids = random_class_ids(rng, (2, 5), 3, "mixed")
    target = random_deltas(rng, (2, 5, 4))
    pred = random_deltas(rng, (2, 5, 3, 4))
    pred = away_from_knee(target[:, :, None, :], pred)
    expected = finite_differences(lambda x: ref_head_box_loss(ids, target, x), pred)
    assert_gradient_matches(op_gradient(lambda x: losses.head_box_loss(ids, target, x), pred), expected)


@pytest.mark.parametrize("channels", [3, 1])
def test_mask_loss_gradient(channels):
    rng = np.random.default_rng([channels, 14])
    ids = random_class_ids(rng, (2, 4), 3, "mixed")
    # Probabilities well inside (1e-7, 1 - 1e-7): the step never reaches the clip.
    target, pred = random_masks(rng, (2, 4, 3, 3, channels), low=0.02)
    expected = finite_differences(lambda x: ref_mask_loss(ids, target, x), pred)
    assert_gradient_matches(op_gradient(lambda x: losses.mask_loss(ids, target, x), pred), expected)

import importlib

import keras
import numpy as np
import pytest

from keras_maskrcnn_layers import ops as kml_ops
from tests import reference
from tests.backend_utils import grad, jit, to_numpy


# The module, not the `roi_align` function that `ops` re-exports under its name.
roi_align_module = importlib.import_module("keras_maskrcnn_layers.ops.roi_align")


def ramp(height, width, channels=1, batch=1):
    """f[b, y, x, c] = 4y + x + 1 + 100c + 1000b: bilinear sampling of it is exact inside the map."""
    y = np.arange(height)[None, :, None, None]
    x = np.arange(width)[None, None, :, None]
    c = np.arange(channels)[None, None, None, :]
    b = np.arange(batch)[:, None, None, None]
    return (4.0 * y + x + 1.0 + 100.0 * c + 1000.0 * b).astype("float32")


def align(features, boxes, **kwargs):
    return to_numpy(kml_ops.roi_align(features, np.asarray(boxes, "float32")[None], **kwargs))[0]


# === Hand-computed grids ===


@pytest.mark.parametrize(
    "box, pool, sampling_ratio, expected",
    [
        # aligned=True: the box shifts by half a pixel; sample (0.5, 0.5) of f = 4y + x + 1.
        ((0, 0, 2, 2), 1, 1, [[3.5]]),
        # 2x2 bins of side 2 starting at -0.5: samples at 0.5 and 2.5 per axis.
        ((0, 0, 4, 4), 2, 1, [[3.5, 5.5], [11.5, 13.5]]),
        # Two samples per axis per bin average to the bin centre on a ramp.
        ((0, 0, 4, 4), 2, 2, [[3.5, 5.5], [11.5, 13.5]]),
        # Sample at y = x = -0.5 is in range and clamps to pixel (0, 0).
        ((0, 0, 0, 0), 1, 1, [[1.0]]),
        # Past the last row and column: (3.5, 3.5) reads pixel (3, 3), no extrapolation.
        ((3, 3, 5, 5), 1, 1, [[16.0]]),
        # Fully outside: every sample has y < -1, so the bin is 0.
        ((-10, -10, -4, -4), 1, 1, [[0.0]]),
    ],
)
def test_hand_computed_aligned(box, pool, sampling_ratio, expected):
    out = align(ramp(4, 4), [box], output_size=pool, sampling_ratio=sampling_ratio, aligned=True)
    np.testing.assert_allclose(out[0, ..., 0], expected, atol=1e-5)


@pytest.mark.parametrize(
    "box, pool, sampling_ratio, expected",
    [
        # aligned=False: no shift; sample at the box centre (1, 1).
        ((0, 0, 2, 2), 1, 1, [[6.0]]),
        # Bins of side 1 from (1, 1); 2x2 samples average to bin centres 1.5 and 2.5.
        ((1, 1, 3, 3), 2, 2, [[8.5, 9.5], [12.5, 13.5]]),
        # A 0.5 px box is clamped to 1 px: sample at (0.5, 0.5).
        ((0, 0, 0.5, 0.5), 1, 1, [[3.5]]),
        # Zero-area box, clamped to 1 px starting at (2, 2): sample (2.5, 2.5).
        ((2, 2, 2, 2), 1, 1, [[13.5]]),
        # y = -0.5 lies in [-1, 0): clamped to row 0.
        ((-1, -1, 0, 0), 1, 1, [[1.0]]),
        # y = -1.5 < -1: contributes 0.
        ((-2, -2, -1, -1), 1, 1, [[0.0]]),
    ],
)
def test_hand_computed_not_aligned(box, pool, sampling_ratio, expected):
    out = align(ramp(4, 4), [box], output_size=pool, sampling_ratio=sampling_ratio, aligned=False)
    np.testing.assert_allclose(out[0, ..., 0], expected, atol=1e-5)


def test_spatial_scale_maps_pixels_to_the_map():
    # Box (0, 0, 8, 8) at stride 4 is (0, 0, 2, 2) on the map.
    out = align(ramp(4, 4), [(0, 0, 8, 8)], output_size=1, sampling_ratio=1, aligned=False, spatial_scale=0.25)
    np.testing.assert_allclose(out[0, 0, 0, 0], 6.0, atol=1e-5)


# === Against the NumPy reference ===


def random_boxes(rng, batch, count, extent):
    """Boxes inside, across the border, fully outside, and of zero area."""
    centres = rng.uniform(-0.3 * extent, 1.3 * extent, size=(batch, count, 2))
    sides = np.exp(rng.uniform(np.log(0.5), np.log(extent), size=(batch, count, 2)))
    sides[:, ::7] = 0.0
    boxes = np.concatenate([centres - sides / 2, centres + sides / 2], axis=-1)
    return boxes[..., [0, 1, 2, 3]].astype("float32")


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio, pool", [(1, (3, 3)), (2, (4, 3)), (3, (2, 5))])
def test_single_level_matches_reference(aligned, sampling_ratio, pool):
    rng = np.random.default_rng(sampling_ratio)
    features = rng.normal(size=(2, 9, 11, 3)).astype("float32")
    boxes = random_boxes(rng, 2, 12, extent=40.0)
    out = to_numpy(
        kml_ops.roi_align(
            features, boxes, output_size=pool, spatial_scale=0.25, sampling_ratio=sampling_ratio, aligned=aligned
        )
    )
    expected = reference.roi_align(features, boxes, pool, 0.25, sampling_ratio, aligned)
    np.testing.assert_allclose(out, expected, atol=1e-4, rtol=1e-4)


def pyramid_and_boxes(rng, count, channels, image=256):
    """P2..P5 of a square image, batch 2, and `count` boxes per image.

    Sides log-uniform over 4..600 px reach every level; some cross the
    border or lie outside.
    """
    features = [rng.normal(size=(2, image // 2**lvl, image // 2**lvl, channels)).astype("float32") for lvl in (2, 3, 4, 5)]
    centres = rng.uniform(-40, image + 40, size=(2, count, 2))
    sides = np.exp(rng.uniform(np.log(4), np.log(600), size=(2, count, 2)))
    return features, np.concatenate([centres - sides / 2, centres + sides / 2], axis=-1).astype("float32")


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [1, 2])
def test_multilevel_matches_reference_on_every_level(aligned, sampling_ratio):
    features, boxes = pyramid_and_boxes(np.random.default_rng(7), 40, 4)
    boxes[:, 3] = 0.0  # padding rows
    boxes[:, 5] = (30, 30, 30, 30)  # zero area
    boxes[:, 6] = (-300, -300, -280, -250)  # fully outside
    boxes[:, 7] = (-100, -50, 420, 400)  # level 5, crossing every border
    levels = [reference.fpn_level(b, 2, 5) for b in boxes.reshape(-1, 4).astype(np.float64)]
    assert set(levels) == {2, 3, 4, 5}, "the test boxes should cover every level"
    out = to_numpy(kml_ops.multilevel_roi_align(features, boxes, 5, sampling_ratio=sampling_ratio, aligned=aligned))
    expected = reference.multilevel_roi_align(features, boxes, (5, 5), sampling_ratio, aligned)
    np.testing.assert_allclose(out, expected, atol=1e-4, rtol=1e-4)
    assert np.all(out[:, 3] == 0.0)


def test_assign_fpn_levels_boundaries():
    boxes = np.array(
        [
            [0, 0, 224, 224],  # exactly canonical -> 4
            [0, 0, 223.9, 224],  # just below -> 3
            [0, 0, 112, 112],  # exactly half -> 3
            [0, 0, 448, 448],  # exactly double -> 5
            [0, 0, 1, 1],  # tiny -> clamped to 2
            [0, 0, 2000, 2000],  # huge -> clamped to 5
            [5, 5, 5, 5],  # zero area -> 2
        ],
        "float32",
    )
    levels = to_numpy(kml_ops.assign_fpn_levels(boxes)).tolist()
    assert levels == [4, 3, 3, 5, 2, 5, 2]
    assert to_numpy(kml_ops.assign_fpn_levels(boxes, min_level=3, max_level=6)).tolist() == [4, 3, 3, 5, 3, 6, 3]


def test_assign_fpn_levels_matches_formula_on_random_boxes():
    rng = np.random.default_rng(3)
    boxes = random_boxes(rng, 1, 300, extent=1200.0)[0]
    expected = [reference.fpn_level(b, 2, 5) for b in boxes.astype(np.float64)]
    assert to_numpy(kml_ops.assign_fpn_levels(boxes)).tolist() == expected


# === Compiled, dtypes, gradients ===


def test_xla_equals_eager():
    rng = np.random.default_rng(0)
    features = [rng.normal(size=(2, 64 // 2**lvl, 64 // 2**lvl, 3)).astype("float32") for lvl in (2, 3, 4, 5)]
    boxes = random_boxes(rng, 2, 20, extent=64.0)

    def fn(f2, f3, f4, f5, b):
        return kml_ops.multilevel_roi_align([f2, f3, f4, f5], b, (7, 7))

    eager = to_numpy(fn(*features, boxes))
    compiled = to_numpy(jit(fn)(*features, boxes))
    np.testing.assert_allclose(compiled, eager, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_features(dtype):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(1, 8, 8, 2)).astype("float32")
    boxes = random_boxes(rng, 1, 6, extent=8.0)
    low = kml_ops.roi_align(keras.ops.cast(features, dtype), boxes, 3)
    assert keras.backend.standardize_dtype(low.dtype) == dtype
    full = to_numpy(kml_ops.roi_align(features, boxes, 3))
    np.testing.assert_allclose(to_numpy(keras.ops.cast(low, "float32")), full, atol=0.05)


@pytest.mark.parametrize("aligned", [True, False])
def test_gradient_matches_finite_differences(aligned):
    rng = np.random.default_rng(1)
    features = rng.normal(size=(2, 5, 6, 2)).astype("float32")
    boxes = np.array(
        [[[0.5, 1.0, 4.0, 5.5], [-1.0, 2.0, 3.0, 7.0], [2.0, 2.0, 2.0, 2.0]], [[1.2, 0.3, 4.8, 3.3], [0, 0, 6, 6], [3, 4, 9, 9]]],
        "float32",
    )
    upstream = rng.normal(size=(2, 3, 2, 3, 2)).astype("float32")

    def loss(f):
        out = kml_ops.roi_align(f, boxes, (2, 3), sampling_ratio=2, aligned=aligned)
        return keras.ops.sum(out * upstream)

    analytic = grad(loss, features)
    numeric = np.zeros_like(features, dtype=np.float64)
    # ROI Align is linear in the features, so a central difference with a
    # step of 1 is exact up to float32 rounding.
    for index in np.ndindex(features.shape):
        plus, minus = features.copy(), features.copy()
        plus[index] += 1.0
        minus[index] -= 1.0
        numeric[index] = (float(to_numpy(loss(plus))) - float(to_numpy(loss(minus)))) / 2.0
    np.testing.assert_allclose(analytic, numeric, atol=2e-3, rtol=1e-3)
    assert np.any(analytic != 0)


def test_no_gradient_flows_to_boxes():
    features = np.ones((1, 4, 4, 1), "float32")
    boxes = np.array([[[0.5, 0.5, 2.5, 3.0]]], "float32")

    def loss(b):
        return keras.ops.sum(kml_ops.roi_align(features * np.arange(16).reshape(1, 4, 4, 1), b, 2))

    assert np.all(grad(loss, boxes) == 0)


# === Bad arguments ===


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"output_size": 0}, "output_size"),
        ({"output_size": -3}, "output_size"),
        ({"output_size": (7, 0)}, "output_size"),
        ({"output_size": (7, 7, 7)}, "output_size"),
        ({"output_size": 7, "sampling_ratio": 0}, "sampling_ratio"),
        ({"output_size": 7, "sampling_ratio": 1.5}, "sampling_ratio"),
        ({"output_size": 7, "spatial_scale": 0.0}, "spatial_scale"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, name):
    with pytest.raises(ValueError, match=name):
        kml_ops.roi_align(np.zeros((1, 4, 4, 1), "float32"), np.zeros((1, 1, 4), "float32"), **kwargs)


def test_bad_shapes():
    with pytest.raises(ValueError, match="boxes"):
        kml_ops.roi_align(np.zeros((1, 4, 4, 1), "float32"), np.zeros((1, 4), "float32"), 2)
    with pytest.raises(ValueError, match="features"):
        kml_ops.multilevel_roi_align([np.zeros((1, 4, 4, 1), "float32")] * 3, np.zeros((1, 1, 4), "float32"), 2)
    with pytest.raises(ValueError, match="min_level"):
        kml_ops.assign_fpn_levels(np.zeros((1, 4)), min_level=-1)
    with pytest.raises(ValueError, match="max_level"):
        kml_ops.assign_fpn_levels(np.zeros((1, 4)), min_level=5, max_level=2)


# === A pyramid flattened once ===


def test_flatten_pyramid_by_hand():
    maps = [np.arange(8, dtype="float32").reshape(2, 2, 2, 1), 10 + np.arange(2, dtype="float32").reshape(2, 1, 1, 1)]
    table = to_numpy(kml_ops.flatten_pyramid(maps))
    # Image 0: its 2 x 2 map row-major, then its 1 x 1 map; likewise image 1.
    np.testing.assert_array_equal(table[..., 0], [[0, 1, 2, 3, 10], [4, 5, 6, 7, 11]])


def test_flat_features_give_the_same_pooling():
    rng = np.random.default_rng(12)
    features = [rng.normal(size=(2, 96 // 2**lvl, 64 // 2**lvl, 3)).astype("float32") for lvl in (2, 3, 4, 5)]
    boxes = random_boxes(rng, 2, 30, extent=96.0)
    table = kml_ops.flatten_pyramid(features)
    for pool, sampling_ratio, aligned in (((5, 5), 2, True), ((4, 6), 1, False)):
        expected = reference.multilevel_roi_align(features, boxes, pool, sampling_ratio, aligned)
        out = kml_ops.multilevel_roi_align(
            features, boxes, pool, sampling_ratio=sampling_ratio, aligned=aligned, flat_features=table
        )
        np.testing.assert_allclose(to_numpy(out), expected, atol=1e-4, rtol=1e-4)

    def fn(f2, f3, f4, f5, flat, b):
        return kml_ops.multilevel_roi_align([f2, f3, f4, f5], b, 5, flat_features=flat)

    eager = to_numpy(fn(*features, table, boxes))
    np.testing.assert_allclose(to_numpy(jit(fn)(*features, table, boxes)), eager, atol=1e-5)


def test_flat_features_gradient_is_the_maps_gradient_flattened():
    rng = np.random.default_rng(13)
    features = [rng.normal(size=(2, 64 // 2**lvl, 64 // 2**lvl, 2)).astype("float32") for lvl in (2, 3, 4, 5)]
    boxes = random_boxes(rng, 2, 12, extent=64.0)
    boxes[:, 0] = (-200, -200, 300, 300)  # level 5
    boxes[:, 1] = (0, 0, 150, 150)  # level 3
    upstream = rng.normal(size=(2, 12, 3, 3, 2)).astype("float32")
    table = to_numpy(kml_ops.flatten_pyramid(features))

    def from_table(t):
        return keras.ops.sum(kml_ops.multilevel_roi_align(features, boxes, 3, flat_features=t) * upstream)

    table_grad = grad(from_table, table)
    start = 0
    for level, f in enumerate(features):

        def from_map(x, level=level):
            maps = [x if i == level else m for i, m in enumerate(features)]
            return keras.ops.sum(kml_ops.multilevel_roi_align(maps, boxes, 3) * upstream)

        rows = f.shape[1] * f.shape[2]
        part = table_grad[:, start : start + rows].reshape(f.shape)
        np.testing.assert_allclose(part, grad(from_map, f), atol=1e-5)
        start += rows
    assert np.any(table_grad[:, :256] != 0) and np.any(table_grad[:, -4:] != 0), "P2 and P5 both get gradients"


def test_flat_features_must_match_the_maps():
    rng = np.random.default_rng(14)
    features = [rng.normal(size=(1, 32 // 2**lvl, 32 // 2**lvl, 3)).astype("float32") for lvl in (2, 3, 4, 5)]
    boxes = random_boxes(rng, 1, 4, extent=32.0)
    table = to_numpy(kml_ops.flatten_pyramid(features))
    with pytest.raises(ValueError, match="one row per map cell: 85 rows"):
        kml_ops.multilevel_roi_align(features, boxes, 2, flat_features=table[:, :-1])
    with pytest.raises(ValueError, match=r"\[B, T, 3\]"):
        kml_ops.multilevel_roi_align(features, boxes, 2, flat_features=table[..., :2])
    with pytest.raises(ValueError, match=r"\[B, T, 3\]"):
        kml_ops.multilevel_roi_align(features, boxes, 2, flat_features=table[0])
    with pytest.raises(ValueError, match="list"):
        kml_ops.flatten_pyramid(features[0])
    with pytest.raises(ValueError, match="at least one map"):
        kml_ops.flatten_pyramid([])


# === The first map read in place ===


@pytest.fixture
def flattened(monkeypatch):
    """Records the number of maps in every table that the multilevel forward builds."""
    calls = []
    flatten = roi_align_module.flatten_pyramid

    def counting(features):
        calls.append(len(features))
        return flatten(features)

    monkeypatch.setattr(roi_align_module, "flatten_pyramid", counting)
    return calls


def test_first_map_read_in_place_with_one_sample_per_bin(flattened):
    """Given the maps, `sampling_ratio=1` copies P3..P5 only; 2 copies the whole pyramid."""
    rng = np.random.default_rng(15)
    features = [rng.normal(size=(2, 128 // 2**lvl, 96 // 2**lvl, 3)).astype("float32") for lvl in (2, 3, 4, 5)]
    boxes = random_boxes(rng, 2, 40, extent=128.0)
    boxes[:, 0] = (-200, -200, 400, 400)  # level 5
    boxes[:, 1] = (10, 10, 30, 40)  # level 2
    table = kml_ops.flatten_pyramid(features)
    flattened.clear()
    for sampling_ratio, tables in ((1, [3]), (2, [4])):
        expected = reference.multilevel_roi_align(features, boxes, (3, 4), sampling_ratio, True)
        out = to_numpy(kml_ops.multilevel_roi_align(features, boxes, (3, 4), sampling_ratio=sampling_ratio))
        assert flattened == tables
        np.testing.assert_allclose(out, expected, atol=1e-4, rtol=1e-4)
        from_table = kml_ops.multilevel_roi_align(
            features, boxes, (3, 4), sampling_ratio=sampling_ratio, flat_features=table
        )
        np.testing.assert_allclose(out, to_numpy(from_table), atol=1e-6)
        flattened.clear()

    def fn(f2, f3, f4, f5, b):
        return kml_ops.multilevel_roi_align([f2, f3, f4, f5], b, (3, 4), sampling_ratio=1)

    eager = to_numpy(fn(*features, boxes))
    np.testing.assert_allclose(to_numpy(jit(fn)(*features, boxes)), eager, atol=1e-5)
    assert flattened and set(flattened) == {3}


@pytest.mark.parametrize("limit, sampling_ratio", [(0, 1), (3, 2), (3, 3)])
def test_either_forward_layout_at_any_sampling_ratio(monkeypatch, flattened, limit, sampling_ratio):
    """The layout the default does not take at this sampling ratio matches the reference too."""
    monkeypatch.setattr(roi_align_module, "FIRST_MAP_IN_PLACE_MAX_SAMPLING_RATIO", limit)
    features, boxes = pyramid_and_boxes(np.random.default_rng(16 + sampling_ratio), 30, 2)
    boxes[:, 2] = 0.0  # padding rows
    for aligned in (True, False):
        out = kml_ops.multilevel_roi_align(features, boxes, (4, 3), sampling_ratio=sampling_ratio, aligned=aligned)
        expected = reference.multilevel_roi_align(features, boxes, (4, 3), sampling_ratio, aligned)
        np.testing.assert_allclose(to_numpy(out), expected, atol=1e-4, rtol=1e-4)
        assert np.all(to_numpy(out)[:, 2] == 0.0)
    assert set(flattened) == ({4} if limit < sampling_ratio else {3})


def test_first_map_in_place_keeps_a_nan_where_it_is(flattened):
    """Boxes of one source read row 0 of the other; a NaN there must not reach them."""
    features = [np.ones((1, 256 // 2**lvl, 256 // 2**lvl, 2), "float32") for lvl in (2, 3, 4, 5)]
    features[0][0, 0, 0] = np.nan  # row 0 of P2
    features[1][0, 0, 0] = np.nan  # row 0 of the table of P3..P5
    boxes = np.array(
        [[[100, 100, 130, 130], [20, 20, 140, 140], [10, 10, 250, 250], [-100, -100, 400, 400], [0, 0, 20, 20], [-8, -8, 104, 104]]],
        "float32",
    )
    levels = [reference.fpn_level(b, 2, 5) for b in boxes[0].astype(np.float64)]
    assert levels == [2, 3, 4, 5, 2, 3]
    out = to_numpy(jit(lambda *m: kml_ops.multilevel_roi_align(list(m), boxes, 3, sampling_ratio=1))(*features))
    assert flattened == [3], "the first map must be read in place"
    # Away from the NaNs: finite, every level.
    assert np.isfinite(out[0, :4]).all()
    np.testing.assert_allclose(out[0, :3], 1.0)
    # From the corner of P2 and of P3, which hold them.
    assert np.isnan(out[0, 4]).any() and np.isnan(out[0, 5]).any()

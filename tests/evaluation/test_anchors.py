"""Anchor coverage against every anchor of `AnchorGenerator`, and suggestions with known answers."""

import numpy as np
import pytest

import keras_maskrcnn_layers as kml
from keras_maskrcnn_layers.evaluation import AnchorSuggestion, anchor_coverage, suggest_anchor_scales

STRIDES = (4, 8, 16, 32, 64)


def iou_matrix(boxes, anchors):
    boxes, anchors = np.asarray(boxes, np.float64)[:, None], np.asarray(anchors, np.float64)[None]
    inter_h = np.clip(np.minimum(boxes[..., 2], anchors[..., 2]) - np.maximum(boxes[..., 0], anchors[..., 0]), 0, None)
    inter_w = np.clip(np.minimum(boxes[..., 3], anchors[..., 3]) - np.maximum(boxes[..., 1], anchors[..., 1]), 0, None)
    inter = inter_h * inter_w
    area_b = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    area_a = (anchors[..., 2] - anchors[..., 0]) * (anchors[..., 3] - anchors[..., 1])
    return inter / (area_b + area_a - inter)


def brute_force(boxes, **settings):
    """Best IoU over every anchor the layer builds."""
    image_shape = settings.pop("image_shape")
    anchors = kml.AnchorGenerator(**settings).anchors_numpy(image_shape)
    return iou_matrix(boxes, anchors).max(axis=1)


def random_boxes(rng, count, height, width):
    cy, cx = rng.uniform(-10, height + 10, count), rng.uniform(-10, width + 10, count)
    h, w = np.exp(rng.uniform(np.log(2), np.log(150), (2, count)))
    return np.stack([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2], axis=1)


@pytest.mark.parametrize(
    "settings",
    [
        dict(scales=(8, 16, 32, 64, 128), ratios=(0.5, 1.0, 2.0), strides=STRIDES, image_shape=(128, 128)),
        dict(scales=(32, 64, 128, 256, 512), ratios=(1.0,), strides=STRIDES, image_shape=(100, 72), offset=0.5),
        dict(scales=((8, 12), (16, 24), (32, 48)), ratios=(1 / 3, 1.0, 3.0), strides=(8, 16, 32),
             image_shape=(90, 130), anchor_stride=2),
        dict(scales=(10, 40), ratios=(0.7, 1.6), strides=(6, 20), image_shape=(50, 61), anchor_stride=3, offset=0.25),
    ],
)
def test_matches_brute_force_over_all_anchors(settings):
    rng = np.random.default_rng(3)
    height, width = settings["image_shape"]
    boxes = random_boxes(rng, 300, height, width)
    expected = brute_force(boxes, **dict(settings))
    np.testing.assert_allclose(anchor_coverage(boxes, **settings), expected, atol=1e-5)


def test_box_equal_to_an_anchor_has_iou_one():
    generator = kml.AnchorGenerator(scales=(8, 16, 32, 64, 128), ratios=(0.5, 1.0, 2.0))
    anchors = generator.anchors_numpy((128, 128))
    chosen = anchors[np.random.default_rng(0).choice(len(anchors), 20, replace=False)]
    best = anchor_coverage(chosen, (8, 16, 32, 64, 128), (0.5, 1.0, 2.0), STRIDES, (128, 128))
    # The layer's anchors are float32: sides s * sqrt(r) are rounded.
    np.testing.assert_allclose(best, 1.0, atol=1e-5)
    square = kml.AnchorGenerator(scales=(8, 16, 32, 64, 128), ratios=(1.0,)).anchors_numpy((128, 128))
    assert anchor_coverage(square[::97], (8, 16, 32, 64, 128), (1.0,), STRIDES, (128, 128)).tolist() == [1.0] * 15


def test_hand_computed_ious():
    # A 32 x 32 box centred on a grid point against 64 x 64 anchors: 1024 / 4096.
    assert anchor_coverage([[16, 16, 48, 48]], (64,), (1.0,), (16,), (128, 128)).tolist() == [0.25]
    # Centred at (18, 18), 2 px off the nearest stride-16 centre, against a
    # 32 px anchor: 30 * 30 / (2 * 1024 - 900).
    assert anchor_coverage([[2, 2, 34, 34]], (32,), (1.0,), (16,), (128, 128))[0] == pytest.approx(900 / 1148)
    # A 16 x 32 box (width / height 2) against the ratio-2 anchor of scale 16 * sqrt(2).
    best = anchor_coverage([[24, 16, 40, 48]], (16 * 2**0.5,), (0.5, 1.0, 2.0), (16,), (64, 64))
    assert best[0] == pytest.approx(1.0)
    # Past the last anchor row, the nearest anchor is the last one (anchors are not clipped).
    assert anchor_coverage([[120, 0, 136, 16]], (16,), (1.0,), (16,), (128, 128))[0] == pytest.approx(
        brute_force([[120, 0, 136, 16]], scales=(16,), ratios=(1.0,), strides=(16,), image_shape=(128, 128))[0]
    )


def test_empty_and_zero_area_boxes():
    assert anchor_coverage(np.zeros((0, 4)), (32,), (1.0,), (16,), (64, 64)).shape == (0,)
    assert anchor_coverage([[10, 10, 10, 30]], (32,), (1.0,), (16,), (64, 64)).tolist() == [0.0]


def test_coverage_bad_arguments():
    args = ((32, 64), (1.0,), (16, 32), (64, 64))
    with pytest.raises(ValueError, match=r"boxes.*\[N, 4\]"):
        anchor_coverage(np.zeros((2, 3)), *args)
    with pytest.raises(ValueError, match="boxes.*finite"):
        anchor_coverage([[0, 0, np.nan, 4]], *args)
    with pytest.raises(ValueError, match=r"boxes.*y2 >= y1.*boxes\[1\]"):
        anchor_coverage([[0, 0, 4, 4], [8, 0, 4, 4]], *args)
    with pytest.raises(ValueError, match="scales.*one entry per level"):
        anchor_coverage([[0, 0, 4, 4]], (32,), (1.0,), (16, 32), (64, 64))
    with pytest.raises(ValueError, match="ratios"):
        anchor_coverage([[0, 0, 4, 4]], (32, 64), (0.0,), (16, 32), (64, 64))
    with pytest.raises(ValueError, match="anchor_stride"):
        anchor_coverage([[0, 0, 4, 4]], *args, anchor_stride=0)
    with pytest.raises(ValueError, match="image_shape"):
        anchor_coverage([[0, 0, 4, 4]], (32, 64), (1.0,), (16, 32), (64,))


def grid_boxes(rng, count, side_h, side_w, step=4, limit=128):
    """Boxes centred on random multiples of `step`."""
    cy, cx = step * rng.integers(4, limit // step - 4, (2, count))
    return np.stack([cy - side_h / 2, cx - side_w / 2, cy + side_h / 2, cx + side_w / 2], axis=1).astype(float)


def test_suggests_16_at_the_finest_level_for_16_px_boxes():
    boxes = grid_boxes(np.random.default_rng(0), 50, 16, 16)
    suggestion = suggest_anchor_scales(boxes, STRIDES, image_shape=(128, 128), current_scales=(32, 64, 128, 256, 512))
    assert isinstance(suggestion, AnchorSuggestion)
    # Only stride-4 anchors sit on every box centre, so 16 goes to level 0.
    assert suggestion.scales == (16, 32, 64, 128, 256)
    assert 1 in suggestion.ratios and len(suggestion.ratios) == 3
    assert suggestion.coverage == {0.5: 1.0, 0.7: 1.0}
    # 16 px boxes against 32 px anchors: IoU 0.25 at best.
    assert suggestion.current_coverage == {0.5: 0.0, 0.7: 0.0}
    assert suggestion.current_ratios == (0.5, 1.0, 2.0) and suggestion.num_boxes == 50


def test_elongated_boxes_get_their_ratio():
    boxes = grid_boxes(np.random.default_rng(1), 40, 16, 32)  # width / height = 2
    suggestion = suggest_anchor_scales(boxes, STRIDES, image_shape=(128, 128))
    assert 2 in suggestion.ratios
    assert suggestion.coverage[0.7] == 1.0


def test_given_ratios_are_kept_and_no_base_on_the_grid_does_better():
    rng = np.random.default_rng(2)
    boxes = random_boxes(rng, 200, 128, 128)
    ratios = (0.5, 1.0, 2.0)
    suggestion = suggest_anchor_scales(boxes, STRIDES, ratios=ratios, image_shape=(128, 128))
    assert suggestion.ratios == ratios
    best = (suggestion.coverage[0.7], suggestion.coverage[0.5])
    for k in range(29):
        scales = tuple(2 ** (k / 4) * 2**level for level in range(5))
        ious = anchor_coverage(boxes, scales, ratios, STRIDES, (128, 128))
        assert (np.mean(ious >= 0.7), np.mean(ious >= 0.5)) <= tuple(v + 1e-9 for v in best)
    recomputed = anchor_coverage(boxes, suggestion.scales, ratios, STRIDES, (128, 128))
    assert suggestion.coverage == {0.5: np.mean(recomputed >= 0.5), 0.7: np.mean(recomputed >= 0.7)}


def test_subsampled_search_and_table():
    boxes = grid_boxes(np.random.default_rng(3), 200, 16, 16)
    suggestion = suggest_anchor_scales(boxes, STRIDES, image_shape=(128, 128), max_boxes=20,
                                       current_scales=(8, 16, 32, 64, 128))
    assert suggestion.scales == (16, 32, 64, 128, 256) and suggestion.num_boxes == 200
    lines = suggestion.table().splitlines()
    assert lines[0].startswith("Share of 200 ground-truth boxes")
    assert lines[3].split()[0] == "suggested" and lines[3].endswith("100.0%")
    assert lines[4].split()[0] == "current" and "(8, 16, 32, 64, 128)" in lines[4]


def test_default_image_shape_holds_the_boxes():
    boxes = grid_boxes(np.random.default_rng(4), 30, 16, 16)
    assert suggest_anchor_scales(boxes, STRIDES).coverage == {0.5: 1.0, 0.7: 1.0}


def test_suggest_bad_arguments():
    with pytest.raises(ValueError, match="at least one box"):
        suggest_anchor_scales(np.zeros((0, 4)), STRIDES)
    with pytest.raises(ValueError, match="num_ratios"):
        suggest_anchor_scales([[0, 0, 8, 8]], STRIDES, num_ratios=10)
    with pytest.raises(ValueError, match="strides"):
        suggest_anchor_scales([[0, 0, 8, 8]], (4, 0))
    with pytest.raises(ValueError, match="current_ratios"):
        suggest_anchor_scales([[0, 0, 8, 8]], (4,), current_scales=(8,), current_ratios=(-1,))
    with pytest.raises(ValueError, match="y2 >= y1"):
        suggest_anchor_scales([[8, 0, 0, 8]], STRIDES)

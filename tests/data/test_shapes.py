import numpy as np
import pytest

from keras_maskrcnn_layers.data import SHAPES_CLASS_NAMES, extract_boxes, generate_shapes


@pytest.fixture(scope="module")
def samples():
    return generate_shapes(60, seed=3)


def test_count_dtypes_and_shapes(samples):
    assert len(samples) == 60
    for index, sample in enumerate(samples):
        n = sample["class_ids"].shape[0]
        assert sample["image"].dtype == np.uint8 and sample["image"].shape == (128, 128, 3)
        assert sample["masks"].dtype == bool and sample["masks"].shape == (128, 128, n)
        assert sample["class_ids"].dtype == np.int32
        assert sample["image_id"] == index
        assert n <= 4


def test_class_ids_in_range_and_masks_meaningful(samples):
    assert SHAPES_CLASS_NAMES == ("BG", "square", "circle", "triangle")
    all_ids = np.concatenate([s["class_ids"] for s in samples])
    assert all_ids.min() >= 1 and all_ids.max() <= 3
    assert set(all_ids.tolist()) == {1, 2, 3}
    for sample in samples:
        assert np.all(sample["masks"].sum(axis=(0, 1)) >= 20)


def test_deterministic_per_seed():
    a, b, c = generate_shapes(5, seed=11), generate_shapes(5, seed=11), generate_shapes(5, seed=12)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["image"], y["image"])
        np.testing.assert_array_equal(x["masks"], y["masks"])
        np.testing.assert_array_equal(x["class_ids"], y["class_ids"])
    assert any(not np.array_equal(x["image"], z["image"]) for x, z in zip(a, c))


def test_overlaps_occur_and_occlusion_removes_covered_pixels(samples):
    overlapping_pairs = 0
    for sample in samples:
        masks, image = sample["masks"], sample["image"]
        # Each visible pixel belongs to the shape drawn last there: masks are disjoint.
        assert masks.sum(axis=-1).max(initial=0) <= 1
        for i in range(masks.shape[-1]):
            colours = np.unique(image[masks[..., i]], axis=0)
            assert len(colours) == 1, "an instance shows pixels of another shape"
        boxes = extract_boxes(masks)
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                inter_h = min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0])
                inter_w = min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1])
                overlapping_pairs += inter_h > 0 and inter_w > 0
    assert overlapping_pairs >= 3


def test_occluded_shape_loses_pixels():
    # A shape fully inside the image has at least its nominal area minus
    # rasterisation error; an occluded one has clearly less. Some must be.
    samples = generate_shapes(40, seed=5, max_instances=4, empty_fraction=0.0)
    occluded = 0
    for sample in samples:
        masks = sample["masks"]
        for i in range(masks.shape[-1]):
            y1, x1, y2, x2 = extract_boxes(masks[..., i : i + 1])[0]
            # Square/circle/triangle fill at least ~40% of their box when whole.
            occluded += masks[..., i].sum() < 0.4 * (y2 - y1) * (x2 - x1)
    assert occluded >= 1


def test_empty_fraction():
    empty = generate_shapes(6, seed=0, empty_fraction=1.0)
    assert all(s["masks"].shape == (128, 128, 0) and s["class_ids"].shape == (0,) for s in empty)
    full = generate_shapes(30, seed=0, empty_fraction=0.0)
    assert all(s["class_ids"].shape[0] >= 1 for s in full)


def test_other_sizes_scale_shapes():
    samples = generate_shapes(10, height=256, width=192, seed=2, max_instances=2, empty_fraction=0.0)
    assert all(s["image"].shape == (256, 192, 3) for s in samples)
    assert max(s["class_ids"].shape[0] for s in samples) <= 2


@pytest.mark.parametrize(
    "kwargs",
    [{"count": -1}, {"count": 1, "height": 8}, {"count": 1, "max_instances": 0}, {"count": 1, "empty_fraction": 1.5}],
)
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        generate_shapes(**kwargs)


def _returns_within(seconds, function):
    """`function()`'s result, run in a thread so that a hang fails the test instead of stalling it."""
    import threading

    done = []
    worker = threading.Thread(target=lambda: done.append(function()), daemon=True)
    worker.start()
    worker.join(timeout=seconds)
    assert done, f"no result within {seconds} s"
    return done[0]


def test_colour_picking_terminates_when_no_colour_is_far_enough():
    import numpy as np

    from keras_maskrcnn_layers.data import shapes

    # Every colour lies within L1 distance 60 of this lattice (step 40): none is 90 away.
    lattice = np.stack(np.meshgrid(*[np.arange(0, 256, 40)] * 3, indexing="ij"), -1).reshape(-1, 3)
    colour = _returns_within(60, lambda: shapes._colour_far_from(np.random.default_rng(0), list(lattice)))
    assert colour.shape == (3,) and 0 <= colour.min() and colour.max() <= 255


def test_many_instances_terminate():
    # Some 80 colours exhaust the colour space at the minimum distance; hundreds of shapes used to hang.
    samples = _returns_within(
        120, lambda: generate_shapes(2, height=64, width=64, seed=0, max_instances=1000, empty_fraction=0.0)
    )
    assert max(len(s["class_ids"]) for s in samples) > 20
    for sample in samples:
        assert sample["masks"].sum(axis=-1).max(initial=0) <= 1

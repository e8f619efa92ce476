import collections.abc
import json
import os

import numpy as np
import pytest
import tensorflow as tf

import keras_maskrcnn_layers as kml
from keras_maskrcnn_layers.data import CocoSamples, extract_boxes, load_coco, make_dataset

mask_utils = pytest.importorskip("pycocotools.mask")

# pycocotools 2.0 calls `np.array(copy=False)` internally, which NumPy 2 flags.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def uncompressed_rle(mask):
    """COCO's uncompressed RLE: run lengths over the column-major pixels, zeros first."""
    flat = np.asarray(mask, np.uint8).flatten(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0] == 1:
        counts = [0] + counts
    return {"size": list(mask.shape), "counts": counts}


def write_png(path, array):
    tf.io.write_file(path, tf.io.encode_png(array))


@pytest.fixture
def coco_files(tmp_path):
    image_dir = tmp_path / "images"
    image_dir.mkdir()
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(40, 50, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, size=(30, 20, 1), dtype=np.uint8)
    write_png(str(image_dir / "a.png"), rgb)
    write_png(str(image_dir / "b.png"), gray)

    dog = np.zeros((40, 50), np.uint8)
    dog[20:35, 30:45] = 1
    crowd = np.zeros((40, 50), np.uint8)
    crowd[0:5, 0:5] = 1
    cat_b = np.zeros((30, 20), np.uint8)
    cat_b[3:12, 2:9] = 1
    cat_b[20:28, 15:20] = 1  # a second blob touching the right border

    def compressed(mask):
        rle = mask_utils.encode(np.asfortranarray(mask))
        return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}

    annotations = [
        # A polygon rectangle x 10..30, y 5..25 (category 3 "cat").
        {"id": 1, "image_id": 11, "category_id": 3, "iscrowd": 0,
         "segmentation": [[10, 5, 30, 5, 30, 25, 10, 25]], "area": 400, "bbox": [10, 5, 20, 20]},
        {"id": 2, "image_id": 11, "category_id": 7, "iscrowd": 0,
         "segmentation": compressed(dog), "area": 225, "bbox": [30, 20, 15, 15]},
        {"id": 3, "image_id": 11, "category_id": 3, "iscrowd": 1,
         "segmentation": compressed(crowd), "area": 25, "bbox": [0, 0, 5, 5]},
        {"id": 4, "image_id": 12, "category_id": 3, "iscrowd": 0,
         "segmentation": uncompressed_rle(cat_b), "area": int(cat_b.sum()), "bbox": [2, 3, 18, 25]},
    ]
    data = {
        "images": [
            {"id": 11, "file_name": "a.png", "height": 40, "width": 50},
            {"id": 12, "file_name": "b.png", "height": 30, "width": 20},
        ],
        "annotations": annotations,
        "categories": [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}],
    }
    annotation_file = tmp_path / "instances.json"
    annotation_file.write_text(json.dumps(data))
    expected = {"rgb": rgb, "gray": gray, "dog": dog.astype(bool), "cat_b": cat_b.astype(bool)}
    return str(annotation_file), str(image_dir), expected


def test_classes_are_contiguous_in_sorted_order(coco_files):
    annotation_file, image_dir, _ = coco_files
    samples = load_coco(annotation_file, image_dir)
    assert isinstance(samples, CocoSamples) and isinstance(samples, collections.abc.Sequence)
    assert len(samples) == 2
    assert samples.class_names == ("BG", "cat", "dog")
    assert samples.coco_category_ids == (-1, 3, 7)


def test_masks_and_class_ids(coco_files):
    annotation_file, image_dir, expected = coco_files
    samples = load_coco(annotation_file, image_dir)
    first, second = samples[0], samples[1]

    assert first["image_id"] == 11
    np.testing.assert_array_equal(first["image"], expected["rgb"])
    assert first["masks"].dtype == bool and first["masks"].shape == (40, 50, 2)
    np.testing.assert_array_equal(first["class_ids"], [1, 2])  # crowd annotation skipped
    assert first["class_ids"].dtype == np.int32
    polygon = first["masks"][..., 0]
    y1, x1, y2, x2 = extract_boxes(polygon[..., None])[0]
    assert abs(y1 - 5) <= 1 and abs(x1 - 10) <= 1 and abs(y2 - 26) <= 1 and abs(x2 - 31) <= 1
    assert 380 <= polygon.sum() <= 460
    assert not polygon[0:5, 0:5].any()
    np.testing.assert_array_equal(first["masks"][..., 1], expected["dog"])

    # Grayscale PNG becomes 3 equal channels; the uncompressed RLE decodes exactly.
    assert second["image_id"] == 12
    assert second["image"].shape == (30, 20, 3) and second["image"].dtype == np.uint8
    np.testing.assert_array_equal(second["image"], np.repeat(expected["gray"], 3, axis=-1))
    np.testing.assert_array_equal(second["class_ids"], [1])
    np.testing.assert_array_equal(second["masks"][..., 0], expected["cat_b"])


def test_category_order_can_be_chosen(coco_files):
    annotation_file, image_dir, _ = coco_files
    samples = load_coco(annotation_file, image_dir, category_ids=[7, 3])
    assert samples.class_names == ("BG", "dog", "cat")
    assert samples.coco_category_ids == (-1, 7, 3)
    np.testing.assert_array_equal(samples[0]["class_ids"], [2, 1])
    only_dogs = load_coco(annotation_file, image_dir, category_ids=[7])
    assert len(only_dogs) == 1 and only_dogs.image_ids == [11]
    np.testing.assert_array_equal(only_dogs[0]["class_ids"], [1])
    with pytest.raises(ValueError, match="category_ids"):
        load_coco(annotation_file, image_dir, category_ids=[5])


def test_slicing_and_negative_indices(coco_files):
    annotation_file, image_dir, _ = coco_files
    samples = load_coco(annotation_file, image_dir)
    assert samples[-1]["image_id"] == 12
    tail = samples[1:]
    assert isinstance(tail, CocoSamples) and len(tail) == 1 and tail.class_names == samples.class_names
    with pytest.raises(IndexError):
        samples[2]


def test_missing_image_file_is_named(coco_files):
    annotation_file, image_dir, _ = coco_files
    os.remove(os.path.join(image_dir, "b.png"))
    with pytest.raises(FileNotFoundError, match="b.png"):
        load_coco(annotation_file, image_dir)
    lazy = load_coco(annotation_file, image_dir, check_files=False)
    assert lazy[0]["image_id"] == 11
    with pytest.raises(FileNotFoundError, match="b.png"):
        lazy[1]


def test_missing_annotation_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.json"):
        load_coco(str(tmp_path / "nothing.json"), str(tmp_path))


def test_make_dataset_reads_coco_samples(coco_files):
    annotation_file, image_dir, _ = coco_files
    samples = load_coco(annotation_file, image_dir)
    config = kml.MaskRCNNConfig.preset("shapes", NUM_CLASSES=3, IMAGES_PER_GPU=2)
    (batch,) = list(make_dataset(samples, config, training=False))
    assert batch["images"].shape == (2, 128, 128, 3)
    np.testing.assert_array_equal(batch["gt_class_ids"].numpy()[:, :3], [[1, 2, 0], [1, 0, 0]])
    np.testing.assert_array_equal(batch["image_meta"].numpy()[:, -1], [11, 12])

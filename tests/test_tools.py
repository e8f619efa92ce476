"""The `python -m keras_maskrcnn_layers.tools` command line, on tiny COCO files written here."""

import json

import numpy as np
import pytest
from PIL import Image

import keras_maskrcnn_layers as kml
from keras_maskrcnn_layers.data import resize_image
from keras_maskrcnn_layers.tools.__main__ import coco_input_boxes, main, resize_geometry

mask_utils = pytest.importorskip("pycocotools.mask")


def write_json(path, data):
    path.write_text(json.dumps(data))
    return str(path)


# === Geometry ===


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"IMAGE_MIN_DIM": 800, "IMAGE_MAX_DIM": 1024},
        {"IMAGE_RESIZE_MODE": "pad64", "IMAGE_MIN_DIM": 64, "IMAGE_MAX_DIM": 256},
        {"IMAGE_RESIZE_MODE": "none", "IMAGE_MAX_DIM": 192},
        {"IMAGE_MIN_SCALE": 2.5, "IMAGE_MAX_DIM": 256},
    ],
)
def test_resize_geometry_equals_resize_image(overrides):
    config = kml.MaskRCNNConfig.preset("shapes", **overrides)
    for height, width in [(64, 32), (100, 150), (128, 128), (30, 200), (300, 90), (7, 5)]:
        image = np.zeros((height, width, 1), np.uint8)
        try:
            _, window, scale, _ = resize_image(
                image, config.IMAGE_MIN_DIM, config.IMAGE_MAX_DIM, config.IMAGE_MIN_SCALE, config.IMAGE_RESIZE_MODE
            )
            expected = (scale, window[0], window[1])
        except ValueError:
            expected = None
        assert resize_geometry(height, width, config) == expected, (height, width)


# === anchors ===


@pytest.fixture
def boxes_file(tmp_path):
    """Three 16 px objects centred at (36, 36) in network-input pixels (shapes preset: 128 px input).

    36 is a multiple of the finest stride, 4, but of no coarser one.
    """
    dataset = {
        "images": [
            {"id": 1, "height": 128, "width": 128, "file_name": "a.png"},
            {"id": 2, "height": 64, "width": 64, "file_name": "b.png"},  # scaled by 2
            {"id": 3, "height": 256, "width": 256, "file_name": "c.png"},  # scaled by 0.5
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [28, 28, 16, 16]},
            {"id": 2, "image_id": 2, "category_id": 1, "bbox": [14, 14, 8, 8]},
            {"id": 3, "image_id": 3, "category_id": 1, "bbox": [56, 56, 32, 32]},
            {"id": 4, "image_id": 1, "category_id": 1, "bbox": [0, 0, 50, 50], "iscrowd": 1},
            {"id": 5, "image_id": 1, "category_id": 1, "bbox": [5, 5, 0, 10]},
            {"id": 6, "image_id": 9, "category_id": 1, "bbox": [5, 5, 10, 10]},
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }
    return write_json(tmp_path / "instances.json", dataset)


def test_coco_boxes_in_network_pixels(boxes_file):
    with open(boxes_file) as file:
        boxes, skipped = coco_input_boxes(json.load(file), kml.MaskRCNNConfig.preset("shapes"))
    np.testing.assert_allclose(boxes, [[28, 28, 44, 44]] * 3)
    assert dict(skipped) == {"crowd": 1, "no area": 1, "unknown image": 1}


def test_anchors_suggests_and_compares(boxes_file, capsys):
    assert main(["anchors", "--coco", boxes_file, "--preset", "shapes"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("3 boxes in 128 x 128 network-input pixels")
    assert out[0].endswith("skipped: 1 crowd, 1 no area, 1 unknown image")
    suggested = next(line for line in out if line.startswith("suggested"))
    current = next(line for line in out if line.startswith("current"))
    assert "(16, 32, 64, 128, 256)" in suggested and suggested.endswith("100.0%      100.0%")
    assert "(8, 16, 32, 64, 128)" in current and "(0.5, 1, 2)" in current


def test_anchors_config_file_and_keep_ratios(boxes_file, tmp_path, capsys):
    config = kml.MaskRCNNConfig.preset("shapes", RPN_ANCHOR_SCALES=(12, 24, 48, 96, 192), RPN_ANCHOR_RATIOS=(1,))
    path = tmp_path / "config.json"
    path.write_text(config.to_json())
    assert main(["anchors", "--coco", boxes_file, "--config", str(path), "--keep-ratios"]) == 0
    out = capsys.readouterr().out
    suggested = next(line for line in out.splitlines() if line.startswith("suggested"))
    assert "(16, 32, 64, 128, 256)" in suggested and "(1)" in suggested
    assert "(12, 24, 48, 96, 192)" in out


def test_help_and_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "anchors" in out and "masks" in out and "examples:" in out
    with pytest.raises(SystemExit) as exit_info:
        main(["anchors", "--coco", str(tmp_path / "missing.json")])
    assert exit_info.value.code == 2
    assert "COCO annotation file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SystemExit) as exit_info:
        main(["anchors", "--coco", str(bad)])
    assert exit_info.value.code == 2 and "not valid JSON" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["masks", "--coco", str(bad), "--images", str(tmp_path), "--model", str(tmp_path / "m.keras")])
    assert exit_info.value.code == 2 and "model file not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["masks", "--coco", str(bad), "--images", str(tmp_path), "--model", "m.keras", "--iou-threshold", "2"])
    assert exit_info.value.code == 2 and "--iou-threshold: must be in (0, 1]" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["anchors", "--coco", write_json(tmp_path / "empty.json", {"images": [], "annotations": []})])
    assert exit_info.value.code == 2 and "no usable boxes" in capsys.readouterr().err


# === masks ===


@pytest.fixture(scope="module")
def coco_model_files(tmp_path_factory):
    """Two shapes images as PNG files, their COCO file (RLE masks) and an untrained saved model."""
    folder = tmp_path_factory.mktemp("coco")
    samples = kml.data.generate_shapes(count=2, height=128, width=128, seed=0)
    images, annotations = [], []
    for index, sample in enumerate(samples):
        Image.fromarray(sample["image"]).save(folder / f"{index}.png")
        images.append({"id": index, "height": 128, "width": 128, "file_name": f"{index}.png"})
        for k, class_id in enumerate(sample["class_ids"]):
            rle = mask_utils.encode(np.asfortranarray(sample["masks"][:, :, k].astype(np.uint8)))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": index,
                    "category_id": int(class_id),
                    "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
                    "area": float(sample["masks"][:, :, k].sum()),
                    "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                    "iscrowd": 0,
                }
            )
    categories = [{"id": i, "name": name} for i, name in enumerate(kml.data.SHAPES_CLASS_NAMES) if i]
    dataset = {"images": images, "annotations": annotations, "categories": categories}
    coco = write_json(folder / "instances.json", dataset)
    config = kml.MaskRCNNConfig.preset(
        "shapes", BATCH_SIZE=2, TOP_DOWN_PYRAMID_SIZE=16, FPN_CLASSIF_FC_LAYERS_SIZE=32, MASK_HEAD_CONVS=1,
        PRE_NMS_LIMIT=200, POST_NMS_ROIS_TRAINING=50, POST_NMS_ROIS_INFERENCE=40, TRAIN_ROIS_PER_IMAGE=16,
        DETECTION_MIN_CONFIDENCE=0.0,
    )
    model_path = str(folder / "model.keras")
    kml.MaskRCNN(config).save(model_path)
    return coco, str(folder), model_path, samples


# pycocotools 2.0 calls `np.array(copy=False)` internally, which NumPy 2 flags.
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_masks_prints_both_tables_and_saves_the_plot(coco_model_files, tmp_path, capsys):
    coco, folder, model_path, samples = coco_model_files
    plot = tmp_path / "masks.png"
    argv = ["masks", "--coco", coco, "--images", folder, "--model", model_path, "--limit", "1", "--plot", str(plot)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Mask quality of matched instances" in out and "Proposal recall" in out
    lines = out.splitlines()
    recall_title = lines.index(next(line for line in lines if line.startswith("Proposal recall")))
    all_rows = [line.split() for line in lines if line.startswith("all")]
    # --limit 1: the first image's objects, once in each table.
    objects = len(samples[0]["class_ids"])
    assert int(all_rows[1][1]) == objects
    matched, missed = int(all_rows[0][1]), int(all_rows[0][2])
    assert matched + missed == objects and recall_title > 0
    assert out.rstrip().endswith(f"Plot written to {plot}")
    assert plot.read_bytes()[:4] == b"\x89PNG"

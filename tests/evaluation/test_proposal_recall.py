"""Proposal recall: against a NumPy recomputation from the model's proposals, and a hand-made model."""

import functools
import math
import types

import keras
import numpy as np
import pytest

import keras_maskrcnn_layers as kml
from keras_maskrcnn_layers.evaluation import ProposalRecallReport, extract_boxes, proposal_recall


def small_config(**overrides):
    settings = dict(
        BATCH_SIZE=2,
        TOP_DOWN_PYRAMID_SIZE=16,
        FPN_CLASSIF_FC_LAYERS_SIZE=32,
        MASK_HEAD_CONVS=1,
        PRE_NMS_LIMIT=200,
        POST_NMS_ROIS_TRAINING=50,
        POST_NMS_ROIS_INFERENCE=40,
        TRAIN_ROIS_PER_IMAGE=16,
    )
    return kml.MaskRCNNConfig.preset("shapes", **{**settings, **overrides})


@pytest.fixture(scope="module")
def model_and_samples():
    keras.utils.set_random_seed(0)
    model = kml.MaskRCNN(small_config())
    # Three images in batches of two: the last batch is padded.
    samples = kml.data.generate_shapes(count=3, height=128, width=128, seed=0)
    return model, samples


def numpy_best_ious(model, samples):
    """Best proposal IoU of every object and valid proposals per image, by loops over raw outputs."""
    inference = model.inference_model
    proposals_model = keras.Model(inference.input, list(inference.get_layer("proposals").output))
    images, meta = model.mold_inputs([s["image"] for s in samples])
    boxes, scores = (np.asarray(x) for x in proposals_model.predict_on_batch({"images": images, "image_meta": meta}))
    best, counts = [], []
    for i, sample in enumerate(samples):
        valid = boxes[i][scores[i] > 0].astype(np.float64)
        counts.append(len(valid))
        scale, top, left = meta[i, 6], meta[i, 2], meta[i, 3]
        for box in extract_boxes(sample["masks"]):
            y1, x1, y2, x2 = box * scale + np.array([top, left, top, left])
            ious = []
            for py1, px1, py2, px2 in valid:
                inter = max(0.0, min(y2, py2) - max(y1, py1)) * max(0.0, min(x2, px2) - max(x1, px1))
                union = (y2 - y1) * (x2 - x1) + (py2 - py1) * (px2 - px1) - inter
                ious.append(inter / union)
            best.append(max(ious, default=0.0))
    return np.asarray(best), counts


def test_recall_equals_numpy_recomputation(model_and_samples):
    model, samples = model_and_samples
    best, counts = numpy_best_ious(model, samples)
    # Untrained proposals overlap objects only a little: thresholds halfway
    # between the distinct observed IoUs make every recall value a real test.
    distinct = np.unique(best)
    assert distinct.size >= 2 and np.diff(distinct).min() > 1e-4
    thresholds = tuple(0.5 * (distinct[:-1] + distinct[1:])[-3:]) + (0.7,)
    report = proposal_recall(model, samples, iou=thresholds)
    assert isinstance(report, ProposalRecallReport)
    np.testing.assert_allclose(report.best_iou, best, atol=1e-5)
    expected = [np.mean(best >= t) for t in thresholds]
    assert [report.recall[t]["all"] for t in thresholds] == pytest.approx(expected)
    assert 0.0 < report.recall[thresholds[0]]["all"] < 1.0
    assert report.num_proposals.tolist() == counts
    assert report.num_objects["all"] == len(best)
    assert report.image.tolist() == [i for i, s in enumerate(samples) for _ in s["class_ids"]]


# === A hand-made model ===

# Network input 64 x 64; a 32 x 16 image is scaled by 2 into the window (0, 16, 64, 48).
PROPOSALS = np.array(
    [
        [4, 20, 20, 28],  # exactly object A
        [32, 16, 64, 35.2],  # inside object B, 60 % of its width: IoU 0.6
        [0, 0, 2, 2],  # a valid proposal that overlaps nothing
        [0, 0, 0, 0],  # padding
    ],
    np.float32,
)
SCORES = np.array([0.9, 0.8, 0.1, 0.0], np.float32)


class FixedProposals(keras.layers.Layer):
    """The same proposals for every image, shaped as `ProposalLayer`'s outputs."""

    def call(self, images):
        zero = keras.ops.sum(images, axis=(1, 2, 3))[:, None] * 0.0  # [B, 1], ties the batch size
        boxes = keras.ops.convert_to_tensor(PROPOSALS)[None] + zero[:, :, None]
        return boxes, keras.ops.convert_to_tensor(SCORES)[None] + zero


def hand_made_model(layer_name="proposals"):
    config = small_config(IMAGE_MIN_DIM=64, IMAGE_MAX_DIM=64)
    images = keras.Input(config.IMAGE_SHAPE, name="images")
    meta = keras.Input((8,), name="image_meta")
    inference = keras.Model({"images": images, "image_meta": meta}, FixedProposals(name=layer_name)(images))
    model = types.SimpleNamespace(config=config, inference_model=inference, jit_compile=False)
    model.mold_inputs = functools.partial(kml.MaskRCNN.mold_inputs, model)
    return model


def hand_made_samples():
    masks = np.zeros((32, 16, 2), bool)
    masks[2:10, 2:6, 0] = True  # A: box (2, 2, 10, 6) -> (4, 20, 20, 28) in the input, 32 px
    masks[16:32, 0:16, 1] = True  # B: box (16, 0, 32, 16) -> (32, 16, 64, 48), 256 px
    image = np.zeros((32, 16, 3), np.uint8)
    full = {"image": image, "masks": masks, "class_ids": np.array([1, 2])}
    empty = {"image": image, "masks": np.zeros((32, 16, 0), bool), "class_ids": np.zeros((0,), int)}
    return [full, empty, full]


def test_hand_made_recall():
    ranges = {"tiny": (0, 100), "bigger": (100, math.inf)}
    report = proposal_recall(hand_made_model(), hand_made_samples(), size_ranges=ranges)
    np.testing.assert_allclose(report.best_iou, [1.0, 0.6, 1.0, 0.6], atol=1e-6)
    assert report.num_proposals.tolist() == [3, 3, 3]
    assert report.num_objects == {"tiny": 2, "bigger": 2, "all": 4}
    assert report.recall[0.5] == {"tiny": 1.0, "bigger": 1.0, "all": 1.0}
    assert report.recall[0.7] == {"tiny": 1.0, "bigger": 0.0, "all": 0.5}
    assert report.size.tolist() == ["tiny", "bigger", "tiny", "bigger"]


def test_batch_size_and_table():
    report = proposal_recall(hand_made_model(), hand_made_samples(), iou=0.6, batch_size=1)
    assert list(report.recall) == [0.6]
    assert report.recall[0.6]["small"] == report.recall[0.6]["all"] == 1.0
    assert math.isnan(report.recall[0.6]["medium"]) and math.isnan(report.recall[0.6]["large"])
    lines = report.table().splitlines()
    assert lines[1].split() == ["size", "objects", "IoU", ">=", "0.6"]
    assert lines[3].split() == ["small", "4", "100.0%"]
    assert lines[4].split() == ["medium", "0", "-"]
    assert lines[-1] == "Valid proposals per image: mean 3.0, min 3, max 3"


def test_bad_arguments():
    model, samples = hand_made_model(), hand_made_samples()
    with pytest.raises(ValueError, match="samples.*empty"):
        proposal_recall(model, [])
    with pytest.raises(ValueError, match="iou"):
        proposal_recall(model, samples, iou=(0.5, 1.5))
    with pytest.raises(ValueError, match="batch_size"):
        proposal_recall(model, samples, batch_size=0)
    with pytest.raises(ValueError, match=r"samples\[0\].*channels"):
        proposal_recall(model, [dict(samples[0], class_ids=[1])])
    with pytest.raises(ValueError, match="'proposals'"):
        proposal_recall(hand_made_model(layer_name="other"), samples)

import numpy as np
import pytest

import keras_maskrcnn_layers as kml
from tests import reference
from tests.backend_utils import to_numpy
from tests.layer_test_case import run_layer_test

IMAGE = (64, 96)


def rpn_outputs(seed, batch=2):
    anchors = to_numpy(kml.AnchorGenerator(scales=(8, 16, 32, 64, 128))(image_shape=IMAGE))
    rng = np.random.default_rng(seed)
    scores = rng.uniform(size=(batch, len(anchors))).astype("float32")
    deltas = rng.normal(0, 1.0, size=(batch, len(anchors), 4)).astype("float32")
    return scores, deltas, anchors


@pytest.mark.parametrize(
    "pre, post, iou, min_size", [(300, 50, 0.7, 0.0), (1000, 200, 0.5, 0.0), (200, 300, 0.7, 4.0)]
)
def test_matches_numpy_pipeline(pre, post, iou, min_size):
    scores, deltas, anchors = rpn_outputs(pre)
    layer = kml.ProposalLayer(pre_nms_topk=pre, post_nms_topk=post, nms_iou_threshold=iou, min_size=min_size)
    boxes, out_scores = layer(scores, deltas, anchors, image_shape=IMAGE)
    boxes, out_scores = to_numpy(boxes), to_numpy(out_scores)
    for b in range(2):
        ref_boxes, ref_scores = reference.proposals(
            scores[b], deltas[b], anchors, IMAGE, pre, post, iou, (0.1, 0.1, 0.2, 0.2), min_size
        )
        np.testing.assert_allclose(boxes[b], ref_boxes, atol=1e-3)
        np.testing.assert_allclose(out_scores[b], ref_scores, atol=1e-6)
    assert np.all(boxes[..., 0::2] <= IMAGE[0]) and np.all(boxes[..., 1::2] <= IMAGE[1]) and np.all(boxes >= 0)
    assert np.all(np.diff(out_scores, axis=1) <= 0), "sorted by score, padding last"


def test_padding_rows_are_zero():
    scores, deltas, anchors = rpn_outputs(1)
    # Every anchor becomes the same box: NMS keeps exactly one per image.
    deltas = np.zeros_like(deltas)
    same = np.tile(np.array([[10, 10, 40, 40]], "float32"), (len(anchors), 1))
    boxes, out_scores = kml.ProposalLayer(pre_nms_topk=100, post_nms_topk=20)(scores, deltas, same, image_shape=IMAGE)
    boxes, out_scores = to_numpy(boxes), to_numpy(out_scores)
    assert np.all(out_scores[:, 0] > 0)
    assert np.all(boxes[:, 1:] == 0) and np.all(out_scores[:, 1:] == 0)


def test_batched_anchors():
    scores, deltas, anchors = rpn_outputs(2)
    layer = kml.ProposalLayer(pre_nms_topk=200, post_nms_topk=30)
    shared = layer(scores, deltas, anchors, image_shape=IMAGE)
    batched = layer(scores, deltas, np.stack([anchors, anchors]), image_shape=IMAGE)
    for s, b in zip(shared, batched):
        np.testing.assert_allclose(to_numpy(s), to_numpy(b))


def test_layer_checks():
    scores, deltas, anchors = rpn_outputs(3)
    layer = kml.ProposalLayer(pre_nms_topk=200, post_nms_topk=40)
    anchors = np.stack([anchors, anchors])
    run_layer_test(
        layer,
        [scores, deltas, anchors],
        call_kwargs={"image_shape": IMAGE},
        expected_output_shapes=[(2, 40, 4), (2, 40)],
        float32_outputs=(0, 1),
        atol=1e-4,
    )


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"pre_nms_topk": 0}, "pre_nms_topk"),
        ({"post_nms_topk": -1}, "post_nms_topk"),
        ({"nms_iou_threshold": 1.2}, "nms_iou_threshold"),
        ({"nms_iou_threshold": -0.5}, "nms_iou_threshold"),
        ({"box_std": (0.1, 0.1)}, "box_std"),
        ({"box_std": 0.1}, "box_std"),
        ({"min_size": -1}, "min_size"),
    ],
)
def test_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        kml.ProposalLayer(**kwargs)


def test_bad_inputs():
    scores, deltas, anchors = rpn_outputs(4)
    layer = kml.ProposalLayer(pre_nms_topk=100, post_nms_topk=10)
    with pytest.raises(ValueError, match="same number of anchors"):
        layer(scores, deltas, anchors[:-3], image_shape=IMAGE)
    with pytest.raises(ValueError, match="rpn_deltas"):
        layer(scores, deltas[..., :3], anchors, image_shape=IMAGE)
    bad = scores.copy()
    bad[0, 5] = np.nan
    with pytest.raises(ValueError, match="rpn_scores"):
        layer(bad, deltas, anchors, image_shape=IMAGE)
    with pytest.raises(ValueError, match="image_shape"):
        layer(scores, deltas, anchors)
    with pytest.raises(ValueError, match="logits"):
        layer(scores * 4 - 2, deltas, anchors, image_shape=IMAGE)
    xyxy = anchors.copy()
    xyxy[3] = [10, 30, 20, 5]
    with pytest.raises(ValueError, match="xyxy"):
        layer(scores, deltas, xyxy, image_shape=IMAGE)


def test_zero_scores_are_not_proposals():
    # Valid rows are exactly those with a score > 0: an anchor whose
    # probability is 0 yields no proposal.
    scores, deltas, anchors = rpn_outputs(5)
    scores[:, 10:] = 0.0
    layer = kml.ProposalLayer(pre_nms_topk=100, post_nms_topk=20, nms_iou_threshold=1.0)
    boxes, out_scores = (to_numpy(o) for o in layer(scores, deltas, anchors, image_shape=IMAGE))
    assert np.all(out_scores[:, :10] > 0) and np.all(out_scores[:, 10:] == 0)
    assert np.all(boxes[:, 10:] == 0)

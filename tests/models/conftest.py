import numpy as np
import pytest

import keras_maskrcnn_layers as kml


def tiny_config(**overrides):
    """A 64 px Mask R-CNN small enough to compile and train in seconds."""
    settings = dict(
        IMAGE_MIN_DIM=64,
        IMAGE_MAX_DIM=64,
        BATCH_SIZE=2,
        TOP_DOWN_PYRAMID_SIZE=16,
        FPN_CLASSIF_FC_LAYERS_SIZE=32,
        MASK_HEAD_CONVS=1,
        PRE_NMS_LIMIT=200,
        POST_NMS_ROIS_TRAINING=50,
        POST_NMS_ROIS_INFERENCE=30,
        TRAIN_ROIS_PER_IMAGE=16,
        RPN_TRAIN_ANCHORS_PER_IMAGE=64,
        MAX_GT_INSTANCES=4,
        DETECTION_MAX_INSTANCES=6,
        RPN_ANCHOR_SCALES=(8, 16, 24, 32, 48),
        OPTIMIZER="adam",
        LEARNING_RATE=0.002,
    )
    settings.update(overrides)
    return kml.MaskRCNNConfig.preset("shapes", **settings)


def batch_from_samples(samples, config):
    """Stacks `prepare_sample` outputs: the model's inputs without tf.data."""
    from keras_maskrcnn_layers.data import prepare_sample

    prepared = [prepare_sample(s, config) for s in samples]
    return {key: np.stack([p[key] for p in prepared]) for key in prepared[0]}


@pytest.fixture
def config():
    return tiny_config()


@pytest.fixture
def samples():
    return kml.data.generate_shapes(2, height=64, width=64, seed=3, max_instances=3, empty_fraction=0.0)

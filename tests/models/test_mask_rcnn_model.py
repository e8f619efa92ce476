import os

import keras
import numpy as np
import pytest

import keras_maskrcnn_layers as kml
from tests.models.conftest import batch_from_samples, tiny_config

INFERENCE_KEYS = ("images", "image_meta")


def favour_objects(model):
    """An untrained head picks background everywhere; bias it towards objects."""
    classifier = model.get_layer("box_head").classifier
    bias = np.linspace(4.0, 0.0, classifier.bias.shape[0]).astype("float32")
    bias[0] = -5.0
    classifier.bias.assign(bias)


def canonical_order(outputs, image):
    """Detections of one image sorted by class and box: near-tied scores may
    order differently with and without XLA, the set of detections may not."""
    n = int(outputs["num_detections"][image])
    boxes = np.round(outputs["detection_boxes"][image, :n], 2)
    order = np.lexsort((boxes[:, 3], boxes[:, 2], boxes[:, 1], boxes[:, 0], outputs["detection_class_ids"][image, :n]))
    return {key: outputs[key][image, :n][order] for key in outputs if key != "num_detections"}


def test_inference_model_outputs_and_xla_equals_eager(config, samples):
    keras.utils.set_random_seed(7)
    config = config.replace(DETECTION_MIN_CONFIDENCE=0.0)
    model = kml.build_mask_rcnn(config, "inference")
    favour_objects(model)
    batch = batch_from_samples(samples, config)
    inputs = {k: batch[k] for k in INFERENCE_KEYS}
    eager = {k: keras.ops.convert_to_numpy(v) for k, v in model(inputs).items()}
    model.compile(optimizer=None, jit_compile=True)
    compiled = {k: np.asarray(v) for k, v in model.predict_on_batch(inputs).items()}
    d = config.DETECTION_MAX_INSTANCES
    assert compiled["detection_boxes"].shape == (2, d, 4)
    assert compiled["detection_masks"].shape == (2, d, *config.MASK_SHAPE)
    assert compiled["detection_class_ids"].dtype == np.int32
    assert np.all(compiled["num_detections"] > 0), "min confidence 0: something is detected"
    np.testing.assert_array_equal(compiled["num_detections"], eager["num_detections"])
    for image in range(2):
        c, e = canonical_order(compiled, image), canonical_order(eager, image)
        np.testing.assert_array_equal(c["detection_class_ids"], e["detection_class_ids"])
        for key in ("detection_boxes", "detection_scores", "detection_masks"):
            np.testing.assert_allclose(c[key], e[key], atol=2e-3, rtol=1e-3, err_msg=key)
    # Boxes stay inside the image window, padding rows are zero.
    for i, n in enumerate(compiled["num_detections"]):
        assert np.all(compiled["detection_boxes"][i, n:] == 0)
        assert np.all(compiled["detection_boxes"][i, :n] >= 0) and np.all(compiled["detection_boxes"][i, :n] <= 64)


def test_training_loss_falls(config, samples):
    model = kml.build_mask_rcnn(config, "training")
    model.compile(optimizer=keras.optimizers.Adam(2e-3), jit_compile=True)
    batch = batch_from_samples(samples, config)
    losses = [float(model.train_on_batch(batch, return_dict=True)["loss"]) for _ in range(16)]
    assert all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3]), losses


def test_every_loss_is_reported_and_zero_instance_images_train(config):
    empty = kml.data.generate_shapes(2, height=64, width=64, seed=4, empty_fraction=1.0)
    assert all(len(s["class_ids"]) == 0 for s in empty)
    model = kml.build_mask_rcnn(config, "training")
    batch = batch_from_samples(empty, config)
    outputs = {k: keras.ops.convert_to_numpy(v) for k, v in model(batch).items()}
    assert sorted(outputs) == sorted(kml.layers.LOSS_NAMES)
    for name in ("rpn_bbox_loss", "mrcnn_bbox_loss", "mrcnn_mask_loss"):
        assert np.all(outputs[name] == 0.0), name  # nothing positive to regress
    assert np.all(outputs["rpn_class_loss"] > 0) and np.all(outputs["mrcnn_class_loss"] > 0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=True)
    logs = model.train_on_batch(batch, return_dict=True)
    # The training step logs every loss too, and they agree with the outputs.
    assert set(logs) == {"loss", *kml.layers.LOSS_NAMES}
    assert all(np.isfinite(float(value)) for value in logs.values())
    for name in ("rpn_bbox_loss", "mrcnn_bbox_loss", "mrcnn_mask_loss"):
        assert float(logs[name]) == 0.0, name


def test_mini_masks_class_agnostic_56px_bilinear_upsampling_and_box_scale(samples):
    config = tiny_config(
        USE_MINI_MASK=True, MINI_MASK_SHAPE=(56, 56), MASK_SHAPE=(56, 56), MASK_CLASS_AGNOSTIC=True,
        MASK_UPSAMPLE="bilinear", MASK_BOX_SCALE=1.25,
    )
    model = kml.build_mask_rcnn(config, "training")
    batch = batch_from_samples(samples, config)
    assert batch["gt_masks"].shape[2:] == (56, 56)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=True)
    assert np.isfinite(float(model.train_on_batch(batch, return_dict=True)["loss"]))
    inference = kml.build_mask_rcnn(config, "inference")
    out = inference({k: batch[k] for k in INFERENCE_KEYS})
    assert tuple(out["detection_masks"].shape) == (2, config.DETECTION_MAX_INSTANCES, 56, 56)


@pytest.mark.parametrize("pool, side", [(14, 28), (28, 112)])
def test_mask_resolutions_train_and_predict(samples, pool, side):
    # 56 px is covered above; full masks at the 64 px image size.
    config = tiny_config(MASK_POOL_SIZE=pool, MASK_SHAPE=(side, side), MASK_HEAD_CONVS=0)
    model = kml.build_mask_rcnn(config, "training")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=True)
    assert np.isfinite(float(model.train_on_batch(batch_from_samples(samples, config), return_dict=True)["loss"]))
    inference = kml.build_mask_rcnn(config, "inference")
    out = inference({k: batch_from_samples(samples, config)[k] for k in INFERENCE_KEYS})
    assert tuple(out["detection_masks"].shape) == (2, config.DETECTION_MAX_INSTANCES, side, side)


def test_training_and_inference_share_weights(config):
    components = kml.models.MaskRCNNComponents(config)
    training = kml.build_mask_rcnn(config, "training", components=components)
    inference = kml.build_mask_rcnn(config, "inference", components=components)
    assert training.get_layer("mask_head") is inference.get_layer("mask_head")
    assert len(inference.weights) > 0
    names = {v.path for v in inference.trainable_weights}
    assert names <= {v.path for v in training.trainable_weights}


def test_user_backbone():
    def backbone(strides):
        images = keras.Input((64, 64, 3))
        outputs, x = [], images
        for stride in strides:
            x = keras.layers.Conv2D(8, 3, strides=2 if stride else 1, padding="same")(x)
            outputs.append(x)
        return keras.Model(images, outputs[-4:])

    good = backbone([1, 1, 1, 1, 1])  # strides 2 .. 32: the last four are C2 .. C5
    model = kml.build_mask_rcnn(tiny_config(), "inference", backbone=good)
    assert {id(v) for v in model.get_layer("backbone").weights} == {id(v) for v in good.weights}
    with pytest.raises(ValueError, match="stride"):
        kml.build_mask_rcnn(tiny_config(), "inference", backbone=backbone([1, 1, 1, 0, 1]))
    with pytest.raises(ValueError, match="four feature maps"):
        kml.build_mask_rcnn(tiny_config(), "inference", backbone=keras.Model(good.input, good.outputs[:3]))


def test_resnet50_backbone_builds_without_downloading():
    config = tiny_config(BACKBONE="resnet50", IMAGE_MIN_DIM=128, IMAGE_MAX_DIM=128)
    model = kml.build_mask_rcnn(config, "inference")
    assert model.get_layer("backbone").count_params() > 20_000_000
    with pytest.raises(ValueError, match="local weights file"):
        kml.build_mask_rcnn(config.replace(BACKBONE_WEIGHTS="imagenet"), "inference")


def test_bad_arguments(config):
    with pytest.raises(ValueError, match="mode"):
        kml.build_mask_rcnn(config, mode="train")
    with pytest.raises(ValueError, match="MaskRCNNConfig"):
        kml.build_mask_rcnn({"NUM_CLASSES": 2})


def test_inference_model_saves_and_loads(tmp_path, config, samples):
    config = config.replace(DETECTION_MIN_CONFIDENCE=0.0)
    model = kml.build_mask_rcnn(config, "inference")
    favour_objects(model)
    batch = batch_from_samples(samples, config)
    inputs = {k: batch[k] for k in INFERENCE_KEYS}
    before = {k: keras.ops.convert_to_numpy(v) for k, v in model(inputs).items()}
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    after = {k: keras.ops.convert_to_numpy(v) for k, v in loaded(inputs).items()}
    for key in before:
        np.testing.assert_allclose(after[key], before[key], atol=1e-5, err_msg=key)


def test_training_model_must_output_the_losses():
    inputs = keras.Input((4,))
    with pytest.raises(ValueError, match="Missing: .*mrcnn_mask_loss"):
        kml.models.MaskRCNNTrainingModel(inputs, {"rpn_class_loss": keras.layers.Dense(1)(inputs)})


def test_small_backbone_loads_backbone_weights(tmp_path):
    from keras_maskrcnn_layers.models.backbones import build_backbone, small_backbone

    config = tiny_config()
    source = small_backbone(config.IMAGE_SHAPE)
    rng = np.random.default_rng(0)
    for variable in source.weights:
        variable.assign(rng.normal(size=variable.shape).astype("float32"))
    path = str(tmp_path / "small.weights.h5")
    source.save_weights(path)
    loaded = build_backbone(config.replace(BACKBONE_WEIGHTS=path))
    assert len(loaded.weights) == len(source.weights)
    for a, b in zip(source.weights, loaded.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), err_msg=a.path)
    with pytest.raises(ValueError, match="local weights file"):
        build_backbone(config.replace(BACKBONE_WEIGHTS=str(tmp_path / "missing.weights.h5")))


def test_unusual_settings_reach_their_layers():
    config = tiny_config(
        RPN_ANCHOR_SCALES=((6, 9), (12, 18), (24, 36), (40, 60), (80, 120)),
        RPN_ANCHOR_RATIOS=(0.25, 1.0, 3.0),
        RPN_ANCHOR_STRIDE=2,
        RPN_NMS_THRESHOLD=0.55,
        RPN_TRAIN_ANCHORS_PER_IMAGE=48,
        RPN_BBOX_STD_DEV=(0.05, 0.06, 0.15, 0.25),
        BBOX_STD_DEV=(0.11, 0.12, 0.21, 0.22),
        PRE_NMS_LIMIT=150,
        POST_NMS_ROIS_TRAINING=40,
        POST_NMS_ROIS_INFERENCE=24,
        POOL_SIZE=5,
        MASK_POOL_SIZE=10,
        MASK_SHAPE=(30, 30),
        MASK_UPSAMPLE="nearest",
        MASK_HEAD_CONVS=2,
        MASK_CLASS_AGNOSTIC=True,
        ROI_SAMPLING_RATIO=3,
        ROI_ALIGNED=False,
        TRAIN_ROIS_PER_IMAGE=12,
        ROI_POSITIVE_RATIO=0.25,
        MASK_BOX_SCALE=1.5,
        DETECTION_MAX_INSTANCES=5,
        DETECTION_MIN_CONFIDENCE=0.35,
        DETECTION_NMS_THRESHOLD=0.45,
        TOP_DOWN_PYRAMID_SIZE=24,
        FPN_CLASSIF_FC_LAYERS_SIZE=40,
    )
    components = kml.models.MaskRCNNComponents(config)
    training = kml.build_mask_rcnn(config, "training", components=components)
    inference = kml.build_mask_rcnn(config, "inference", components=components)

    expected = {
        (inference, "anchors"): {"scales": [[6, 9], [12, 18], [24, 36], [40, 60], [80, 120]],
                                 "ratios": [0.25, 1.0, 3.0], "anchor_stride": 2},
        (inference, "rpn_head"): {"anchor_stride": 2, "anchors_per_location": 6},
        (inference, "fpn"): {"filters": 24},
        (inference, "box_head"): {"fc_size": 40},
        (inference, "proposals"): {"pre_nms_topk": 150, "post_nms_topk": 24, "nms_iou_threshold": 0.55,
                                   "box_std": [0.05, 0.06, 0.15, 0.25]},
        (training, "proposals"): {"pre_nms_topk": 150, "post_nms_topk": 40, "nms_iou_threshold": 0.55},
        (inference, "box_roi_align"): {"pool_size": [5, 5], "sampling_ratio": 3, "aligned": False},
        (inference, "mask_roi_align"): {"pool_size": [10, 10], "sampling_ratio": 3, "aligned": False},
        (inference, "mask_head"): {"upsample": "nearest", "upsample_factor": 3, "num_convs": 2,
                                   "class_agnostic": True, "conv_filters": 24},
        (inference, "detections"): {"max_detections": 5, "min_confidence": 0.35, "nms_iou_threshold": 0.45,
                                    "box_std": [0.11, 0.12, 0.21, 0.22]},
        (training, "rpn_targets"): {"anchors_per_image": 48, "box_std": [0.05, 0.06, 0.15, 0.25]},
        (training, "detection_targets"): {"train_rois_per_image": 12, "roi_positive_ratio": 0.25,
                                          "mask_shape": [30, 30], "box_std": [0.11, 0.12, 0.21, 0.22],
                                          "mask_box_scale": 1.5},
    }
    def plain(value):
        return [plain(v) for v in value] if isinstance(value, (tuple, list)) else value

    for (model, layer), settings in expected.items():
        got = model.get_layer(layer).get_config()
        for key, value in settings.items():
            assert plain(got[key]) == value, (model.name, layer, key, got[key], value)
    assert tuple(inference.output["detection_masks"].shape) == (None, 5, 30, 30)

import warnings

import numpy as np
import pytest

import keras_maskrcnn_layers as kml


def test_defaults_are_matterports():
    cfg = kml.MaskRCNNConfig(NUM_CLASSES=2)
    assert cfg.RPN_ANCHOR_SCALES == (32, 64, 128, 256, 512)
    assert cfg.POOL_SIZE == 7 and cfg.MASK_POOL_SIZE == 14 and cfg.MASK_SHAPE == (28, 28)
    assert cfg.TRAIN_ROIS_PER_IMAGE == 200 and cfg.ROI_POSITIVE_RATIO == 0.33
    assert cfg.DETECTION_MIN_CONFIDENCE == 0.7 and cfg.DETECTION_NMS_THRESHOLD == 0.3
    assert cfg.BATCH_SIZE == cfg.IMAGES_PER_GPU * cfg.GPU_COUNT == 2
    assert cfg.IMAGE_SHAPE == (1024, 1024, 3)
    assert cfg.MASK_UPSAMPLE_FACTOR == 2


def test_presets_and_overrides():
    shapes = kml.MaskRCNNConfig.preset("shapes", MASK_POOL_SIZE=28, MASK_SHAPE=(56, 56))
    assert shapes.IMAGE_SHAPE == (128, 128, 3) and shapes.MASK_UPSAMPLE_FACTOR == 2
    coco = kml.MaskRCNNConfig.preset("coco")
    assert coco.BACKBONE == "resnet50" and coco.NUM_CLASSES == 81 and coco.IMAGE_MAX_DIM == 1024
    with pytest.raises(ValueError, match="preset"):
        kml.MaskRCNNConfig.preset("cells")


def test_json_round_trip():
    cfg = kml.MaskRCNNConfig.preset("shapes", RPN_ANCHOR_SCALES=(4, 8, 16, 32, 64), LOSS_WEIGHTS={
        "rpn_class_loss": 1.0, "rpn_bbox_loss": 0.5, "mrcnn_class_loss": 1.0, "mrcnn_bbox_loss": 1.0,
        "mrcnn_mask_loss": 2.0})
    again = kml.MaskRCNNConfig.from_json(cfg.to_json())
    assert again == cfg
    assert again.RPN_ANCHOR_SCALES == (4, 8, 16, 32, 64)
    assert again.LOSS_WEIGHTS["mrcnn_mask_loss"] == 2.0


class MatterportShapesConfig:
    """A matterport-style Config, as users write them (class attributes)."""

    NAME = "shapes"
    GPU_COUNT = 1
    IMAGES_PER_GPU = 8
    NUM_CLASSES = 1 + 3
    IMAGE_MIN_DIM = 128
    IMAGE_MAX_DIM = 128
    RPN_ANCHOR_SCALES = (8, 16, 32, 64, 128)
    TRAIN_ROIS_PER_IMAGE = 32
    STEPS_PER_EPOCH = 100
    VALIDATION_STEPS = 5
    BATCH_SIZE = 8  # derived in matterport; recomputed here
    IMAGE_SHAPE = (128, 128, 3)  # derived; ignored
    COMPUTE_BACKBONE_SHAPE = None  # no equivalent

    def display(self):
        pass


@pytest.mark.parametrize("source", [MatterportShapesConfig, MatterportShapesConfig()])
def test_from_matterport_class_or_instance(source):
    with pytest.warns(UserWarning, match="COMPUTE_BACKBONE_SHAPE"):
        cfg = kml.MaskRCNNConfig.from_matterport(source)
    assert cfg.NUM_CLASSES == 4 and cfg.IMAGE_SHAPE == (128, 128, 3)
    assert cfg.BATCH_SIZE == 8 and cfg.TRAIN_ROIS_PER_IMAGE == 32
    assert cfg.RPN_ANCHOR_SCALES == (8, 16, 32, 64, 128)


def test_from_matterport_train_bn_none_and_batch_size_override():
    class TrainsBatchNorm(MatterportShapesConfig):
        TRAIN_BN = None  # matterport: "None: Train BN layers. This is the normal mode"
        COMPUTE_BACKBONE_SHAPE = 0

    with pytest.warns(UserWarning):
        cfg = kml.MaskRCNNConfig.from_matterport(TrainsBatchNorm, BATCH_SIZE=4)
    assert cfg.TRAIN_BN is True
    assert cfg.BATCH_SIZE == 4 and cfg.IMAGES_PER_GPU == 4, "an asked-for batch size wins, as in preset()"


def test_numpy_scalars_are_numbers():
    cfg = kml.MaskRCNNConfig(
        NUM_CLASSES=np.int64(3),
        LEARNING_RATE=np.float32(0.01),
        LOSS_WEIGHTS={name: np.float32(1.5) for name in kml.layers.LOSS_NAMES},
    )
    assert cfg.LOSS_WEIGHTS["mrcnn_mask_loss"] == 1.5 and isinstance(cfg.LOSS_WEIGHTS["mrcnn_mask_loss"], float)
    assert kml.MaskRCNNConfig.from_json(cfg.to_json()) == cfg


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"NUM_CLASSES": 1}, "NUM_CLASSES"),
        ({"NUM_CLASSES": 2, "MASK_POOL_SIZE": 14, "MASK_SHAPE": (36, 36)}, "MASK_SHAPE"),
        ({"NUM_CLASSES": 2, "MASK_SHAPE": (28, 56)}, "MASK_SHAPE"),
        ({"NUM_CLASSES": 2, "IMAGE_MAX_DIM": 1000}, "multiple of 64"),
        ({"NUM_CLASSES": 2, "IMAGE_RESIZE_MODE": "crop"}, "IMAGE_RESIZE_MODE"),
        ({"NUM_CLASSES": 2, "RPN_ANCHOR_SCALES": (32, 64, 128)}, "RPN_ANCHOR_SCALES"),
        ({"NUM_CLASSES": 2, "RPN_NMS_THRESHOLD": 1.5}, "RPN_NMS_THRESHOLD"),
        ({"NUM_CLASSES": 2, "POST_NMS_ROIS_TRAINING": 7000}, "PRE_NMS_LIMIT"),
        ({"NUM_CLASSES": 2, "IMAGE_MIN_DIM": 2048}, "IMAGE_MIN_DIM"),
        ({"NUM_CLASSES": 2, "MASK_UPSAMPLE": "cubic"}, "MASK_UPSAMPLE"),
        ({"NUM_CLASSES": 2, "BACKBONE": "vgg"}, "BACKBONE"),
        ({"NUM_CLASSES": 2, "MEAN_PIXEL": (1.0, 2.0)}, "MEAN_PIXEL"),
        ({"NUM_CLASSES": 2, "POOL_SIZE": 0}, "POOL_SIZE"),
        ({"NUM_CLASSES": 2, "OPTIMIZER": "lbfgs"}, "OPTIMIZER"),
        ({"NUM_CLASSES": 2, "MASK_BOX_SCALE": 0.8}, "MASK_BOX_SCALE"),
        ({"NUM_CLASSES": 2, "MASK_BOX_SCALE": 5}, "MASK_BOX_SCALE"),
        ({"NUM_CLASSES": 2, "MASK_PASTE_PADDING": -1}, "MASK_PASTE_PADDING"),
        ({"NUM_CLASSES": 2, "DETECTION_MASK_THRESHOLD": 1.2}, "DETECTION_MASK_THRESHOLD"),
        ({"NUM_CLASSES": 2, "DETECTION_MASK_THRESHOLD": 0.0}, "DETECTION_MASK_THRESHOLD"),
        ({"NUM_CLASSES": 2, "NUM_CLASSE": 3}, "Unknown setting"),
    ],
)
def test_inconsistent_configurations_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        kml.MaskRCNNConfig(**settings)


def test_mask_resolutions_that_work():
    for pool, shape in [(14, 28), (14, 56), (28, 56), (28, 112), (7, 28)]:
        cfg = kml.MaskRCNNConfig(NUM_CLASSES=2, MASK_POOL_SIZE=pool, MASK_SHAPE=(shape, shape), MINI_MASK_SHAPE=(112, 112))
        assert cfg.MASK_UPSAMPLE_FACTOR == shape // pool


def test_small_mini_masks_warn():
    with pytest.warns(UserWarning, match="MINI_MASK_SHAPE"):
        kml.MaskRCNNConfig(NUM_CLASSES=2, MASK_POOL_SIZE=28, MASK_SHAPE=(56, 56), MINI_MASK_SHAPE=(28, 28))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kml.MaskRCNNConfig(NUM_CLASSES=2, USE_MINI_MASK=False, MASK_POOL_SIZE=28, MASK_SHAPE=(56, 56),
                           MINI_MASK_SHAPE=(28, 28))


def test_setting_attributes_is_validated():
    cfg = kml.MaskRCNNConfig(NUM_CLASSES=3)
    cfg.DETECTION_MIN_CONFIDENCE = 0.5
    assert cfg.DETECTION_MIN_CONFIDENCE == 0.5
    with pytest.raises(ValueError, match="NUM_CLASSES"):
        cfg.NUM_CLASSES = 1
    assert cfg.NUM_CLASSES == 3


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    "name, value",
    [
        # NaN and infinity: `x <= 0` is False for NaN, so range checks alone let them through.
        ("MEAN_PIXEL", (123.7, NAN, 103.9)),
        ("MEAN_PIXEL", "123"),
        ("RPN_ANCHOR_RATIOS", (0.5, 1, INF)),
        ("RPN_ANCHOR_RATIOS", (0.5, NAN)),
        ("RPN_ANCHOR_RATIOS", (True, 1)),
        ("RPN_ANCHOR_SCALES", (32, 64, NAN, 256, 512)),
        ("RPN_ANCHOR_SCALES", (32, 64, 128, 256, -512)),
        ("RPN_ANCHOR_SCALES", ((32, 40), (64, 80), (128,), (256, 300), (512, 600))),
        ("RPN_ANCHOR_SCALES", 32),
        ("BBOX_STD_DEV", (0.1, 0.1, NAN, 0.2)),
        ("RPN_BBOX_STD_DEV", (0.1, 0.1, 0.2, INF)),
        ("DETECTION_MIN_CONFIDENCE", NAN),
        ("MASK_BOX_SCALE", NAN),
        ("LEARNING_RATE", "0.01"),
        ("LEARNING_RATE", NAN),
        ("LEARNING_RATE", 0),
        ("LEARNING_MOMENTUM", 1.0),
        ("LEARNING_MOMENTUM", -0.1),
        ("LEARNING_MOMENTUM", NAN),
        ("LEARNING_MOMENTUM", "0.9"),
        ("WEIGHT_DECAY", -1e-4),
        ("WEIGHT_DECAY", NAN),
        ("GRADIENT_CLIP_NORM", -1.0),
        ("GRADIENT_CLIP_NORM", INF),
        ("GRADIENT_CLIP_NORM", "5"),
        ("IMAGE_MIN_SCALE", -1),
        ("IMAGE_MIN_SCALE", NAN),
        ("IMAGE_MIN_SCALE", None),
        # Booleans must be real booleans: the string "False" is truthy.
        ("TRAIN_BN", "False"),
        ("USE_MINI_MASK", "False"),
        ("ROI_ALIGNED", 1),
        ("MASK_CLASS_AGNOSTIC", None),
        ("VALIDATION_STEPS", 0),
        ("MASK_HEAD_CONVS", -1),
        ("MASK_HEAD_CONVS", 1.5),
        ("MASK_SHAPE", (28.0, 28.0)),
        ("MINI_MASK_SHAPE", (True, 56)),
        ("BACKBONE_WEIGHTS", 3),
    ],
)
def test_bad_values_raise_value_error_naming_setting_and_value(name, value):
    with pytest.raises(ValueError) as error:
        kml.MaskRCNNConfig(NUM_CLASSES=2, **{name: value})
    message = str(error.value)
    assert f"`{name}`" in message and repr(value) in message, message


def test_bad_loss_weight_is_refused():
    weights = {**kml.config.DEFAULTS["LOSS_WEIGHTS"], "mrcnn_mask_loss": float("nan")}
    with pytest.raises(ValueError, match=r"LOSS_WEIGHTS\['mrcnn_mask_loss'\].*nan"):
        kml.MaskRCNNConfig(NUM_CLASSES=2, LOSS_WEIGHTS=weights)
    with pytest.raises(ValueError, match="LOSS_WEIGHTS"):
        kml.MaskRCNNConfig(NUM_CLASSES=2, LOSS_WEIGHTS=1.0)


def test_values_that_stay_valid():
    import numpy as np

    cfg = kml.MaskRCNNConfig(
        NUM_CLASSES=2, GRADIENT_CLIP_NORM=None, WEIGHT_DECAY=0, IMAGE_MIN_SCALE=2.5, LEARNING_MOMENTUM=0.0,
        MEAN_PIXEL=np.array([1.0, 2.0, 3.0], np.float32), RPN_ANCHOR_RATIOS=(np.float64(0.5), 1, 2),
        RPN_ANCHOR_SCALES=((32, 40), (64, 80), (128, 160), (256, 320), (512, 640)), TRAIN_BN=np.bool_(True),
    )
    assert cfg.MEAN_PIXEL == (1.0, 2.0, 3.0) and cfg.TRAIN_BN is True
    for name in kml.config.PRESETS:
        kml.MaskRCNNConfig.preset(name)


def test_callable_backbone_points_to_the_backbone_argument():
    def backbone(images):
        return images

    with pytest.raises(ValueError, match=r"BACKBONE.*build_mask_rcnn\(config, backbone=model\)"):
        kml.MaskRCNNConfig(NUM_CLASSES=2, BACKBONE=backbone)

    class WithCallableBackbone(MatterportShapesConfig):
        BACKBONE = backbone

    # matterport allows a callable BACKBONE; porting such a config says it was not taken.
    with pytest.warns(UserWarning, match=r"BACKBONE \(a callable"):
        cfg = kml.MaskRCNNConfig.from_matterport(WithCallableBackbone)
    assert cfg.BACKBONE == kml.config.DEFAULTS["BACKBONE"]


def test_batch_size_stays_images_per_gpu_times_gpu_count():
    cfg = kml.MaskRCNNConfig(NUM_CLASSES=2)
    cfg.IMAGES_PER_GPU = 4
    assert (cfg.BATCH_SIZE, cfg.IMAGES_PER_GPU) == (4, 4)
    cfg.GPU_COUNT = 2
    assert cfg.BATCH_SIZE == 8
    cfg.BATCH_SIZE = 6
    assert (cfg.BATCH_SIZE, cfg.IMAGES_PER_GPU, cfg.GPU_COUNT) == (6, 3, 2)
    assert cfg.replace(IMAGES_PER_GPU=1).BATCH_SIZE == 2
    assert cfg.replace(BATCH_SIZE=10).IMAGES_PER_GPU == 5
    # A batch size asked of a preset wins over the preset's IMAGES_PER_GPU.
    shapes = kml.MaskRCNNConfig.preset("shapes", BATCH_SIZE=2)
    assert (shapes.BATCH_SIZE, shapes.IMAGES_PER_GPU) == (2, 2)
    assert kml.MaskRCNNConfig.from_json(shapes.to_json()) == shapes
    with pytest.raises(ValueError, match=r"`BATCH_SIZE` \(3\).*`IMAGES_PER_GPU` \(2\)"):
        kml.MaskRCNNConfig(NUM_CLASSES=2, IMAGES_PER_GPU=2, BATCH_SIZE=3)
    with pytest.raises(ValueError, match=r"`BATCH_SIZE` \(3\).*`GPU_COUNT` \(2\)"):
        kml.MaskRCNNConfig(NUM_CLASSES=2, GPU_COUNT=2, BATCH_SIZE=3)
    with pytest.raises(ValueError, match="BATCH_SIZE"):
        cfg.BATCH_SIZE = 7  # not a multiple of GPU_COUNT = 2
    assert (cfg.BATCH_SIZE, cfg.IMAGES_PER_GPU) == (6, 3)


def test_json_written_with_disagreeing_batch_size_keeps_batch_size():
    import json

    legacy = json.loads(kml.MaskRCNNConfig(NUM_CLASSES=2).to_json())
    legacy.update(BATCH_SIZE=2, IMAGES_PER_GPU=8)
    with pytest.warns(UserWarning, match="BATCH_SIZE 2 disagrees"):
        cfg = kml.MaskRCNNConfig.from_json(json.dumps(legacy))
    assert (cfg.BATCH_SIZE, cfg.IMAGES_PER_GPU) == (2, 2)

"""`MaskRCNNConfig`: every setting of a Mask R-CNN under matterport's names, validated together."""

import copy
import json
import math
import os
import warnings

import numpy as np

# Matterport's `mrcnn/config.py` defaults, plus our own knobs (marked "ours").
DEFAULTS = {
    "NAME": "mask_rcnn",
    "GPU_COUNT": 1,
    "IMAGES_PER_GPU": 2,
    "BATCH_SIZE": None,  # derived: IMAGES_PER_GPU * GPU_COUNT; or give it instead of IMAGES_PER_GPU
    "STEPS_PER_EPOCH": 1000,
    "VALIDATION_STEPS": 50,
    "BACKBONE": "resnet101",
    "BACKBONE_WEIGHTS": None,  # ours: None, or a local weights file
    "BACKBONE_STRIDES": (4, 8, 16, 32, 64),
    "FPN_CLASSIF_FC_LAYERS_SIZE": 1024,
    "TOP_DOWN_PYRAMID_SIZE": 256,
    "NUM_CLASSES": 1,
    "RPN_ANCHOR_SCALES": (32, 64, 128, 256, 512),
    "RPN_ANCHOR_RATIOS": (0.5, 1, 2),
    "RPN_ANCHOR_STRIDE": 1,
    "RPN_NMS_THRESHOLD": 0.7,
    "RPN_TRAIN_ANCHORS_PER_IMAGE": 256,
    "PRE_NMS_LIMIT": 6000,
    "POST_NMS_ROIS_TRAINING": 2000,
    "POST_NMS_ROIS_INFERENCE": 1000,
    "USE_MINI_MASK": True,
    "MINI_MASK_SHAPE": (56, 56),
    "IMAGE_RESIZE_MODE": "square",
    "IMAGE_MIN_DIM": 800,
    "IMAGE_MAX_DIM": 1024,
    "IMAGE_MIN_SCALE": 0,
    "IMAGE_CHANNEL_COUNT": 3,
    "MEAN_PIXEL": (123.7, 116.8, 103.9),
    "TRAIN_ROIS_PER_IMAGE": 200,
    "ROI_POSITIVE_RATIO": 0.33,
    "POOL_SIZE": 7,
    "MASK_POOL_SIZE": 14,
    "MASK_SHAPE": (28, 28),
    "MASK_UPSAMPLE": "transpose",  # ours: MaskHead upsampling mode
    "MASK_HEAD_CONVS": 4,  # ours
    "MASK_CLASS_AGNOSTIC": False,  # ours
    "ROI_SAMPLING_RATIO": 2,  # ours: ROI Align samples per bin and axis
    "ROI_ALIGNED": True,  # ours: half-pixel aligned ROI Align
    "MAX_GT_INSTANCES": 100,
    "RPN_BBOX_STD_DEV": (0.1, 0.1, 0.2, 0.2),
    "BBOX_STD_DEV": (0.1, 0.1, 0.2, 0.2),
    "DETECTION_MAX_INSTANCES": 100,
    "DETECTION_MIN_CONFIDENCE": 0.7,
    "DETECTION_NMS_THRESHOLD": 0.3,
    "DETECTION_MASK_THRESHOLD": 0.5,  # ours: threshold of pasted masks
    "MASK_PASTE_PADDING": 1,  # ours: zero cells around a mask before it is pasted (Detectron2)
    # ours: the mask branch crops and pastes boxes scaled by this about their centres. 1.0 is
    # matterport's behaviour; 1.25 raised mask AP on the shapes (docs/mask_size.md, knob 4).
    "MASK_BOX_SCALE": 1.0,
    "OPTIMIZER": "sgd",  # ours: "sgd" (matterport's, with momentum) or "adam"
    "LR_SCHEDULE": "constant",  # ours: "constant" (matterport's) or "cosine" decay over the fit
    "LEARNING_RATE": 0.001,
    "LEARNING_MOMENTUM": 0.9,
    "WEIGHT_DECAY": 0.0001,
    "LOSS_WEIGHTS": {
        "rpn_class_loss": 1.0,
        "rpn_bbox_loss": 1.0,
        "mrcnn_class_loss": 1.0,
        "mrcnn_bbox_loss": 1.0,
        "mrcnn_mask_loss": 1.0,
    },
    "TRAIN_BN": False,
    "GRADIENT_CLIP_NORM": 5.0,
}

PRESETS = {
    # Generated shapes on 128 px images: a small backbone that trains on two
    # CPU cores in minutes. Anchor scales follow the objects (8..128 px).
    "shapes": {
        "NAME": "shapes",
        "NUM_CLASSES": 4,
        "BACKBONE": "small",
        "IMAGE_MIN_DIM": 128,
        "IMAGE_MAX_DIM": 128,
        "IMAGES_PER_GPU": 8,
        "USE_MINI_MASK": False,
        "RPN_ANCHOR_SCALES": (8, 16, 32, 64, 128),
        "TOP_DOWN_PYRAMID_SIZE": 64,
        "FPN_CLASSIF_FC_LAYERS_SIZE": 256,
        "PRE_NMS_LIMIT": 1000,
        "POST_NMS_ROIS_TRAINING": 200,
        "POST_NMS_ROIS_INFERENCE": 100,
        "TRAIN_ROIS_PER_IMAGE": 32,
        "MAX_GT_INSTANCES": 8,
        "MASK_HEAD_CONVS": 2,
        "DETECTION_MAX_INSTANCES": 10,
        "DETECTION_MIN_CONFIDENCE": 0.5,
        "STEPS_PER_EPOCH": 50,
        "VALIDATION_STEPS": 5,
        # From scratch, so BatchNorm trains (frozen, it stays at mean 0 and
        # variance 1). `make demo` at 8834dcb: mask AP 0.699 -> 0.731, box AP
        # 0.653 -> 0.673, in the same time.
        "TRAIN_BN": True,
        # From scratch in minutes: Adam, decayed to a twentieth over the fit.
        "OPTIMIZER": "adam",
        "LEARNING_RATE": 0.002,
        "LR_SCHEDULE": "cosine",
    },
    # The paper's setting: ResNet-50-FPN on 1024 px images, COCO's 81 classes.
    "coco": {
        "NAME": "coco",
        "NUM_CLASSES": 81,
        "BACKBONE": "resnet50",
        "IMAGE_MIN_DIM": 800,
        "IMAGE_MAX_DIM": 1024,
    },
}

RESIZE_MODES = ("square", "pad64", "none")
BACKBONES = ("resnet50", "resnet101", "small")
UPSAMPLE_MODES = ("transpose", "bilinear", "nearest")
OPTIMIZERS = ("sgd", "adam")
LR_SCHEDULES = ("constant", "cosine")


def resize_geometry(height, width, min_dim, max_dim, min_scale, mode):
    """Where an image of `(height, width)` lands in the network input under matterport's resize modes.

    The arithmetic of `kml.data.resize_image` without any pixels, so that
    box statistics (such as the anchor tools') need neither images nor
    TensorFlow. See `resize_image` for the modes.

    Returns:
        Tuple `(scale, (new_height, new_width), (top, left))`: input pixel =
        original pixel * scale + (top, left). The resized image may exceed
        `max_dim` in modes `"pad64"` and `"none"`, which never scale down;
        callers decide what that means.

    Example:

    >>> from keras_maskrcnn_layers.config import resize_geometry
    >>> resize_geometry(64, 32, 128, 128, 0, "square")
    (2.0, (128, 64), (0, 32))
    """
    scale = 1.0
    if mode != "none":
        if min_dim:
            scale = max(1.0, min_dim / min(height, width))
        if min_scale and scale < min_scale:
            scale = float(min_scale)
        if mode == "square" and round(max(height, width) * scale) > max_dim:
            scale = max_dim / max(height, width)
    new_height, new_width = max(1, int(round(height * scale))), max(1, int(round(width * scale)))
    if mode == "none":
        return float(scale), (new_height, new_width), (0, 0)
    return float(scale), (new_height, new_width), ((max_dim - new_height) // 2, (max_dim - new_width) // 2)


def _plain(value):
    """JSON-friendly copy: tuples and arrays become lists."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value


def _tuple(value):
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return tuple(_tuple(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    """A finite real number: not a bool, a string, NaN or infinity."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _derive_batch_size(values, given_images_per_gpu):
    """Keeps `BATCH_SIZE = IMAGES_PER_GPU * GPU_COUNT`, deriving the one not given (in place)."""
    batch, per_gpu, gpus = values["BATCH_SIZE"], values["IMAGES_PER_GPU"], values["GPU_COUNT"]
    if not (_is_int(per_gpu) and _is_int(gpus)):
        return  # validate() names the bad value
    if batch is None:
        values["BATCH_SIZE"] = per_gpu * gpus
    elif not given_images_per_gpu and _is_int(batch) and gpus > 0 and batch % gpus == 0:
        values["IMAGES_PER_GPU"] = batch // gpus


def _override(settings, overrides):
    """`settings` updated with `overrides`, where a `BATCH_SIZE` asked for
    without `IMAGES_PER_GPU` wins: the old `IMAGES_PER_GPU` is dropped, to
    be derived from it."""
    merged = {**settings, **overrides}
    if overrides.get("BATCH_SIZE") is not None and "IMAGES_PER_GPU" not in overrides:
        merged.pop("IMAGES_PER_GPU", None)
    return merged


class MaskRCNNConfig:
    """Every setting of a Mask R-CNN, under the names of matterport's `Config`.

    Settings are upper-case attributes; unknown names raise so that typos do
    not pass silently. The whole configuration is validated on creation:
    combinations that cannot work raise a `ValueError` naming the settings.
    `NUM_CLASSES` must be given: it counts the background, so it is at least
    2, and matterport's default of 1 is refused.

    Example:

    >>> import keras_maskrcnn_layers as kml
    >>> cfg = kml.MaskRCNNConfig.preset("shapes", MASK_POOL_SIZE=28, MASK_SHAPE=(56, 56))
    >>> cfg.IMAGE_SHAPE, cfg.BATCH_SIZE, cfg.MASK_UPSAMPLE_FACTOR
    ((128, 128, 3), 8, 2)
    >>> kml.MaskRCNNConfig.from_json(cfg.to_json()) == cfg
    True
    """

    def __init__(self, **settings):
        values = copy.deepcopy(DEFAULTS)
        unknown = sorted(set(settings) - set(DEFAULTS))
        if unknown:
            raise ValueError(f"Unknown setting(s) {unknown}. Known settings: {sorted(DEFAULTS)}")
        values.update(
            {
                k: {name: _tuple(w) for name, w in v.items()} if k == "LOSS_WEIGHTS" and isinstance(v, dict)
                else _tuple(v)
                for k, v in settings.items()
            }
        )
        if isinstance(values["BACKBONE_WEIGHTS"], os.PathLike):
            values["BACKBONE_WEIGHTS"] = os.fspath(values["BACKBONE_WEIGHTS"])  # JSON holds strings
        _derive_batch_size(values, given_images_per_gpu="IMAGES_PER_GPU" in settings)
        object.__setattr__(self, "_values", values)
        self.validate()

    # === Construction ===

    @classmethod
    def preset(cls, name, **overrides):
        """A named starting point (`"shapes"` or `"coco"`) with overrides."""
        if name not in PRESETS:
            raise ValueError(f"Unknown preset {name!r}. Available: {sorted(PRESETS)}")
        return cls(**_override(PRESETS[name], overrides))

    @classmethod
    def from_matterport(cls, config, **overrides):
        """From a matterport-style `Config` subclass or instance.

        Every upper-case attribute whose name this config knows is taken
        (matterport's derived `BATCH_SIZE`, `IMAGE_SHAPE` and
        `IMAGE_META_SIZE` are recomputed here); other upper-case attributes
        are reported in one warning and ignored.
        """
        source = config() if isinstance(config, type) else config
        taken, ignored = {}, []
        for name in dir(source):
            if not name.isupper() or name.startswith("_"):
                continue
            value = getattr(source, name)
            if callable(value):
                if name == "BACKBONE":
                    ignored.append("BACKBONE (a callable: pass the model as build_mask_rcnn(backbone=...))")
                continue
            if name in ("IMAGE_SHAPE", "IMAGE_META_SIZE"):
                continue
            if name in DEFAULTS:
                taken[name] = value
            else:
                ignored.append(name)
        if ignored:
            warnings.warn(f"Ignored matterport settings with no equivalent here: {sorted(ignored)}", stacklevel=2)
        taken.pop("BATCH_SIZE", None)
        if "TRAIN_BN" in taken and taken["TRAIN_BN"] is None:
            # matterport: "None: Train BN layers. This is the normal mode".
            taken["TRAIN_BN"] = True
        return cls(**_override(taken, overrides))

    def to_json(self):
        return json.dumps(_plain(self._values), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text):
        values = json.loads(text)
        if not isinstance(values, dict):
            raise ValueError(f"`text` must hold a JSON object of settings. Received: {type(values).__name__}")
        batch, per_gpu, gpus = (values.get(k) for k in ("BATCH_SIZE", "IMAGES_PER_GPU", "GPU_COUNT"))
        if all(isinstance(x, int) for x in (batch, per_gpu, gpus)) and batch != per_gpu * gpus:
            # Written before BATCH_SIZE and IMAGES_PER_GPU were kept consistent: BATCH_SIZE is what was used.
            warnings.warn(
                f"BATCH_SIZE {batch} disagrees with IMAGES_PER_GPU {per_gpu} x GPU_COUNT {gpus}; "
                "keeping BATCH_SIZE and deriving IMAGES_PER_GPU from it.",
                stacklevel=2,
            )
            del values["IMAGES_PER_GPU"]
        return cls(**values)

    def to_dict(self):
        return _plain(self._values)

    def replace(self, **overrides):
        """A copy with some settings changed (and validated again).

        `BATCH_SIZE` stays `IMAGES_PER_GPU * GPU_COUNT`: changing either
        factor re-derives the batch size, and changing `BATCH_SIZE` alone
        re-derives `IMAGES_PER_GPU`.
        """
        values = _override(self._values, overrides)
        if overrides.get("BATCH_SIZE") is None and ("IMAGES_PER_GPU" in overrides or "GPU_COUNT" in overrides):
            values["BATCH_SIZE"] = None
        return MaskRCNNConfig(**values)

    # === Attribute access ===

    def __getattr__(self, name):
        values = object.__getattribute__(self, "_values")
        if name in values:
            return values[name]
        raise AttributeError(name)

    def __setattr__(self, name, value):
        if name not in DEFAULTS:
            raise ValueError(f"Unknown setting {name!r}.")
        # Validates the whole before changing anything, and keeps BATCH_SIZE
        # = IMAGES_PER_GPU * GPU_COUNT as `replace` does.
        object.__setattr__(self, "_values", self.replace(**{name: value})._values)

    def __eq__(self, other):
        return isinstance(other, MaskRCNNConfig) and self.to_dict() == other.to_dict()

    def __repr__(self):
        lines = [f"  {k} = {v!r}" for k, v in sorted(self._values.items())]
        derived = [f"  {k} = {getattr(self, k)!r}  (derived)" for k in ("IMAGE_SHAPE", "MASK_UPSAMPLE_FACTOR")]
        return "MaskRCNNConfig(\n" + "\n".join(lines + derived) + "\n)"

    # === Derived settings ===

    @property
    def IMAGE_SHAPE(self):  # noqa: N802 (matterport's name)
        """The network input shape `(height, width, channels)`."""
        c = self.IMAGE_CHANNEL_COUNT
        if self.IMAGE_RESIZE_MODE == "square":
            return (self.IMAGE_MAX_DIM, self.IMAGE_MAX_DIM, c)
        # "pad64" and "none" keep one fixed size: IMAGE_MAX_DIM square, so the
        # graph has static shapes (inputs must fit in it).
        return (self.IMAGE_MAX_DIM, self.IMAGE_MAX_DIM, c)

    @property
    def MASK_UPSAMPLE_FACTOR(self):  # noqa: N802
        return self.MASK_SHAPE[0] // self.MASK_POOL_SIZE

    @property
    def anchor_scales_per_level(self):
        return self.RPN_ANCHOR_SCALES

    # === Validation ===

    def validate(self):
        v = self._values

        def fail(message):
            raise ValueError(message)

        def integer(name, minimum=1):
            value = v[name]
            if not _is_int(value) or value < minimum:
                kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
                fail(f"`{name}` must be {kind}. Received: {name}={value!r}")

        def number(name, accept, bounds, allow_none=False):
            value = v[name]
            if value is None and allow_none:
                return
            if not _is_number(value) or not accept(value):
                none = " (or None for off)" if allow_none else ""
                fail(f"`{name}` must be a finite number {bounds}{none}. Received: {name}={value!r}")

        def numbers(name, length=None, positive=False):
            value = v[name]
            if (
                not isinstance(value, tuple)
                or not value
                or (length is not None and len(value) != length)
                or any(not _is_number(x) or (positive and x <= 0) for x in value)
            ):
                count = "" if length is None else f"{length} "
                kind = "positive finite numbers" if positive else "finite numbers"
                fail(f"`{name}` must be {count}{kind}. Received: {name}={value!r}")

        def boolean(name):
            if not isinstance(v[name], bool):
                fail(f"`{name}` must be True or False. Received: {name}={v[name]!r} ({type(v[name]).__name__})")

        # === Types and ranges of single settings ===
        for name in (
            "NUM_CLASSES", "GPU_COUNT", "IMAGES_PER_GPU", "BATCH_SIZE", "STEPS_PER_EPOCH", "VALIDATION_STEPS",
            "IMAGE_MAX_DIM", "IMAGE_MIN_DIM", "TOP_DOWN_PYRAMID_SIZE", "FPN_CLASSIF_FC_LAYERS_SIZE",
            "RPN_ANCHOR_STRIDE", "RPN_TRAIN_ANCHORS_PER_IMAGE", "PRE_NMS_LIMIT", "POST_NMS_ROIS_TRAINING",
            "POST_NMS_ROIS_INFERENCE", "TRAIN_ROIS_PER_IMAGE", "POOL_SIZE", "MASK_POOL_SIZE", "MAX_GT_INSTANCES",
            "DETECTION_MAX_INSTANCES", "ROI_SAMPLING_RATIO", "IMAGE_CHANNEL_COUNT",
        ):
            integer(name)
        for name in ("TRAIN_BN", "USE_MINI_MASK", "ROI_ALIGNED", "MASK_CLASS_AGNOSTIC"):
            boolean(name)
        if v["NUM_CLASSES"] < 2:
            fail(f"`NUM_CLASSES` counts the background, so it must be >= 2. Received: NUM_CLASSES={v['NUM_CLASSES']}")
        if v["BATCH_SIZE"] != v["IMAGES_PER_GPU"] * v["GPU_COUNT"]:
            fail(
                f"`BATCH_SIZE` ({v['BATCH_SIZE']}) must equal `IMAGES_PER_GPU` ({v['IMAGES_PER_GPU']}) x "
                f"`GPU_COUNT` ({v['GPU_COUNT']}). Give BATCH_SIZE or IMAGES_PER_GPU, not both: the other is "
                "derived (BATCH_SIZE must then be a multiple of GPU_COUNT)."
            )
        for name in ("RPN_NMS_THRESHOLD", "DETECTION_MIN_CONFIDENCE", "DETECTION_NMS_THRESHOLD",
                     "ROI_POSITIVE_RATIO"):
            number(name, lambda x: 0 <= x <= 1, "in [0, 1]")
        # 0 would mark every pixel of the image as the mask (`paste_masks`).
        number("DETECTION_MASK_THRESHOLD", lambda x: 0 < x <= 1, "in (0, 1]")
        number("IMAGE_MIN_SCALE", lambda x: x >= 0, ">= 0")
        number("LEARNING_RATE", lambda x: x > 0, "> 0")
        number("LEARNING_MOMENTUM", lambda x: 0 <= x < 1, "in [0, 1)")
        # None or 0 turns weight decay and gradient clipping off, as in Keras's optimizers.
        number("WEIGHT_DECAY", lambda x: x >= 0, ">= 0", allow_none=True)
        number("GRADIENT_CLIP_NORM", lambda x: x >= 0, ">= 0", allow_none=True)
        backbone = v["BACKBONE"]
        if callable(backbone):
            fail(
                "`BACKBONE` must be one of "
                f"{BACKBONES}; a model or a function is not a setting (it cannot be saved with the config). "
                "Pass your model as `build_mask_rcnn(config, backbone=model)` or `MaskRCNN(config, backbone=model)`. "
                f"Received: BACKBONE={backbone!r}"
            )
        if not isinstance(backbone, str) or backbone not in BACKBONES:
            fail(f"`BACKBONE` must be one of {BACKBONES}. Received: BACKBONE={backbone!r}")
        weights = v["BACKBONE_WEIGHTS"]
        if weights is not None and not isinstance(weights, str):
            fail(f"`BACKBONE_WEIGHTS` must be None or the path of a local weights file. Received: {weights!r}")
        if v["IMAGE_RESIZE_MODE"] not in RESIZE_MODES:
            fail(f"`IMAGE_RESIZE_MODE` must be one of {RESIZE_MODES}. Received: {v['IMAGE_RESIZE_MODE']!r}")
        if v["MASK_UPSAMPLE"] not in UPSAMPLE_MODES:
            fail(f"`MASK_UPSAMPLE` must be one of {UPSAMPLE_MODES}. Received: {v['MASK_UPSAMPLE']!r}")
        if v["OPTIMIZER"] not in OPTIMIZERS:
            fail(f"`OPTIMIZER` must be one of {OPTIMIZERS}. Received: OPTIMIZER={v['OPTIMIZER']!r}")
        if v["LR_SCHEDULE"] not in LR_SCHEDULES:
            fail(f"`LR_SCHEDULE` must be one of {LR_SCHEDULES}. Received: LR_SCHEDULE={v['LR_SCHEDULE']!r}")
        integer("MASK_HEAD_CONVS", minimum=0)
        integer("MASK_PASTE_PADDING", minimum=0)
        box_scale = v["MASK_BOX_SCALE"]
        if not _is_number(box_scale) or not 1.0 <= box_scale <= 4.0:
            fail(
                "`MASK_BOX_SCALE` must be a number in [1, 4]: masks are predicted over the box enlarged by it "
                f"(1.0 = the box itself). Received: MASK_BOX_SCALE={box_scale!r}"
            )
        numbers("MEAN_PIXEL")
        numbers("RPN_ANCHOR_RATIOS", positive=True)
        numbers("RPN_BBOX_STD_DEV", length=4, positive=True)
        numbers("BBOX_STD_DEV", length=4, positive=True)
        for name in ("MASK_SHAPE", "MINI_MASK_SHAPE"):
            shape = v[name]
            if not isinstance(shape, tuple) or len(shape) != 2 or any(not _is_int(x) or x < 1 for x in shape):
                fail(f"`{name}` must be (height, width), two positive integers. Received: {name}={shape!r}")
        weights = v["LOSS_WEIGHTS"]
        if not isinstance(weights, dict):
            fail(f"`LOSS_WEIGHTS` must be a dict from loss names to numbers. Received: LOSS_WEIGHTS={weights!r}")
        missing = set(DEFAULTS["LOSS_WEIGHTS"]) - set(weights)
        if missing:
            fail(f"`LOSS_WEIGHTS` lacks {sorted(missing)}.")
        for name, weight in weights.items():
            if not _is_number(weight) or weight < 0:
                fail(f"`LOSS_WEIGHTS[{name!r}]` must be a finite number >= 0. Received: {weight!r}")

        # === Settings that must agree ===
        if v["IMAGE_MIN_DIM"] > v["IMAGE_MAX_DIM"]:
            fail(f"`IMAGE_MIN_DIM` ({v['IMAGE_MIN_DIM']}) must not exceed `IMAGE_MAX_DIM` ({v['IMAGE_MAX_DIM']}).")
        if v["IMAGE_MAX_DIM"] % 64 != 0:
            # Six poolings of a ResNet-FPN (P6 at stride 64) must divide the input.
            fail(
                f"`IMAGE_MAX_DIM` must be a multiple of 64 so that P2..P6 tile the input exactly "
                f"(mode {v['IMAGE_RESIZE_MODE']!r}). Received: IMAGE_MAX_DIM={v['IMAGE_MAX_DIM']}"
            )
        strides = v["BACKBONE_STRIDES"]
        scales = v["RPN_ANCHOR_SCALES"]
        if not isinstance(strides, tuple) or list(strides) != [4, 8, 16, 32, 64]:
            fail(f"`BACKBONE_STRIDES` must be (4, 8, 16, 32, 64) for an FPN with P2..P6. Received: {strides!r}")
        if not isinstance(scales, tuple) or len(scales) != len(strides):
            fail(
                f"`RPN_ANCHOR_SCALES` needs one entry per level of `BACKBONE_STRIDES` ({len(strides)}). "
                f"Received: RPN_ANCHOR_SCALES={scales!r}"
            )
        per_level = [s if isinstance(s, tuple) else (s,) for s in scales]
        if any(not level or any(not _is_number(s) or s <= 0 for s in level) for level in per_level) or len(
            {len(level) for level in per_level}
        ) != 1:
            fail(
                "`RPN_ANCHOR_SCALES` must hold one positive finite number per level, or one tuple of them per "
                f"level with the same count on every level. Received: RPN_ANCHOR_SCALES={scales!r}"
            )
        if v["POST_NMS_ROIS_TRAINING"] > v["PRE_NMS_LIMIT"] or v["POST_NMS_ROIS_INFERENCE"] > v["PRE_NMS_LIMIT"]:
            fail(
                "`POST_NMS_ROIS_TRAINING` and `POST_NMS_ROIS_INFERENCE` cannot exceed `PRE_NMS_LIMIT` "
                f"({v['PRE_NMS_LIMIT']}). Received: {v['POST_NMS_ROIS_TRAINING']}, {v['POST_NMS_ROIS_INFERENCE']}"
            )
        if v["TRAIN_ROIS_PER_IMAGE"] > v["POST_NMS_ROIS_TRAINING"] + v["MAX_GT_INSTANCES"]:
            fail(
                f"`TRAIN_ROIS_PER_IMAGE` ({v['TRAIN_ROIS_PER_IMAGE']}) cannot exceed the proposals available "
                f"in training (`POST_NMS_ROIS_TRAINING` {v['POST_NMS_ROIS_TRAINING']} + ground truth)."
            )
        mask_shape = v["MASK_SHAPE"]
        if mask_shape[0] != mask_shape[1]:
            fail(f"`MASK_SHAPE` must be a square (side, side). Received: MASK_SHAPE={mask_shape!r}")
        pool = v["MASK_POOL_SIZE"]
        if mask_shape[0] % pool != 0:
            fail(
                f"`MASK_SHAPE` {tuple(mask_shape)} cannot be produced from `MASK_POOL_SIZE` {pool}: the mask "
                f"head upsamples by an integer factor, so MASK_SHAPE must be a multiple of MASK_POOL_SIZE "
                f"(for example {pool * 2} or {pool * 4})."
            )
        mini = v["MINI_MASK_SHAPE"]
        if v["USE_MINI_MASK"] and (mini[0] < mask_shape[0] or mini[1] < mask_shape[1]):
            warnings.warn(
                f"MINI_MASK_SHAPE {tuple(mini)} is smaller than MASK_SHAPE {tuple(mask_shape)}: mask targets "
                "will be upsampled from the mini masks and lose detail. Use MINI_MASK_SHAPE >= MASK_SHAPE.",
                stacklevel=3,
            )
        if len(v["MEAN_PIXEL"]) != v["IMAGE_CHANNEL_COUNT"]:
            fail(
                f"`MEAN_PIXEL` needs one value per channel ({v['IMAGE_CHANNEL_COUNT']}). "
                f"Received: MEAN_PIXEL={v['MEAN_PIXEL']!r}"
            )

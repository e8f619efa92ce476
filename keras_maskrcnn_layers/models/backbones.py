"""Backbones that return the stages C2..C5 (strides 4, 8, 16, 32)."""

import os

import keras

# Last layer of each stage in keras.applications' ResNets.
RESNET_STAGES = {
    "resnet50": ("conv2_block3_out", "conv3_block4_out", "conv4_block6_out", "conv5_block3_out"),
    "resnet101": ("conv2_block3_out", "conv3_block4_out", "conv4_block23_out", "conv5_block3_out"),
}


def _check_weights(weights):
    if weights is None:
        return None
    if not isinstance(weights, (str, os.PathLike)) or not os.path.isfile(weights):
        raise ValueError(
            "Backbone `weights` must be None or the path of a local weights file; nothing is downloaded. "
            f"Received: weights={weights!r}"
        )
    return os.fspath(weights)


def _freeze_batch_norm(model):
    # matterport's TRAIN_BN=False: with small batches, batch statistics are
    # noise, so BN layers keep their (pre-trained) moving statistics.
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False


def resnet_backbone(name, input_shape, weights=None, train_bn=False):
    """ResNet-50 or ResNet-101 from `keras.applications`, returning C2..C5.

    Args:
        name: `"resnet50"` or `"resnet101"`.
        input_shape: `(height, width, channels)`.
        weights: None (random initialisation) or a local weights file of the
            `keras.applications` model without its top. Defaults to `None`.
        train_bn: bool. Whether batch norm layers train. Defaults to `False`.

    Returns:
        A `keras.Model` named `"backbone"` from images to `[C2, C3, C4, C5]`.
    """
    if name not in RESNET_STAGES:
        raise ValueError(f"`name` must be one of {sorted(RESNET_STAGES)}. Received: name={name!r}")
    weights = _check_weights(weights)
    application = {"resnet50": keras.applications.ResNet50, "resnet101": keras.applications.ResNet101}[name]
    base = application(include_top=False, weights=None, input_shape=tuple(input_shape))
    if weights is not None:
        base.load_weights(weights)
    if not train_bn:
        _freeze_batch_norm(base)
    outputs = [base.get_layer(stage).output for stage in RESNET_STAGES[name]]
    return keras.Model(base.input, outputs, name="backbone")


def _residual_block(x, filters, stride, name):
    shortcut = x
    y = keras.layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv1")(x)
    y = keras.layers.BatchNormalization(name=f"{name}_bn1")(y)
    y = keras.layers.ReLU(name=f"{name}_relu1")(y)
    y = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
    y = keras.layers.BatchNormalization(name=f"{name}_bn2")(y)
    if stride != 1 or shortcut.shape[-1] != filters:
        shortcut = keras.layers.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"{name}_proj")(shortcut)
        shortcut = keras.layers.BatchNormalization(name=f"{name}_proj_bn")(shortcut)
    return keras.layers.ReLU(name=f"{name}_out")(keras.layers.Add(name=f"{name}_add")([y, shortcut]))


def small_backbone(input_shape, widths=(32, 48, 64, 96), blocks_per_stage=1, train_bn=True, weights=None):
    """A small ResNet-style backbone for CPU work, returning C2..C5.

    A 3x3 stride-2 stem, then one stage per width, each starting with a
    stride-2 residual block (ResNet's basic block, He et al. 2016).

    Args:
        input_shape: `(height, width, channels)`.
        widths: four ints. Channels of C2..C5. Defaults to `(32, 48, 64, 96)`.
        blocks_per_stage: int. Residual blocks per stage. Defaults to `1`.
        train_bn: bool. Defaults to `True` (trained from scratch).
        weights: None (random initialisation) or a local weights file of
            this backbone (`save_weights` of a `small_backbone` with the same
            arguments). Defaults to `None`.

    Returns:
        A `keras.Model` named `"backbone"` from images to `[C2, C3, C4, C5]`.
    """
    if len(widths) != 4:
        raise ValueError(f"`widths` must give the channels of C2..C5 (4 ints). Received: widths={widths!r}")
    weights = _check_weights(weights)
    images = keras.Input(tuple(input_shape))
    x = keras.layers.Conv2D(widths[0] // 2, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(images)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    outputs = []
    for stage, width in enumerate(widths, start=2):
        for block in range(blocks_per_stage):
            x = _residual_block(x, width, 2 if block == 0 else 1, name=f"c{stage}_block{block + 1}")
        outputs.append(x)
    model = keras.Model(images, outputs, name="backbone")
    if weights is not None:
        model.load_weights(weights)
    if not train_bn:
        _freeze_batch_norm(model)
    return model


def pyramid_backbone(model, strides=(4, 8, 16, 32), name="backbone"):
    """Any image model (a `keras.applications` one, say) as a C2..C5 backbone.

    For each stride, takes the output of the deepest layer whose feature map
    is the input size divided by that stride: the end of each stage.

    Args:
        model: functional `keras.Model` on images with a static size.
        strides: the strides to tap. Defaults to `(4, 8, 16, 32)`.
        name: name of the returned model. Defaults to `"backbone"`.

    Returns:
        A `keras.Model` from the same input to one map per stride.

    Example:

    >>> import keras
    >>> from keras_maskrcnn_layers.models import pyramid_backbone
    >>> app = keras.applications.MobileNetV3Small(
    ...     input_shape=(64, 64, 3), include_top=False, weights=None, include_preprocessing=False)
    >>> [tuple(x.shape[1:3]) for x in pyramid_backbone(app).outputs]
    [(16, 16), (8, 8), (4, 4), (2, 2)]
    """
    height, width = model.input.shape[1:3]
    if height is None or width is None:
        raise ValueError(f"`model` needs a static input size. Received: input shape {model.input.shape}")
    taps = {}
    for layer in model.layers:
        output = layer.output
        if not hasattr(output, "shape") or len(output.shape) != 4:
            continue
        for stride in strides:
            if tuple(output.shape[1:3]) == (-(-height // stride), -(-width // stride)):
                taps[stride] = output
    missing = [s for s in strides if s not in taps]
    if missing:
        raise ValueError(f"`model` has no feature map at stride(s) {missing} for input {height}x{width}.")
    return keras.Model(model.input, [taps[s] for s in strides], name=name)


def check_backbone(backbone, input_shape):
    """Checks that a user model maps images to C2..C5 at strides 4..32."""
    if not isinstance(backbone, keras.Model):
        raise ValueError(f"`backbone` must be a keras.Model. Received: {type(backbone).__name__}")
    outputs = backbone.outputs
    if outputs is None or len(outputs) != 4:
        raise ValueError(
            "`backbone` must return four feature maps [C2, C3, C4, C5] (strides 4, 8, 16, 32). "
            f"Received {0 if outputs is None else len(outputs)} outputs."
        )
    height, width = input_shape[:2]
    for stride, output in zip((4, 8, 16, 32), outputs):
        expected = (-(-height // stride), -(-width // stride))
        if tuple(output.shape[1:3]) != expected:
            raise ValueError(
                f"`backbone` output at stride {stride} should be {expected} for input {tuple(input_shape)}; "
                f"got {tuple(output.shape[1:3])}."
            )
    if backbone.name != "backbone":
        # Same layers and weights under the name that MaskRCNNComponents.from_model looks up after loading.
        backbone = keras.Model(backbone.inputs, backbone.outputs, name="backbone")
    return backbone


def build_backbone(config, backbone=None):
    """The backbone a config asks for, or a checked user model."""
    shape = config.IMAGE_SHAPE
    if backbone is not None:
        return check_backbone(backbone, shape)
    if config.BACKBONE == "small":
        return small_backbone(shape, train_bn=config.TRAIN_BN, weights=config.BACKBONE_WEIGHTS)
    return resnet_backbone(config.BACKBONE, shape, weights=config.BACKBONE_WEIGHTS, train_bn=config.TRAIN_BN)

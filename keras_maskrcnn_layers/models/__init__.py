"""Model builders: the only code that reads a `MaskRCNNConfig`."""

from keras_maskrcnn_layers.models.backbones import build_backbone, pyramid_backbone, resnet_backbone, small_backbone
from keras_maskrcnn_layers.models.mask_rcnn import MaskRCNNComponents, build_mask_rcnn
from keras_maskrcnn_layers.models.training_model import MaskRCNNTrainingModel

__all__ = [
    "MaskRCNNComponents",
    "MaskRCNNTrainingModel",
    "build_backbone",
    "build_mask_rcnn",
    "pyramid_backbone",
    "resnet_backbone",
    "small_backbone",
]

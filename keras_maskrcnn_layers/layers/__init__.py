"""Keras layers, one per file, each a thin shell over `keras_maskrcnn_layers.ops`."""

from keras_maskrcnn_layers.layers.anchor_generator import AnchorGenerator
from keras_maskrcnn_layers.layers.box_head import BoxHead
from keras_maskrcnn_layers.layers.detection_layer import DetectionLayer
from keras_maskrcnn_layers.layers.detection_target_layer import DetectionTargetLayer
from keras_maskrcnn_layers.layers.feature_pyramid import FeaturePyramid
from keras_maskrcnn_layers.layers.image_window import ImageWindow
from keras_maskrcnn_layers.layers.mask_head import MaskHead
from keras_maskrcnn_layers.layers.mask_rcnn_losses import LOSS_NAMES, MaskRCNNLosses
from keras_maskrcnn_layers.layers.proposal_layer import ProposalLayer
from keras_maskrcnn_layers.layers.pyramid_roi_align import FlattenPyramid, PyramidROIAlign
from keras_maskrcnn_layers.layers.rpn_head import RPNHead
from keras_maskrcnn_layers.layers.rpn_target_layer import RPNTargetLayer

__all__ = [
    "AnchorGenerator",
    "BoxHead",
    "DetectionLayer",
    "DetectionTargetLayer",
    "FeaturePyramid",
    "FlattenPyramid",
    "ImageWindow",
    "LOSS_NAMES",
    "MaskHead",
    "MaskRCNNLosses",
    "ProposalLayer",
    "PyramidROIAlign",
    "RPNHead",
    "RPNTargetLayer",
]

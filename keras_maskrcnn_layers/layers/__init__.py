"""Keras layers, one per file, each a thin shell over `keras_maskrcnn_layers.ops`."""

from keras_maskrcnn_layers.layers.anchor_generator import AnchorGenerator
from keras_maskrcnn_layers.layers.mask_head import MaskHead
from keras_maskrcnn_layers.layers.proposal_layer import ProposalLayer
from keras_maskrcnn_layers.layers.pyramid_roi_align import PyramidROIAlign

__all__ = ["AnchorGenerator", "MaskHead", "ProposalLayer", "PyramidROIAlign"]

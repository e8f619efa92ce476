"""Keras 3 native, XLA-compilable layers for Mask R-CNN."""

__version__ = "0.1.0"

from keras_maskrcnn_layers import ops
from keras_maskrcnn_layers.layers import AnchorGenerator, MaskHead, ProposalLayer, PyramidROIAlign

__all__ = ["AnchorGenerator", "MaskHead", "ProposalLayer", "PyramidROIAlign", "ops", "__version__"]

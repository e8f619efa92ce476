"""Keras 3 native, XLA-compilable layers for Mask R-CNN."""

import importlib

__version__ = "0.1.0"

from keras_maskrcnn_layers import layers, ops
from keras_maskrcnn_layers.config import MaskRCNNConfig
from keras_maskrcnn_layers.layers import AnchorGenerator, FlattenPyramid, MaskHead, ProposalLayer, PyramidROIAlign
from keras_maskrcnn_layers.models import build_mask_rcnn

# `data` and `training` use tf.data: imported on first use, so that graph
# code on the JAX backend does not pay for importing TensorFlow.
_LAZY_MODULES = ("data", "evaluation", "training")
_LAZY_NAMES = {"MaskRCNN": "training"}


def __getattr__(name):
    if name in _LAZY_MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _LAZY_NAMES:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY_NAMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AnchorGenerator",
    "FlattenPyramid",
    "MaskHead",
    "MaskRCNN",
    "MaskRCNNConfig",
    "ProposalLayer",
    "PyramidROIAlign",
    "build_mask_rcnn",
    "data",
    "evaluation",
    "layers",
    "ops",
    "__version__",
]

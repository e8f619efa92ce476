"""Training and inference around the functional models (TensorFlow's tf.data and tf.distribute live here)."""

from keras_maskrcnn_layers.training.mask_rcnn import MaskRCNN
from keras_maskrcnn_layers.training.postprocess import unmold_detections

__all__ = ["MaskRCNN", "unmold_detections"]

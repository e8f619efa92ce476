"""COCO-style evaluation of Mask R-CNN detections: NumPy and pycocotools, no Keras backend."""

from keras_maskrcnn_layers.evaluation.coco_metrics import (
    STAT_NAMES,
    coco_evaluate,
    extract_boxes,
    results_to_coco,
    samples_to_coco,
)

__all__ = ["STAT_NAMES", "coco_evaluate", "extract_boxes", "results_to_coco", "samples_to_coco"]

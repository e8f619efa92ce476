"""Evaluation of Mask R-CNN detections: COCO metrics and diagnostics. NumPy, no Keras backend.

`coco_evaluate` scores detections with pycocotools. The diagnostics say
why a score is what it is: `mask_size_report` (mask area, IoU and boundary
quality by object size), `proposal_recall` (how many objects the RPN
proposes well; this one runs a model) and `anchor_coverage` /
`suggest_anchor_scales` (how well the anchors fit the data).
"""

from keras_maskrcnn_layers.evaluation.anchors import (
    CANDIDATE_RATIOS,
    AnchorSuggestion,
    anchor_coverage,
    suggest_anchor_scales,
)
from keras_maskrcnn_layers.evaluation.coco_metrics import (
    STAT_NAMES,
    CocoAccumulator,
    coco_evaluate,
    extract_boxes,
    results_to_coco,
    samples_to_coco,
)
from keras_maskrcnn_layers.evaluation.mask_size import MaskSizeReport, boundary_f_score, mask_size_report
from keras_maskrcnn_layers.evaluation.proposals import ProposalRecallReport, proposal_recall

__all__ = [
    "CANDIDATE_RATIOS",
    "STAT_NAMES",
    "AnchorSuggestion",
    "CocoAccumulator",
    "MaskSizeReport",
    "ProposalRecallReport",
    "anchor_coverage",
    "boundary_f_score",
    "coco_evaluate",
    "extract_boxes",
    "mask_size_report",
    "proposal_recall",
    "results_to_coco",
    "samples_to_coco",
    "suggest_anchor_scales",
]

"""`build_mask_rcnn`: a functional Mask R-CNN wired from the package's layers."""

import keras

from keras_maskrcnn_layers.config import MaskRCNNConfig
from keras_maskrcnn_layers.layers import (
    AnchorGenerator,
    BoxHead,
    DetectionLayer,
    DetectionTargetLayer,
    FeaturePyramid,
    FlattenPyramid,
    ImageWindow,
    MaskHead,
    MaskRCNNLosses,
    ProposalLayer,
    PyramidROIAlign,
    RPNHead,
    RPNTargetLayer,
)
from keras_maskrcnn_layers.models.backbones import build_backbone
from keras_maskrcnn_layers.models.training_model import MaskRCNNTrainingModel
from keras_maskrcnn_layers.ops.boxes import scale_boxes

IMAGE_META_SIZE = 8
MODES = ("training", "inference")


class MaskRCNNComponents:
    """The layers with weights, built once so training and inference models share them.

    Args:
        config: `MaskRCNNConfig`.
        backbone: optional `keras.Model` from images to `[C2, C3, C4, C5]`;
            by default the config's `BACKBONE`.
    """

    def __init__(self, config, backbone=None):
        self.config = config
        self.backbone = build_backbone(config, backbone)
        self.normalize = keras.layers.Normalization(
            mean=list(config.MEAN_PIXEL), variance=[1.0] * len(config.MEAN_PIXEL), name="normalize"
        )
        self.fpn = FeaturePyramid(config.TOP_DOWN_PYRAMID_SIZE, name="fpn")
        self.anchors = AnchorGenerator(
            scales=config.RPN_ANCHOR_SCALES,
            ratios=config.RPN_ANCHOR_RATIOS,
            strides=config.BACKBONE_STRIDES,
            anchor_stride=config.RPN_ANCHOR_STRIDE,
            name="anchors",
        )
        self.rpn_head = RPNHead(
            self.anchors.anchors_per_location,
            filters=min(512, 2 * config.TOP_DOWN_PYRAMID_SIZE),
            anchor_stride=config.RPN_ANCHOR_STRIDE,
            name="rpn_head",
        )
        self.box_head = BoxHead(config.NUM_CLASSES, fc_size=config.FPN_CLASSIF_FC_LAYERS_SIZE, name="box_head")
        self.mask_head = MaskHead(
            config.NUM_CLASSES,
            num_convs=config.MASK_HEAD_CONVS,
            conv_filters=config.TOP_DOWN_PYRAMID_SIZE,
            upsample=config.MASK_UPSAMPLE,
            upsample_factor=config.MASK_UPSAMPLE_FACTOR,
            class_agnostic=config.MASK_CLASS_AGNOSTIC,
            name="mask_head",
        )

    @classmethod
    def from_model(cls, config, model):
        """Takes the weighted layers of a model this module built (after loading it)."""
        components = cls.__new__(cls)
        components.config = config
        for attribute, name in (
            ("backbone", "backbone"),
            ("normalize", "normalize"),
            ("fpn", "fpn"),
            ("anchors", "anchors"),
            ("rpn_head", "rpn_head"),
            ("box_head", "box_head"),
            ("mask_head", "mask_head"),
        ):
            setattr(components, attribute, model.get_layer(name))
        return components


def _roi_align(config, pool_size, name):
    return PyramidROIAlign(
        pool_size=pool_size,
        sampling_ratio=config.ROI_SAMPLING_RATIO,
        aligned=config.ROI_ALIGNED,
        min_level=2,
        max_level=5,
        name=name,
    )


def build_mask_rcnn(config, mode="inference", backbone=None, components=None):
    """Builds a functional Mask R-CNN (He et al. 2017) with an FPN backbone.

    Inputs (dict, by name): `images` float32 `[B, H, W, C]` raw pixels (the
    model subtracts `MEAN_PIXEL`) at `IMAGE_SHAPE`; `image_meta` float32
    `[B, 8]` from `kml.data` (its window clips detections). Training also
    takes `gt_class_ids` int32 `[B, G]`, `gt_boxes` float32 `[B, G, 4]` and
    `gt_masks` float32 `[B, G, m_h, m_w]` (mini masks when
    `USE_MINI_MASK`), `G = MAX_GT_INSTANCES`, zero-padded.

    Outputs: in training, the five losses (dict of `[B]` tensors) with their
    weighted sum added by `add_loss`, so `model.fit(inputs)` trains it and
    logs each loss (a `MaskRCNNTrainingModel`); in
    inference, `detection_boxes [B, D, 4]` (yxyx pixels of the input),
    `detection_class_ids [B, D]`, `detection_scores [B, D]`,
    `detection_masks [B, D, MASK_SHAPE]` (soft masks of the detected
    class) and `num_detections [B]`, `D = DETECTION_MAX_INSTANCES`.

    Args:
        config: `MaskRCNNConfig`.
        mode: `"training"` or `"inference"`. Defaults to `"inference"`.
        backbone: optional `keras.Model` from images to `[C2, C3, C4, C5]`.
        components: optional `MaskRCNNComponents` to share weights with
            another model built from them.

    Returns:
        A functional `keras.Model`.

    Example:

    >>> import keras_maskrcnn_layers as kml
    >>> cfg = kml.MaskRCNNConfig.preset("shapes", IMAGE_MIN_DIM=64, IMAGE_MAX_DIM=64)
    >>> model = kml.build_mask_rcnn(cfg, mode="inference")
    >>> sorted(model.output)
    ['detection_boxes', 'detection_class_ids', 'detection_masks', 'detection_scores', 'num_detections']
    """
    if not isinstance(config, MaskRCNNConfig):
        raise ValueError(f"`config` must be a MaskRCNNConfig. Received: {type(config).__name__}")
    if mode not in MODES:
        raise ValueError(f"`mode` must be one of {MODES}. Received: mode={mode!r}")
    if components is None:
        components = MaskRCNNComponents(config, backbone)
    c = components
    height, width, channels = config.IMAGE_SHAPE

    # === Inputs ===
    images = keras.Input((height, width, channels), name="images")
    image_meta = keras.Input((IMAGE_META_SIZE,), name="image_meta")
    inputs = {"images": images, "image_meta": image_meta}

    # === Backbone, pyramid, RPN ===
    pyramid = c.fpn(c.backbone(c.normalize(images)))
    anchors = c.anchors(images)
    rpn_logits, rpn_probs, rpn_deltas = c.rpn_head(pyramid)
    post_nms = config.POST_NMS_ROIS_TRAINING if mode == "training" else config.POST_NMS_ROIS_INFERENCE
    proposals, _ = ProposalLayer(
        pre_nms_topk=config.PRE_NMS_LIMIT,
        post_nms_topk=post_nms,
        nms_iou_threshold=config.RPN_NMS_THRESHOLD,
        box_std=config.RPN_BBOX_STD_DEV,
        name="proposals",
    )(rpn_probs, rpn_deltas, anchors, image_shape=(height, width))
    box_roi_align = _roi_align(config, config.POOL_SIZE, "box_roi_align")
    mask_roi_align = _roi_align(config, config.MASK_POOL_SIZE, "mask_roi_align")
    levels = pyramid[:4]  # ROI heads pool from P2..P5 (FPN paper, Sec. 4.2)
    # Both heads read one flattened copy of P2..P5 instead of one copy each.
    table = FlattenPyramid(name="roi_feature_table")(levels)

    if mode == "training":
        mask_side = config.MINI_MASK_SHAPE if config.USE_MINI_MASK else (height, width)
        gt_class_ids = keras.Input((config.MAX_GT_INSTANCES,), dtype="int32", name="gt_class_ids")
        gt_boxes = keras.Input((config.MAX_GT_INSTANCES, 4), name="gt_boxes")
        gt_masks = keras.Input((config.MAX_GT_INSTANCES, *mask_side), name="gt_masks")
        inputs.update({"gt_class_ids": gt_class_ids, "gt_boxes": gt_boxes, "gt_masks": gt_masks})

        # === Targets ===
        rpn_match, rpn_target_deltas = RPNTargetLayer(
            anchors_per_image=config.RPN_TRAIN_ANCHORS_PER_IMAGE, box_std=config.RPN_BBOX_STD_DEV, name="rpn_targets"
        )(anchors, gt_boxes, gt_class_ids)
        rois, target_class_ids, target_deltas, target_masks, roi_valid = DetectionTargetLayer(
            train_rois_per_image=config.TRAIN_ROIS_PER_IMAGE,
            roi_positive_ratio=config.ROI_POSITIVE_RATIO,
            mask_shape=config.MASK_SHAPE,
            box_std=config.BBOX_STD_DEV,
            use_mini_mask=config.USE_MINI_MASK,
            image_shape=(height, width),
            mask_box_scale=config.MASK_BOX_SCALE,
            name="detection_targets",
        )(proposals, gt_class_ids, gt_boxes, gt_masks)

        # === Heads ===
        class_logits, _, box_deltas = c.box_head(box_roi_align(rois, levels, flat_features=table))
        # Positives come first and number at most round(T * ratio): only
        # they have mask targets, so the mask branch sees just those rows.
        num_mask_rois = max(1, int(round(config.TRAIN_ROIS_PER_IMAGE * config.ROI_POSITIVE_RATIO)))
        mask_rois = scale_boxes(rois[:, :num_mask_rois], config.MASK_BOX_SCALE)
        masks = c.mask_head(mask_roi_align(mask_rois, levels, flat_features=table))
        losses = MaskRCNNLosses(config.LOSS_WEIGHTS, name="losses")(
            {
                "rpn_match": rpn_match,
                "rpn_target_deltas": rpn_target_deltas,
                "rpn_logits": rpn_logits,
                "rpn_deltas": rpn_deltas,
                "target_class_ids": target_class_ids,
                "target_deltas": target_deltas,
                "target_masks": target_masks[:, :num_mask_rois],
                "mask_class_ids": target_class_ids[:, :num_mask_rois],
                "roi_valid": roi_valid,
                "class_logits": class_logits,
                "box_deltas": box_deltas,
                "masks": masks,
            }
        )
        return MaskRCNNTrainingModel(inputs, losses, name="mask_rcnn_training")

    # === Inference heads ===
    _, class_probs, box_deltas = c.box_head(box_roi_align(proposals, levels, flat_features=table))
    window = ImageWindow(name="window")(image_meta)
    boxes, class_ids, scores, count = DetectionLayer(
        max_detections=config.DETECTION_MAX_INSTANCES,
        min_confidence=config.DETECTION_MIN_CONFIDENCE,
        nms_iou_threshold=config.DETECTION_NMS_THRESHOLD,
        box_std=config.BBOX_STD_DEV,
        name="detections",
    )(proposals, class_probs, box_deltas, window)
    # Masks span the boxes scaled by MASK_BOX_SCALE; pasting uses the same scale.
    mask_boxes = scale_boxes(boxes, config.MASK_BOX_SCALE)
    masks = c.mask_head(mask_roi_align(mask_boxes, levels, flat_features=table), class_ids)
    outputs = {
        "detection_boxes": boxes,
        "detection_class_ids": class_ids,
        "detection_scores": scores,
        "detection_masks": masks,
        "num_detections": count,
    }
    return keras.Model(inputs, outputs, name="mask_rcnn_inference")

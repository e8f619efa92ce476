"""Compose your own Mask R-CNN from the package's layers.

Not the stock builder: a `keras.applications` MobileNetV3 backbone, a
narrower pyramid, a box head with one hidden layer, and a class-agnostic
mask head that upsamples 14 px ROI features four times to 56 px masks.
Trains briefly on generated shapes and predicts.

Run: `KERAS_BACKEND=tensorflow python examples/custom_model.py`
"""

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_maskrcnn_layers as kml  # noqa: E402
from keras_maskrcnn_layers import layers as kl  # noqa: E402

SIZE, CLASSES, MAX_GT, ROIS, MASK_POOL, MASK_FACTOR = 128, 4, 8, 32, 14, 4


def build(training):
    images = keras.Input((SIZE, SIZE, 3), name="images")
    image_meta = keras.Input((8,), name="image_meta")
    inputs = {"images": images, "image_meta": image_meta}

    # === Backbone: MobileNetV3, tapped at strides 4..32 ===
    application = keras.applications.MobileNetV3Small(
        input_shape=(SIZE, SIZE, 3), include_top=False, weights=None, include_preprocessing=True
    )
    backbone = kml.models.pyramid_backbone(application)
    pyramid = FPN(backbone(images))

    # === RPN and proposals ===
    anchors = ANCHORS(images)
    rpn_logits, rpn_probs, rpn_deltas = RPN(pyramid)
    proposals, _ = kl.ProposalLayer(pre_nms_topk=1000, post_nms_topk=200 if training else 100)(
        rpn_probs, rpn_deltas, anchors, image_shape=(SIZE, SIZE)
    )
    box_align = kl.PyramidROIAlign(pool_size=7)
    mask_align = kl.PyramidROIAlign(pool_size=MASK_POOL)

    if training:
        gt = {
            "gt_class_ids": keras.Input((MAX_GT,), dtype="int32", name="gt_class_ids"),
            "gt_boxes": keras.Input((MAX_GT, 4), name="gt_boxes"),
            "gt_masks": keras.Input((MAX_GT, SIZE, SIZE), name="gt_masks"),
        }
        inputs.update(gt)
        rpn_match, rpn_targets = kl.RPNTargetLayer()(anchors, gt["gt_boxes"], gt["gt_class_ids"])
        rois, class_ids, deltas, masks, valid = kl.DetectionTargetLayer(
            train_rois_per_image=ROIS, mask_shape=MASK_POOL * MASK_FACTOR
        )(proposals, gt["gt_class_ids"], gt["gt_boxes"], gt["gt_masks"])
        class_logits, _, box_deltas = BOX_HEAD(box_align(rois, pyramid[:4]))
        losses = kl.MaskRCNNLosses()(
            {
                "rpn_match": rpn_match, "rpn_target_deltas": rpn_targets,
                "rpn_logits": rpn_logits, "rpn_deltas": rpn_deltas,
                "target_class_ids": class_ids, "target_deltas": deltas, "target_masks": masks,
                "roi_valid": valid, "class_logits": class_logits, "box_deltas": box_deltas,
                "masks": MASK_HEAD(mask_align(rois, pyramid[:4])),
            }
        )
        return keras.Model(inputs, losses)

    _, class_probs, box_deltas = BOX_HEAD(box_align(proposals, pyramid[:4]))
    window = kml.layers.ImageWindow()(image_meta)
    boxes, class_ids, scores, count = kl.DetectionLayer(max_detections=10, min_confidence=0.3)(
        proposals, class_probs, box_deltas, window
    )
    masks = MASK_HEAD(mask_align(boxes, pyramid[:4]), class_ids)
    return keras.Model(inputs, {"boxes": boxes, "class_ids": class_ids, "scores": scores, "count": count,
                                "masks": masks})


# Layers with weights, shared by the training and the inference graph.
FPN = kl.FeaturePyramid(filters=48)
ANCHORS = kml.AnchorGenerator(scales=((8, 12), (16, 24), (32, 48), (64, 96), (128, 192)))
RPN = kl.RPNHead(ANCHORS.anchors_per_location, filters=96)
BOX_HEAD = kl.BoxHead(CLASSES, fc_size=128, num_fcs=1)
MASK_HEAD = kml.MaskHead(CLASSES, num_convs=2, conv_filters=48, upsample="transpose",
                         upsample_factor=MASK_FACTOR, class_agnostic=True)


def main(steps=30):
    training_model = build(training=True)
    inference_model = build(training=False)
    config = kml.MaskRCNNConfig.preset("shapes", USE_MINI_MASK=False, MAX_GT_INSTANCES=MAX_GT)
    samples = kml.data.generate_shapes(200, seed=0)
    dataset = kml.data.make_dataset(samples, config, training=True)
    training_model.compile(optimizer=keras.optimizers.Adam(1e-3, clipnorm=5.0), jit_compile=True)
    training_model.fit(dataset, epochs=1, steps_per_epoch=steps)

    batch = next(iter(kml.data.make_dataset(samples[:4], config, training=False)))
    outputs = inference_model.predict_on_batch({"images": batch["images"], "image_meta": batch["image_meta"]})
    print("inference outputs:", {k: tuple(np.shape(v)) for k, v in outputs.items()})
    print("detections per image:", np.asarray(outputs["count"]).tolist(), "(after a very short training)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 30)

"""Proposal recall: how many objects the RPN proposes well, by object size.

An object that no proposal overlaps well cannot be detected, however good
the box and mask heads are; low recall of small objects usually means
anchors too large or too few proposals (`POST_NMS_ROIS_INFERENCE`). The
report is computed on the padded output of the model's `ProposalLayer`.
Keras is imported only inside `proposal_recall`, which runs the model.
"""

import math

import numpy as np

from keras_maskrcnn_layers.evaluation._utils import (
    box_ious,
    check_sample,
    check_size_ranges,
    check_thresholds,
    format_table,
    format_value,
    size_bins,
)
from keras_maskrcnn_layers.evaluation.coco_metrics import extract_boxes

PROPOSAL_LAYER_NAME = "proposals"


class ProposalRecallReport:
    """Best proposal IoU of every ground-truth object, with recall by object size.

    Built by `proposal_recall`.

    Attributes:
        thresholds: tuple of IoU thresholds.
        best_iou: float64 `[G]`. Best proposal IoU of each object (images
            in order, objects in sample order, empty masks left out).
        image: int64 `[G]`. Image index of each object.
        size: object `[G]`. Size bin of each object, by its mask area in
            pixels of the original image (`None` for an area in no bin).
        num_proposals: int64 `[num_images]`. Valid proposals per image.
        size_ranges: dict name -> `(lo, hi)`.
        recall: dict threshold -> dict bin name (and `"all"`) -> share of
            the objects with `best_iou >= threshold` (NaN without objects).
        num_objects: dict bin name (and `"all"`) -> number of objects.
    """

    def __init__(self, thresholds, best_iou, image, size, num_proposals, size_ranges):
        self.thresholds = thresholds
        self.best_iou = best_iou
        self.image = image
        self.size = size
        self.num_proposals = num_proposals
        self.size_ranges = dict(size_ranges)
        names = list(self.size_ranges) + ["all"]
        chosen = {name: np.ones(len(size), bool) if name == "all" else size == name for name in names}
        self.num_objects = {name: int(rows.sum()) for name, rows in chosen.items()}
        self.recall = {
            t: {name: float(np.mean(best_iou[rows] >= t)) if rows.any() else math.nan for name, rows in chosen.items()}
            for t in thresholds
        }

    def table(self):
        """Recall per size bin as an aligned text table, and the proposal counts."""
        header = ("size", "objects") + tuple(f"IoU >= {t:g}" for t in self.thresholds)
        rows = [
            (name, count) + tuple(format_value(self.recall[t][name], percent=True) for t in self.thresholds)
            for name, count in self.num_objects.items()
        ]
        counts = self.num_proposals
        footer = (
            f"Valid proposals per image: mean {counts.mean():.1f}, min {counts.min()}, max {counts.max()}"
            if counts.size
            else "No images."
        )
        title = "Proposal recall: share of ground-truth objects whose best proposal reaches the IoU"
        return title + "\n" + format_table(header, rows) + "\n" + footer


def _proposal_predictor(model):
    """A model from the inference inputs to the `ProposalLayer` outputs, sharing weights."""
    import keras

    inference = model.inference_model
    try:
        layer = inference.get_layer(PROPOSAL_LAYER_NAME)
    except ValueError as error:
        raise ValueError(
            f"`model.inference_model` has no layer named {PROPOSAL_LAYER_NAME!r} (the ProposalLayer)."
        ) from error
    predictor = keras.Model(inference.input, list(layer.output))
    predictor.compile(jit_compile=getattr(model, "jit_compile", "auto"))
    return predictor


def _predict_proposals(predictor, model, images, batch_size):
    """Valid proposals `[k_i, 4]` (input pixels) and the image meta of each image."""
    molded, meta = model.mold_inputs(images)
    # A full batch every time, as `MaskRCNN.detect`: one compiled shape.
    missing = batch_size - len(images)
    inputs = {
        "images": np.concatenate([molded, np.repeat(molded[-1:], missing, axis=0)]),
        "image_meta": np.concatenate([meta, np.repeat(meta[-1:], missing, axis=0)]),
    }
    boxes, scores = (np.asarray(x) for x in predictor.predict_on_batch(inputs))
    # ProposalLayer pads with all-zero rows of score 0.
    return [boxes[i][scores[i] > 0] for i in range(len(images))], meta


def _ground_truth_in_input(sample, index, meta):
    """Boxes `[G, 4]` of the non-empty masks in network-input pixels, and their areas `[G]`."""
    from keras_maskrcnn_layers.data.image_meta import parse_image_meta

    masks, _ = check_sample(sample, index)
    areas = masks.sum(axis=(0, 1))
    kept = areas > 0
    parts = parse_image_meta(meta)
    # Resizing maps original pixel p to p * scale + the window's top-left corner.
    origin = np.tile(parts["window"][:2].astype(np.float64), 2)
    boxes = extract_boxes(masks[:, :, kept]).astype(np.float64) * float(parts["scale"]) + origin
    return boxes, areas[kept]


def proposal_recall(model, samples, iou=(0.5, 0.7), batch_size=None, size_ranges=None):
    """Measures the share of ground-truth objects that the RPN's proposals find.

    Runs the model up to its `ProposalLayer` (the layer named
    `"proposals"`) on the molded images, maps each sample's ground-truth
    boxes (the boxes of its masks, as `extract_boxes`) into network-input
    pixels with the image meta (`original * scale + window offset`), and
    takes the best IoU of each box with the valid proposals of its image.
    Recall at a threshold is the share of objects whose best IoU reaches
    it, over all objects and per size bin of the mask area.

    Args:
        model: `kml.MaskRCNN` (anything with `.inference_model`,
            `.mold_inputs(images)` and `.config.BATCH_SIZE`).
        samples: sequence of dicts with `"image"` `[H, W, 3]`, `"masks"`
            bool `[H, W, N]` and `"class_ids"` `[N]`.
        iou: float or tuple of floats in `(0, 1]`. Thresholds. Defaults to
            `(0.5, 0.7)`.
        batch_size: int or None. Images per model call; the last batch is
            padded to it. Defaults to `None`, `model.config.BATCH_SIZE`.
        size_ranges: dict name -> `(lo, hi)` of mask areas in pixels of the
            original image. Defaults to `None`, COCO's small, medium, large.

    Returns:
        A `ProposalRecallReport` with `.recall`, `.best_iou`,
        `.num_proposals` and `.table()`.

    Raises:
        ValueError: if `samples` is empty, a sample's masks do not match its
            image or class ids, the model has no `"proposals"` layer, or an
            argument is out of range.

    Example:

    >>> import keras_maskrcnn_layers as kml
    >>> from keras_maskrcnn_layers.evaluation import proposal_recall
    >>> config = kml.MaskRCNNConfig.preset("shapes", IMAGE_MIN_DIM=64, IMAGE_MAX_DIM=64, BATCH_SIZE=1)
    >>> model = kml.MaskRCNN(config, jit_compile=False)
    >>> samples = kml.data.generate_shapes(1, height=64, width=64, seed=1)
    >>> report = proposal_recall(model, samples)
    >>> sorted(report.recall), report.num_objects["all"] == len(samples[0]["class_ids"])
    ([0.5, 0.7], True)
    """
    thresholds = check_thresholds("iou", iou)
    ranges = check_size_ranges(size_ranges)
    samples = list(samples)
    if not samples:
        raise ValueError("`samples` must not be empty.")
    if batch_size is None:
        batch_size = model.config.BATCH_SIZE
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive int. Received: batch_size={batch_size!r}")
    predictor = _proposal_predictor(model)
    best, image, areas, counts = [], [], [], []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        proposals, meta = _predict_proposals(predictor, model, [s["image"] for s in chunk], batch_size)
        for offset, sample in enumerate(chunk):
            boxes, sample_areas = _ground_truth_in_input(sample, start + offset, meta[offset])
            ious = box_ious(boxes, proposals[offset].astype(np.float64))
            best.append(ious.max(axis=1) if ious.shape[1] else np.zeros(len(boxes)))
            image.append(np.full(len(boxes), start + offset))
            areas.append(sample_areas)
            counts.append(len(proposals[offset]))
    areas = np.concatenate(areas)
    return ProposalRecallReport(
        thresholds,
        np.concatenate(best),
        np.concatenate(image).astype(np.int64),
        size_bins(areas, ranges),
        np.asarray(counts, np.int64),
        ranges,
    )

"""COCO-style box and mask AP of Mask R-CNN detections, via `pycocotools`.

Ground truth and detections are turned into in-memory COCO objects (masks as
compressed RLE, boxes as COCO `[x, y, width, height]`) and scored by
`pycocotools.cocoeval.COCOeval`, the reference implementation of the COCO
detection metrics (Lin et al., 2014, "Microsoft COCO: Common Objects in
Context"). NumPy and pycocotools only: nothing here needs a Keras backend.
"""

import contextlib
import io

import numpy as np

# Key suffixes in the order of `COCOeval.stats`.
STAT_NAMES = (
    "ap",
    "ap50",
    "ap75",
    "ap_small",
    "ap_medium",
    "ap_large",
    "ar1",
    "ar10",
    "ar100",
    "ar_small",
    "ar_medium",
    "ar_large",
)
_PREFIXES = {"bbox": "bbox_", "segm": "mask_"}


def _pycocotools():
    # Imported on first use so that `extract_boxes` and the package import
    # work where pycocotools is not installed.
    try:
        from pycocotools import mask as mask_utils
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as error:
        raise ImportError("COCO metrics need pycocotools: `pip install pycocotools`.") from error
    return mask_utils, COCO, COCOeval


def extract_boxes(masks):
    """Computes the bounding box of each instance mask.

    Matterport's convention: `y2` and `x2` are exclusive (last pixel + 1), so
    a box's height and width equal the mask's extent in pixels. An empty mask
    gets the box `(0, 0, 0, 0)`.

    Args:
        masks: bool array `[H, W, N]`. One channel per instance.

    Returns:
        Int32 array `[N, 4]` of `(y1, x1, y2, x2)` pixel boxes.

    Example:

    >>> import numpy as np
    >>> from keras_maskrcnn_layers.evaluation import extract_boxes
    >>> masks = np.zeros((8, 8, 2), bool)
    >>> masks[2:5, 1:7, 0] = True
    >>> extract_boxes(masks)
    array([[2, 1, 5, 7],
           [0, 0, 0, 0]], dtype=int32)
    """
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"`masks` must have shape [H, W, N]. Received: masks.shape={masks.shape}")
    boxes = np.zeros((masks.shape[-1], 4), np.int32)
    for i in range(masks.shape[-1]):
        rows = np.flatnonzero(masks[:, :, i].any(axis=1))
        cols = np.flatnonzero(masks[:, :, i].any(axis=0))
        if rows.size:
            boxes[i] = (rows[0], cols[0], rows[-1] + 1, cols[-1] + 1)
    return boxes


def _check_class_ids(class_ids, where):
    class_ids = np.asarray(class_ids).reshape(-1).astype(np.int64)
    if class_ids.size and class_ids.min() < 1:
        raise ValueError(f"{where} must be >= 1 (0 is the background). Received: {class_ids.tolist()}")
    return class_ids


def _encode_masks(masks):
    mask_utils = _pycocotools()[0]
    if masks.shape[-1] == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(masks.astype(np.uint8)))
    for rle in rles:
        # Bytes are not JSON-serializable; pycocotools accepts str counts too.
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def samples_to_coco(samples, class_ids=None, first_image_id=0):
    """Builds a COCO ground-truth dataset dict from samples.

    Image ids are the sample indices. Instance masks become compressed RLE
    (`segmentation`), their areas the pixel counts (`area`, which COCO's
    small / medium / large ranges read for box and mask AP alike) and their
    boxes COCO `[x, y, width, height]` from `extract_boxes`. An instance whose
    mask has no pixels is left out: no detection can match it, and
    matterport's `load_image_gt` drops such instances too.

    Args:
        samples: sequence of dicts `{"image": uint8 [H, W, 3], "masks": bool
            [H, W, N], "class_ids": int [N]}`. `N` may be 0.
        class_ids: sequence of ints or `None`. The categories to evaluate;
            instances of other classes are left out. Defaults to `None`, the
            class ids seen in `samples`.
        first_image_id: int. Image id (and index in messages) of the first
            sample, for datasets converted a chunk at a time. Defaults to `0`.

    Returns:
        Dict with `"images"`, `"annotations"` and `"categories"` lists in the
        COCO format, JSON-serializable.

    Example:

    >>> import numpy as np
    >>> from keras_maskrcnn_layers.evaluation import samples_to_coco
    >>> masks = np.zeros((16, 16, 1), bool)
    >>> masks[2:6, 3:11, 0] = True
    >>> sample = {"image": np.zeros((16, 16, 3), "uint8"), "masks": masks, "class_ids": [1]}
    >>> ann = samples_to_coco([sample])["annotations"][0]
    >>> ann["bbox"], ann["area"], ann["category_id"]
    ([3.0, 2.0, 8.0, 4.0], 32.0, 1)
    """
    images, annotations, seen = [], [], set()
    keep = None if class_ids is None else set(_check_class_ids(class_ids, "`class_ids`").tolist())
    for index, sample in enumerate(samples, start=first_image_id):
        image = np.asarray(sample["image"])
        masks = np.asarray(sample["masks"]).astype(bool)
        ids = _check_class_ids(sample["class_ids"], f"samples[{index}]['class_ids']")
        if image.ndim != 3 or masks.ndim != 3 or masks.shape[:2] != image.shape[:2]:
            raise ValueError(
                f"samples[{index}]: `masks` must have shape [H, W, N] with (H, W) of the image "
                f"{image.shape[:2]}. Received: masks.shape={masks.shape}"
            )
        if masks.shape[-1] != ids.shape[0]:
            raise ValueError(
                f"samples[{index}]: `masks` has {masks.shape[-1]} channels but `class_ids` has "
                f"{ids.shape[0]} entries."
            )
        images.append({"id": index, "height": int(image.shape[0]), "width": int(image.shape[1])})
        areas = masks.sum(axis=(0, 1))
        chosen = [i for i in range(ids.shape[0]) if areas[i] > 0 and (keep is None or ids[i] in keep)]
        boxes = extract_boxes(masks[:, :, chosen])
        for i, rle, box in zip(chosen, _encode_masks(masks[:, :, chosen]), boxes):
            y1, x1, y2, x2 = (float(v) for v in box)
            seen.add(int(ids[i]))
            annotations.append(
                {
                    # COCOeval reads id 0 as "unmatched", so ids start at 1.
                    "id": len(annotations) + 1,
                    "image_id": index,
                    "category_id": int(ids[i]),
                    "segmentation": rle,
                    "area": float(areas[i]),
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "iscrowd": 0,
                }
            )
    categories = sorted(seen) if keep is None else sorted(keep)
    return {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": c, "name": str(c)} for c in categories],
    }


def results_to_coco(results, iou_type="segm", class_ids=None, image_shapes=None, first_image_id=0):
    """Converts `MaskRCNN.detect` results to a COCO results list.

    Image ids are the result indices. For `"bbox"` each entry carries `bbox`
    (from `rois`, converted to `[x, y, width, height]`); for `"segm"` it
    carries only `segmentation` (compressed RLE of `masks`), because
    `COCO.loadRes` replaces the segmentation of an entry that also has a box
    with that box's polygon.

    Args:
        results: sequence of dicts `{"rois": float [n, 4] yxyx pixels,
            "class_ids": int [n], "scores": float [n], "masks": bool
            [H, W, n]}`. `n` may be 0, and then `rois` and `masks` may be
            empty arrays of any shape. `masks` is read only for `"segm"` and
            `rois` only for `"bbox"`.
        iou_type: str. `"bbox"` or `"segm"`. Defaults to `"segm"`.
        class_ids: sequence of ints or `None`. Keep only detections of these
            classes. Defaults to `None`, all of them.
        image_shapes: sequence of `(H, W)` or `None`. If given, each result's
            masks must have that size. Defaults to `None`, no check.
        first_image_id: int. Image id (and index in messages) of the first
            result. Defaults to `0`.

    Returns:
        List of dicts with `"image_id"`, `"category_id"`, `"score"` and
        `"bbox"` or `"segmentation"`, JSON-serializable.

    Example:

    >>> import numpy as np
    >>> from keras_maskrcnn_layers.evaluation import results_to_coco
    >>> result = {"rois": np.array([[2.0, 3.0, 6.0, 11.0]]), "class_ids": np.array([1]),
    ...           "scores": np.array([0.9]), "masks": np.zeros((16, 16, 1), bool)}
    >>> results_to_coco([result], iou_type="bbox")
    [{'image_id': 0, 'category_id': 1, 'score': 0.9, 'bbox': [3.0, 2.0, 8.0, 4.0]}]
    """
    if iou_type not in _PREFIXES:
        raise ValueError(f"`iou_type` must be 'bbox' or 'segm'. Received: iou_type={iou_type!r}")
    if image_shapes is not None and len(image_shapes) != len(results):
        raise ValueError(
            f"`image_shapes` must have one entry per result. Received: {len(image_shapes)} "
            f"shapes for {len(results)} results"
        )
    keep = None if class_ids is None else set(_check_class_ids(class_ids, "`class_ids`").tolist())
    detections = []
    for index, result in enumerate(results, start=first_image_id):
        ids = _check_class_ids(result["class_ids"], f"results[{index}]['class_ids']")
        scores = np.asarray(result["scores"], np.float64).reshape(-1)
        n = ids.shape[0]
        if scores.shape[0] != n:
            raise ValueError(f"results[{index}]: {scores.shape[0]} scores for {n} class ids.")
        chosen = [i for i in range(n) if keep is None or ids[i] in keep]
        if iou_type == "bbox":
            rois = np.asarray(result["rois"], np.float64)
            if n == 0 and rois.size == 0:
                rois = rois.reshape(0, 4)
            if rois.shape != (n, 4):
                raise ValueError(f"results[{index}]: `rois` must have shape ({n}, 4). Received: {rois.shape}")
            entries = []
            for y1, x1, y2, x2 in rois[chosen].tolist():
                entries.append({"bbox": [x1, y1, x2 - x1, y2 - y1]})
        else:
            masks = np.asarray(result["masks"]).astype(bool)
            expected = (
                None if image_shapes is None else tuple(int(s) for s in image_shapes[index - first_image_id][:2])
            )
            if n == 0 and masks.size == 0:
                masks = np.zeros(expected + (0,) if expected else (0, 0, 0), bool)
            if masks.ndim != 3 or masks.shape[-1] != n or (expected and masks.shape[:2] != expected):
                raise ValueError(
                    f"results[{index}]: `masks` must have shape [H, W, {n}] with (H, W) = {expected or '(H, W)'} "
                    f"of the original image. Received: masks.shape={masks.shape}"
                )
            entries = [{"segmentation": rle} for rle in _encode_masks(masks[:, :, chosen])]
        for i, entry in zip(chosen, entries):
            detections.append({"image_id": index, "category_id": int(ids[i]), "score": float(scores[i]), **entry})
    return detections


def _load_results(coco_gt, detections):
    COCO = _pycocotools()[1]
    if detections:
        return coco_gt.loadRes(detections)
    # `COCO.loadRes` indexes the first entry, so an empty result set is built
    # by hand: same images and categories, no annotations.
    coco_dt = COCO()
    coco_dt.dataset = {
        "images": list(coco_gt.dataset["images"]),
        "categories": list(coco_gt.dataset["categories"]),
        "annotations": [],
    }
    coco_dt.createIndex()
    return coco_dt


def coco_evaluate(samples, results, iou_types=("bbox", "segm"), class_ids=None, verbose=False):
    """Computes COCO-style AP and AR of detections against ground truth.

    Runs `pycocotools.cocoeval.COCOeval` (IoU thresholds 0.50:0.05:0.95,
    101-point interpolated precision, at most 100 detections per image and
    class, areas small < 32**2 <= medium <= 96**2 < large in pixels of the
    ground-truth mask) once per IoU type on in-memory COCO objects from
    `samples_to_coco` and `results_to_coco`. Detections are matched to the
    ground truth of their own class only. Boxes are scored from the results'
    `rois`, masks from their `masks`.

    Answers to the edge cases:
    - A metric with no ground truth to measure (a category, or an area range,
      with no ground-truth instance) is -1, pycocotools' convention, and it
      is left out of the means; when nothing has ground truth every metric
      is -1.
    - No detections at all: every metric that has ground truth is 0.0.
    - Images without ground truth count; a detection on one is a false
      positive and lowers the precision of its class.
    - A result with `n = 0` contributes no detections.

    Args:
        samples: sequence of dicts `{"image": uint8 [H, W, 3], "masks": bool
            [H, W, N], "class_ids": int [N]}`. `N` may be 0.
        results: sequence of dicts, one per sample in the same order, as
            `MaskRCNN.detect` returns them: `{"rois": float [n, 4] yxyx in
            pixels of the original image, "class_ids": int [n], "scores":
            float [n], "masks": bool [H, W, n] at the original image size}`.
        iou_types: tuple of str. Any of `"bbox"` and `"segm"`. Defaults to
            `("bbox", "segm")`.
        class_ids: sequence of ints or `None`. The categories to evaluate;
            ground truth and detections of other classes are left out.
            Defaults to `None`, every class id seen in samples or results.
        verbose: bool. Let pycocotools print its progress and summary table.
            Defaults to `False`.

    Returns:
        Dict of Python floats (pycocotools' means over 101 recall points, so a
        perfect score may read 0.9999999999999998): for `"bbox"` the keys `"bbox_ap"`,
        `"bbox_ap50"`, `"bbox_ap75"`, `"bbox_ap_small"`, `"bbox_ap_medium"`,
        `"bbox_ap_large"`, `"bbox_ar1"`, `"bbox_ar10"`, `"bbox_ar100"`,
        `"bbox_ar_small"`, `"bbox_ar_medium"`, `"bbox_ar_large"` (the order of
        `COCOeval.stats`); for `"segm"` the same with the prefix `"mask_"`;
        and the ints `"num_images"`, `"num_ground_truth"` and
        `"num_detections"` (instances and detections of evaluated classes;
        detections before the 100-per-image cap).

    Raises:
        ValueError: if `samples` is empty, `len(samples) != len(results)`, a
            mask's size differs from its image's, counts disagree within a
            sample or result, a class id is below 1, or `iou_types` is not a
            non-empty subset of `("bbox", "segm")`.

    Example:

    >>> import numpy as np
    >>> from keras_maskrcnn_layers.evaluation import coco_evaluate, extract_boxes
    >>> masks = np.zeros((64, 64, 1), bool)
    >>> masks[8:38, 16:46, 0] = True
    >>> sample = {"image": np.zeros((64, 64, 3), "uint8"), "masks": masks, "class_ids": np.array([1])}
    >>> result = {"rois": extract_boxes(masks).astype("float32"), "class_ids": np.array([1]),
    ...           "scores": np.array([0.9]), "masks": masks}
    >>> metrics = coco_evaluate([sample], [result])
    >>> [round(metrics[key], 6) for key in ("bbox_ap", "mask_ap50", "mask_ap_large")]
    [1.0, 1.0, -1.0]
    """
    evaluation = CocoAccumulator(iou_types, class_ids)
    evaluation.add(samples, results)
    return evaluation.evaluate(verbose=verbose)


class CocoAccumulator:
    """`coco_evaluate` a chunk of images at a time.

    Each chunk's ground truth and detections become COCO annotations (masks
    as compressed RLE) as soon as they are added, so neither the images nor
    the full-size masks of earlier chunks are kept. `MaskRCNN.evaluate` uses
    it. The metrics equal those of `coco_evaluate` on all the chunks at once.

    Args:
        iou_types: as in `coco_evaluate`. Defaults to `("bbox", "segm")`.
        class_ids: as in `coco_evaluate`. Defaults to `None`, every class id
            seen in the samples or results added.

    Example: the same object twice, found in the first chunk and missed in
    the second, so recall is 0.5 at precision 1 (51 of COCO's 101 recall
    points).

    >>> import numpy as np
    >>> from keras_maskrcnn_layers.evaluation import CocoAccumulator, extract_boxes
    >>> masks = np.zeros((32, 32, 1), bool)
    >>> masks[4:20, 8:24, 0] = True
    >>> sample = {"image": np.zeros((32, 32, 3), "uint8"), "masks": masks, "class_ids": np.array([1])}
    >>> hit = {"rois": extract_boxes(masks).astype("float32"), "class_ids": np.array([1]),
    ...        "scores": np.array([0.9]), "masks": masks}
    >>> miss = {"rois": np.zeros((0, 4)), "class_ids": np.zeros(0, int), "scores": np.zeros(0),
    ...         "masks": np.zeros((32, 32, 0), bool)}
    >>> evaluation = CocoAccumulator()
    >>> evaluation.add([sample], [hit])
    >>> evaluation.add([sample], [miss])
    >>> metrics = evaluation.evaluate()
    >>> metrics["num_images"], metrics["num_ground_truth"], round(metrics["mask_ap50"], 3)
    (2, 2, 0.505)
    """

    def __init__(self, iou_types=("bbox", "segm"), class_ids=None):
        if isinstance(iou_types, str):
            iou_types = (iou_types,)
        iou_types = tuple(iou_types)
        if not iou_types or any(t not in _PREFIXES for t in iou_types) or len(set(iou_types)) != len(iou_types):
            raise ValueError(
                f"`iou_types` must be a non-empty subset of ('bbox', 'segm'). Received: iou_types={iou_types!r}"
            )
        self.iou_types = iou_types
        self.class_ids = None if class_ids is None else sorted(_check_class_ids(class_ids, "`class_ids`").tolist())
        self._images = []
        self._annotations = []
        self._detections = {t: [] for t in iou_types}
        self._seen = set()

    @property
    def num_images(self):
        return len(self._images)

    def add(self, samples, results):
        """Adds one chunk: samples and their results, in the same order."""
        samples, results = list(samples), list(results)
        if len(samples) != len(results):
            raise ValueError(
                f"`samples` and `results` must have the same length. Received: {len(samples)} samples "
                f"and {len(results)} results"
            )
        first = len(self._images)
        seen = set()
        for index, result in enumerate(results, start=first):
            seen.update(_check_class_ids(result["class_ids"], f"results[{index}]['class_ids']").tolist())
        dataset = samples_to_coco(samples, class_ids=self.class_ids, first_image_id=first)
        image_shapes = [np.shape(sample["image"])[:2] for sample in samples]
        detections = {
            t: results_to_coco(results, t, class_ids=self.class_ids, image_shapes=image_shapes, first_image_id=first)
            for t in self.iou_types
        }
        # Only once the whole chunk converted: a bad sample leaves nothing half-added.
        self._images.extend(dataset["images"])
        for annotation in dataset["annotations"]:
            # COCOeval reads id 0 as "unmatched", so ids start at 1.
            annotation["id"] = len(self._annotations) + 1
            self._annotations.append(annotation)
        for t in self.iou_types:
            self._detections[t].extend(detections[t])
        for sample in samples:
            # Classes whose every instance is empty count too, as in `coco_evaluate`'s default.
            seen.update(np.asarray(sample["class_ids"]).reshape(-1).astype(int).tolist())
        self._seen.update(seen)

    def evaluate(self, verbose=False):
        """The metrics of `coco_evaluate` over every chunk added."""
        if not self._images:
            raise ValueError("`samples` must not be empty.")
        _, COCO, COCOeval = _pycocotools()
        categories = self.class_ids if self.class_ids is not None else sorted(self._seen)
        dataset = {
            "images": list(self._images),
            "annotations": list(self._annotations),
            "categories": [{"id": c, "name": str(c)} for c in categories],
        }
        metrics = {"num_images": len(self._images), "num_ground_truth": len(self._annotations)}
        quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
        with quiet:
            coco_gt = COCO()
            coco_gt.dataset = dataset
            coco_gt.createIndex()
            for iou_type in self.iou_types:
                detections = self._detections[iou_type]
                metrics["num_detections"] = len(detections)
                if not categories:
                    # COCOeval has nothing to loop over; every metric is undefined.
                    stats = -np.ones(len(STAT_NAMES))
                else:
                    evaluator = COCOeval(coco_gt, _load_results(coco_gt, detections), iou_type)
                    evaluator.evaluate()
                    evaluator.accumulate()
                    evaluator.summarize()
                    stats = evaluator.stats
                for name, value in zip(STAT_NAMES, stats):
                    metrics[_PREFIXES[iou_type] + name] = float(value)
        return metrics

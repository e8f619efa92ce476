"""`python -m keras_maskrcnn_layers.tools`: anchor and mask diagnostics from the command line.

    python -m keras_maskrcnn_layers.tools anchors --coco instances.json [--preset coco] [--config cfg.json]
    python -m keras_maskrcnn_layers.tools masks --coco instances.json --images DIR --model model.keras

TensorFlow is imported only by `masks`, which loads a model and images.
"""

import argparse
import collections
import json
import os
import sys

import numpy as np

from keras_maskrcnn_layers.config import PRESETS, MaskRCNNConfig
from keras_maskrcnn_layers.config import resize_geometry as input_geometry
from keras_maskrcnn_layers.evaluation import mask_size_report, proposal_recall, suggest_anchor_scales

# === From COCO boxes to network-input boxes ===


def resize_geometry(height, width, config):
    """Scale and top-left offset that `kml.data.resize_image` gives an image under a config.

    The arithmetic `resize_image` shares (`IMAGE_RESIZE_MODE`,
    `IMAGE_MIN_DIM`, `IMAGE_MAX_DIM`, `IMAGE_MIN_SCALE`), without reading
    or resizing pixels.

    Args:
        height: int. Original image height.
        width: int. Original image width.
        config: `MaskRCNNConfig`.

    Returns:
        Tuple `(scale, top, left)`: network-input pixel = original pixel *
        `scale` + `(top, left)`; or `None` if the image does not fit the
        input (modes `"pad64"` and `"none"` never scale down).

    Example:

    >>> import keras_maskrcnn_layers as kml
    >>> from keras_maskrcnn_layers.tools.__main__ import resize_geometry
    >>> resize_geometry(64, 32, kml.MaskRCNNConfig.preset("shapes"))
    (2.0, 0, 32)
    """
    scale, (new_height, new_width), (top, left) = input_geometry(
        height, width, config.IMAGE_MIN_DIM, config.IMAGE_MAX_DIM, config.IMAGE_MIN_SCALE, config.IMAGE_RESIZE_MODE
    )
    if max(new_height, new_width) > config.IMAGE_MAX_DIM:
        return None
    return scale, top, left


def coco_input_boxes(dataset, config):
    """The boxes of a COCO dataset dict in network-input pixels under a config.

    Crowd annotations, boxes without area, annotations of unknown images
    and images that do not fit the input are skipped and counted.

    Args:
        dataset: dict of a COCO annotation file (`"images"` with `"id"`,
            `"height"`, `"width"`; `"annotations"` with `"image_id"`,
            `"bbox"` `[x, y, width, height]`, optional `"iscrowd"`).
        config: `MaskRCNNConfig`.

    Returns:
        Tuple `(boxes, skipped)`: float64 `[N, 4]` yxyx network-input
        pixels, and a `collections.Counter` of skipped annotations by reason.

    Example:

    >>> import keras_maskrcnn_layers as kml
    >>> from keras_maskrcnn_layers.tools.__main__ import coco_input_boxes
    >>> dataset = {"images": [{"id": 1, "height": 64, "width": 64}],
    ...            "annotations": [{"image_id": 1, "bbox": [8, 4, 16, 8]},
    ...                            {"image_id": 1, "bbox": [0, 0, 5, 5], "iscrowd": 1}]}
    >>> boxes, skipped = coco_input_boxes(dataset, kml.MaskRCNNConfig.preset("shapes"))
    >>> boxes.tolist(), dict(skipped)
    ([[8.0, 16.0, 24.0, 48.0]], {'crowd': 1})
    """
    geometry = {
        image["id"]: resize_geometry(int(image["height"]), int(image["width"]), config)
        for image in dataset.get("images", [])
    }
    boxes, skipped = [], collections.Counter()
    for annotation in dataset.get("annotations", []):
        x, y, w, h = (float(v) for v in annotation["bbox"])
        if annotation.get("iscrowd", 0):
            skipped["crowd"] += 1
        elif annotation["image_id"] not in geometry:
            skipped["unknown image"] += 1
        elif w <= 0 or h <= 0:
            skipped["no area"] += 1
        elif geometry[annotation["image_id"]] is None:
            skipped["image does not fit the input"] += 1
        else:
            scale, top, left = geometry[annotation["image_id"]]
            boxes.append([y * scale + top, x * scale + left, (y + h) * scale + top, (x + w) * scale + left])
    return np.asarray(boxes, np.float64).reshape(-1, 4), skipped


# === Commands ===


def _require(parser, path, what, folder=False):
    exists = os.path.isdir(path) if folder else os.path.isfile(path)
    if not exists:
        parser.error(f"{what} not found: {path}")


def _config(parser, args):
    if args.config is None:
        return MaskRCNNConfig.preset(args.preset)
    _require(parser, args.config, "config file")
    try:
        with open(args.config) as file:
            return MaskRCNNConfig.from_json(file.read())
    except ValueError as error:  # bad JSON or settings
        parser.error(f"cannot read config {args.config}: {error}")


def _anchors(parser, args):
    config = _config(parser, args)
    _require(parser, args.coco, "COCO annotation file")
    try:
        with open(args.coco) as file:
            dataset = json.load(file)
    except ValueError as error:
        parser.error(f"{args.coco} is not valid JSON: {error}")
    boxes, skipped = coco_input_boxes(dataset, config)
    if boxes.shape[0] == 0:
        parser.error(f"no usable boxes in {args.coco} (skipped: {dict(skipped) or 'none'})")
    suggestion = suggest_anchor_scales(
        boxes,
        strides=config.BACKBONE_STRIDES,
        ratios=config.RPN_ANCHOR_RATIOS if args.keep_ratios else None,
        image_shape=config.IMAGE_SHAPE[:2],
        current_scales=config.RPN_ANCHOR_SCALES,
        current_ratios=config.RPN_ANCHOR_RATIOS,
        anchor_stride=config.RPN_ANCHOR_STRIDE,
    )
    notes = ", ".join(f"{count} {reason}" for reason, count in sorted(skipped.items()))
    print(f"{boxes.shape[0]} boxes in {config.IMAGE_SHAPE[0]} x {config.IMAGE_SHAPE[1]} network-input pixels "
          f"({config.NAME!r} config, mode {config.IMAGE_RESIZE_MODE!r}); skipped: {notes or 'none'}")
    print(suggestion.table())
    return 0


def _masks(parser, args):
    _require(parser, args.coco, "COCO annotation file")
    _require(parser, args.images, "image folder", folder=True)
    _require(parser, args.model, "model file")
    from keras_maskrcnn_layers.data import load_coco
    from keras_maskrcnn_layers.training import MaskRCNN

    try:
        samples = load_coco(args.coco, args.images)
        model = MaskRCNN.load(args.model)
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    samples = [samples[i] for i in range(min(len(samples), args.limit or len(samples)))]
    if not samples:
        parser.error(f"no images in {args.coco}")
    results = model.detect([sample["image"] for sample in samples])
    report = mask_size_report(results, samples, iou_threshold=args.iou_threshold)
    print(report.table())
    print()
    print(proposal_recall(model, samples).table())
    if args.plot:
        report.plot(args.plot)
        print(f"\nPlot written to {args.plot}")
    return 0


# === Command line ===


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _iou(text):
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def build_parser():
    """The argument parser of both commands."""
    parser = argparse.ArgumentParser(
        prog="python -m keras_maskrcnn_layers.tools",
        description="Diagnostics for Mask R-CNN anchors and masks.",
        epilog=(
            "examples:\n"
            "  python -m keras_maskrcnn_layers.tools anchors --coco instances.json --preset coco\n"
            "  python -m keras_maskrcnn_layers.tools masks --coco instances.json --images images/ "
            "--model model.keras --limit 100 --plot masks.png\n"
            "Run a command with --help for its options."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{anchors,masks}")
    anchors = commands.add_parser(
        "anchors",
        help="suggest anchor scales and ratios for the boxes of a COCO file",
        description=(
            "Reads only the COCO JSON (image sizes and boxes; crowd annotations skipped), scales the boxes "
            "into network-input pixels as the config resizes images, and prints the anchor scales and "
            "ratios that give the most boxes an anchor of IoU >= 0.7 (then >= 0.5), next to the config's."
        ),
    )
    anchors.add_argument("--coco", required=True, help="COCO instances JSON file")
    anchors.add_argument("--preset", choices=sorted(PRESETS), default="coco", help="config preset (default: coco)")
    anchors.add_argument("--config", help="config JSON (MaskRCNNConfig.to_json()); overrides --preset")
    anchors.add_argument("--keep-ratios", action="store_true", help="keep the config's RPN_ANCHOR_RATIOS")
    anchors.set_defaults(run=_anchors, parser=anchors)
    masks = commands.add_parser(
        "masks",
        help="mask quality by object size and proposal recall of a saved model",
        description=(
            "Runs a model saved by MaskRCNN.save on the images of a COCO file and prints mask quality by "
            "object size (area ratio, mask IoU, boundary F of matched instances; missed objects and false "
            "positives) and the recall of the region proposals."
        ),
    )
    masks.add_argument("--coco", required=True, help="COCO instances JSON file")
    masks.add_argument("--images", required=True, help="folder of the images named in the COCO file")
    masks.add_argument("--model", required=True, help=".keras file written by MaskRCNN.save")
    masks.add_argument("--limit", type=_positive_int, help="use only the first N images")
    masks.add_argument("--iou-threshold", type=_iou, default=0.5, help="mask IoU to match (default: 0.5)")
    masks.add_argument("--plot", help="write the mask-size plot to this image file (e.g. out.png)")
    masks.set_defaults(run=_masks, parser=masks)
    return parser


def main(argv=None):
    """Runs the command line.

    Args:
        argv: list of str or None. Arguments without the program name.
            Defaults to `None`, `sys.argv[1:]`.

    Returns:
        int exit status (0). Bad arguments and missing files exit with
        status 2 and a message, as `argparse` does.

    Example:

    >>> import json, os, tempfile
    >>> from keras_maskrcnn_layers.tools.__main__ import main
    >>> dataset = {"images": [{"id": 1, "height": 128, "width": 128}],
    ...            "annotations": [{"image_id": 1, "bbox": [24, 24, 16, 16]}]}
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = os.path.join(folder, "instances.json")
    ...     with open(path, "w") as file:
    ...         json.dump(dataset, file)
    ...     status = main(["anchors", "--coco", path, "--preset", "shapes"])
    1 boxes in 128 x 128 network-input pixels ('shapes' config, mode 'square'); skipped: none
    Share of 1 ground-truth boxes whose best anchor reaches the IoU
    ...
    >>> status
    0
    """
    args = build_parser().parse_args(argv)
    return args.run(args.parser, args)


if __name__ == "__main__":
    sys.exit(main())

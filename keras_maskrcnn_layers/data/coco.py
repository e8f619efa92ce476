"""COCO-format instance segmentation data as a lazy sequence of samples.

Masks are decoded by `pycocotools` (`COCO.annToMask`), which handles
polygons, compressed RLE and uncompressed RLE alike. Crowd annotations
(`iscrowd=1`) mark regions to ignore rather than instances, so they are
skipped, as in matterport's COCO loader.
"""

import collections.abc
import contextlib
import io
import os

import numpy as np
import tensorflow as tf


def _read_image(path):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"COCO image file not found: {path}")
    data = tf.io.read_file(path)
    # channels=3 turns grayscale into RGB and drops alpha.
    image = tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8)
    return image.numpy()


class CocoSamples(collections.abc.Sequence):
    """The images of a COCO annotation file, loaded one sample at a time.

    Build it with `load_coco`. Indexing decodes the image and its masks;
    nothing is cached, so memory stays flat over large data sets. Slicing
    returns a `CocoSamples` over the selected images.

    Attributes:
        coco: the `pycocotools.coco.COCO` index.
        image_dir: folder of the image files.
        image_ids: list of COCO image ids, in sample order.
        class_names: tuple of names, `"BG"` first; index = class id.
        coco_category_ids: tuple, index = class id, `-1` for the background.

    Example:

    >>> import collections.abc
    >>> from keras_maskrcnn_layers.data import CocoSamples
    >>> issubclass(CocoSamples, collections.abc.Sequence)
    True
    """

    def __init__(self, coco, image_dir, image_ids, coco_category_ids, class_names):
        self.coco = coco
        self.image_dir = image_dir
        self.image_ids = list(image_ids)
        self.coco_category_ids = tuple(coco_category_ids)
        self.class_names = tuple(class_names)
        self._class_of_category = {c: i for i, c in enumerate(self.coco_category_ids) if i > 0}

    def __len__(self):
        return len(self.image_ids)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return CocoSamples(
                self.coco, self.image_dir, self.image_ids[index], self.coco_category_ids, self.class_names
            )
        image_id = self.image_ids[index]
        info = self.coco.imgs[image_id]
        path = os.path.join(self.image_dir, info["file_name"])
        image = _read_image(path)
        height, width = int(info["height"]), int(info["width"])
        if image.shape[:2] != (height, width):
            raise ValueError(
                f"COCO image {path} has shape {image.shape[:2]} but its annotation says ({height}, {width})."
            )
        masks, class_ids = [], []
        for ann in self.coco.imgToAnns.get(image_id, []):
            if ann.get("iscrowd", 0) or ann["category_id"] not in self._class_of_category:
                continue
            mask = self.coco.annToMask(ann).astype(bool)
            # Polygons smaller than a pixel rasterise to nothing; an empty
            # mask is no instance (matterport skips them too).
            if not mask.any():
                continue
            masks.append(mask)
            class_ids.append(self._class_of_category[ann["category_id"]])
        stacked = np.stack(masks, axis=-1) if masks else np.zeros((height, width, 0), bool)
        return {
            "image": image,
            "masks": stacked,
            "class_ids": np.asarray(class_ids, np.int32),
            "image_id": int(image_id),
        }

    def __repr__(self):
        return f"CocoSamples({len(self)} images, {len(self.class_names) - 1} classes, image_dir={self.image_dir!r})"


def load_coco(annotation_file, image_dir, category_ids=None, check_files=True):
    """Indexes a COCO annotation file for instance segmentation.

    COCO category ids are mapped to contiguous class ids `1..K`: in sorted
    order, or in the order of `category_ids` when given. Without
    `category_ids` every image of the file is a sample (images without
    annotations give samples with `N = 0`); with it, only images that have
    a non-crowd annotation of one of those categories.

    Args:
        annotation_file: path of the COCO JSON file.
        image_dir: folder holding the files named by `images[].file_name`.
        category_ids: sequence of COCO category ids, or None for all.
            Defaults to `None`.
        check_files: bool. Check now that every image file exists, rather
            than at its first read. Defaults to `True`.

    Returns:
        `CocoSamples`, a sequence of samples (`"image"` uint8 `[H, W, 3]`,
        `"masks"` bool `[H, W, N]`, `"class_ids"` int32 `[N]`,
        `"image_id"` the COCO image id), with `.class_names` and
        `.coco_category_ids`.

    Raises:
        FileNotFoundError: naming a missing annotation or image file.
        ValueError: for unknown or repeated `category_ids`.

    Example:

    >>> import json, os, tempfile
    >>> from keras_maskrcnn_layers.data import load_coco
    >>> categories = [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}]
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = os.path.join(folder, "instances.json")
    ...     with open(path, "w") as f:
    ...         json.dump({"images": [], "annotations": [], "categories": categories}, f)
    ...     samples = load_coco(path, folder)
    >>> samples.class_names, samples.coco_category_ids, len(samples)
    (('BG', 'cat', 'dog'), (-1, 3, 7), 0)
    """
    from pycocotools.coco import COCO

    if not os.path.isfile(annotation_file):
        raise FileNotFoundError(f"COCO annotation file not found: {annotation_file}")
    if not os.path.isdir(image_dir):
        raise FileNotFoundError(f"COCO image folder not found: {image_dir}")
    # pycocotools reports its progress on stdout; keep library output quiet.
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(annotation_file)
    known = sorted(coco.cats)
    if category_ids is None:
        category_ids = known
        image_ids = sorted(coco.imgs)
    else:
        category_ids = [int(c) for c in category_ids]
        unknown = [c for c in category_ids if c not in coco.cats]
        if unknown or len(set(category_ids)) != len(category_ids) or not category_ids:
            raise ValueError(
                f"`category_ids` must be distinct ids of the file's categories {known}. Received: {category_ids}"
            )
        wanted = set(category_ids)
        image_ids = sorted(
            {a["image_id"] for a in coco.anns.values() if a["category_id"] in wanted and not a.get("iscrowd", 0)}
        )
    if check_files:
        for image_id in image_ids:
            path = os.path.join(image_dir, coco.imgs[image_id]["file_name"])
            if not os.path.isfile(path):
                raise FileNotFoundError(f"COCO image file not found: {path} (image id {image_id})")
    class_names = ["BG"] + [coco.cats[c]["name"] for c in category_ids]
    return CocoSamples(coco, image_dir, image_ids, [-1] + list(category_ids), class_names)

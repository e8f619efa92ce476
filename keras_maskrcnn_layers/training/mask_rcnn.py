"""`MaskRCNN`: train, detect, evaluate, save and load a Mask R-CNN."""

import itertools
import math
import warnings
import zipfile

import keras
import numpy as np
import tensorflow as tf

from keras_maskrcnn_layers.config import MaskRCNNConfig
from keras_maskrcnn_layers.data import compose_image_meta, make_dataset, resize_image
from keras_maskrcnn_layers.data.sample import check_image
from keras_maskrcnn_layers.models.mask_rcnn import MaskRCNNComponents, build_mask_rcnn
from keras_maskrcnn_layers.ops._validation import check_mask_threshold, check_positive_int
from keras_maskrcnn_layers.training.postprocess import unmold_detections

CONFIG_ENTRY = "keras_maskrcnn_layers_config.json"


class MaskRCNN:
    """Owns a Mask R-CNN's training and inference models, which share weights.

    Args:
        config: `MaskRCNNConfig`.
        backbone: optional `keras.Model` from images to `[C2, C3, C4, C5]`.
        strategy: optional `tf.distribute.Strategy`; models and optimizer are
            created in its scope (e.g. `MirroredStrategy` over several
            devices).
        jit_compile: bool. Compile training and inference steps with XLA.
            Defaults to `True`.

    Example:

    >>> import keras_maskrcnn_layers as kml
    >>> cfg = kml.MaskRCNNConfig.preset("shapes", IMAGE_MIN_DIM=64, IMAGE_MAX_DIM=64, BATCH_SIZE=2)
    >>> model = kml.MaskRCNN(cfg)
    >>> samples = kml.data.generate_shapes(2, height=64, width=64, seed=1)
    >>> results = model.detect([s["image"] for s in samples])
    >>> sorted(results[0]), results[0]["masks"].shape[:2]
    (['class_ids', 'masks', 'rois', 'scores'], (64, 64))
    """

    def __init__(self, config, backbone=None, strategy=None, jit_compile=True, components=None, inference_model=None):
        if not isinstance(config, MaskRCNNConfig):
            raise ValueError(f"`config` must be a MaskRCNNConfig. Received: {type(config).__name__}")
        self.config = config
        self.strategy = strategy
        self.jit_compile = jit_compile
        with self._scope():
            self.components = components or MaskRCNNComponents(config, backbone)
            self.training_model = build_mask_rcnn(config, "training", components=self.components)
            self.inference_model = inference_model or build_mask_rcnn(config, "inference", components=self.components)
        self._compiled = False
        self._predictor = None
        # A model of the user's may come with trained weights; the config's
        # backbones start from BACKBONE_WEIGHTS or from scratch.
        self._config_backbone = backbone is None and components is None

    def _scope(self):
        return self.strategy.scope() if self.strategy is not None else _NullScope()

    # === Training ===

    def _optimizer(self, total_steps=None):
        cfg = self.config
        rate = cfg.LEARNING_RATE
        if cfg.LR_SCHEDULE == "cosine":
            if total_steps is None:
                # A cosine schedule of unknown length would silently be a constant rate.
                raise ValueError(
                    "`total_steps` is needed with LR_SCHEDULE='cosine': the schedule decays over the whole fit. "
                    "Call compile(total_steps=epochs * steps_per_epoch), let fit() compile (it knows the steps), "
                    "pass your own optimizer, or set LR_SCHEDULE='constant'. Received: total_steps=None"
                )
            warmup = min(50, total_steps // 10)
            rate = keras.optimizers.schedules.CosineDecay(
                rate / 10.0, max(total_steps - warmup, 1), alpha=0.05, warmup_target=rate, warmup_steps=warmup
            )
        # Keras applies weight decay (decoupled, as in AdamW) in both optimizers; 0 or None turns it off.
        common = {"clipnorm": cfg.GRADIENT_CLIP_NORM or None, "weight_decay": cfg.WEIGHT_DECAY or None}
        if cfg.OPTIMIZER == "adam":
            return keras.optimizers.Adam(rate, **common)
        return keras.optimizers.SGD(rate, momentum=cfg.LEARNING_MOMENTUM, **common)

    def compile(self, optimizer=None, total_steps=None):
        """Compiles the training model (done by `fit` when needed).

        Args:
            optimizer: optional Keras optimizer; by default the config's
                (`OPTIMIZER`, `LEARNING_RATE`, `LR_SCHEDULE`, ...).
            total_steps: int or None. Length of the cosine schedule; required
                with `LR_SCHEDULE="cosine"` and the config's optimizer.
                Defaults to `None`.

        Raises:
            ValueError: for `LR_SCHEDULE="cosine"` without `total_steps`
                (unless `optimizer` is given), or a `total_steps` that is not
                a positive integer.
        """
        if total_steps is not None:
            total_steps = check_positive_int("total_steps", total_steps)
        cfg = self.config
        if self._config_backbone and not cfg.TRAIN_BN and cfg.BACKBONE_WEIGHTS is None:
            warnings.warn(
                "TRAIN_BN=False with BACKBONE_WEIGHTS=None: unless you loaded trained weights, the backbone "
                "trains from scratch with every BatchNorm frozen at its initial statistics (mean 0, variance 1), "
                "so nothing is normalised. Set TRAIN_BN=True, or give BACKBONE_WEIGHTS (matterport freezes the "
                "BatchNorm of a pretrained backbone).",
                stacklevel=2,
            )
        with self._scope():
            optimizer = optimizer or self._optimizer(total_steps)
            self.training_model.compile(optimizer=optimizer, jit_compile=self.jit_compile)
        self._compiled = True

    def _as_dataset(self, data, training, augment=None, seed=0):
        if isinstance(data, tf.data.Dataset):
            return data
        return make_dataset(data, self.config, training=training, augment=augment, seed=seed)

    def fit(
        self,
        data,
        epochs=1,
        steps_per_epoch=None,
        validation_data=None,
        validation_steps=None,
        callbacks=None,
        checkpoint_path=None,
        augment=None,
        seed=0,
        verbose="auto",
        initial_epoch=0,
    ):
        """Trains on samples (a list or `kml.data.CocoSamples`) or a `tf.data.Dataset`.

        Args:
            data: samples, or a dataset from `kml.data.make_dataset(...,
                training=True)`.
            epochs: int. Defaults to `1`.
            steps_per_epoch: int. Defaults to `STEPS_PER_EPOCH`.
            validation_data: optional samples or dataset; their losses are
                reported as `val_loss`.
            validation_steps: int. Defaults to `VALIDATION_STEPS`, or fewer
                when `validation_data` has a length and holds fewer batches.
            callbacks: optional list of `keras.callbacks.Callback`.
            checkpoint_path: optional path ending in `.weights.h5`; the
                weights are saved there after every epoch.
            augment: augmentation of `make_dataset` (`"flips"` by default).
            seed: int. Shuffling and augmentation seed. Defaults to `0`.
            verbose: Keras verbosity (progress bar by default).
            initial_epoch: int. Defaults to `0`.

        Returns:
            The `keras.callbacks.History`.
        """
        steps_per_epoch = steps_per_epoch or self.config.STEPS_PER_EPOCH
        if not self._compiled:
            self.compile(total_steps=max(1, (epochs - initial_epoch) * steps_per_epoch))
        dataset = self._as_dataset(data, True, augment, seed)
        callbacks = list(callbacks or [])
        if checkpoint_path is not None:
            callbacks.append(keras.callbacks.ModelCheckpoint(checkpoint_path, save_weights_only=True))
        validation = None
        if validation_data is not None:
            validation = self._as_dataset(validation_data, False)
            if validation_steps is None:
                validation_steps = self.config.VALIDATION_STEPS
                batches = _batch_count(validation_data, self.config.BATCH_SIZE)
                if batches is not None:
                    # No more steps than batches: Keras warns that it "ran out of data" otherwise.
                    validation_steps = min(validation_steps, batches)
        return self.training_model.fit(
            dataset,
            epochs=epochs,
            steps_per_epoch=steps_per_epoch,
            validation_data=validation,
            validation_steps=validation_steps if validation is not None else None,
            callbacks=callbacks,
            verbose=verbose,
            initial_epoch=initial_epoch,
            shuffle=False,  # make_dataset shuffles with its own seed
        )

    # === Inference ===

    def mold_inputs(self, images):
        """Resizes and pads images as in training; returns `(images, image_meta)`.

        Raises:
            ValueError: for an image that is not `[H, W, IMAGE_CHANNEL_COUNT]`
                of finite real numbers in `[0, 255]` (the image rules of
                `kml.data.validate_sample`).
        """
        channels = self.config.IMAGE_CHANNEL_COUNT
        return _mold(self.config, [_check_image(i, image, channels) for i, image in enumerate(images)])

    def _predict(self, images, meta):
        if self._predictor is None:
            # A twin that shares every layer carries the compiled predict
            # step, so the inference model itself saves without compile state.
            with self._scope():
                self._predictor = keras.Model(self.inference_model.input, self.inference_model.output)
                self._predictor.compile(jit_compile=self.jit_compile)
        outputs = self._predictor.predict_on_batch({"images": images, "image_meta": meta})
        return {k: np.asarray(v) for k, v in outputs.items()}

    def detect(self, images, verbose="auto", mask_threshold=None, paste_padding=None):
        """Detects objects in images of any size.

        Args:
            images: list of uint8 `[H, W, 3]` arrays.
            verbose: `"auto"`, 0 or 1. 1 shows a progress bar, 0 none;
                `"auto"` shows one when there is more than one batch of
                `BATCH_SIZE` images. Defaults to `"auto"`.
            mask_threshold: float in `(0, 1]` or None. Overrides
                `DETECTION_MASK_THRESHOLD` for this call (a sweep over
                thresholds needs no new model). Defaults to `None`.
            paste_padding: int or None. Overrides `MASK_PASTE_PADDING` for
                this call. Defaults to `None`.

        Returns:
            One dict per image: `rois [n, 4]` yxyx in the original image's
            pixels, `class_ids [n]`, `scores [n]` and `masks [H, W, n]` bool at
            the original size, pasted with `MASK_PASTE_PADDING` into the
            boxes scaled by `MASK_BOX_SCALE` and thresholded at
            `DETECTION_MASK_THRESHOLD`.

        Raises:
            ValueError: for an image that is not `[H, W, IMAGE_CHANNEL_COUNT]`
                of finite real numbers in `[0, 255]` (named by its index), or
                a bad `verbose`, `mask_threshold` or `paste_padding`.
        """
        cfg = self.config
        # Every image is checked before the first batch runs, and named by its index in `images`.
        images = [_check_image(i, image, cfg.IMAGE_CHANNEL_COUNT) for i, image in enumerate(images)]
        threshold = cfg.DETECTION_MASK_THRESHOLD
        if mask_threshold is not None:
            threshold = check_mask_threshold("mask_threshold", mask_threshold)
        padding = cfg.MASK_PASTE_PADDING
        if paste_padding is not None:
            padding = check_positive_int("paste_padding", paste_padding, minimum=0)
        batch = cfg.BATCH_SIZE
        progress = _progress_bar(verbose, len(images), batch)
        results = []
        for start in range(0, len(images), batch):
            chunk = images[start : start + batch]
            molded, meta = _mold(cfg, chunk)
            # A full batch every time: one compiled shape, no recompilation.
            missing = batch - len(chunk)
            if missing:
                molded = np.concatenate([molded, np.repeat(molded[-1:], missing, axis=0)])
                meta = np.concatenate([meta, np.repeat(meta[-1:], missing, axis=0)])
            outputs = self._predict(molded, meta)
            for i in range(len(chunk)):
                results.append(unmold_detections(outputs, i, meta[i], threshold, padding, cfg.MASK_BOX_SCALE))
            if progress is not None:
                progress.add(len(chunk))
        return results

    def evaluate(self, samples, verbose="auto", chunk_size=64):
        """COCO box and mask AP on samples (keys as `kml.evaluation.coco_evaluate`).

        Samples are read and detected `chunk_size` at a time, and each
        chunk's ground truth and detections are encoded as COCO RLE before
        the next is read (`kml.evaluation.CocoAccumulator`): memory stays
        that of one chunk of images and full-size masks, whatever the
        number of samples (a lazy `kml.data.load_coco` included).

        Args:
            samples: iterable of samples (dicts with `"image"`, `"masks"`,
                `"class_ids"`).
            verbose: `"auto"`, 0 or 1: a progress bar over the images. 1
                shows one, 0 none; `"auto"` shows one when there is more
                than one batch (or the count is unknown). Defaults to
                `"auto"`.
            chunk_size: int >= 1. Images per chunk, rounded up to a multiple
                of `BATCH_SIZE`. Defaults to `64`.
        """
        from keras_maskrcnn_layers.evaluation import CocoAccumulator

        chunk_size = check_positive_int("chunk_size", chunk_size)
        # Whole batches per chunk: `detect` pads a chunk's last batch.
        batch = self.config.BATCH_SIZE
        chunk_size = -(-chunk_size // batch) * batch
        try:
            total = len(samples)
        except TypeError:
            total = None
        progress = _progress_bar(verbose, total, batch)
        evaluation = CocoAccumulator()
        samples = iter(samples)
        while chunk := list(itertools.islice(samples, chunk_size)):
            evaluation.add(chunk, self.detect([s["image"] for s in chunk], verbose=0))
            if progress is not None:
                progress.add(len(chunk))
        return evaluation.evaluate()

    # === Saving ===

    def save(self, path):
        """Saves the inference model and the config in one `.keras` file."""
        if not str(path).endswith(".keras"):
            raise ValueError(f"`path` must end in `.keras`. Received: path={path!r}")
        self.inference_model.save(path)
        # The config rides along inside the zip; Keras ignores the entry.
        with zipfile.ZipFile(path, "a") as archive:
            archive.writestr(CONFIG_ENTRY, self.config.to_json())

    @classmethod
    def load(cls, path, strategy=None, jit_compile=True):
        """Loads what `save` wrote; training can continue from it."""
        with zipfile.ZipFile(path) as archive:
            if CONFIG_ENTRY not in archive.namelist():
                raise ValueError(f"{path} was not written by MaskRCNN.save: it has no {CONFIG_ENTRY}.")
            config = MaskRCNNConfig.from_json(archive.read(CONFIG_ENTRY))
        scope = strategy.scope() if strategy is not None else _NullScope()
        with scope:
            inference_model = keras.saving.load_model(path)
        components = MaskRCNNComponents.from_model(config, inference_model)
        return cls(config, strategy=strategy, jit_compile=jit_compile, components=components,
                   inference_model=inference_model)


def _batch_count(data, batch_size):
    """Batches in `data` if it tells its length (a sequence, or a dataset of known cardinality), else None."""
    if isinstance(data, tf.data.Dataset):
        cardinality = int(data.cardinality())
        return cardinality if cardinality >= 0 else None
    try:
        return max(1, math.ceil(len(data) / batch_size))
    except TypeError:
        return None


def _mold(cfg, images):
    """`MaskRCNN.mold_inputs` for images already checked."""
    molded, metas = [], []
    for image in images:
        resized, window, scale, _ = resize_image(
            image, cfg.IMAGE_MIN_DIM, cfg.IMAGE_MAX_DIM, cfg.IMAGE_MIN_SCALE, cfg.IMAGE_RESIZE_MODE
        )
        molded.append(resized.astype(np.float32))
        metas.append(compose_image_meta(image.shape, window, scale))
    return np.stack(molded), np.stack(metas)


def _check_image(index, image, channels):
    """An image for `detect`, checked by the image rule of `validate_sample`."""
    return check_image(image, channels, f"`images[{index}]`")


def _progress_bar(verbose, total, batch):
    """The progress bar of `detect` and `evaluate`: `"auto"` shows one beyond one batch (or an unknown count)."""
    if verbose not in ("auto", 0, 1, 2, True, False):
        raise ValueError(f"`verbose` must be 'auto', 0, 1 or 2. Received: verbose={verbose!r}")
    show = (total is None or total > batch) if verbose == "auto" else bool(verbose)
    return keras.utils.Progbar(total, unit_name="image") if show else None


class _NullScope:
    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False

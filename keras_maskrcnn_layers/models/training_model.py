"""`MaskRCNNTrainingModel`: the functional training model that logs each loss."""

import keras

from keras_maskrcnn_layers.api_export import kml_export
from keras_maskrcnn_layers.layers.mask_rcnn_losses import LOSS_NAMES


@kml_export
class MaskRCNNTrainingModel(keras.Model):
    """The functional training model of `build_mask_rcnn`, logging each loss.

    `fit` and `evaluate` report each of the five losses, unweighted and
    averaged over the epoch's samples, next to `loss` (the weighted sum that
    `MaskRCNNLosses` adds with `add_loss` and the optimizer minimises): in
    the progress bar, the `History` and callbacks' logs, with a `val_`
    prefix for validation data. Like any Keras model with metrics,
    `train_on_batch` and `test_on_batch` then return a list, `[loss,
    rpn_class_loss, ..., mrcnn_mask_loss]`, or a dict with
    `return_dict=True`.

    Args:
        inputs: the model's inputs, as for a functional `keras.Model`.
        outputs: dict holding at least the losses named in
            `kml.layers.LOSS_NAMES`, each a `[B]` tensor.
        **kwargs: `name` and the other arguments of a functional model.

    Example:

    >>> import keras_maskrcnn_layers as kml
    >>> cfg = kml.MaskRCNNConfig.preset("shapes", IMAGE_MIN_DIM=64, IMAGE_MAX_DIM=64)
    >>> model = kml.build_mask_rcnn(cfg, mode="training")
    >>> type(model).__name__
    'MaskRCNNTrainingModel'
    >>> [metric.name for metric in model.metrics]
    ['rpn_class_loss', 'rpn_bbox_loss', 'mrcnn_class_loss', 'mrcnn_bbox_loss', 'mrcnn_mask_loss']
    """

    # `*args, **kwargs`, not `inputs, outputs`: Keras recognises a functional
    # subclass by that signature, and only then saves and revives its graph.
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        missing = set(LOSS_NAMES) - set(self.output if isinstance(self.output, dict) else ())
        if missing:
            raise ValueError(
                f"A MaskRCNNTrainingModel must output a dict holding the losses {list(LOSS_NAMES)}. "
                f"Missing: {sorted(missing)}"
            )
        # Metrics assigned as attributes are tracked: they join `self.metrics`,
        # are reset every epoch, and are carried through JAX's stateless steps.
        self.loss_trackers = {name: keras.metrics.Mean(name=name) for name in LOSS_NAMES}

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        for name, tracker in self.loss_trackers.items():
            tracker.update_state(y_pred[name])
        return super().compute_metrics(x, y, y_pred, sample_weight=sample_weight)

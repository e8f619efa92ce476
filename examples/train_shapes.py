"""The main job: train Mask R-CNN on generated shapes from scratch, on the CPU.

Generates training and held-out images (squares, circles, triangles of
varied sizes, overlapping), trains the `"shapes"` preset within a time
budget, reports COCO box and mask AP on the held-out images, and draws the
predicted masks over them in a PNG.

Run: `make demo` (or `KERAS_BACKEND=tensorflow python examples/train_shapes.py`).
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_maskrcnn_layers as kml  # noqa: E402


class TimeBudget(keras.callbacks.Callback):
    """Stops training before an epoch that would overrun the budget."""

    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()
        self.longest_epoch = 0.0
        self.epoch_start = self.start

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        # The first epoch includes XLA compilation; later ones are steadier.
        duration = now - self.epoch_start if epoch > 0 else (now - self.epoch_start) * 0.6
        self.longest_epoch = max(self.longest_epoch, duration)
        if now - self.start + self.longest_epoch > self.seconds:
            print(f"\nTime budget of {self.seconds:.0f} s reached after epoch {epoch + 1}.")
            self.model.stop_training = True


def draw(samples, results, class_names, path, columns=4):
    """Predicted masks, boxes and labels over the images, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = -(-len(samples) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3 * rows))
    colours = plt.get_cmap("tab10")
    for ax, sample, result in zip(np.ravel(axes), samples, results):
        canvas = sample["image"].astype(np.float32) / 255.0
        for k in range(result["masks"].shape[-1]):
            colour = np.asarray(colours(k % 10)[:3])
            mask = result["masks"][..., k]
            canvas[mask] = 0.45 * canvas[mask] + 0.55 * colour
        ax.imshow(canvas)
        for k, (y1, x1, y2, x2) in enumerate(result["rois"]):
            colour = colours(k % 10)
            ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color=colour, linewidth=1))
            label = f"{class_names[result['class_ids'][k]]} {result['scores'][k]:.2f}"
            ax.text(x1, y1 - 1, label, color="white", fontsize=6, backgroundcolor=colour[:3])
        ax.set_title(f"{len(result['scores'])} found / {len(sample['class_ids'])} true", fontsize=8)
    for ax in np.ravel(axes):
        ax.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-images", type=int, default=1000)
    parser.add_argument("--val-images", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=22)
    parser.add_argument("--steps-per-epoch", type=int, default=50)
    parser.add_argument("--time-budget", type=float, default=540.0, help="seconds of training at most")
    parser.add_argument("--output", default="demo_output")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    os.makedirs(args.output, exist_ok=True)
    keras.utils.set_random_seed(args.seed)

    config = kml.MaskRCNNConfig.preset("shapes", STEPS_PER_EPOCH=args.steps_per_epoch)
    train = kml.data.generate_shapes(args.train_images, seed=args.seed)
    held_out = kml.data.generate_shapes(args.val_images, seed=args.seed + 10_000)
    print(
        f"Keras {keras.__version__} ({keras.backend.backend()}); preset 'shapes': {config.IMAGE_SHAPE[0]} px, "
        f"backbone {config.BACKBONE}, batch {config.BATCH_SIZE}, masks {config.MASK_POOL_SIZE} -> "
        f"{config.MASK_SHAPE[0]} px; {len(train)} training and {len(held_out)} held-out images"
    )

    start = time.perf_counter()
    model = kml.MaskRCNN(config)
    history = model.fit(train, epochs=args.epochs, callbacks=[TimeBudget(args.time_budget)], seed=args.seed)
    train_seconds = time.perf_counter() - start

    metrics = model.evaluate(held_out)
    results = model.detect([s["image"] for s in held_out[:8]])
    total_seconds = time.perf_counter() - start
    figure_path = os.path.join(args.output, "shapes_predictions.png")
    draw(held_out[:8], results, kml.data.SHAPES_CLASS_NAMES, figure_path)

    print(f"\nTrained {len(history.history['loss'])} epochs x {args.steps_per_epoch} steps in {train_seconds:.0f} s "
          f"(final loss {history.history['loss'][-1]:.3f}); {total_seconds:.0f} s in all.")
    last = ", ".join(f"{name} {history.history[name][-1]:.3f}" for name in kml.layers.LOSS_NAMES)
    print(f"final epoch's losses: {last}")
    print(f"Held-out images: {metrics['num_images']}, objects: {metrics['num_ground_truth']}, "
          f"detections: {metrics['num_detections']}")
    print("metric   AP      AP50    AP75")
    for kind in ("bbox", "mask"):
        print(f"{kind:6s}  {metrics[kind + '_ap']:.3f}   {metrics[kind + '_ap50']:.3f}   {metrics[kind + '_ap75']:.3f}")
    print(f"Predicted masks drawn in {figure_path}")
    summary = {
        "metrics": metrics,
        "epochs": len(history.history["loss"]),
        "steps_per_epoch": args.steps_per_epoch,
        "train_seconds": train_seconds,
        "total_seconds": total_seconds,
        "loss": history.history["loss"],
        "losses": {name: history.history[name] for name in kml.layers.LOSS_NAMES},
        "config": config.to_dict(),
    }
    with open(os.path.join(args.output, "shapes_metrics.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return metrics


if __name__ == "__main__":
    main()

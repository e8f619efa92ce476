"""Measures what each mask-size knob does: trains one model per setting and compares masks.

Trains the `"shapes"` preset (or a COCO-format dataset given with `--coco`
and `--images`) once per training-time setting:

- `MASK_POOL_SIZE` x mask head upsampling: 7 -> 28 px, 14 -> 28 px (the
  preset), 14 -> 56 px and 28 -> 56 px masks per ROI;
- a second set of anchor scales (by default the one
  `kml.evaluation.suggest_anchor_scales` proposes for the training boxes)
  with the preset's masks;
- `MASK_BOX_SCALE` 1.25 and 1.5 (`--box-scales`): the preset's masks
  predicted over boxes enlarged about their centres;

and evaluates every trained model on held-out images at each inference-time
setting: `DETECTION_MASK_THRESHOLD` 0.3 / 0.5 / 0.7, and the paste padding
(`MASK_PASTE_PADDING` 1, the default, and 0) at threshold 0.5. For each row
it reports COCO mask and box AP, the median area ratio (predicted ÷ true
area of matched instances), the mean mask IoU and boundary F-score of
matched instances and the RPN's proposal recall, and writes a Markdown
table, a JSON file and a plot.

A base model of the preset is trained first (`--base-steps`); every run
then starts from its weights (all those whose shapes match the run's
model: a mask head upsampling by another factor gets a fresh upsampling
layer) and trains `--steps` more steps with its own setting, from the same
seed. Runs thus differ only in the setting, and reach a useful accuracy in
a CPU budget: the default size fits in 30 minutes on two CPU cores.

Run: `KERAS_BACKEND=tensorflow python examples/mask_size_sweep.py`
(`--help` for the options). `--runs` trains only the runs whose names
contain one of the given strings (the base model is always trained), to
add a setting or a seed without repeating the rest.
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

# The shapes preset's mask branch, which the anchor and box-scale runs keep.
PRESET_MASK = {"MASK_POOL_SIZE": 14, "MASK_SHAPE": (28, 28)}
MASK_SETTINGS = (
    ("pool 7 -> 28 px", {"MASK_POOL_SIZE": 7, "MASK_SHAPE": (28, 28)}),
    ("pool 14 -> 28 px", PRESET_MASK),
    ("pool 14 -> 56 px", {"MASK_POOL_SIZE": 14, "MASK_SHAPE": (56, 56)}),
    ("pool 28 -> 56 px", {"MASK_POOL_SIZE": 28, "MASK_SHAPE": (56, 56)}),
)
BOX_SCALES = (1.25, 1.5)
THRESHOLDS = (0.3, 0.5, 0.7)
COLUMNS = (
    ("run", "{}"),
    ("threshold", "{:.1f}"),
    ("padding", "{}"),
    ("mask_ap", "{:.3f}"),
    ("mask_ap50", "{:.3f}"),
    ("mask_ap75", "{:.3f}"),
    ("bbox_ap", "{:.3f}"),
    ("area_ratio", "{:.3f}"),
    ("mask_iou", "{:.3f}"),
    ("boundary_f", "{:.3f}"),
    ("recall_50", "{:.3f}"),
    ("recall_70", "{:.3f}"),
)


def load_data(args):
    """Training and held-out samples, and the base config."""
    if args.coco:
        samples = list(kml.data.load_coco(args.coco, args.images))
        rng = np.random.default_rng(args.seed)
        order = rng.permutation(len(samples))
        held = max(1, len(samples) // 10)
        train = [samples[i] for i in order[held:]]
        held_out = [samples[i] for i in order[:held]]
        if args.config:
            with open(args.config) as f:
                base = kml.MaskRCNNConfig.from_json(f.read())
        else:
            num_classes = 1 + max(int(np.max(s["class_ids"], initial=0)) for s in samples)
            base = kml.MaskRCNNConfig.preset("shapes", NUM_CLASSES=num_classes)
    else:
        size = args.image_size
        train = kml.data.generate_shapes(args.train_images, height=size, width=size, seed=args.seed)
        held_out = kml.data.generate_shapes(args.val_images, height=size, width=size, seed=args.seed + 10_000)
        base = kml.MaskRCNNConfig.preset("shapes", IMAGE_MIN_DIM=size, IMAGE_MAX_DIM=size)
    return train, held_out, base


def network_boxes(samples, config):
    """Ground-truth boxes of `samples` in network-input pixels."""
    boxes = []
    for sample in samples:
        image = sample["image"]
        _, window, scale, _ = kml.data.resize_image(
            image, config.IMAGE_MIN_DIM, config.IMAGE_MAX_DIM, config.IMAGE_MIN_SCALE, config.IMAGE_RESIZE_MODE
        )
        found = kml.evaluation.extract_boxes(sample["masks"]).astype(np.float64) * scale
        boxes.append(found + np.array([window[0], window[1], window[0], window[1]]))
    return np.concatenate(boxes) if boxes else np.zeros((0, 4))


def plan_runs(train, base, anchor_scales, box_scales=BOX_SCALES):
    """The training-time settings: mask resolutions, a second anchor set, then box scales.

    Returns:
        `(runs, suggestion)`: `runs` a list of `(name, config overrides)`,
        each checked against `base` (an invalid setting fails here, before
        any training); `suggestion` the anchor suggestion for `train`.
    """
    runs = [(name, dict(settings)) for name, settings in MASK_SETTINGS]
    boxes = network_boxes(train, base)
    suggestion = kml.evaluation.suggest_anchor_scales(
        boxes,
        strides=base.BACKBONE_STRIDES,
        image_shape=base.IMAGE_SHAPE[:2],
        current_scales=base.RPN_ANCHOR_SCALES,
        current_ratios=base.RPN_ANCHOR_RATIOS,
    )
    print(suggestion.table())
    if anchor_scales is None:
        anchor_scales = tuple(suggestion.scales)
        ratios = tuple(suggestion.ratios)
    else:
        ratios = tuple(base.RPN_ANCHOR_RATIOS)
    name = "anchors " + "/".join(f"{s:g}" for s in np.ravel(anchor_scales))
    runs.append((name, {**PRESET_MASK, "RPN_ANCHOR_SCALES": anchor_scales, "RPN_ANCHOR_RATIOS": ratios}))
    for box_scale in box_scales:
        runs.append((f"box scale {box_scale:g}", {**PRESET_MASK, "MASK_BOX_SCALE": float(box_scale)}))
    for _, settings in runs:
        base.replace(**settings)
    return runs, suggestion


def select_runs(runs, patterns):
    """The runs whose names contain one of `patterns` (all runs for `None`), in plan order.

    Raises:
        ValueError: if a pattern matches no run; the message lists the names.
    """
    if patterns is None:
        return list(runs)
    names = [name for name, _ in runs]
    unmatched = [p for p in patterns if not any(p in name for name in names)]
    if unmatched:
        raise ValueError(f"`--runs` {unmatched} match no run. The runs are: {names}")
    return [(name, settings) for name, settings in runs if any(p in name for p in patterns)]


def train_model(config, train, steps, seed, base=None):
    """A model of `config` trained `steps` steps, starting from `base`'s weights when given."""
    keras.utils.set_random_seed(seed)
    steps_per_epoch = min(50, steps)
    model = kml.MaskRCNN(config.replace(STEPS_PER_EPOCH=steps_per_epoch))
    if base is not None:
        copied = warm_start(model, base)
        print(f"{copied} of {len(model.training_model.weights)} weights from the base model")
    model.fit(train, epochs=max(1, steps // steps_per_epoch), seed=seed)
    return model


def warm_start(model, base):
    """Copies into `model` every weight of `base` with the same path and shape; returns how many."""
    source = {variable.path: variable for variable in base.training_model.weights}
    copied = 0
    for variable in model.training_model.weights:
        match = source.get(variable.path)
        if match is not None and tuple(match.shape) == tuple(variable.shape):
            variable.assign(match)
            copied += 1
    return copied


def evaluate_run(name, model, held_out):
    """One row per inference-time setting of a trained model."""
    recall = kml.evaluation.proposal_recall(model, held_out, iou=(0.5, 0.7))
    recall_50, recall_70 = recall.recall[0.5]["all"], recall.recall[0.7]["all"]
    rows = []
    for threshold, padding in [(t, None) for t in THRESHOLDS] + [(0.5, 0)]:
        results = model.detect([s["image"] for s in held_out], mask_threshold=threshold, paste_padding=padding)
        metrics = kml.evaluation.coco_evaluate(held_out, results)
        summary = kml.evaluation.mask_size_report(results, held_out).summary()["all"]
        rows.append(
            {
                "run": name,
                "threshold": threshold,
                "padding": model.config.MASK_PASTE_PADDING if padding is None else padding,
                "mask_ap": metrics["mask_ap"],
                "mask_ap50": metrics["mask_ap50"],
                "mask_ap75": metrics["mask_ap75"],
                "bbox_ap": metrics["bbox_ap"],
                "area_ratio": summary["median_area_ratio"],
                "mask_iou": summary["mean_iou"],
                "boundary_f": summary["mean_boundary_f"],
                "recall_50": recall_50,
                "recall_70": recall_70,
            }
        )
    return rows


def markdown_table(rows):
    header = "| " + " | ".join(name for name, _ in COLUMNS) + " |"
    lines = [header, "|" + "---|" * len(COLUMNS)]
    for row in rows:
        cells = [fmt.format(row[name]) if row[name] is not None else "-" for name, fmt in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows, runs, path):
    """Mask AP, boundary F and area ratio per run (threshold 0.5), and area ratio against threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [name for name, _ in runs]
    default = {r["run"]: r for r in rows if r["threshold"] == 0.5 and r["padding"] == 1}
    figure, axes = plt.subplots(1, 4, figsize=(18, 4.2))
    for ax, key, title in zip(axes[:3], ("mask_ap", "boundary_f", "area_ratio"),
                              ("mask AP (threshold 0.5)", "boundary F-score", "median area ratio (pred / true)")):
        bars = ax.barh(names, [default[n][key] for n in names], color="tab:blue")
        ax.bar_label(bars, fmt="%.3f", fontsize=8, padding=2)
        ax.set_xlim(0, 1.2 * max(default[n][key] for n in names))
        ax.set_title(title, fontsize=10)
        ax.invert_yaxis()
    axes[2].axvline(1.0, color="black", linewidth=0.8)
    for name in names:
        points = sorted((r["threshold"], r["area_ratio"]) for r in rows if r["run"] == name and r["padding"] == 1)
        axes[3].plot(*zip(*points), marker="o", label=name)
    axes[3].axhline(1.0, color="black", linewidth=0.8)
    axes[3].set_xlabel("DETECTION_MASK_THRESHOLD")
    axes[3].set_title("area ratio against threshold", fontsize=10)
    axes[3].legend(fontsize=7)
    for ax in axes[1:3]:
        ax.set_yticklabels([])
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coco", help="COCO-format annotations JSON (default: generated shapes)")
    parser.add_argument("--images", help="image folder of --coco")
    parser.add_argument("--config", help="MaskRCNNConfig JSON for --coco (default: the shapes preset)")
    parser.add_argument("--train-images", type=int, default=600)
    parser.add_argument("--val-images", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--base-steps", type=int, default=700, help="training steps of the shared base model")
    parser.add_argument("--steps", type=int, default=250, help="training steps of each run, from the base")
    parser.add_argument("--anchor-scales", type=float, nargs=5, help="second anchor set (default: suggested)")
    parser.add_argument("--box-scales", type=float, nargs="*", default=list(BOX_SCALES),
                        help="MASK_BOX_SCALE of the box-scale runs, each in [1, 4] (default: 1.25 1.5; none: no such run)")
    parser.add_argument("--runs", nargs="+", metavar="TEXT",
                        help="train only the runs whose names contain one of these (default: all)")
    parser.add_argument("--output", default="sweep_output")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if bool(args.coco) != bool(args.images):
        parser.error("--coco and --images go together")
    os.makedirs(args.output, exist_ok=True)

    train, held_out, base = load_data(args)
    try:
        runs, suggestion = plan_runs(train, base, args.anchor_scales and tuple(args.anchor_scales), args.box_scales)
        runs = select_runs(runs, args.runs)
    except ValueError as error:
        parser.error(str(error))
    print(f"Keras {keras.__version__} ({keras.backend.backend()}); base {args.base_steps} steps, then {len(runs)} "
          f"runs x {args.steps} steps; {len(train)} training and {len(held_out)} held-out images of "
          f"{base.IMAGE_SHAPE[0]} px")

    start = time.perf_counter()
    print("\n[base] the preset")
    base_model = train_model(base, train, args.base_steps, args.seed)
    timings = {"base": {"train_seconds": time.perf_counter() - start}}
    rows = []
    for index, (name, settings) in enumerate(runs):
        print(f"\n[{index + 1}/{len(runs)}] {name}")
        start = time.perf_counter()
        config = base.replace(**settings)
        model = train_model(config, train, args.steps, args.seed, base_model)
        trained = time.perf_counter() - start
        rows.extend(evaluate_run(name, model, held_out))
        timings[name] = {"train_seconds": trained, "total_seconds": time.perf_counter() - start}
        print(markdown_table([r for r in rows if r["run"] == name]))

    table = markdown_table(rows)
    print("\n" + table)
    plot_path = os.path.join(args.output, "mask_size_sweep.png")
    plot(rows, runs, plot_path)
    with open(os.path.join(args.output, "mask_size_sweep.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(args.output, "mask_size_sweep.json"), "w") as f:
        json.dump(
            {
                "rows": rows,
                "timings": timings,
                "runs": [{"name": n, "settings": {k: np.asarray(v).tolist() for k, v in s.items()}} for n, s in runs],
                "suggested_anchors": {"scales": np.asarray(suggestion.scales).tolist(),
                                      "ratios": np.asarray(suggestion.ratios).tolist()},
                "base_steps": args.base_steps,
                "steps": args.steps,
                "keras": keras.__version__,
                "backend": keras.backend.backend(),
            },
            f,
            indent=2,
        )
    print(f"\nTable, JSON and plot in {args.output}/")
    return rows


if __name__ == "__main__":
    main()

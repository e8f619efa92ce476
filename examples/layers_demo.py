"""The four headline layers assembled into a small functional Mask R-CNN front end.

image -> tiny conv pyramid (P2..P6) -> RPN convs -> AnchorGenerator ->
ProposalLayer -> PyramidROIAlign (14 px) -> MaskHead (28 px masks)

The model is compiled with `jit_compile=True` (XLA), run on random images,
checked against eager execution, and its shapes are printed. Then a reduced
ROI Align benchmark runs and prints its table.

Run: `make layers-demo` (or `KERAS_BACKEND=tensorflow python examples/layers_demo.py`).
"""

import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_maskrcnn_layers as kml  # noqa: E402

IMAGE_SIZE = 128
NUM_CLASSES = 4
CHANNELS = 32


def build_model():
    images = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3), name="images")

    # === Backbone: one strided conv per level, P2 (stride 4) .. P6 (stride 64) ===
    x = keras.layers.Conv2D(CHANNELS, 3, strides=2, padding="same", activation="relu", name="stem")(images)
    pyramid = []
    for level in range(2, 7):
        x = keras.layers.Conv2D(CHANNELS, 3, strides=2, padding="same", activation="relu", name=f"p{level}")(x)
        pyramid.append(x)

    # === RPN: a shared head over every level, outputs flattened in anchor order ===
    anchor_generator = kml.AnchorGenerator(scales=(8, 16, 32, 64, 128), ratios=(0.5, 1.0, 2.0))
    per_location = anchor_generator.anchors_per_location
    shared = keras.layers.Conv2D(CHANNELS, 3, padding="same", activation="relu", name="rpn_conv")
    objectness = keras.layers.Conv2D(per_location, 1, activation="sigmoid", name="rpn_class")
    box_deltas = keras.layers.Conv2D(per_location * 4, 1, name="rpn_bbox")
    scores, deltas = [], []
    for level, feature in zip(range(2, 7), pyramid):
        hidden = shared(feature)
        scores.append(keras.layers.Reshape((-1,), name=f"rpn_scores_p{level}")(objectness(hidden)))
        deltas.append(keras.layers.Reshape((-1, 4), name=f"rpn_deltas_p{level}")(box_deltas(hidden)))
    rpn_scores = keras.layers.Concatenate(axis=1, name="rpn_scores")(scores)
    rpn_deltas = keras.layers.Concatenate(axis=1, name="rpn_deltas")(deltas)
    anchors = anchor_generator(images)

    # === Proposals, ROI Align, masks ===
    proposals, proposal_scores = kml.ProposalLayer(pre_nms_topk=1000, post_nms_topk=100, name="proposals")(
        rpn_scores, rpn_deltas, anchors, image_shape=(IMAGE_SIZE, IMAGE_SIZE)
    )
    roi_features = kml.PyramidROIAlign(pool_size=14, sampling_ratio=2, name="mask_roi_align")(proposals, pyramid[:4])
    masks = kml.MaskHead(
        NUM_CLASSES, num_convs=2, conv_filters=CHANNELS, upsample="transpose", upsample_factor=2, name="mask_head"
    )(roi_features)
    return keras.Model(images, [proposals, proposal_scores, masks], name="mask_rcnn_front_end")


def main():
    model = build_model()
    model.compile(jit_compile=True)
    images = np.random.default_rng(0).uniform(0, 255, size=(2, IMAGE_SIZE, IMAGE_SIZE, 3)).astype("float32")

    start = time.perf_counter()
    compiled = model.predict_on_batch(images)
    compile_seconds = time.perf_counter() - start
    eager = model(images)
    worst = max(
        float(np.max(np.abs(keras.ops.convert_to_numpy(e) - np.asarray(c)))) for e, c in zip(eager, compiled)
    )

    print(f"Keras {keras.__version__}, backend {keras.backend.backend()}")
    print(f"Model {model.name}: {model.count_params():,} parameters, compiled with XLA in {compile_seconds:.1f} s")
    for name, tensor in zip(("proposals", "proposal_scores", "masks"), compiled):
        print(f"  {name:16s} {tuple(tensor.shape)}  {tensor.dtype}")
    valid = (np.asarray(compiled[1]) > 0).sum(axis=1)
    print(f"  valid proposals per image: {valid.tolist()}")
    print(f"  largest |XLA - eager| difference over all outputs: {worst:.2e}")

    print("\nROI Align benchmark (reduced workload; `make bench` runs the standard one):")
    from benchmarks.roi_align import format_table, run_benchmark

    result = run_benchmark(
        small=True, pool_sizes=(7,), sampling_ratios=(2,), include_jax=False, include_torch=False, repeats=2
    )
    print(format_table(result))


if __name__ == "__main__":
    main()

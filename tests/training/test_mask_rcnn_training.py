import os
import subprocess
import sys
import textwrap
import warnings

import keras
import numpy as np
import pytest

import keras_maskrcnn_layers as kml
from tests.models.conftest import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny model, briefly trained through `fit` with a checkpoint and validation."""
    config = tiny_config(STEPS_PER_EPOCH=3, DETECTION_MIN_CONFIDENCE=0.0)
    samples = kml.data.generate_shapes(8, height=64, width=64, seed=5, max_instances=3)
    model = kml.MaskRCNN(config)
    checkpoint = str(tmp_path_factory.mktemp("ckpt") / "model.weights.h5")
    # Three validation samples in batches of two: the last batch is partial,
    # so the evaluation step is traced with an unknown batch size.
    history = model.fit(
        samples, epochs=2, checkpoint_path=checkpoint, validation_data=samples[:3], validation_steps=2, verbose=0
    )
    return model, samples, history, checkpoint


def test_fit_reports_loss_and_writes_checkpoints(trained):
    model, _, history, checkpoint = trained
    assert len(history.history["loss"]) == 2
    assert all(np.isfinite(history.history["loss"]))
    assert os.path.getsize(checkpoint) > 0


def test_fit_logs_each_loss_and_their_weighted_sum(trained):
    model, _, history, _ = trained
    logs = history.history
    weights = model.training_model.get_layer("losses").loss_weights
    for prefix in ("", "val_"):
        parts = {name: np.asarray(logs[prefix + name]) for name in kml.layers.LOSS_NAMES}
        assert all(len(values) == 2 and np.all(np.isfinite(values)) for values in parts.values()), parts
        # Both are averaged over the epoch's samples, so `loss` is the weighted sum of the parts.
        total = sum(weights[name] * parts[name] for name in kml.layers.LOSS_NAMES)
        np.testing.assert_allclose(logs[prefix + "loss"], total, rtol=1e-5)


def test_detect_returns_original_size_results():
    # Random weights: seeded, so that every image gets detections in every run.
    keras.utils.set_random_seed(0)
    config = tiny_config(DETECTION_MIN_CONFIDENCE=0.0)
    model = kml.MaskRCNN(config)
    classifier = model.inference_model.get_layer("box_head").classifier
    bias = np.full(classifier.bias.shape, 2.0, "float32")
    bias[0] = -5.0
    classifier.bias.assign(bias)
    # Non-square, larger than the 64 px input: resized by 0.5 and padded.
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, size=(96, 128, 3), dtype=np.uint8) for _ in range(3)]
    results = model.detect(images)
    assert len(results) == 3
    for result in results:
        n = len(result["scores"])
        assert n > 0
        assert result["rois"].shape == (n, 4) and result["class_ids"].shape == (n,)
        assert result["masks"].shape == (96, 128, n) and result["masks"].dtype == bool
        assert np.all(result["rois"][:, 2] <= 96) and np.all(result["rois"][:, 3] <= 128)
        assert np.all(result["class_ids"] >= 1)
        # Masks lie inside their boxes (pixel centres within the box).
        for k in range(n):
            ys, xs = np.nonzero(result["masks"][..., k])
            if len(ys):
                y1, x1, y2, x2 = result["rois"][k]
                assert ys.min() + 0.5 >= y1 and ys.max() + 0.5 <= y2 and xs.min() + 0.5 >= x1 and xs.max() + 0.5 <= x2


def test_detect_threshold_and_padding_overrides(trained):
    model, samples, _, _ = trained
    images = [s["image"] for s in samples[:2]]
    low, high = model.detect(images, mask_threshold=0.3), model.detect(images, mask_threshold=0.7)
    padded, unpadded = model.detect(images), model.detect(images, paste_padding=0)
    for a, b, c, d in zip(low, high, padded, unpadded):
        np.testing.assert_array_equal(a["rois"], b["rois"])
        # A lower threshold only adds pixels; at 0.5, padding only trims soft edges.
        assert not np.any(b["masks"] & ~a["masks"])
        assert not np.any(c["masks"] & ~d["masks"])
    with pytest.raises(ValueError, match="mask_threshold"):
        model.detect(images, mask_threshold=1.5)
    with pytest.raises(ValueError, match="paste_padding"):
        model.detect(images, paste_padding=-1)


def test_evaluate_gives_coco_metrics(trained, monkeypatch):
    model, samples, _, _ = trained
    samples = samples[:4]
    metrics = model.evaluate(samples)
    detections = model.detect([s["image"] for s in samples])
    assert metrics["num_images"] == 4
    assert metrics["num_ground_truth"] == sum(len(s["class_ids"]) for s in samples) > 0
    assert metrics["num_detections"] == sum(len(r["scores"]) for r in detections)
    for key in ("bbox_ap", "bbox_ap50", "mask_ap", "mask_ap50"):
        assert 0.0 <= metrics[key] <= 1.0, (key, metrics[key])
    # Chunks of 3 then 1 images (a generator: no length) give the same metrics.
    assert model.evaluate((s for s in samples), chunk_size=3, verbose=0) == metrics
    with pytest.raises(ValueError, match="chunk_size"):
        model.evaluate(samples, chunk_size=0)

    # Known answers: detections equal to the ground truth score 1, no detections 0.
    def perfect(images, **kwargs):
        assert all(np.array_equal(i, s["image"]) for i, s in zip(images, samples, strict=True))
        return [
            {"rois": kml.data.extract_boxes(s["masks"]).astype("float32"), "class_ids": s["class_ids"],
             "scores": np.ones(len(s["class_ids"]), "float32"), "masks": s["masks"]}
            for s in samples
        ]

    monkeypatch.setattr(model, "detect", perfect)
    best = model.evaluate(samples)
    for key in ("bbox_ap", "bbox_ap50", "mask_ap", "mask_ap50"):
        assert best[key] == pytest.approx(1.0), (key, best[key])

    def nothing(images, **kwargs):
        return [{"rois": np.zeros((0, 4), "float32"), "class_ids": np.zeros(0, "int32"),
                 "scores": np.zeros(0, "float32"), "masks": np.zeros((*s["image"].shape[:2], 0), bool)}
                for s in samples]

    monkeypatch.setattr(model, "detect", nothing)
    worst = model.evaluate(samples)
    assert worst["bbox_ap"] == worst["mask_ap"] == 0.0 and worst["num_detections"] == 0


def test_detect_refuses_images_out_of_range(trained):
    model, samples, _, _ = trained
    good = samples[0]["image"].astype("float32")
    cases = [
        (np.where(np.arange(64)[:, None, None] == 5, np.nan, good), "NaN or infinite"),
        (np.where(np.arange(64)[:, None, None] == 5, np.inf, good), "NaN or infinite"),
        (good * 2.0 + 1.0, r"\[0, 255\]"),
        (good - 256.0, r"\[0, 255\]"),
        (good > 100, "real numbers"),
        (np.zeros((0, 64, 3), "float32"), "empty"),
    ]
    for image, message in cases:
        # Named by its index in the whole list, though it is in the second batch of BATCH_SIZE 2.
        with pytest.raises(ValueError, match=r"images\[2\].*" + message):
            model.detect([good, good, image])
    # Floats in [0, 255] are raw pixels and fine.
    assert len(model.detect([good], verbose=0)) == 1


def test_detect_shows_progress_beyond_one_batch(trained, capsys):
    model, samples, _, _ = trained
    images = [s["image"] for s in samples[:3]]  # two batches of BATCH_SIZE 2
    capsys.readouterr()
    shown = model.detect(images)
    assert "3/3" in capsys.readouterr().out
    quiet = model.detect(images, verbose=0)
    assert capsys.readouterr().out == ""
    model.detect(images[:2])  # one batch: nothing to follow
    assert capsys.readouterr().out == ""
    for a, b in zip(shown, quiet):
        np.testing.assert_array_equal(a["rois"], b["rois"])
        np.testing.assert_array_equal(a["masks"], b["masks"])
    model.evaluate(samples[:3])
    assert "3/3" in capsys.readouterr().out
    with pytest.raises(ValueError, match="verbose"):
        model.detect(images, verbose="loud")
    with pytest.raises(ValueError, match="mask_threshold"):
        model.detect(images, mask_threshold=0.0)


def test_optimizer_follows_the_config():
    model = kml.MaskRCNN(tiny_config(WEIGHT_DECAY=0.003, GRADIENT_CLIP_NORM=2.0))
    assert model.config.OPTIMIZER == "adam" and model.config.LR_SCHEDULE == "cosine"
    # A cosine schedule of unknown length used to become a constant rate silently.
    with pytest.raises(ValueError, match="total_steps"):
        model.compile()
    with pytest.raises(ValueError, match="total_steps"):
        model.compile(total_steps=0)
    model.compile(total_steps=40)
    optimizer = model.training_model.optimizer
    assert isinstance(optimizer, keras.optimizers.Adam)
    assert optimizer.weight_decay == pytest.approx(0.003) and optimizer.clipnorm == 2.0
    # The cosine schedule warms up from a tenth of LEARNING_RATE.
    assert float(keras.ops.convert_to_numpy(optimizer.learning_rate)) == pytest.approx(0.1 * model.config.LEARNING_RATE)
    # A constant rate needs no length; 0 and None turn decay and clipping off.
    model.config = model.config.replace(
        OPTIMIZER="sgd", LR_SCHEDULE="constant", WEIGHT_DECAY=0, GRADIENT_CLIP_NORM=None, LEARNING_MOMENTUM=0.8
    )
    model.compile()
    optimizer = model.training_model.optimizer
    assert isinstance(optimizer, keras.optimizers.SGD) and optimizer.momentum == 0.8
    assert optimizer.weight_decay is None and optimizer.clipnorm is None
    assert float(keras.ops.convert_to_numpy(optimizer.learning_rate)) == pytest.approx(model.config.LEARNING_RATE)


def test_fit_validation_steps_default_to_the_batches_available(monkeypatch):
    model = kml.MaskRCNN(tiny_config(VALIDATION_STEPS=5))
    calls = []
    monkeypatch.setattr(model.training_model, "fit", lambda *args, **kwargs: calls.append(kwargs))
    samples = kml.data.generate_shapes(30, height=64, width=64, seed=6, max_instances=2)
    model.fit(samples, validation_data=samples[:3], verbose=0)
    model.fit(samples, validation_data=samples, verbose=0)
    model.fit(samples, validation_data=samples[:3], validation_steps=4, verbose=0)
    model.fit(samples, verbose=0)
    # 3 samples in batches of 2: 2 batches; 30 samples: 15 batches, capped at VALIDATION_STEPS.
    assert [c["validation_steps"] for c in calls] == [2, 5, 4, None]


def test_save_and_load_predict_the_same(trained, tmp_path):
    model, samples, _, _ = trained
    path = str(tmp_path / "shapes.keras")
    model.save(path)
    loaded = kml.MaskRCNN.load(path)
    assert loaded.config == model.config
    images = [s["image"] for s in samples[:3]]
    before, after = model.detect(images), loaded.detect(images)
    for a, b in zip(before, after):
        np.testing.assert_allclose(a["rois"], b["rois"], atol=1e-4)
        np.testing.assert_array_equal(a["class_ids"], b["class_ids"])
        np.testing.assert_array_equal(a["masks"], b["masks"])
    # Training goes on from the loaded weights.
    assert np.isfinite(loaded.fit(samples, epochs=1, steps_per_epoch=1, verbose=0).history["loss"][0])


def test_bad_inputs(trained, tmp_path):
    model, _, _, _ = trained
    with pytest.raises(ValueError, match="H, W, 3"):
        model.detect([np.zeros((64, 64), np.uint8)])
    with pytest.raises(ValueError, match=".keras"):
        model.save(str(tmp_path / "model.h5"))
    plain = str(tmp_path / "plain.keras")
    keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]).save(plain)
    with pytest.raises(ValueError, match="MaskRCNN.save"):
        kml.MaskRCNN.load(plain)
    with pytest.raises(ValueError, match="MaskRCNNConfig"):
        kml.MaskRCNN({"NUM_CLASSES": 4})


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.distribute needs the TensorFlow backend")
def test_mirrored_strategy_on_two_logical_cpus():
    script = textwrap.dedent(
        """
        import os
        os.environ["KERAS_BACKEND"] = "tensorflow"
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
        import numpy as np
        import keras_maskrcnn_layers as kml
        from tests.models.conftest import tiny_config
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        assert strategy.num_replicas_in_sync == 2
        model = kml.MaskRCNN(tiny_config(BATCH_SIZE=4), strategy=strategy, jit_compile=False)
        samples = kml.data.generate_shapes(8, height=64, width=64, seed=2)
        logs = model.fit(samples, epochs=1, steps_per_epoch=2, verbose=0).history
        losses = logs["loss"]
        assert np.all(np.isfinite(losses)), losses
        # Each loss is logged across replicas too, and they add up to `loss`.
        weights = model.training_model.get_layer("losses").loss_weights
        total = sum(weights[name] * logs[name][0] for name in kml.layers.LOSS_NAMES)
        assert np.isclose(total, losses[0], rtol=1e-4), (total, losses)
        print("replicas", strategy.num_replicas_in_sync, "loss", losses[0])
        """
    )
    env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=REPO,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "replicas 2" in result.stdout


def test_training_model_saves_and_loads_with_its_loss_metrics(trained, tmp_path):
    model = trained[0]
    path = str(tmp_path / "training.keras")
    model.training_model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, kml.models.MaskRCNNTrainingModel)
    assert set(kml.layers.LOSS_NAMES) <= {metric.name for metric in loaded.metrics}
    assert len(loaded.weights) == len(model.training_model.weights)


def test_frozen_batch_norm_from_scratch_warns():
    model = kml.MaskRCNN(tiny_config(TRAIN_BN=False))
    with pytest.warns(UserWarning, match="TRAIN_BN=False with BACKBONE_WEIGHTS=None"):
        model.compile(total_steps=10)
    model = kml.MaskRCNN(tiny_config())
    assert model.config.TRAIN_BN, "the shapes preset trains from scratch, BatchNorm included"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.compile(total_steps=10)

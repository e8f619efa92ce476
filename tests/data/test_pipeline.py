import numpy as np
import pytest
import tensorflow as tf

import keras_maskrcnn_layers as kml
from keras_maskrcnn_layers.data import generate_shapes, input_signature, make_dataset, prepare_sample


@pytest.fixture(scope="module")
def samples():
    return generate_shapes(5, seed=7)


def config(**overrides):
    return kml.MaskRCNNConfig.preset("shapes", **{"IMAGES_PER_GPU": 2, **overrides})


def expected_spec(batch, mask_shape=(128, 128)):
    return {
        "images": tf.TensorSpec((batch, 128, 128, 3), tf.float32),
        "image_meta": tf.TensorSpec((batch, 8), tf.float32),
        "gt_class_ids": tf.TensorSpec((batch, 8), tf.int32),
        "gt_boxes": tf.TensorSpec((batch, 8, 4), tf.float32),
        "gt_masks": tf.TensorSpec((batch, 8) + mask_shape, tf.float32),
    }


def test_training_spec_is_static_and_repeats(samples):
    dataset = make_dataset(samples, config())
    assert dataset.element_spec == expected_spec(2)
    # 5 samples, batch 2: training repeats, so more batches than one epoch holds.
    batches = list(dataset.take(4))
    assert len(batches) == 4
    for batch in batches:
        for key, spec in expected_spec(2).items():
            assert batch[key].shape == spec.shape and batch[key].dtype == spec.dtype


def test_inference_keeps_order_and_the_last_partial_batch(samples):
    cfg = config(USE_MINI_MASK=True)
    dataset = make_dataset(samples, cfg, training=False)
    assert dataset.element_spec == expected_spec(None, (56, 56))
    batches = list(dataset)
    assert [b["images"].shape[0] for b in batches] == [2, 2, 1]
    # No shuffle and no flips by default: element i is prepare_sample(samples[i]).
    direct = prepare_sample(samples[3], cfg)
    for key, value in direct.items():
        np.testing.assert_array_equal(batches[1][key][1].numpy(), value)
    image_ids = np.concatenate([b["image_meta"][:, -1].numpy() for b in batches])
    np.testing.assert_array_equal(image_ids, [0, 1, 2, 3, 4])


def test_inference_can_shuffle_and_still_covers_every_sample(samples):
    dataset = make_dataset(samples, config(), training=False, shuffle=True, seed=1)
    image_ids = sorted(np.concatenate([b["image_meta"][:, -1].numpy() for b in dataset]).tolist())
    assert image_ids == [0, 1, 2, 3, 4]


def first_batches(dataset, count=3):
    return [{k: v.numpy() for k, v in batch.items()} for batch in dataset.take(count)]


def test_deterministic_with_a_seed(samples):
    cfg = config()
    a = first_batches(make_dataset(samples, cfg, seed=3, augment="flips+vertical"))
    b = first_batches(make_dataset(samples, cfg, seed=3, augment="flips+vertical"))
    c = first_batches(make_dataset(samples, cfg, seed=4, augment="flips+vertical"))
    for x, y in zip(a, b):
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])
    assert any(not np.array_equal(x["images"], z["images"]) for x, z in zip(a, c))


def test_epochs_are_reshuffled(samples):
    dataset = make_dataset(generate_shapes(4, seed=1), config(IMAGES_PER_GPU=4), augment="none", seed=0)
    orders = [tuple(batch["image_meta"][:, -1].numpy().astype(int)) for batch in dataset.take(6)]
    assert all(sorted(order) == [0, 1, 2, 3] for order in orders)
    assert len(set(orders)) > 1


def test_flips_happen_and_stay_consistent(samples):
    cfg = config(IMAGES_PER_GPU=1)
    plain = prepare_sample(samples[0], cfg)
    seen = set()
    for batch in make_dataset(samples[:1], cfg, augment="flips+vertical", seed=0).take(12):
        image = batch["images"][0].numpy()
        for name, axes in (("none", ()), ("h", (1,)), ("v", (0,)), ("hv", (0, 1))):
            if np.array_equal(image, np.flip(plain["images"], axis=axes) if axes else plain["images"]):
                seen.add(name)
                masks = np.flip(plain["gt_masks"], axis=tuple(a + 1 for a in axes)) if axes else plain["gt_masks"]
                np.testing.assert_array_equal(batch["gt_masks"][0].numpy(), masks)
                break
        else:
            raise AssertionError("a batch image is no flip of the sample")
    assert seen == {"none", "h", "v", "hv"}


def test_input_signature_matches_prepare_sample(samples):
    spec = input_signature(config())
    out = prepare_sample(samples[0], config())
    assert {k: (tuple(v.shape), v.dtype.name) for k, v in out.items()} == {
        k: (tuple(s.shape), s.dtype.name) for k, s in spec.items()
    }


def test_bad_arguments(samples):
    with pytest.raises(ValueError, match="empty"):
        make_dataset([], config())
    with pytest.raises(ValueError, match="Sequence"):
        make_dataset(iter(samples), config())
    with pytest.raises(ValueError, match="augment"):
        make_dataset(samples, config(), augment="rotate")
    with_instances = next(s for s in samples if len(s["class_ids"]))
    bad = dict(with_instances, class_ids=np.zeros_like(with_instances["class_ids"]))
    with pytest.raises(ValueError, match="class_ids"):
        make_dataset([bad], config())

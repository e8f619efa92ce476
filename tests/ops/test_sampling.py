import keras
import numpy as np

from keras_maskrcnn_layers.ops.sampling import first_true_indices, random_subset
from tests import reference
from tests.backend_utils import jit, to_numpy


def test_random_subset_hand_case():
    candidates = np.array([[True, False, True, True, False], [False, True, True, False, True]])
    noise = np.array([[0.1, 0.9, 0.7, 0.3, 0.8], [0.5, 0.2, 0.6, 0.9, 0.4]], "float32")
    # Row 0 keeps its 2 candidates with the largest noise; row 1 its 1.
    out = to_numpy(random_subset(candidates, np.array([2, 1], "int32"), noise))
    assert out.tolist() == [[False, False, True, True, False], [False, False, True, False, False]]


def test_random_subset_keeps_exactly_count_when_noise_ties():
    # float32 uniform noise repeats values (JAX draws them on a 2**-23 grid),
    # so a tie at the cut-off is a matter of time with 10**5 anchors: the
    # count must still be exact.
    candidates = np.array([[True, True, True, True, False], [True, True, True, True, True]])
    noise = np.array([[0.5, 0.5, 0.5, 0.2, 0.9], [0.25, 0.25, 0.25, 0.25, 0.25]], "float32")
    out = to_numpy(random_subset(candidates, np.array([2, 3], "int32"), noise))
    assert out.sum(axis=1).tolist() == [2, 3]
    assert not np.any(out & ~candidates)
    assert out[0, 3] == False  # noqa: E712 - the lowest key is never kept before a higher one


def test_random_subset_keeps_min_of_count_and_candidates():
    rng = np.random.default_rng(0)
    candidates = rng.uniform(size=(4, 64)) < np.array([[0.0], [0.1], [0.5], [1.0]])
    noise = rng.uniform(size=(4, 64)).astype("float32")
    for count in (0, 1, 7, 20, 64):
        out = to_numpy(random_subset(candidates, count, noise))
        assert out.dtype == bool and out.shape == (4, 64)
        assert not np.any(out & ~candidates), "only candidates are picked"
        np.testing.assert_array_equal(out.sum(axis=1), np.minimum(count, candidates.sum(axis=1)))
        # The kept candidates are those with the largest noise.
        for b in range(4):
            kept, dropped = noise[b][out[b]], noise[b][candidates[b] & ~out[b]]
            if kept.size and dropped.size:
                assert kept.min() > dropped.max()


def test_random_subset_per_row_counts_and_jit():
    rng = np.random.default_rng(1)
    candidates = rng.uniform(size=(5, 40)) < 0.6
    noise = rng.uniform(size=(5, 40)).astype("float32")
    counts = np.array([0, 3, 10, 40, 100], "int32")
    eager = to_numpy(random_subset(candidates, counts, noise))
    np.testing.assert_array_equal(eager.sum(axis=1), np.minimum(counts, candidates.sum(axis=1)))
    compiled = to_numpy(jit(random_subset)(candidates, counts, noise))
    np.testing.assert_array_equal(compiled, eager)


def test_random_subset_is_uniform_over_draws():
    # 4000 independent draws of 3 out of the same 8 candidates (of 16 slots):
    # each candidate is picked with probability 3/8. The standard error of
    # the frequency is sqrt(p (1 - p) / n) ~ 0.0077; allow 5 of them.
    draws, n = 4000, 16
    candidates = np.zeros((draws, n), bool)
    candidates[:, ::2] = True
    noise = keras.random.uniform((draws, n), seed=keras.random.SeedGenerator(7))
    out = to_numpy(random_subset(candidates, 3, noise))
    np.testing.assert_array_equal(out.sum(axis=1), 3)
    frequency = out.mean(axis=0)
    np.testing.assert_array_equal(frequency[1::2], 0.0)
    np.testing.assert_allclose(frequency[::2], 3 / 8, atol=5 * np.sqrt(3 / 8 * 5 / 8 / draws))
    # Different draws pick different subsets.
    assert len({tuple(row) for row in out[:200]}) > 20


def test_first_true_indices_matches_numpy():
    rng = np.random.default_rng(1)
    valid = rng.uniform(size=(6, 12)) < np.linspace(0, 1, 6)[:, None]
    for k in (1, 5, 12, 20):
        indices, found = first_true_indices(valid, k)
        indices, found = to_numpy(indices), to_numpy(found)
        ref_indices, ref_found = reference.first_true_indices(valid, k)
        assert indices.shape == found.shape == (6, k)
        assert indices.dtype == np.int32 and found.dtype == bool
        np.testing.assert_array_equal(found, ref_found)
        np.testing.assert_array_equal(indices, ref_indices)


def test_first_true_indices_k_larger_than_n_and_jit():
    valid = np.array([[True, True, True], [False, False, False], [False, True, False]])
    fn = lambda v: first_true_indices(v, 5)  # noqa: E731
    for indices, found in (fn(valid), jit(fn)(valid)):
        assert to_numpy(indices).tolist() == [[0, 1, 2, 0, 0], [0, 0, 0, 0, 0], [1, 0, 0, 0, 0]]
        assert to_numpy(found).tolist() == [
            [True, True, True, False, False],
            [False, False, False, False, False],
            [True, False, False, False, False],
        ]

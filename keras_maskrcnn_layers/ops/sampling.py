"""Fixed-shape selection: random subsets and compaction of boolean rows."""

from keras import ops


def random_subset(candidates, counts, noise):
    """Picks `counts[b]` entries of row `b` of `candidates` uniformly at random.

    Each candidate is ranked by its `noise` value; the `counts[b]` best are
    kept (all of them when there are fewer). Sorting keeps the shape fixed,
    so this compiles under XLA.

    Args:
        candidates: bool tensor `[B, N]`.
        counts: int tensor `[B]` or int. How many to keep per row.
        noise: float tensor `[B, N]` of i.i.d. uniform values.

    Returns:
        bool tensor `[B, N]`: the chosen subset of `candidates`.

    Example:

    >>> import numpy as np
    >>> from keras_maskrcnn_layers.ops.sampling import random_subset
    >>> candidates = np.array([[True, False, True, True]])
    >>> noise = np.array([[0.1, 0.9, 0.7, 0.3]], "float32")
    >>> keras.ops.convert_to_numpy(random_subset(candidates, 2, noise)).tolist()
    [[False, False, True, True]]
    """
    keyed = ops.where(candidates, noise, -1.0)
    rank = ops.argsort(ops.argsort(-keyed, axis=-1), axis=-1)
    counts = ops.convert_to_tensor(counts, "int32")
    if len(counts.shape) == 1:
        counts = counts[:, None]
    return ops.logical_and(candidates, rank < counts)


def first_true_indices(valid, k):
    """Positions of the first `k` True entries of each row, in order.

    Args:
        valid: bool tensor `[B, N]`.
        k: int. Output width; may exceed `N`.

    Returns:
        Tuple `(indices, found)`: int32 `[B, k]` positions (0 where there
        are fewer than `k`) and bool `[B, k]` telling real entries apart.

    Example:

    >>> import numpy as np
    >>> from keras_maskrcnn_layers.ops.sampling import first_true_indices
    >>> indices, found = first_true_indices(np.array([[False, True, False, True]]), 3)
    >>> keras.ops.convert_to_numpy(indices).tolist(), keras.ops.convert_to_numpy(found).tolist()
    ([[1, 3, 0]], [[True, True, False]])
    """
    n = valid.shape[-1]
    positions = ops.arange(n, dtype="int32")
    # The earlier the position, the larger the key; non-valid entries get 0.
    key = ops.where(valid, n - positions, 0)
    if k > n:
        key = ops.pad(key, [[0, 0], [0, k - n]])
    key, _ = ops.top_k(key, k=k, sorted=True)
    found = key > 0
    return ops.where(found, n - key, 0), found

"""Fixed-shape selection: random subsets and compaction of boolean rows."""

from keras import ops


def random_subset(candidates, counts, noise, max_count=None):
    """Picks `counts[b]` entries of row `b` of `candidates` uniformly at random.

    Each candidate is keyed by its `noise` value and the `counts[b]` largest
    keys are kept (all candidates when there are fewer), found with one
    `top_k` of static width `max_count` and marked by a scatter of that many
    entries, so this compiles under XLA with fixed shapes.

    Args:
        candidates: bool tensor `[B, N]`.
        counts: int tensor `[B]` or int. How many to keep per row.
        noise: float tensor `[B, N]` of i.i.d. uniform values in `[0, 1)`.
        max_count: int. A static upper bound on `counts`; a smaller one is
            cheaper. Defaults to `counts` when it is an int, else `N`.

    Returns:
        bool tensor `[B, N]`: the chosen subset of `candidates`.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> from keras_maskrcnn_layers.ops.sampling import random_subset
    >>> candidates = np.array([[True, False, True, True]])
    >>> noise = np.array([[0.1, 0.9, 0.7, 0.3]], "float32")
    >>> keras.ops.convert_to_numpy(random_subset(candidates, 2, noise)).tolist()
    [[False, False, True, True]]
    """
    n = candidates.shape[-1]
    if max_count is None:
        max_count = counts if isinstance(counts, int) else n
    width = max(1, min(int(max_count), n))
    keyed = ops.where(candidates, noise, -1.0)
    # top_k orders ties by position, so taking its first `counts[b]` indices
    # keeps exactly that many even when noise values tie.
    top, index = ops.top_k(keyed, k=width, sorted=True)
    counts = ops.convert_to_tensor(counts, "int32")
    if len(counts.shape) == 0:
        counts = ops.broadcast_to(counts, ops.shape(keyed)[:1])
    chosen = ops.logical_and(ops.arange(width, dtype="int32")[None, :] < counts[:, None], top >= 0.0)
    batch = ops.shape(keyed)[0]
    rows = ops.broadcast_to(ops.arange(batch, dtype="int32")[:, None], ops.shape(index))
    coordinates = ops.reshape(ops.stack([rows, ops.cast(index, "int32")], axis=-1), (-1, 2))
    marks = ops.scatter(coordinates, ops.reshape(ops.cast(chosen, "int32"), (-1,)), ops.shape(keyed))
    return ops.logical_and(candidates, marks > 0)


def first_true_indices(valid, k):
    """Positions of the first `k` True entries of each row, in order.

    Args:
        valid: bool tensor `[B, N]`.
        k: int. Output width; may exceed `N`.

    Returns:
        Tuple `(indices, found)`: int32 `[B, k]` positions (0 where there
        are fewer than `k`) and bool `[B, k]` telling real entries apart.

    Example:

    >>> import keras
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

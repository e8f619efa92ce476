"""Backend-specific helpers that tests need and keras.ops does not offer: jit and grad."""

import keras
import numpy as np


def backend():
    return keras.backend.backend()


def jit(fn):
    """Compiles `fn` with XLA on the active backend."""
    if backend() == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=True)
    if backend() == "jax":
        import jax

        return jax.jit(fn)
    raise NotImplementedError(backend())


def grad(fn, x):
    """Gradient of the scalar `fn(x)` with respect to the array `x`, as NumPy."""
    if backend() == "tensorflow":
        import tensorflow as tf

        x = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
        g = tape.gradient(y, x)
        # TensorFlow says None where no gradient flows; JAX says zeros.
        return np.zeros(x.shape, x.dtype.as_numpy_dtype) if g is None else g.numpy()
    if backend() == "jax":
        import jax
        import jax.numpy as jnp

        return np.asarray(jax.grad(fn)(jnp.asarray(x)))
    raise NotImplementedError(backend())


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)

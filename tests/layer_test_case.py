"""One helper that puts every public layer through the same checks.

`run_layer_test` checks, in order:
1. `get_config` -> `from_config` -> `get_config` is the identity, and the
   config keys include every explicit `__init__` argument;
2. eager outputs have the expected shapes and dtypes;
3. a functional model built from `keras.Input`s gives the same symbolic
   shapes (batch left unknown);
4. the model compiled with `jit_compile=True` (XLA on TensorFlow, `jax.jit`
   on JAX) predicts what eager gives;
5. saved to and loaded from a `.keras` file, it predicts the same;
6. a compiled training step runs and changes the weights (layers with
   trainable weights);
7. under `mixed_float16` and `mixed_bfloat16`, outputs are finite, float
   outputs have the policy's compute dtype (box outputs stay float32) and
   are close to the float32 outputs, each to a tolerance relative to its
   own magnitude, and integer outputs are equal to the float32 ones.
"""

import inspect
import os
import tempfile

import keras
import numpy as np

from tests.backend_utils import to_numpy


def _flatten(x):
    if isinstance(x, (list, tuple)):
        return [y for item in x for y in _flatten(item)]
    return [x]


def _symbolic(x):
    """keras.Input matching a NumPy array (or nested list of arrays), batch unknown."""
    if isinstance(x, (list, tuple)):
        return [_symbolic(y) for y in x]
    return keras.Input(shape=x.shape[1:], dtype=str(x.dtype))


def _clone(layer, **overrides):
    config = layer.get_config()
    config.update(overrides)
    return layer.__class__.from_config(config)


def check_config_round_trip(layer):
    config = layer.get_config()
    clone = layer.__class__.from_config(config)
    assert clone.get_config() == config
    explicit = [
        name
        for name, p in inspect.signature(layer.__class__.__init__).parameters.items()
        if name not in ("self", "kwargs") and p.kind != p.VAR_KEYWORD
    ]
    missing = [name for name in explicit if name not in config]
    assert not missing, f"get_config lacks {missing}"
    return clone


def run_layer_test(
    layer,
    inputs,
    call_kwargs=None,
    expected_output_shapes=None,
    float32_outputs=(),
    atol=1e-5,
    mixed_precision_atol=0.05,
    run_training=None,
    outputs_have_batch=True,
):
    """Runs the common checks on `layer` called as `layer(*inputs, **call_kwargs)`.

    Args:
        layer: an unbuilt layer instance.
        inputs: list of positional inputs, NumPy arrays or lists of arrays.
        call_kwargs: non-tensor keyword arguments of the call.
        expected_output_shapes: list of full output shapes (batch included).
        float32_outputs: indices of outputs that stay float32 under mixed
            precision (boxes, scores).
        atol: tolerance of jit-vs-eager and save/load comparisons.
        mixed_precision_atol: tolerance of mixed-vs-float32 float outputs,
            relative to each output's largest float32 magnitude (so that
            probabilities are not judged on the scale of pixel boxes).
        run_training: force the training step on or off; by default it runs
            when the layer has trainable weights.
        outputs_have_batch: False for layers whose output has no batch axis
            (anchors are the same for every image).
    """
    call_kwargs = call_kwargs or {}
    fresh = check_config_round_trip(layer)

    # === Eager ===
    eager = _flatten(layer(*inputs, **call_kwargs))
    eager_np = [to_numpy(o) for o in eager]
    if expected_output_shapes is not None:
        assert [tuple(o.shape) for o in eager_np] == [tuple(s) for s in expected_output_shapes]
    for o in eager_np:
        assert np.all(np.isfinite(o)), "eager output is not finite"

    # === Symbolic, functional model ===
    symbolic_inputs = [_symbolic(x) for x in inputs]
    symbolic_outputs = fresh(*symbolic_inputs, **call_kwargs)
    model = keras.Model(symbolic_inputs, symbolic_outputs)
    model.set_weights(layer.get_weights())
    for sym, out in zip(_flatten(symbolic_outputs), eager_np):
        if outputs_have_batch:
            assert tuple(sym.shape)[1:] == out.shape[1:], (sym.shape, out.shape)
            assert sym.shape[0] is None
        else:
            assert tuple(sym.shape) == out.shape, (sym.shape, out.shape)

    # === XLA ===
    model.compile(jit_compile=True)
    compiled = [to_numpy(o) for o in _flatten(model.predict_on_batch(inputs))]
    for c, e in zip(compiled, eager_np):
        np.testing.assert_allclose(c, e, atol=atol, rtol=1e-5, err_msg="jit_compile=True differs from eager")

    # === .keras save and load ===
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "layer.keras")
        model.save(path)
        loaded = keras.saving.load_model(path)
    loaded_out = [to_numpy(o) for o in _flatten(loaded.predict_on_batch(inputs))]
    for c, e in zip(loaded_out, eager_np):
        np.testing.assert_allclose(c, e, atol=atol, rtol=1e-5, err_msg="loaded model differs")

    # === Training step ===
    if run_training is None:
        run_training = len(layer.trainable_weights) > 0
    if run_training:
        train_model = keras.Model(symbolic_inputs, symbolic_outputs)
        train_model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse", jit_compile=True)
        before = [w.copy() for w in train_model.get_weights()]
        targets = [np.ones_like(o) * 0.5 for o in eager_np]
        loss = train_model.train_on_batch(inputs, targets if len(targets) > 1 else targets[0])
        assert np.all(np.isfinite(loss))
        after = train_model.get_weights()
        assert any(not np.allclose(b, a) for b, a in zip(before, after)), "training changed no weight"

    # === Mixed precision ===
    for policy in ("mixed_float16", "mixed_bfloat16"):
        mixed = _clone(layer, dtype=policy)
        outputs = _flatten(mixed(*inputs, **call_kwargs))
        mixed.set_weights(layer.get_weights())
        outputs = [to_numpy(o) for o in _flatten(mixed(*inputs, **call_kwargs))]
        compute = keras.DTypePolicy(policy).compute_dtype
        for i, (m, e) in enumerate(zip(outputs, eager_np)):
            assert np.all(np.isfinite(m.astype(np.float32))), f"{policy}: output {i} not finite"
            if np.issubdtype(e.dtype, np.floating):
                expected_dtype = "float32" if i in float32_outputs else compute
                assert keras.backend.standardize_dtype(m.dtype) == expected_dtype, (policy, i, m.dtype)
                scale = float(np.max(np.abs(e))) if e.size else 0.0
                np.testing.assert_allclose(
                    m.astype(np.float32),
                    e,
                    atol=mixed_precision_atol * (scale or 1.0),
                    err_msg=f"{policy}: output {i}",
                )
            else:
                np.testing.assert_array_equal(m, e, err_msg=f"{policy}: integer output {i}")
    return eager_np

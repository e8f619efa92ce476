"""Runs every `>>>` example in the package's docstrings."""

import doctest
import importlib
import pkgutil

import keras
import pytest

import keras_maskrcnn_layers


def _modules():
    names = []
    for info in pkgutil.walk_packages(keras_maskrcnn_layers.__path__, "keras_maskrcnn_layers."):
        names.append(info.name)
    return sorted(names)


@pytest.mark.parametrize("module_name", _modules())
def test_docstring_examples(module_name):
    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    # Empty globals: an example imports what it uses, as a user's session would.
    tests = finder.find(module, module_name, globs={})
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {module_name}"


def _public_layers():
    layers = keras_maskrcnn_layers.layers
    return [
        name
        for name in layers.__all__
        if isinstance(getattr(layers, name), type) and issubclass(getattr(layers, name), keras.layers.Layer)
    ]


def test_public_layers_are_listed():
    assert {"AnchorGenerator", "ProposalLayer", "PyramidROIAlign", "MaskHead", "MaskRCNNLosses"} <= set(_public_layers())


@pytest.mark.parametrize("name", _public_layers())
def test_every_public_layer_has_an_example(name):
    doc = getattr(keras_maskrcnn_layers.layers, name).__doc__
    assert "Example:" in doc
    assert ">>>" in doc

"""Runs every `>>>` example in the package's docstrings."""

import doctest
import importlib
import pkgutil

import keras
import numpy as np
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
    tests = finder.find(module, module_name, globs={"keras": keras, "np": np})
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {module_name}"


def test_every_public_layer_has_an_example():
    for name in ("AnchorGenerator", "ProposalLayer", "PyramidROIAlign", "MaskHead"):
        assert "Example:" in getattr(keras_maskrcnn_layers, name).__doc__
        assert ">>>" in getattr(keras_maskrcnn_layers, name).__doc__

"""The wheel holds every module of the package.

`pyproject.toml` finds packages by their `__init__.py`; a folder of modules
without one would be left out of a `pip install .` while the editable
install used for the tests still imported it.
"""

import pathlib

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
setuptools = pytest.importorskip("setuptools")

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "keras_maskrcnn_layers"


def _found_packages():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]
    return set(setuptools.find_packages(where=str(ROOT), include=include))


def test_every_module_folder_is_a_package_in_the_wheel():
    packages = _found_packages()
    folders = {
        ".".join(path.parent.relative_to(ROOT).parts)
        for path in PACKAGE.rglob("*.py")
        if "__pycache__" not in path.parts
    }
    missing = sorted(folders - packages)
    assert not missing, f"module folders that `pip install .` would leave out (no __init__.py?): {missing}"


def test_found_packages_are_only_ours():
    packages = _found_packages()
    assert "keras_maskrcnn_layers" in packages
    assert all(name.split(".")[0] == "keras_maskrcnn_layers" for name in packages), packages

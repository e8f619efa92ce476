"""The run plan of `examples/mask_size_sweep.py`: which settings it trains, and `--runs`."""

import importlib.util
import os

import pytest

import keras_maskrcnn_layers as kml

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "mask_size_sweep.py")


@pytest.fixture(scope="module")
def sweep():
    spec = importlib.util.spec_from_file_location("mask_size_sweep", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def train():
    return kml.data.generate_shapes(6, seed=3)


@pytest.fixture(scope="module")
def base():
    return kml.MaskRCNNConfig.preset("shapes")


def test_plan_has_mask_anchor_and_box_scale_runs(sweep, train, base):
    runs, suggestion = sweep.plan_runs(train, base, None)
    names = [name for name, _ in runs]
    assert names[:4] == [name for name, _ in sweep.MASK_SETTINGS]
    assert names[4].startswith("anchors ")
    assert names[5:] == ["box scale 1.25", "box scale 1.5"]
    settings = dict(runs)
    assert settings["box scale 1.25"] == {"MASK_POOL_SIZE": 14, "MASK_SHAPE": (28, 28), "MASK_BOX_SCALE": 1.25}
    # The anchor run takes the suggestion; the others leave the anchors alone.
    assert tuple(settings[names[4]]["RPN_ANCHOR_SCALES"]) == tuple(suggestion.scales)
    assert all("RPN_ANCHOR_SCALES" not in settings[name] for name in names if name != names[4])
    # Every run differs from the base in its own setting only: the config applies each.
    config = base.replace(**settings["box scale 1.25"])
    assert config.MASK_BOX_SCALE == 1.25 and config.RPN_ANCHOR_SCALES == base.RPN_ANCHOR_SCALES


def test_plan_box_scales(sweep, train, base):
    runs, _ = sweep.plan_runs(train, base, (8, 16, 32, 64, 128), box_scales=(1.1, 1.5))
    names = [name for name, _ in runs]
    assert names[4] == "anchors 8/16/32/64/128"
    assert names[5:] == ["box scale 1.1", "box scale 1.5"]
    assert [s["MASK_BOX_SCALE"] for _, s in runs[5:]] == [1.1, 1.5]
    none, _ = sweep.plan_runs(train, base, None, box_scales=())
    assert not any(name.startswith("box scale") for name, _ in none)


def test_plan_refuses_an_invalid_setting_before_training(sweep, train, base):
    with pytest.raises(ValueError, match="MASK_BOX_SCALE"):
        sweep.plan_runs(train, base, None, box_scales=(0.8,))


def test_select_runs(sweep):
    runs = [("pool 7 -> 28 px", {"a": 1}), ("pool 14 -> 28 px", {"b": 2}), ("box scale 1.25", {"c": 3})]
    assert sweep.select_runs(runs, None) == runs
    # Plan order, whatever the order of the patterns; each run once.
    assert sweep.select_runs(runs, ["box scale", "14 -> 28", "28 px"]) == runs
    assert sweep.select_runs(runs, ["box scale", "14 -> 28"]) == runs[1:]
    with pytest.raises(ValueError, match=r"\['pool 28'\] match no run.*box scale 1.25"):
        sweep.select_runs(runs, ["pool 7", "pool 28"])


def test_command_line_refuses_unknown_runs_and_bad_box_scales(sweep, tmp_path, capsys):
    small = ["--train-images", "4", "--val-images", "1", "--output", str(tmp_path)]
    with pytest.raises(SystemExit):
        sweep.main(small + ["--runs", "no such run"])
    assert "match no run" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        sweep.main(small + ["--box-scales", "5"])
    assert "MASK_BOX_SCALE" in capsys.readouterr().err

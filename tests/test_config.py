"""The configuration: defaults, tile forms, TOML and flags, and every rejected value."""
import subprocess
import sys

import pytest

from tse.ref_model.cli_args import add_config_arguments, config_from_args
from tse.ref_model.config import DEFAULT, TSEConfig, parse_tile
from tse.ref_model.errors import ConfigError


def test_default_is_regnety_800mf_stage2():
    c = DEFAULT
    assert (c.channels, c.height, c.width, c.hidden, c.lanes) == (128, 28, 28, 32, 8)
    assert (c.tile_rows, c.tile_cols, c.tiles_y, c.tiles_x) == (7, 28, 4, 1)
    assert c.tiling == "row strip"


@pytest.mark.parametrize("spec, h, w, expect, kind", [
    ("7xW", 28, 28, (7, 28), "row strip"),
    ("Hx3", 13, 28, (13, 3), "column strip"),
    ("7x7", 28, 28, (7, 7), "patch"),
    ("HxW", 9, 11, (9, 11), "se"),
    ("9x11", 9, 11, (9, 11), "se"),
    ("1x1", 5, 5, (1, 1), "patch"),
])
def test_tile_forms(spec, h, w, expect, kind):
    assert parse_tile(spec, h, w) == expect
    assert TSEConfig(channels=4, height=h, width=w, tile=spec, reduction=1, lanes=1).tiling == kind


@pytest.mark.parametrize("changes, names", [
    (dict(channels=12, lanes=8), ["lanes", "8", "12", "1, 2, 3, 4, 6, 12"]),
    (dict(height=6, tile="7xW"), ["tile", "7", "larger than the frame height 6", "1..6 or H"]),
    (dict(width=5, tile="Hx6"), ["tile", "6", "frame width 5", "1..5 or W"]),
    (dict(tile="0x3"), ["tile", "0", "1..28"]),
    (dict(tile="7by7"), ["tile", "7by7", "<rows>x<cols>"]),
    (dict(channels=8, reduction=9, lanes=1), ["reduction", "9", "no hidden channel", "1..8"]),
    (dict(channels=0), ["channels", "0", "positive integer"]),
    (dict(height=-3), ["height", "-3", "positive integer"]),
    (dict(width=2.5), ["width", "2.5", "positive integer"]),
    (dict(lanes=True), ["lanes", "True", "positive integer"]),
    (dict(seed=-1), ["seed", "-1", "non-negative"]),
    (dict(profile="float"), ["profile", "float", "torch, hw"]),
    (dict(engine="x86"), ["engine", "x86", "fbgemm, qnnpack"]),
])
def test_rejected_values_name_field_value_and_allowed(changes, names):
    with pytest.raises(ConfigError) as e:
        DEFAULT.replace(**changes)
    msg = str(e.value)
    assert "\n" not in msg
    for part in names:
        assert part in msg, (part, msg)


def test_toml_round_trip(tmp_path):
    cfg = TSEConfig(channels=24, height=13, width=9, tile="Hx4", reduction=3, lanes=6,
                    excite_multipliers=5, profile="torch", engine="qnnpack", seed=7)
    path = tmp_path / "c.toml"
    path.write_text(cfg.to_toml())
    assert TSEConfig.from_toml(path) == cfg


def test_toml_unknown_key_suggests_the_right_one(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('chanels = 64\n')
    with pytest.raises(ConfigError, match=r"unknown key 'chanels' \(did you mean 'channels'\?\)"):
        TSEConfig.from_toml(path)


def test_toml_wrong_type_and_bad_syntax(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('height = "28"\n')
    with pytest.raises(ConfigError, match="height: '28' is not allowed"):
        TSEConfig.from_toml(path)
    path.write_text('height = \n')
    with pytest.raises(ConfigError, match="not valid TOML"):
        TSEConfig.from_toml(path)
    with pytest.raises(ConfigError, match="does not exist"):
        TSEConfig.from_toml(tmp_path / "missing.toml")


def test_flags_override_file(tmp_path):
    import argparse
    path = tmp_path / "c.toml"
    path.write_text('channels = 64\nheight = 14\nwidth = 14\ntile = "7x7"\n')
    p = argparse.ArgumentParser()
    add_config_arguments(p)
    cfg = config_from_args(p.parse_args(["--config", str(path), "--tile", "Hx2", "--lanes", "4"]))
    assert (cfg.channels, cfg.height, cfg.tile, cfg.lanes) == (64, 14, "Hx2", 4)
    with pytest.raises(ConfigError, match=r"channels \(--channels\): '1.5' is not allowed"):
        config_from_args(p.parse_args(["--channels", "1.5"]))


def run_tse(*args):
    return subprocess.run([sys.executable, "-m", "tse", *args], capture_output=True, text=True)


def test_cli_error_is_one_line_and_exit_2():
    r = run_tse("config", "--channels", "100", "--lanes", "8")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0
    assert r.stderr.startswith("tse: error: lanes: 8 does not divide channels=100")


def test_cli_config_prints_toml_that_loads_back(tmp_path):
    r = run_tse("config", "--tile", "3x5", "--seed", "4")
    assert r.returncode == 0, r.stderr
    path = tmp_path / "c.toml"
    path.write_text(r.stdout)
    assert TSEConfig.from_toml(path) == DEFAULT.replace(tile="3x5", seed=4)

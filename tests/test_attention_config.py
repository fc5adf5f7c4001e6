"""Configuration of the other blocks (issue 18): block, excite_kernel, eca_kernel, validated
once with one-line errors; an SE configuration writes what it wrote before they existed;
everything that runs only SE refuses another block by name."""
from __future__ import annotations

import pytest

from tse import cli
from tse.ref_model.config import DEFAULT, ConfigError, TSEConfig

SE_KEYS = ["channels", "height", "width", "tile", "reduction", "hidden", "hidden_activation",
           "gate", "gate_slope", "gate_offset", "lanes", "excite_multipliers", "buffer_depth",
           "profile", "engine", "seed", "hw"]


def test_an_se_configuration_writes_what_it_wrote_before():
    assert list(DEFAULT.to_dict()) == SE_KEYS
    toml = DEFAULT.to_toml()
    assert "block" not in toml and "excite_kernel" not in toml and "eca_kernel" not in toml


@pytest.mark.parametrize("changes", [{"block": "eca"}, {"block": "eca", "eca_kernel": 7},
                                     {"block": "srm"}, {"excite_kernel": "3x1"}])
def test_other_blocks_round_trip(changes, tmp_path):
    cfg = DEFAULT.replace(**changes)
    assert TSEConfig.from_dict(cfg.to_dict()) == cfg
    (tmp_path / "c.toml").write_text(cfg.to_toml())
    assert TSEConfig.from_toml(tmp_path / "c.toml") == cfg


@pytest.mark.parametrize("channels, k", [(128, 5), (64, 3), (256, 5), (512, 5), (16, 3),
                                         (8, 3), (2, 1), (1024, 5), (2048, 7)])
def test_eca_taps_adaptive_from_c(channels, k):
    # k = |log2(C)/2 + 1/2| to the nearest odd, an even value up: worked by hand
    cfg = TSEConfig(channels=channels, block="eca", lanes=1, reduction=1)
    assert cfg.eca_taps == k
    assert cfg.replace(eca_kernel=3).eca_taps == 3


@pytest.mark.parametrize("changes, message", [
    ({"block": "cbam"}, r"block: 'cbam' is not allowed; allowed: se, eca, srm"),
    ({"excite_kernel": "5x1"}, r"excite_kernel: '5x1' is not allowed; allowed: 1x1, 3x1"),
    ({"block": "eca", "excite_kernel": "3x1"}, r"excite_kernel: '3x1' applies only to block"),
    ({"block": "eca", "eca_kernel": 4}, r"eca_kernel: 4 is not allowed; allowed: 0 \(adaptive"),
    ({"block": "eca", "eca_kernel": 257}, r"odd integer 1\.\.255"),
    ({"block": "eca", "eca_kernel": -1}, r"eca_kernel: -1 is not allowed"),
    ({"eca_kernel": 3}, r"eca_kernel: 3 applies only to block = 'eca'"),
    ({"block": "srm", "gate": "hardsigmoid"}, r"gate = 'hardsigmoid': the SE dialect"),
    ({"block": "eca", "hidden_activation": "silu"}, r"hidden_activation = 'silu'"),
    ({"block": "srm", "tile": "1x1"}, r"leaves a tile of 1 element for block = 'srm'"),
    ({"block": "srm", "height": 29, "tile": "7x1"}, r"leaves a tile of 1 element"),  # last row
])
def test_bad_block_fields_are_one_line_errors(changes, message):
    with pytest.raises(ConfigError, match=message) as e:
        DEFAULT.replace(**changes)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("argv, what", [
    (["reference", "--excite-kernel", "3x1"],
     "excite_kernel: '3x1' is not supported by tse reference"),
    (["run", "--excite-kernel", "3x1"], "excite_kernel: '3x1' is not supported by tse run"),
    (["reference", "--block", "eca"], "block: 'eca' is not supported by tse reference"),
    (["reference", "--block", "srm"], "block: 'srm' is not supported by tse reference"),
    (["prove", "--block", "eca"], "block: 'eca' is not supported by tse prove"),
])
def test_commands_that_run_only_se_refuse_another_block(argv, what, tmp_path, capsys):
    assert cli.main([*argv, "--out", str(tmp_path / "o")] if argv[0] not in ("prove", "cosim")
                    else argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"tse: error: {what}") and "\n" not in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("block", ["eca", "srm"])
def test_se_only_layers_refuse_another_block(block, tmp_path):
    from tse.quant import reference
    from tse.ref_model.int_params import int_params_for
    from tse.rtl.export import verilog_text

    cfg = TSEConfig(channels=4, height=4, width=4, tile="2xW", lanes=2, block=block)
    for call in (lambda: int_params_for(cfg, None), lambda: verilog_text(cfg, None),
                 lambda: reference.prepare(cfg)):
        with pytest.raises(ConfigError, match=f"block: '{block}' is not supported by"):
            call()


def test_a_3x1_excite_needs_wider_accumulators():
    from tse.ref_model.hw_profile import DEFAULT_HW

    hw = DEFAULT_HW.replace(fc1_acc_bits=24)       # C=128: 23 bits for 1x1, 25 for 3x1
    assert DEFAULT.replace(hw=hw).hw.fc1_acc_bits == 24
    with pytest.raises(ConfigError, match=r"hw.fc1_acc_bits: 24 can overflow .*allowed: >= 25"):
        DEFAULT.replace(hw=hw, excite_kernel="3x1")

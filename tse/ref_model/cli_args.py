"""Command-line flags for the configuration, shared by every `tse` subcommand.

A TOML file (--config) is read first and flags override it; both go through TSEConfig's
validation, so a bad flag and a bad file key get the same one-line error.
"""
from __future__ import annotations

import argparse

from .config import DEFAULT, ConfigError, TSEConfig

# (flag, field, converter, help)
_FLAGS = (
    ("--channels", "channels", int, "channels C"),
    ("--height", "height", int, "frame height H"),
    ("--width", "width", int, "frame width W"),
    ("--tile", "tile", str, "tile as <rows>x<cols>: 7xW (row strip), Hx3 (column strip), "
                            "7x7 (patch), HxW (plain SE)"),
    ("--reduction", "reduction", int, "excite reduction r; hidden width is C // r"),
    ("--hidden", "hidden", int, "hidden width of the excite, 1..C (instead of --reduction; "
                                "given both, hidden must be C // r)"),
    ("--hidden-activation", "hidden_activation", str, "activation after fc1: relu or silu"),
    ("--gate", "gate", str, "gate after fc2: sigmoid or hardsigmoid "
                            "(clamp(slope * x + offset, 0, 1))"),
    ("--gate-slope", "gate_slope", float, "hardsigmoid's slope, > 0 (PyTorch 1/6, ONNX 0.2)"),
    ("--gate-offset", "gate_offset", float, "hardsigmoid's offset (PyTorch and ONNX 0.5)"),
    ("--lanes", "lanes", int, "lanes P: channels per stream beat (must divide C)"),
    ("--excite-multipliers", "excite_multipliers", int, "multipliers Q in the excite MAC"),
    ("--buffer-depth", "buffer_depth", int, "strip-buffer depth in beats; 0 = the "
                                            "full-throughput depth (strip + excite latency)"),
    ("--profile", "profile", str, "numerics profile: torch or hw"),
    ("--engine", "engine", str, "quantized PyTorch engine: fbgemm or qnnpack"),
    ("--seed", "seed", int, "seed for weights and synthetic data"),
    ("--block", "block", str, "channel-attention block: se, eca or srm"),
    ("--excite-kernel", "excite_kernel", str, "SE's excite convolutions: 1x1 or 3x1 (across "
                                              "neighbouring rows of tiles)"),
    ("--eca-kernel", "eca_kernel", int, "ECA's taps k, odd; 0 = adaptive from C"),
)
UNIT_BLOCKS = ("se",)
"""What a command runs unless it says otherwise (config_from_args' blocks)."""


_KINDS = {int: "an integer", float: "a number", str: "a string"}


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "configuration", "defaults: RegNetY-800MF stage 2 (C=128, 28x28, hidden 32, tile 7xW, "
                         "P=8); flags override --config")
    group.add_argument("--config", metavar="FILE", help="TOML configuration file")
    for flag, name, _, text in _FLAGS:
        group.add_argument(flag, dest=f"cfg_{name}", metavar=name.upper().replace("_", "-"),
                           help=f"{text} (default {getattr(DEFAULT, name)})")


def config_from_args(args: argparse.Namespace, blocks=UNIT_BLOCKS,
                     excite_kernels=("1x1",)) -> TSEConfig:
    """The configuration of the file and flags. A command runs only the blocks and excite
    kernels it names (default: SE with the 1x1 excite, what the unit implements); another is
    a one-line ConfigError naming the command, never a silent SE run."""
    cfg = _config(args)
    if cfg.block not in blocks or cfg.excite_kernel not in excite_kernels:
        cfg.require_unit_block(f"tse {getattr(args, 'command', None) or 'this command'}",
                               blocks, excite_kernels)
    return cfg


def _config(args: argparse.Namespace) -> TSEConfig:
    changes = {}
    for flag, name, convert, _ in _FLAGS:
        raw = getattr(args, f"cfg_{name}", None)
        if raw is None:
            continue
        try:
            changes[name] = convert(raw)
        except ValueError:
            raise ConfigError(f"{name} ({flag}): {raw!r} is not allowed; "
                              f"allowed: {_KINDS[convert]}") from None
    if getattr(args, "config", None):      # flags override the file before validation
        return TSEConfig.from_toml(args.config, overrides=changes)
    return DEFAULT.replace(**changes)

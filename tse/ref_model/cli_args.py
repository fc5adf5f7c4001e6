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
    ("--lanes", "lanes", int, "lanes P: channels per stream beat (must divide C)"),
    ("--excite-multipliers", "excite_multipliers", int, "multipliers Q in the excite MAC"),
    ("--buffer-depth", "buffer_depth", int, "strip-buffer depth in beats; 0 = the "
                                            "full-throughput depth (strip + excite latency)"),
    ("--profile", "profile", str, "numerics profile: torch or hw"),
    ("--engine", "engine", str, "quantized PyTorch engine: fbgemm or qnnpack"),
    ("--seed", "seed", int, "seed for weights and synthetic data"),
)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "configuration", "defaults: RegNetY-800MF stage 2 (C=128, 28x28, hidden 32, tile 7xW, "
                         "P=8); flags override --config")
    group.add_argument("--config", metavar="FILE", help="TOML configuration file")
    for flag, name, _, text in _FLAGS:
        group.add_argument(flag, dest=f"cfg_{name}", metavar=name.upper().replace("_", "-"),
                           help=f"{text} (default {getattr(DEFAULT, name)})")


def config_from_args(args: argparse.Namespace) -> TSEConfig:
    changes = {}
    for flag, name, convert, _ in _FLAGS:
        raw = getattr(args, f"cfg_{name}", None)
        if raw is None:
            continue
        try:
            changes[name] = convert(raw)
        except ValueError:
            raise ConfigError(f"{name} ({flag}): {raw!r} is not allowed; "
                              f"allowed: {'an integer' if convert is int else 'a string'}") from None
    if getattr(args, "config", None):      # flags override the file before validation
        return TSEConfig.from_toml(args.config, overrides=changes)
    return DEFAULT.replace(**changes)

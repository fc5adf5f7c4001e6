"""`tse`: the command line; each subcommand is a module tse/cmd_<name>.py.

Each module in SUBCOMMANDS has register(subparsers), which adds its parser with a `run`
function; registering imports nothing heavy (torch, numba, amaranth load only when a
subcommand runs), so `tse --help` is instant. A ConfigError or an InputError (and, as a last
resort, an OSError naming a file or a MemoryError) becomes one `tse: error: ...` line and exit
status 2.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from tse.ref_model.errors import ConfigError, InputError

SUBCOMMANDS = (
    "tse.cmd_config",
    "tse.cmd_run",
    "tse.cmd_reference",
    "tse.cmd_vectors",
    "tse.cmd_check",
    "tse.cmd_bench",
    "tse.cmd_buffer",
    "tse.cmd_cosim",
    "tse.cmd_sweep",
    "tse.cmd_network",
    "tse.cmd_rtl",
    "tse.cmd_prove",
    "tse.cmd_mutate",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tse",
        description="Tiled Squeeze-and-Excite reference: quantized PyTorch reference, "
                    "bit-accurate model and golden vectors, RTL, co-simulation, width sweeps.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args) or 0
    except (ConfigError, InputError) as e:
        print(f"tse: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.filename is None:
            raise
        # a file the command could not read or write that no check above caught
        print(f"tse: error: {e.filename!s}: {e.strerror or e}", file=sys.stderr)
        return 2
    except MemoryError:
        print("tse: error: memory: the configuration did not fit in memory (the estimate "
              "allowed it; tse/quant/memory.py); allowed: a smaller frame or fewer frames",
              file=sys.stderr)
        return 2

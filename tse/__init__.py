"""The `tse` package, the project's one namespace: the command line (tse.cli; each subcommand
in tse/cmd_<name>.py), the Python API (tse.api: reference, vectors, config_for; docs/api.md),
and the packages under it: tse.ref_model (the configuration, the integer model, the plan of the
unit), tse.quant (the float block and quantized PyTorch), tse.rtl (the Amaranth unit),
tse.sim (co-simulation) and tse.bench (benchmarks).

The API's names are loaded on first use (PEP 562), so `import tse` and `tse --help` stay
instant: torch, numba and amaranth load only when a call needs them.
"""
API = ("reference", "vectors", "config_for", "Vectors")

__all__ = list(API)


def __getattr__(name):
    if name in API:
        from . import api
        return getattr(api, name)
    raise AttributeError(f"module 'tse' has no attribute {name!r}")

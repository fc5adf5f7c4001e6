"""The `tse` package: the command line (tse.cli; each subcommand in tse/cmd_<name>.py) and the
Python API (tse.api: reference, vectors, config_for; docs/api.md).

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

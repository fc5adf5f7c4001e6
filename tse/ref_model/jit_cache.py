"""Stale numba caches: numba's on-disk cache (cache=True) is keyed by the source of the file
that defines a function, not of the functions it calls, so a function calling into an edited
module would load stale machine code. flush_stale_cache keeps the called modules' hash beside
the cache and flushes the callers' entries when it changes.

Each module with jitted code names the modules its machine code is compiled from in a tuple
JIT_SOURCES (itself and, transitively, every module whose jitted functions it calls:
tse.ref_model.rounding, torch_numerics, hw_numerics, numerics) and calls flush_module on import;
the whole-frame kernels (tse.ref_model.kernels, tse.ref_model.fastpath) pass numerics.JIT_SOURCES.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from numba.core.dispatcher import Dispatcher


def flush_stale_cache(dispatchers, name: str, sources) -> None:
    """Flush the on-disk cache entries of `dispatchers` (numba functions compiled with
    cache=True, all in one cache directory) when the source of any module in `sources` has
    changed since the last call; `name` names the stamp file kept beside the cache."""
    try:
        digest = hashlib.sha256()
        for module in sources:
            digest.update(Path(module.__file__).read_bytes())
        stamp = digest.hexdigest()
        stamp_file = Path(dispatchers[0]._cache._cache_path) / f"{name}.sources.sha256"
        if not stamp_file.is_file() or stamp_file.read_text() != stamp:
            for d in dispatchers:
                d._cache.flush()
            stamp_file.write_text(stamp)
    except (AttributeError, OSError):      # another numba, or a read-only cache
        pass


def own_dispatchers(namespace: dict) -> list:
    """The numba functions a module defines (not those it imports), from its globals()."""
    return [v for v in namespace.values()
            if isinstance(v, Dispatcher) and v.py_func.__module__ == namespace["__name__"]]


def flush_module(namespace: dict, sources) -> None:
    """flush_stale_cache for the numba functions of the module whose globals() these are,
    stamped with the module's short name."""
    own = own_dispatchers(namespace)
    if own:
        flush_stale_cache(own, namespace["__name__"].rsplit(".", 1)[-1], sources)

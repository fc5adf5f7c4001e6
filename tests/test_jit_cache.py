"""tse.ref_model.jit_cache: stale numba caches are flushed when a called module's source changes,
and every module with jitted code lists each module its machine code is compiled from."""
from __future__ import annotations

import sys
from types import SimpleNamespace

from numba.core.dispatcher import Dispatcher

from tse.ref_model import fastpath, hw_numerics, jit_cache, kernels, numerics, rounding, \
    torch_numerics

JITTED = (rounding, torch_numerics, hw_numerics, numerics)


def test_stale_cache_is_flushed_when_a_source_changes(tmp_path):
    """numba keys its cache by the defining file only: a kernel calling into an edited module
    must be recompiled (flush_stale_cache keeps the sources' hash)."""
    flushed = []
    cache = SimpleNamespace(_cache_path=str(tmp_path), flush=lambda: flushed.append(1))
    dispatchers = [SimpleNamespace(_cache=cache)]
    source = tmp_path / "dep.py"
    source.write_text("A = 1\n")
    module = SimpleNamespace(__file__=str(source))
    jit_cache.flush_stale_cache(dispatchers, "t", (module,))
    jit_cache.flush_stale_cache(dispatchers, "t", (module,))
    assert len(flushed) == 1                # first sight, then unchanged
    source.write_text("A = 2\n")
    jit_cache.flush_stale_cache(dispatchers, "t", (module,))
    assert len(flushed) == 2


def test_jit_sources_name_every_module_the_jitted_code_calls():
    """A jitted function reachable from a module (its own or imported, as numerics.X is for
    the kernels) comes from a module in that module's JIT_SOURCES, and the lists are
    transitive: an edit of rounding.py flushes numerics' and the kernels' caches too."""
    for module in JITTED:
        sources = set(module.JIT_SOURCES)
        assert module in sources
        for name, value in vars(module).items():
            if isinstance(value, Dispatcher):
                home = sys.modules[value.py_func.__module__]
                assert home in sources, f"{module.__name__}.{name} is from {home.__name__}"
        for source in module.JIT_SOURCES:
            assert set(getattr(source, "JIT_SOURCES", ())) <= sources, source.__name__
    for caller in (kernels, fastpath):          # they call numerics.X: numerics' sources
        for name, value in vars(caller).items():
            if isinstance(value, Dispatcher) and value.py_func.__module__ != caller.__name__:
                assert sys.modules[value.py_func.__module__] in numerics.JIT_SOURCES, name


def test_own_dispatchers_are_the_modules_own():
    own = jit_cache.own_dispatchers(vars(torch_numerics))
    assert torch_numerics.mean_torch in own and torch_numerics.requant_torch in own
    assert rounding.clamp not in own            # imported from rounding, flushed there

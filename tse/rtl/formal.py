"""Formal properties of the TSE unit: the harness that wraps TSEUnit with Amaranth's Assert /
Assume / Cover, its RTLIL with the formal cells, and the Yosys flow (SymbiYosys, yices) that
proves them (`tse prove`, docs/verification.md).

The harness drives the unit from free inputs (every cycle the solver picks s_axis_tdata,
_tvalid, _tlast, m_axis_tready and the reset), assumes the source follows AXI4-Stream, and
checks the properties of PROPERTIES, each a group of Asserts that can be proved alone
(`only=`). It reads internal handshakes from the unit's submodules (line accumulator, strip
buffer, gate memory, tile broadcaster), elaborating the unit itself so it needs no extra ports,
and the stages' internal registers (observe()) for the auxiliary invariants that make every
property's k-induction close (INDUCTIVE). gate_banks is proved by assume-guarantee: with the
excite MAC abstracted under its gate protocol, and mac_gate_protocol, that protocol proved of
the real MAC, in separate runs (ASSUME_GUARANTEE, gate_memory_flags).

What is and is not proved: every property is about control and the beats' positions. The
numerics (the sums, the excite MAC's arithmetic, the broadcaster's multiply) are cut in the
Yosys flow (CUTPOINTS: their results become free values), which over-approximates the unit:
a property proved with them cut holds for every parameter set and every arithmetic result.
The data of a beat is tracked through the strip buffer (where it passes unchanged); past it,
the output's value is the product checked bit-exactly by co-simulation (docs/cosim.md).

Long: the harness, its AXI4-Stream assumptions, every property and the auxiliary invariants
that make them inductive are one state machine of observations; split, they would share
most of the harness's signals through private names.
"""
from __future__ import annotations

import traceback

import numpy as np

from tse.ref_model.config import TSEConfig
from tse.ref_model.errors import InputError

PROPERTIES = {
    "m_axis_hold": "m_axis: while TVALID and not TREADY, TVALID stays high and TDATA, TLAST "
                   "hold",
    "reset_quiet": "the cycle after a reset cycle: m_axis_tvalid and error low (no beat "
                   "survives a reset)",
    "conservation": "every accepted beat (and each padding beat of a short frame) enters and "
                    "leaves the strip buffer at its own index with its data unchanged: none "
                    "dropped, duplicated or reordered (a tracked beat)",
    "beat_counts": "no beat is emitted that was not owed (accepted or padding), pushed into "
                   "the strip buffer before it was accepted, or popped before it was pushed",
    "frame_tlast": "m_axis_tlast exactly on every frame's last output beat (whole frames out, "
                   "also after a bad TLAST)",
    "strip_buffer_bounds": "the strip buffer never overflows or underflows: pushes minus pops "
                           "equals its level, 0..depth",
    "gate_banks": "a beat's gates are read only from a committed (full) bank whose every "
                  "gate was written since the bank was last released (with the excite MAC "
                  "abstracted, assuming mac_gate_protocol)",
    "mac_gate_protocol": "the excite MAC's gate protocol (what gate_banks assumes), on the "
                         "real MAC: it writes a gate only at an address in range into a bank "
                         "that is not full, commits a bank only when it is not full and every "
                         "gate of it was written since its last release, and its sums ready "
                         "is its lookahead of the cycle before",
    "error_flag": "error rises exactly on a TLAST in the wrong place (early or missing) and "
                  "stays until reset",
}
"""Property name -> what it states (the Asserts named by it)."""

COVERS = {
    "full_strip_buffer": "the strip buffer holds `depth` beats",
    "input_stall": "s_axis_tvalid high and s_axis_tready low",
    "output_stall": "m_axis_tvalid high and m_axis_tready low",
    "frame_out": "a frame's last beat leaves (m_axis_tlast handshake)",
    "back_to_back_frames": "a new frame's first beat accepted in the cycle after the last "
                           "frame's last beat",
    "early_tlast": "error raised by an early TLAST",
    "missing_tlast": "error raised by a missing TLAST",
    "frame_after_error": "a frame's last beat leaves after error was raised",
}
"""Cover name -> what reaching it shows."""

MUTATIONS = ("tlast_off_by_one", "stall_corrupts_data", "gate_flag_lost",
             "commit_unwritten_gate")
"""Deliberate bugs for the tests (a property must then fail): a wrong TLAST rule in
frame_tlast, a wrapper whose observed m_axis_tdata changes while stalled, a gate flag that
never records the first gate written (the real MAC then commits a bank with a gate unflagged:
mac_gate_protocol fails) and a MAC protocol that lets a bank commit with its first gate
unwritten (gate_banks, which assumes it, fails: a beat reads that gate)."""

CUTPOINTS = ("top.unit.line_accumulator/sums_word", "top.unit.tile_broadcaster/lanes")
"""Wires whose drivers the Yosys flow replaces by free values (yosys `cutpoint`): the tile
sums and the broadcaster's scaled lanes; everything only they feed (the accumulator memory,
the excite MAC's arithmetic, the gate memory's words, the scale pipeline) is then dropped."""

SMALL = {
    "row_strip": TSEConfig(channels=2, height=4, width=2, tile="2xW", reduction=2, lanes=1,
                           excite_multipliers=2, buffer_depth=8),
    "column_strip": TSEConfig(channels=2, height=2, width=3, tile="Hx2", reduction=2,
                              lanes=1, excite_multipliers=2, buffer_depth=12),
    "patch": TSEConfig(channels=2, height=3, width=3, tile="2x2", reduction=2, lanes=2,
                       excite_multipliers=2, buffer_depth=6),
    "se": TSEConfig(channels=2, height=2, width=2, tile="HxW", reduction=2, lanes=1,
                    excite_multipliers=2, buffer_depth=8),
}
"""The small configuration of each tiling kind that `tse prove` and CI prove: strip buffers of
one strip (the input stalls), partial edge tiles in the column strip and the patch."""

MAX_STRIP_BUFFER, MAX_FRAME_BEATS = 64, 256
"""The largest configuration `tse prove` accepts (beats): bigger state spaces take hours."""


def check_size(cfg: TSEConfig) -> TSEConfig:
    """cfg if small enough for a proof in minutes, else an InputError saying what is."""
    if cfg.strip_buffer_depth > MAX_STRIP_BUFFER or cfg.beats_per_frame > MAX_FRAME_BEATS:
        raise InputError(
            f"configuration: strip buffer {cfg.strip_buffer_depth} beats, frame "
            f"{cfg.beats_per_frame} beats is too large to prove; allowed: a strip buffer of "
            f"at most {MAX_STRIP_BUFFER} beats and a frame of at most {MAX_FRAME_BEATS} (e.g. "
            "--channels 2 --height 4 --width 2 --tile 2xW --lanes 1 --excite-multipliers 2)")
    return cfg


def default_cover_depth(cfg: TSEConfig) -> int:
    """Cycles to reach every cover on the model with the MAC abstracted (its gates may come
    at once): a frame in and out through the input slice, the strip buffer and the
    broadcaster, and a little slack."""
    from tse.ref_model.plan import BROADCAST_LATENCY_CYCLES
    return cfg.beats_per_frame + cfg.strip_beats + BROADCAST_LATENCY_CYCLES + 8


ABSTRACT_MAC = "top.unit.excite_mac/o:*"
"""The excite MAC's outputs (gate writes, commits, its ready to the line accumulator): cut
for the properties that hold whatever the MAC does (MAC_FREE), so a proof needs not run
through its latency; a proof with them free holds for the real MAC, one of the behaviours
the free values allow."""

MAC_FREE = ("m_axis_hold", "reset_quiet", "conservation", "beat_counts", "frame_tlast",
            "strip_buffer_bounds", "error_flag")
"""Properties proved with the MAC abstracted, whatever it does (the protocol's sums-ready
rule aside, which mac_gate_protocol proves of the real MAC)."""

ASSUME_GUARANTEE = ("gate_banks", "mac_gate_protocol")
"""gate_banks, proved with the MAC abstracted under the assumption that its outputs follow
the gate protocol, and mac_gate_protocol, that protocol proved of the real MAC (the whole
unit, numerics cut): each in a run of its own (never the assumption and its proof in one
model); together they prove gate_banks of the unit. Each closes by k-induction with
invariants of its own (gate_memory_flags)."""

INDUCTIVE = MAC_FREE + ASSUME_GUARANTEE
"""Properties whose k-induction closes (depth 8, every SMALL kind; docs/verification.md has
the times measured on 2 loaded cores): proved for every cycle, not only the first N. Closing
them takes the auxiliary invariants in build_harness and gate_memory_flags (each an Assert
of the property it serves, so proved in the same induction, nothing assumed) that tie the
harness's counters to the stages' own registers, read through observe(): the line
accumulator's position, mode and error advanced by the beats in the input slices, the strip
buffer's level and ready, the beats and TLAST flags inside the broadcaster, its gate read
address, the excite MAC's place in its strip, its issue counters and the gate writes in its
pipeline."""


def formal_params(cfg: TSEConfig):
    """The unit's plan with fixed, plain integer parameters: the proofs cut the arithmetic
    (CUTPOINTS), so the parameters' values do not matter, only their widths, which the
    configuration fixes. No PyTorch run."""
    from tse.ref_model import numerics as nm
    from tse.ref_model.params import PRE_ACTIVATION, QuantParams

    from .params import rtl_params

    c, h = cfg.channels, cfg.hidden
    qp = QuantParams(
        engine=cfg.engine, scales={r: 1.0 / 64 for r in
                                   ("input", "pooled", "hidden", "excite", "gate", "output")},
        zero_points={"input": 0, "pooled": 0, "hidden": 0, "excite": 128, "gate": 0,
                     "output": 0},
        w1=np.ones((h, c), np.int8), w1_scale=np.full(h, 1 / 128), b1=np.zeros(h, np.float32),
        w2=np.ones((c, h), np.int8), w2_scale=np.full(c, 1 / 128), b2=np.zeros(c, np.float32),
        per_channel=True)
    qp.scales["gate"] = 1.0 / 256
    if cfg.hidden_activation == "silu":     # SiLU's input quantization (a table after fc1)
        qp.scales[PRE_ACTIVATION], qp.zero_points[PRE_ACTIVATION] = 1.0 / 64, 128
    return rtl_params(cfg, nm.derive(qp, cfg))


def observe(component) -> dict:
    """Elaborate `component` now and keep that elaboration (its later elaborations return the
    same Module), so the harness can read the stage's internal registers; {function name:
    [its locals at each return]} of the functions of the stage's own source file run while
    elaborating it (`elaborate`, and helpers such as the broadcaster's `step`)."""
    import sys

    source = sys.modules[type(component).__module__].__file__
    seen = {}

    def profile(frame, event, arg):
        if event == "return" and frame.f_code.co_filename == source:
            seen.setdefault(frame.f_code.co_name, []).append(dict(frame.f_locals))

    before = sys.getprofile()
    sys.setprofile(profile)
    try:
        module = component.elaborate(None)
    finally:
        sys.setprofile(before)
    component.elaborate = lambda platform: module
    return seen


def observed_unit_class():
    """TSEUnit whose elaboration is done once and kept, so the harness can read the
    submodules' ports (m.submodules.<stage>) of the very unit it instantiates, and their
    internal registers (`inside`: stage name -> observe()'s locals)."""
    from .excite_mac import ExciteMac
    from .unit import TSEUnit

    class ObservedUnit(TSEUnit):
        module = None

        def elaborate(self, platform):
            if self.module is None:
                self.module = super().elaborate(platform)
                sub = self.module.submodules
                self.inside = {name: observe(getattr(sub, name)) for name in
                               ("line_accumulator", "tile_broadcaster", "input_slice",
                                        "strip_buffer")}
                # the input slice chain's register slices, port side first
                self.inside["slices"] = [observe(s) for s in
                                         self.inside["input_slice"]["elaborate"][0]["slices"]]
                if self.excite is ExciteMac:    # its counters (mac_gate_protocol)
                    self.inside["excite_mac"] = observe(sub.excite_mac)
            return self.module

    return ObservedUnit


def build_harness(cfg: TSEConfig, p, only=None, mutation: str | None = None):
    """(elaboratable, ports, {source line: property}) of the harness; only: property names
    whose Asserts to keep (default all but mac_gate_protocol, which gate_banks assumes: never
    both in one run); covers are always built."""
    from amaranth import Cat, ClockDomain, Module, Mux, Signal
    from amaranth.asserts import AnyConst, Initial
    from amaranth.hdl import Assert, Assume, Cover

    from .gate_memory import BANKS
    from .line_accumulator import Mode

    if mutation not in (None, *MUTATIONS):
        raise InputError(f"mutation: {mutation!r} is not allowed; allowed: "
                         f"{', '.join(MUTATIONS)}")
    keep = set(PROPERTIES if only is None else only)
    if only is None:        # gate_banks assumes what mac_gate_protocol asserts
        keep.discard("mac_gate_protocol")
    unknown = keep - set(PROPERTIES)
    if unknown:
        raise InputError(f"property: {sorted(unknown)[0]!r} is not allowed; allowed: "
                         f"{', '.join(PROPERTIES)}")

    ObservedUnit = observed_unit_class()
    where = {}                            # source line of an Assert -> its property
    m = Module()
    m.domains.sync = cd = ClockDomain("sync")
    unit = ObservedUnit(cfg, p, probes=False)
    um = unit.elaborate(None)
    m.submodules.unit = unit
    acc, buf = um.submodules.line_accumulator, um.submodules.strip_buffer
    gates, bc = um.submodules.gate_memory, um.submodules.tile_broadcaster

    F = p.beats_per_frame
    depth = p.depth
    pad_word = int(sum(p.zx << (8 * i) for i in range(p.P)))

    # ---- free inputs (ports of the top: the solver picks them every cycle) ------------
    s_data, s_valid, s_last = Signal(p.beat_bits), Signal(), Signal()
    m_ready = Signal()
    ports = [cd.clk, cd.rst, s_data, s_valid, s_last, m_ready]
    m.d.comb += [unit.s_axis_tdata.eq(s_data), unit.s_axis_tvalid.eq(s_valid),
                 unit.s_axis_tlast.eq(s_last), unit.m_axis_tready.eq(m_ready)]
    rst = cd.rst
    s_ready = unit.s_axis_tready
    m_valid, m_data, m_last = unit.m_axis_tvalid, Signal(p.beat_bits), unit.m_axis_tlast
    if mutation == "stall_corrupts_data":
        glitch = Signal()
        ports.append(glitch)
        m.d.comb += m_data.eq(unit.m_axis_tdata ^ Mux(glitch & ~m_ready, 1, 0))
    else:
        m.d.comb += m_data.eq(unit.m_axis_tdata)

    def check(names, cond):
        # located at the caller, so a failed assertion's source line names its property; an
        # invariant several properties' inductions need is asserted with any of them (names:
        # a tuple) and reported as the first kept one's
        kept = [n for n in ((names,) if isinstance(names, str) else names) if n in keep]
        if kept:
            m.d.comb += Assert(cond, kept[0], src_loc_at=1)
            where[traceback.extract_stack(limit=2)[0].lineno] = kept[0]

    # ---- the previous cycle (no reset: they describe the past, reset included) --------
    def past(v, name):
        r = Signal.like(v, name=f"past_{name}", reset_less=True)
        m.d.sync += r.eq(v)
        return r

    started = Signal(reset_less=True, name="started")   # a past cycle exists
    m.d.sync += started.eq(1)
    p_rst = past(rst, "rst")
    p_s_valid, p_s_ready = past(s_valid, "s_valid"), past(s_ready, "s_ready")
    p_s_data, p_s_last = past(s_data, "s_data"), past(s_last, "s_last")
    p_m_valid, p_m_ready = past(m_valid, "m_valid"), past(m_ready, "m_ready")
    p_m_data, p_m_last = past(m_data, "m_data"), past(m_last, "m_last")
    p_error = past(unit.error, "error")

    # ---- the source follows AXI4-Stream; the first cycle is a reset ---------------------
    m.d.comb += Assume(~Initial() | rst)
    m.d.comb += Assume(~rst | ~s_valid)
    with m.If(started & ~p_rst & p_s_valid & ~p_s_ready):
        m.d.comb += Assume(s_valid & (s_data == p_s_data) & (s_last == p_s_last))

    # ---- m_axis_hold, reset_quiet ---------------------------------------------------------
    with m.If(started & ~p_rst & ~rst & p_m_valid & ~p_m_ready):
        check("m_axis_hold", m_valid & (m_data == p_m_data) & (m_last == p_m_last))
    with m.If(started & p_rst):
        check("reset_quiet", ~m_valid & ~unit.error)

    # the excite MAC's protocol: assumed of its free outputs (ABSTRACT_MAC), asserted as
    # mac_gate_protocol on the real MAC (never both in one run: the assumption would prove
    # itself)
    mac_real = "mac_gate_protocol" in keep
    if mac_real and "gate_banks" in keep:
        raise InputError("property: gate_banks assumes mac_gate_protocol; allowed: the two "
                         "in separate runs (formal_flow.prove does)")

    def protocol(cond):
        if mac_real:
            m.d.comb += Assert(cond, "mac_gate_protocol", src_loc_at=1)
            where[traceback.extract_stack(limit=2)[0].lineno] = "mac_gate_protocol"
        else:
            m.d.comb += Assume(cond)

    # its ready is its lookahead of the cycle before (reset: its initial 1), the lookahead
    # the line accumulator's take is set from: the real MAC's ready register is loaded from it
    with m.If(started):
        protocol(acc.o_sums.ready == Mux(p_rst, 1, past(acc.o_sums_ready_next,
                                                        "sums_ready_next")))

    accept = s_valid & s_ready & ~rst
    emit = m_valid & m_ready & ~rst

    # ---- frame bookkeeping as the unit must see it: position, drop mode, error ---------
    pos = Signal(range(F))
    dropping = Signal()
    bad_seen = Signal()
    at_last = pos == F - 1
    early = accept & ~dropping & s_last & ~at_last
    missing = accept & ~dropping & ~s_last & at_last
    with m.If(accept):
        with m.If(dropping):
            with m.If(s_last):
                m.d.sync += dropping.eq(0)
        with m.Elif(early):
            m.d.sync += [pos.eq(0), bad_seen.eq(1)]
        with m.Elif(missing):
            m.d.sync += [pos.eq(0), bad_seen.eq(1), dropping.eq(1)]
        with m.Else():
            m.d.sync += pos.eq(Mux(at_last, 0, pos + 1))
    # beats accepted at the port that the line accumulator (where TLAST is checked) has not
    # taken yet: an input register slice holds some
    pending = Signal(range(8))
    entered = acc.i_beat.valid & acc.i_beat.ready & ~rst
    m.d.sync += pending.eq(pending + accept - entered)
    check("error_flag", bad_seen | ~unit.error)

    # invariants (proved with error_flag, in the same induction): the harness's frame
    # bookkeeping is the line accumulator's (its position, mode and error) advanced by the
    # beats still in the input slices, oldest first
    la = unit.inside["line_accumulator"]["elaborate"][0]
    a_row, a_col, a_grp, a_mode = la["row"], la["col"], la["grp"], la["mode"]
    INPUT = ("error_flag", "beat_counts", "conservation")   # the properties they serve
    check(INPUT, (a_row < p.H) & (a_col < p.W) & (a_grp < p.G) & (a_mode.as_value() != 3))
    # the input slice's ready is the stage's take condition, kept as two registers
    check(INPUT, la["slice_hold"] == ~la["can_load"])
    a_lin = (a_row * p.W + a_col) * p.G + a_grp
    check(INPUT, (a_mode != Mode.DROP) | (a_lin == 0))
    check(INPUT, (a_mode != Mode.PAD) | (a_lin != 0))
    f_pos, f_drop, f_bad = Signal(range(F)), Signal(), Signal()
    m.d.comb += [f_pos.eq(Mux(a_mode == Mode.NORMAL, a_lin, 0)),
                 f_drop.eq(a_mode == Mode.DROP), f_bad.eq(unit.error)]
    entries, entry_data, fold = [], [], []
    for sl in reversed(unit.inside["slices"]):     # the slice by the accumulator first
        r = sl["elaborate"][0]
        check(INPUT, ~r["s_valid"] | r["o_valid"])
        entries += [(r["o_valid"], r["o_data"].last), (r["s_valid"], r["s_data"].last)]
        entry_data += [r["o_data"].data, r["s_data"].data]
    # and the slots (beats plus padding) the accumulator still owes the strip buffer: its
    # stage register, the rest of a padded frame, what the slices' beats will take
    f_slots = Signal(range(8 * F + 2), name="fold_slots")
    m.d.comb += f_slots.eq(la["st_valid"] + Mux(a_mode == Mode.PAD, F - a_lin, 0))
    for n, (valid, last) in enumerate(entries):
        n_pos, n_drop, n_bad = (Signal(range(F), name=f"fold{n}_pos"),
                                Signal(name=f"fold{n}_drop"), Signal(name=f"fold{n}_bad"))
        n_slots = Signal.like(f_slots, name=f"fold{n}_slots")
        f_last = f_pos == F - 1
        m.d.comb += [n_pos.eq(f_pos), n_drop.eq(f_drop), n_bad.eq(f_bad), n_slots.eq(f_slots)]
        # the beat's slot (counted from the next push), whether it is taken and its padding
        fold.append((f_slots, valid & ~f_drop, Mux(last & ~f_last, F - 1 - f_pos, 0),
                     entry_data[n]))
        with m.If(valid):
            with m.If(f_drop):
                m.d.comb += n_drop.eq(~last)
            with m.Elif(last != f_last):
                m.d.comb += [n_pos.eq(0), n_bad.eq(1), n_drop.eq(~last),
                             n_slots.eq(f_slots + 1 + Mux(last, F - 1 - f_pos, 0))]
            with m.Else():
                m.d.comb += [n_pos.eq(Mux(f_last, 0, f_pos + 1)), n_slots.eq(f_slots + 1)]
        f_pos, f_drop, f_bad, f_slots = n_pos, n_drop, n_bad, n_slots
    check("error_flag", (f_pos == pos) & (f_drop == dropping) & (f_bad == bad_seen))
    check(INPUT, (f_pos == pos) & (f_drop == dropping))
    check(INPUT, pending == sum(v for v, _ in entries))
    with m.If(pending == 0):
        check("error_flag", unit.error == bad_seen)
    with m.If(started & ~p_rst & ~rst & p_error):
        check("error_flag", unit.error)

    # ---- conservation: slots owed, the tracked beat -------------------------------------
    # beats owed at most: the broadcaster's 9, the strip buffer's depth, the accumulator's
    # stage and the rest of a padded frame (F), and F for each of the input slices' 4 beats
    # (an early TLAST owes its frame's padding): no counter below wraps
    cap = depth + 6 * F + 64
    w = max(8, (4 * cap).bit_length())
    slot, pushed, popped = Signal(w), Signal(w), Signal(w)
    k = AnyConst(w)
    d = AnyConst(p.beat_bits)
    k_pad = Signal()                      # slot k holds a padding beat (after an early TLAST)
    taken = accept & ~dropping            # a beat that enters the unit's data path
    pads = Mux(early, F - 1 - pos, 0)
    m.d.sync += slot.eq(slot + Mux(taken, 1 + pads, 0))
    off = Signal(w)
    m.d.comb += off.eq(k - slot)
    with m.If(taken & (off == 0)):
        m.d.comb += Assume(s_data == d)
        m.d.sync += k_pad.eq(0)
    with m.Elif(taken & (off != 0) & (off <= pads)):
        m.d.sync += k_pad.eq(1)
    expected = Mux(k_pad, pad_word, d)
    push = buf.i_beat.valid & buf.i_beat.ready & ~rst
    pop = bc.i_beat.valid & bc.i_beat.ready & ~rst
    m.d.sync += [pushed.eq(pushed + push), popped.eq(popped + pop)]
    owed = Signal(range(cap + 1))
    m.d.sync += owed.eq(owed + Mux(taken, 1 + pads, 0) - emit)
    with m.If(push & (pushed == k)):
        check("conservation", buf.i_beat.payload == expected)
    with m.If(pop & (popped == k)):
        check("conservation", bc.i_beat.payload == expected)
    check("beat_counts", ~emit | (owed != 0))
    # pushes never run ahead of the slots, pops never ahead of pushes, emits of pops
    ahead_push, ahead_pop = Signal(range(cap + 1)), Signal(range(cap + 1))
    m.d.sync += [ahead_push.eq(ahead_push + Mux(taken, 1 + pads, 0) - push),
                 ahead_pop.eq(ahead_pop + push - pop)]
    check("beat_counts", ~push | (ahead_push != 0) | taken)
    check("beat_counts", ~pop | (ahead_pop != 0))
    check("beat_counts", owed <= cap - 1)
    # invariants (proved with beat_counts): the slots ahead of the pushes are those the
    # accumulator owes, the pushes ahead of the pops the strip buffer's level, and the beats
    # owed those plus the beats inside the broadcaster
    check(("beat_counts", "conservation"), ahead_push == f_slots)
    check(("beat_counts", "conservation"), ahead_pop == buf.level)
    b_in = unit.inside["tile_broadcaster"]
    b_valids = [st["v"] for st in b_in["step"]] + [b_in["elaborate"][0][n]
                                                   for n in ("s_valid", "o_valid")]
    check("beat_counts", owed == ahead_push + ahead_pop + sum(b_valids))
    check(("strip_buffer_bounds", "beat_counts", "conservation"),
          (buf.level <= depth - 1 + buf.o_beat.valid) & (buf.level >= buf.o_beat.valid))
    check(("strip_buffer_bounds", "beat_counts", "conservation"),
          buf.i_beat.ready == (buf.level != depth - 1 + buf.o_beat.valid))

    # invariants (proved with conservation): where the tracked beat is, it holds its data
    # (or the padding word): in an input slice, in the accumulator's stage register, still
    # to be padded, in the strip buffer's storage or its output register
    check("conservation", (slot - pushed)[:w] == ahead_push)
    check("conservation", (pushed - popped)[:w] == buf.level)
    rel = Signal(w, name="k_from_push")           # the tracked beat's slot from the next push
    m.d.comb += rel.eq(k - pushed)
    with m.If(la["st_valid"] & (rel == 0)):
        check("conservation", la["st_data"] == expected)
    with m.If((a_mode == Mode.PAD) & (rel >= la["st_valid"])
              & (rel < la["st_valid"] + F - a_lin)):
        check("conservation", k_pad)
    for start, e_taken, e_pads, e_data in fold:
        with m.If(e_taken & (rel == start)):
            check("conservation", ~k_pad & (e_data == d))
        with m.If(e_taken & (rel > start) & (rel <= start + e_pads)):
            check("conservation", k_pad)
    bs = unit.inside["strip_buffer"]["elaborate"][0]
    inner, b_level = depth - 1, bs["level"]
    produce, consume = bs["produce"], bs["consume"]
    check("conservation", (produce < inner) & (consume < inner) & (b_level <= inner)
          & (produce == Mux(consume + b_level >= inner, consume + b_level - inner,
                            consume + b_level)))
    back = Signal(w, name="k_from_pop")           # the tracked beat's index from the next pop
    m.d.comb += back.eq(k - popped)
    with m.If(bs["out_valid"] & (back == 0)):
        check("conservation", buf.o_beat.payload == expected)
    # each storage word through a read port of the harness's own (asynchronous: the
    # contents now), in each storage slice
    for i in range(inner):
        rports = [getattr(bs["m"].submodules, f"storage{n}").read_port(domain="comb")
                  for n in range(len(bs["data"]))]
        m.d.comb += [port.addr.eq(i) for port in rports]
        j = Mux(i >= consume, i - consume, i + inner - consume)   # its place in the queue
        with m.If((j < b_level) & (back == bs["out_valid"] + j)):
            check("conservation", Cat(*[port.data for port in rports]) == expected)

    # ---- frame_tlast --------------------------------------------------------------------
    out_pos = Signal(range(F))
    with m.If(emit):
        m.d.sync += out_pos.eq(Mux(out_pos == F - 1, 0, out_pos + 1))
    last_at = F - 2 if mutation == "tlast_off_by_one" and F > 1 else F - 1
    with m.If(emit):
        check("frame_tlast", m_last == (out_pos == last_at))
    # invariants (proved with frame_tlast): the beats inside the broadcaster (its pipeline
    # stages, newest first, its skid slot and output register) carry the positions before
    # its next pop's, each with TLAST where its position is the frame's last, and the
    # oldest is the next beat out
    bi = unit.inside["tile_broadcaster"]
    be = bi["elaborate"][0]
    b_row, b_col, b_grp = be["row"], be["col"], be["grp"]
    check("frame_tlast", (b_row < p.H) & (b_col < p.W) & (b_grp < p.G))
    q = Signal(range(F), name="bc_next")
    m.d.comb += q.eq((b_row * p.W + b_col) * p.G + b_grp)
    inflight = [(st["v"], st["t"]) for st in bi["step"]]
    inflight += [(be["s_valid"], be["s_last"]), (be["o_valid"], be["o_last"])]
    for n, (valid, last) in enumerate(inflight):
        nq = Signal(range(F), name=f"bc_pos{n}")
        m.d.comb += nq.eq(Mux(valid, Mux(q == 0, F - 1, q - 1), q))
        check("frame_tlast", ~valid | (last == (nq == F - 1)))
        q = nq
    check("frame_tlast", q == out_pos)

    # ---- strip_buffer_bounds ----------------------------------------------------------
    level = Signal(range(depth + 2))
    m.d.sync += level.eq(level + push - pop)
    check("strip_buffer_bounds", (level == buf.level) & (level <= depth))
    # with the invariants asserted above with beat_counts: the storage behind the output
    # register holds 0..depth - 1 beats (true of every reachable state, and what lets
    # k-induction close: without it an unreachable storage count past depth - 1 counts on,
    # or wraps `level` to 0 under a full output register), and its ready is a register kept
    # equal to "the storage behind the output register has room"
    check("strip_buffer_bounds", ~push | (level < depth) | pop)
    check("strip_buffer_bounds", ~pop | (level > 0))

    # ---- gate_banks, mac_gate_protocol: a written flag per gate --------------------------
    # gate_banks runs with the MAC abstracted and assumes the protocol its writes and commits
    # follow; mac_gate_protocol asserts that very protocol on the real MAC (gate_memory_flags)
    if "gate_banks" in keep or mac_real:
        gate_memory_flags(m, p, unit, gates, bc, pop, rst, check, protocol, mac_real,
                          mutation)

    # ---- covers -------------------------------------------------------------------------
    after_error = Signal()
    with m.If(unit.error & emit & m_last):
        m.d.sync += after_error.eq(1)
    prev_last_in = Signal()
    m.d.sync += prev_last_in.eq(accept & s_last & ~dropping & at_last)
    m.d.comb += [
        Cover(~rst & (buf.level == depth), "full_strip_buffer"),
        Cover(~rst & s_valid & ~s_ready, "input_stall"),
        Cover(~rst & m_valid & ~m_ready, "output_stall"),
        Cover(emit & m_last, "frame_out"),
        Cover(prev_last_in & accept, "back_to_back_frames"),
        Cover(early, "early_tlast"),
        Cover(missing, "missing_tlast"),
        Cover(unit.error & emit & m_last, "frame_after_error"),
    ]
    return m, ports, where


def gate_memory_flags(m, p, unit, gates, bc, pop, rst, check, protocol, mac_real, mutation):
    """gate_banks and mac_gate_protocol (build_harness's): a flag per gate of the gate memory,
    set when the MAC writes it, cleared when the broadcaster releases its bank.

    The protocol of the MAC's outputs (`protocol`: assumed with the MAC abstracted, asserted
    as mac_gate_protocol on the real one): a gate is written only at an address in range
    into a bank that is not full; a bank is committed only when it is not full and every one
    of its gates was written since its last release (the gate written in the committing cycle
    counts). gate_banks: under it, a beat's gates are read only from a full bank whose gates
    are all flagged; its invariants: a full bank's flags are all set, the broadcaster's read
    address lies in its bank. mac_gate_protocol's invariants tie the flags to the MAC's own
    counters: where it is in its strip (n, the strip's cycle), the issue counters of the
    tile, the gate writes in flight down its pipeline, the flags of its bank as exactly the
    gates whose writes are done, the other banks' flags all set when full, else clear."""
    from amaranth import Cat, Mux, Signal

    from tse.ref_model import plan

    from .gate_memory import BANKS
    from .squeeze import DRAIN, LEAD, TILES

    words, bank_bits = p.tx * p.G, p.tx * p.G * p.P
    all_set = (1 << bank_bits) - 1
    flags = Signal(BANKS * bank_bits)
    w_word = Signal(range(BANKS * words))
    m.d.comb += w_word.eq((gates.w_bank * p.tx + gates.w_tile) * p.G + gates.w_group)
    w_bit = w_word * p.P + gates.w_lane
    released = Signal(BANKS * bank_bits)
    for b in range(BANKS):
        m.d.comb += released[b * bank_bits:(b + 1) * bank_bits].eq(
            Mux(gates.release & (gates.release_bank == b), all_set, 0))
    written = Signal(BANKS * bank_bits)
    m.d.comb += written.eq(Mux(gates.w_en & ~rst, 1, 0) << w_bit)
    if mutation == "gate_flag_lost":       # the first gate's write is never recorded
        m.d.sync += flags.eq(((flags & ~released) | written) & ~1)
    else:
        m.d.sync += flags.eq((flags & ~released) | written)

    def bank(v, b):
        return v[b * bank_bits:(b + 1) * bank_bits]

    # ---- the protocol ----------------------------------------------------------------
    with m.If(gates.w_en & ~rst):
        protocol((gates.w_bank < BANKS) & (gates.w_tile < p.tx) & (gates.w_group < p.G)
                 & (gates.w_lane < p.P) & ~gates.full.bit_select(gates.w_bank, 1))
    # commit_unwritten_gate: a protocol that lets a bank commit with its first gate unwritten
    need = all_set & ~1 if mutation == "commit_unwritten_gate" else all_set
    for b in range(BANKS):
        with m.If(gates.commit & (gates.commit_bank == b) & ~rst):
            protocol(~gates.full[b] & ((bank(flags | written, b) & need) == need))
    with m.If(gates.commit & ~rst):
        protocol(gates.commit_bank < BANKS)

    # a full bank's flags are all set (commits only of written banks, releases clear both)
    for b in range(BANKS):
        with m.If(gates.full[b]):
            check(("gate_banks", "mac_gate_protocol"), bank(flags, b) == all_set)

    # ---- gate_banks: gates read only from a full bank, every one written -------------
    r_word = gates.r_addr
    r_flags = (flags >> (r_word * p.P))[:p.P]
    r_bank = Signal(2)
    m.d.comb += r_bank.eq(r_word // words)
    with m.If(pop):
        check("gate_banks", (r_flags == (1 << p.P) - 1) & gates.full.bit_select(r_bank, 1))
    # invariant: the broadcaster's read address is its position's word in its bank
    be = unit.inside["tile_broadcaster"]["elaborate"][0]
    check("gate_banks", (be["bank"] < BANKS) & (be["bank_base"] == be["bank"] * words)
          & (be["gaddr"] == be["bank_base"] + be["tile"] * p.G + be["grp"])
          & (be["tile"] < p.tx) & (be["tcol"] < p.tw) & (be["grp"] < p.G)
          & (be["col"] == be["tile"] * p.tw + be["tcol"]) & (be["col"] < p.W))
    if not mac_real or "excite_mac" not in unit.inside:
        return

    # ---- mac_gate_protocol's invariants: the MAC's counters ---------------------------
    MP = "mac_gate_protocol"
    mi = unit.inside["excite_mac"]["elaborate"][0]
    ctl, tags = mi["ctl"], mi["tags"]      # its StripControl (phase, count: read, not set)
    running, phase, cnt, tile, gb = ctl.running, ctl.phase, ctl.cnt, ctl.tile, ctl.gb
    sc, sc_fc1, sc_fc2 = mi["sc"], mi["sc_fc1"], mi["sc_fc2"]
    lead, B, tx, drain = p.lead_cycles, p.tile_cycles, p.tx, p.drain_cycles
    F2, K2, P = p.fc2_start, p.K2, p.P
    D = p.issue_to_code + plan.CODE_TO_GATE           # an issue's write: tags[D]
    assert D == drain, (D, drain)
    last = lead + tx * B + drain - 1                  # the strip's last cycle (the commit)
    n = Signal(range(last + 1), name="mac_n")         # the strip's cycle (the start: 0)
    m.d.comb += n.eq(Mux(phase == LEAD, cnt, Mux(phase == TILES, lead + tile * B + sc,
                                                  lead + tx * B + cnt)))
    check(MP, (gb < BANKS) & ~gates.full.bit_select(gb, 1))
    with m.If(running):
        check(MP, phase != 3)
        with m.If(phase == LEAD):
            check(MP, (cnt >= 1) & (cnt <= lead - 1))
        with m.If(phase == TILES):
            check(MP, (tile < tx) & (sc < B) & (sc_fc1 == (sc < p.hidden * p.K1))
                  & (sc_fc2 == (sc >= F2)))
            # fc2's issue counters: output, chunk, its channel group and lane
            for s in range(F2, B):
                out = (s - F2) // K2
                with m.If(sc == s):
                    check(MP, (mi["o"] == out) & (mi["k"] == (s - F2) % K2)
                          & (mi["c_lane"] == out % P) & (mi["c_grp"] == out // P))
        with m.If(phase == DRAIN):
            check(MP, cnt <= drain - 1)
    # the gate writes in flight: a tag i stages down the pipeline that will write a gate is
    # the issue of cycle n - i of the running strip, with that gate's tile, group and lane
    issues = [(lead + t * B + F2 + c * K2 + K2 - 1, t, c // P, c % P)
              for t in range(tx) for c in range(p.C)]
    wv = []
    for i in range(1, D + 1):
        tg = tags[i]
        v = Signal(name=f"gate_write_in{i}")
        m.d.comb += v.eq(tg.valid & tg.last & tg.fc2)
        wv.append(v)
        match = Cat(*[(n == at + i) & (tg.tile == t) & (tg.grp == g) & (tg.lane == lane)
                      for at, t, g, lane in issues]).any()
        check(MP, ~v | (running & match))
    # the MAC's bank: idle, no gate written; running, exactly the gates whose write is done
    cur = Signal(bank_bits, name="mac_bank_flags")
    m.d.comb += cur.eq(Mux(gb == 0, bank(flags, 0), Mux(gb == 1, bank(flags, 1),
                                                         bank(flags, 2))))
    with m.If(~running):
        check(MP, (cur == 0) & ~Cat(*wv).any())
    with m.If(running):
        for at, t, g, lane in issues:
            done = (n > at + D) | Cat(*[(n == at + d) & ~wv[d - 1]
                                        for d in range(1, D + 1)]).any()
            check(MP, cur[(t * p.G + g) * P + lane] == done)
    # the other banks: full, every gate written; else none
    for b in range(BANKS):
        with m.If(gb != b):
            check(MP, bank(flags, b) == Mux(gates.full[b], all_set, 0))

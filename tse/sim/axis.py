"""AXI4-Stream source and sink with seeded pauses, clocked by one loop per design.

In the style of cocotbext-axi: a source is a queue of beats (`send` a frame), a sink a queue
of received beats (`beats()`), each with a pause generator, a seeded pattern of cycles in
which the source presents no new beat (TVALID low) or the sink refuses (TREADY low). A
source never drops TVALID or changes data while a beat waits for TREADY (AXI4-Stream rule);
its pause only delays the next beat.

Speed: one Python step per clock is the bottleneck (docs/cosim.md), so instead of one
coroutine per driver, `StreamLoop` runs both drivers and the gate probe in one coroutine
against tse/sim/harness.py's packed ports: per cycle one RisingEdge, one read of `mon` (every
handshake signal, the output data and the gate probe) and at most one write of `drv`.
Signals are sampled right after the rising edge, where they still hold their values from
before it, i.e. what the edge's flip-flops took (checked on Icarus 11 and Verilator 5.48),
and written through cocotb's scheduled writes, so the design sees them from the next edge.
"""
from __future__ import annotations

import time
from collections import deque

import numpy as np

from . import harness as hz


class PauseGenerator:
    """Seeded pauses: cycle i pauses with the given probability, drawn in numpy blocks."""

    BLOCK = 8192

    def __init__(self, probability: float = 0.0, seed: int = 0):
        if not 0.0 <= probability < 1.0:
            raise ValueError(f"pause probability {probability!r}; allowed: 0 <= p < 1")
        self.probability = probability
        self._rng = np.random.default_rng(seed)

    def block(self) -> list[bool]:
        """The next BLOCK cycles' pause flags."""
        if self.probability == 0.0:
            return [False] * self.BLOCK
        return (self._rng.random(self.BLOCK) < self.probability).tolist()


def pack_beats(data: np.ndarray) -> list[int]:
    """Beats uint8 [n, P] as integers, lane 0 in the least significant byte."""
    data = np.ascontiguousarray(data, np.uint8)
    p, raw = data.shape[1], data.tobytes()
    return [int.from_bytes(raw[i:i + p], "little") for i in range(0, len(raw), p)]


def unpack_beats(words: list[int], lanes: int) -> np.ndarray:
    """Integers (lane 0 in the low byte) as uint8 [n, P]."""
    raw = b"".join(w.to_bytes(lanes, "little") for w in words)
    return np.frombuffer(raw, np.uint8).reshape(len(words), lanes)


class AxisSource:
    """Queue-backed AXI4-Stream source: `send` frames, the loop presents them beat by beat."""

    def __init__(self, lanes: int, pause: PauseGenerator | None = None):
        self.lanes = lanes
        self.pause = pause or PauseGenerator()
        self.queue: deque[int] = deque()    # drv words: data, TLAST and TVALID bits
        self.clear_stats()

    def send(self, data: np.ndarray, last=None) -> None:
        """Queue beats uint8 [n, P] (a frame); `last`: bool [n] TLAST flags, default only on
        the final beat."""
        words = pack_beats(np.asarray(data).reshape(-1, self.lanes))
        if last is None:
            last = np.zeros(len(words), bool)
            last[-1] = True
        valid = 1 << hz.S_TVALID
        self.queue.extend((w << hz.DRV_DATA_SHIFT) | valid | (int(bool(t)) << hz.S_TLAST)
                          for w, t in zip(words, np.asarray(last, bool).tolist()))

    def clear(self) -> None:
        """Drop queued beats (a reset)."""
        self.queue.clear()

    def clear_stats(self) -> None:
        self.beats = 0               # beats accepted by the design
        self.stall_cycles = 0        # cycles with TVALID high and TREADY low
        self.first_cycle = None      # cycle of the first accepted beat


class AxisSink:
    """Queue-backed AXI4-Stream sink: holds every beat the design emits while TREADY is high."""

    def __init__(self, layout: hz.Layout, pause: PauseGenerator | None = None):
        self.layout = layout
        self.pause = pause or PauseGenerator()
        self.clear()

    def clear(self) -> None:
        self.raw: list[int] = []     # `mon` words of accepted beats
        self.first_cycle = None
        self.last_cycle = None

    def __len__(self) -> int:
        return len(self.raw)

    def beats(self) -> tuple[np.ndarray, np.ndarray]:
        """(data uint8 [n, P], TLAST bool [n]) of the received beats."""
        mask = (1 << self.layout.data_bits) - 1
        data = unpack_beats([(m >> hz.DATA_SHIFT) & mask for m in self.raw], self.layout.lanes)
        last = np.array([(m >> hz.M_TLAST) & 1 for m in self.raw], bool)
        return data, last


class GateProbe:
    """Every probe_gate_* pulse, as (tile, channel, code) in the order the unit wrote them."""

    def __init__(self, layout: hz.Layout):
        self.layout = layout
        self.raw: list[int] = []

    def clear(self) -> None:
        self.raw = []

    def pulses(self) -> list[tuple[int, int, int]]:
        return [self.layout.decode_gate(m) for m in self.raw]


_XZ_TO_0 = str.maketrans("xXzZuUwWlLhH-", "0000000000010")


class StreamLoop:
    """Drives a source and a sink on tse/sim/harness.py's `tse_cosim_top`, one cycle per step."""

    def __init__(self, dut, layout: hz.Layout, source: AxisSource, sink: AxisSink,
                 probe: GateProbe):
        from cocotb.triggers import RisingEdge
        self.dut, self.layout = dut, layout
        self.source, self.sink, self.probe = source, sink, probe
        self._edge = RisingEdge(dut.clk)
        self._read = self._fast_reader(dut.mon)
        self.cycle = 0               # rising edges since the loop started
        self.error_cycle = None      # first cycle `error` was seen high
        self.error = False           # `error` at the last sampled edge
        self.unknown_reads = 0       # samples of `mon` holding X or Z bits
        self.in_pauses = 0           # cycles the source held back a queued beat (a pause)
        self.out_pauses = 0          # cycles the sink's pause refused a valid output beat
        self.busy_s = 0.0            # wall time spent in run()
        self.busy_cycles = 0
        self._valid = False          # a beat is presented (TVALID high)
        self._word = 0
        self._ready = 0
        self._held = False           # TREADY is low by the sink's pause (not by drive_idle)
        self._drv = None
        self._pin, self._pi = source.pause.block(), 0
        self._pout, self._po = sink.pause.block(), 0

    @staticmethod
    def _fast_reader(handle):
        """A function returning the handle's value as an int (X and Z read as 0)."""
        raw = getattr(getattr(handle, "_handle", None), "get_signal_val_binstr", None)
        if raw is None:                      # another cocotb: the public, slower path
            return lambda: int(str(handle.value).translate(_XZ_TO_0), 2)
        return raw

    def set_pauses(self, pause_in: PauseGenerator, pause_out: PauseGenerator) -> None:
        """Use new pause patterns from the next cycle on (a new scenario); the counts of
        pauses applied start again from zero."""
        self.source.pause, self.sink.pause = pause_in, pause_out
        self._pin, self._pi = pause_in.block(), 0
        self._pout, self._po = pause_out.block(), 0
        self.in_pauses = self.out_pauses = 0

    def drive_idle(self) -> None:
        """TVALID low, TREADY low (reset, or between phases)."""
        self._valid = False
        self._ready = 0
        self._held = False
        self._write(0)

    def _write(self, word: int) -> None:
        if word != self._drv:
            self.dut.drv.value = word
            self._drv = word

    async def reset(self, cycles: int = 4) -> None:
        """Synchronous reset: rst high for `cycles` edges, drivers idle, queues cleared."""
        self.source.clear()
        self.drive_idle()
        self.dut.rst.value = 1
        for _ in range(cycles):
            await self._edge
            self.cycle += 1
        self.dut.rst.value = 0
        self.error = False
        self.error_cycle = None

    async def clear_peak(self) -> None:
        """Restart the strip-buffer peak meter (one cycle)."""
        self.dut.peak_clear.value = 1
        await self._edge
        self.cycle += 1
        self.dut.peak_clear.value = 0

    def peak_level(self) -> int:
        return int(str(self.dut.peak_level.value).translate(_XZ_TO_0), 2)

    async def run(self, *, until_beats: int | None = None, until_drained: bool = False,
                  quiet: int | None = None, cycles: int | None = None,
                  max_cycles: int = 1_000_000) -> str:
        """Clock the drivers until a condition holds; returns which one:

        "beats"    the sink holds until_beats beats (or more);
        "drained"  (until_drained) the source's queue is empty and its last beat accepted;
        "quiet"    the source is drained and no output beat came for `quiet` cycles;
        "cycles"   `cycles` edges have passed;
        "timeout"  max_cycles edges passed first."""
        src, sink, probe = self.source, self.sink, self.probe
        queue, out, gates = src.queue, sink.raw, probe.raw
        read, edge = self._read, self._edge
        valid, word, ready = self._valid, self._word, self._ready
        held = self._held
        pin, pi, pout, po = self._pin, self._pi, self._pout, self._po
        cyc = self.cycle
        stop_at = cyc + (cycles if cycles is not None else max_cycles)
        target = until_beats if until_beats is not None else -1
        beats, stalls = src.beats, src.stall_cycles
        first_in, first_out, last_out = src.first_cycle, sink.first_cycle, sink.last_cycle
        nout = len(out)
        idle = 0
        unknown = 0
        in_p, out_p = self.in_pauses, self.out_pauses
        err_cycle = self.error_cycle
        drv_h = self.dut.drv
        last_drv = self._drv
        reason = "timeout"
        t0 = time.perf_counter()
        c0 = cyc
        while True:
            await edge
            cyc += 1
            s = read()
            try:
                m = int(s, 2)
            except ValueError:
                m = int(s.translate(_XZ_TO_0), 2)
                unknown += 1
            # the handshakes of this edge
            if valid:
                if m & 1:
                    beats += 1
                    if first_in is None:
                        first_in = cyc
                    valid = False
                else:
                    stalls += 1
            if m & 2 and ready:
                out.append(m)
                nout += 1
                if first_out is None:
                    first_out = cyc
                last_out = cyc
                idle = 0
            else:
                if m & 2 and held:
                    out_p += 1       # this edge's TREADY was low by a pause, TVALID high
                idle += 1
            if m & 16:
                gates.append(m)
            if m & 8 and err_cycle is None:
                err_cycle = cyc
            # what the drivers present for the next edge
            if not valid and queue:
                if pin[pi]:
                    in_p += 1
                else:
                    word = queue.popleft()
                    valid = True
                pi += 1
                if pi == len(pin):
                    pin, pi = src.pause.block(), 0
            held = pout[po]
            ready = 0 if held else 1
            po += 1
            if po == len(pout):
                pout, po = sink.pause.block(), 0
            new = (word | ready) if valid else ready
            if new != last_drv:
                drv_h.value = new
                last_drv = new
            # stop?
            if target >= 0 and nout >= target:
                reason = "beats"
                break
            drained = not valid and not queue
            if until_drained and drained:
                reason = "drained"
                break
            if quiet is not None and drained and idle >= quiet:
                reason = "quiet"
                break
            if cyc >= stop_at:
                reason = "cycles" if cycles is not None else "timeout"
                break
        err = bool(m & 8)
        self.busy_s += time.perf_counter() - t0
        self.busy_cycles += cyc - c0
        self.cycle = cyc
        self._valid, self._word, self._ready, self._drv = valid, word, ready, last_drv
        self._held = held
        self._pin, self._pi, self._pout, self._po = pin, pi, pout, po
        src.beats, src.stall_cycles, src.first_cycle = beats, stalls, first_in
        sink.first_cycle, sink.last_cycle = first_out, last_out
        self.error_cycle, self.error = err_cycle, err
        self.unknown_reads += unknown
        self.in_pauses, self.out_pauses = in_p, out_p
        return reason

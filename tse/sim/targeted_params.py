"""Parameter sets that carry one value a unit check found to the unit's outputs (tse mutate).

A unit check (tse.sim.mean_check, tse.sim.requant_check) names an input of one unit where a
mutant's code differs from the original's: a tile sum, or a requantizer's operands. With the
block's own parameters that difference may never reach an output: fc1 mixes a pooled code
with all the others, a requantizer sees only the accumulators its weights give, the gate
table may give two excite codes one gate. The sets here change ROM contents only: every
word fits the fields the block's own parameters sized, so the unit's Verilog stays as it is
and the campaign's Verilator model (its ROMs load at run time) runs them.
  - requantizer(ip, hit): one neuron of the hit's layer has all-zero weights, so its
    accumulator is its bias, set to the accumulator found, with M and the shift as found;
  - pooled(ip, channel, gold, gate): one fc1 neuron reads that channel alone, with words the
    model shows turn the two pooled codes into two hidden codes;
  - then (show_hidden) an fc2 neuron reads that fc1 neuron alone, with words the model shows
    turn the two hidden codes into two excite codes; and where the gate table gives two
    excite codes one gate, the set's gate table becomes a step between them (gate_apart).
Each returns None when no set of its form shows the hit. The golden values of a set come
from the model, never from the RTL.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from tse.ref_model import numerics, roms

WEIGHTS = (127, -128, 64, -64, 1, -1)
"""The weights a neuron that reads one input alone tries, largest steps first."""


def _words(layer: int) -> tuple[str, str, str]:
    n = f"hw_fc{layer + 1}_"
    return n + "bias", n + "mult", n + "shift"


def set_neuron(ip, layer: int, j: int, acc: int, mult: int, shift: int, weights=None):
    """ip with neuron j of `layer` computing acc (its weights zero, or `weights`, and its
    bias acc), M and the shift."""
    w = (ip.w1 if layer == 0 else ip.w2).copy()
    w[j] = 0 if weights is None else weights
    fields = {("w1" if layer == 0 else "w2"): w}
    for name, v in zip(_words(layer), (acc, mult, shift)):
        a = np.array(getattr(ip, name), copy=True)
        a[j] = v
        fields[name] = a
    return dataclasses.replace(ip, **fields)


def spare(ip, layer: int) -> list[int]:
    """Neurons of `layer` whose words can change without changing the unit's widths: none
    holds the largest multiplier's bit length or the largest shift alone."""
    mults = np.concatenate([ip.hw_fc1_mult, ip.hw_fc2_mult])
    shifts = np.concatenate([ip.hw_fc1_shift, ip.hw_fc2_shift])
    off = 0 if layer == 0 else len(ip.hw_fc1_mult)
    out = []
    for j in range(len(getattr(ip, _words(layer)[1]))):
        rest = np.delete(np.arange(len(mults)), off + j)
        if not len(rest):
            continue
        if roms.bits_for(int(mults[rest].max())) == roms.bits_for(int(mults.max())) and \
                shifts[rest].max() == shifts.max():
            out.append(j)
    return out


def hidden_codes(ip, pooled_codes):
    """The model's hidden codes [hidden] (after fc1's activation) of one tile's pooled codes."""
    hidden = np.zeros(ip.w1.shape[0], np.int64)
    numerics.fc1(np.asarray(pooled_codes, np.int64), ip.tables(), numerics.HW, hidden)
    return hidden


def excite_codes(ip, hidden):
    """The model's excite codes [C] of one tile whose hidden codes are `hidden`."""
    excite = np.zeros(ip.w2.shape[0], np.int64)
    numerics.fc2(np.asarray(hidden, np.int64), ip.tables(), numerics.HW, excite)
    return excite


def gate_apart(ip, e1: int, e2: int):
    """ip when its gate table gives excite codes e1 and e2 two gates; else a copy whose
    table is a step between them (0 up to the smaller, the largest gate above: the gate
    ROM loads at run time like the rest), or None when even that does not."""
    def apart(u):
        lut = u.tables().h_lut
        return lut[e1] != lut[e2]

    if e1 == e2:
        return None
    if apart(ip):
        return ip
    step = np.where(np.arange(256) > min(e1, e2), 255, 0).astype(ip.sigmoid_lut.dtype)
    u = dataclasses.replace(ip, sigmoid_lut=step)
    return u if apart(u) else None


def _reads_alone(ip, layer: int, j: int, src: int, x: int, zx: int, w: int, shift: int,
                 z: int):
    """ip with neuron j of `layer` reading its input src alone with weight w (the others
    0): M at its field's top, the shift given, the bias chosen so that input code x (zero
    point zx) lands mid-range of the layer's codes (output zero point z)."""
    top = (1 << roms.mult_bits(ip)) - 1
    lo, hi = roms.acc_range(ip.hw, layer)
    inputs = (ip.w1 if layer == 0 else ip.w2).shape[1]
    mid = ((128 - z) << shift) // top - ((w * (x - zx)) << ip.hw.bias_frac_bits)
    row = np.zeros(inputs, np.int64)
    row[src] = w
    return set_neuron(ip, layer, j, int(np.clip(mid, lo, hi)), top, shift, row)


def show_hidden(t, j: int, h: int, h2: int, channels=None):
    """t with an fc2 neuron (one of `channels` when given) reading hidden neuron j alone,
    so that hidden codes h and h2 of neuron j give it two gates; None when none does."""
    T = t.tables()
    zh, ze = int(T.zh), int(T.ze)
    a = np.full(t.w1.shape[0], zh, np.int64)
    b = a.copy()
    a[j], b[j] = h, h2
    for c in spare(t, 1):
        if channels is not None and c not in channels:
            continue
        for w in WEIGHTS:
            for s in range(roms.max_shift(t) + 1):
                u = _reads_alone(t, 1, c, j, h, zh, w, s, ze)
                shown = gate_apart(u, int(excite_codes(u, a)[c]), int(excite_codes(u, b)[c]))
                if shown is not None:
                    return shown
    return None


def requantizer(ip, hit: dict):
    """IntParams that show `hit` (a "distinguished" verdict of tse.sim.requant_check: layer,
    acc, mult, shift, gold and gate codes) at the unit's outputs, or None."""
    layer = hit["layer"]
    free = spare(ip, layer)
    if not free:
        return None
    t = set_neuron(ip, layer, free[0], hit["acc"], hit["mult"], hit["shift"])
    if layer == 1:
        return gate_apart(t, hit["gold"], hit["gate"])
    T = t.tables()
    act = (lambda c: int(T.hlut[c])) if T.hact else (lambda c: int(c))
    h, h2 = act(hit["gold"]), act(hit["gate"])
    if h == h2:
        return None
    return show_hidden(t, free[0], h, h2)


def pooled(ip, channel: int, gold: int, gate: int):
    """IntParams under which a tile whose pooled code of `channel` is gold, not gate, gets
    another gate for `channel` (fc1 neuron j reads `channel` alone, fc2 neuron `channel`
    reads j alone), or None. A mean unit's mutant that changes one pooled code (a
    "distinguished" verdict of tse.sim.mean_check) then shows in that channel's pixels of
    the tile, once frames put the sum there."""
    T = ip.tables()
    zx, z1 = int(T.zx), int(T.z1)
    rest = np.full(ip.w1.shape[1], zx, np.int64)
    a, b = rest.copy(), rest.copy()
    a[channel], b[channel] = gold, gate
    free = spare(ip, 0)
    if not free:
        return None
    j = free[0]
    for w in WEIGHTS:
        for s in range(roms.max_shift(ip) + 1):
            t = _reads_alone(ip, 0, j, channel, gold, zx, w, s, z1)
            h, h2 = int(hidden_codes(t, a)[j]), int(hidden_codes(t, b)[j])
            if h != h2:
                shown = show_hidden(t, j, h, h2, channels=(channel,))
                if shown is not None:
                    return shown
    return None



FINE_LAYERS = (0, 1)
"""The layers fine_words() makes a set for: fc1, fc2."""


def fine_words(ip, layer: int, seed: int):
    """IntParams whose `layer` shows its accumulators' low bits, or None when no neuron of
    it is spare. Every spare neuron of the layer gets all-zero weights, so its accumulator
    is its bias, and M at its field's top with shifts spread from 7 bits finer than one
    accumulator unit a code to the largest shift: in some neuron each bit of the
    accumulator, fraction bits too, is the code's last. Biases are random about the middle
    of the codes' range. The gate table is a ramp (every excite code its own gate). For
    fc1, each spare fc2 neuron c reads hidden neuron c mod hidden alone, one hidden code a
    step of one excite code (excite = hidden), so fc1's codes reach the gates unchanged.
    With the block's own words a one-bit error in the accumulator's fraction moves a code by
    2^-13 or less: no input shows it."""
    rng = np.random.default_rng([seed, layer])
    neurons = spare(ip, layer)
    if not neurons:
        return None
    mb, top = roms.mult_bits(ip), (1 << roms.mult_bits(ip)) - 1
    lo, hi = roms.acc_range(ip.hw, layer)
    shifts = np.arange(max(0, mb - 7), roms.max_shift(ip) + 1)
    T = ip.tables()
    z = int(T.z1 if layer == 0 else T.ze)
    t = ip
    for n, j in enumerate(neurons):
        s = int(shifts[n % len(shifts)])
        lim = max(1, int(120 * 2.0 ** (s - mb)))
        bias = ((128 - z) << s) // top + int(rng.integers(-lim, lim + 1))
        t = set_neuron(t, layer, j, int(np.clip(bias, lo, hi)), top, s)
    if layer == 0:
        frac, hid = ip.hw.bias_frac_bits, t.w1.shape[0]
        for c in spare(t, 1):
            row = np.zeros(hid, np.int64)
            row[c % hid] = 1
            # acc = (zh - ze + h - zh) << frac, x M / 2^(mb + frac): excite = h
            t = set_neuron(t, 1, c, (int(T.zh) - int(T.ze)) << frac, top, mb + frac, row)
    ramp = np.arange(256).astype(ip.sigmoid_lut.dtype)
    return dataclasses.replace(t, sigmoid_lut=ramp)

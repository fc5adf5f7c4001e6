"""Beat-by-beat comparison of the unit's output with golden vectors, and where it went wrong.

Every output beat and its TLAST are compared bit-exactly with the expected codes. A report
names the first mismatch by frame, row, column and channels (the stream's axes), with the
expected and received lanes, the input lanes and gates that produced them, and the stage that
first differs:

  - line_accumulator  the input stopped being accepted before the frame was in;
  - excite_mac        a gate written to the gate memory (probe_gate_*) differs from the
                      vectors' gate stage, or was never written, in the strip of the first
                      wrong output beat or before it (the gate is the excite MAC's output;
                      the line accumulator's tile sums feed it and are not probed, so a wrong
                      tile sum shows here too);
  - tile_broadcaster  every gate up to the first wrong output beat's strip is right, but that
                      beat (or its TLAST) is wrong, missing or extra.

Without probes (a unit exported without --probes) the gates are not seen; given the model's
tile-broadcaster table (product_table[g, x] = numerics.scale(x, g), tse.ref_model.fastpath.
broadcast_table) the vectors' stages locate the stage instead: if every received output of
the first wrong beat's channel in its tile equals the product of its input with one other
gate and not with the vectors' own, the gate is wrong (excite_mac, or the tile sums that feed
it); otherwise the product is (tile_broadcaster). A guess where gates are close: neighbouring
gates often give equal products on small inputs. report["stage_basis"] says which evidence was used: "probes" or "model".

For a frame broken by a wrong TLAST (`defined_beats`) only the beats the contract defines
are compared (docs/cosim.md); every beat's count and TLAST still are.

Pure numpy: the cocotb test and the unit tests of this module share it.
"""
from __future__ import annotations


import numpy as np

from tse.ref_model.geometry import Geometry


Shape = Geometry
"""The stream's geometry as the unit's plan gives it (tse.ref_model.geometry; a vectors
manifest's ["unit"]["geometry"])."""


def split_gate_frames(pulses, shape: Shape) -> list[dict]:
    """Group probe pulses (tile, channel, code) into frames: a frame ends when a (tile,
    channel) it already holds is written again. Returns one {(tile, ch): code} per frame."""
    frames, current = [], {}
    for tile, ch, code in pulses:
        if (tile, ch) in current:
            frames.append(current)
            current = {}
        current[(tile, ch)] = code
    if current:
        frames.append(current)
    return frames


def compare_gates(pulses, expected_gates: np.ndarray, frames: list[int], shape: Shape,
                  defined_tiles: np.ndarray | None = None) -> dict:
    """Probed gates against the vectors' gate stage [N, tiles_y, tiles_x, C] of `frames`.

    defined_tiles: bool [tiles_y, tiles_x], the tiles whose value is checked (every tile's
    gates must still be written once). The report's "bad_strips" holds (frame index, strip)
    of every wrong, missing or extra gate, for the stage verdict."""
    got = split_gate_frames(pulses, shape)
    ty, tx, c = shape.tiles_y, shape.tiles_x, shape.channels
    report = {"pulses": len(pulses), "mismatches": 0, "missing": 0, "extra": 0, "first": None,
              "bad_strips": []}
    bad = set()
    for k, f in enumerate(frames):
        held = got[k] if k < len(got) else {}
        exp = expected_gates[f]
        for t in range(ty * tx):
            check = defined_tiles is None or bool(defined_tiles[t // tx, t % tx])
            for ch in range(c):
                code = held.pop((t, ch), None)
                want = int(exp[t // tx, t % tx, ch])
                if code == want or (code is not None and not check):
                    continue
                bad.add((k, t // tx))
                if code is None:
                    report["missing"] += 1
                else:
                    report["mismatches"] += 1
                if report["first"] is None:
                    report["first"] = {"frame": int(f), "tile_row": t // tx,
                                       "tile_column": t % tx, "channel": ch,
                                       "expected": want, "got": code}
        if held:                       # pulses for tiles or channels that do not exist
            report["extra"] += len(held)
            bad.add((k, 0))
    later = sum(len(g) for g in got[len(frames):])
    if later:                          # more gate frames than frames sent
        report["extra"] += later
        bad.add((len(frames), 0))
    report["bad_strips"] = sorted(bad)
    return report


def compare(shape: Shape, expected: np.ndarray, frames: list[int], got_data: np.ndarray,
            got_last: np.ndarray, *, inputs: np.ndarray | None = None,
            gate_pulses=None, expected_gates: np.ndarray | None = None,
            beats_accepted: int | None = None, defined_tiles: np.ndarray | None = None,
            product_table: np.ndarray | None = None) -> dict:
    """Compare received beats with expected frames.

    expected: uint8 [N, H, W, C] (the vectors' output, or the input for a pass-through);
    frames: which of its frames were sent, in order; got_data uint8 [n, P], got_last bool [n];
    inputs: the vectors' input (for the report); gate_pulses: (tile, channel, code) in probe
    order, with expected_gates [N, tiles_y, tiles_x, C]; beats_accepted: input beats the unit
    took (to tell a stalled input from a lost output); defined_tiles: bool [tiles_y, tiles_x],
    for a broken frame the tiles whose output and gates the contract defines (others: only
    the beat count and TLAST are checked); product_table: uint8 [256, 256], the model's
    output for gate g and input x, to locate the stage without gate probes."""
    bpf, p = shape.beats_per_frame, shape.lanes
    want = np.asarray(expected)[frames].reshape(len(frames) * bpf, p)
    want_last = np.zeros(len(want), bool)
    want_last[bpf - 1::bpf] = True
    n = min(len(want), len(got_data))
    got_data = np.asarray(got_data, np.uint8).reshape(-1, p)
    got_last = np.asarray(got_last, bool)
    data_bad = np.any(want[:n] != got_data[:n], axis=1)
    if defined_tiles is not None:
        data_bad &= np.tile(shape.beats_of_tiles(defined_tiles), len(frames))[:n]
    bad = data_bad | (want_last[:n] != got_last[:n])
    report = {"beats_expected": int(len(want)), "beats_received": int(len(got_data)),
              "mismatches": int(bad.sum()) + abs(len(want) - len(got_data)),
              "first": None, "stage": None, "gates": None}
    if gate_pulses is not None and expected_gates is not None:
        report["gates"] = compare_gates(gate_pulses, expected_gates, frames, shape,
                                        defined_tiles)
    first_bad = int(np.argmax(bad)) if bad.any() else (n if len(want) != len(got_data) else None)
    if first_bad is not None:
        report["first"] = _describe(shape, frames, first_bad, want, want_last, got_data,
                                    got_last, inputs)
    report["stage"] = _stage(report, shape, len(want), beats_accepted)
    report["stage_basis"] = "probes" if report["gates"] is not None else None
    if report["gates"] is None and product_table is not None and report["stage"] \
            and report["stage"] != "line_accumulator":
        f = report["first"]
        if f and f["kind"] == "data" and inputs is not None and expected_gates is not None:
            report["stage"] = stage_from_model(shape, frames, f, got_data, inputs,
                                               expected_gates, product_table)
            report["stage_basis"] = "model"
    report["message"] = message(report)
    return report


def _describe(shape, frames, i, want, want_last, got_data, got_last, inputs) -> dict:
    bpf = shape.beats_per_frame
    k, beat = divmod(i, bpf)
    where = {**shape.locate(beat), "frame": int(frames[k]) if k < len(frames) else None,
             "beat": int(i)}
    if i >= len(want):
        return {**where, "frame": None, "kind": "extra beat",
                "got": got_data[i].tolist(), "got_last": bool(got_last[i])}
    where["tile"] = list(shape.tile_of(where["row"], where["column"]))
    if i >= len(got_data):
        return {**where, "kind": "missing beat", "expected": want[i].tolist(),
                "expected_last": bool(want_last[i])}
    d = {**where, "expected": want[i].tolist(), "got": got_data[i].tolist(),
         "expected_last": bool(want_last[i]), "got_last": bool(got_last[i])}
    lanes = np.nonzero(want[i] != got_data[i])[0]
    d["kind"] = "data" if len(lanes) else "tlast"
    if len(lanes):
        d["lane"] = int(lanes[0])
        d["channel_first_wrong"] = d["channel"] + int(lanes[0])
    if inputs is not None and where["frame"] is not None:
        flat = np.asarray(inputs)[where["frame"]].reshape(-1, shape.lanes)
        d["input"] = flat[beat].tolist()
    return d


def _stage(report, shape: Shape, expected_beats, beats_accepted) -> str | None:
    """The stage that differs first in the unit's own order: a strip's gates are written
    before its beats leave, so a wrong gate in the first wrong beat's strip or before it is
    the excite MAC's; a wrong beat under right gates is the broadcaster's."""
    gates = report["gates"]
    gate_bad = gates is not None and (gates["mismatches"] or gates["missing"] or gates["extra"])
    if not report["mismatches"] and not gate_bad:
        return None
    first = report["first"]
    if first and first["kind"] == "missing beat" and beats_accepted is not None \
            and beats_accepted < expected_beats:
        return "line_accumulator"
    if gates is None:
        return "tile_broadcaster (no gate probe to rule out excite_mac)"
    if first is None:
        return "excite_mac"               # every beat right, a gate wrong
    bpf = shape.beats_per_frame
    k, beat = divmod(first["beat"], bpf)
    strip = shape.locate(beat)["row"] // shape.tile_rows
    if any((gk, gs) <= (k, strip) for gk, gs in gates["bad_strips"]):
        return "excite_mac"
    return "tile_broadcaster"


def stage_from_model(shape: Shape, frames, first: dict, got_data, inputs, expected_gates,
                     product_table) -> str:
    """excite_mac when the first wrong beat's channel, over every received beat of its tile
    in that frame, is the product of its inputs with one gate other than the vectors' and
    not with the vectors' own (the gate is wrong, the product right); else
    tile_broadcaster."""
    bpf, lane = shape.beats_per_frame, first["lane"]
    k = first["beat"] // bpf
    channel = first["channel"] + lane
    ty, tx = first["tile"]
    tiles = np.zeros((shape.tiles_y, shape.tiles_x), bool)
    tiles[ty, tx] = True
    in_tile = shape.beats_of_tiles(tiles) & (np.arange(bpf) % shape.groups
                                             == first["channel"] // shape.lanes)
    beats = np.nonzero(in_tile)[0]
    beats = beats[k * bpf + beats < len(got_data)]
    got = np.asarray(got_data)[k * bpf + beats, lane]
    x = np.asarray(inputs)[first["frame"]].reshape(-1, shape.lanes)[beats, lane]
    want_gate = int(np.asarray(expected_gates)[first["frame"], ty, tx, channel])
    table = np.asarray(product_table)
    if np.array_equal(table[want_gate, x], got):
        return "tile_broadcaster"     # the vectors' gate, applied exactly: the gate is right
    # neighbouring gates often give the same products on small inputs, so this is a guess:
    # a lone wrong product that another gate happens to explain is charged to the gate
    fits = [g for g in range(table.shape[0])
            if g != want_gate and np.array_equal(table[g, x], got)]
    return "excite_mac" if fits else "tile_broadcaster"


def message(r: dict) -> str:
    """One line: how many beats differ, and the first difference by its coordinates."""
    if not r["mismatches"] and r["stage"] is None:
        return f"all {r['beats_expected']} beats match"
    parts = [f"{r['mismatches']} of {r['beats_expected']} beats differ "
             f"({r['beats_received']} received)"]
    f = r["first"]
    if f:
        where = (f"frame {f['frame']}, row {f['row']}, column {f['column']}, channels "
                 f"{f['channel']}..{f['channel'] + len(f.get('expected') or f.get('got')) - 1}")
        if f["kind"] == "data":
            parts.append(f"first at {where}: expected {f['expected']}, got {f['got']} "
                         f"(lane {f['lane']})")
        elif f["kind"] == "tlast":
            parts.append(f"first at {where}: TLAST expected {int(f['expected_last'])}, "
                         f"got {int(f['got_last'])}")
        else:
            parts.append(f"first: {f['kind']} at {where}")
    g = r["gates"]
    if g and (g["mismatches"] or g["missing"] or g["extra"]):
        gf = g["first"]
        text = (f"gates: {g['mismatches']} wrong, {g['missing']} missing, {g['extra']} extra")
        if gf:
            text += (f", first at frame {gf['frame']}, tile ({gf['tile_row']}, "
                     f"{gf['tile_column']}), channel {gf['channel']}: expected "
                     f"{gf['expected']}, got {gf['got']}")
        parts.append(text)
    if r["stage"]:
        basis = " (no probes: from the model's stages)" if r.get("stage_basis") == "model" \
            else ""
        parts.append(f"first differing stage: {r['stage']}{basis}")
    return "; ".join(parts)

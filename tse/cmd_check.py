"""`tse check DIR [--against FILE [--role STAGE]]`: re-verify an artifact directory's checksums
and, given another output file (.npy or hex), report its first mismatch by frame, row, column,
channel and stage. Exit status 1 on any problem or mismatch. A network directory (`tse
vectors --model`) is verified whole: its manifest, then every block's directory."""
from __future__ import annotations

import json


def register(sub):
    p = sub.add_parser("check", help="re-verify a vectors/reference directory; compare a file "
                                     "against one of its stages", description=__doc__)
    p.add_argument("directory", metavar="DIR")
    p.add_argument("--against", metavar="FILE",
                   help="a .npy or hex file to compare with the stage it is named after")
    p.add_argument("--role", metavar="STAGE", help="the stage to compare with (default: the "
                                                   "file's name up to its first dot)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run)


def run(args):
    from tse.ref_model import artifacts, check

    manifest = artifacts.read_manifest(args.directory)   # a one-line error if unusable
    from tse import model_vectors
    if manifest.get("kind") == model_vectors.KIND and not args.against:
        return run_network(args, manifest)
    problems = artifacts.verify(args.directory)
    result = {"directory": args.directory, "problems": problems}
    if args.against:
        result["comparison"] = check.compare(args.directory, args.against, args.role)
    bad = bool(problems) or bool(result.get("comparison", {}).get("mismatches"))
    if args.json:
        print(json.dumps({**result, "ok": not bad}))
    else:
        files = len(manifest["files"])
        print(f"{args.directory}: " + (f"{files} files, checksums match" if not problems
                                        else f"{len(problems)} problem(s)"))
        for p in problems:
            print(f"  {p}")
        if args.against:
            print(check.format_report(result["comparison"]))
    return 1 if bad else 0


def run_network(args, manifest):
    from tse import model_vectors

    found = model_vectors.verify(args.directory)
    bad = {d: p for d, p in found.items() if p}
    if args.json:
        print(json.dumps({"directory": args.directory, "blocks": len(manifest["blocks"]),
                          "skipped": len(manifest.get("skipped", [])), "problems": bad,
                          "ok": not bad}))
    else:
        print(f"{args.directory}: network of {len(manifest['blocks'])} block(s), "
              f"{len(manifest.get('skipped', []))} skipped: "
              + ("every block's checksums match" if not bad else f"{len(bad)} with problems"))
        for d, problems in bad.items():
            for p in problems:
                print(f"  {d or '.'}: {p}")
    return 1 if bad else 0

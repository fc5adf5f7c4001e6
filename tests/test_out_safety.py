"""--out never destroys what tse did not write (issue 14, item 2).

Every command that writes a directory or file is pointed at the current directory, a file, the
root, a foreign non-empty directory and an unwritable place: each answers with one `tse:
error:` line naming the path (exit status 2) and leaves everything as it was. A directory an
earlier run of the command wrote is replaced (or, for the in-place writers, reused)."""
import os
from pathlib import Path

import pytest

from tse.ref_model import artifacts
from tse.ref_model.errors import InputError
from tse.cli import main

SMALL = ["--channels", "8", "--height", "4", "--width", "4", "--tile", "2xW", "--lanes", "8",
         "--reduction", "2"]
# every command with an output path: (argv before the path, the flag, argv after)
COMMANDS = {
    "reference": (["reference", *SMALL], "--out", []),
    "vectors": (["vectors", *SMALL], "--out", []),
    "rtl": (["rtl", *SMALL], "--out", []),
    "sweep": (["sweep", *SMALL, "--quick", "--no-plots", "--workers", "1"], "--out", []),
    "run": (["run", *SMALL, "--sim", "none", "--frames", "1"], "--out", []),
    "cosim": (["cosim", *SMALL, "--sim", "icarus"], "--run-dir", []),
    "network": (["network", "--quick"], "--out", []),
    "buffer": (["buffer", "--network", "regnety-800mf"], "--plot", []),
}
UNWRITABLE = "/proc/tse-out-safety/x"   # not creatable, even for root


def snapshot(root: Path) -> dict:
    """Every path under root with its bytes (files) or None (directories)."""
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None)
            for p in sorted(root.rglob("*"))}


def refused(capsys, argv, path) -> str:
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert err.startswith("tse: error:") and "\n" not in err and "Traceback" not in err, err
    assert str(path) in err, err
    return err


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """The current directory holds a user's file and a user's non-empty directory."""
    (tmp_path / "notes.txt").write_text("mine\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "keep.bin").write_bytes(b"\x00\x01")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("target", [".", "notes.txt", "/", "data", UNWRITABLE])
def test_refused_and_nothing_touched(command, target, workdir, capsys):
    before, flag, after = COMMANDS[command]
    snap = snapshot(workdir)
    refused(capsys, [*before, flag, target, *after], target)
    assert snapshot(workdir) == snap
    assert Path("/").is_dir() and not Path(UNWRITABLE).exists()


def test_replaces_a_directory_it_wrote(workdir, capsys):
    assert main(["reference", *SMALL, "--seed", "1", "--out", "ref"]) == 0
    first = (workdir / "ref" / "input.npy").read_bytes()
    (workdir / "ref" / "stale.txt").write_text("from an earlier run")   # ours: replaced whole
    assert main(["reference", *SMALL, "--seed", "2", "--out", "ref"]) == 0
    assert not (workdir / "ref" / "stale.txt").exists()
    assert (workdir / "ref" / "input.npy").read_bytes() != first
    assert artifacts.read_manifest(workdir / "ref")["seed"] == 2
    assert snapshot(workdir / "data") == {"keep.bin": b"\x00\x01"}


def test_an_empty_directory_is_used(workdir):
    (workdir / "empty").mkdir()
    assert main(["reference", *SMALL, "--out", "empty"]) == 0
    assert (workdir / "empty" / artifacts.MANIFEST).is_file()


def test_rtl_directory_has_a_manifest_and_is_replaced(workdir):
    assert main(["rtl", *SMALL, "--out", "r"]) == 0
    m = artifacts.read_manifest(workdir / "r")
    assert m["kind"] == "rtl" and artifacts.verify(workdir / "r") == []
    assert {"tse_unit.v", "resources.json"} <= {e["path"] for e in m["files"]}
    assert main(["rtl", *SMALL, "--out", "r", "--excite-multipliers", "3"]) == 0
    assert '"excite_multipliers": 3' in (workdir / "r" / "resources.json").read_text()


def test_buffer_plot_replaces_only_its_own_png(workdir, capsys):
    assert main(["buffer", "--network", "regnety-800mf", "--plot", "p.png"]) == 0
    first = (workdir / "p.png").read_bytes()
    assert first.startswith(b"\x89PNG")
    assert main(["buffer", "--network", "efficientnet-b0", "--plot", "p.png"]) == 0
    assert (workdir / "p.png").read_bytes() != first
    (workdir / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n user's picture")
    refused(capsys, ["buffer", "--network", "regnety-800mf", "--plot", "photo.png"],
            "photo.png")
    assert (workdir / "photo.png").read_bytes() == b"\x89PNG\r\n\x1a\n user's picture"


def test_claimed_directories_are_reused_only_by_their_kind(tmp_path):
    d = artifacts.claim_dir(tmp_path / "s", "sweep")
    (d / "points.jsonl").write_text("{}\n")
    assert artifacts.claim_dir(tmp_path / "s", "sweep") == d          # resumed
    assert (d / "points.jsonl").read_text() == "{}\n"
    with pytest.raises(InputError, match="another tse output"):
        artifacts.claim_dir(tmp_path / "s", "network")
    artifacts.check_replaceable(tmp_path / "s")                        # ours: replaceable
    legacy = tmp_path / "old_sweep"                                     # before manifests
    legacy.mkdir()
    (legacy / "points.jsonl").write_text("")
    assert artifacts.claim_dir(legacy, "sweep", legacy_names=("points.jsonl",)) == legacy
    (legacy / "thesis.tex").write_text("")
    os.remove(legacy / artifacts.MANIFEST)
    with pytest.raises(InputError, match="did not write"):
        artifacts.claim_dir(legacy, "sweep", legacy_names=("points.jsonl",))


def test_run_directory_is_claimed_and_rerun(workdir, capsys):
    assert main(["run", *SMALL, "--sim", "none", "--frames", "1", "--out", "o"]) == 0
    assert artifacts.read_manifest(workdir / "o")["kind"] == "run"
    assert main(["run", *SMALL, "--sim", "none", "--frames", "1", "--out", "o"]) == 0
    assert "golden vectors (hw profile)" in capsys.readouterr().out


def test_written_directory_has_the_umask_permissions(tmp_path):
    """An artifact directory gets the usual 0777 & ~umask, not mkdtemp's private 0700."""
    import stat

    import numpy as np

    old = os.umask(0o022)
    try:
        out = artifacts.write_artifacts(tmp_path / "a", {"x": np.zeros(3, np.uint8)},
                                        {"kind": "test"})
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755


def test_written_file_has_the_umask_permissions(tmp_path):
    """A file tse writes whole (a plot, a report) gets 0666 & ~umask, not mkstemp's 0600."""
    import stat

    old = os.umask(0o022)
    try:
        out = artifacts.write_file(tmp_path / "r.txt", lambda p: p.write_bytes(b"tse\n"),
                                   b"tse")
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644

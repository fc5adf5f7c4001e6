"""Artifact directories: .npy files plus a manifest.json that describes and checksums them.

Every tool that writes results for other tools (the quantized reference, golden vectors)
uses this one format. The manifest holds whatever the writer puts in it (configuration,
engine, versions, seed, "quant" parameters) and a "files" list with, per file, its role,
path (relative to the directory), shape, dtype and sha256.

A directory is written whole or not at all: everything goes to a fresh temporary directory
beside the target, which then replaces the target in one rename (the old contents are moved
aside first and removed only after the new directory is in place).

Nothing the project did not write is ever replaced: a target directory must be absent, empty,
or hold a manifest.json of this format (check_replaceable). Outputs that grow in place (a
sweep, a `tse run` directory) claim their directory with such a manifest (claim_dir) so a
later run may reuse or replace it.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .errors import InputError

MANIFEST = "manifest.json"
FORMAT = "tse-artifacts/1"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_artifacts(out_dir, arrays: dict, manifest: dict, extra_files: dict | None = None,
                    fill=None) -> Path:
    """Write arrays (role -> ndarray) as <role>.npy, extra_files (relative path -> (role,
    bytes or a function that writes them to a binary file, for files written piece by
    piece)) and manifest.json listing every file; replace out_dir atomically. fill: a
    function of a Staging (files written in one pass, e.g. strip by strip) returning entries
    for the manifest (written after it ran)."""
    out_dir = check_replaceable(out_dir)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
        os.chmod(tmp, 0o777 & ~_umask())    # mkdtemp's 0700 would become the directory's
    except OSError as e:
        raise InputError(f"out: cannot write {str(out_dir)!r} ({e.strerror})") from None
    try:
        entries = []
        for role, arr in arrays.items():
            arr = np.ascontiguousarray(arr)
            rel = f"{role}.npy"
            np.save(tmp / rel, arr, allow_pickle=False)
            entries.append({"role": role, "path": rel, "shape": list(arr.shape),
                            "dtype": str(arr.dtype), "sha256": sha256_of(tmp / rel)})
        for rel, (role, data) in (extra_files or {}).items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            if callable(data):
                with open(tmp / rel, "wb") as f:
                    data(f)
            else:
                (tmp / rel).write_bytes(data)
            entries.append({"role": role, "path": rel, "sha256": sha256_of(tmp / rel)})
        if fill is not None:
            staging = Staging(tmp)
            try:
                manifest = {**manifest, **(fill(staging) or {})}
            finally:
                staging.close_files()
            entries += staging.entries()
        body = {"format": FORMAT, **manifest, "files": entries}
        (tmp / MANIFEST).write_text(json.dumps(body, indent=2) + "\n")
        check_replaceable(out_dir)        # again: the target may have changed meanwhile
        _swap_into_place(tmp, out_dir)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise InputError(f"out: cannot write {str(out_dir)!r} ({e.strerror or e})") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


class NpyFile:
    """A .npy file of known shape and dtype, filled block by block (the header np.save
    writes; the data written in place with pwrite, so no copy of the whole array is held)."""

    def __init__(self, path, shape, dtype):
        self.path, self.shape, self.dtype = Path(path), tuple(int(n) for n in shape), np.dtype(dtype)
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                  "shape": self.shape}
        with open(self.path, "wb") as f:
            np.lib.format.write_array_header_1_0(f, header)
            self.data_offset = f.tell()
            f.truncate(self.data_offset + int(np.prod(self.shape)) * self.dtype.itemsize)
        self.strides = tuple(int(np.prod(self.shape[i + 1:])) * self.dtype.itemsize
                             for i in range(len(self.shape)))
        self._fd = os.open(self.path, os.O_WRONLY)

    def write(self, start, block) -> None:
        """Put block at index start (one start per leading axis; later axes start at 0)."""
        block = np.asarray(block, self.dtype)
        start = tuple(start) + (0,) * (len(self.shape) - len(start))
        if block.ndim != len(self.shape) or any(
                s + n > total for s, n, total in zip(start, block.shape, self.shape)):
            raise ValueError(f"block {block.shape} at {start} exceeds {self.shape}")
        # The block's rows along the first axis from which every later axis is whole are
        # contiguous in the file: one write each.
        k = next(i for i in range(block.ndim + 1) if block.shape[i + 1:] == self.shape[i + 1:])
        for idx in np.ndindex(block.shape[:k]):
            piece = memoryview(np.ascontiguousarray(block[idx])).cast("B")
            at = self.data_offset + sum(
                (s + j) * st for s, j, st in zip(start, idx + (0,) * (block.ndim - k),
                                                 self.strides))
            while len(piece):
                n = os.pwrite(self._fd, piece, at)
                piece, at = piece[n:], at + n

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Staging:
    """The temporary directory of a write_artifacts(fill=...) call: .npy files filled piece by
    piece and whole arrays, listed in the manifest in the order they were opened."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self._files = []            # (role, NpyFile or None, rel, shape, dtype)

    def npy(self, role: str, shape, dtype) -> NpyFile:
        f = NpyFile(self.directory / f"{role}.npy", shape, dtype)
        self._files.append((role, f, f"{role}.npy", list(f.shape), str(f.dtype)))
        return f

    def save(self, role: str, arr) -> None:
        arr = np.ascontiguousarray(arr)
        np.save(self.directory / f"{role}.npy", arr, allow_pickle=False)
        self._files.append((role, None, f"{role}.npy", list(arr.shape), str(arr.dtype)))

    def close_files(self) -> None:
        for _, f, *_ in self._files:
            if f is not None:
                f.close()

    def entries(self) -> list[dict]:
        """The manifest entries of every file (closed)."""
        return [{"role": role, "path": rel, "shape": shape, "dtype": dtype,
                 "sha256": sha256_of(self.directory / rel)}
                for role, _, rel, shape, dtype in self._files]


def _swap_into_place(tmp: Path, out_dir: Path) -> None:
    old = None
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def replace_dir(tmp, out_dir) -> None:
    """Put the finished directory tmp at out_dir in one rename (an existing out_dir, checked
    with check_replaceable first, is moved aside and removed)."""
    _swap_into_place(Path(tmp), Path(out_dir))


# ---- what may be replaced ---------------------------------------------------------------

ALLOWED_TARGET = ("allowed: a new path, an empty directory, or a directory an earlier tse "
                  f"command wrote (its {MANIFEST} has \"format\": \"{FORMAT}\")")


def _manifest_of(directory: Path) -> dict | None:
    """The directory's manifest if it is one of ours, else None (never raises)."""
    try:
        body = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return body if isinstance(body, dict) and body.get("format") == FORMAT else None


def _owned(directory: Path, legacy_names=()) -> bool:
    """Empty, ours by its manifest, or (written before manifests marked every output)
    holding nothing but names the command itself writes."""
    try:
        names = {e.name for e in os.scandir(directory)}
    except OSError:
        return False
    return (not names or _manifest_of(directory) is not None
            or (bool(legacy_names) and names <= set(legacy_names)))


def _check_target(out_dir, what: str, legacy_names) -> Path:
    given = str(out_dir)
    path = Path(out_dir).expanduser().absolute()
    resolved = path.resolve()
    if resolved.parent == resolved:
        raise InputError(f"{what}: {given!r} is the filesystem root; {ALLOWED_TARGET}")
    if resolved.exists() or path.is_symlink():
        if not resolved.is_dir():
            raise InputError(f"{what}: {given!r} exists and is not a directory; "
                             f"{ALLOWED_TARGET}")
        if not _owned(resolved, legacy_names):
            raise InputError(f"{what}: {given!r} is a non-empty directory tse did not write "
                             f"(no {MANIFEST} of format {FORMAT}); nothing was changed; "
                             f"{ALLOWED_TARGET}")
    ancestor = resolved if resolved.is_dir() else resolved.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    try:   # a probe, removed at once: permissions alone miss read-only file systems
        os.rmdir(tempfile.mkdtemp(prefix=".tse-probe-", dir=ancestor))
    except OSError as e:
        raise InputError(f"{what}: cannot write {given!r} ({str(ancestor)!r}: "
                         f"{e.strerror})") from None
    return resolved


def check_replaceable(out_dir, what: str = "out", legacy_names=()) -> Path:
    """The resolved target of a whole-directory write, or an InputError naming it when the
    write could destroy something tse did not write (a file, a foreign non-empty directory,
    the root, the current directory or one above it) or cannot happen (not writable)."""
    resolved = _check_target(out_dir, what, legacy_names)
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise InputError(f"{what}: {str(out_dir)!r} is the current directory or contains it "
                         "and would be replaced whole; allowed: a directory below it, e.g. "
                         f"{str(Path(out_dir) / 'out')!r}")
    parent = resolved.parent
    if resolved.exists() and not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{what}: cannot replace {str(out_dir)!r} ({str(parent)!r} is not "
                         "writable)")
    return resolved


def claim_dir(out_dir, kind: str, what: str = "out", legacy_names=()) -> Path:
    """Create or reuse a directory that a command fills in place (a resumable sweep, the
    directories of `tse run`): allowed when absent, empty, or an earlier output of the same
    kind; marks it with a manifest of that kind (no files yet) so a later run knows it."""
    path = _check_target(out_dir, what, legacy_names)
    existing = _manifest_of(path) if path.is_dir() else None
    if existing is not None and existing.get("kind") != kind:
        raise InputError(f"{what}: {str(out_dir)!r} holds another tse output (kind "
                         f"{existing.get('kind')!r}), not a {kind} directory; allowed: a new "
                         f"path, an empty directory or an earlier {kind} directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        if existing is None:
            write_manifest(path, {"kind": kind})
    except OSError as e:
        raise InputError(f"{what}: cannot write {str(out_dir)!r} ({e.strerror})") from None
    return path


def write_file(path, write, marker: bytes, what: str = "out") -> Path:
    """Write one output file whole: write(tmp_path) fills a temporary file beside path,
    which then replaces it. An existing file is replaced only if its first 64 KiB hold
    marker (it is a file tse wrote, e.g. a PNG whose text chunk names tse); a directory,
    the root or a foreign file is refused with an InputError and left alone."""
    given = str(path)
    path = Path(path).expanduser().absolute()
    if path.is_dir() or path.resolve().parent == path.resolve():
        raise InputError(f"{what}: {given!r} is a directory; allowed: a file path")
    if path.exists() or path.is_symlink():
        try:
            with open(path, "rb") as f:
                head = f.read(1 << 16)
        except OSError as e:
            raise InputError(f"{what}: cannot read {given!r} ({e.strerror})") from None
        if marker not in head:
            raise InputError(f"{what}: {given!r} exists and tse did not write it; nothing was "
                             "changed; allowed: a new path or a file an earlier tse run wrote")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    except OSError as e:
        raise InputError(f"{what}: cannot write {given!r} ({e.strerror})") from None
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())    # mkstemp's 0600 would become the file's
        write(Path(tmp))
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise InputError(f"{what}: cannot write {given!r} ({e.strerror or e})") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_manifest(directory, manifest: dict, files: dict | None = None) -> None:
    """(Re)write the manifest of a claimed directory, checksumming files (role -> path
    relative to it); written beside and renamed, so a reader never sees half of it."""
    directory = Path(directory)
    entries = [{"role": role, "path": str(rel), "sha256": sha256_of(directory / rel)}
               for role, rel in (files or {}).items()]
    body = {"format": FORMAT, **manifest, "files": entries}
    tmp = directory / f".{MANIFEST}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(body, indent=2) + "\n")
    os.replace(tmp, directory / MANIFEST)


def read_manifest(directory) -> dict:
    """The manifest of an artifact directory; an InputError if absent or not ours."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise InputError(f"directory: {str(directory)!r} has no {MANIFEST}; allowed: a "
                         "directory written by tse reference or tse vectors")
    try:
        body = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise InputError(f"directory: {str(path)!r} is not readable JSON ({e}); allowed: a "
                         f"manifest written by tse (format {FORMAT})") from None
    files = body.get("files") if isinstance(body, dict) else None
    if (not isinstance(files, list) or not all(
            isinstance(f, dict) and isinstance(f.get("path"), str) and "role" in f
            and isinstance(f.get("sha256"), str) for f in files)):
        raise InputError(f"directory: {str(path)!r} is not a tse manifest (a \"files\" list "
                         "of {role, path, sha256}); allowed: a manifest written by tse "
                         f"(format {FORMAT})")
    return body


def load_arrays(directory, roles=None) -> dict:
    """Load the .npy files of a directory by role (all of them unless roles is given)."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    out = {}
    for entry in manifest["files"]:
        if entry["path"].endswith(".npy") and (roles is None or entry["role"] in roles):
            out[entry["role"]] = np.load(directory / entry["path"], allow_pickle=False)
    return out


def verify(directory) -> list[str]:
    """Problems found re-checking every file's sha256, shape and dtype; empty when intact."""
    directory = Path(directory)
    problems = []
    for entry in read_manifest(directory)["files"]:
        path = directory / entry["path"]
        if not path.is_file():
            problems.append(f"{entry['path']} ({entry['role']}): missing")
            continue
        digest = sha256_of(path)
        if digest != entry["sha256"]:
            problems.append(f"{entry['path']} ({entry['role']}): sha256 {digest} does not "
                            f"match the manifest's {entry['sha256']}")
            continue
        if "shape" in entry:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            if list(arr.shape) != entry["shape"] or str(arr.dtype) != entry["dtype"]:
                problems.append(f"{entry['path']} ({entry['role']}): {arr.dtype} "
                                f"{list(arr.shape)} does not match the manifest's "
                                f"{entry['dtype']} {entry['shape']}")
    return problems

"""Fashion-MNIST from Debian's dataset-fashion-mnist package: the IDX loader and a seeded split.

The package (installed by setup.sh next to iverilog and yosys) puts the four gzipped IDX files
of Zalando's Fashion-MNIST (60,000 training and 10,000 test images of 28x28, 10 classes) under
/usr/share/datasets/fashion-mnist; nothing is downloaded at run time. TSE_FASHION_MNIST names
another directory holding the same four files. Images come as float32 [N, 1, 28, 28] in [0, 1].
"""
from __future__ import annotations

import functools
import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tse.ref_model.errors import InputError

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
ENV = "TSE_FASHION_MNIST"
SETUP = "apt-get install dataset-fashion-mnist (bash setup.sh installs it)"
FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
         "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
           "Sneaker", "Bag", "Ankle boot")
_IDX_TYPES = {0x08: np.uint8}


def data_dir() -> Path:
    return Path(os.environ.get(ENV) or DEFAULT_DIR)


def read_idx(path) -> np.ndarray:
    """An unsigned-byte IDX array (gzipped or plain, read-only; each file is read once per
    process); a one-line InputError naming the file when it is missing or not IDX."""
    path = Path(path)
    stat = path.stat() if path.is_file() else None
    return _read_idx(str(path), stat and (stat.st_size, stat.st_mtime_ns))


@functools.lru_cache(maxsize=4)
def _read_idx(name: str, _version) -> np.ndarray:
    path = Path(name)
    if not path.is_file():
        raise InputError(f"fashion-mnist: {str(path)!r} does not exist; install it with "
                         f"{SETUP}, or set {ENV} to a directory with the four IDX .gz files")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise InputError(f"fashion-mnist: cannot read {str(path)!r} ({e}); allowed: a "
                         "(gzipped) IDX file") from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _IDX_TYPES:
        raise InputError(f"fashion-mnist: {str(path)!r} is not an unsigned-byte IDX file "
                         "(magic 0x0000 08 nd); allowed: the Fashion-MNIST IDX files")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    body = raw[4 + 4 * ndim:]
    if len(body) != int(np.prod(dims)):
        raise InputError(f"fashion-mnist: {str(path)!r} holds {len(body)} bytes for shape "
                         f"{dims}; allowed: a whole IDX file")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)      # read-only: shared


def load(split: str, directory=None) -> tuple[np.ndarray, np.ndarray]:
    """(images float32 [N, 1, 28, 28] in [0, 1], labels int64 [N]) of "train" or "test"."""
    if split not in FILES:
        raise InputError(f"split: {split!r} is not allowed; allowed: {', '.join(FILES)}")
    directory = Path(directory) if directory is not None else data_dir()
    images, labels = (read_idx(directory / name) for name in FILES[split])
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise InputError(f"fashion-mnist: {split} images {list(images.shape)} and labels "
                         f"{list(labels.shape)} do not pair up; allowed: [N, 28, 28] and [N]")
    return ((images.astype(np.float32) / 255.0)[:, None], labels.astype(np.int64))


@dataclass
class Split:
    """A seeded training subset, a validation subset (both from the training file) and the
    whole test file."""
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def split(seed: int = 0, train: int = 60_000 - 5_000, val: int = 5_000, directory=None) -> Split:
    """train + val images drawn without replacement from the training file by a seeded
    permutation; the test file whole (the accuracy every report quotes)."""
    x, y = load("train", directory)
    if train < 1 or val < 0 or train + val > len(x):
        raise InputError(f"split: train={train} val={val} is not allowed; allowed: train >= 1, "
                         f"val >= 0, train + val <= {len(x)}")
    order = np.random.default_rng(seed).permutation(len(x))
    tr, va = order[:train], order[train:train + val]
    xt, yt = load("test", directory)
    return Split(x[tr], y[tr], x[va], y[va], xt, yt)

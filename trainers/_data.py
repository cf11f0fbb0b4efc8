"""Datasets as whole tensors: Fashion-MNIST from IDX files, and a teacher-student regression set."""

from __future__ import annotations

import gzip
import hashlib
import os
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

FMNIST_FILES = {
    # name: md5 of the canonical .gz (the checksums torchvision uses)
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
FMNIST_URL = "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"
FMNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530
POOLS = (1, 2, 4, 7, 14)
# Fashion-MNIST by name: the pooling block of each (fmnist14: 14 × 14 = 196 inputs, fmnist7: 49, fmnist4: 16).
FMNIST_DATASETS = {"fmnist": 1, "fmnist14": 2, "fmnist7": 4, "fmnist4": 7}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DataError(ValueError):
    """A dataset file is missing, truncated or corrupt (the message names it)."""


@dataclass
class Dataset:
    """Train and test tensors; ``num_classes`` is None for regression."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int | None

    @property
    def input_dim(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def output_dim(self) -> int:
        return int(self.num_classes) if self.num_classes is not None else int(self.y_train.shape[1])

    def to(self, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> Dataset:
        """A copy on ``device``; inputs (and regression targets) cast to ``dtype``."""

        def cast(t):
            return t.to(device=device, dtype=dtype) if t.dtype.is_floating_point else t.to(device)

        return Dataset(
            self.name, cast(self.x_train), cast(self.y_train), cast(self.x_test), cast(self.y_test), self.num_classes
        )


def read_idx(path: str | Path) -> np.ndarray:
    """Parse an IDX file (optionally gzipped) into an array of its declared shape.

    Raises :class:`DataError` naming the file when it is truncated, too long, or not IDX.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES or ndim == 0:
        raise DataError(f"{path}: not an IDX file (type code {code:#04x}, {ndim} dimensions)")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = int(np.prod(shape)) * dtype.itemsize
    body = len(raw) - header
    if body != expected:
        kind = "truncated" if body < expected else "has trailing bytes"
        raise DataError(f"{path}: {kind}: header says shape {shape} ({expected} bytes), file has {body}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def data_dirs(data_dir: str | Path | None = None) -> list[Path]:
    """Where Fashion-MNIST is looked for, in order."""
    dirs = []
    if data_dir is not None:
        dirs.append(Path(data_dir))
    if os.environ.get("MUTRANSFER_DATA"):
        dirs.append(Path(os.environ["MUTRANSFER_DATA"]))
    dirs.append(cache_dir())
    dirs.append(FMNIST_SYSTEM_DIR)
    return dirs


def cache_dir() -> Path:
    """The user cache directory ($XDG_CACHE_HOME/mutransfer/fashion-mnist)."""
    base = os.environ.get("XDG_CACHE_HOME") or (Path.home() / ".cache")
    return Path(base) / "mutransfer" / "fashion-mnist"


def _file_in(directory: Path, name: str) -> Path | None:
    for cand in (directory / name, directory / name.removesuffix(".gz")):
        if cand.is_file():
            return cand
    return None


def find_fashion_mnist(data_dir: str | Path | None = None) -> Path:
    """The first directory that holds all four Fashion-MNIST files; :class:`DataError` if none."""
    for d in data_dirs(data_dir):
        if all(_file_in(d, n) for n in FMNIST_FILES):
            return d
    tried = ", ".join(str(d) for d in data_dirs(data_dir))
    raise DataError(
        f"Fashion-MNIST not found (looked in {tried}); install Debian's package "
        f"dataset-fashion-mnist, run `mutransfer fetch-data` where the network is up, "
        f"or set MUTRANSFER_DATA to a directory with the four IDX files"
    )


def download_fashion_mnist(dest: str | Path | None = None, timeout: float = 30.0) -> Path:
    """Download the four files from the canonical source into ``dest`` (default: the cache), checking md5."""
    dest = Path(dest) if dest is not None else cache_dir()
    dest.mkdir(parents=True, exist_ok=True)
    for name, md5 in FMNIST_FILES.items():
        target = dest / name
        if target.is_file() and hashlib.md5(target.read_bytes()).hexdigest() == md5:
            continue
        try:
            with urllib.request.urlopen(FMNIST_URL + name, timeout=timeout) as resp:
                payload = resp.read()
        except OSError as exc:
            raise DataError(
                f"cannot download {name} ({exc}); install Debian's package dataset-fashion-mnist or set MUTRANSFER_DATA"
            ) from None
        digest = hashlib.md5(payload).hexdigest()
        if digest != md5:
            raise DataError(f"{name}: md5 {digest} does not match the known {md5}")
        tmp = target.with_suffix(".part")
        tmp.write_bytes(payload)
        tmp.replace(target)
    return dest


def ensure_fashion_mnist(data_dir: str | Path | None = None) -> Path:
    """Find Fashion-MNIST, downloading it into the cache if it is nowhere on disk."""
    try:
        return find_fashion_mnist(data_dir)
    except DataError as missing:
        try:
            return download_fashion_mnist()
        except DataError as failed:
            raise DataError(f"{missing}; download failed: {failed}") from None


def _first_per_class(labels: np.ndarray, per_class: int) -> np.ndarray:
    idx = [np.flatnonzero(labels == c)[:per_class] for c in np.unique(labels)]
    return np.sort(np.concatenate(idx))


def load_fashion_mnist(
    subset: int | None = None,
    test_subset: int | None = None,
    data_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    pool: int = 1,
) -> Dataset:
    """Fashion-MNIST as flat standardised tensors ((28/pool)² inputs, 10 classes).

    With ``pool`` > 1 each image is average-pooled over ``pool`` × ``pool`` blocks (2: 14 × 14 =
    196 inputs, 4: 7 × 7 = 49) and standardised by the mean and standard deviation of the pooled
    pixels of all 60 000 training images, so that the input dimension can be much smaller than
    the width (the regime where SP's optimal learning rate moves like 1/width).

    Args:
        subset: keep the first ``subset // 10`` training images of each class (None: all 60 000).
        test_subset: the same for the 10 000 test images (None: all).
        data_dir: a directory to look in before ``$MUTRANSFER_DATA``, the cache and Debian's.
        device, dtype: where the tensors live and the float type of the inputs.
        pool: side of the average-pooling block (1, 2, 4, 7 or 14).

    Returns:
        A :class:`Dataset`; labels are int64.
    """
    if pool not in POOLS:
        raise ValueError(f"pool={pool!r} is not one of {', '.join(map(str, POOLS))} (divisors of 28)")
    d = find_fashion_mnist(data_dir)
    arrays = {n: read_idx(_file_in(d, n)) for n in FMNIST_FILES}
    xtr, ytr = arrays["train-images-idx3-ubyte.gz"], arrays["train-labels-idx1-ubyte.gz"]
    xte, yte = arrays["t10k-images-idx3-ubyte.gz"], arrays["t10k-labels-idx1-ubyte.gz"]
    for x, y, split in ((xtr, ytr, "train"), (xte, yte, "t10k")):
        if x.ndim != 3 or x.shape[1:] != (28, 28) or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"{d}: {split} images {x.shape} and labels {y.shape} do not match")
    mean, std = FMNIST_MEAN, FMNIST_STD
    if pool > 1:
        side = 28 // pool
        xtr, xte = (
            x.reshape(len(x), side, pool, side, pool).astype(np.float32).mean(axis=(2, 4)) / 255.0 for x in (xtr, xte)
        )
        mean, std = float(xtr.mean()), float(xtr.std())
    else:
        xtr, xte = xtr.astype(np.float32) / 255.0, xte.astype(np.float32) / 255.0
    if subset is not None:
        keep = _first_per_class(ytr, max(1, int(subset) // 10))
        xtr, ytr = xtr[keep], ytr[keep]
    if test_subset is not None:
        keep = _first_per_class(yte, max(1, int(test_subset) // 10))
        xte, yte = xte[keep], yte[keep]

    def images(a):
        t = torch.from_numpy(np.ascontiguousarray(a.reshape(len(a), -1)))
        return ((t - mean) / std).to(device=device, dtype=dtype)

    def labels(a):
        return torch.from_numpy(a.astype(np.int64)).to(device)

    name = "fmnist" if pool == 1 else f"fmnist{28 // pool}"
    return Dataset(name, images(xtr), labels(ytr), images(xte), labels(yte), 10)


def make_teacher_student(
    n_train: int = 1024,
    n_test: int = 1024,
    input_dim: int = 32,
    output_dim: int = 10,
    teacher_width: int = 64,
    seed: int = 0,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float64,
) -> Dataset:
    """Regression set y = W_2 tanh(W_1 x / √d) / √k with x ~ N(0, I_d): Θ(1) targets for theory checks."""
    gen = torch.Generator().manual_seed(int(seed))
    w1 = torch.randn(teacher_width, input_dim, generator=gen, dtype=torch.float64)
    w2 = torch.randn(output_dim, teacher_width, generator=gen, dtype=torch.float64)
    x = torch.randn(n_train + n_test, input_dim, generator=gen, dtype=torch.float64)
    y = torch.tanh(x @ w1.T / input_dim**0.5) @ w2.T / teacher_width**0.5
    return Dataset("teacher", x[:n_train], y[:n_train], x[n_train:], y[n_train:], None).to(device, dtype)


class DatasetLoader(Protocol):
    """``load(subset, test_subset, device, dtype, seed) -> Dataset`` (subset None: the loader's default)."""

    def __call__(
        self, subset: int | None, test_subset: int | None, device: str | torch.device, dtype: torch.dtype, seed: int
    ) -> Dataset: ...


@dataclass(frozen=True)
class DatasetEntry:
    """One registered dataset.

    Attributes:
        name: what ``data.dataset`` says.
        load: builds the :class:`Dataset` (see :class:`DatasetLoader`).
        from_files: read from files (loaded once by the driver and shipped to the trials through
            Ray's object store) rather than generated from the seed where the trial runs.
        check: for a dataset read from files: returns where its files are, or raises
            :class:`DataError` saying what is missing (None: loading it is the check).
    """

    name: str
    load: DatasetLoader
    from_files: bool
    check: Callable[[], str] | None = None


DATASET_REGISTRY: dict[str, DatasetEntry] = {}
# The names of the registered datasets (a live view: a plugin's register_dataset shows here).
DATASETS = DATASET_REGISTRY.keys()


def register_dataset(
    name: str, load: DatasetLoader, *, from_files: bool, check: Callable[[], str] | None = None
) -> DatasetEntry:
    """Make ``load_dataset(name, ...)`` (and ``data.dataset: name`` in a sweep file) use ``load``.

    Args:
        name: the dataset's name.
        load: ``load(subset, test_subset, device, dtype, seed) -> Dataset``.
        from_files: True if it reads files (shipped once through Ray's object store), False if it
            is generated (made on each trial's node from the trial's seed).
        check: optional, for ``from_files``: returns where the files are, raises :class:`DataError`
            if they are missing (a sweep checks it before it starts).

    Returns:
        The registered :class:`DatasetEntry`.
    """
    entry = DatasetEntry(name, load, bool(from_files), check)
    DATASET_REGISTRY[name] = entry
    return entry


def dataset_entry(name: str) -> DatasetEntry:
    """The registered entry of ``name``; ValueError listing the registered names if none."""
    if name not in DATASET_REGISTRY:
        raise ValueError(f"dataset={name!r} is not one of {', '.join(DATASET_REGISTRY)}")
    return DATASET_REGISTRY[name]


def load_dataset(
    name: str,
    subset: int | None = None,
    test_subset: int | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> Dataset:
    """A registered dataset by name (:data:`DATASETS`; the error lists the valid ones)."""
    return dataset_entry(name).load(subset, test_subset, device, dtype, seed)


def _fmnist_loader(pool: int) -> DatasetLoader:
    """The loader of Fashion-MNIST pooled over ``pool`` × ``pool`` blocks (the seed plays no part)."""

    def load(subset, test_subset, device, dtype, seed):
        return load_fashion_mnist(subset, test_subset, device=device, dtype=dtype, pool=pool)

    return load


def _load_teacher(subset, test_subset, device, dtype, seed) -> Dataset:
    """The teacher-student set (1024 train and test points unless ``subset``/``test_subset``)."""
    return make_teacher_student(
        n_train=subset or 1024, n_test=test_subset or 1024, seed=seed, device=device, dtype=dtype
    )


def _where_fashion_mnist() -> str:
    return str(find_fashion_mnist())


for _name, _pool in FMNIST_DATASETS.items():
    register_dataset(_name, _fmnist_loader(_pool), from_files=True, check=_where_fashion_mnist)
register_dataset("teacher", _load_teacher, from_files=False)

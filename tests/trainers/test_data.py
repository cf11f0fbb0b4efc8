"""IDX parsing, dataset discovery and subsets (on small files the tests write)."""

import gzip
import struct

import numpy as np
import pytest
import torch

from trainers import DataError, find_fashion_mnist, load_fashion_mnist, make_teacher_student, read_idx
from trainers._data import FMNIST_FILES


def _idx_bytes(arr: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + b"".join(struct.pack(">I", s) for s in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def test_read_idx_roundtrip_raw_and_gzip(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a.idx").write_bytes(_idx_bytes(arr))
    (tmp_path / "a.idx.gz").write_bytes(gzip.compress(_idx_bytes(arr)))
    for name in ("a.idx", "a.idx.gz"):
        out = read_idx(tmp_path / name)
        assert out.shape == (2, 3, 4)
        np.testing.assert_array_equal(out, arr)


def test_read_idx_big_endian_int32(tmp_path):
    arr = np.array([1, -2, 70000], dtype=">i4")
    raw = struct.pack(">BBBB", 0, 0, 0x0C, 1) + struct.pack(">I", 3) + arr.tobytes()
    (tmp_path / "b.idx").write_bytes(raw)
    np.testing.assert_array_equal(read_idx(tmp_path / "b.idx"), [1, -2, 70000])


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda b: b[:-5], "truncated"),
        (lambda b: b + b"\x00\x01", "trailing bytes"),
        (lambda b: b"\x12\x34" + b[2:], "bad magic"),
        (lambda b: b[:2] + b"\x07" + b[3:], "type code"),
        (lambda b: b[:6], "truncated header"),
    ],
)
def test_read_idx_rejects_corrupt_files(tmp_path, mutate, message):
    arr = np.zeros((4, 5), dtype=np.uint8)
    path = tmp_path / "bad.idx"
    path.write_bytes(mutate(_idx_bytes(arr)))
    with pytest.raises(DataError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_corrupt_gzip(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(_idx_bytes(np.zeros(10, np.uint8)))[:-8])
    with pytest.raises(DataError, match="x.gz"):
        read_idx(path)


def _write_fake_fmnist(d, n_train=40, n_test=20, gz=True):
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    parts = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 255, (n_train, 28, 28)),
        "train-labels-idx1-ubyte.gz": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 255, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte.gz": np.arange(n_test) % 10,
    }
    for name, arr in parts.items():
        raw = _idx_bytes(np.asarray(arr))
        if gz:
            (d / name).write_bytes(gzip.compress(raw))
        else:
            (d / name.removesuffix(".gz")).write_bytes(raw)
    return parts


def test_mutransfer_data_env_is_searched_first(tmp_path, monkeypatch):
    _write_fake_fmnist(tmp_path / "mine", gz=False)
    monkeypatch.setenv("MUTRANSFER_DATA", str(tmp_path / "mine"))
    assert find_fashion_mnist() == tmp_path / "mine"
    data = load_fashion_mnist()
    assert data.x_train.shape == (40, 784) and data.y_train.dtype == torch.int64
    assert data.x_test.shape == (20, 784)


def test_subset_takes_first_n_per_class(tmp_path):
    parts = _write_fake_fmnist(tmp_path / "d")
    data = load_fashion_mnist(subset=20, test_subset=10, data_dir=tmp_path / "d")
    assert len(data.y_train) == 20 and len(data.y_test) == 10
    assert torch.bincount(data.y_train).tolist() == [2] * 10
    # the first two images of class 0 are train rows 0 and 10
    expected = (parts["train-images-idx3-ubyte.gz"][[0, 10]].reshape(2, -1) / 255.0 - 0.2860) / 0.3530
    np.testing.assert_allclose(data.x_train[data.y_train == 0].numpy(), expected, rtol=1e-5, atol=1e-5)


def test_mismatched_images_and_labels_are_an_error(tmp_path):
    d = tmp_path / "d"
    _write_fake_fmnist(d)
    (d / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(np.arange(39) % 10)))
    with pytest.raises(DataError, match="do not match"):
        load_fashion_mnist(data_dir=d)


def test_missing_everywhere_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("MUTRANSFER_DATA", str(tmp_path / "none"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr("trainers._data.FMNIST_SYSTEM_DIR", tmp_path / "nosys")
    with pytest.raises(DataError, match="dataset-fashion-mnist"):
        find_fashion_mnist()


def test_known_checksums_cover_the_four_files():
    assert sorted(FMNIST_FILES) == sorted(
        [
            "train-images-idx3-ubyte.gz",
            "train-labels-idx1-ubyte.gz",
            "t10k-images-idx3-ubyte.gz",
            "t10k-labels-idx1-ubyte.gz",
        ]
    )
    assert all(len(v) == 32 for v in FMNIST_FILES.values())


def test_teacher_student_is_deterministic_and_order_one():
    a, b = make_teacher_student(seed=3), make_teacher_student(seed=3)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_train, b.y_train)
    assert a.num_classes is None and a.output_dim == 10 and a.input_dim == 32
    assert 0.1 < float(a.y_train.std()) < 3.0

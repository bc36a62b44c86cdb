import os
import pickle

import numpy as np
import pytest
import torch

from oppsig.data import cifar10, safe_load_pickle
from oppsig.data.cifar import load_cifar10_arrays
from oppsig.errors import DataFormatError, DataNotFoundError, UnsafePickleError


def write_fake_cifar(root, n=40, batches=("data_batch_1", "test_batch"), seed=0):
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for b in batches:
        obj = {
            b"batch_label": b"fake",
            b"labels": [int(i % 10) for i in range(n)],
            b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
            b"filenames": [f"img{i}.png".encode() for i in range(n)],
        }
        with open(d / b, "wb") as f:
            pickle.dump(obj, f, protocol=3)
    return root


class Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/oppsig_pwned",))


def test_restricted_unpickler_refuses_code(tmp_path):
    p = tmp_path / "data_batch_1"
    with open(p, "wb") as f:
        pickle.dump({b"data": Evil()}, f)
    marker = "/tmp/oppsig_pwned"
    if os.path.exists(marker):
        os.remove(marker)
    with pytest.raises(UnsafePickleError, match="posix.system|os.system"):
        safe_load_pickle(p)
    assert not os.path.exists(marker)


def test_restricted_unpickler_refuses_non_uint8_arrays(tmp_path):
    p = tmp_path / "b"
    with open(p, "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3), dtype=np.float64)}, f)
    with pytest.raises(UnsafePickleError, match="float64"):
        safe_load_pickle(p)


def test_truncated_pickle_is_a_format_error(tmp_path):
    root = write_fake_cifar(tmp_path)
    p = root / "cifar-10-batches-py" / "data_batch_1"
    p.write_bytes(p.read_bytes()[:1000])
    with pytest.raises(DataFormatError, match="data_batch_1"):
        load_cifar10_arrays(root)


def test_fake_cifar_round_trip(tmp_path):
    root = write_fake_cifar(tmp_path, n=40)
    ds = cifar10(root, n=30)
    assert ds.x.shape == (30, 3, 32, 32) and ds.y.dtype == torch.int64
    assert ds.index.tolist() == list(range(30))
    # standardised on this subset
    assert torch.allclose(ds.x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(ds.x.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-3)
    pc = cifar10(root, per_class=2, seed=1)
    assert len(pc) == 20 and np.bincount(pc.y.numpy()).tolist() == [2] * 10
    assert (np.diff(pc.index.numpy()) > 0).all()
    test = cifar10(root, train=False)
    assert len(test) == 40


def test_bad_labels_and_shapes(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    with open(d / "data_batch_1", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 12]}, f)
    with pytest.raises(DataFormatError, match="labels outside"):
        load_cifar10_arrays(tmp_path)
    with open(d / "data_batch_1", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(DataFormatError, match="shape"):
        load_cifar10_arrays(tmp_path)


def test_missing_data_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.delenv("OPPSIG_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(DataNotFoundError) as e:
        cifar10(tmp_path / "nowhere")
    msg = str(e.value)
    assert "cifar-10-python.tar.gz" in msg and "OPPSIG_DATA" in msg and "\n" not in msg


def test_env_var_is_used(tmp_path, monkeypatch):
    root = write_fake_cifar(tmp_path / "d", n=10)
    monkeypatch.setenv("OPPSIG_DATA", str(root))
    assert len(cifar10(n=5)) == 5


@pytest.mark.shared_data
def test_real_cifar_first_5k():
    ds = cifar10(n=5000)
    assert ds.x.shape == (5000, 3, 32, 32) and ds.raw.dtype == torch.uint8
    counts = np.bincount(ds.y.numpy(), minlength=10)
    assert counts.min() > 400 and counts.sum() == 5000

"""The data fingerprint: a digest of the exact inputs, labels and ids, written at training and checked by readers."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from dataclasses import replace

import pytest
import torch

from oppsig.data import opposing_signals
from oppsig.errors import DataMismatchError, OppsigWarning
from oppsig.store import open_run, run_dataset
from oppsig.store.dataset import data_mismatch
from oppsig.store.fingerprint import check_fingerprint, data_fingerprint
from oppsig.training import train
from tests.conftest import ROOT


@pytest.fixture
def data():
    return opposing_signals(n=64, seed=0)


def test_digest_is_stable_across_processes_and_precisions(data):
    here = data_fingerprint(data)["sha256"]
    code = ("from oppsig.data import opposing_signals; from oppsig.store.fingerprint import data_fingerprint; "
            "print(data_fingerprint(opposing_signals(n=64, seed=0))['sha256'])")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           cwd=ROOT).stdout.strip()
    assert other == here and len(here) == 64
    assert data_fingerprint(data.to("cpu", torch.float64))["sha256"] == here  # a float64 run trains on the same data


def test_digest_changes_with_one_pixel_label_id_or_the_order(data):
    base = data_fingerprint(data)["sha256"]
    x = data.x.clone()
    x.view(-1)[17] += 1e-6
    y = data.y.clone()
    y[3] = (y[3] + 1) % data.num_classes
    ids = data.index.clone()
    ids[5] = 10_000
    order = torch.arange(len(data)).roll(1)
    variants = {"pixel": replace(data, x=x), "label": replace(data, y=y), "id": replace(data, index=ids),
                "order": data.take(order)}
    digests = {k: data_fingerprint(v)["sha256"] for k, v in variants.items()}
    assert base not in digests.values() and len(set(digests.values())) == 4


def test_check_refuses_allows_or_warns(data):
    meta = {"fingerprint": {"train": data_fingerprint(data)}}
    assert check_fingerprint(meta, data) is None
    other = opposing_signals(n=64, seed=1)
    with pytest.raises(DataMismatchError) as e:
        check_fingerprint(meta, other, what="the training set")
    msg = str(e.value)
    assert "\n" not in msg and "--allow-other-data" in msg and "$OPPSIG_DATA" in msg
    assert meta["fingerprint"]["train"]["sha256"][:12] in msg and data_fingerprint(other)["sha256"][:12] in msg
    m = check_fingerprint(meta, other, allow_other_data=True)
    assert m["expected"] == meta["fingerprint"]["train"]["sha256"] and m["found"] == data_fingerprint(other)["sha256"]
    with pytest.warns(OppsigWarning, match="no data fingerprint"):
        assert check_fingerprint({}, other) is None  # an older run: read as it is, with a warning


def test_training_writes_the_fingerprint_of_the_data_and_of_the_probed_record(tiny_cfg):
    cfg = tiny_cfg("optim.name=sgd", "train.batch_size=32", "record.probe_n=40", "train.checkpoint_every=0",
                   steps=4)
    res = train(cfg, progress=False)
    run = open_run(res.run_dir)
    fp = json.loads((res.run_dir / "meta.json").read_text())["fingerprint"]
    assert fp["train"]["examples"] == 128 and fp["record"]["examples"] == 40
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matching data: no warning
        examples = run_dataset(run)
    assert data_mismatch(examples) is None and len(examples) == 40
    assert data_fingerprint(examples) == fp["record"]  # the record's column order
    # other data: the same config with another magnitude of the planted signal
    cfg_path = res.run_dir / "config.yaml"
    cfg_path.write_text(cfg_path.read_text().replace("magnitude: 3.0", "magnitude: 2.0"))
    with pytest.raises(DataMismatchError, match=fp["record"]["sha256"][:12]):
        run_dataset(open_run(res.run_dir))
    other = run_dataset(open_run(res.run_dir), allow_other_data=True)
    assert data_mismatch(other)["expected"] == fp["record"]["sha256"]
    # what run_dataset returned is passed on (e.g. to find_signals_in_run) without a second check
    assert data_mismatch(run_dataset(open_run(res.run_dir), other)) == data_mismatch(other)


def test_a_callback_run_given_its_data_set_checks_the_data_detection_gets(tmp_path, data):
    from oppsig.integrations.record import LiveRecord
    from oppsig.config import LiveConfig

    rec = LiveRecord(tmp_path / "cb", index=data.index.numpy(), live=LiveConfig(enabled=False), dataset=data)
    rec.start()
    rec.rec.log(0, data.index, torch.rand(len(data)))
    rec.close()
    run = open_run(tmp_path / "cb")
    assert run.meta["fingerprint"]["train"] == data_fingerprint(data)
    assert data_mismatch(run_dataset(run, data)) is None
    with pytest.raises(DataMismatchError):
        run_dataset(run, opposing_signals(n=64, seed=1))  # same ids, other images

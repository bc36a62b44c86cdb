"""The Hugging Face Trainer, as a user runs it: their own model and data (no oppsig config), SGD in mini-batches a
quarter of the data set, the callback's default record (the sparse batch record plus a probe planned within 10% of
training time); then ``oppsig detect`` from the record alone and with the data."""

import contextlib
import io

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("transformers", reason='needs the hf extra: pip install -e ".[hf]"')
pytest.importorskip("accelerate", reason='needs the hf extra: pip install -e ".[hf]"')

from transformers import Trainer, TrainingArguments  # noqa: E402

from oppsig import detect_run, open_run  # noqa: E402
from oppsig.cli.main import main  # noqa: E402
from oppsig.data import ArrayDataset  # noqa: E402
from oppsig.integrations.hf import OppsigCallback, with_ids  # noqa: E402
from oppsig.report.summary import load_signals  # noqa: E402

from ._planted import (BATCH, CLASSES, LR, STEPS, check_record, mlp, planted_pairs_found,  # noqa: E402
                       planted_vectors, record_alone_pairs)


class Vectors(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "labels": self.y[i]}


class Classifier(torch.nn.Module):
    """A plain module the Trainer can train: ``forward(x, labels)`` returns the loss and the logits."""

    def __init__(self):
        super().__init__()
        self.net = mlp()

    def forward(self, x, labels=None):
        logits = self.net(x)
        return {"loss": F.cross_entropy(logits, labels), "logits": logits}


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory):
    x, y, pairs = planted_vectors()
    root = tmp_path_factory.mktemp("hf")
    args = TrainingArguments(output_dir=str(root / "hf"), max_steps=STEPS, per_device_train_batch_size=BATCH,
                             learning_rate=LR, lr_scheduler_type="constant", optim="sgd", weight_decay=0.0,
                             max_grad_norm=0.0, warmup_steps=0, report_to=[], save_strategy="no",
                             logging_strategy="no", use_cpu=True, remove_unused_columns=False,
                             dataloader_num_workers=0, disable_tqdm=True, seed=0)
    cb = OppsigCallback(root / "mine", num_examples=len(x), labels=y.numpy(), classes=list(CLASSES), live=False)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        Trainer(model=Classifier(), args=args, train_dataset=with_ids(Vectors(x, y)), callbacks=[cb]).train()
    return root / "mine", err.getvalue(), (x, y, torch.arange(len(x)), pairs)


def test_the_default_record_of_a_minibatch_run(planted_run):
    run_dir, printed, _ = planted_run
    check_record(open_run(run_dir), printed)


def test_detect_from_the_record_alone_then_with_the_data(planted_run, capsys):
    run_dir = planted_run[0]
    x, y, ids, pairs = planted_run[2]
    assert main(["detect", str(run_dir), "--no-grids"]) == 0
    out = capsys.readouterr().out
    assert out.count("explanations in words and image grids need the examples' inputs") == 1
    sig = load_signals(run_dir)
    found = planted_pairs_found(sig, pairs)
    assert sig.dataset["inputs"] is False and any(min(f["f1"]) >= 0.9 for f in found), found
    res = detect_run(run_dir, dataset=ArrayDataset(x=x, y=y, index=ids, classes=CLASSES), verify=0, grids=False)
    found = planted_pairs_found(res, pairs)
    assert res.dataset["inputs"] is True and any(f["found"] for f in found), found


def test_detect_from_the_record_alone_reports_a_planted_pair(planted_run, tmp_path):
    found = record_alone_pairs(planted_run[0], tmp_path, planted_run[2][3])
    assert any(f["found"] for f in found), found

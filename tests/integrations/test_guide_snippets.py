"""The callback snippets of the guides the README points to (docs/guide-lightning.md, docs/guide-trainer.md) run as
written on a user's own model and data, and ``oppsig detect runs/mine`` and ``oppsig report runs/mine`` then work,
as the guides say, with no oppsig config and no data set given."""

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from oppsig.cli.main import main

from ._planted import mlp, planted_vectors

DOCS = Path(__file__).resolve().parents[2] / "docs"


def snippet(guide: str) -> str:
    """The code after the change of the guide's first ``diff`` block (its ``+`` and context lines)."""
    block = re.search(r"```diff\n(.*?)```", (DOCS / guide).read_text(), re.S).group(1)
    return "\n".join(line[1:] for line in block.splitlines() if line[:1] in "+ ")


def _detect_and_report(capsys) -> None:
    assert main(["detect", "runs/mine"]) == 0
    out = capsys.readouterr().out
    assert "found" in out and "explanations in words and image grids need the examples' inputs" in out
    assert main(["report", "runs/mine"]) == 0
    assert Path("runs/mine/report.html").exists()


def test_the_lightning_guide_snippet(tmp_path, monkeypatch, capsys):
    L = pytest.importorskip("lightning.pytorch", reason='needs the lightning extra: pip install -e ".[lightning]"')
    monkeypatch.chdir(tmp_path)
    x, y, _ = planted_vectors()
    train_set = torch.utils.data.TensorDataset(torch.arange(len(x)), x, y)
    ns = {"L": L, "F": F, "train_set": train_set}
    exec(snippet("guide-lightning.md"), ns)

    class Runnable(ns["Net"]):  # what the snippet leaves to the user: the layers, forward and the optimiser
        def __init__(self):
            super().__init__()
            self.model = mlp()

        def forward(self, x):
            return self.model(x)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    ns["trainer"].fit(Runnable(), torch.utils.data.DataLoader(train_set, batch_size=32, shuffle=True))
    _detect_and_report(capsys)


def test_the_trainer_guide_snippet(tmp_path, monkeypatch, capsys):
    pytest.importorskip("transformers", reason='needs the hf extra: pip install -e ".[hf]"')
    pytest.importorskip("accelerate", reason='needs the hf extra: pip install -e ".[hf]"')
    from transformers import Trainer, TrainingArguments

    from .test_hf_planted import Classifier, Vectors

    monkeypatch.chdir(tmp_path)
    x, y, _ = planted_vectors()
    ns = {"TrainingArguments": TrainingArguments, "Trainer": Trainer, "model": Classifier(),
          "train_set": Vectors(x, y)}
    exec(snippet("guide-trainer.md"), ns)
    ns["trainer"].train()
    _detect_and_report(capsys)

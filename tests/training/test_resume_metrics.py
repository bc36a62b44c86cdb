"""metrics.jsonl and the record agree: a resume continues only from a checkpoint that metrics.jsonl covers, and
readers warn when metrics.jsonl is missing or shorter than the record."""

import json

import pytest

from oppsig.config import load_config
from oppsig.errors import OppsigWarning
from oppsig.store import open_run
from oppsig.training import train


def _cut_metrics(run_dir, before: int) -> None:
    p = run_dir / "metrics.jsonl"
    rows = [line for line in p.read_text().splitlines() if json.loads(line)["step"] < before]
    p.write_text("".join(r + "\n" for r in rows))


def _resume(run_dir, *overrides):
    return train(load_config(run_dir / "config.yaml", list(overrides)), run_dir=run_dir, resume=True,
                 progress=False)


def test_resume_goes_back_to_a_checkpoint_that_metrics_cover(run_copy):
    """metrics.jsonl cut after step 7 (a kill): the resume starts from the kept checkpoint of step 6, not 24."""
    _cut_metrics(run_copy, 8)
    with pytest.warns(OppsigWarning, match=r"resuming from step_000006.pt at step 6.*metrics.jsonl"):
        _resume(run_copy, "train.steps=30")
    steps = open_run(run_copy).metrics["step"].tolist()
    assert steps == list(range(30))


def test_resume_with_metrics_missing_starts_over_from_step_0(run_copy):
    (run_copy / "metrics.jsonl").unlink()
    with pytest.warns(OppsigWarning, match="metrics.jsonl is missing"):
        _resume(run_copy, "train.steps=26")
    assert open_run(run_copy).metrics["step"].tolist() == list(range(26))


def test_readers_warn_when_metrics_are_missing(run_copy):
    (run_copy / "metrics.jsonl").unlink()
    with pytest.warns(OppsigWarning, match="metrics.jsonl is missing"):
        assert open_run(run_copy).metrics == {}


def test_readers_warn_when_metrics_are_shorter_than_the_record(run_copy):
    _cut_metrics(run_copy, 10)
    with pytest.warns(OppsigWarning, match=r"metrics.jsonl lacks 14 of the 24 recorded steps \(10..23\)"):
        assert len(open_run(run_copy).metrics["step"]) == 10


def test_readers_do_not_warn_on_a_whole_run(recorded_run, recwarn):
    assert len(open_run(recorded_run).metrics["step"]) == 24
    assert not [w for w in recwarn if "metrics.jsonl" in str(w.message)]

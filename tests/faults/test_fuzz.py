"""Fuzzed inputs through the whole command line (fixed seed, a bounded count; the long run is
``benchmarks/fuzz_inputs.py``): no traceback, nothing outside the run directory touched, no wrong
number without an error or a flag, every command ending as expected (other data refused by one line naming
both digests, or flagged with ``--allow-other-data``; a plain resume of a live run equal to the uninterrupted
run). See :mod:`tests.faults.fuzzing`."""

import os

import pytest
from hypothesis import HealthCheck, given, settings

from .fuzzing import KINDS, OTHER_DATA_CMDS, Harness, Plan, plans

COUNT = {"config": 12, "overrides": 12, "damaged": 20, "data": 12, "otherdata": 6, "resume": 6}


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    """The harness hides the data sets (it unsets $OPPSIG_DATA); the tests after it get them back."""
    saved = {k: os.environ.get(k) for k in ("OPPSIG_DATA", "XDG_CACHE_HOME")}
    yield Harness(tmp_path_factory.mktemp("fuzz"))
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.mark.parametrize("kind", KINDS)
def test_fuzzed_inputs_end_cleanly(harness, kind):
    seen = []

    @settings(max_examples=COUNT[kind], derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(plan=plans(kind))
    def check(plan):
        out = harness.run(plan)
        seen.append(out)
        assert not out.problems, (plan, out.err[-500:], out.problems)

    check()
    assert len(seen) >= COUNT[kind] // 2


def test_the_checks_catch_a_wrong_resume_and_unflagged_other_data(harness):
    """The checks can fail: a resume at another lr is not the uninterrupted run, and a "change" that leaves the
    data as they were (so nothing is refused or flagged) reads as other data gone unnoticed."""
    out = harness.run(Plan("resume", ["train", "--resume", "{run}", "--no-progress", "--optim.lr=0.5"],
                           base=("kill", 10), expect="plain"))
    assert out.rc == 0 and out.problems and out.problems[0].startswith("wrong numbers: "), out.problems
    same = ("synthetic", 3.0)  # the magnitude the run trained with
    out = harness.run(Plan("otherdata", ["export", "{run}", "--out", "{run}/ex.csv"], base=same))
    assert out.rc == 0 and out.problems == ["wrong numbers: export on other data exits 0 without --allow-other-data"]
    out = harness.run(Plan("otherdata", ["detect", "--allow-other-data", "{run}", "--verify=0", "--no-grids"],
                           base=same))
    assert out.rc == 0 and out.problems == [
        "wrong numbers: detect --allow-other-data exits 0 without saying the data differ"]


@pytest.mark.parametrize("cmd", list(OTHER_DATA_CMDS))
def test_every_command_refuses_other_data_or_flags_them(harness, cmd):
    """Each reader on other data: refused without --allow-other-data (a CIFAR-like folder with one pixel
    changed), flagged with it (a run whose config plants another magnitude)."""
    refused = harness.run(Plan("otherdata", OTHER_DATA_CMDS[cmd], base=("cifar", "pixel", 7, 100, 1)))
    argv = list(OTHER_DATA_CMDS[cmd])
    argv.insert(2, "--allow-other-data")
    allowed = harness.run(Plan("otherdata", argv, base=("synthetic", 2.5)))
    assert (refused.rc, refused.problems, allowed.rc, allowed.problems) == (2, [], 0, []), (refused, allowed)


@pytest.mark.parametrize("mismatch", [["--model.name=gpt"], ["--data.name=text", "--data.path={root}/t.txt"]])
def test_a_model_that_cannot_read_the_data_is_a_config_error(tmp_path, mismatch, capsys):
    """Found by the long run: a GPT on images (or an image model on text) was an internal error at the first step."""
    from oppsig.cli.main import main

    (tmp_path / "t.txt").write_text("to be or not to be " * 20)
    argv = ["train", "--train.steps=1", "--data.n=24", "--model.widths=[8]", "--no-progress",
            f"--out-dir={tmp_path}/runs", "--name=r", *[a.replace("{root}", str(tmp_path)) for a in mismatch]]
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: ") and "model.name" in err[0], err
    assert not (tmp_path / "runs" / "r").exists()


@pytest.mark.parametrize("setting", ["--model.widths=[8]", "--live.window=9"])
def test_a_resume_with_a_setting_that_may_not_change_is_refused_by_name(harness, setting):
    out = harness.run(Plan("resume", ["train", "--resume", "{run}", "--no-progress", setting], base=("kill", 12),
                           expect="refused"))
    assert out.rc == 2 and not out.problems and setting[2:].split("=")[0] in out.err, out

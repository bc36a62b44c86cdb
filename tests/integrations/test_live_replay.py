"""Live spike events of the callbacks under mini-batches, as a user runs them: their own model and data (1,024
vectors with two planted opposing pairs, tests/integrations/_planted.py), SGD in batches of a quarter of the data
at lr 8, where the loss spikes by itself within a few hundred steps (no spike is forced). Each event names a
group of planted examples from the probe at kept states, records its replay check (from the batches the callback
kept) and goes to the framework's logger."""

import contextlib
import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from oppsig.live import read_events

from ._planted import BATCH, CLASSES, mlp, planted_vectors

LR = 8.0
LIVE = {"window": 11, "state_every": 2, "replay_window": 8, "probe_n": 256}
VERDICTS = ("data", "optimiser state", "undetermined")


def _planted_ids(pairs) -> set[int]:
    return {int(i) for pair in pairs for members in pair for i in members}


def _check_spikes(events, planted) -> list[dict]:
    """The spike events whose groups (with member ids) include one at least 80% planted, each with its replay
    check recorded: the numbers, the verdict, and that it is a callback's approximate replay."""
    spikes = [e for e in events if e["kind"] == "spike"]
    assert spikes
    named = []
    for ev in spikes:
        assert ev["groups"] and all(g["ids"] and g["size"] == len(g["ids"]) for g in ev["groups"])
        rp = ev["replay"]
        assert rp["approximate"] is True and "per-example loss" in rp["replays"]
        assert rp["peak_step"] == ev["step"] + 1 and rp["steps"] == rp["peak_step"] - rp["start_step"] > 0
        assert np.isfinite([rp["rise"], rp["removed"], rp["removed_control"]]).all()
        assert rp["drift"] < 1e-6  # the module trains on the mean of the loss the replay uses: the replay is exact
        assert ev["verdict"] == rp["verdict"] in VERDICTS and "replay" in ev["message"]
        if any(len(set(g["ids"]) & planted) >= 0.8 * len(g["ids"]) for g in ev["groups"]):
            named.append(ev)
    assert named, [e["message"] for e in spikes]
    return named


def test_lightning_spike_names_a_planted_group_checks_it_by_replay_and_logs_it(tmp_path):
    L = pytest.importorskip("lightning.pytorch", reason='needs the lightning extra: pip install -e ".[lightning]"')
    from lightning.pytorch.loggers import Logger

    from oppsig.integrations.lightning import OppsigCallback

    from .test_lightning import Net

    class Seen(Logger):
        """A logger that keeps what it is given (scalars, and text through ``experiment.add_text``)."""

        name, version = "seen", 0

        def __init__(self):
            super().__init__()
            self.metrics, self.texts = [], []

        @property
        def experiment(self):
            return self

        def add_text(self, tag, text, step):
            self.texts.append((step, tag, text))

        def log_metrics(self, metrics, step=None):
            self.metrics.append((step, dict(metrics)))

        def log_hyperparams(self, *args, **kwargs):
            pass

    class Params(L.Callback):
        """The parameters at the end of each step, seen by a callback before or after oppsig's."""

        def __init__(self):
            self.at = {}

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            self.at[trainer.global_step] = torch.cat([p.detach().flatten().clone() for p in module.parameters()])

    x, y, pairs = planted_vectors()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.arange(len(x)), x, y), batch_size=BATCH,
                                         shuffle=True, generator=torch.Generator().manual_seed(0))
    cb = OppsigCallback(tmp_path / "mine", num_examples=len(x), labels=y.numpy(), classes=list(CLASSES), live=LIVE,
                        budget=0)  # no probe in the record: the spike's probe is the live session's own
    seen, before, after = Seen(), Params(), Params()
    with contextlib.redirect_stderr(io.StringIO()):
        L.Trainer(max_steps=460, accelerator="cpu", devices=1, logger=seen, enable_checkpointing=False,
                  enable_progress_bar=False, enable_model_summary=False,
                  callbacks=[before, cb, after]).fit(Net(mlp(), lr=LR), loader)
    named = _check_spikes(read_events(tmp_path / "mine"), _planted_ids(pairs))
    ev = named[0]
    logged = dict(seen.metrics)[ev["step"]]
    assert logged["oppsig/spike_rise"] == pytest.approx(ev["rise"])
    assert logged["oppsig/replay_removed"] == pytest.approx(ev["replay"]["removed"])
    assert logged["oppsig/replay_removed_control"] == pytest.approx(ev["replay"]["removed_control"])
    assert (ev["step"], "oppsig/spike", ev["message"]) in seen.texts
    # the proof works on copies: the module's parameters are the same after it as before
    assert all(torch.equal(before.at[s], after.at[s]) for s in before.at) and ev["step"] + 1 in before.at


def test_trainer_spike_names_a_planted_group_checks_it_by_replay_and_logs_it(tmp_path):
    pytest.importorskip("transformers", reason='needs the hf extra: pip install -e ".[hf]"')
    pytest.importorskip("accelerate", reason='needs the hf extra: pip install -e ".[hf]"')
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from oppsig.integrations.hf import OppsigCallback, with_ids

    from .test_hf_planted import Classifier, Vectors

    class Seen(TrainerCallback):
        """A reporting integration (TensorBoard, W&B, ...): the Trainer places them before the callbacks passed."""

        def __init__(self):
            self.logs = []

        def on_log(self, args, state, control, logs=None, **kw):
            self.logs.append((state.global_step, dict(logs)))

    x, y, pairs = planted_vectors()
    args = TrainingArguments(output_dir=str(tmp_path / "hf"), max_steps=340, per_device_train_batch_size=BATCH,
                             learning_rate=LR, lr_scheduler_type="constant", optim="sgd", weight_decay=0.0,
                             max_grad_norm=0.0, warmup_steps=0, report_to=[], save_strategy="no",
                             logging_strategy="no", use_cpu=True, remove_unused_columns=False,
                             dataloader_num_workers=0, disable_tqdm=True, seed=0)
    cb = OppsigCallback(tmp_path / "mine", num_examples=len(x), labels=y.numpy(), classes=list(CLASSES), live=LIVE)
    seen = Seen()
    trainer = Trainer(model=Classifier(), args=args, train_dataset=with_ids(Vectors(x, y)), callbacks=[seen, cb])
    trainer.callback_handler.callbacks.insert(0, trainer.pop_callback(OppsigCallback))  # as the guide says
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        trainer.train()
    named = _check_spikes(read_events(tmp_path / "mine"), _planted_ids(pairs))
    ev = named[0]
    logged = dict(seen.logs)[ev["step"] + 1]  # the Trainer logs a step after its update, as global_step + 1
    assert logged["oppsig/spike_rise"] == pytest.approx(ev["rise"])
    assert logged["oppsig/replay_removed"] == pytest.approx(ev["replay"]["removed"])
    assert logged["oppsig/replay_removed_control"] == pytest.approx(ev["replay"]["removed_control"])
    history = {h["step"]: h for h in trainer.state.log_history}
    assert history[ev["step"] + 1]["oppsig/spike_rise"] == pytest.approx(ev["rise"])


def test_no_replay_with_gradient_accumulation_is_said_in_the_event(tmp_path):
    """A spike is forced (the module trains on one step's losses times 8, as in tests/integrations/test_lightning.py):
    an update made of two batches is not replayed, and the event's message says why."""
    L = pytest.importorskip("lightning.pytorch", reason='needs the lightning extra: pip install -e ".[lightning]"')
    from oppsig.integrations.lightning import OppsigCallback

    from .test_lightning import Net

    x, y, _ = planted_vectors()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.arange(len(x)), x, y), batch_size=64,
                                         shuffle=True, generator=torch.Generator().manual_seed(0))
    cb = OppsigCallback(tmp_path / "acc", num_examples=len(x), live=LIVE)
    with contextlib.redirect_stderr(io.StringIO()):
        L.Trainer(max_steps=26, accumulate_grad_batches=2, accelerator="cpu", devices=1, logger=False,
                  enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                  callbacks=[cb]).fit(Net(mlp(), lr=0.1, spike_at=24), loader)
    ev = next(e for e in read_events(tmp_path / "acc") if e["kind"] == "spike")
    assert ev["step"] == 24 and ev["replay"] is None and ev["replay_note"].startswith("an update made of several")
    assert ev["message"].endswith("no replay (an update made of several batches or processes (gradient "
                                  "accumulation, DDP))")


def test_lightning_replay_clips_the_gradients_as_the_trainer_does(tmp_path):
    """A spike is forced (the module trains on one step's losses times 8) under ``gradient_clip_val``: the replay
    as trained ends where training did, so it clipped as Lightning did."""
    L = pytest.importorskip("lightning.pytorch", reason='needs the lightning extra: pip install -e ".[lightning]"')
    from oppsig.integrations.lightning import OppsigCallback

    from .test_lightning import Net

    x, y, _ = planted_vectors()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.arange(len(x)), x, y), batch_size=128,
                                         shuffle=True, generator=torch.Generator().manual_seed(0))
    cb = OppsigCallback(tmp_path / "clip", num_examples=len(x), live=LIVE, budget=0)
    with contextlib.redirect_stderr(io.StringIO()):
        L.Trainer(max_steps=26, gradient_clip_val=0.05, accelerator="cpu", devices=1, logger=False,
                  enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                  callbacks=[cb]).fit(Net(mlp(), lr=0.5, spike_at=24), loader)
    ev = next(e for e in read_events(tmp_path / "clip") if e["kind"] == "spike")
    assert ev["step"] == 24 and ev["replay"]["steps"] > 0 and ev["replay"]["drift"] < 1e-6
    assert cb.replayer.clip == (0.05, "norm")


@pytest.mark.parametrize("max_bytes", [2**30, 0], ids=["batches kept", "batches loaded again by id"])
def test_batch_replayer_drops_ids_and_measures_examples_by_id(max_bytes):
    from oppsig.integrations.replay import BatchReplayer, ExampleSource, ReplayUnavailable

    torch.manual_seed(0)
    x, y = torch.randn(12, 3), torch.randint(0, 2, (12,))
    ids = torch.arange(100, 112)
    ds = torch.utils.data.TensorDataset(ids, x, y)
    ce = lambda m, b: F.cross_entropy(m(b[0]), b[1], reduction="none")  # noqa: E731
    rp = BatchReplayer(2, ce, ExampleSource(ds, 0, strip=lambda b: (b[1], b[2])), max_bytes=max_bytes)
    m = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(m.parameters(), lr=0.5)
    start = {k: v.clone() for k, v in m.state_dict().items()}
    for step, rows in enumerate((slice(0, 6), slice(6, 12))):
        rp.step_start(m)
        rp.before_update(opt)
        rp.keep(step, ids[rows], (x[rows], y[rows]))
        opt.zero_grad()
        ce(m, (x[rows], y[rows])).mean().backward()
        opt.step()
    assert all((k.batch is None) == (max_bytes == 0) for k in rp.kept.values())
    sm, so = rp.scratch(m, opt)
    sm.load_state_dict(start)
    rp.run(sm, so, 0, 2)  # as trained: the same parameters
    assert all(torch.equal(a, b) for a, b in zip(sm.parameters(), m.parameters()))
    for how, divisor in (("zero", 6), ("mean", 3)):  # the batch's sum over its full size, or the mean of the rest
        sm.load_state_dict(start)
        rp.run(sm, so, 0, 2, drop=np.array([100, 101, 102]), how=how)  # step 0 without three of its examples
        ref = torch.nn.Linear(3, 2)
        ref.load_state_dict(start)
        ropt = torch.optim.SGD(ref.parameters(), lr=0.5)
        for rows, d in ((slice(3, 6), divisor), (slice(6, 12), 6)):
            ropt.zero_grad()
            (ce(ref, (x[rows], y[rows])).sum() / d).backward()
            ropt.step()
        assert all(torch.allclose(a, b) for a, b in zip(sm.parameters(), ref.parameters())), how
    want = ce(m, (x[[5, 0]], y[[5, 0]])).detach().numpy()
    np.testing.assert_allclose(rp.losses(m, [105, 100]), want, rtol=1e-6)
    with pytest.raises(ReplayUnavailable, match="not kept"):
        rp.run(sm, so, 0, 3)
    with pytest.raises(ReplayUnavailable, match="lacks"):
        rp.losses(m, [7])

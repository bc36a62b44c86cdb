"""The Hugging Face Trainer callback, trained for real on CPU with a tiny randomly initialised GPT-2 (no download):
the record against the Trainer's own forward, probe, actions, and (with tinyshakespeare) detect and report."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip("transformers", reason='needs the hf extra: pip install -e ".[hf]"')
pytest.importorskip("accelerate", reason='needs the hf extra: pip install -e ".[hf]"')

from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback, TrainingArguments  # noqa: E402

from oppsig import open_run  # noqa: E402
from oppsig.integrations.hf import OppsigCallback, sequence_losses, with_ids  # noqa: E402
from oppsig.live import read_events  # noqa: E402

from ._accumulation import batch_matrix, check_accumulated  # noqa: E402


class Seqs(torch.utils.data.Dataset):
    def __init__(self, x):
        self.x = x

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"input_ids": self.x[i], "labels": self.x[i]}


def _gpt(vocab, t, seed=0):
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=vocab, n_positions=t, n_embd=32, n_layer=1, n_head=2, resid_pdrop=0.0,
                     embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(cfg)


def _args(tmp_path, steps, batch, lr=0.05, **kw):
    return TrainingArguments(output_dir=str(tmp_path / "hf"), max_steps=steps, per_device_train_batch_size=batch,
                             learning_rate=lr, lr_scheduler_type="constant", optim="sgd", weight_decay=0.0,
                             max_grad_norm=0.0, warmup_steps=0, report_to=[], save_strategy="no",
                             logging_strategy="no", use_cpu=True, remove_unused_columns=False,
                             dataloader_num_workers=0, disable_tqdm=True, seed=0, **kw)


class Watch(TrainerCallback):
    """Parameters at each step's start, and the training forwards' ids and reference losses."""

    def __init__(self):
        self.params, self.lr = {}, {}

    def on_step_begin(self, args, state, control, model=None, **kw):
        self.params[state.global_step] = torch.cat([p.detach().flatten().clone() for p in model.parameters()])

    def on_step_end(self, args, state, control, optimizer=None, **kw):
        pass


def _random_tokens(n=64, t=16, vocab=20, seed=0):
    return torch.randint(0, vocab, (n, t), generator=torch.Generator().manual_seed(seed))


def _watch_forwards(model, step=lambda: None) -> list:
    """``[step(), ids, reference per-example losses]`` of each training forward, from hooks registered before the
    callback's (so they see the ids)."""
    seen = []

    def pre(module, args, kwargs):
        if module.training:
            seen.append([step(), kwargs["oppsig_id"].clone()])

    def post(module, args, kwargs, out):
        if module.training:
            lg, lb = out.logits[:, :-1].detach(), kwargs["labels"][:, 1:]
            seen[-1].append(F.cross_entropy(lg.reshape(-1, lg.shape[-1]), lb.reshape(-1), reduction="none")
                            .reshape(lb.shape).mean(1))

    model.register_forward_pre_hook(pre, with_kwargs=True)
    model.register_forward_hook(post, with_kwargs=True)
    return seen


def test_records_the_trainers_own_forward(tmp_path):
    x = _random_tokens()
    model = _gpt(20, 16)
    seen = _watch_forwards(model)
    cb = OppsigCallback(tmp_path / "run", num_examples=len(x), live=False, budget=0)  # no probe forwards
    Trainer(model=model, args=_args(tmp_path, 6, 16), train_dataset=with_ids(Seqs(x)), callbacks=[cb]).train()
    run = open_run(tmp_path / "run")
    steps, L = batch_matrix(run)  # mini-batches of 16 of 64: the sparse batch record
    assert steps == list(range(6)) and len(seen) == 6 and run.rows == 0
    for t, (_, ids, ref) in enumerate(seen):
        np.testing.assert_allclose(L[t, ids.numpy()], ref.numpy(), rtol=1e-5)
        assert np.isnan(np.delete(L[t], ids.numpy())).all()


def test_gradient_accumulation_is_one_step(tmp_path):
    x = _random_tokens()
    cb = OppsigCallback(tmp_path / "run", num_examples=len(x), live=False)
    Trainer(model=_gpt(20, 16), args=_args(tmp_path, 3, 8, gradient_accumulation_steps=4),
            train_dataset=with_ids(Seqs(x)), callbacks=[cb]).train()
    steps, L = batch_matrix(open_run(tmp_path / "run"))
    assert L.shape == (3, 64) and (np.isfinite(L).sum(1) == 32).all()


def test_gradient_accumulation_records_each_micro_batch_under_its_update(tmp_path):
    x = _random_tokens(n=48)
    model = _gpt(20, 16)
    trainer = []
    micro = _watch_forwards(model, lambda: trainer[0].state.global_step)
    cb = OppsigCallback(tmp_path / "run", num_examples=len(x), live=False, budget=0)  # no probe forwards
    # 48 sequences, micro-batches of 8, 2 per update: 3 updates an epoch; 5 updates cross into the second epoch
    trainer.append(Trainer(model=model, args=_args(tmp_path, 5, 8, gradient_accumulation_steps=2),
                           train_dataset=with_ids(Seqs(x)), callbacks=[cb]))
    trainer[0].train()
    assert [m[0] for m in micro] == [t for t in range(5) for _ in range(2)]
    check_accumulated(tmp_path / "run", [tuple(m) for m in micro], n_steps=5, per_step=16)


def test_probe_every_k_steps(tmp_path):
    x = _random_tokens()
    probe = torch.utils.data.DataLoader(with_ids(Seqs(x)), batch_size=32)
    cb = OppsigCallback(tmp_path / "run", num_examples=len(x), live=False, probe=probe, probe_every=4,
                        record_batches=False)
    Trainer(model=_gpt(20, 16), args=_args(tmp_path, 9, 16), train_dataset=with_ids(Seqs(x)), callbacks=[cb]).train()
    run = open_run(tmp_path / "run")
    assert list(run.steps) == [0, 4, 8] and np.isfinite(np.asarray(run.losses[:])).all()


@pytest.mark.parametrize("action", ["skip_update", "lower_lr"])
def test_actions_at_a_planted_spike(tmp_path, action):
    x = _random_tokens()
    spike, calls = 26, [0]

    def planted(logits, labels):  # the recorded losses spike at one step (the training loss does not)
        calls[0] += 1
        out = sequence_losses(logits, labels)
        return out * 8 if calls[0] == spike + 1 else out

    live = {"window": 11, "skip_update": True} if action == "skip_update" else \
        {"window": 11, "lr_factor": 0.5, "lr_steps": 2}
    cb = OppsigCallback(tmp_path / "run", num_examples=len(x), live=live, per_example_loss=planted)
    watch = Watch()
    Trainer(model=_gpt(20, 16), args=_args(tmp_path, 32, 64), train_dataset=with_ids(Seqs(x)),
            callbacks=[cb, watch]).train()
    ev = read_events(tmp_path / "run")
    assert [e["step"] for e in ev if e["kind"] == "spike"] == [spike]
    if action == "skip_update":
        assert torch.equal(watch.params[spike + 1], watch.params[spike])
        assert not torch.equal(watch.params[spike], watch.params[spike - 1])
    else:
        lrs = open_run(tmp_path / "run").metrics["lr"]
        assert list(lrs[spike : spike + 4]) == pytest.approx([0.05, 0.025, 0.025, 0.05])
    assert any(e["kind"] == action for e in ev)


def test_batch_without_ids_is_a_clear_error(tmp_path):
    from oppsig.errors import ConfigError

    x = _random_tokens()
    cb = OppsigCallback(tmp_path / "run", num_examples=len(x))
    with pytest.raises(ConfigError, match="with_ids"):
        Trainer(model=_gpt(20, 16), args=_args(tmp_path, 2, 16), train_dataset=Seqs(x), callbacks=[cb]).train()


@pytest.mark.slow
@pytest.mark.shared_data("tinyshakespeare")
def test_tiny_gpt_on_tinyshakespeare_then_detect_and_report(tmp_path):
    """A 1-layer GPT-2 from a config (random init) on 256 tinyshakespeare sequences, full-batch SGD, then detect and
    report."""
    from oppsig.config import load_config
    from oppsig.data import build_datasets
    from oppsig.experiments.detect import detect_run
    from oppsig.report import write_report

    cfg = load_config(None, ["data.name=text", "data.n=256", "data.block_size=32", "model.name=gpt",
                             "train.steps=60", "optim.lr=0.5", "name=hf-gpt"])
    train_set, _ = build_datasets(cfg.data, seed=cfg.seed)
    vocab = int(max(train_set.x.max(), train_set.y.max())) + 1
    model = _gpt(vocab, 32)
    # labels = inputs: GPT-2 shifts them, so each sequence's loss is that of oppsig's (x -> next char) record
    ds = with_ids(Seqs(train_set.x.long()))
    cb = OppsigCallback(tmp_path / "run", index=train_set.index.numpy(), config=cfg.to_dict(),
                        sharpness_every=30, sharpness_batch={"input_ids": train_set.x[:64].long(),
                                                             "labels": train_set.x[:64].long()})
    Trainer(model=model, args=_args(tmp_path, cfg.train.steps, len(ds), lr=cfg.optim.lr), train_dataset=ds,
            callbacks=[cb]).train()
    run = open_run(tmp_path / "run")
    assert run.losses.shape == (60, 256) and np.isfinite(np.asarray(run.losses[:])).all()
    assert np.isfinite(run.metrics["sharpness"]).sum() == 2
    res = detect_run(tmp_path / "run", verify=0, grids=False)
    assert len(res.groups) > 0
    html = write_report([str(tmp_path / "run")]).read_text()
    assert "group" in html.lower()

"""Settings changed when a run is resumed: which may change mid-run, and the run's history of them.

``config.yaml`` stays the run's first config; each resume that changes a setting adds
``{"step": s, "changes": {key: value}}`` to ``meta.json``'s ``config_changes`` (the step from which the
new values are in force). :meth:`~oppsig.store.reader.Run.config_at` gives the config in force at a step;
replay, ``oppsig sharpness`` and the report use it.

Only settings that leave the run's earlier steps meaningful may change (:data:`MUTABLE`): the lr, the
number of steps, goals, checkpoints, evaluation, physical batches, and the curvature measurements. Others
(data, model, seed, dtype, the optimiser and its other settings, the record, live attribution) are
refused with their names; ``name``, ``out_dir``, ``threads`` and ``data.dir`` are not settings of the run's steps
(:data:`IGNORED`).

Example:
    >>> diff_configs({"optim": {"lr": 0.1, "name": "gd"}}, {"optim": {"lr": 0.05, "name": "gd"}})
    {'optim.lr': 0.05}
    >>> refused({"optim.lr": 0.05, "model.widths": [8]})
    ['model.widths']
"""

from __future__ import annotations

import os
from pathlib import Path

from ..config import Config, from_dict
from ..errors import ConfigError, StoreError
from ..store.format import CONFIG, META, STORE, read_json

MUTABLE = ("optim.lr", "optim.warmup_steps", "train.steps", "train.checkpoint_every", "train.keep_checkpoints",
           "train.eval_every", "train.loss_goal", "train.acc_goal", "train.physical_batch_size", "record.chunk_steps",
           "curvature.")
"""Keys (or ``section.`` prefixes) that a resume may change (``train.physical_batch_size`` only splits the same
gradient into other pieces; ``record.chunk_steps`` only sizes the writer's buffer)."""

IGNORED = ("name", "out_dir", "threads", "data.dir")
"""Keys that are not settings of the run's steps (where it is written, CPU threads, where its data are read
from: the data fingerprint in meta.json checks that they are the same data); a resume takes them as given."""


def diff_configs(old: dict, new: dict, prefix: str = "") -> dict:
    """``{dotted key: new value}`` of every key whose value differs between two config dicts."""
    out: dict = {}
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out.update(diff_configs(a, b, f"{prefix}{k}."))
        elif _plain(a) != _plain(b):
            out[f"{prefix}{k}"] = b
    return out


def _plain(v):
    return list(v) if isinstance(v, tuple) else v


def refused(changes: dict) -> list[str]:
    """The keys of ``changes`` that may not change mid-run."""
    return [k for k in changes if not any(k == m or (m.endswith(".") and k.startswith(m)) for m in MUTABLE)]


def first_config(run_dir: str | os.PathLike) -> dict:
    """The run's first config as a dict: the store's (written when the run started), else config.yaml's.

    Raises:
        StoreError: the run has neither.
    """
    import yaml
    import zarr

    rd = Path(run_dir)
    if (rd / STORE).exists():
        try:
            cfg = dict(zarr.open_group(str(rd / STORE), mode="r").attrs).get("config")
        except (KeyError, ValueError, OSError, TypeError):
            cfg = None
        if isinstance(cfg, dict) and "optim" in cfg:
            return from_dict(cfg).to_dict()
    if not (rd / CONFIG).is_file():
        raise StoreError(f"cannot resume {rd}: it has no {CONFIG} and no store to read the run's config from; restore "
                         f"{CONFIG} from a backup, or start over with --overwrite")
    return from_dict(yaml.safe_load((rd / CONFIG).read_text(encoding="utf-8"))).to_dict()


def history(run_dir: str | os.PathLike) -> list[dict]:
    """``meta.json``'s ``config_changes``: ``[{"step": s, "changes": {key: value}}, ...]`` in step order."""
    p = Path(run_dir) / META
    return list(read_json(p).get("config_changes", [])) if p.exists() else []


def config_in_force(first: dict, changes: list[dict], step: int) -> Config:
    """The config in force at ``step``: ``first`` with every change made at or before ``step``."""
    cfg = from_dict(first)
    merged = {k: v for c in changes if c["step"] <= step for k, v in c["changes"].items()}
    return cfg.replace(merged) if merged else cfg


AUTOMATIC = {"record.every": None, "record.probe_n": None, "record.mode": "auto"}
"""Record settings left to be chosen when a run starts (:func:`~oppsig.training.build.resolve_record`): the run's
config.yaml holds what was chosen, and a config that leaves them automatic keeps those on resume."""


def resumed_config(run_dir: str | os.PathLike, cfg: Config, asked: tuple[str, ...] = ()) -> Config:
    """The config a resume of ``run_dir`` runs with: the settings in force at the run's end, with what ``cfg``
    (config.yaml as it is now, plus overrides) sets apart from the run's first config, and ``cfg``'s value of
    every dotted key in ``asked`` (the overrides given for this resume: a value asked for explicitly is used even
    where it equals the first config's, e.g. an lr set back to its first value after an earlier change).

    Raises:
        ConfigError: a setting that may not change mid-run is changed (named, with the fix).
    """
    first = first_config(run_dir)
    now = cfg.to_dict()
    changes = {k: v for k, v in diff_configs(first, now).items()
               if k not in IGNORED and not (k in AUTOMATIC and v == AUTOMATIC[k])}
    latest = config_in_force(first, history(run_dir), 2**62)
    explicit = {k: _at(now, k) for k in asked if k not in IGNORED}
    changes.update({k: v for k, v in explicit.items() if _plain(v) != _plain(_at(latest.to_dict(), k))})
    check_changes(run_dir, changes)
    given = {k: _at(now, k) for k in IGNORED}
    return latest.replace({**given, **changes})


def _at(d: dict, key: str):
    """The value of the dotted ``key`` in the nested config dict ``d``."""
    for part in key.split("."):
        d = d[part]
    return d


def check_changes(run_dir, changes: dict) -> None:
    """Refuse ``changes`` to settings that may not change mid-run, naming them."""
    bad = refused(changes)
    if bad:
        shown = ", ".join(f"{k}={changes[k]!r}" for k in bad)
        raise ConfigError(f"cannot resume {run_dir} with {shown}: these settings cannot change mid-run (only "
                          f"{', '.join(m.rstrip('.') + ('.*' if m.endswith('.') else '') for m in MUTABLE)} can); "
                          "undo the change in its config.yaml / overrides, or start a new run with --name")


def record_change(run_dir, first: dict, step: int, cfg: Config) -> list[dict]:
    """The run's history after a resume at ``step`` with ``cfg``: changes made after ``step`` are dropped (their
    steps are recomputed), and what ``cfg`` changes against the config in force at ``step`` is added."""
    kept = [c for c in history(run_dir) if c["step"] < step]
    now = {k: v for k, v in diff_configs(config_in_force(first, kept, step).to_dict(), cfg.to_dict()).items()
           if k not in IGNORED}
    check_changes(run_dir, now)
    return kept + ([{"step": step, "changes": now}] if now else [])

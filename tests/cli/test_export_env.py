"""``oppsig export`` has class and group columns; ``oppsig env`` always shows the ranks."""

import csv

import numpy as np

from oppsig.cli.main import main


def test_export_has_class_and_group_columns(tmp_path, capsys):
    from oppsig.config import load_config
    from oppsig.signals import Group, SignalsResult, write_signals_json
    from oppsig.store import open_run
    from oppsig.training import train

    cfg = load_config(None, ["data.name=synthetic", "data.n=64", "model.widths=[8]", "train.steps=4",
                             f"out_dir={tmp_path}", "name=r"])
    run_dir = train(cfg, progress=False).run_dir
    run = open_run(run_dir)
    groups = (Group(0, (1, 2), tuple(int(i) for i in run.index[[1, 2]])), Group(3, (5,), (int(run.index[5]),)))
    write_signals_json(SignalsResult(n_rows=run.rows, n_examples=len(run.index), groups=groups),
                       run_dir / "signals.json")
    assert main(["export", str(run_dir), "--out", str(tmp_path / "ex.csv")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "ex.csv", newline="")))
    assert len(rows) == 64 and {"class", "group"} <= set(rows[0])
    assert [r["group"] for r in rows[:6]] == ["", "0", "0", "", "", "3"]
    from oppsig.data import build_datasets

    train_set = build_datasets(cfg.data, seed=cfg.seed)[0]
    assert [r["class"] for r in rows] == [train_set.classes[int(y)] for y in train_set.y]
    assert np.array_equal([int(r["id"]) for r in rows], run.index)


def test_env_shows_the_rank_outside_torchrun(monkeypatch, capsys):
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    assert main(["env"]) == 0
    assert "rank 0 of 1 (not under torchrun)" in capsys.readouterr().out
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert main(["env"]) == 0
    assert "rank 2 of 4, local rank 0" in capsys.readouterr().out

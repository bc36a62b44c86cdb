import subprocess
import sys

from oppsig.cli.main import main


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "oppsig", *args], capture_output=True, text=True, env=env, timeout=300)


def one_line_error(r):
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr
    assert len(err) == 1 and err[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr
    return err[0]


def test_bad_key_and_type_through_cli(tmp_path):
    msg = one_line_error(run_cli("train", "--optim.lrr=0.1", f"--out_dir={tmp_path}"))
    assert "optim.lrr" in msg and "optim.lr" in msg
    msg = one_line_error(run_cli("train", "--train.steps=ten", f"--out_dir={tmp_path}"))
    assert "train.steps" in msg and "integer" in msg
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model:\n  widths: 200\n")
    msg = one_line_error(run_cli("train", str(cfg), f"--out_dir={tmp_path}"))
    assert "model.widths" in msg


def test_missing_data_dir_through_cli(tmp_path):
    import os

    env = {k: v for k, v in os.environ.items() if k != "OPPSIG_DATA"}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    msg = one_line_error(run_cli("train", "--data.name=cifar10", f"--data-dir={tmp_path / 'none'}",
                                 f"--out_dir={tmp_path}", env=env))
    assert "CIFAR-10 not found" in msg and "cifar-10-python.tar.gz" in msg


def test_divergence_through_cli(tmp_path):
    r = run_cli("train", "--no-progress", "--data.n=64", "--model.widths=[8]", "--optim.lr=1e6", "--train.loss=mse",
                "--train.steps=30", f"--out_dir={tmp_path}")
    assert r.returncode == 3
    assert r.stderr.strip().startswith("error: training diverged") and "smaller learning rate" in r.stderr


def test_train_and_env_work(tmp_path, capsys):
    assert main(["train", "--no-progress", "--data.n=32", "--model.widths=[4]", "--train.steps=3",
                 f"--out_dir={tmp_path}", "--name=ok"]) == 0
    out = capsys.readouterr().out
    assert "3 steps (max_steps)" in out
    assert main(["env"]) == 0
    assert "torch" in capsys.readouterr().out


def test_malformed_override_is_an_error(tmp_path, capsys):
    assert main(["train", "--lr", "0.1", f"--out_dir={tmp_path}"]) == 2
    assert "overrides look like" in capsys.readouterr().err


def test_space_separated_override_is_read_as_one(tmp_path, capsys):
    # the value must not be taken for the positional config file
    assert main(["train", "--no-progress", "--data.n", "32", "--model.widths", "[4]", "--train.steps", "2",
                 "--optim.lr", "0.05", f"--out_dir={tmp_path}", "--name=sp"]) == 0
    assert "2 steps (max_steps)" in capsys.readouterr().out
    assert main(["train", "--train.steps", f"--out_dir={tmp_path}"]) == 2  # no value: the usual one-line error
    assert "overrides look like" in capsys.readouterr().err


def test_toy_valley_cli(tmp_path, capsys):
    out = tmp_path / "v.png"
    assert main(["toy", "valley", "--steps", "30", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert out.stat().st_size > 10_000 and "gd" in text and "cross_reversals" in text
    assert main(["toy", "valley", "--optimizers", "gd,lion"]) == 2
    assert "valid: gd" in capsys.readouterr().err

"""One-line errors that name the thing and the fix, for inputs that used to end in a traceback or a misleading
message: seeds out of range, a config that is a folder or gives a key twice, an export to an unknown format, a
damaged checkpoint under ``oppsig sharpness``."""

from __future__ import annotations

import pytest

from oppsig.cli.main import main
from oppsig.config import load_config
from oppsig.errors import ConfigError
from tests.cli.test_commands import CONFIG, one_line_error
from tests.conftest import ROOT


@pytest.mark.parametrize("seed", ["-1", str(2**64 + 5), "99999999999999999999999"])
def test_seed_out_of_range_names_the_key_and_the_range(seed, tmp_path, capsys):
    rc = main(["train", CONFIG, f"--seed={seed}", "--train.steps=1", f"--out-dir={tmp_path}", "--no-progress"])
    line = one_line_error(capsys, rc)
    assert "'seed'" in line and "2**63 - 1" in line and seed in line, line
    assert not (tmp_path / "synthetic-gd").exists()


def test_largest_seed_is_accepted():
    assert load_config(None, [f"seed={2**63 - 1}"]).seed == 2**63 - 1
    with pytest.raises(ConfigError, match="signals.seed"):
        from oppsig.signals import SignalsConfig

        SignalsConfig(seed=-1)


def test_config_that_is_a_directory_lists_its_yaml_files(capsys):
    line = one_line_error(capsys, main(["train", str(ROOT / "configs")]))
    assert "is a directory" in line and "synthetic-gd.yaml" in line and "not found" not in line, line


def test_empty_config_directory_says_so(tmp_path, capsys):
    line = one_line_error(capsys, main(["train", str(tmp_path)]))
    assert "is a directory with no .yaml file" in line, line


def test_yaml_key_given_twice_is_refused_with_key_and_lines(tmp_path, capsys):
    c = tmp_path / "c.yaml"
    c.write_text("seed: 1\noptim:\n  lr: 0.1\n  name: gd\n  lr: 0.2\n")
    line = one_line_error(capsys, main(["train", str(c), f"--out-dir={tmp_path}", "--train.steps=1", "--no-progress"]))
    assert "'lr'" in line and "twice" in line and "lines 3 and 5" in line and "c.yaml" in line, line
    assert "keep one" in line, line
    c.write_text("seed: 1\noptim: {lr: 0.1}\nlive: {enabled: false}\n")  # the same key in other sections is fine
    assert load_config(c).optim.lr == 0.1


def test_export_to_an_unknown_format_is_refused(recorded_run, tmp_path, capsys):
    out = tmp_path / "t.xlsx"
    line = one_line_error(capsys, main(["export", str(recorded_run), "--out", str(out)]))
    assert "'.xlsx'" in line and ".csv" in line and ".parquet" in line, line
    assert not out.exists()
    assert main(["export", str(recorded_run), "--out", str(tmp_path / "t.CSV")]) == 0  # the suffix in any case
    assert (tmp_path / "t.CSV").read_text().startswith("id,")


def test_sharpness_on_a_damaged_checkpoint_gives_measuring_advice(run_copy, capsys):
    bad = run_copy / "checkpoints" / "step_000012.pt"
    bad.write_bytes(bad.read_bytes()[:300])
    line = one_line_error(capsys, main(["sharpness", str(run_copy), "--steps", "12", "--tol", "0.1"]))
    assert "step_000012.pt" in line and "damaged" in line and "--steps" in line, line
    assert "steps 12 to 17" in line, line
    assert "--resume" not in line and "--overwrite" not in line, line

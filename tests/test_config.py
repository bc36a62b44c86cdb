import math

import pytest

from oppsig.config import Config, load_config
from oppsig.errors import ConfigError


def test_defaults_and_overrides():
    cfg = load_config(None, ["optim.lr=0.05", "--train.steps=10", "model.widths=[8, 4]"])
    assert cfg.optim.lr == 0.05 and cfg.train.steps == 10 and cfg.model.widths == (8, 4)
    assert isinstance(cfg, Config)


def test_yaml_round_trip(tmp_path):
    cfg = load_config(None, ["name=x", "optim.name=adam", "optim.betas=[0.8, 0.9]"])
    p = tmp_path / "c.yaml"
    p.write_text(cfg.to_yaml())
    assert load_config(p) == cfg


@pytest.mark.parametrize(
    "override, key",
    [
        ("optim.lrr=1", "optim.lrr"),
        ("optim.lr=abc", "optim.lr"),
        ("optim.lr=nan", "optim.lr"),
        ("optim.lr=-1", "optim.lr"),
        ("train.steps=0", "train.steps"),
        ("train.steps=1.5", "train.steps"),
        ("data.n=0", "data.n"),
        ("model.widths=[1, x]", "model.widths[1]"),
        ("optim.name=lbfgs", "optim.name"),
        ("record.every=0", "record.every"),
        ("train.loss=hinge", "train.loss"),
        ("data.synthetic.frequency=2", "data.synthetic.frequency"),
        ("optim.momentum=true", "optim.momentum"),
    ],
)
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    msg = str(e.value)
    assert key in msg and "\n" not in msg


def test_unknown_key_suggests(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("optim:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="unknown config key 'optim.learning_rate'"):
        load_config(p)


def test_bad_yaml_and_top_level(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("optim: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)
    p.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(p)


def test_yaml_is_loaded_safely(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError):
        load_config(p)


def test_overrides_parse_inf_and_null():
    cfg = load_config(None, ["data.n=null", "train.loss_goal=0.01"])
    assert cfg.data.n is None and math.isclose(cfg.train.loss_goal, 0.01)

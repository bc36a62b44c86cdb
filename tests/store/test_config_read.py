"""A run's config: an oppsig config loads or fails loudly; a user's own free-form config stays a dict."""

import numpy as np
import pytest
import yaml

from oppsig.errors import ConfigError
from oppsig.store import Recorder, open_run


def _run(tmp_path, cfg: dict):
    path = tmp_path / "run"
    with Recorder(path, index=np.arange(4)) as rec:
        rec.log(0, np.arange(4), np.ones(4))
    (path / "config.yaml").write_text(yaml.safe_dump(cfg))
    return open_run(path)


def test_free_form_config_is_a_dict(tmp_path):
    assert _run(tmp_path, {"lr": 0.1, "model": "mine"}).config == {"lr": 0.1, "model": "mine"}


def test_broken_oppsig_config_is_an_error_not_a_dict(tmp_path):
    run = _run(tmp_path, {"data": {"name": "synthetic"}, "model": {"name": "mlp"}, "train": {"stepz": 3}})
    with pytest.raises(ConfigError, match=r"config.yaml does not load: unknown config key 'train.stepz'"):
        run.config

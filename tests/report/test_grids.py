"""Image grids of groups."""

import numpy as np
import pytest

from oppsig.report import save_group_grids
from oppsig.signals import SignalsError


def test_group_grids_written(planted, tmp_path):
    ds, _, res = planted
    paths = save_group_grids(res, ds, tmp_path / "grids", max_images=12)
    assert [p.name for p in paths] == [f"group_{g.id:02d}.png" for g in res.groups]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image as mpimg

    img = mpimg.imread(paths[0])
    assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 200
    only = save_group_grids(res, ds, tmp_path / "one", groups=[res.groups[0].id])
    assert len(only) == 1


def test_grid_needs_matching_data(planted, tmp_path):
    ds, _, res = planted
    with pytest.raises(SignalsError, match="the data set has 10 examples but the result was computed on 1000"):
        save_group_grids(res, ds.take(np.arange(10)), tmp_path)

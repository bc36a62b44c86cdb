"""Fuzzed inputs through the whole command line (fixed seed, a bounded count; the long run is
``benchmarks/fuzz_inputs.py``): no traceback, nothing outside the run directory touched, no wrong
number without an error or a flag. See :mod:`tests.faults.fuzzing`."""

import os

import pytest
from hypothesis import HealthCheck, given, settings

from .fuzzing import KINDS, Harness, plans

COUNT = {"config": 12, "overrides": 12, "damaged": 20, "data": 12}


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

"""signals.json round trip, config validation and input errors."""

import dataclasses
import json
import math

import numpy as np
import pytest

from oppsig.data import opposing_signals
from oppsig.errors import ConfigError, DataFormatError
from oppsig.signals import (
    FORMAT_VERSION,
    AntiPhase,
    Coherence,
    Pair,
    SignalsConfig,
    SignalsError,
    SignalsResult,
    Verification,
    find_signals,
    read_signals_json,
    summary_text,
    write_signals_json,
)
from oppsig.signals.signals_json import result_to_dict



@pytest.fixture(scope="module")
def result(planted_spikes):
    res = planted_spikes[2]
    assert res.pairs and res.spikes and res.rejected_pairs  # the round trip covers every kind of record
    return dataclasses.replace(res, verifications=(Verification(0, 1, -0.8, 1.0, 2.0, 0.5, None, 100),))


def test_json_round_trip(result, tmp_path):
    path = write_signals_json(result, tmp_path / "out" / "signals.json")
    raw = json.loads(path.read_text())
    assert raw["format_version"] == FORMAT_VERSION and raw["oppsig_version"]
    back = read_signals_json(path)
    assert back.n_rows == result.n_rows and back.n_examples == result.n_examples
    np.testing.assert_array_equal(back.steps, result.steps)
    np.testing.assert_allclose(back.total_loss, result.total_loss)
    assert back.spikes == result.spikes
    assert back.pairs == result.pairs and back.rejected_pairs == result.rejected_pairs
    assert back.recurring == result.recurring
    assert back.verifications == result.verifications
    assert back.config == result.config == SignalsConfig().to_dict()
    for a, b in zip(back.groups, result.groups):
        assert a.members == b.members and a.ids == b.ids and a.shared == b.shared
        assert a.class_counts == b.class_counts and list(a.class_counts) == list(b.class_counts)
        np.testing.assert_allclose(a.direction, b.direction, atol=1e-5)
        assert a.direction.shape == b.direction.shape
    assert summary_text(back) == summary_text(result)


V2_KEYS = {"coherence": ("statistic", "p_value", "threshold", "p_a", "p_b", "n_null", "resolution"),
           "anti_phase": ("null_corr", "p", "beyond_corr", "null_beyond", "leading_corr", "weak")}


def _as_v2(pair: dict) -> dict:
    """A version-3 pair object with its nested results flattened the way version 2 wrote them."""
    pair = dict(pair)
    nested = {k: pair.pop(k) for k in V2_KEYS}
    for k in V2_KEYS["coherence"]:
        pair["coherence" if k == "statistic" else k] = nested["coherence"][k]
    for k in V2_KEYS["anti_phase"]:
        pair["anti_phase_p" if k == "p" else k] = nested["anti_phase"][k]
    return pair


def test_json_version_3_nests_the_pair_results_and_version_2_reads_into_them(result, tmp_path):
    path = write_signals_json(result, tmp_path / "signals.json")
    d = json.loads(path.read_text())
    assert d["format_version"] == FORMAT_VERSION == 4
    first = d["pairs"][0]
    assert set(first["coherence"]) == set(V2_KEYS["coherence"])
    assert set(first["anti_phase"]) == set(V2_KEYS["anti_phase"]) | {"p_beyond"}  # p_beyond: not in version 2
    assert first["coherence"]["p_value"] == result.pairs[0].coherence.p_value
    v2 = {**d, "format_version": 2, "pairs": [_as_v2(p) for p in d["pairs"]],
          "rejected_pairs": [_as_v2(p) for p in d["rejected_pairs"]]}
    assert "p_value" in v2["pairs"][0] and "anti_phase_p" in v2["pairs"][0]
    (tmp_path / "v2.json").write_text(json.dumps(v2))
    back = read_signals_json(tmp_path / "v2.json")
    assert back.format_version == 2
    def v2_fields(pairs):  # version 2 has no p_beyond: it reads back as NaN
        return [{**p, "anti_phase": {k: v for k, v in p["anti_phase"].items() if k != "p_beyond"}} for p in pairs]

    for key in ("pairs", "rejected_pairs"):
        assert v2_fields(result_to_dict(back)[key]) == v2_fields(d[key])
    assert all(math.isnan(p.anti_phase.p_beyond) for p in back.pairs)
    assert all(isinstance(p.coherence, Coherence) and isinstance(p.anti_phase, AntiPhase) for p in back.pairs)
    assert summary_text(back) == summary_text(result)


def test_pair_optional_fields_are_keyword_only():
    with pytest.raises(TypeError):
        Pair(0, 1, -0.9, 1.0, 1.0, 1.0, True)  # significant by position: refused
    p = Pair(0, 1, -0.9, 1.0, 1.0, 1.0, significant=True)
    assert p.significant and p.coherence == Coherence() and p.anti_phase.weak is False


def test_json_nan_and_version_checks(tmp_path):
    r = SignalsResult(n_rows=3, n_examples=2, top_share=float("nan"))
    p = write_signals_json(r, tmp_path / "s.json")
    assert json.loads(p.read_text())["top_share"] == "NaN"  # strict JSON, no NaN literal
    assert np.isnan(read_signals_json(p).top_share)
    d = json.loads(p.read_text())
    d["format_version"] = FORMAT_VERSION + 1
    p.write_text(json.dumps(d))
    with pytest.raises(DataFormatError, match="newer"):
        read_signals_json(p)
    p.write_text("[1, 2]")
    with pytest.raises(DataFormatError, match="expected an object"):
        read_signals_json(p)
    p.write_text("{not json")
    with pytest.raises(DataFormatError, match="not valid JSON"):
        read_signals_json(p)


def test_config_validation():
    assert SignalsConfig().k == 20
    with pytest.raises(ConfigError, match=r"signals\.k: expected >= 1, got 0"):
        SignalsConfig(k=0)
    with pytest.raises(ConfigError, match="signals.alpha"):
        SignalsConfig(alpha=1.5)
    with pytest.raises(ConfigError, match="expected int"):
        SignalsConfig(k=2.5)
    with pytest.raises(ConfigError, match="finite"):
        SignalsConfig(spike_z=float("nan"))
    with pytest.raises(ConfigError, match="unknown setting"):
        SignalsConfig.from_dict({"kk": 3})
    assert SignalsConfig.from_dict(SignalsConfig(k=7).to_dict()) == SignalsConfig(k=7)


@pytest.fixture(scope="module")
def small():
    ds = opposing_signals(n=40, seed=0)
    return ds, 1.0 + np.random.default_rng(0).random((20, 40)).astype(np.float32)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda L, s: (L[0], s), r"losses must be 2-D \(steps, examples\), got shape \(40,\)"),
        (lambda L, s: (L[:5], s[:5]), "losses has 5 recorded steps; need at least 8"),
        (lambda L, s: (np.where(np.arange(40) == 3, np.nan, L), s), r"non-finite value \(nan\) at row 0, column 3"),
        (lambda L, s: (L, s[:-1]), r"steps must have shape \(20,\)"),
        (lambda L, s: (L, s[::-1]), "steps must increase strictly"),
        (lambda L, s: (L[:, :30], s), "30 example columns but the data set has 40"),
    ],
)
def test_bad_input_errors(small, mutate, match):
    ds, L = small
    losses, steps = mutate(L, np.arange(20))
    with pytest.raises(SignalsError, match=match) as e:
        find_signals(losses, steps, ds)
    assert "\n" not in str(e.value)


def test_bad_optional_series(small):
    ds, L = small
    with pytest.raises(SignalsError, match=r"total_loss must have shape \(20,\)"):
        find_signals(L, np.arange(20), ds, total_loss=np.ones(3))
    with pytest.raises(SignalsError, match="total_loss holds non-finite"):
        find_signals(L, np.arange(20), ds, total_loss=np.r_[np.ones(19), np.inf])
    with pytest.raises(SignalsError, match=r"sharpness must have shape \(20,\)"):
        find_signals(L, np.arange(20), ds, sharpness=np.ones(4))
    with pytest.raises(SignalsError, match="config must be a SignalsConfig"):
        find_signals(L, np.arange(20), ds, config={"k": 3})


def test_signals_error_is_an_oppsig_value_error():
    from oppsig.errors import OppsigError

    assert issubclass(SignalsError, OppsigError) and issubclass(SignalsError, ValueError)

"""signals.json and events.jsonl read back exactly what they wrote (NaN, inf and None included), refuse objects they
cannot write, and name a key they do not know."""

import dataclasses
import json
import math

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis", reason='needs the test extra: pip install -e ".[test]"')
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from oppsig.errors import DataFormatError  # noqa: E402
from oppsig.live.events import SpikeEvent, append_event, read_events  # noqa: E402
from oppsig.signals import read_signals_json, write_signals_json  # noqa: E402
from oppsig.signals.result import (  # noqa: E402
    AntiPhase, Coherence, Extension, Group, Pair, Recurring, SignalsResult, Spike, Verification,
)

FLOAT = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([math.nan, math.inf, -math.inf]))
OPT_FLOAT = st.one_of(st.none(), FLOAT)
INT = st.integers(-(2**40), 2**40)
OPT_INT = st.one_of(st.none(), INT)
TEXT = st.text(max_size=8)
OPT_BOOL = st.one_of(st.none(), st.booleans())
INTS = st.lists(INT, max_size=4).map(tuple)
FREE = st.recursive(st.one_of(st.none(), st.booleans(), INT, FLOAT, TEXT),
                    lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(TEXT, c, max_size=3)), max_leaves=8)


def _record(cls, **special):
    """A strategy for a record of ``cls``: each field by its annotation, ``special`` where given."""
    by_type = {"int": INT, "int | None": OPT_INT, "float": FLOAT, "float | None": OPT_FLOAT, "bool": st.booleans(),
               "bool | None": OPT_BOOL, "str": TEXT, "str | None": st.one_of(st.none(), TEXT),
               "tuple[int, ...]": INTS, "tuple[str, ...]": st.lists(TEXT, max_size=3).map(tuple),
               "tuple[float, ...]": st.lists(FLOAT, max_size=3).map(tuple),
               "dict[str, float]": st.dictionaries(TEXT, FLOAT, max_size=3),
               "dict[str, int]": st.dictionaries(TEXT, INT, max_size=3)}
    kw = {f.name: special.get(f.name, by_type.get(f.type)) for f in dataclasses.fields(cls)}
    return st.builds(cls, **kw)


# direction images: values that survive the file's rounding to 5 decimals and float32
DIRECTION = st.one_of(st.none(), st.lists(st.integers(-2000, 2000), min_size=1, max_size=6).map(
    lambda v: np.asarray(v, dtype=np.float32) / 8))
PAIR = _record(Pair, coherence=_record(Coherence), anti_phase=_record(AntiPhase))
RESULT = _record(
    SignalsResult, steps=st.lists(INT, max_size=4).map(lambda v: np.asarray(v, dtype=np.int64)),
    total_loss=st.lists(FLOAT, max_size=4).map(lambda v: np.asarray(v, dtype=np.float64)),
    spikes=st.lists(_record(Spike), max_size=2).map(tuple),
    recurring=st.lists(_record(Recurring), max_size=2).map(tuple),
    groups=st.lists(_record(Group, direction=DIRECTION, extension=st.one_of(st.none(), _record(Extension))),
                    max_size=2).map(tuple),
    pairs=st.lists(PAIR, max_size=2).map(tuple), rejected_pairs=st.lists(PAIR, max_size=2).map(tuple),
    verifications=st.lists(_record(Verification), max_size=2).map(tuple),
    config=st.dictionaries(TEXT, FREE, max_size=3), dataset=st.dictionaries(TEXT, FREE, max_size=3),
    test=st.dictionaries(TEXT, FREE, max_size=3), timings=st.dictionaries(TEXT, FLOAT, max_size=3),
    format_version=st.just(4), oppsig_version=st.text(min_size=1, max_size=8))


def same(a, b) -> bool:
    """Equal in value and type, NaN equal to NaN, None distinct from NaN."""
    if type(a) is not type(b):
        return False
    if dataclasses.is_dataclass(a):
        return all(same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return a == b


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(RESULT)
def test_signals_json_reads_back_what_it_wrote(tmp_path, result):
    p = write_signals_json(result, tmp_path / "signals.json")
    json.loads(p.read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    back = read_signals_json(p)
    assert same(back, result), (back, result)


def test_a_string_field_spelled_like_a_non_finite_float_stays_a_string(tmp_path):
    """A string field reads back as the string it was, even "NaN" or "Infinity" (the spellings of non-finite
    floats in float fields)."""
    pairs = tuple(Pair(0, 1, corr=-0.5, strength=1.0, swing=1.0, spike_share=1.0, view=v)
                  for v in ("Infinity", "NaN", "-Infinity"))
    back = read_signals_json(write_signals_json(SignalsResult(3, 2, rejected_pairs=pairs), tmp_path / "s.json"))
    assert [p.view for p in back.rejected_pairs] == ["Infinity", "NaN", "-Infinity"]


def test_float_or_none_fields_keep_nan_apart_from_none(tmp_path):
    s = Spike(1, 2, 0, 0, 1.0, 1.0, math.inf, -math.inf, sharpness=math.nan, sharpness_error=None)
    v = Verification(0, 1, math.nan, 1.0, 2.0, eig_cosine_a=math.nan, eig_cosine_b=None)
    back = read_signals_json(write_signals_json(SignalsResult(3, 2, spikes=(s,), verifications=(v,)),
                                                tmp_path / "s.json"))
    assert math.isnan(back.spikes[0].sharpness) and back.spikes[0].sharpness_error is None
    assert back.spikes[0].height == math.inf and back.spikes[0].z == -math.inf
    assert math.isnan(back.verifications[0].eig_cosine_a) and back.verifications[0].eig_cosine_b is None


def test_version_3_nulls_read_as_before(tmp_path):
    d = json.loads(write_signals_json(SignalsResult(3, 2, spikes=(Spike(1, 2, 0, 0, 1.0, 1.0, 0.5, 3.0),)),
                                      tmp_path / "s.json").read_text())
    d["format_version"], d["top_share"], d["spikes"][0]["loss"] = 3, None, None
    (tmp_path / "v3.json").write_text(json.dumps(d))
    back = read_signals_json(tmp_path / "v3.json")
    assert math.isnan(back.top_share) and math.isnan(back.spikes[0].loss) and back.spikes[0].sharpness is None


@pytest.mark.parametrize("bad", [object(), {1: 2.0}, {"p": __import__("pathlib").Path("/x")}])
def test_an_object_json_cannot_hold_is_refused_when_writing(tmp_path, bad):
    r = SignalsResult(3, 2, test={"k": bad})
    with pytest.raises(DataFormatError, match=r"cannot write signals.json\['test'\]\['k'\]"):
        write_signals_json(r, tmp_path / "s.json")
    assert not (tmp_path / "s.json").exists()


@pytest.mark.parametrize("where, key", [((), "surprise"), (("spikes", 0), "extra"), (("pairs", 0, "coherence"), "q")])
def test_an_unknown_key_is_an_error_naming_it(tmp_path, where, key):
    r = SignalsResult(3, 2, spikes=(Spike(1, 2, 0, 0, 1.0, 1.0, 0.5, 3.0),),
                      pairs=(Pair(0, 1, -0.9, 1.0, 1.0, 1.0),))
    d = json.loads(write_signals_json(r, tmp_path / "s.json").read_text())
    obj = d
    for k in where:
        obj = obj[k]
    obj[key] = 1.0
    (tmp_path / "s.json").write_text(json.dumps(d))
    with pytest.raises(DataFormatError, match=f"unknown key '{key}'"):
        read_signals_json(tmp_path / "s.json")


EVENT = st.builds(SpikeEvent, step=INT, loss=FLOAT, baseline=FLOAT, rise=FLOAT, z=FLOAT, onset_step=OPT_INT,
                  examples=st.lists(INT, max_size=3), example_share=FLOAT,
                  groups=st.lists(st.dictionaries(TEXT, st.one_of(INT, FLOAT, TEXT), max_size=3), max_size=2),
                  sharpness=OPT_FLOAT, threshold=OPT_FLOAT, message=TEXT)


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(EVENT, min_size=1, max_size=3))
def test_events_read_back_what_was_written(tmp_path, events):
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    (run / "events.jsonl").unlink(missing_ok=True)
    for e in events:
        append_event(run, e.to_json())
    assert same(read_events(run), [e.to_json() for e in events])


def test_an_event_holding_an_unknown_object_is_refused(tmp_path):
    append_event(tmp_path, {"kind": "spike", "step": np.int64(3), "share": np.float32(0.5), "ok": np.bool_(True)})
    assert read_events(tmp_path) == [{"kind": "spike", "step": 3, "share": 0.5, "ok": True}]
    with pytest.raises(DataFormatError, match="cannot write a PosixPath .* to events.jsonl"):
        append_event(tmp_path, {"kind": "spike", "step": 4, "where": tmp_path})
    assert len(read_events(tmp_path)) == 1

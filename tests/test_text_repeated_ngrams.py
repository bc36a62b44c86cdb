"""Planting repeated-n-gram documents into a character text (benchmarks/text_repeated_ngrams.py)."""

import numpy as np
import pytest
import torch

from oppsig.data.text import NGRAM_KINDS, char_dataset, plant_repeated_ngrams
from oppsig.errors import ConfigError, DataFormatError

TEXT = "".join(
    np.random.default_rng(0).choice(list("First Citizen: Before we proceed any further, hear me speak.\n"), 12000)
)
T = 63  # 64-character windows: a unit of up to 16 letters repeats at least 4 times


def test_planted_ids_are_exactly_the_repeated_sequences_and_the_rest_is_unchanged(tmp_path):
    p = plant_repeated_ngrams(TEXT, block_size=T, rate=0.1, seed=3)
    base_path, planted_path = tmp_path / "base.txt", tmp_path / "planted.txt"
    base_path.write_text(TEXT)
    planted_path.write_text(p.text)
    base, ds = char_dataset(base_path, block_size=T), char_dataset(planted_path, block_size=T)
    m, k = len(base), len(p.ids)
    assert len(ds) == m + k and k == round(0.1 * m / 0.9) and k > 15
    assert abs(k / len(ds) - 0.1) < 0.01
    assert ds.classes == base.classes  # the units are drawn from the text's own letters
    w = T + 1
    windows = [p.text[i * w:(i + 1) * w] for i in range(len(ds))]
    repeated = {i for i, s in enumerate(windows) if _repeats(s)}
    assert repeated == set(p.ids.tolist())  # the planted ids are exactly the sequences of one repeated unit
    for i, unit, kind in zip(p.ids.tolist(), p.units, p.kinds):
        assert windows[i] == (unit * w)[:w]
        assert (len(unit) == 1) == (kind == "char") and (kind != "word" or unit.endswith(" "))
        assert kind != "ngram" or 2 <= len(unit) <= 16
    assert set(p.kinds) == set(NGRAM_KINDS)
    # the other sequences are the base text's, in order, and removing the planted ones gives back the text
    rest = np.setdiff1d(np.arange(len(ds)), p.ids)
    assert torch.equal(ds.x[rest], base.x) and torch.equal(ds.y[rest], base.y)
    assert "".join(windows[i] for i in rest) + p.text[(m + k) * w:] == TEXT


def _repeats(s: str) -> bool:
    return any(s == (s[:n] * len(s))[:len(s)] for n in range(1, 17))


def test_planting_is_seeded_and_validated():
    a, b = plant_repeated_ngrams(TEXT, T, 0.05, seed=1), plant_repeated_ngrams(TEXT, T, 0.05, seed=1)
    c = plant_repeated_ngrams(TEXT, T, 0.05, seed=2)
    assert a.text == b.text and np.array_equal(a.ids, b.ids) and not np.array_equal(a.ids, c.ids)
    one = plant_repeated_ngrams(TEXT, T, 0.05, kinds=("word",), seed=0)
    assert set(one.kinds) == {"word"} and all(u[:-1] in TEXT for u in one.units)
    assert plant_repeated_ngrams(TEXT, T, 0.0).text == TEXT
    with pytest.raises(ConfigError, match="rate"):
        plant_repeated_ngrams(TEXT, T, 1.0)
    with pytest.raises(ConfigError, match="valid: char, word, ngram"):
        plant_repeated_ngrams(TEXT, T, 0.1, kinds=("bigram",))
    with pytest.raises(DataFormatError, match="no letters"):
        plant_repeated_ngrams("1234 5678\n" * 20, T, 0.1)

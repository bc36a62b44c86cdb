import numpy as np
import pytest

from oppsig.data import char_dataset
from oppsig.data.text import show_context, token_examples
from oppsig.errors import DataFormatError, DataNotFoundError


@pytest.fixture
def seqs(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("Ab cd\nEf gh, ij.\n" * 10)
    return char_dataset(p, block_size=8)


def test_windows_and_targets(seqs):
    assert seqs.x.shape[1] == 8 and (seqs.y[:, :-1] == seqs.x[:, 1:]).all()


def test_token_examples_and_descriptors(seqs):
    t = 8
    ids = np.array([0 * t + 2, 1 * t + 0, 3 * t + 7])
    tok = token_examples(seqs, ids, context=4)
    assert tok.index.tolist() == ids.tolist() and len(tok) == 3
    chars = list(seqs.classes)
    for k, i in enumerate(ids):
        s, pos = divmod(int(i), t)
        assert int(tok.y[k]) == int(seqs.y[s, pos])  # the target token
        assert int(tok.x[k, -1]) == int(seqs.x[s, pos])  # the last input before it
    assert tok.x[1, 0] == -1  # before the sequence start
    d = tok.meta["descriptors"]
    # row 0: "Ab cd": position 2 is input ' ' -> target 'c'
    assert chars[int(seqs.x[0, 2])] == " " and d["after_space"][0] == 1.0 and d["target_space"][0] == 0.0
    assert show_context(tok, 0).endswith("⟨c⟩")


def test_bad_ids_and_missing_file(seqs, tmp_path):
    with pytest.raises(DataFormatError, match="not in the text data set"):
        token_examples(seqs, np.array([10_000 * 8]))
    with pytest.raises(DataNotFoundError, match="text file"):
        char_dataset(tmp_path / "none.txt")


@pytest.mark.shared_data("tinyshakespeare")
def test_tinyshakespeare_is_found_through_oppsig_data(monkeypatch, tmp_path):
    """The shared copy: 1,115,394 characters over a 65-character vocabulary, found without a path."""
    import os
    from pathlib import Path

    p = Path(os.environ["OPPSIG_DATA"]) / "tinyshakespeare" / "input.txt"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # only $OPPSIG_DATA can supply it
    ds = char_dataset(block_size=64, n=100)
    text = p.read_text(encoding="utf-8")
    assert len(ds.classes) == len(set(text)) == 65 and ds.meta["path"] == str(p)
    assert "".join(ds.classes[i] for i in ds.x[1].tolist()) == text[65 : 65 + 64]  # the second window

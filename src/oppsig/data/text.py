"""Character-level text data from a plain text file (e.g. tinyshakespeare).

The text is cut into non-overlapping windows of ``block_size + 1`` characters;
example ``i`` is window ``i``: inputs ``x[i] = chars[s : s+T]``, targets
``y[i] = chars[s+1 : s+T+1]`` with ``s = i * (T + 1)``. Token ids index the
sorted set of characters of the whole file (``classes``).
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from ..errors import ConfigError, DataFormatError, DataNotFoundError, OppsigWarning
from .base import ArrayDataset

TEXT_HINT = (
    "pass a text file with --data.path, or put tinyshakespeare/input.txt under --data-dir / $OPPSIG_DATA "
    "(https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt)"
)


def find_text(path: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None) -> Path:
    """The text file to use: ``path``, else ``<data dir>/tinyshakespeare/input.txt``."""
    if path is not None:
        p = Path(path).expanduser()
        if p.is_file():
            return p
        raise DataNotFoundError(f"text file {p} not found; {TEXT_HINT}")
    roots = [Path(data_dir)] if data_dir else []
    if os.environ.get("OPPSIG_DATA"):
        roots.append(Path(os.environ["OPPSIG_DATA"]))
    from .cifar import cache_dir

    roots.append(cache_dir())
    for r in roots:
        p = r.expanduser() / "tinyshakespeare" / "input.txt"
        if p.is_file():
            return p
    raise DataNotFoundError(f"tinyshakespeare not found; {TEXT_HINT}")


def char_dataset(
    path: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    block_size: int = 64,
    n: int | None = None,
) -> ArrayDataset:
    """Windows of a character-level text as an :class:`ArrayDataset` with x, y of shape (N, block_size)."""
    p = find_text(path, data_dir)
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        text = raw.decode("utf-8", errors="replace")
        bad = text.count("\ufffd")
        warnings.warn(f"{p} is not UTF-8 text: {bad} undecodable byte sequence(s) (the first at byte {e.start}) "
                      "are read as U+FFFD; convert the file to UTF-8 (e.g. iconv -t utf-8) for exact characters",
                      OppsigWarning, stacklevel=2)
    if len(text) < block_size + 1:
        raise DataFormatError(f"{p}: {len(text)} characters, fewer than block_size + 1 = {block_size + 1}")
    chars = sorted(set(text))
    lut = {c: i for i, c in enumerate(chars)}
    ids = np.fromiter((lut[c] for c in text), dtype=np.int64, count=len(text))
    w = block_size + 1
    m = len(ids) // w
    if n is not None:
        m = min(m, n)
    win = ids[: m * w].reshape(m, w)
    return ArrayDataset(
        x=torch.from_numpy(win[:, :-1].copy()),
        y=torch.from_numpy(win[:, 1:].copy()),
        index=torch.arange(m, dtype=torch.int64),
        classes=tuple(chars),
        name=f"text-{p.name}-{m}x{block_size}",
        meta={"path": str(p), "block_size": block_size},
    )


#: kinds of planted document: one letter repeated, one word of the text (with a space), a random 2-16-gram
NGRAM_KINDS = ("char", "word", "ngram")


class PlantedText(NamedTuple):
    """A text with repeated-n-gram documents planted as whole sequences of :func:`char_dataset`."""

    text: str  #: the planted text
    ids: np.ndarray  #: int64 (k,) sorted ids of the planted sequences
    kinds: tuple[str, ...]  #: the kind of each planted sequence, in ``ids`` order
    units: tuple[str, ...]  #: the repeated n-gram of each planted sequence


def plant_repeated_ngrams(text: str, block_size: int, rate: float, kinds=NGRAM_KINDS, seed: int = 0) -> PlantedText:
    """Insert documents made of one repeated n-gram into ``text``, each one whole sequence of :func:`char_dataset`.

    The text's windows of ``block_size + 1`` characters are kept whole and in order; ``k`` documents of
    ``block_size + 1`` characters are inserted between them at seeded random places, so that a share ``rate``
    of the result's sequences are planted (the text's last, incomplete window stays at the end). Each document
    repeats one unit drawn from the text's own letters (the vocabulary does not change): a letter (``char``),
    a word of the text and a space (``word``), or a random string of 2-16 letters (``ngram``); kinds alternate
    in a seeded order. Removing the planted sequences gives back ``text``.

    Example:
        >>> p = plant_repeated_ngrams("to be or not to be " * 40, block_size=15, rate=0.25, seed=0)
        >>> i = int(p.ids[0])
        >>> len(p.ids), p.text[16 * i:16 * (i + 1)] == (p.units[0] * 16)[:16]
        (16, True)

    Raises:
        ConfigError: for a rate outside [0, 1) or an unknown kind.
        DataFormatError: for a text with no letters.
    """
    if not 0 <= rate < 1:
        raise ConfigError(f"plant rate {rate} must be in [0, 1): the share of planted sequences")
    bad = [k for k in kinds if k not in NGRAM_KINDS]
    if bad or not kinds:
        raise ConfigError(f"unknown planted kind(s) {bad or list(kinds)}; valid: {', '.join(NGRAM_KINDS)}")
    letters = sorted(c for c in set(text) if c.isalpha())
    if not letters:
        raise DataFormatError("the text has no letters to repeat; plant into a text with letters")
    words = sorted(set(re.findall(r"[^\W\d_]+", text)))
    w = block_size + 1
    m = len(text) // w
    k = int(round(rate * m / (1 - rate)))
    rng = np.random.default_rng(seed)
    ids = np.sort(rng.choice(m + k, size=k, replace=False)).astype(np.int64)
    kind_of = tuple(kinds[i] for i in rng.permutation(np.arange(k) % len(kinds)))
    units = []
    for kind in kind_of:
        if kind == "char":
            units.append(str(rng.choice(letters)))
        elif kind == "word":
            units.append(str(rng.choice(words)) + " ")
        else:
            units.append("".join(rng.choice(letters, size=int(rng.integers(2, 17)))))
    planted = set(ids.tolist())
    parts, src, j = [], 0, 0
    for slot in range(m + k):
        if slot in planted:
            parts.append((units[j] * (w // len(units[j]) + 1))[:w])
            j += 1
        else:
            parts.append(text[src * w:(src + 1) * w])
            src += 1
    parts.append(text[m * w:])
    return PlantedText("".join(parts), ids, kind_of, tuple(units))


PUNCT = set(".,;:!?'\"-()[]")


def token_examples(seqs: ArrayDataset, ids: np.ndarray, context: int = 24) -> ArrayDataset:
    """One example per recorded target token: id ``sequence_id * T + position`` of a per-token record.

    Returns an :class:`ArrayDataset` with ``y`` the target token, ``x`` the ``context``
    preceding input tokens (int64 (N, context), -1 before the sequence start),
    ``classes`` the characters, and in ``meta``: ``unit="token"``, ``descriptors``
    (name -> (N,) values: after a newline / a space, inside a word, target is a
    space / newline / punctuation / capital, position in the sequence) for the
    explanation of groups, and ``block_size``.

    Raises:
        DataFormatError: when an id names a sequence that is not in ``seqs``.
    """
    ids = np.asarray(ids, dtype=np.int64)
    t = int(seqs.y.shape[1])
    pos_of = {int(i): r for r, i in enumerate(seqs.index.cpu().numpy())}
    try:
        rows = np.fromiter((pos_of[int(s)] for s in ids // t), dtype=np.int64, count=len(ids))
    except KeyError as e:
        raise DataFormatError(f"token id of sequence {e.args[0]} is not in the text data set") from None
    pos = ids % t
    X, Y = seqs.x.cpu().numpy(), seqs.y.cpu().numpy()
    target = Y[rows, pos]
    ctx = np.full((len(ids), context), -1, dtype=np.int64)
    for k in range(context):
        p = pos - (context - 1 - k)
        ok = p >= 0
        ctx[ok, k] = X[rows[ok], p[ok]]
    cur = X[rows, pos]  # the last input character, just before the target
    chars = list(seqs.classes)
    lut = lambda pred: np.array([pred(c) for c in chars], dtype=bool)  # noqa: E731
    space, newline, punct = lut(lambda c: c == " "), lut(lambda c: c == "\n"), lut(lambda c: c in PUNCT)
    upper, alpha = lut(str.isupper), lut(str.isalpha)
    desc = {
        "after_newline": newline[cur].astype(float),
        "after_space": space[cur].astype(float),
        "inside_word": (alpha[cur] & alpha[target]).astype(float),
        "target_space": space[target].astype(float),
        "target_newline": newline[target].astype(float),
        "target_punct": punct[target].astype(float),
        "target_upper": upper[target].astype(float),
        "position": pos / max(t - 1, 1),
    }
    visible = tuple({" ": "␣", "\n": "⏎", "\t": "⇥"}.get(c, c) for c in chars)
    return ArrayDataset(
        x=torch.from_numpy(ctx), y=torch.from_numpy(target), index=torch.from_numpy(ids), classes=visible,
        name=f"{seqs.name}-tokens-{len(ids)}",
        meta={"unit": "token", "descriptors": desc, "block_size": t, "context": context},
    )


def show_context(dataset: ArrayDataset, row: int, width: int = 24) -> str:
    """``…preceding text⟨target⟩`` of a token example (newlines shown as ⏎, a space target as ␣)."""
    chars = [{"␣": " "}.get(c, c) for c in dataset.classes]
    ctx = "".join(chars[int(c)] for c in dataset.x[row][-width:] if int(c) >= 0)
    return f"…{ctx}⟨{dataset.classes[int(dataset.y[row])]}⟩"

"""Character-level text data from a plain text file (e.g. tinyshakespeare).

The text is cut into non-overlapping windows of ``block_size + 1`` characters;
example ``i`` is window ``i``: inputs ``x[i] = chars[s : s+T]``, targets
``y[i] = chars[s+1 : s+T+1]`` with ``s = i * (T + 1)``. Token ids index the
sorted set of characters of the whole file (``classes``).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch

from ..errors import DataFormatError, DataNotFoundError, OppsigWarning
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

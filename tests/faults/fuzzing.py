"""Generated bad inputs for the whole command line, and the three things each must never cause.

Four kinds of input, each a hypothesis strategy of :class:`Plan`:

- ``config``: config files (random bytes, non-UTF-8, YAML tags, non-mappings, random keys and values);
- ``overrides``: random ``--section.key=value`` arguments (unknown keys, wrong types, junk);
- ``damaged``: a finished run with 1-3 parts damaged (files deleted, truncated, overwritten with
  garbage, one byte flipped, replaced by a folder or by a symbolic link to a file outside, a
  ``progress.json`` with another row count, a broken metrics line), then ``export``, ``detect``,
  ``report``, ``sharpness``, ``train --resume`` or ``train --overwrite`` on it;
- ``data``: CIFAR batch files (random labels, shapes, types, code-running pickles, bytes) and text files.

:meth:`Harness.run` runs a plan through ``oppsig.cli.main.main`` in this process and returns
what went wrong, if anything:

- a traceback (an exception escaping ``main``, or an "internal error");
- a file outside the run directory created, changed or removed;
- wrong numbers without an error or a flag: ``export`` exits 0 with no ``warning:`` but its table
  differs from the one computed from the intact record over the rows the run says it holds.

Used by ``tests/faults/test_fuzz.py`` (a few dozen inputs, fixed seed) and
``benchmarks/fuzz_inputs.py`` (thousands).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import pickle
import shutil
import types
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from hypothesis import strategies as st

KINDS = ("config", "overrides", "damaged", "data")
SMALL = ["--train.steps=2", "--data.n=24", "--model.widths=[8]", "--train.physical_batch_size=24",
         "--curvature.every=0", "--no-progress"]

SECTIONS = {
    "optim": ["name", "lr", "momentum", "betas", "eps", "warmup_steps", "nesterov", "weight_decay", "schedule"],
    "train": ["steps", "loss", "batch_size", "physical_batch_size", "checkpoint_every", "keep_checkpoints",
              "loss_goal", "acc_goal", "eval_every"],
    "data": ["n", "name", "per_class", "test_n", "standardize", "block_size", "path", "dir"],
    "record": ["every", "dtype", "chunk_steps", "probe_n", "logits_every", "enabled", "per_token"],
    "model": ["name", "widths", "activation", "n_head", "n_layer", "n_embd", "channels", "batchnorm"],
    "curvature": ["every", "top_k", "tol", "hvp", "n"],
    "": ["name", "seed", "device", "dtype", "threads", "out_dir", "bf16"],
}
KEYS = [f"{s}.{k}" if s else k for s, ks in SECTIONS.items() for k in ks] + ["optim.lrr", "bogus.key", "train", "x.y.z"]

values = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 6), st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.text(max_size=8), st.lists(st.integers(-2, 6), max_size=3), st.just({"x": 1}), st.just([[1], "a"]),
    st.sampled_from(["gd", "adam", "sgd", "cifar10", "text", "gpt", "cnn", "cuda", "mps", "auto", "float16",
                     "../../x", "/", "", "\u0000", "1e999", "-0", "[1,", "{a: b}", "!!python/object:os.system"]),
)


@dataclass
class Plan:
    kind: str
    argv: list[str] = field(default_factory=list)  # with {run}, {root} placeholders
    config: bytes | None = None
    damage: list[tuple] = field(default_factory=list)
    cifar: bytes | None = None
    text: bytes | None = None


@dataclass
class Outcome:
    plan: Plan
    rc: int | None
    err: str
    problems: list[str]
    flagged: bool


def _yaml_bytes(draw) -> bytes:
    form = draw(st.sampled_from(["dict", "bytes", "tag", "scalar", "nested"]))
    if form == "bytes":
        return draw(st.binary(max_size=120))
    if form == "tag":
        return draw(st.sampled_from([b"!!python/object/apply:os.system ['touch /tmp/oppsig-pwned']\n",
                                     b"train: !!python/name:os.system\n", b"a: &a [*a]\n", b"a: *b\n"]))
    if form == "scalar":
        return yaml.safe_dump(draw(values)).encode()
    d: dict = {}
    for key, v in draw(st.dictionaries(st.sampled_from(KEYS), values, max_size=5)).items():
        if "." in key:
            s, k = key.split(".", 1)
            if isinstance(d.get(s), dict) or s not in d:
                d.setdefault(s, {})[k] = v
        else:
            d[key] = v
    text = yaml.safe_dump(d)
    if form == "nested":
        text = text.replace("\n", draw(st.sampled_from(["\n", "\n  ", "\t\n", "\n- "])), 1)
    enc = draw(st.sampled_from(["utf-8", "utf-16", "latin-1"]))
    return text.encode(enc, errors="replace")


@st.composite
def plans(draw, kind: str | None = None) -> Plan:
    kind = kind or draw(st.sampled_from(KINDS))
    if kind == "config":
        return Plan("config", ["train", "{root}/c.yaml", *SMALL, "--out-dir={root}/runs", "--name=r"],
                    config=_yaml_bytes(draw))
    if kind == "overrides":
        args = []
        for key, v in draw(st.dictionaries(st.sampled_from(KEYS), values, min_size=1, max_size=4)).items():
            form = draw(st.sampled_from(["--k=v", "--k=v", "k=v", "--k", "--k v"]))
            val = yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...").strip()
            args += {"--k=v": [f"--{key}={val}"], "k=v": [f"{key}={val}"], "--k": [f"--{key}"],
                     "--k v": [f"--{key}", val]}[form]
        return Plan("overrides", ["train", *SMALL, "--out-dir={root}/runs", "--name=r", *args])
    if kind == "damaged":
        damage = draw(st.lists(st.tuples(
            st.sampled_from(["delete", "truncate", "garbage", "flip", "dir", "symlink", "rows", "badline", "chunk"]),
            st.integers(0, 10_000), st.integers(0, 10_000)), min_size=1, max_size=3))
        cmd = draw(st.sampled_from(["export"] * 5 + ["detect"] * 2 + ["resume"] * 2 + ["overwrite"] * 2
                                   + ["sharpness", "report"]))
        argv = {
            "export": ["export", "{run}", "--out", "{run}/ex.csv"],
            "detect": ["detect", "{run}", "--verify=0", "--no-grids"],
            "report": ["report", "{run}"],
            "sharpness": ["sharpness", "{run}", "--steps=4", "--tol=0.1"],
            "resume": ["train", "--resume", "{run}", "--train.steps=14", "--no-progress"],
            "overwrite": ["train", *SMALL, "--out-dir={root}/runs", "--name=r", "--overwrite"],
        }[cmd]
        return Plan("damaged", argv, damage=damage)
    # data
    if draw(st.booleans()):
        return Plan("data", ["train", "--data.name=cifar10", "--data-dir={root}/data", *SMALL[:1], "--data.n=16",
                             "--model.widths=[8]", "--no-progress", "--out-dir={root}/runs", "--name=r"],
                    cifar=_cifar_bytes(draw))
    return Plan("data", ["train", "--data.name=text", "--data.path={root}/data/t.txt", "--model.name=gpt",
                         "--model.n_layer=1", "--model.n_head=1", "--model.n_embd=8", "--data.block_size=8",
                         "--optim.name=adam", "--optim.lr=0.001", "--train.steps=1", "--no-progress",
                         "--out-dir={root}/runs", "--name=r"],
                text=draw(st.one_of(st.binary(max_size=300), st.text(max_size=300).map(lambda t: t.encode()))))


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/oppsig-pwned",))


def _cifar_bytes(draw) -> bytes:
    form = draw(st.sampled_from(["dict", "dict", "dict", "bytes", "evil", "truncated", "list"]))
    if form == "bytes":
        return draw(st.binary(max_size=200))
    if form == "evil":
        return pickle.dumps({b"data": _Evil(), b"labels": [0]})
    if form == "list":
        return pickle.dumps([1, 2, 3])
    n = draw(st.integers(0, 6))
    shape = draw(st.sampled_from([(n, 3072), (n, 3071), (n,), (n, 3, 32, 32), (n + 1, 3072)]))
    dtype = draw(st.sampled_from([np.uint8, np.uint8, np.float32, np.int64]))
    data = np.zeros(shape, dtype=dtype)
    labels = draw(st.one_of(
        st.lists(st.integers(0, 9), min_size=n, max_size=n),
        st.lists(st.one_of(st.integers(-2**80, 2**80), st.text(max_size=3), st.floats(), st.none()),
                 min_size=n, max_size=n),
        st.just("cat"), st.just({"a": 1}), st.just(None),
    ))
    keys = draw(st.sampled_from([(b"data", b"labels"), ("data", "labels"), (b"data", b"label"), (b"x", b"labels")]))
    blob = pickle.dumps({keys[0]: data, keys[1]: labels})
    return blob[: len(blob) // 2] if form == "truncated" else blob


class Harness:
    """A sandbox with a pristine recorded run, and the checks of one plan.

    Layout of ``root``: ``runs/`` (run directories), ``data/`` (data files), ``outside/`` (files no
    command may touch; symbolic links in damaged runs point here), ``pristine/`` (the intact run).
    """

    def __init__(self, root: str | os.PathLike) -> None:
        from oppsig.config import load_config
        from oppsig.training import train

        self.root = Path(root)
        for d in ("runs", "data", "outside", "cache"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        (self.root / "outside" / "precious.txt").write_text("never touch\n")
        (self.root / "outside" / "sub").mkdir(exist_ok=True)
        (self.root / "outside" / "sub" / "deep.bin").write_bytes(b"\x00\x01" * 50)
        os.environ.pop("OPPSIG_DATA", None)
        os.environ["XDG_CACHE_HOME"] = str(self.root / "cache")  # no data set found by accident
        cfg = load_config(None, ["data.n=24", "model.widths=[8]", "train.steps=12", "train.physical_batch_size=24",
                                 "record.chunk_steps=4", "train.checkpoint_every=4", f"out_dir={self.root}",
                                 "name=pristine"])
        self.pristine = train(cfg, progress=False).run_dir

    # ------------------------------------------------------------------ one plan
    def run(self, plan: Plan) -> Outcome:
        import torch

        from oppsig.cli.main import main

        rd = self.root / "runs" / "r"
        self._reset(rd)
        self._prepare(plan, rd)
        before = self._snapshot(rd)
        argv = [a.replace("{run}", str(rd)).replace("{root}", str(self.root)) for a in plan.argv]
        err = io.StringIO()
        problems: list[str] = []
        rc = None
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("default")
                rc = main(argv)
        except SystemExit as e:  # argparse: a usage error (exit 2, one usage line)
            rc = e.code if isinstance(e.code, int) else 2
        except BaseException as e:  # noqa: BLE001 - this is what the harness looks for
            problems.append(f"traceback: {type(e).__name__}: {str(e)[:200]}")
        finally:
            torch.set_num_threads(1)
        text = err.getvalue()
        if "Traceback" in text or "internal error" in text:
            problems.append("traceback: " + text.strip().splitlines()[-1][:300])
        after = self._snapshot(rd)
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        if changed:
            problems.append(f"touched outside the run directory: {changed[:5]}")
        if os.path.exists("/tmp/oppsig-pwned"):
            problems.append("a pickle or YAML tag ran code")
        flagged = "warning:" in text
        if plan.kind == "damaged" and argv[0] == "export" and rc == 0 and not flagged:
            problems += self._export_is_right(rd)
        return Outcome(plan, rc, text, problems, flagged)

    def _reset(self, rd: Path) -> None:
        if rd.is_symlink() or rd.is_file():
            rd.unlink()
        elif rd.exists():
            for p in rd.rglob("*"):  # a damaged run may hold links: remove them, never what they point to
                if p.is_symlink():
                    p.unlink()
            shutil.rmtree(rd)
        for p in (self.root / "data").iterdir():
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        for p in self.root.glob("*.yaml"):
            p.unlink()

    def _prepare(self, plan: Plan, rd: Path) -> None:
        if plan.config is not None:
            (self.root / "c.yaml").write_bytes(plan.config)
        if plan.cifar is not None:
            d = self.root / "data" / "cifar-10-batches-py"
            d.mkdir(parents=True)
            (d / "data_batch_1").write_bytes(plan.cifar)
        if plan.text is not None:
            (self.root / "data" / "t.txt").write_bytes(plan.text)
        if plan.kind == "damaged":
            shutil.copytree(self.pristine, rd, symlinks=True)
            for op, a, b in plan.damage:
                _damage(rd, op, a, b, self.root / "outside" / "precious.txt")

    def _snapshot(self, rd: Path) -> dict[str, tuple]:
        """Everything under the sandbox but the run directory: path -> (kind, size, content hash)."""
        out = {}
        skip = {self.root / "runs" / "r", self.root / "cache"}
        for dirpath, dirs, files in os.walk(self.root, followlinks=False):
            here = Path(dirpath)
            dirs[:] = [d for d in dirs if here / d not in skip]
            for f in files:
                p = here / f
                if p.is_symlink():
                    out[str(p)] = ("link", os.readlink(p), "")
                else:
                    out[str(p)] = ("file", p.stat().st_size, hashlib.md5(p.read_bytes()).hexdigest())
            for d in dirs:
                out[str(here / d)] = ("dir", 0, "")
        return out

    def _export_is_right(self, rd: Path) -> list[str]:
        """An export that exits 0 with no warning must equal the intact record's over the rows the run reports."""
        from oppsig.store import open_run
        from oppsig.store.export import COLUMNS, write_summary
        from oppsig.store.reader import RowBounded

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rows = open_run(rd).rows
        ref = open_run(self.pristine)
        if rows > ref.rows:
            return [f"wrong numbers: export of {rows} rows but the intact record has {ref.rows}"]
        view = types.SimpleNamespace(path=self.root, index=ref.index, losses=RowBounded(ref._group["loss"], rows),
                                     correct=RowBounded(ref._group["correct"], rows))
        expect = _table(write_summary(view, self.root / "expected.csv"))
        got = [row[: len(COLUMNS)] for row in _table(rd / "ex.csv")]  # extra columns (class, group) aside
        return [] if got == expect else [f"wrong numbers: export differs from the intact record's ({rows} rows)"]


def _table(path: Path) -> list[list[str]]:
    import csv

    with open(path, newline="") as f:
        return list(csv.reader(f))


def _files(rd: Path) -> list[Path]:
    return sorted(p for p in rd.rglob("*") if p.is_file() and not p.is_symlink() and p.name != ".lock")


def _damage(rd: Path, op: str, a: int, b: int, outside: Path) -> None:
    """Apply one damage ``op`` to the run ``rd`` (``a``, ``b`` pick the file and the place)."""
    files = _files(rd)
    if not files:
        return
    f = files[a % len(files)]
    if op == "delete":
        f.unlink()
    elif op == "truncate":
        data = f.read_bytes()
        f.write_bytes(data[: b % max(len(data), 1)])
    elif op == "garbage":
        f.write_bytes(bytes((a * 31 + i * b) % 256 for i in range(b % 64 + 1)))
    elif op == "flip":
        data = bytearray(f.read_bytes())
        if data:
            data[b % len(data)] ^= 1 << (a % 8)
            f.write_bytes(bytes(data))
    elif op == "dir":
        f.unlink()
        f.mkdir()
    elif op == "symlink":
        f.unlink()
        f.symlink_to(outside)
    elif op == "rows":
        p = rd / "progress.json"
        if p.is_file() and not p.is_symlink():
            import json

            try:
                d = json.loads(p.read_text())
            except ValueError:
                d = {}
            d = d if isinstance(d, dict) else {}
            d["rows"] = [b % 30, -1, "7", 10**12, 3.5][a % 5]
            if a % 3 == 0:
                d.pop("last_step", None)
            p.write_text(json.dumps(d))
    elif op == "badline":
        p = rd / "metrics.jsonl"
        if p.is_file() and not p.is_symlink():
            lines = p.read_text(errors="replace").splitlines()
            if lines:
                lines[b % len(lines)] = lines[b % len(lines)][: a % 20]
                p.write_text("\n".join(lines) + "\n")
    elif op == "chunk":
        chunks = [p for p in files if "store.zarr" in p.parts and p.name != "zarr.json"]
        if chunks:
            chunks[a % len(chunks)].unlink()

"""Generated bad inputs for the whole command line, and the three things each must never cause.

Four kinds of input, each a hypothesis strategy of :class:`Plan`:

- ``config``: config files (random bytes, non-UTF-8, YAML tags, non-mappings, random keys and values);
- ``overrides``: random ``--section.key=value`` arguments (unknown keys, wrong types, junk);
- ``damaged``: a finished run with 1-3 parts damaged (files deleted, truncated, overwritten with
  garbage, one byte flipped, replaced by a folder or by a symbolic link to a file outside, a
  ``progress.json`` with another row count, a broken metrics line), then ``export``, ``detect``,
  ``report``, ``sharpness``, ``train --resume`` or ``train --overwrite`` on it; ``export`` and ``detect``
  sometimes on a full disk or a read-only run directory (every atomic write fails with ENOSPC or EACCES);
- ``data``: CIFAR batch files (random labels, shapes, types, code-running pickles, bytes) and text files;
- ``otherdata``: a finished run (synthetic, or CIFAR-like) whose data now differ from its data fingerprint
  (its config.yaml plants another signal magnitude, or $OPPSIG_DATA points at a copy with one pixel or one
  label changed), then ``detect``, ``report``, ``export``, ``sharpness`` or ``intervene`` on it, with or without
  ``--allow-other-data``;
- ``resume``: ``train --resume`` of a run with live attribution and curvature on, stopped at a random step,
  killed at a random step (an exception inside a step: no final checkpoint) or finished, resumed plainly, with
  a setting that may change (recorded in meta.json) or with one that may not.

:meth:`Harness.run` runs a plan through ``oppsig.cli.main.main`` in this process and returns
what went wrong, if anything:

- a traceback (an exception escaping ``main``, or an "internal error");
- a file outside the run directory created, changed or removed;
- wrong numbers without an error or a flag: ``export`` exits 0 with no ``warning:`` but its table
  differs from the one computed from the intact record over the rows the run says it holds; a command on
  other data exits 0 without ``--allow-other-data``, or with it but without the mismatch in its output
  (signals.json ``dataset.data_mismatch``, export's ``other_data`` column, the report's note, sharpness's
  ``data_mismatch``, intervene's ``OTHER DATA`` line); a plain resume whose events.jsonl or store differ
  from the uninterrupted run's;
- a command that ends otherwise than expected (``unexpected``): a refusal of other data that is not one
  ``error:`` line naming both digests, or that changed the run; a refused resume setting not named, or a
  refusal that changed the run; an allowed change not recorded in meta.json; a finished run changed by a
  plain resume.

Used by ``tests/faults/test_fuzz.py`` (a few dozen inputs, fixed seed) and
``benchmarks/fuzz_inputs.py`` (thousands).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pickle
import re
import shutil
import types
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from hypothesis import strategies as st

KINDS = ("config", "overrides", "damaged", "data", "otherdata", "resume")
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
    st.sampled_from([2**63 - 1, 2**63, 2**64 + 1, -2**70, 10**30]),  # seeds at and past what numpy/torch take
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
    fault: str | None = None  # "ENOSPC" or "EACCES": every atomic write of export or detect fails with it
    base: tuple | None = None  # otherdata: ("synthetic" | "cifar", change); resume: ("stop" | "kill" | "finished", n)
    expect: str | None = None  # resume: "plain", "allowed" or "refused"


@dataclass
class Outcome:
    plan: Plan
    rc: int | None
    err: str
    problems: list[str]
    flagged: bool


def _yaml_bytes(draw) -> bytes:
    form = draw(st.sampled_from(["dict", "bytes", "tag", "scalar", "nested", "twice"]))
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
    if form == "twice":  # a key given twice
        text += text.splitlines()[0] + "\n" if text.strip() not in ("", "{}") else "seed: 1\nseed: 2\n"
    enc = draw(st.sampled_from(["utf-8", "utf-16", "latin-1"]))
    return text.encode(enc, errors="replace")


@st.composite
def plans(draw, kind: str | None = None) -> Plan:
    kind = kind or draw(st.sampled_from(KINDS))
    if kind == "config":
        where = draw(st.sampled_from(["{root}/c.yaml"] * 5 + ["{root}", "{root}/data"]))  # or a folder
        return Plan("config", ["train", where, *SMALL, "--out-dir={root}/runs", "--name=r"],
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
                                   + ["sharpness", "report", "xlsx", "grids"]))
        argv = {
            "export": ["export", "{run}", "--out", "{run}/ex.csv"],
            "detect": ["detect", "{run}", "--verify=0", "--no-grids"],
            "grids": ["detect", "{run}", "--verify=0", "--k=5"],
            "xlsx": ["export", "{run}", "--out", "{run}/ex.xlsx"],
            "report": ["report", "{run}"],
            "sharpness": ["sharpness", "{run}", "--steps=4", "--tol=0.1"],
            "resume": ["train", "--resume", "{run}", "--train.steps=14", "--no-progress"],
            "overwrite": ["train", *SMALL, "--out-dir={root}/runs", "--name=r", "--overwrite"],
        }[cmd]
        fault = draw(st.sampled_from([None] * 4 + ["ENOSPC", "EACCES"])) if argv[0] in ("export", "detect") else None
        return Plan("damaged", argv, damage=damage, fault=fault)
    if kind == "otherdata":
        return _other_data_plan(draw)
    if kind == "resume":
        return _resume_plan(draw)
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


OTHER_DATA_CMDS = {
    "detect": ["detect", "{run}", "--verify=0", "--no-grids"],
    "report": ["report", "{run}"],
    "export": ["export", "{run}", "--out", "{run}/ex.csv"],
    "sharpness": ["sharpness", "{run}", "--steps=4", "--tol=0.1", "--out", "{run}/sh.json"],
    "intervene": ["intervene", "{run}", "--from-step=4", "--steps=8", "--no-progress"],
}
GD = Path(__file__).resolve().parents[2] / "configs" / "synthetic-gd.yaml"
LIVE_STEPS = 30
LIVE = ["data.n=32", "model.widths=[16]", f"train.steps={LIVE_STEPS}", "train.physical_batch_size=32",
        "train.checkpoint_every=5", "record.chunk_steps=4", "curvature.every=4", "live.enabled=true",
        "live.window=7", "live.context=4", "live.history=8", "live.gap=1", "optim.lr=0.8",
        "threads=1"]  # spikes at step 19; one thread, so that a resume computes what the uninterrupted run did
ALLOWED = ["--optim.lr=0.5", "--curvature.every=2", "--curvature.top_k=2", "--train.checkpoint_every=3",
           f"--train.steps={LIVE_STEPS + 4}", "--train.eval_every=2", "--curvature.tol=0.01", "--optim.warmup_steps=3"]
REFUSED = ["--model.widths=[8]", "--seed=1", "--data.n=16", "--live.window=9", "--optim.name=adam",
           "--record.every=2", "--live.enabled=false", "--data.synthetic.magnitude=2.0", "--optim.momentum=0.5"]


def _other_data_plan(draw) -> Plan:
    if draw(st.sampled_from([True, True, False])):
        base = ("synthetic", draw(st.sampled_from([0.0, 0.5, 1.0, 2.5, 2.99, 4.0, 10.0, 1e3])))
    else:  # image, pixel (or the label when "label"), change (never 0 mod 256)
        base = ("cifar", draw(st.sampled_from(["pixel", "pixel", "label"])), draw(st.integers(0, 39)),
                draw(st.integers(0, 3071)), draw(st.integers(1, 255)))
    argv = list(OTHER_DATA_CMDS[draw(st.sampled_from(list(OTHER_DATA_CMDS)))])
    if draw(st.booleans()):
        argv.insert(2, "--allow-other-data")
    return Plan("otherdata", argv, base=base)


def _resume_plan(draw) -> Plan:
    how = draw(st.sampled_from(["stop", "kill", "kill", "finished"]))
    base = (how, LIVE_STEPS if how == "finished" else draw(st.integers(1, LIVE_STEPS - 1)))
    expect = draw(st.sampled_from(["plain", "plain", "allowed", "refused"]))
    extra = [f"--train.steps={LIVE_STEPS}"] if how == "stop" else []  # else it is finished at its step
    if expect != "plain":  # the setting last: the checks read it there
        extra.append(draw(st.sampled_from(ALLOWED if expect == "allowed" else REFUSED)))
    return Plan("resume", ["train", "--resume", "{run}", "--no-progress", *extra], base=base, expect=expect)


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
        self.bases: dict[tuple, Path] = {}
        self.own: dict[str, str] = {}
        self._other_data_bases()
        self.live = _train_live(load_config(GD, [*LIVE, f"out_dir={self.root}", "name=live"])).run_dir
        assert _events(self.live).count(b'"onset_step"') >= 1, "the live run must spike for resumes to mean much"

    def _other_data_bases(self) -> None:
        """Two finished runs with kept checkpoints and a signals.json: synthetic (with planted pairs, so that their
        magnitude shapes the data), and CIFAR-like (``cifar-own/``)."""
        from oppsig.config import load_config
        from oppsig.training import train
        from tests.data.test_cifar import write_fake_cifar
        from tests.report.test_report import add_fake_signals

        small = ["model.widths=[8]", "train.steps=12", "train.checkpoint_every=4", "train.keep_checkpoints=true",
                 f"out_dir={self.root}"]
        own = write_fake_cifar(self.root / "cifar-own", n=40)
        for name, data in (("synthetic", ["data.n=128"]), ("cifar", ["data.name=cifar10", "data.n=40"])):
            os.environ["OPPSIG_DATA"] = str(own)
            try:
                rd = train(load_config(GD, [*small, *data, f"name={name}"]), progress=False).run_dir
            finally:
                os.environ.pop("OPPSIG_DATA", None)
            add_fake_signals(rd)
            self.bases[(name,)] = rd
            self.own[name] = json.loads((rd / "meta.json").read_text())["fingerprint"]["train"]["sha256"]

    # ------------------------------------------------------------------ one plan
    def run(self, plan: Plan) -> Outcome:
        import torch

        from oppsig.cli.main import main

        rd = self.root / "runs" / "r"
        self._reset(rd)
        self._prepare(plan, rd)
        before = self._snapshot(rd)
        run_before = _tree(rd)
        argv = [a.replace("{run}", str(rd)).replace("{root}", str(self.root)) for a in plan.argv]
        err, out = io.StringIO(), io.StringIO()
        problems: list[str] = []
        rc = None
        if plan.kind == "otherdata" and plan.base[0] == "cifar":
            os.environ["OPPSIG_DATA"] = str(self.root / "data" / "other")
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out), \
                    warnings.catch_warnings(), _write_fault(plan.fault):
                warnings.simplefilter("default")
                rc = main(argv)
        except SystemExit as e:  # argparse: a usage error (exit 2, one usage line)
            rc = e.code if isinstance(e.code, int) else 2
        except BaseException as e:  # noqa: BLE001 - this is what the harness looks for
            problems.append(f"traceback: {type(e).__name__}: {str(e)[:200]}")
        finally:
            torch.set_num_threads(1)
            os.environ.pop("OPPSIG_DATA", None)
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
        if plan.kind == "otherdata" and not problems:
            flagged = "--allow-other-data" in argv
            problems += self._other_data_is_flagged(plan, rd, rc, text, out.getvalue(), run_before)
        if plan.kind == "resume" and not problems:
            problems += self._resume_is_right(plan, rd, rc, text, run_before)
        return Outcome(plan, rc, text, problems, flagged)

    def _other_data_is_flagged(self, plan: Plan, rd: Path, rc, err: str, out: str, run_before: dict) -> list[str]:
        """Without --allow-other-data: one ``error:`` line naming both digests, the run unchanged; with it:
        exit 0 and the mismatch in the command's output."""
        own, lines, cmd = self.own[plan.base[0]], err.strip().splitlines(), plan.argv[0]
        if "--allow-other-data" not in plan.argv:
            if rc == 0:
                return [f"wrong numbers: {cmd} on other data exits 0 without --allow-other-data"]
            named = set(re.findall(r"\b[0-9a-f]{12}\b", lines[-1])) if lines else set()
            if rc != 2 or len(lines) != 1 or not lines[0].startswith("error: ") or own[:12] not in named \
                    or len(named) != 2 or "--allow-other-data" not in lines[0]:
                return [f"unexpected: {cmd} on other data: exit {rc}, not one error line naming both digests: "
                        f"{lines[-2:]}"]
            if _tree(rd) != run_before:
                return [f"unexpected: {cmd} refused other data but changed the run"]
            return []
        if rc != 0:
            return [f"unexpected: {cmd} --allow-other-data exits {rc}: {lines[-1:]}"]
        if cmd == "export":
            rows = _table(rd / "ex.csv")
            col = rows[0].index("other_data") if "other_data" in rows[0] else None
            ok = col is not None and len(rows) > 1 and all(
                set(re.findall(r"[0-9a-f]{12}", r[col])) - {own[:12]} for r in rows[1:])
        elif cmd in ("detect", "sharpness"):
            doc = json.loads((rd / ("signals.json" if cmd == "detect" else "sh.json")).read_text())
            m = (doc.get("dataset") or {}).get("data_mismatch") if cmd == "detect" else doc.get("data_mismatch")
            ok = isinstance(m, dict) and m.get("expected") == own and m.get("found") not in (None, own) \
                and "OTHER DATA" in out
        elif cmd == "report":
            ok = "class='otherdata'" in (rd / "report.html").read_text(errors="replace")
        else:
            ok = "OTHER DATA" in out
        return [] if ok else [f"wrong numbers: {cmd} --allow-other-data exits 0 without saying the data differ"]

    def _resume_is_right(self, plan: Plan, rd: Path, rc, err: str, run_before: dict) -> list[str]:
        """A plain resume equals the uninterrupted run (events.jsonl, store, metrics); a refused setting is named
        and changes nothing; an allowed one is recorded in meta.json."""
        lines, how = err.strip().splitlines(), plan.base[0]
        if rc not in (0, 2) or (rc == 2 and (not lines or not lines[-1].startswith("error: "))):
            return [f"unexpected: resume exits {rc}: {lines[-2:]}"]
        if plan.expect == "refused":
            key = plan.argv[-1].split("=")[0].removeprefix("--")
            if rc != 2 or key not in lines[-1]:
                return [f"unexpected: resume with {plan.argv[-1]} not refused by name (exit {rc}): {lines[-1:]}"]
            return [] if _tree(rd) == run_before else ["unexpected: a refused resume changed the run"]
        if how == "finished" and plan.expect == "plain":
            return [] if _tree(rd) == run_before else ["unexpected: a plain resume of a finished run changed it"]
        if rc != 0:
            return [] if plan.expect == "allowed" else [f"unexpected: a plain resume exits {rc}: {lines[-1:]}"]
        if plan.expect == "allowed":
            key = plan.argv[-1].split("=")[0].removeprefix("--")
            meta = json.loads((rd / "meta.json").read_text())
            seen = {k for c in meta.get("config_changes") or [] for k in c.get("changes", {})}
            return [] if key in seen else [f"unexpected: {plan.argv[-1]} not recorded in meta.json"]
        return _same_run(rd, self.live)

    def _reset(self, rd: Path) -> None:
        for q in (self.root / "runs").iterdir():  # the run, and intervene's branches beside it
            if q.is_symlink() or q.is_file():
                q.unlink()
                continue
            for p in q.rglob("*"):  # a damaged run may hold links: remove them, never what they point to
                if p.is_symlink():
                    p.unlink()
            shutil.rmtree(q)
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
        if plan.kind == "otherdata":
            shutil.copytree(self.bases[plan.base[:1]], rd)
            if plan.base[0] == "synthetic":
                cfg = rd / "config.yaml"
                cfg.write_text(cfg.read_text().replace("magnitude: 3.0", f"magnitude: {plan.base[1]}"))
            else:
                _change_cifar(self.root / "cifar-own", self.root / "data" / "other", *plan.base[1:])
        if plan.kind == "resume":
            shutil.copytree(self._live_base(*plan.base), rd)

    def _live_base(self, how: str, step: int) -> Path:
        """The live run stopped at ``step`` (its checkpoint there), killed inside ``step``, or finished (cached)."""
        from oppsig.config import load_config

        if how == "finished":
            return self.live
        if (how, step) not in self.bases:
            name = f"live-{how}-{step}"
            cfg = load_config(GD, [*LIVE, f"out_dir={self.root / 'bases'}", f"name={name}"]
                              + ([f"train.steps={step}"] if how == "stop" else []))
            try:
                _train_live(cfg, *([_Kill(step)] if how == "kill" else []))
            except _Killed:
                pass
            self.bases[(how, step)] = self.root / "bases" / name
        return self.bases[(how, step)]

    def _snapshot(self, rd: Path) -> dict[str, tuple]:
        """Everything under the sandbox but the run directory: path -> (kind, size, content hash)."""
        out = {}
        skip = {self.root / "runs" / "r", self.root / "cache"}
        branches = {f"{b.name}-" for b in self.bases.values()}  # intervene writes its branches beside the run
        for dirpath, dirs, files in os.walk(self.root, followlinks=False):
            here = Path(dirpath)
            dirs[:] = [d for d in dirs if here / d not in skip
                       and not (here == self.root / "runs" and any(d.startswith(b) for b in branches))]
            if here == self.root / "runs":
                files = [f for f in files if not (f.endswith("-intervention.html")
                                                  and any(f.startswith(b) for b in branches))]
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


def _train_live(cfg, *hooks):
    """Train as ``oppsig train`` does with ``live.enabled=true`` (its live hook first), quietly."""
    from oppsig.live import LiveHook
    from oppsig.training import train

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return train(cfg, progress=False, hooks=[LiveHook(cfg.live), *hooks])


class _Killed(Exception):
    pass


class _Kill:
    """Ends training inside ``step``, as a SIGKILL would: after the step's record, with no final checkpoint."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, state) -> None:
        if state.step == self.step:
            raise _Killed(self.step)


def _events(rd: Path) -> bytes:
    p = rd / "events.jsonl"
    return p.read_bytes() if p.is_file() else b""


def _tree(rd: Path) -> dict[str, str]:
    """Every file of a run directory (locks aside): relative path -> content hash."""
    if not rd.is_dir():
        return {}
    return {str(p.relative_to(rd)): hashlib.md5(p.read_bytes()).hexdigest() for p in _files(rd)}


def _same_run(rd: Path, ref: Path) -> list[str]:
    """A resumed run against the uninterrupted one: events.jsonl byte for byte, the store's arrays and the metrics."""
    from oppsig.store import open_run

    if _events(rd) != _events(ref):
        return ["wrong numbers: events.jsonl differs from the uninterrupted run's"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a, b = open_run(rd), open_run(ref)
        if a.rows != b.rows or not all(np.array_equal(np.asarray(x[:]), np.asarray(y[:]), equal_nan=True)
                                       for x, y in ((a.losses, b.losses), (a.correct, b.correct))):
            return ["wrong numbers: the store differs from the uninterrupted run's"]
        ma, mb = a.metrics, b.metrics
    keys = [k for k in mb if "time" not in k and "sec" not in k]
    bad = [k for k in keys if k not in ma or not np.array_equal(np.asarray(ma[k], dtype=float),
                                                                np.asarray(mb[k], dtype=float), equal_nan=True)]
    return [f"wrong numbers: metrics {bad[:4]} differ from the uninterrupted run's"] if bad else []


def _change_cifar(own: Path, other: Path, what: str, image: int, pixel: int, delta: int) -> None:
    """A copy of the CIFAR-like folder ``own`` at ``other`` with one pixel (or one label) of one image changed."""
    from oppsig.data import safe_load_pickle

    shutil.copytree(own, other)
    batch = other / "cifar-10-batches-py" / "data_batch_1"
    obj = safe_load_pickle(batch)
    i = image % len(obj[b"labels"])
    if what == "label":
        obj[b"labels"][i] = (int(obj[b"labels"][i]) + 1 + delta % 9) % 10
    else:
        obj[b"data"][i, pixel] = np.uint8((int(obj[b"data"][i, pixel]) + delta) % 256)
    batch.write_bytes(pickle.dumps(obj, protocol=3))


@contextlib.contextmanager
def _write_fault(fault: str | None):
    """Every atomic write (``oppsig.store.format.atomic_open``) fails with ``fault`` (an errno name), if any."""
    if fault is None:
        yield
        return
    import builtins
    import errno
    from unittest import mock

    code = getattr(errno, fault)

    def refuse(path, mode="r", *args, **kw):
        if any(c in mode for c in "wax+"):
            raise OSError(code, os.strerror(code), str(path))
        return builtins.open(path, mode, *args, **kw)

    with mock.patch("oppsig.store.format.open", refuse, create=True):
        yield


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

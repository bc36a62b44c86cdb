"""Reading configs: type checks and conversions of plain mappings into frozen dataclasses, dotted overrides."""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from typing import Any

import yaml

from ..errors import ConfigError


MAX_SEED = 2**63 - 1
"""The largest seed: every seed is an integer in ``[0, MAX_SEED]``, which numpy's ``default_rng`` (no negative
seeds) and torch's ``manual_seed`` (at most 64 bits) both take, with room for the offsets added to it."""


def check_seed(seed: Any, key: str) -> None:
    """Raise :class:`ConfigError` naming ``key`` unless ``seed`` is an integer in ``[0, MAX_SEED]``."""
    check(isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed <= MAX_SEED, key,
          "must be an integer from 0 to 2**63 - 1 (e.g. 0)", seed)


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping key given twice (plain PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:  # an unhashable key: SafeLoader reports it
                continue
            if first != key_node.start_mark.line + 1:
                raise ConfigError(f"key {key!r} is given twice (lines {first} and {key_node.start_mark.line + 1} "
                                  f"of {key_node.start_mark.name}); keep one of them")
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str, name: str = "<config>") -> Any:
    """``yaml.safe_load(text)``, except that a mapping key given twice raises :class:`ConfigError` (key and lines).

    Example:
        >>> load_yaml("optim:\\n  lr: 0.1\\n")
        {'optim': {'lr': 0.1}}
        >>> load_yaml("seed: 1\\nseed: 2\\n", "a.yaml")
        Traceback (most recent call last):
        oppsig.errors.ConfigError: key 'seed' is given twice (lines 1 and 2 of a.yaml); keep one of them
    """
    loader = _UniqueKeyLoader(text)
    loader.name = name
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def check(ok: bool, key: str, what: str, value: Any) -> None:
    """Raise :class:`ConfigError` ``config key '<key>' <what> (got <value>)`` unless ``ok``.

    Used by every config's validator."""
    if not ok:
        raise ConfigError(f"config key '{key}' {what} (got {value!r})")


def to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [to_plain(v) for v in obj]
    return obj


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return "a list"
    if tp is type(None):
        return "null"
    return {int: "an integer", float: "a number", bool: "true/false",
            str: "a string"}.get(tp, getattr(tp, "__name__", str(tp)))


_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|[-+]?(inf|nan)", re.IGNORECASE)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert lists to tuples."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError:
                continue
        raise ConfigError(f"config key '{key}' must be {_type_name(tp)} (got {value!r})")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' must be a list (got {value!r})")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"config key '{key}' must have {len(args)} entries (got {value!r})")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping (got {value!r})")
        return build(value, tp, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}' must be true or false (got {value!r})")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}' must be an integer (got {value!r})")
        return value
    if tp is float:
        if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}' must be a number (got {value!r})")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}' must be a string (got {value!r})")
        return value
    raise ConfigError(f"config key '{key}': unsupported type {tp}")  # pragma: no cover


def build(d: dict, cls: type, prefix: str = "") -> Any:
    """Build the dataclass ``cls`` from a plain mapping, checking keys and types (each section validates itself)."""
    if not isinstance(d, dict):
        raise ConfigError(f"config{' key ' + repr(prefix) if prefix else ''} must be a mapping "
                          f"(got {type(d).__name__})")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in names:
            close = difflib.get_close_matches(str(k), names, n=1)
            hint = (f"; did you mean '{(prefix + '.' if prefix else '') + close[0]}'?" if close
                    else f"; valid keys: {', '.join(names)}")
            raise ConfigError(f"unknown config key '{key}'{hint}")
        kwargs[k] = _coerce(v, hints[k], key)
    return cls(**kwargs)


def apply_overrides(d: dict, overrides: list[str] | dict[str, Any]) -> None:
    items = overrides.items() if isinstance(overrides, dict) else [_split_override(o) for o in overrides]
    for key, value in items:
        parts = key.split(".")
        node = d
        for i, p in enumerate(parts[:-1]):
            if not isinstance(node.get(p), dict):
                raise ConfigError(f"unknown config key '{'.'.join(parts[: i + 1])}' in override '{key}'")
            node = node[p]
        node[parts[-1]] = value  # an unknown last key is reported, with a suggestion, by from_dict


def _split_override(o: str) -> tuple[str, Any]:
    s = o[2:] if o.startswith("--") else o
    if "=" not in s:
        raise ConfigError(f"override {o!r} must look like key.sub=value (e.g. optim.lr=0.05)")
    k, v = s.split("=", 1)
    try:
        value = yaml.safe_load(v) if v != "" else None
    except yaml.YAMLError:
        value = v
    if isinstance(value, str) and value.lower() in ("nan", "inf", "-inf", "+inf"):
        value = float(value)
    return k.strip(), value


def deep_update(base: dict, new: dict, prefix: str = "") -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            deep_update(base[k], v, f"{prefix}{k}.")
        else:
            base[k] = v

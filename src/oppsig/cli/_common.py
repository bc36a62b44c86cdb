"""Small helpers shared by subcommands."""

from __future__ import annotations

import dataclasses

from ..config import Config
from ..errors import ConfigError

# top-level config keys that are plain values (the rest are sections: --section.key=value)
TOP_LEVEL_KEYS = frozenset(f.name for f in dataclasses.fields(Config) if f.default_factory is dataclasses.MISSING)


def split_overrides(extra: list[str]) -> list[str]:
    """Check that leftover arguments are ``--key.sub=value`` overrides; return them without dashes."""
    out = []
    for a in extra:
        s = a[2:] if a.startswith("--") else a
        key = s.split("=", 1)[0]
        if "=" not in s or ("." not in key and key not in TOP_LEVEL_KEYS):
            raise ConfigError(f"cannot read argument {a!r}: overrides look like --section.key=value "
                              "(e.g. --optim.lr=0.05)")
        out.append(s)
    return out

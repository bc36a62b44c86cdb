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


def add_allow_other_data(p) -> None:
    """The ``--allow-other-data`` flag of the commands that read a run's data (its fingerprint is checked)."""
    p.add_argument("--allow-other-data", action="store_true",
                   help="go on when the data found are not those the run trained on (its data fingerprint differs); "
                        "every output says so (default: an error)")

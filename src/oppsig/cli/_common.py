"""Small helpers shared by subcommands."""

from __future__ import annotations

from ..errors import ConfigError


def split_overrides(extra: list[str]) -> list[str]:
    """Check that leftover arguments are ``--key.sub=value`` overrides; return them without dashes."""
    out = []
    for a in extra:
        s = a[2:] if a.startswith("--") else a
        if "=" not in s or "." not in s.split("=", 1)[0] and s.split("=", 1)[0] not in ("name", "seed", "device", "dtype", "out_dir", "threads", "tf32", "bf16"):
            raise ConfigError(f"cannot read argument {a!r}: overrides look like --section.key=value (e.g. --optim.lr=0.05)")
        out.append(s)
    return out

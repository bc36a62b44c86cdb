"""The import graph follows the layer order of the README's Layout section: no cycle, no upward import.

Every ``import`` and ``from ... import`` of an oppsig module, at module level or inside a function, counts.
A package may import from its own layer's packages only where the order below lists them as lower.
"""

import ast
import pathlib

import pytest

SRC = pathlib.Path(__file__).resolve().parents[1] / "src" / "oppsig"

#: bottom to top; a package may import only from packages of strictly lower layers (and itself)
LAYERS = [
    {"version", "errors"},
    {"config"},
    {"data", "models", "losses", "optim"},
    {"distributed"},
    {"store"},
    {"curvature"},
    {"training"},
    {"signals"},
    {"report"},
    {"toy"},
    {"experiments", "integrations"},
    {"cli", ""},  # "" is oppsig/__init__.py, the public API
    {"__main__"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _module_name(path: pathlib.Path, src: pathlib.Path) -> list[str]:
    parts = list(path.relative_to(src.parent).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def imports(src: pathlib.Path = SRC) -> list[tuple[str, str, str]]:
    """(importing package, imported package, 'file:line') for every oppsig import below ``src``."""
    out = []
    for path in sorted(src.rglob("*.py")):
        mod = _module_name(path, src)
        pkg_parts = mod if path.name == "__init__.py" else mod[:-1]
        src_pkg = mod[1] if len(mod) > 1 else ""
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = pkg_parts[: len(pkg_parts) - (node.level - 1)]
                    full = base + (node.module.split(".") if node.module else [])
                    if not node.module:  # from . import x: x is a module of base
                        targets = [full + [a.name] for a in node.names]
                    else:
                        targets = [full]
                elif node.module and node.module.split(".")[0] == "oppsig":
                    targets = [node.module.split(".")]
            elif isinstance(node, ast.Import):
                targets = [a.name.split(".") for a in node.names if a.name.split(".")[0] == "oppsig"]
            for t in targets:
                dst = t[1] if len(t) > 1 else ""
                out.append((src_pkg, dst, f"{path.relative_to(src.parent)}:{node.lineno}"))
    return out


def test_every_package_has_a_layer():
    pkgs = {p.stem if p.is_file() else p.name for p in SRC.iterdir()
            if (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists()))}
    pkgs = {"" if p == "__init__" else p for p in pkgs}
    assert pkgs - set(RANK) == set(), "add the new package to LAYERS (and to the README's Layout section)"


def test_no_import_runs_against_the_layer_order():
    bad = [f"{where}: oppsig.{src or '(root)'} imports oppsig.{dst or '(root)'}"
           for src, dst, where in imports() if src != dst and RANK[dst] >= RANK[src]
           and not (src == "" and dst in RANK)]  # the public API may gather from any layer
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def test_the_check_sees_an_upward_import(tmp_path):
    """The check itself can fail: a planted upward import is reported."""
    fake = tmp_path / "oppsig"
    (fake / "store").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "store" / "__init__.py").write_text("def f():\n    from ..signals import find_signals\n")
    found = [(s, d) for s, d, _ in imports(fake)]
    assert ("store", "signals") in found
    assert RANK["signals"] >= RANK["store"]


@pytest.mark.parametrize("name", ["training", "curvature", "signals", "experiments", "toy"])
def test_package_imports_alone(name):
    """Each package imports by itself in a fresh interpreter (no hidden cycle that import order hides)."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", f"import oppsig.{name}"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]

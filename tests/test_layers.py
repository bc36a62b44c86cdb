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
    {"live"},
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


def module_imports(src: pathlib.Path = SRC) -> dict[str, set[str]]:
    """Every oppsig module (dotted name below ``oppsig``) and the oppsig modules it imports, at module level or
    inside a function. ``from .pkg import name`` counts as an import of ``pkg.name`` where that is a module, else
    of ``pkg`` (its ``__init__``)."""
    modules = {".".join(_module_name(p, src)[1:]) for p in src.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for path in sorted(src.rglob("*.py")):
        mod = _module_name(path, src)
        pkg_parts = mod if path.name == "__init__.py" else mod[:-1]
        deps = graph.setdefault(".".join(mod[1:]), set())
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = pkg_parts[: len(pkg_parts) - (node.level - 1)]
                    full = base + (node.module.split(".") if node.module else [])
                elif node.module and node.module.split(".")[0] == "oppsig":
                    full = node.module.split(".")
                else:
                    continue
                for a in node.names:
                    sub = ".".join(full[1:] + [a.name])
                    deps.add(sub if sub in modules else ".".join(full[1:]))
            elif isinstance(node, ast.Import):
                deps.update(".".join(a.name.split(".")[1:]) for a in node.names if a.name.split(".")[0] == "oppsig")
    return graph


def circles_inside_packages(src: pathlib.Path = SRC) -> list[list[str]]:
    """Import circles among the modules of one package (its ``__init__`` left out: re-exporting is not a circle)."""
    graph = module_imports(src)
    init = {".".join(_module_name(p, src)[1:]) for p in src.rglob("__init__.py")}

    def package(m: str) -> str:
        return m if m in init else m.rpartition(".")[0]

    edges = {m: {d for d in ds if d in graph and d not in init and d != m and package(d) == package(m)}
             for m, ds in graph.items() if m not in init}
    found, done = [], set()

    def visit(m: str, path: list[str]) -> None:
        for d in sorted(edges.get(m, ())):
            if d in path:
                found.append(path[path.index(d):] + [d])
            elif d not in done:
                visit(d, path + [d])
        done.add(m)

    for m in sorted(edges):
        if m not in done:
            visit(m, [m])
    return found


def test_no_import_circle_inside_a_package():
    circles = circles_inside_packages()
    assert not circles, "import circles:\n" + "\n".join(" -> ".join(c) for c in circles)


def test_the_check_sees_a_circle_inside_a_package(tmp_path):
    """The check itself can fail: a planted circle through a function-level import is reported, a re-export is not."""
    fake = tmp_path / "oppsig"
    (fake / "report").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "report" / "__init__.py").write_text("from .html import page\nfrom .summary import text\n")
    (fake / "report" / "html.py").write_text("from .summary import text\n\ndef page():\n    return text()\n")
    (fake / "report" / "summary.py").write_text("def text():\n    from .html import page\n    return page\n")
    assert circles_inside_packages(fake) == [["report.html", "report.summary", "report.html"]]
    (fake / "report" / "summary.py").write_text("def text():\n    return ''\n")
    assert circles_inside_packages(fake) == []


@pytest.mark.parametrize("name", ["training", "curvature", "signals", "experiments", "toy"])
def test_package_imports_alone(name):
    """Each package imports by itself in a fresh interpreter (no hidden cycle that import order hides)."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", f"import oppsig.{name}"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]

"""The layering of the library: imports only point down, and no module imports a private
module of another package."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent / "jaxda"
LAYER = {
    "core": 1,
    "models": 2,
    "observations": 2,
    "metrics": 2,
    "ensemble": 3,
    "variational": 3,
    "diffusion": 3,
    "optimize": 3,
    "assimilate": 4,
    "sharding": 4,
    "experiments": 5,
    "io": 5,
    "cli": 5,
    "plotting": 5,
}
FILES = sorted(p for p in ROOT.rglob("*.py") if p.name not in ("__init__.py", "__main__.py"))


def _package(path: Path) -> str:
    rel = path.relative_to(ROOT).parts
    return rel[0].removesuffix(".py")


def _imports(path: Path):
    """(target package, target module path) of every jaxda import in ``path``."""
    tree = ast.parse(path.read_text())
    here = path.relative_to(ROOT.parent).with_suffix("").parts  # ("jaxda", "ensemble", "_enkf")
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(here[: len(here) - node.level])
                mod = base + (node.module.split(".") if node.module else [])
            elif node.module and node.module.startswith("jaxda"):
                mod = node.module.split(".")
            else:
                continue
            targets = [mod] if node.module else [[*mod, a.name] for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name.split(".") for a in node.names if a.name.startswith("jaxda")]
        else:
            continue
        for t in targets:
            if len(t) >= 2 and t[0] == "jaxda":
                yield t[1], t


def test_layer_table_covers_every_package():
    assert {_package(p) for p in FILES} <= set(LAYER)


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(ROOT)) for p in FILES])
def test_imports_point_down_and_stay_public(path):
    pkg = _package(path)
    for target, parts in _imports(path):
        if target == pkg or target not in LAYER:
            continue
        assert LAYER[target] <= LAYER[pkg], f"{pkg} (layer {LAYER[pkg]}) imports {'.'.join(parts)}"
        private = [p for p in parts[2:] if p.startswith("_")]
        assert not private, f"{pkg} imports the private module {'.'.join(parts)} of {target}"

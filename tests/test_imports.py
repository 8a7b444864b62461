"""The import graph keeps its layers: no package imports a higher one or another's private names.

Lower first; a package may import its own layer and those below. ``stages`` (the registry, which
names each stage's config and run function as strings) sits under the pipeline that reads it;
every package's ``cli.py`` sits on top, as part of the ``hcx`` command.
"""

from __future__ import annotations

import ast
from pathlib import Path

LAYERS = [
    {"allocator", "paths", "config", "records", "sql"},
    {"data"},
    {"tokenizer"},
    {"model"},
    {"train"},
    {"infer"},
    {"align"},
    {"eval"},
    {"serve", "redteam"},
    {"stages"},
    {"pipeline"},
]
RANK = {package: rank for rank, layer in enumerate(LAYERS) for package in layer}
ROOT = Path(__file__).resolve().parents[1] / "hcx"


def imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module, imported names, line) of every ``hcx.*`` import in a file, lazy ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hcx."):
            found.append((node.module, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names if a.name.startswith("hcx.")]
    return found


def test_no_package_imports_a_higher_one_or_a_private_name() -> None:
    problems = []
    for path in sorted(ROOT.rglob("*.py")):
        relative = path.relative_to(ROOT)
        package = relative.parts[0].removesuffix(".py")
        if package in ("cli", "__init__", "__main__") or relative.name == "cli.py":
            continue
        for module, names, line in imports(path):
            target = module.split(".")[1]
            where = f"hcx/{relative}:{line}"
            if target not in RANK:
                problems.append(f"{where} imports {module}, which has no layer")
            elif RANK[target] > RANK[package]:
                problems.append(f"{where}: {package} imports the higher {module}")
            private = [n for n in names if n.startswith("_")]
            if target != package and private:
                problems.append(f"{where} imports private {private} from {module}")
    assert not problems, "\n".join(problems)


def test_every_package_has_a_layer() -> None:
    packages = {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    modules = {p.stem for p in ROOT.glob("*.py")} - {"__init__", "__main__", "cli"}
    assert packages | modules <= set(RANK), (packages | modules) - set(RANK)

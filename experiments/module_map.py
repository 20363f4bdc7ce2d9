"""The package's module map: each module's lines and the package modules it imports.

    python -m experiments.module_map            # this checkout
    python -m experiments.module_map OTHER_ROOT  # another checkout (e.g. a git worktree of an older commit)

Prints a Markdown table, one row per module of ``nas/``: its line count, the modules of
``nas`` it imports at module level, and those it imports only inside functions (lazily,
when first needed; ``if TYPE_CHECKING`` imports, for annotations only, are left out), then
the import cycles, if any: of module-level imports, and of all.
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path
from typing import Dict, List, Set


def module_name(package: Path, path: Path) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def package_imports(package: Path, path: Path, modules: Set[str], lazy: bool) -> Set[str]:
    """The ``nas`` modules that ``path`` imports at module level (``lazy``: only inside functions)."""
    here = module_name(package, path)
    base = here.split(".") if path.name == "__init__.py" else here.split(".")[:-1]
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    typing_only = set()
    for node in tree.body:  # module-level imports under if/try blocks count as module level too
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only |= {id(n) for n in ast.walk(node)}  # for annotations only: never imported at run time
        elif isinstance(node, (ast.If, ast.Try)):
            top |= {id(n) for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if (id(node) in top) == lazy or id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            root = base[: len(base) - node.level + 1] if node.level else []
            target = ".".join(root + ([node.module] if node.module else []))
            # ``from . import x`` names a module when x is one
            names = [target] + [f"{target}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != here and name != package.name:
                found.add(name)
    return found


def module_map(root: Path) -> Dict[str, dict]:
    package = root / "nas"
    files = sorted(package.rglob("*.py"))
    modules = {module_name(package, p) for p in files}
    table = {}
    for p in files:
        eager = package_imports(package, p, modules, lazy=False)
        lazy = package_imports(package, p, modules, lazy=True) - eager
        table[module_name(package, p)] = {
            "lines": len(p.read_text().splitlines()),
            "imports": sorted(eager),
            "lazy": sorted(lazy),
        }
    return table


def cycles(graph: Dict[str, List[str]]) -> List[List[str]]:
    """Import cycles between two or more modules (each reported once)."""
    out, seen = [], set()

    def walk(node: str, path: List[str]) -> None:
        for nxt in graph.get(node, []):
            if nxt in path:
                cycle = path[path.index(nxt) :]
                key = frozenset(cycle)
                if len(cycle) > 1 and key not in seen:
                    seen.add(key)
                    out.append(cycle + [nxt])
            elif len(path) < 12:
                walk(nxt, path + [nxt])

    for start in graph:
        walk(start, [start])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", type=Path, default=Path(__file__).resolve().parent.parent)
    root = parser.parse_args().root
    table = module_map(root)
    print("| module | lines | imports (nas.) | inside functions only |\n|---|---:|---|---|")
    for name, row in table.items():
        imports = ", ".join(i.removeprefix("nas.") for i in row["imports"]) or "-"
        lazy = ", ".join(i.removeprefix("nas.") for i in row["lazy"]) or "-"
        print(f"| {name} | {row['lines']} | {imports} | {lazy} |")
    print(f"\n{len(table)} modules, {sum(r['lines'] for r in table.values())} lines")
    for label, key in (
        ("module-level import cycles", ("imports",)),
        ("cycles counting lazy imports", ("imports", "lazy")),
    ):
        found = cycles({k: [m for part in key for m in v[part]] for k, v in table.items()})
        print(f"{label}: " + ("; ".join(" -> ".join(c) for c in found) if found else "none"))


if __name__ == "__main__":
    main()

"""The package's module map: each module's lines and the package modules it imports.

    python -m experiments.module_map            # this checkout
    python -m experiments.module_map OTHER_ROOT  # another checkout (e.g. a git worktree of an older commit)

Prints a Markdown table, one row per module of ``nas/``: its line count and the
modules of ``nas`` it imports (module level and inside functions alike), then the
import cycles, if any.
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


def package_imports(package: Path, path: Path, modules: Set[str]) -> Set[str]:
    """The ``nas`` modules that ``path`` imports."""
    here = module_name(package, path)
    base = here.split(".") if path.name == "__init__.py" else here.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
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
    return {
        module_name(package, p): {
            "lines": len(p.read_text().splitlines()),
            "imports": sorted(package_imports(package, p, modules)),
        }
        for p in files
    }


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
    print("| module | lines | imports (nas.) |\n|---|---:|---|")
    for name, row in table.items():
        imports = ", ".join(i.removeprefix("nas.") for i in row["imports"]) or "-"
        print(f"| {name} | {row['lines']} | {imports} |")
    print(f"\n{len(table)} modules, {sum(r['lines'] for r in table.values())} lines")
    found = cycles({k: v["imports"] for k, v in table.items()})
    print("import cycles: " + ("; ".join(" -> ".join(c) for c in found) if found else "none"))


if __name__ == "__main__":
    main()

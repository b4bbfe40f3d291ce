"""The shape of the package, measured from its source (standard library only): the module import graph
(module-level and function-level imports alike), its cycles and depth, private names imported across
modules, imports that go up the layers, and module and function sizes.

``tests/test_architecture.py`` keeps the rules; ``python tests/code_shape.py [SRC]`` prints the numbers
(the architecture issue's before/after table).
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "src"

#: Packages directly under ``nearid``, bottom to top. A module may import from its own package and from
#: any package of a lower layer; packages of one layer do not import each other (docs/ARCHITECTURE.md).
LAYERS = [
    {"io"},
    {"images"},
    {"models"},
    {"judges"},
    {"tiny"},
    {"data"},
    {"eval"},
    {"report"},
    {"bench", "score"},
    {"training", "distract"},
    {"demo"},
    {"cli"},
    {"__main__"},
]
#: Edges between packages that the layer rule would refuse, allowed on purpose (with why).
ALLOWED_EDGES: dict[tuple[str, str], str] = {}

MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 120
MAX_TOP_ENTRIES = 16


@dataclass
class Shape:
    modules: dict[str, Path] = field(default_factory=dict)
    edges: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    private_imports: list[tuple[str, str, str]] = field(default_factory=list)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def read_shape(root: Path = ROOT) -> Shape:
    shape = Shape()
    for path in sorted((root / "nearid").rglob("*.py")):
        shape.modules[module_name(path, root)] = path
    for name, path in shape.modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [(alias.name, None) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    stem = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(stem + ([node.module] if node.module else []))
                targets = [
                    (f"{base}.{alias.name}", None) if f"{base}.{alias.name}" in shape.modules else (base, alias.name)
                    for alias in node.names
                ]
            else:
                continue
            for target, imported in targets:
                if not target.startswith("nearid"):
                    continue
                while target not in shape.modules and "." in target:
                    target = target.rpartition(".")[0]
                if target != name:
                    shape.edges[name].add(target)
                if imported and imported.startswith("_") and not imported.startswith("__") and target != name:
                    shape.private_imports.append((name, target, imported))
    return shape


def cycles(shape: Shape) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in shape.modules:
        if start in index:
            continue
        work = [(start, iter(sorted(shape.edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(shape.edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def import_depth(shape: Shape) -> tuple[int, list[str]]:
    """The longest chain of imports (in modules) and one such chain; cycles are cut where met."""
    memo: dict[str, list[str]] = {}

    def longest(node: str, seen: frozenset) -> list[str]:
        if node in memo:
            return memo[node]
        best: list[str] = []
        for child in shape.edges[node]:
            if child in seen or child == "nearid":
                continue
            chain = longest(child, seen | {child})
            if len(chain) > len(best):
                best = chain
        memo[node] = [node, *best]
        return memo[node]

    chains = [longest(name, frozenset({name})) for name in shape.modules]
    deepest = max(chains, key=len)
    return len(deepest), deepest


def top_package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer_of(package: str) -> int | None:
    for rank, layer in enumerate(LAYERS):
        if package in layer:
            return rank
    return None


def upward_imports(shape: Shape) -> list[tuple[str, str]]:
    """Imports from a package to one of the same or a higher layer (other than its own package)."""
    wrong = []
    for name, targets in shape.edges.items():
        source = top_package(name)
        for target in targets:
            other = top_package(target)
            if not source or not other or source == other or (source, other) in ALLOWED_EDGES:
                continue
            if layer_of(source) is None or layer_of(other) is None or layer_of(other) >= layer_of(source):
                wrong.append((name, target))
    return sorted(wrong)


def function_lengths(shape: Shape) -> list[tuple[int, str]]:
    lengths = []
    for name, path in shape.modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lengths.append((node.end_lineno - node.lineno + 1, f"{name}.{node.name}"))
    return sorted(lengths, reverse=True)


def module_lengths(shape: Shape) -> list[tuple[int, str]]:
    return sorted(
        ((len(path.read_text(encoding="utf-8").splitlines()), name) for name, path in shape.modules.items()),
        reverse=True,
    )


def top_entries(root: Path = ROOT) -> list[str]:
    return sorted(p.name for p in (root / "nearid").iterdir() if not p.name.startswith(".") and p.name != "__pycache__")


def report(root: Path = ROOT) -> str:
    shape = read_shape(root)
    depth, chain = import_depth(shape)
    longest_module, longest_function = module_lengths(shape)[0], function_lengths(shape)[0]
    return "\n".join(
        [
            f"entries directly under nearid/: {len(top_entries(root))}",
            f"longest module: {longest_module[1]} ({longest_module[0]} lines)",
            f"longest function: {longest_function[1]} ({longest_function[0]} lines)",
            f"modules over {MAX_MODULE_LINES} lines: {sum(n > MAX_MODULE_LINES for n, _ in module_lengths(shape))}",
            f"functions over {MAX_FUNCTION_LINES} lines: "
            f"{sum(n > MAX_FUNCTION_LINES for n, _ in function_lengths(shape))}",
            f"import cycles: {len(cycles(shape))} {cycles(shape)}",
            f"private names imported across modules: {len(shape.private_imports)}",
            f"upward imports: {len(upward_imports(shape))}",
            f"import depth: {depth} ({' -> '.join(chain)})",
        ]
    )


if __name__ == "__main__":
    print(report(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT))

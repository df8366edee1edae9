"""Arrows point down only: every import between suprem_auto's top-level sub-packages (module-level or inside a
function) goes from a higher layer to a lower one, and the package graph has no cycle.

The layer order is the order of dependency. It follows the pipeline (conversion/dataset/imageio -> fingerprint ->
planning -> preprocessing -> networks -> pretrained -> training -> inference -> evaluation -> crossval -> cli) with
three differences: networks (model definitions and their registry, importing nothing of ours) sit below planning,
which validates architectures against the registry; training predicts and evaluates its own validation cases, so
inference and evaluation sit below training; evaluation decides on post-processing that inference only applies, so
inference sits below evaluation.
"""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Set, Tuple

import suprem_auto

PACKAGE_ROOT = Path(suprem_auto.__file__).resolve().parent

#: lowest first; a sub-package may import only from its own layer's sub-package or from lower layers
LAYERS: List[str] = [
    "utils", "paths",
    "imageio", "dataset", "conversion",
    "networks",
    "fingerprint", "planning", "preprocessing", "pretrained",
    "inference", "evaluation", "training",
    "interop", "sharing", "segment", "crossval",
    "cli",
]

Edge = Tuple[str, str]


def _module_parts(path: Path) -> List[str]:
    """``suprem_auto/a/b.py`` -> ["suprem_auto", "a", "b"]; a package's ``__init__`` is the package itself."""
    parts = ["suprem_auto", *path.relative_to(PACKAGE_ROOT).with_suffix("").parts]
    return parts[:-1] if parts[-1] == "__init__" else parts


def _imported_modules(path: Path) -> List[Tuple[str, int]]:
    """Absolute names of every module ``path`` imports anywhere in its body (relative imports resolved)."""
    parts = _module_parts(path)
    package = parts if path.name == "__init__.py" else parts[:-1]
    found: List[Tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((name, node.lineno))
            if node.module is None or name == "suprem_auto":  # ``from suprem_auto import training``
                found.extend((f"{name}.{alias.name}", node.lineno) for alias in node.names)
    return found


def package_edges() -> Dict[Edge, List[str]]:
    """(importing sub-package, imported sub-package) -> the ``file:line module`` places that make the edge."""
    edges: Dict[Edge, List[str]] = defaultdict(list)
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        parts = _module_parts(path)
        if len(parts) < 2:
            continue
        source = parts[1]
        for name, line in _imported_modules(path):
            target = name.split(".")
            if target[0] == "suprem_auto" and len(target) > 1 and target[1] != source:
                edges[(source, target[1])].append(f"{path.relative_to(PACKAGE_ROOT.parent)}:{line} {name}")
    return edges


def find_cycle(graph: Dict[str, Set[str]]) -> List[str]:
    """One cycle of ``graph`` as [a, b, ..., a], or [] when it has none (depth-first search)."""
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(node: str) -> List[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return []


def test_every_sub_package_has_a_layer():
    subpackages = {p.stem if p.is_file() else p.name for p in PACKAGE_ROOT.iterdir()
                   if (p.is_dir() and (p / "__init__.py").is_file()) or (p.suffix == ".py" and p.stem != "__init__")}
    assert subpackages == set(LAYERS), (f"not in LAYERS: {sorted(subpackages - set(LAYERS))}; "
                                        f"in LAYERS but gone: {sorted(set(LAYERS) - subpackages)}")


def test_imports_point_down_the_layers():
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward = [f"{a} -> {b}: {place}" for (a, b), places in sorted(package_edges().items())
              if rank[a] < rank[b] for place in places]
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(upward)


def test_no_cycle_between_sub_packages():
    edges = package_edges()
    graph: Dict[str, Set[str]] = defaultdict(set)
    for a, b in edges:
        graph[a].add(b)
    cycle = find_cycle(graph)
    detail = [f"{a} -> {b}: {edges[(a, b)][0]}" for a, b in zip(cycle, cycle[1:])]
    assert not cycle, "cycle between sub-packages: " + " -> ".join(cycle) + "\n" + "\n".join(detail)


def test_the_checker_sees_lazy_and_relative_imports():
    """The parser finds an import inside a function and resolves a relative one (else the test above proves nothing)."""
    edges = package_edges()
    lazy = [p for p in edges.get(("training", "inference"), []) if "trainers/final_validation.py" in p]
    assert lazy, "the lazy import of the predictor in training/trainers/final_validation.py was not seen"
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) == []

"""Layering of lit_rlhf: imports go downward only and never close a circle.

Layer order, top to bottom: cli → modules → eval → rollout → data → tasks → models; a layer may import
its own and lower layers. ``losses`` imports nothing else of lit_rlhf (any layer may import it). Every
``import`` statement counts, at module level or inside a function (a lazy import is still a dependency);
an import circle between lit_rlhf files, or between layers, is an error even when each edge is downward.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lit_rlhf"
LAYERS = ("cli", "modules", "eval", "rollout", "data", "tasks", "models")
LEAF = "losses"
Graph = dict[str, dict[str, int]]  # importing module -> {imported module: line of the first such import}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path = PACKAGE) -> Graph:
    """Every lit_rlhf → lit_rlhf import under ``root``, found with ``ast`` (top-level and function-level).

    ``from pkg import name`` points at ``pkg.name`` when that is a module, else at ``pkg``; relative imports
    are resolved against the importing file's package.
    """
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    graph: Graph = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = graph.setdefault(name, {})
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            for target in targets:
                if target.split(".")[0] == root.name and target != name:
                    edges.setdefault(target, node.lineno)
    return graph


ENTRY_POINTS = ("cli", "__main__", "pipelines", "rounds")  # the command line: the top layer


def layer(module: str) -> str:
    """``lit_rlhf.<layer>...``; the command line (``cli``, ``__main__``, ``pipelines``) is the ``cli`` layer."""
    parts = module.split(".")
    if len(parts) == 1:
        return "<root>"
    return "cli" if parts[1] in ENTRY_POINTS else parts[1]


def layer_violations(graph: Graph | dict[str, set[str]]) -> list[str]:
    """Edges that import upward, out of ``losses``, or from/into a file outside the known layers."""
    known = {*LAYERS, LEAF}
    problems = []
    for src, targets in graph.items():
        for dst in targets:
            a, b = layer(src), layer(dst)
            where = f"{src} imports {dst}" + (f" (line {targets[dst]})" if isinstance(targets, dict) else "")
            if b == "<root>" and not graph.get(dst):  # the package root (its version) imports nothing: a leaf
                continue
            if a == "<root>" and b == "<root>":
                continue
            if a not in known or b not in known:
                problems.append(f"{where}: outside the layers {LAYERS} + {LEAF}")
            elif a == LEAF and b != LEAF:
                problems.append(f"{where}: losses imports nothing else of lit_rlhf")
            elif b != LEAF and a != LEAF and LAYERS.index(b) < LAYERS.index(a):
                problems.append(f"{where}: upward ({a} is below {b} in {' → '.join(LAYERS)})")
    return problems


def cycles(graph: Graph | dict[str, set[str]]) -> list[list[str]]:
    """Import circles: the strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def layer_graph(graph: Graph | dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph between layers (edges inside one layer dropped)."""
    out: dict[str, set[str]] = {}
    for src, targets in graph.items():
        for dst in targets:
            if layer(src) != layer(dst):
                out.setdefault(layer(src), set()).add(layer(dst))
    return out


def check(graph: Graph | dict[str, set[str]]) -> list[str]:
    """Every layering problem of ``graph``: upward edges, imports out of ``losses``, circles between files or layers."""
    problems = layer_violations(graph)
    problems += [f"import circle between files: {' ↔ '.join(c)}" for c in cycles(graph)]
    problems += [f"import circle between layers: {' ↔ '.join(c)}" for c in cycles(layer_graph(graph))]
    return problems


def test_lit_rlhf_imports_downward_only_without_circles():
    graph = import_graph()
    assert len(graph) > 50 and sum(map(len, graph.values())) > 100  # the walk found the package's imports
    assert "lit_rlhf.models.checkpoint" in graph["lit_rlhf.rollout.rewards"]
    assert check(graph) == []


def test_function_level_and_relative_imports_are_edges(tmp_path):
    pkg = tmp_path / "lit_rlhf"
    (pkg / "models").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "models" / "__init__.py").write_text("from .spec import Spec\n")
    (pkg / "models" / "spec.py").write_text("Spec = int\n")
    (pkg / "models" / "load.py").write_text("def f():\n    from lit_rlhf import cli\n    import lit_rlhf.data.x\n")
    (pkg / "cli.py").write_text("import json\n")
    graph = import_graph(pkg)
    assert graph["lit_rlhf.models"] == {"lit_rlhf.models.spec": 1}
    assert graph["lit_rlhf.models.load"] == {"lit_rlhf.cli": 2, "lit_rlhf.data.x": 3}
    assert graph["lit_rlhf.cli"] == {}
    assert check(graph) == [
        "lit_rlhf.models.load imports lit_rlhf.cli (line 2): upward (models is below cli in "
        "cli → modules → eval → rollout → data → tasks → models)",
        "lit_rlhf.models.load imports lit_rlhf.data.x (line 3): upward (models is below data in "
        "cli → modules → eval → rollout → data → tasks → models)",
    ]


@pytest.mark.parametrize(
    ("edge", "message"),
    [
        (("lit_rlhf.rollout.rewards", "lit_rlhf.cli"), "upward (rollout is below cli"),
        (("lit_rlhf.data.gatt", "lit_rlhf.rollout.generation"), "upward (data is below rollout"),
        (("lit_rlhf.losses.sft", "lit_rlhf.models.logprobs"), "losses imports nothing else of lit_rlhf"),
        (("lit_rlhf.models.loading", "lit_rlhf.models.checkpoint"), "import circle between files"),  # same layer
    ],
)
def test_the_check_fails_on_an_injected_bad_edge(edge, message):
    graph = {src: set(targets) for src, targets in import_graph().items()}
    assert check(graph) == []
    src, dst = edge
    graph.setdefault(src, set()).add(dst)
    problems = check(graph)
    assert problems and all(message in p or "circle" in p for p in problems)
    assert any(message in p and src in p and dst in p for p in problems)


def test_a_circle_of_downward_edges_between_layers_is_caught():
    # each edge alone is legal (same layer or downward), but tasks → models → tasks closes a circle
    graph = {"lit_rlhf.tasks.a": {"lit_rlhf.models.b"}, "lit_rlhf.models.b": {"lit_rlhf.models.c"},
             "lit_rlhf.models.c": set()}
    assert check(graph) == []
    graph["lit_rlhf.models.c"].add("lit_rlhf.tasks.a")
    assert check(graph) == [
        "lit_rlhf.models.c imports lit_rlhf.tasks.a: upward (models is below tasks in "
        "cli → modules → eval → rollout → data → tasks → models)",
        "import circle between files: lit_rlhf.models.b ↔ lit_rlhf.models.c ↔ lit_rlhf.tasks.a",
        "import circle between layers: models ↔ tasks",
    ]

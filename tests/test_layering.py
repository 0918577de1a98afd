"""The package's architecture as a test: imports point down the layers and never form a loop.

data -> tokenizers -> model -> sampling -> pipeline -> evaluation / training / interfaces.
Loading a run directory (checkpoint.py, device.py) sits below the pipeline, so inference never
imports training code.
"""

from __future__ import annotations

import ast
from pathlib import Path

import tinychameleon

PACKAGE = Path(tinychameleon.__file__).parent

# Lower numbers are lower layers; a module may import only modules of its own layer or below.
LAYERS = [
    ("errors", "io_utils", "config", "batching"),
    ("data",),
    ("tokenizers", "imaging"),
    ("model", "decode_graph", "sequences", "device", "checkpoint", "regions", "nextscale.model",
     "nextscale.objective"),
    ("sampling", "reranking", "pairs", "documents", "retrieval", "nextscale"),
    ("pipeline", "pipeline_completion", "pipeline_retrieval", "pipeline_scales", "tasks"),
    ("evaluation", "training", "bench", "web", "cli", "__main__"),
]


def layer_of(module: str) -> int:
    """The layer of the longest entry of LAYERS that is the module or a package above it (a folder may
    span two layers: nextscale's model sits beside model.py, its sampler beside sampling.py)."""
    parts = module.split(".")
    for length in range(len(parts), 0, -1):
        prefix = ".".join(parts[:length])
        for index, names in enumerate(LAYERS):
            if prefix in names:
                return index
    raise AssertionError(f"module {module} is in no layer: add it to LAYERS")


def package_imports() -> dict[str, set[str]]:
    """module (dotted, relative to the package) -> modules of the package it imports."""
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        is_init = parts[-1] == "__init__"
        if is_init:
            parts = parts[:-1]
        if not parts:
            continue  # the package root only re-exports lazily
        module = ".".join(parts)
        package = parts if is_init else parts[:-1]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package[:len(package) - (node.level - 1)]
                target = base + (node.module.split(".") if node.module else [])
                if target:
                    edges.add(".".join(target))
                else:  # `from . import x`
                    edges.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tinychameleon."):
                edges.add(node.module.removeprefix("tinychameleon."))
        graph[module] = {edge for edge in edges if edge != module}
    return graph


def resolve(graph: dict[str, set[str]], name: str) -> str | None:
    while name and name not in graph:
        name = name.rpartition(".")[0]
    return name or None


def test_imports_point_down():
    graph = package_imports()
    upward = [(module, target) for module, targets in graph.items() for target in targets
              if layer_of(target) > layer_of(module)]
    assert not upward, f"upward imports: {upward}"


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """A list of modules forming an import loop, or None (depth-first search)."""
    state, stack = {}, []

    def visit(module):
        state[module] = "open"
        stack.append(module)
        for target in sorted(edges.get(module, ())):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        stack.pop()
        state[module] = "done"
        return None

    for module in sorted(edges):
        if module not in state:
            found = visit(module)
            if found:
                return found
    return None


def test_no_import_cycles():
    graph = package_imports()
    edges = {module: {resolve(graph, t) for t in targets} - {None, module} for module, targets in graph.items()}
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_inference_never_imports_training():
    graph = package_imports()
    for module in ("pipeline", "sampling", "reranking", "checkpoint", "model", "web.server", "web.worker"):
        assert not any(target.startswith("training") for target in graph[module]), module


def test_the_checker_finds_planted_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None

"""The package's import graph flows one way: traced code -> records -> pipeline -> sinks.

The graph is read from the source with ``ast``: every ``import`` counts, including
the ones inside functions (a lazy import is still a dependency) and under
``TYPE_CHECKING``. ``from .a import b`` counts as importing ``a.b`` when that is a
module, else ``a``. As import-linter and pydeps do, importing ``a.b.c`` is an edge
to ``a.b.c`` only, not to the ``__init__`` of ``a`` and ``a.b`` that Python also runs.
"""

from __future__ import annotations

import ast
from pathlib import Path

import sessiontrace

PACKAGE = Path(sessiontrace.__file__).parent

# Cycles we keep on purpose: frozenset of modules -> why. None today; a new entry
# needs a reason a reviewer agrees with.
ALLOWED_CYCLES: dict[frozenset[str], str] = {}

# The write path below tracing: none of these may reach tracing or the runtime.
BELOW_TRACING = ("_records", "_pipeline", "_store", "_export", "llm._pricing", "server._ingest")
TRACING = {"_tracing", "_runtime"}


def _modules() -> dict[str, tuple[Path, bool]]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts.pop()
        mods[".".join(parts)] = (path, is_pkg)  # "" is the package itself
    return mods


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (names relative to the package)."""
    mods = _modules()

    def known(name: str) -> str | None:
        while name not in mods:
            if not name:
                return None
            name = name.rpartition(".")[0]
        return name

    graph = {}
    for name, (path, is_pkg) in mods.items():
        here = name.split(".") if name else []
        if not is_pkg:
            here = here[:-1]
        out = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here[: len(here) - (node.level - 1)]
                    module = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    module = node.module or ""
                    if module != "sessiontrace" and not module.startswith("sessiontrace."):
                        continue
                    module = module.removeprefix("sessiontrace").lstrip(".")
                for alias in node.names:
                    sub = f"{module}.{alias.name}".lstrip(".")
                    targets.append(sub if sub in mods else module)
            for target in targets:
                if isinstance(node, ast.Import):
                    if target != "sessiontrace" and not target.startswith("sessiontrace."):
                        continue
                    target = target.removeprefix("sessiontrace").lstrip(".")
                found = known(target)
                if found is not None and found != name:
                    out.add(found)
        graph[name] = out
    return graph


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for w in graph[todo.pop()]:
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return seen


def test_the_graph_sees_lazy_and_type_checking_imports() -> None:
    graph = import_graph()
    assert "_store" in graph["_runtime"]  # inside get_store()
    assert "_entities" in graph["_runtime"]  # under TYPE_CHECKING
    assert "_runtime" in graph["_analytics"]  # the default store for store=None
    assert "llm._core" in graph["llm._openai"]  # relative, one level up
    assert "_tracing" in graph[""]  # the package's own __init__


def test_no_import_cycles() -> None:
    graph = import_graph()
    unexpected = [c for c in cycles(graph) if frozenset(c) not in ALLOWED_CYCLES]
    described = [
        {m: sorted(graph[m] & c) for m in sorted(c)}  # each module's imports inside the cycle
        for c in unexpected
    ]
    assert not unexpected, f"import cycles: {described}"


def test_records_import_nothing_from_the_package_but_serialize() -> None:
    assert import_graph()["_records"] <= {"_serialize"}


def test_the_write_path_never_reaches_tracing_or_the_runtime() -> None:
    graph = import_graph()
    below = [m for m in graph if any(m == p or m.startswith(p + ".") for p in BELOW_TRACING)]
    assert len(below) >= 8  # _records, _pipeline, the stores, the exporters, pricing, ingest
    reached = {m: sorted(reachable(graph, m) & TRACING) for m in below}
    assert not {m: r for m, r in reached.items() if r}


def test_search_and_analytics_sit_above_the_stores() -> None:
    graph = import_graph()
    for module in ("_analytics", "_search._api"):
        assert module not in reachable(graph, "_store")
        assert module not in reachable(graph, "_runtime")

"""No import cycles among storyengine's modules, counted honestly (issue 25, item 6).

Every import of a storyengine module is an edge, wherever it is written: at module level, in a
function or method body, in an `if`/`try` block, and under `if TYPE_CHECKING:` (a cycle that
only type checking sees is still a cycle in the design). Relative imports are resolved, and
`from pkg import name` is an edge to the submodule `pkg.name` when there is one, else to `pkg`
(whose `__init__.py` defines the name). `importlib.import_module("storyengine.x")` counts too;
an f-string argument whose constant head is `storyengine.pkg.` counts as an import of every
module of that package (it may load any of them).

Importing `storyengine.a.b` also runs `storyengine/a/__init__.py`; that implicit edge to the
parent packages is not counted (a package that re-exports its submodules would otherwise be a
cycle with each of them), but an explicit import of a package, `from storyengine.a import X`, is
an edge to `storyengine/a/__init__.py`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "storyengine"

# Cycles not fixed yet (none): the test subtracts them, and fails when one of them is no longer a
# cycle (the set can only shrink: delete the entry in the commit that breaks the cycle).
PENDING_CYCLES: frozenset[frozenset[str]] = frozenset()


def module_files(root: Path) -> dict[str, Path]:
    """Every module of the package at `root`, by dotted name (`pkg/__init__.py` is `pkg`)."""
    modules: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        modules[".".join(parts)] = path
    return modules


def _import_module_target(call: ast.Call) -> str | None:
    """The dotted head of `importlib.import_module(...)`'s argument: a literal, or an f-string's
    constant head ending in "." (then the call may import any module under it)."""
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    if name not in {"import_module", "__import__"} or not call.args:
        return None
    arg = call.args[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    if isinstance(arg, ast.JoinedStr) and arg.values:
        head = arg.values[0]
        if isinstance(head, ast.Constant) and isinstance(head.value, str) and head.value.endswith("."):
            return head.value + "*"
    return None


def imported_modules(name: str, path: Path, modules: Mapping[str, Path]) -> set[str]:
    """The modules of `modules` that module `name` (at `path`) imports anywhere in its text."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def add(target: str) -> None:
        if target.endswith(".*"):  # importlib with an f-string: any module of that package
            prefix = target[:-1]
            found.update(m for m in modules if m.startswith(prefix))
            return
        while target and target not in modules:  # `import a.b.c` where only `a.b` is ours, etc.
            target = target.rpartition(".")[0]
        if target:
            found.add(target)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules or alias.name.startswith(tuple(f"{m}." for m in modules)):
                    add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                if node.level - 1 > len(base_parts) - 1:
                    raise AssertionError(f"{path}:{node.lineno}: relative import beyond the top package")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base not in modules and not any(base.startswith(f"{m}.") for m in modules):
                continue  # a third-party or standard module
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                add(submodule if submodule in modules else base)
        elif isinstance(node, ast.Call):
            target = _import_module_target(node)
            if target is not None and (target in modules or any(target.startswith(f"{m}.") for m in modules)):
                add(target)
    found.discard(name)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    modules = module_files(root)
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def strongly_connected(graph: Mapping[str, set[str]]) -> Iterator[frozenset[str]]:
    """Tarjan's strongly connected components (iterative), each as a set of nodes."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for nxt in successors:
                if nxt not in graph:
                    continue
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    yield frozenset(component)


def cycles(graph: Mapping[str, set[str]]) -> set[frozenset[str]]:
    """Every group of modules that import each other, directly or not (a module's import of
    itself is not an edge: `imported_modules` leaves it out)."""
    return {component for component in strongly_connected(graph) if len(component) > 1}


def _describe(component: frozenset[str], graph: Mapping[str, set[str]]) -> str:
    edges = sorted(f"{a} -> {b}" for a in component for b in graph[a] if b in component)
    return "{" + ", ".join(sorted(component)) + "}: " + "; ".join(edges)


def test_the_import_graph_of_src_has_no_cycle() -> None:
    graph = import_graph(SRC)
    assert "storyengine.pipeline.engine" in graph and "storyengine.commands.generate" in graph
    found = cycles(graph)
    new = found - PENDING_CYCLES
    gone = PENDING_CYCLES - found
    problems = []
    if new:
        problems.append(
            f"{len(new)} import cycle(s):\n"
            + "\n".join("  " + _describe(c, graph) for c in sorted(new, key=sorted))
        )
    if gone:
        problems.append(
            "no longer a cycle, remove from PENDING_CYCLES:\n"
            + "\n".join("  {" + ", ".join(sorted(c)) + "}" for c in sorted(gone, key=sorted))
        )
    assert not problems, "\n".join(problems)


def _write(root: Path, files: Mapping[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_the_detector_finds_cycles_hidden_in_functions_and_type_checking(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            # a cycle whose one edge is inside a method body, through a relative submodule import
            "pkg/a.py": "from .b import thing\n",
            "pkg/b.py": (
                "thing = 1\n"
                "class C:\n"
                "    def m(self):\n"
                "        try:\n"
                "            from . import a\n"
                "        except ImportError:\n"
                "            pass\n"
            ),
            # a cycle whose one edge is only seen by type checkers, through `from .. import name`
            "pkg/sub/__init__.py": "from ..c import helper\n",
            "pkg/c.py": (
                "from typing import TYPE_CHECKING\n"
                "import json\n"
                "if TYPE_CHECKING:\n"
                "    from pkg.sub import d\n"
                "def helper(): ...\n"
            ),
            "pkg/sub/d.py": "from .. import c\n",
            # no cycle: a name imported from a package, and a third-party import
            "pkg/e.py": "from . import thing_in_init\nimport os.path\n",
        },
    )
    graph = import_graph(tmp_path / "pkg")
    assert graph["pkg.a"] == {"pkg.b"}
    assert graph["pkg.b"] == {"pkg.a"}
    assert graph["pkg.sub"] == {"pkg.c"}
    assert graph["pkg.c"] == {"pkg.sub.d"}
    assert graph["pkg.sub.d"] == {"pkg.c"}
    assert graph["pkg.e"] == {"pkg"}
    assert cycles(graph) == {frozenset({"pkg.a", "pkg.b"}), frozenset({"pkg.c", "pkg.sub.d"})}

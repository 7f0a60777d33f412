"""The import graph: no cycles among sr3 modules, no sr3 import hidden inside a function,
and library modules never import the command-line layer (sr3.commands, sr3.cli)."""

from __future__ import annotations

import ast
from pathlib import Path

import sr3

ROOT = Path(sr3.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> tuple[set[str], list[str]]:
    """(sr3 modules imported at module level, sr3 imports found inside functions/classes' methods)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    top, hidden = set(), []

    def targets(node) -> list[str]:
        if isinstance(node, ast.Import):
            return [a.name for a in node.names if a.name.split(".")[0] == "sr3"]
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "sr3":
                return []
            # "from . import x" / "from .pkg import mod" may name submodules
            subs = [f"{mod}.{a.name}" for a in node.names if (ROOT.parent / f"{mod}.{a.name}".replace(".", "/")).with_suffix(".py").exists()
                    or (ROOT.parent / f"{mod}.{a.name}".replace(".", "/") / "__init__.py").exists()]
            return subs or [mod]
        return []

    for node in tree.body:
        top.update(targets(node))
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                hidden += [f"{name}:{inner.lineno} imports {t}" for t in targets(inner)]
    return top, hidden


def _graph() -> tuple[dict[str, set[str]], list[str]]:
    graph, hidden = {}, []
    for path in sorted(ROOT.rglob("*.py")):
        top, inside = _imports(path)
        graph[_module_name(path)] = top
        hidden += inside
    return graph, hidden


def test_no_sr3_import_inside_a_function():
    _, hidden = _graph()
    assert hidden == []


def test_the_import_graph_has_no_cycle():
    graph, _ = _graph()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    cycles = []

    def visit(node, path):
        state[node] = 1
        for dep in graph.get(node, ()):
            if dep == node or dep not in graph:
                continue
            if state.get(dep) == 1:
                cycles.append(path[path.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, path + [dep])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_library_modules_do_not_import_the_command_line():
    graph, _ = _graph()
    cli_layer = {m for m in graph if m.startswith("sr3.commands") or m in ("sr3.cli", "sr3.__main__")}
    offenders = {m: sorted(deps & cli_layer) for m, deps in graph.items() if m not in cli_layer and deps & cli_layer}
    assert offenders == {}


def test_the_objective_is_looked_up_in_one_module():
    """Regression vs diffusion is decided by the denoiser registry (sr3/diffusion.py); the method registry
    only checks that a model was trained with the objective its method needs."""
    readers = sorted(p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*.py")
                     if any(isinstance(n, ast.Attribute) and n.attr == "objective" for n in ast.walk(ast.parse(p.read_text()))))
    assert readers == ["diffusion.py", "methods.py"]
    source = "".join(p.read_text() for p in ROOT.rglob("*.py"))
    assert '== "regression"' not in source and '!= "regression"' not in source

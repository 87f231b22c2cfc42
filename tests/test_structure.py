"""The package's shape: no import cycles, one way to run git, thin commands.

These read the source with ``ast`` (nothing is executed), so they say which
module and line break a rule.
"""
from __future__ import annotations

import ast
from pathlib import Path

import datalad_registry_ext

PACKAGE = Path(datalad_registry_ext.__file__).parent
NAME = "datalad_registry_ext"


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).with_suffix("")
        parts = [NAME, *rel.parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _module_level_imports(module: str, path: Path, known) -> list[tuple[str, int]]:
    """Modules of ours imported at module level (not inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in tree.body:
        stmts = [node]
        if isinstance(node, ast.Try):  # optional-import blocks
            stmts = node.body + [h for x in node.handlers for h in x.body]
        for st in stmts:
            if isinstance(st, ast.Import):
                names = [a.name for a in st.names]
            elif isinstance(st, ast.ImportFrom):
                target = _resolve(module, st, path.name == "__init__.py")
                names = [target] + [f"{target}.{a.name}" for a in st.names]
            else:
                continue
            for n in names:
                if n in known:
                    out.append((n, st.lineno))
    return out


def _graph():
    mods = _modules()
    return mods, {m: {t for t, _ in _module_level_imports(m, p, mods)} - {m}
                  for m, p in mods.items()}


def test_no_import_cycles():
    mods, graph = _graph()
    # a package imports its own submodules: that is not a cycle of ours
    for m in graph:
        graph[m] = {t for t in graph[m] if not t.startswith(m + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycle = stack[stack.index(t):] + [t]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if not state.get(t):
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if not state.get(m):
            visit(m)


def test_only_gitcmd_starts_processes():
    offenders = []
    for module, path in _modules().items():
        if module == f"{NAME}.gitcmd":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(
                    node.value, ast.Name) and node.value.id == "subprocess" \
                    and node.attr in ("run", "Popen", "call", "check_output",
                                      "check_call"):
                offenders.append(f"{module}:{node.lineno}")
            if isinstance(node, ast.Attribute) and node.attr in (
                    "system", "popen") and isinstance(node.value, ast.Name) \
                    and node.value.id == "os":
                offenders.append(f"{module}:{node.lineno}")
    assert not offenders, offenders


def test_domain_speaks_no_datalad_interface():
    """Only command modules build result records or renderers."""
    interface_names = {"get_status_dict", "eval_results", "Interface",
                       "build_doc", "ui"}
    offenders = []
    for module, path in _modules().items():
        if module.startswith(f"{NAME}.commands"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and \
                    node.module.startswith("datalad.") and any(
                        a.name in interface_names for a in node.names):
                offenders.append(f"{module}:{node.lineno}")
    assert not offenders, offenders


def test_commands_do_no_domain_work():
    """Command modules import no storage, git or file-writing modules: they
    call one domain function and render its outcomes."""
    low_level = {f"{NAME}.{m}" for m in (
        "gitcmd", "files", "index", "engine", "clones", "facts", "registry",
        "aggregate", "extraction", "index_sync")}
    mods, graph = _graph()
    offenders = {m: sorted(graph[m] & low_level) for m in graph
                 if m.startswith(f"{NAME}.commands") and graph[m] & low_level}
    assert not offenders, offenders

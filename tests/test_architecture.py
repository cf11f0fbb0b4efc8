"""docs/ARCHITECTURE.md, "Layers and imports", checked on the source: every import, at the top
of a module or inside a function, counts."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("trainers", "analysis", "orchestrator")
# What each layer may import of this package (itself is always allowed).
MAY_IMPORT = {"trainers": set(), "analysis": set(), "orchestrator": {"analysis", "trainers"}}
FORBIDDEN_THIRD_PARTY = {"trainers": {"ray", "optuna", "mlflow"}, "analysis": {"ray", "optuna"}}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (``from . import x`` gives ``pkg.x``)."""
    mod = _module_name(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}
    return out


def _graph() -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    names = {_module_name(p) for p in files}
    return {_module_name(p): {i for i in _imports(p) if i in names} - {_module_name(p)} for p in files}


def test_layers_import_only_what_the_architecture_allows():
    bad = []
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            for name in _imports(path):
                top = name.split(".")[0]
                if top in PACKAGES and top != pkg and top not in MAY_IMPORT[pkg]:
                    bad.append(f"{_module_name(path)} imports {name}")
                if top in FORBIDDEN_THIRD_PARTY.get(pkg, ()):
                    bad.append(f"{_module_name(path)} imports {name}")
    assert not bad, bad


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as ``[a, b, ..., a]``, or None (depth-first search)."""
    done: set[str] = set()

    def visit(m: str, stack: list[str]) -> list[str] | None:
        if m in stack:
            return stack[stack.index(m) :] + [m]
        if m in done:
            return None
        for d in sorted(graph.get(m, ())):
            cycle = visit(d, stack + [m])
            if cycle:
                return cycle
        done.add(m)
        return None

    for m in sorted(graph):
        cycle = visit(m, [])
        if cycle:
            return cycle
    return None


def test_no_import_cycle_between_modules():
    # a package's __init__ importing its own modules (and they the package) is not a cycle between modules
    graph = {m: {d for d in deps if d not in PACKAGES} for m, deps in _graph().items() if m not in PACKAGES}
    assert find_cycle(graph) is None


def test_the_cycle_check_finds_the_old_sweep_tune_base_tune_runner_circle():
    graph = {m: {d for d in deps if d not in PACKAGES} for m, deps in _graph().items() if m not in PACKAGES}
    graph["orchestrator.engine.tune_runner"] = graph["orchestrator.engine.tune_runner"] | {
        "orchestrator.studies.tune_base"
    }
    cycle = find_cycle(graph)
    assert (
        cycle
        and cycle[0] == cycle[-1]
        and "orchestrator.engine.tune_runner" in cycle
        and "orchestrator.studies.tune_base" in cycle
    )


def test_code_outside_trainers_uses_only_its_public_api():
    """orchestrator/ and analysis/ import what trainers/__init__.py exports, never a private ``trainers._x``."""
    private = [
        f"{p.relative_to(ROOT)}: {name}"
        for pkg in ("orchestrator", "analysis")
        for p in (ROOT / pkg).rglob("*.py")
        for name in _imports(p)
        if name.startswith("trainers._")
    ]
    assert not private, private

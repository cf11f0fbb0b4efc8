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


# ---- the sweep-file model in one place (issue 27) ----------------------------------------------
# A BadInput about a sweep file's content names the file first: ``f"{src}: key=..."`` or
# ``f"{sweep.source}: ..."``. Such checks live in orchestrator/spec/ (validate.py; config.py loads).
# Outside it only checks of the file against the machine (what this host or the cluster offers) may
# name the file; each is listed by function.
MACHINE_CHECKS = {
    ("orchestrator/engine/preflight.py", "check_local_resources"),  # resources vs this host's CPUs/GPUs
}
# Copies of spec/validate.py's checks still outside it, to be replaced by calls (issue 27's report).
# The count may only go down.
PENDING = {}


def _names_the_file(expr: ast.AST, aliases: set[str]) -> bool:
    """Whether ``expr`` mentions the sweep file's name: ``src``, ``<x>.source``, or a local name built from them."""
    for node in ast.walk(expr):
        if isinstance(node, ast.Name) and (node.id == "src" or node.id in aliases):
            return True
        if isinstance(node, ast.Attribute) and node.attr == "source":
            return True
    return False


def sweep_file_checks(source: str) -> list[tuple[str, int]]:
    """``(function, line)`` of every ``raise BadInput(...)`` in ``source`` whose message names the sweep file."""
    found = []
    for fn in ast.walk(ast.parse(source)):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        aliases: set[str] = set()
        for node in ast.walk(fn):  # where = f"{src}: search.space.{name}", then raise BadInput(f"{where}: ...")
            if isinstance(node, ast.Assign) and _names_the_file(node.value, aliases):
                aliases |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        for node in ast.walk(fn):
            if (
                isinstance(node, ast.Raise)
                and isinstance(node.exc, ast.Call)
                and getattr(node.exc.func, "id", None) == "BadInput"
                and any(_names_the_file(a, aliases) for a in node.exc.args)
            ):
                found.append((fn.name, node.lineno))
    return found


def test_sweep_file_validation_lives_in_spec():
    counts: dict[tuple[str, str], list[int]] = {}
    for path in (ROOT / "orchestrator").rglob("*.py"):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("orchestrator/spec/"):
            continue
        for fn, line in sweep_file_checks(path.read_text()):
            counts.setdefault((rel, fn), []).append(line)
    # nested functions are walked twice (as themselves and inside their parent): count lines once
    counts = {k: sorted(set(v)) for k, v in counts.items()}
    bad = {k: v for k, v in counts.items() if k not in MACHINE_CHECKS and len(v) > PENDING.get(k, 0)}
    assert not bad, f"BadInput about a sweep file's keys outside orchestrator/spec/ (move it to validate.py): {bad}"


def test_the_validation_check_finds_a_search_space_check_outside_spec():
    old = (
        "def search_space(sweep):\n"
        "    for name, spec in sweep.config.search.space.items():\n"
        "        where = f'{sweep.source}: search.space.{name}'\n"
        "        if name == 'width':\n"
        "            raise BadInput(f'{where}: width cannot be searched')\n"
        "def tune_base(cfg, src, trials):\n"
        "    if trials <= 0:\n"
        "        raise BadInput(f\"{'--trials' if trials else src + ': search.trials'}={trials!r}\")\n"
        "def connect(shown):\n"
        "    raise BadInput(f'{shown}: cannot connect to Ray')\n"
    )
    assert [fn for fn, _ in sweep_file_checks(old)] == ["search_space", "tune_base"]


def _string_literals(path: Path):
    """``(line, set of str constants)`` of every tuple, list or set display in ``path`` (starred parts left out)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            consts = {e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
            if consts:
                yield node.lineno, consts


def test_group_and_axis_keys_are_defined_once():
    """The group keys and the axes are spelled out only in analysis/schema.py; every other module imports them."""
    from analysis import schema, transfer
    from orchestrator.studies import tune_base, verify

    spelled = {frozenset(schema.GROUP_KEYS): "GROUP_KEYS", frozenset(schema.AXES): "AXES"}
    copies = [
        f"{path.relative_to(ROOT)}:{line} spells out {spelled[frozenset(consts)]}"
        for pkg in PACKAGES
        for path in (ROOT / pkg).rglob("*.py")
        if path != ROOT / "analysis" / "schema.py"
        for line, consts in _string_literals(path)
        if frozenset(consts) in spelled
    ]
    assert not copies, copies
    assert transfer.GROUP_KEYS is verify.GROUP_KEYS is schema.GROUP_KEYS and transfer.AXES is schema.AXES
    assert set(tune_base.NOT_GROUPED) == {*schema.AXES, "parametrization"}


def test_the_command_line_starts_without_the_heavy_libraries():
    """`mutransfer --help` and the driver's `analysis.schema` load none of torch, Ray, MLflow, pandas or
    matplotlib (each costs a second or more of every command's start-up; `analysis` exports lazily)."""
    import subprocess
    import sys

    heavy = ("torch", "ray", "mlflow", "pandas", "matplotlib")
    code = (
        "import sys, analysis.schema; from orchestrator.cli.main import build_parser; build_parser(); "
        f"print(sorted(h for h in {heavy!r} if h in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    import analysis

    assert analysis.analyze.__module__ == "analysis.transfer" and set(analysis.__all__) <= set(dir(analysis))

"""The package's shape: layers import downwards only, no stage imports another stage, no import cycles."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
STAGES = {"emwb.datasets", "emwb.finetune", "emwb.sampling", "emwb.judge", "emwb.analysis", "emwb.basemodel",
          "emwb.mechanisms",
          "emwb.detect", "emwb.features"}
LOWER = {"emwb.errors", "emwb.yamlio", "emwb.config", "emwb.schema_text", "emwb.recipes", "emwb.registry",
         "emwb.sqlite_cache", "emwb.runlock", "emwb.threads", "emwb.plan", "emwb.overrides", "emwb.plugins",
         "emwb.store", "emwb.layout", "emwb.models", "emwb.catalog", "emwb.stages", "emwb.context",
         "emwb.secret_urls", "emwb.freshness"}  # core, models, catalogue: below every stage
ORGANISMS = {"emwb.organisms"}  # register into the stages' registries; loaded as plug-ins (emwb.plugins)
TOP = {"emwb.check", "emwb.pipeline", "emwb.cli", "emwb.ray_executor", "emwb.judgebench", "emwb.status",
       "emwb.run_tools", "emwb.interop", "emwb.labelling"}


def _modules() -> dict[str, Path]:
    out = {}
    for p in (SRC / "emwb").rglob("*.py"):
        parts = list(p.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = p
    return out


def _runtime(tree: ast.AST) -> ast.AST:
    """The module without its `if TYPE_CHECKING:` blocks (annotations only: no import at run time)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
            node.body = [ast.Pass()]
    return tree


def _imports(path: Path, name: str, modules: set[str], typing: bool = True) -> set[str]:
    """emwb modules imported anywhere in the file (top level or inside functions); without `typing`, the
    imports under `if TYPE_CHECKING:` are left out."""
    found = set()
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree if typing else _runtime(tree)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(pkg.split(".")[: len(pkg.split(".")) - node.level + 1] + ([base] if base else []))
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names}
    return {m for m in found if m in modules}


def _group(module: str, groups: set[str]) -> str | None:
    return next((g for g in groups if module == g or module.startswith(g + ".")), None)


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: _imports(p, m, set(mods)) for m, p in mods.items()}


def test_every_module_is_in_a_layer(graph):
    assert not [m for m in graph if m != "emwb" and not _group(m, STAGES | LOWER | TOP | ORGANISMS)]


def test_no_stage_imports_another_stage(graph):
    bad = [(m, d) for m, deps in graph.items() for d in deps
           if _group(m, STAGES) and _group(d, STAGES) and _group(m, STAGES) != _group(d, STAGES)]
    assert not bad, bad


def test_lower_layers_import_no_stage_and_no_pipeline(graph):
    bad = [(m, d) for m, deps in graph.items() for d in deps
           if _group(m, LOWER | STAGES) and _group(d, ORGANISMS | TOP) or _group(m, LOWER) and _group(d, STAGES)]
    assert not bad, bad


def test_no_import_cycles():
    """No cycle among the imports made at run time (a type named in an annotation may point up: the stage
    table's entry points take the context, which reads the layout, which names the table's stages)."""
    mods = _modules()
    graph = {m: _imports(p, m, set(mods), typing=False) for m, p in mods.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycles.append(path[path.index(d):] + [d])
            elif d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, cycles


def test_the_graph_sees_real_imports(graph):
    """The checks above can fail: the parser does find stage-to-lower imports."""
    assert "emwb.layout" in graph["emwb.sampling.stage"] and "emwb.catalog.evaluations" in graph["emwb.check"]


def test_functions_and_modules_stay_small():
    """House style: no function over 60 lines, no module over 400."""
    long_functions, long_modules = [], []
    for p in (SRC / "emwb").rglob("*.py"):
        text = p.read_text()
        if text.count("\n") > 400:
            long_modules.append(str(p.relative_to(SRC)))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                long_functions.append(f"{p.relative_to(SRC)}:{node.lineno} {node.name}")
    assert not long_functions and not long_modules, (long_functions, long_modules)

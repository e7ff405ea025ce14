"""The package map holds: dependencies point one way, no import circles, no oversized module.

Layers of the runtime package, lowest first (docs/architecture.md draws them). A module may
import its own layer or a lower one, never a higher one; imports inside functions count too.

    0 base        errors, settings, observability, read_ahead (and the package itself: __version__)
    1 format      envelope, keys, manifest, record stream, key classes, RDB, token store file
    2 adapters    one per external service: S3, Secrets Manager/SSM, files, ElastiCache, Redis, HTTP
    3 store       backup sets in S3, audit records, locks
    4 services    the composition root the components and workflows receive
    5 components  config, tokens, Redis per source mode
    6 workflows   backup, restore, freshness: the steps the state machines call
    7 entry       the CLI and what the handlers share (handler_support)
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .template_helpers import REPO_ROOT

pytestmark = pytest.mark.unit

RUNTIME = REPO_ROOT / "layers" / "shared"
LOCAL = REPO_ROOT / "local"
PACKAGE = "servalsheets_backup"
LAYERS = (
    {"errors", "settings", "observability", "read_ahead", ""},
    {"format"},
    {"adapters"},
    {"store"},
    {"services"},
    {"components"},
    {"workflows"},
    {"cli", "handler_support"},
)
MAX_MODULE_LINES = 500


def _modules(root: Path, package: str) -> dict[str, Path]:
    found = {}
    for path in (root / package).rglob("*.py"):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules(RUNTIME, PACKAGE)


def _imports(module: str, path: Path) -> set[str]:
    """Runtime-package modules ``module`` imports, at module level or inside functions."""
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == PACKAGE:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                targets.add(submodule if submodule in MODULES else node.module)
        elif isinstance(node, ast.Import):
            targets.update(a.name for a in node.names if a.name.split(".")[0] == PACKAGE)
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{module}: relative import; name the module in full")
    return {target for target in targets if target in MODULES and target != module}


GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}


def layer_of(module: str) -> int:
    """The layer index of a runtime module (KeyError for a module outside the map)."""
    return next(index for index, names in enumerate(LAYERS) if _head(module) in names)


def _head(module: str) -> str:
    return module.removeprefix(PACKAGE).removeprefix(".").split(".")[0]


def test_every_module_belongs_to_a_layer() -> None:
    assert [module for module in MODULES if not any(_head(module) in names for names in LAYERS)] == []


def test_dependencies_point_down_the_layers() -> None:
    upward = sorted(
        f"{module} -> {target}"
        for module, targets in GRAPH.items()
        for target in targets
        if layer_of(target) > layer_of(module)
    )
    assert upward == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circle() -> None:
    assert _cycles(GRAPH) == []


def test_the_cycle_finder_finds_one() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("root", [RUNTIME, LOCAL], ids=["runtime", "local"])
def test_no_module_is_over_500_lines(root: Path) -> None:
    sizes = {
        str(path.relative_to(REPO_ROOT)): len(path.read_text().splitlines())
        for path in root.rglob("*.py")
        if "egg-info" not in str(path)
    }
    assert {path: lines for path, lines in sizes.items() if lines > MAX_MODULE_LINES} == {}


def test_handlers_are_thin_and_call_the_workflows() -> None:
    for app in sorted((REPO_ROOT / "functions").glob("*/app.py")):
        imported = _imports(app.parent.name, app)
        assert imported, f"{app}: a handler calls the runtime package"
        assert all(layer_of(m) >= layer_of(f"{PACKAGE}.workflows") for m in imported), (app, imported)
        assert len(app.read_text().splitlines()) <= 40, f"{app} is more than a thin adapter"


_LOAD_HANDLERS = """
import importlib.util, sys
for path in sys.argv[1:]:
    spec = importlib.util.spec_from_file_location("app", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
print(sorted(name for name in ("pydantic", "moto", "samtranslator") if name in sys.modules))
"""


def test_no_handler_loads_the_validation_models_when_lambda_imports_it() -> None:
    # pydantic (the request and job models) loads when a step runs: handler imports stay within
    # the cold-start budget of docs/benchmarks.md. Imports inside functions are the mechanism.
    handlers = sorted(str(path) for path in (REPO_ROOT / "functions").glob("*/app.py"))
    env = {
        **os.environ,
        "PYTHONPATH": str(RUNTIME),
        "AWS_DEFAULT_REGION": "us-east-1",
        "POWERTOOLS_TRACE_DISABLED": "true",
    }
    done = subprocess.run(  # noqa: S603 - this interpreter, fixed code, the repository's handlers
        [sys.executable, "-c", _LOAD_HANDLERS, *handlers], env=env, capture_output=True, text=True, check=True
    )
    assert len(handlers) == 20 and done.stdout.strip() == "[]"

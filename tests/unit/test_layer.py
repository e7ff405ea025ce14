"""The Lambda layer ships the runtime package only: no drill, no harness, no moto.

``SharedLayer``'s ContentUri is what ``sam build`` copies into the layer (beside the pinned
requirements it installs). These tests list that folder as SAM would, pin the list, and import
every runtime module and every handler in a fresh interpreter in which the local distribution
and the development dependencies cannot be imported at all.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tools import build_layer

from .template_helpers import REPO_ROOT, source_template

pytestmark = pytest.mark.unit

# What the local distribution and the tests bring; none of it may be needed at run time.
LOCAL_ONLY = ("moto", "yaml", "samtranslator", "cfnlint", "pytest", "servalsheets_backup_local")
# Launchers (redis-server, moto) are the harness's business: runtime code starts no process.
NOT_IN_RUNTIME_CODE = (*LOCAL_ONLY, "subprocess")

LAYER_FILES = """
requirements.txt
servalsheets_backup/__init__.py
servalsheets_backup/adapters/__init__.py
servalsheets_backup/adapters/app_health.py
servalsheets_backup/adapters/aws.py
servalsheets_backup/adapters/elasticache.py
servalsheets_backup/adapters/files.py
servalsheets_backup/adapters/redis_client.py
servalsheets_backup/adapters/redis_cluster.py
servalsheets_backup/adapters/redis_replication.py
servalsheets_backup/adapters/s3.py
servalsheets_backup/adapters/secrets.py
servalsheets_backup/cli/__init__.py
servalsheets_backup/cli/main.py
servalsheets_backup/cli/restore.py
servalsheets_backup/cli/standby.py
servalsheets_backup/components/__init__.py
servalsheets_backup/components/config.py
servalsheets_backup/components/pending.py
servalsheets_backup/components/redis_logical/__init__.py
servalsheets_backup/components/redis_logical/cluster.py
servalsheets_backup/components/redis_logical/component.py
servalsheets_backup/components/redis_logical/dump.py
servalsheets_backup/components/redis_logical/restore.py
servalsheets_backup/components/redis_logical/verify.py
servalsheets_backup/components/redis_rdb_stream.py
servalsheets_backup/components/redis_snapshot.py
servalsheets_backup/components/redis_snapshot_restore.py
servalsheets_backup/components/tokens.py
servalsheets_backup/errors.py
servalsheets_backup/format/__init__.py
servalsheets_backup/format/dump_payload.py
servalsheets_backup/format/encoding.py
servalsheets_backup/format/envelope.py
servalsheets_backup/format/envelope_v2.py
servalsheets_backup/format/keys.py
servalsheets_backup/format/manifest.py
servalsheets_backup/format/rdb.py
servalsheets_backup/format/rdb_entries.py
servalsheets_backup/format/redis_keys.py
servalsheets_backup/format/redis_slots.py
servalsheets_backup/format/redis_stream.py
servalsheets_backup/format/tokenstore.py
servalsheets_backup/handler_support.py
servalsheets_backup/observability.py
servalsheets_backup/services.py
servalsheets_backup/read_ahead.py
servalsheets_backup/settings.py
servalsheets_backup/store/__init__.py
servalsheets_backup/store/audit.py
servalsheets_backup/store/locks.py
servalsheets_backup/store/object_reader.py
servalsheets_backup/store/replicas.py
servalsheets_backup/store/sets.py
servalsheets_backup/workflows/__init__.py
servalsheets_backup/workflows/backup.py
servalsheets_backup/workflows/backup_steps.py
servalsheets_backup/workflows/freshness.py
servalsheets_backup/workflows/requests.py
servalsheets_backup/workflows/restore/__init__.py
servalsheets_backup/workflows/restore/apply.py
servalsheets_backup/workflows/restore/common.py
servalsheets_backup/workflows/restore/finish.py
servalsheets_backup/workflows/restore/job.py
servalsheets_backup/workflows/restore/preflight.py
servalsheets_backup/workflows/restore/prepare.py
servalsheets_backup/workflows/restore/redis_shards.py
servalsheets_backup/workflows/restore/rollback.py
servalsheets_backup/workflows/restore/run.py
servalsheets_backup/workflows/restore/safety.py
servalsheets_backup/workflows/restore/verify.py
servalsheets_backup/workflows/retries.py
""".split()


def layer_root() -> Path:
    """The folder SharedLayer's ContentUri names."""
    layer = source_template()["Resources"]["SharedLayer"]
    return REPO_ROOT / layer["Properties"]["ContentUri"]


def layer_files() -> list[str]:
    """Files ``sam build`` copies from ContentUri, as ``make layer`` selects them."""
    root = layer_root()
    return [str(path.relative_to(root)) for path in build_layer.layer_sources(root)]


def test_the_layer_holds_exactly_the_runtime_package() -> None:
    assert layer_files() == sorted(LAYER_FILES)


def _imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module.split(".")[0])
    return modules


def test_no_runtime_module_imports_the_harness_or_a_development_dependency() -> None:
    python_files = [*layer_root().rglob("*.py"), *(REPO_ROOT / "functions").rglob("*.py")]
    offenders = {
        str(path.relative_to(REPO_ROOT)): sorted(_imported_modules(path) & set(NOT_IN_RUNTIME_CODE))
        for path in python_files
    }
    assert {path: found for path, found in offenders.items() if found} == {}


def test_every_module_and_handler_imports_without_the_local_distribution() -> None:
    # A fresh interpreter in which the local distribution and the development dependencies
    # cannot be imported at all, like the Lambda runtime with only the layer on its path.
    script = textwrap.dedent(
        f"""
        import importlib, importlib.abc, importlib.util, io, pkgutil, sys
        from pathlib import Path

        class Refuse(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {LOCAL_ONLY!r}:
                    raise ImportError(f"{{name}} is not in the layer")
                return None

        sys.meta_path.insert(0, Refuse())
        sys.path[:] = [p for p in sys.path if not p.rstrip("/").endswith("local")]
        sys.path.insert(0, {str(layer_root())!r})
        import servalsheets_backup
        for info in pkgutil.walk_packages(servalsheets_backup.__path__, "servalsheets_backup."):
            importlib.import_module(info.name)
        for app in sorted(Path({str(REPO_ROOT / "functions")!r}).glob("*/app.py")):
            spec = importlib.util.spec_from_file_location(app.parent.name, app)
            spec.loader.exec_module(importlib.util.module_from_spec(spec))
        from servalsheets_backup.cli.main import program
        from servalsheets_backup.errors import InvalidInputError
        try:
            program(["drill", "--keys", "10"], io.StringIO(), io.StringIO())
        except InvalidInputError as exc:
            print("drill:", exc)
        """
    )
    done = subprocess.run(  # noqa: S603 - this interpreter, a fixed script
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "drill: the drill is not installed" in done.stdout and "make drill" in done.stdout

"""The state machines read only fields the typed workflow state declares.

Every JSONPath a definition reads from the state data (Choice ``Variable``s, ``SecondsPath``,
``...Path`` and ``"key.$"`` parameters) starts at a root that one model describes: the backup
machine's ``$.pending`` (``PendingSet``), ``$.plan`` (``BackupPlan``), ``$.snapshot``
(``SnapshotPoll``), ``$.sharding`` (``ShardingPlan``) and its Map's ``$.shard`` (``ShardDump``),
the restore machine's ``$.job`` (``RestoreJob``) and its Map's ``$.part`` (``RestorePart``). A
misspelt field in the ASL, or a field renamed in the code, fails here instead of reading as null
in a Choice state.
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from servalsheets_backup.components.pending import PendingSet
from servalsheets_backup.components.redis_logical.component import ShardDump
from servalsheets_backup.workflows.backup_steps import BackupPlan, ShardingPlan, SnapshotPoll
from servalsheets_backup.workflows.restore.job import RestoreJob, RestorePart

from .template_helpers import STATEMACHINES_DIR

pytestmark = pytest.mark.unit

MODELS: dict[str, dict[str, Any]] = {
    "backup": {
        "pending": PendingSet,
        "plan": BackupPlan,
        "snapshot": SnapshotPoll,
        "sharding": ShardingPlan,
        "shard": ShardDump,  # inside the Map's iterations
        "shard_dumps": list[ShardDump],  # the Map's result
    },
    "restore": {"job": RestoreJob, "part": RestorePart, "redis_parts": list[RestorePart]},
}
# Roots that hold no workflow state: what Step Functions writes ($.error from a Catch) and what
# the machine passes on whole or collects for its final output.
FREE_ROOTS = {
    "error",
    "failure",
    "failure_error",
    "result",
    "summary",
    "maintenance_end",
    "maintenance_error",
}
_PATH = re.compile(r"^\$((?:\.[A-Za-z_][\w]*)*)$")


def _paths(node: Any) -> Iterator[str]:
    """Every state-data JSONPath a definition reads."""
    if isinstance(node, dict):
        for key, value in node.items():
            reads = key == "Variable" or key.endswith("Path") or key.endswith(".$")
            if reads and isinstance(value, str) and value.startswith("$."):
                yield value
            yield from _paths(value)
    elif isinstance(node, list):
        for item in node:
            yield from _paths(item)


def _field_type(model: Any, name: str) -> Any | None:
    """The type of ``model``'s field ``name`` (by alias for pydantic), or None when it has none."""
    if isinstance(model, type) and issubclass(model, BaseModel):
        for field_name, field in model.model_fields.items():
            if name in (field_name, field.alias):
                return _unwrap(field.annotation)
        return None
    if dataclasses.is_dataclass(model):
        hints = typing.get_type_hints(model)
        return _unwrap(hints[name]) if name in hints else None
    return None


def _unwrap(annotation: Any) -> Any:
    """``X | None`` -> ``X``; other annotations as they are."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return members[0] if len(members) == 1 else annotation
    return annotation


def _undeclared(machine: str) -> list[str]:
    definition = json.loads((STATEMACHINES_DIR / f"{machine}.asl.json").read_text())
    wrong = []
    for path in sorted(set(_paths(definition))):
        match = _PATH.match(path)
        assert match, f"{machine}: unexpected JSONPath {path}"
        root, *fields = match.group(1).lstrip(".").split(".")
        if root in FREE_ROOTS:
            continue
        model = MODELS[machine].get(root)
        if model is None:
            wrong.append(f"{path}: root {root!r} has no model")
            continue
        for name in fields:
            model = _field_type(model, name)
            if model is None:
                wrong.append(f"{path}: {name!r} is not declared")
                break
    return wrong


@pytest.mark.parametrize("machine", sorted(MODELS))
def test_every_field_the_definition_reads_is_declared(machine: str) -> None:
    assert _undeclared(machine) == []


def test_the_contract_catches_a_misspelt_field(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (
        (STATEMACHINES_DIR / "restore.asl.json").read_text().replace("$.job.redis.done", "$.job.redis.dnoe")
    )
    (tmp_path / "restore.asl.json").write_text(text)
    monkeypatch.setattr(f"{__name__}.STATEMACHINES_DIR", tmp_path)
    assert _undeclared("restore") == ["$.job.redis.dnoe: 'dnoe' is not declared"]


def test_a_job_with_an_unknown_or_mistyped_field_is_refused_at_the_boundary() -> None:
    from servalsheets_backup.errors import InvalidInputError
    from servalsheets_backup.workflows.restore import dump_job, job_from

    job = {
        "restore_id": "20261203T000000Z-00000000",
        "source": {"kind": "full", "backup_id": "20261203T000000Z-00000001", "manifest_key": "full/m.json"},
        "components": ["redis"],
        "with": {"config": False, "tokens": False, "redis": True},
        "mode": "replace",
        "key_patterns": [],
        "dry_run": False,
        "verification": False,
        "target": {},
        "lock": "restore:x",
        "owner": "test",
        "started_ms": 1,
        "redis_mode": "logical",
        "redis": {
            "done": False,
            "waiting": False,
            "chunk": 2,
            "records": 10,
            "flushed": False,
            "totals": {},
            "parts": [],
        },
    }
    assert dump_job(job_from({"job": job})) == {**job, "target": {"update_redis_url_secret": False}}
    with pytest.raises(InvalidInputError, match=r"malformed \(redsi\)"):
        job_from({"job": {**job, "redsi": {"done": True}}})
    with pytest.raises(InvalidInputError, match=r"malformed \(redis.done\)"):
        job_from({"job": {**job, "redis": {"done": "soon"}}})
    with pytest.raises(InvalidInputError, match=r"malformed \(mode\)"):
        job_from({"job": {**job, "mode": "overwrite"}})

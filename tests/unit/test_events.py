"""Every function has a sample event in events/functions/, and each sample has the shape its handler takes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from servalsheets_backup.workflows.backup import PendingSet
from servalsheets_backup.workflows.requests import BackupRequest, RestoreRequest, parse
from servalsheets_backup.workflows.restore import job_from

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = sorted(p.name for p in (ROOT / "functions").iterdir() if (p / "app.py").exists())


def _sample(folder: str) -> dict[str, object]:
    return dict(json.loads((ROOT / "events" / "functions" / f"{folder}.json").read_text()))


@pytest.mark.parametrize("folder", FUNCTIONS)
def test_every_function_has_a_sample_event_of_the_right_shape(folder: str) -> None:
    event = _sample(folder)
    if folder == "begin_backup":
        parse(BackupRequest, event["request"], "backup request")
    elif folder == "prepare_restore":
        request = parse(RestoreRequest, event["request"], "restore input")
        assert request.fail_after is None
    elif folder == "fail_backup":
        assert isinstance(event["state"], dict) and "error" in event["state"]
    elif "pending" in event:
        PendingSet.from_dict(event["pending"])
    elif "job" in event:
        assert job_from(event).restore_id
    else:
        assert folder == "check_freshness"


def test_samples_name_no_local_paths_or_drill_resources() -> None:
    text = "\n".join((ROOT / "events" / "functions" / f"{folder}.json").read_text() for folder in FUNCTIONS)
    assert "/tmp/" not in text and "drill" not in text


def test_literal_redis_url_targets_are_refused_outside_local_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    from servalsheets_backup.errors import InvalidInputError
    from servalsheets_backup.workflows.restore import prepare

    monkeypatch.delenv("ALLOW_LITERAL_REDIS_URL")
    request = {"backup": "latest", "kinds": ["redis"], "target": {"redis_url": "redis://203.0.113.9:6379/0"}}
    with pytest.raises(InvalidInputError, match="redis_url_secret_id"):
        prepare(None, request, "owner")  # type: ignore[arg-type] - refused before any service is used


def test_replace_mode_cannot_be_selective() -> None:
    from servalsheets_backup.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="cannot be combined with key_patterns"):
        parse(RestoreRequest, {"mode": "replace", "key_patterns": ["refresh:*"]}, "restore input")


def test_cli_restore_flags_build_the_state_machine_input() -> None:
    from servalsheets_backup.cli.main import build_parser
    from servalsheets_backup.cli.restore import _request

    args = build_parser().parse_args(
        [
            "restore",
            "2026-11-24T12:00:00Z",
            "--kind",
            "redis",
            "--new-replication-group",
            "prod-restored",
            "--update-redis-url-secret",
            "--reason",
            "cache lost",
        ]
    )
    request = parse(RestoreRequest, _request(args), "restore input")
    assert request.backup.model_dump() == {"as_of": "2026-11-24T12:00:00Z"}  # type: ignore[union-attr]
    assert request.kinds == ["redis"] and request.mode == "merge"
    assert request.target.new_replication_group_id == "prod-restored"
    assert request.target.update_redis_url_secret is True


def test_cli_restore_into_a_new_serverless_cache() -> None:
    from servalsheets_backup.cli.main import build_parser
    from servalsheets_backup.cli.restore import _request

    args = build_parser().parse_args(
        [
            "restore",
            "latest",
            "--kind",
            "redis",
            "--new-serverless-cache",
            "prod-restored",
            "--update-redis-url-secret",
        ]
    )
    request = parse(RestoreRequest, _request(args), "restore input")
    assert request.target.new_serverless_cache_name == "prod-restored"
    assert request.target.new_cache_name == "prod-restored" and request.target.update_redis_url_secret


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (
            {"new_replication_group_id": "a", "new_serverless_cache_name": "b"},
            "either new_replication_group_id or new_serverless_cache_name",
        ),
        ({"update_redis_url_secret": True}, "update_redis_url_secret needs new_replication_group_id"),
        ({"new_serverless_cache_name": "Bad_Name"}, "new_serverless_cache_name"),
    ],
    ids=["both-new-caches", "secret-switch-without-new-cache", "bad-name"],
)
def test_restore_targets_for_elasticache_backups_are_checked(target: dict[str, object], message: str) -> None:
    from servalsheets_backup.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match=message):
        parse(RestoreRequest, {"kinds": ["redis"], "target": target}, "restore input")

"""The drill, run in-process with a small key count: every scenario, the JSON report, clean-up."""

from __future__ import annotations

import json
import socket

import pytest
import redis

from servalsheets_backup.cli.main import program
from servalsheets_backup_local.drill import SCENARIOS, run_drill
from servalsheets_backup_local.drill_report import render
from servalsheets_backup_local.testing.redis_server import pid_alive

pytestmark = pytest.mark.drill


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _assert_nothing_left(environment: dict[str, object]) -> None:
    for pid in environment["redis_pids"]:  # type: ignore[union-attr]
        assert not pid_alive(int(pid)), f"redis-server {pid} still running"
    for name in ("redis_production_port", "redis_target_port", "moto_port", "application_stand_in_port"):
        assert not _listening(int(environment[name])), f"{name} still listening"  # type: ignore[arg-type]
    if "restored_cache_pid" in environment:  # the serverless stand-in's new cache
        assert not pid_alive(int(environment["restored_cache_pid"]))  # type: ignore[arg-type]
        assert not _listening(int(environment["restored_cache_port"]))  # type: ignore[arg-type]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_scenario_passes_and_cleans_up(scenario: str) -> None:
    report = run_drill(keys=300, scenario=scenario)
    assert report.ok, [c for c in report.checks if not c["ok"]] or report.failure
    data = report.as_dict()
    assert {"ok", "rpo_seconds", "rto_seconds", "backups", "steps", "checks"} <= set(data)
    assert [b["kind"] for b in data["backups"]] == ["config", "tokens", "redis", "full"]
    assert data["rto_seconds"] is not None and data["rto_seconds"] > 0
    if scenario in ("full-restore", "oauth-only"):
        assert data["rpo_seconds"] is not None and data["rpo_seconds"] >= 0
        assert any(step["state"] == "Take safety backup" for step in data["steps"])
    if scenario == "elasticache-serverless":
        assert (
            data["environment"]["restored_cache_pid"] and data["environment"]["wait_states_capped_to_seconds"]
        )
    _assert_nothing_left(data["environment"])


def test_json_output_is_one_object_and_nothing_else(capsys: pytest.CaptureFixture[str]) -> None:
    code = program(["drill", "--keys", "200", "--json"])
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert code == 0 and data["ok"] is True
    assert captured.out.strip().startswith("{") and captured.out.strip().endswith("}")


def test_human_report_ends_with_the_verdict(capsys: pytest.CaptureFixture[str]) -> None:
    assert program(["drill", "--keys", "200", "--scenario", "wrong-token-key"]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().splitlines()[-1] == "DRILL PASSED"
    assert "RTO (restore execution duration)" in out


def test_a_failing_drill_reports_why_and_leaves_nothing_running(monkeypatch: pytest.MonkeyPatch) -> None:
    from servalsheets_backup_local import drill

    def broken_disaster(environment: object) -> None:
        raise RuntimeError("simulated crash in the middle of the drill")

    monkeypatch.setattr(drill, "disaster", broken_disaster)
    report = run_drill(keys=200, scenario="full-restore")
    assert not report.ok
    assert report.failure is not None and "simulated crash" in report.failure
    assert render(report).splitlines()[-1].startswith("DRILL FAILED: RuntimeError")
    _assert_nothing_left(report.environment)


def test_the_checker_fails_a_restore_that_drops_shifts_or_alters_one_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a drill big enough for the checker to read in many batches, whose restore is
    # sabotaged right after the state machine reports success: one long-lived key deleted,
    # one key's TTL stretched by a minute, one value altered (its TTL kept)
    from servalsheets_backup_local import drill

    sabotaged: list[bytes] = []
    succeed = drill.expect_success

    def then_sabotage(description: dict[str, object], report: drill.DrillReport) -> None:
        succeed(description, report)
        client = redis.Redis.from_url(_production_url[0])
        try:
            keys = sorted(k for k in client.scan_iter(match="refresh:*", count=1000))[:3]
            client.delete(keys[0])
            client.pexpire(keys[1], int(client.pttl(keys[1])) + 60_000)
            client.set(keys[2], b"altered", keepttl=True)
        finally:
            client.close()
        sabotaged.extend(keys)

    _production_url: list[str] = []
    start = drill.start_environment

    def remember_url(*args: object, **kwargs: object) -> object:
        environment = start(*args, **kwargs)  # type: ignore[arg-type]
        _production_url.append(environment.production.url)
        return environment

    monkeypatch.setattr(drill, "expect_success", then_sabotage)
    monkeypatch.setattr(drill, "start_environment", remember_url)
    report = drill.run_drill(keys=20_000)

    # Then the drill fails, on exactly those three checks, one key each
    assert len(sabotaged) == 3 and not report.ok
    failed = {c["name"].split(" (")[0]: c["detail"] for c in report.checks if not c["ok"]}
    assert set(failed) == {
        "every live key restored",
        "TTLs kept",
        "values identical to before the disaster",
    }, failed
    comparison = report.redis_comparison or {}
    assert comparison["missing"] == comparison["ttl_off"] == comparison["value_different"] == {"refresh:": 1}
    assert comparison["unexpected"] == comparison["outlived_ttl"] == {}


def test_full_restore_at_100k_keys_passes_every_independent_check() -> None:
    # The same path as 1M keys (many read batches, one dump object per backup, the
    # restore's continuation budget, keys expiring during the drill), at a size make test affords
    report = run_drill(keys=100_000)
    assert report.ok, [c for c in report.checks if not c["ok"]] or report.failure
    comparison = report.redis_comparison or {}
    assert sum(comparison["required"].values()) > 90_000
    assert sum(comparison["restored"].values()) == sum(comparison["required"].values())
    _assert_nothing_left(report.environment)

"""The drill, run in-process with a small key count: every scenario, the JSON report, clean-up."""

from __future__ import annotations

import json
import socket

import pytest

from servalsheets_backup.cli import program
from servalsheets_backup.drill import SCENARIOS, run_drill
from servalsheets_backup.testing.redis_server import pid_alive

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
    from servalsheets_backup import drill

    def broken_disaster(environment: object) -> None:
        raise RuntimeError("simulated crash in the middle of the drill")

    monkeypatch.setattr(drill, "_disaster", broken_disaster)
    report = run_drill(keys=200, scenario="full-restore")
    assert not report.ok
    assert report.failure is not None and "simulated crash" in report.failure
    assert drill.render(report).splitlines()[-1].startswith("DRILL FAILED: RuntimeError")
    _assert_nothing_left(report.environment)

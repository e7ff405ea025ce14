"""Comparison ``drill``: the full-restore drill at the main size, as an operator would run it.

Runs ``servalsheets-backup drill --keys N --json`` in its own process (moto, two
redis-servers, the deployed template, every schedule, the disaster, the restore through the
state machine, the independent checks) and keeps what a capacity plan needs: whether it
passed, RPO, RTO, each backup's and each restore step's time, the wall time of the whole
drill, and the independent checker's counts (keys required, restored, expired in wall-clock
time, and any missing, off or different).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .measure import BenchError

DRILL_TIMEOUT_SECONDS = 3600


def _command(keys: int) -> list[str]:
    script = Path(sys.executable).with_name("servalsheets-backup")
    head = [str(script)] if script.exists() else [sys.executable, "-m", "servalsheets_backup.cli"]
    return [*head, "drill", "--keys", str(keys), "--json"]


def measure(keys: int) -> dict[str, Any]:
    """Run the drill once at ``keys`` keys and summarise its JSON report."""
    started = time.monotonic()
    done = subprocess.run(  # noqa: S603 - our own console script, fixed arguments
        _command(keys), capture_output=True, text=True, timeout=DRILL_TIMEOUT_SECONDS, check=False
    )
    seconds = time.monotonic() - started
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError as exc:
        raise BenchError(
            f"the drill printed no JSON report (exit {done.returncode}): {done.stderr[-500:]}"
        ) from exc
    comparison = report.get("redis_comparison") or {}
    return {
        "keys": keys,
        "ok": bool(report["ok"]),
        "exit_code": done.returncode,
        "wall_seconds": round(seconds, 1),
        "rpo_seconds": report["rpo_seconds"],
        "rto_seconds": report["rto_seconds"],
        "backups": [
            {"kind": b["kind"], "seconds": b["duration_seconds"], "bytes": b["size_bytes"]}
            for b in report["backups"]
        ],
        "restore_steps": [s for s in report["steps"] if s["seconds"] >= 0.05],
        "failed_checks": [c for c in report["checks"] if not c["ok"]],
        "checker_totals": {
            name: sum(counts.values()) for name, counts in comparison.items() if isinstance(counts, dict)
        },
        "failure": report.get("failure"),
    }


def log_lines(result: dict[str, Any]) -> list[str]:
    """The human summary of one drill run."""
    verdict = "PASSED" if result["ok"] else f"FAILED (exit {result['exit_code']})"
    lines = [
        f"  drill at {result['keys']:,} keys {verdict} in {result['wall_seconds']:.0f} s: "
        f"RPO {result['rpo_seconds']} s, RTO {result['rto_seconds']} s",
    ]
    lines += [
        f"  backup {b['kind']:<8} {b['seconds']:7.1f} s {b['bytes']:>13,} bytes" for b in result["backups"]
    ]
    lines += [f"  restore step {s['state']:<40} {s['seconds']:7.1f} s" for s in result["restore_steps"]]
    totals = result["checker_totals"]
    lines.append("  checker: " + ", ".join(f"{name} {count:,}" for name, count in totals.items()))
    lines += [f"  FAILED CHECK {c['name']}: {c['detail']}" for c in result["failed_checks"]]
    return lines

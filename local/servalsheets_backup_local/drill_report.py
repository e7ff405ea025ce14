"""The drill's report: what it measured and checked, as JSON (``--json``) or as text."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class DrillReport:
    """Everything the drill measured; ``ok`` only when every check passed."""

    scenario: str
    keys: int
    backups: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)
    rpo_seconds: float | None = None
    rto_seconds: float | None = None
    failure: str | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    redis_comparison: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        """True when nothing failed and at least one check ran."""
        return self.failure is None and bool(self.checks) and all(c["ok"] for c in self.checks)

    def check(self, name: str, ok: bool, detail: str = "") -> None:
        """Record one check."""
        self.checks.append({"name": name, "ok": bool(ok), "detail": detail})

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` form."""
        return {
            "ok": self.ok,
            "scenario": self.scenario,
            "keys": self.keys,
            "rpo_seconds": self.rpo_seconds,
            "rto_seconds": self.rto_seconds,
            "backups": self.backups,
            "steps": self.steps,
            "checks": self.checks,
            "failure": self.failure,
            "environment": self.environment,
            "redis_comparison": self.redis_comparison,
        }


def render(report: DrillReport) -> str:
    """The human report."""
    lines = [
        f"ServalSheets backup drill: scenario {report.scenario}, {report.keys} Redis keys",
        "",
        "Backups:",
    ]
    for item in report.backups:
        size, seconds = item["size_bytes"], item["duration_seconds"]
        lines.append(f"  {item['kind']:<8} {item['backup_id']}  {size:>10} bytes  {seconds:.2f}s")
    lines += ["", "Restore steps:"]
    lines += [f"  {step['state']:<44} {step['seconds']:.3f}s" for step in report.steps]
    lines += ["", "Checks:"]
    lines += [
        f"  [{'PASS' if c['ok'] else 'FAIL'}] {c['name']}" + (f" ({c['detail']})" if c["detail"] else "")
        for c in report.checks
    ]
    lines.append("")
    if report.rpo_seconds is not None:
        lines.append(f"RPO (age of the restored backup): {report.rpo_seconds:.1f} s")
    if report.rto_seconds is not None:
        lines.append(f"RTO (restore execution duration): {report.rto_seconds:.1f} s")
    lines.append("DRILL PASSED" if report.ok else f"DRILL FAILED: {_reason(report)}")
    return "\n".join(lines)


def _reason(report: DrillReport) -> str:
    if report.failure:
        return report.failure
    failed = [c["name"] for c in report.checks if not c["ok"]]
    return ", ".join(failed) if failed else "no checks ran"

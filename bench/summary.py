"""Medians per method and data-set size, ratios ours/theirs, and the issue's targets."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .measure import median

MB = 1e6
RSS_LIMIT_MB = 256.0
MEMORY_SIZES = (1_000_000, 4_000_000)


def medians(samples: Iterable[dict[str, Any]], dataset_bytes: dict[int, int]) -> list[dict[str, Any]]:
    """One row per (comparison, method, data-set size) with median time, rates and peak RSS."""
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = defaultdict(list)
    for sample in samples:
        groups[(sample["comparison"], sample["method"], sample["dataset_keys"])].append(sample)
    rows = []
    for (comparison, method, size), group in sorted(groups.items(), key=lambda item: (item[0][2], item[0])):
        seconds = median([s["seconds"] for s in group])
        keys = median([s["keys"] for s in group])
        rows.append(
            {
                "comparison": comparison,
                "method": method,
                "dataset_keys": size,
                "runs": len(group),
                "seconds": seconds,
                "seconds_all": [round(s["seconds"], 3) for s in group],
                "seconds_best": min(s["seconds"] for s in group),
                "keys": int(keys),
                "keys_per_second": keys / seconds if seconds else 0.0,
                "best_keys_per_second": max(s["keys"] / s["seconds"] for s in group if s["seconds"]),
                "dataset_mb_per_second": dataset_bytes.get(size, 0) / MB / seconds if seconds else 0.0,
                "peak_rss_mb": median([s["peak_rss_kb"] for s in group]) / 1024,
                "cpu_seconds": median([s["cpu_seconds"] for s in group]),
                "server_cpu_seconds": median([s["server_cpu_seconds"] for s in group]),
                "other_cpu_seconds": median([s["other_cpu_seconds"] for s in group]),
                "bytes_out": int(median([s["bytes_out"] for s in group])),
            }
        )
    return rows


def _row(rows: list[dict[str, Any]], method: str, size: int) -> dict[str, Any] | None:
    return next((r for r in rows if r["method"] == method and r["dataset_keys"] == size), None)


def ratios(rows: list[dict[str, Any]], size: int, field: str = "keys_per_second") -> dict[str, float]:
    """Throughput ratios ours/theirs at ``size`` (medians; best runs with ``best_keys_per_second``)."""
    pairs = {
        "backup_file_vs_runbook": ("ours_file", "runbook_gzip_gpg"),
        "backup_file_vs_rdb": ("ours_file", "redis_cli_rdb"),
        "backup_s3_vs_runbook": ("ours_s3", "runbook_gzip_gpg"),
        "backup_s3_vs_rdb": ("ours_s3", "redis_cli_rdb"),
        "rdb_stream_file_vs_rdb": ("ours_rdb_stream_file", "redis_cli_rdb"),
        "rdb_stream_s3_vs_rdb": ("ours_rdb_stream_s3", "redis_cli_rdb"),
        "rdb_stream_s3_vs_runbook": ("ours_rdb_stream_s3", "runbook_gzip_gpg"),
        "restore_vs_pipe": ("ours_restore", "redis_cli_pipe"),
        "restore_s3_vs_pipe": ("ours_restore_s3", "redis_cli_pipe"),
        "restore_rdb_vs_pipe": ("ours_restore_rdb", "redis_cli_pipe"),
    }
    out = {}
    for name, (ours, theirs) in pairs.items():
        mine, other = _row(rows, ours, size), _row(rows, theirs, size)
        if mine and other and other[field]:
            out[name] = mine[field] / other[field]
    return out


_CHECKS = {">=": lambda m, t: m >= t, "<": lambda m, t: m < t, "<=": lambda m, t: m <= t}


@dataclass
class Target:
    """One of the issue's targets and how the measurement compares (``measured op threshold``)."""

    name: str
    goal: str
    measured: float | None
    op: str
    threshold: float
    unit: str = "x"

    @property
    def status(self) -> str:
        """``met``, ``missed`` or ``not measured``."""
        if self.measured is None:
            return "not measured"
        return "met" if _CHECKS[self.op](self.measured, self.threshold) else "missed"

    @property
    def margin(self) -> str:
        """The measurement against the threshold, and the relative distance."""
        if self.measured is None:
            return ""
        distance = self.measured / self.threshold - 1
        return f"{self.measured:.2f}{self.unit} vs {self.op} {self.threshold:g}{self.unit} ({distance:+.0%})"

    def as_dict(self) -> dict[str, Any]:
        """JSON form with the verdict."""
        return {
            "name": self.name,
            "goal": self.goal,
            "measured": self.measured,
            "op": self.op,
            "threshold": self.threshold,
            "unit": self.unit,
            "status": self.status,
            "margin": self.margin,
        }


def _rss_target(rows: list[dict[str, Any]], method: str, size: int, what: str) -> Target:
    row = _row(rows, method, size)
    return Target(
        f"{what}_rss_{size // 1_000_000}m",
        f"peak RSS of our {what} < {RSS_LIMIT_MB:g} MB at {size:,} keys",
        row["peak_rss_mb"] if row else None,
        "<",
        RSS_LIMIT_MB,
        " MB",
    )


def targets(
    rows: list[dict[str, Any]],
    main_size: int,
    stages: dict[str, Any] | None,
    coldstart: dict[str, Any] | None,
) -> list[Target]:
    """Every target of the issue, evaluated on this run's results."""
    r = ratios(rows, main_size)
    # Format v2 is the one the target is for; v1 (two SHA-256 passes) stays in the stage table.
    stage_ratio = stages["envelope_v2_random"] / stages["aes_gcm_1mib_random"] if stages else None
    worst_import = max(h["ratio_to_boto3"] for h in coldstart["handlers"].values()) if coldstart else None
    found = [
        Target(
            "backup_vs_runbook",
            "logical backup >= 3x the gzip+gpg pipeline",
            r.get("backup_file_vs_runbook"),
            ">=",
            3.0,
        ),
        Target(
            "backup_vs_rdb",
            "logical backup >= 0.5x raw redis-cli --rdb",
            r.get("backup_file_vs_rdb"),
            ">=",
            0.5,
        ),
        Target(
            "rdb_stream_vs_rdb",
            "rdb-stream backup into S3 >= 0.9x raw redis-cli --rdb",
            r.get("rdb_stream_s3_vs_rdb"),
            ">=",
            0.9,
        ),
        Target(
            "rdb_stream_vs_runbook",
            "rdb-stream backup into S3 >= 3.2x the gzip+gpg pipeline",
            r.get("rdb_stream_s3_vs_runbook"),
            ">=",
            3.2,
        ),
        Target(
            "restore_vs_pipe", "restore >= 1.0x redis-cli --pipe keys/s", r.get("restore_vs_pipe"), ">=", 1.0
        ),
        Target(
            "restore_s3_vs_pipe",
            "restore from S3 >= 1.0x redis-cli --pipe keys/s",
            r.get("restore_s3_vs_pipe"),
            ">=",
            1.0,
        ),
        Target(
            "envelope_vs_aes",
            "format v2 encrypt+compress >= 50% of raw AES-GCM, incompressible",
            stage_ratio,
            ">=",
            0.5,
        ),
    ]
    for size in MEMORY_SIZES:
        found += [
            _rss_target(rows, "ours_file", size, "backup"),
            _rss_target(rows, "ours_restore", size, "restore"),
        ]
    found.append(
        Target("handler_import", "slowest handler import <= 2x import boto3", worst_import, "<=", 2.0)
    )
    return found


def drill_targets(drill: dict[str, Any] | None) -> list[Target]:
    """The drill at the main size passes every check (1 when it did, 0 when it did not)."""
    if drill is None:
        return []
    return [
        Target(
            "drill_passes",
            f"full-restore drill passes every check at {drill['keys']:,} keys",
            1.0 if drill["ok"] else 0.0,
            ">=",
            1.0,
            "",
        )
    ]


def resummarize(results: dict[str, Any]) -> dict[str, Any]:
    """Recompute medians, ratios and targets of a results file from its raw samples."""
    dataset_bytes = {
        d["keys_target"]: d.get("rdb_bytes", d.get("plain_bytes", 0)) for d in results["datasets"]
    }
    rows = medians(results["samples"], dataset_bytes)
    sizes = sorted(dataset_bytes)
    main_size = int(results["meta"]["options"]["keys"])
    results.update(
        medians=rows,
        ratios={str(size): ratios(rows, size) for size in sizes},
        ratios_best={str(size): ratios(rows, size, "best_keys_per_second") for size in sizes},
        targets=[
            t.as_dict()
            for t in targets(rows, main_size, results.get("stages"), results.get("coldstart"))
            + drill_targets(results.get("drill"))
        ],
    )
    return results


def main(argv: list[str] | None = None) -> None:
    """``python -m bench.summary RESULTS.json``: rewrite the file's summaries from its samples."""
    import json
    import sys
    from pathlib import Path

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.exit("usage: python -m bench.summary RESULTS.json")
    path = Path(args[0])
    path.write_text(json.dumps(resummarize(json.loads(path.read_text())), indent=1))


if __name__ == "__main__":
    main()

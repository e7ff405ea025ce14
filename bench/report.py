"""``python -m bench.report RESULTS.json``: the results as Markdown tables (for docs/benchmarks.md)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from .plot import LABELS


def _table(header: list[str], rows: list[list[str]]) -> str:
    align = ["---"] + ["---:"] * (len(header) - 1)
    lines = [header, align, *rows]
    return "\n".join("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |" for cells in lines)


def medians_table(results: dict[str, Any], comparison: str) -> str:
    """Median seconds, keys/s, MB/s, best run, peak RSS and CPU per method and size."""
    header = ["method", "keys", "runs", "median s", "best s", "keys/s", "MB/s", "peak RSS MB", "client CPU s"]
    header += ["server CPU s", "other CPU s"]
    rows = [
        [
            LABELS.get(r["method"], r["method"]),
            f"{r['dataset_keys']:,}",
            str(r["runs"]),
            f"{r['seconds']:.2f}",
            f"{r['seconds_best']:.2f}",
            f"{r['keys_per_second']:,.0f}",
            f"{r['dataset_mb_per_second']:.1f}",
            f"{r['peak_rss_mb']:.1f}",
            f"{r['cpu_seconds']:.1f}",
            f"{r['server_cpu_seconds']:.1f}",
            f"{r['other_cpu_seconds']:.1f}",
        ]
        for r in results["medians"]
        if r["comparison"] == comparison
    ]
    return _table(header, rows)


def ratios_table(results: dict[str, Any]) -> str:
    """Ours/theirs keys-per-second ratios per size, of medians and of best runs."""
    rows = []
    for size, ratios in results["ratios"].items():
        best = results.get("ratios_best", {}).get(size, {})
        rows += [
            [name, f"{int(size):,}", f"{v:.2f}x", f"{best.get(name, 0):.2f}x"] for name, v in ratios.items()
        ]
    return _table(["ratio (ours / theirs, keys/s)", "keys", "medians", "best runs"], rows)


def stages_table(results: dict[str, Any]) -> str:
    """Stage rates, median and best MB/s."""
    stages = results.get("stages") or {}
    names = [
        n for n in stages if not n.endswith("_best") and n not in ("input_bytes", "zstd1_ratio_compressible")
    ]
    rows = [[n, f"{stages[n]:,.0f}", f"{stages.get(n + '_best', 0):,.0f}"] for n in names]
    return _table(["stage", "median MB/s", "best MB/s"], rows)


def coldstart_table(results: dict[str, Any]) -> str:
    """Handler import seconds against import boto3."""
    cold = results.get("coldstart") or {}
    rows = [["import boto3", f"{cold['boto3_seconds']:.3f}", "", "1.00x"]] if cold else []
    for name, h in sorted(cold.get("handlers", {}).items()):
        rows.append(
            [
                f"functions/{name}/app.py",
                f"{h['lambda_env_seconds']:.3f}",
                f"{h['tracing_off_seconds']:.3f}",
                f"{h['ratio_to_boto3']:.2f}x",
            ]
        )
    return _table(["module", "import s (Lambda env)", "import s (tracing off)", "vs boto3"], rows)


def cluster_table(results: dict[str, Any]) -> str:
    """The cluster case: wall seconds and keys/s per shard count."""
    rows = [
        [
            shards,
            f"{r['keys']:,}",
            f"{r['backup_seconds']:.2f}",
            f"{r['backup_keys_per_second']:,.0f}",
            f"{r['redis_cli_rdb_seconds']:.2f}",
            f"{r['backup_vs_rdb']:.2f}x",
            f"{r['restore_seconds']:.2f}",
            f"{r['restore_keys_per_second']:,.0f}",
        ]
        for shards, r in (results.get("cluster") or {}).items()
    ]
    header = ["primaries", "keys", "backup s", "backup keys/s", "redis-cli --rdb s", "ours vs raw"]
    return _table([*header, "restore s", "restore keys/s"], rows)


def targets_table(results: dict[str, Any]) -> str:
    """Each target, the measurement and the verdict."""
    rows = [[t["goal"], t["status"], t["margin"]] for t in results["targets"]]
    return _table(["target", "status", "measured vs threshold"], rows)


def main(argv: list[str] | None = None) -> None:
    """Print every table."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.exit("usage: python -m bench.report RESULTS.json")
    results = json.loads(Path(args[0]).read_text())
    for title, table in (
        ("Backup", medians_table(results, "backup")),
        ("Restore", medians_table(results, "restore")),
        ("Ratios", ratios_table(results)),
        ("Stages", stages_table(results)),
        ("Cold start", coldstart_table(results)),
        ("Cluster", cluster_table(results)),
        ("Targets", targets_table(results)),
    ):
        print(f"### {title}\n\n{table}\n")


if __name__ == "__main__":
    main()

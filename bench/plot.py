"""Throughput and peak RSS against data-set size, from one results file (matplotlib, Agg).

``python -m bench.plot bench/results/<run>.json docs/benchmarks-throughput.png`` redraws a plot.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

LABELS = {
    "ours_file": "ours: backup to file",
    "ours_s3": "ours: backup to S3 (moto)",
    "ours_rdb_stream_file": "ours: rdb-stream to file",
    "ours_rdb_stream_s3": "ours: rdb-stream to S3 (moto)",
    "redis_cli_rdb": "redis-cli --rdb FILE",
    "runbook_gzip_gpg": "runbook: --rdb | gzip | gpg",
    "ours_restore": "ours: restore",
    "ours_restore_s3": "ours: restore from S3 (moto)",
    "ours_restore_rdb": "ours: restore of an rdb-stream set",
    "redis_cli_pipe": "redis-cli --pipe (RESTORE)",
}
STYLE = {
    "ours_file": ("tab:blue", "o", "-"),
    "ours_s3": ("tab:cyan", "D", "-"),
    "ours_rdb_stream_file": ("tab:purple", "s", "-"),
    "ours_rdb_stream_s3": ("tab:pink", "^", "-"),
    "redis_cli_rdb": ("tab:gray", "s", "--"),
    "runbook_gzip_gpg": ("tab:red", "v", "--"),
    "ours_restore": ("tab:green", "o", "-"),
    "ours_restore_s3": ("tab:brown", "D", "-"),
    "ours_restore_rdb": ("tab:orange", "s", "-"),
    "redis_cli_pipe": ("tab:olive", "s", "--"),
}


def _keys_label(value: float, _position: int) -> str:
    """10k, 300k, 1M, 4M."""
    if value >= 1e6:
        return f"{value / 1e6:g}M"
    return f"{value / 1e3:g}k" if value >= 1e3 else f"{value:g}"


def _series(rows: list[dict[str, Any]], method: str, field: str) -> tuple[list[int], list[float]]:
    points = sorted((r["dataset_keys"], r[field]) for r in rows if r["method"] == method)
    return [p[0] for p in points], [p[1] for p in points]


def draw(results: dict[str, Any], out: Path) -> Path:
    """Write a two-panel PNG (keys/s and peak client RSS vs keys) to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    rows = results["medians"]
    fig, (speed, memory) = plt.subplots(1, 2, figsize=(13, 5.2))
    for method, label in LABELS.items():
        color, marker, line = STYLE[method]
        for axis, field, scale in ((speed, "keys_per_second", 1e3), (memory, "peak_rss_mb", 1.0)):
            xs, ys = _series(rows, method, field)
            if xs:
                axis.plot(
                    xs, [y / scale for y in ys], marker=marker, linestyle=line, color=color, label=label
                )
    memory.axhline(256, color="black", linewidth=0.8, linestyle=":", label="target: < 256 MB")
    speed.set(title="Throughput (higher is better)", ylabel="thousand keys per second")
    memory.set(title="Client peak RSS (lower is better)", ylabel="MB (sum of pipeline processes)")
    for axis in (speed, memory):
        axis.set_xscale("log")
        axis.set_xticks(sorted({r["dataset_keys"] for r in rows}))
        axis.xaxis.set_major_formatter(FuncFormatter(_keys_label))
        axis.xaxis.set_minor_formatter(FuncFormatter(lambda _v, _p: ""))
        axis.set_xlabel("keys in the data set")
        axis.set_ylim(bottom=0)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    machine = results["meta"]["machine"]
    fig.suptitle(
        f"{machine['cores']} cores, {machine['cpu']}, {machine['redis_server'].split(' sha=')[0]}",
        fontsize=10,
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> None:
    """Redraw the plot of a results file."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        sys.exit("usage: python -m bench.plot RESULTS.json OUT.png")
    draw(json.loads(Path(args[0]).read_text()), Path(args[1]))


if __name__ == "__main__":
    main()

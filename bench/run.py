"""``make bench`` / ``python -m bench.run``: run the comparisons, write JSON, print a summary.

Comparisons (``--only`` takes any of them, comma separated):

- ``backup``: our logical backup (to a file, and to S3 on a moto server) against the runbook's
  ``redis-cli --rdb - | gzip | gpg --symmetric`` and raw ``redis-cli --rdb FILE``;
- ``restore``: decrypt_stream + restore_records against ``redis-cli --pipe`` of RESTORE commands;
- ``stages``: EnvelopeWriter in memory against raw AES-256-GCM over 1 MiB segments;
- ``coldstart``: import time of each ``functions/*/app.py`` against ``import boto3``;
- ``memory``: peak RSS of our backup and restore over a series of data-set sizes
  (up to 4M keys with ``--memory-scale``), which also feeds the plot;
- ``drill``: the full-restore drill at the main size (RPO, RTO, per-step times, and whether
  every independent check passed), run last, in its own process.

Results go to ``bench/results/<UTC timestamp>.json`` (rewritten after every data-set size, so a
long run that fails keeps what it measured) and the plot to ``docs/benchmarks-throughput.png``
(``bench/results/<timestamp>.png`` for ``--quick`` runs).
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import cluster as cluster_bench
from . import coldstart, methods, summary, tools
from . import drill as drill_bench
from .dataset import DataSet, write_resp
from .measure import BenchError, Sample, run_pipeline

COMPARISONS = ("backup", "restore", "stages", "coldstart", "memory", "cluster", "drill")
DEFAULT_KEYS = 1_000_000
QUICK_KEYS = 100_000
MEMORY_SCALE_KEYS = 4_000_000
BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
DEFAULT_PLOT = BENCH_DIR.parent / "docs" / "benchmarks-throughput.png"
BUCKET = "ssbk-bench"


@dataclass
class Options:
    """Parsed command line."""

    keys: int
    repeat: int
    only: tuple[str, ...]
    memory_scale: bool
    quick: bool
    profile: bool
    s3: bool
    coldstart_runs: int
    stage_mib: int
    results_dir: Path
    plot: Path | None
    workdir: Path | None

    def wants(self, *names: str) -> bool:
        """True when any of ``names`` is selected."""
        return any(name in self.only for name in names)


def _only(value: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in value.split(",") if n.strip())
    unknown = sorted(set(names) - set(COMPARISONS))
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(COMPARISONS)}; got {value!r}")
    return names


def parse_args(argv: list[str]) -> Options:
    """The command line; ``--quick`` means 100k keys and one repeat unless given explicitly."""
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, help=f"data-set size (default {DEFAULT_KEYS:,})")
    parser.add_argument("--repeat", type=int, help="runs per method at the main size (default 3)")
    parser.add_argument("--only", type=_only, default=COMPARISONS, help=",".join(COMPARISONS))
    parser.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK_KEYS:,} keys, 1 repeat")
    parser.add_argument("--memory-scale", action="store_true", help="also measure memory at 4M keys (slow)")
    parser.add_argument("--profile", action="store_true", help="one extra cProfiled backup and restore")
    parser.add_argument("--no-s3", dest="s3", action="store_false", help="skip the backup to moto S3")
    parser.add_argument("--coldstart-runs", type=int, default=5)
    parser.add_argument("--stage-mib", type=int, default=256, help="MiB of input for the stage test")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--plot", type=Path, help="PNG path (default docs/benchmarks-throughput.png)")
    parser.add_argument("--workdir", type=Path, help="where the large temporary files go (default /tmp)")
    args = parser.parse_args(argv)
    keys = args.keys or (QUICK_KEYS if args.quick else DEFAULT_KEYS)
    repeat = args.repeat or (1 if args.quick else 3)
    if keys < 10_000 or repeat < 1:
        parser.error("--keys must be at least 10,000 and --repeat at least 1")
    return Options(
        keys=keys,
        repeat=repeat,
        only=tuple(args.only),
        memory_scale=args.memory_scale,
        quick=args.quick,
        profile=args.profile,
        s3=args.s3,
        coldstart_runs=args.coldstart_runs,
        stage_mib=args.stage_mib,
        results_dir=args.results_dir,
        plot=args.plot,
        workdir=args.workdir,
    )


def data_sizes(opts: Options) -> list[int]:
    """Data-set sizes to measure, ascending (the data set only grows)."""
    if not opts.wants("backup", "restore", "stages", "memory", "cluster"):
        return []
    if not opts.wants("memory"):
        return [opts.keys]
    sizes = {opts.keys // 10, opts.keys * 3 // 10, opts.keys}
    if opts.keys > DEFAULT_KEYS:
        sizes.add(DEFAULT_KEYS)
    if opts.memory_scale and opts.keys < MEMORY_SCALE_KEYS:
        sizes.add(MEMORY_SCALE_KEYS)
    return sorted(sizes)


def _log(message: str) -> None:
    print(message, flush=True)


class Run:
    """One benchmark run: its options, working files, local services and collected results."""

    def __init__(self, opts: Options, workdir: Path) -> None:
        self.opts = opts
        self.workdir = workdir
        self.stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        gpg_home = workdir / "gnupg"
        gpg_home.mkdir(mode=0o700)
        passphrase = workdir / "passphrase"
        passphrase.write_text(secrets.token_urlsafe(24))
        self.ctx = methods.Context(workdir, secrets.token_hex(32), gpg_home, passphrase)
        self.samples: list[Sample] = []
        self.rdb_backup: Sample | None = None  # the rdb-stream backup whose file restore_round reads
        self.datasets: dict[int, dict[str, Any]] = {}
        self.results: dict[str, Any] = {
            "meta": {
                "timestamp": self.stamp,
                "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(opts).items()},
                "machine": tools.machine(),
                "notes": [
                    "source and restore targets: redis-server on 127.0.0.1, --save '' --appendonly no, "
                    "--repl-diskless-sync-delay 0",
                    "seconds: wall time of the whole client process(es), interpreter start included for ours",
                    "peak RSS: ru_maxrss of each client process (os.wait4), summed over pipeline stages",
                    "dataset MB/s: RDB size of the data set divided by seconds, the same numerator for all",
                    "redis-cli --pipe input: RESTORE key ttl payload REPLACE, the commands ours sends",
                    "other CPU: machine CPU in a run minus client and server CPU (noise; moto for ours_s3)",
                ],
            },
        }

    # -- recording ---------------------------------------------------------------------------
    def record(self, sample: Sample, label: str) -> Sample:
        """Keep ``sample`` and print one line about it."""
        self.samples.append(sample)
        rate = sample.keys / sample.seconds if sample.seconds else 0.0
        _log(
            f"  {label} {sample.method:<17} {sample.seconds:7.2f} s {rate:>10,.0f} keys/s "
            f"RSS {sample.peak_rss_kb / 1024:6.1f} MB  client CPU {sample.cpu_seconds:6.2f} s  "
            f"server CPU {sample.server_cpu_seconds:6.2f} s  other CPU {sample.other_cpu_seconds:5.2f} s"
        )
        return sample

    def save(self) -> Path:
        """Write the results so far (summaries recomputed) and return the path."""
        self.results.update(
            datasets=[{"keys_target": k, **v} for k, v in sorted(self.datasets.items())],
            samples=[s.as_dict() for s in self.samples],
        )
        summary.resummarize(self.results)
        self.opts.results_dir.mkdir(parents=True, exist_ok=True)
        path = self.opts.results_dir / f"{self.stamp}.json"
        path.write_text(json.dumps(self.results, indent=1, sort_keys=False))
        return path


# --------------------------------------------------------------------------- local S3


def start_s3(run: Run) -> Any:
    """Start moto in this process with a bucket and a KMS key; returns the server to stop."""
    from servalsheets_backup_local.testing.moto_server import start_moto

    server = start_moto(execute_state_machines=False)
    moto = methods.MotoTarget(server.endpoint, BUCKET, "")
    moto.client("s3").create_bucket(Bucket=BUCKET)
    moto.kms_key = moto.client("kms").create_key()["KeyMetadata"]["Arn"]
    run.ctx.moto = moto
    return server


def empty_bucket(run: Run) -> None:
    """Delete what the S3 backups wrote, so moto's memory does not grow run after run."""
    moto = run.ctx.moto
    if moto is None:
        return
    s3 = moto.client("s3")
    for item in s3.list_objects_v2(Bucket=moto.bucket).get("Contents", []):
        s3.delete_object(Bucket=moto.bucket, Key=item["Key"])


# --------------------------------------------------------------------------- one data-set size


def backup_round(run: Run, ds: DataSet, size: int, label: str, main: bool) -> Sample:
    """One run of each backup method at ``size``; returns our file backup's sample."""
    ctx, opts, server = run.ctx, run.opts, ds.server
    rdb = run.record(methods.raw_rdb(ctx, server, size, run.workdir / "dump.rdb"), label)
    run.datasets[size]["rdb_bytes"] = rdb.bytes_out
    ours = run.record(methods.ours_file(ctx, server, size, run.workdir / "ours.ssbk"), label)
    if opts.wants("backup") and size <= opts.keys:
        run.record(methods.runbook(ctx, server, size, run.workdir / "runbook.gz.gpg"), label)
    if opts.wants("backup", "restore") and size <= opts.keys:
        run.rdb_backup = run.record(
            methods.ours_rdb_stream(ctx, server, size, run.workdir / "ours-rdb.ssbk"), label
        )
    if opts.wants("backup") and main and ctx.moto is not None:
        run.record(methods.ours_s3(ctx, server, size), label)
        empty_bucket(run)
        run.record(methods.ours_rdb_stream(ctx, server, size, None), label)
        empty_bucket(run)
    return ours


def restore_round(run: Run, size: int, backup: Sample, resp: Path | None, index: int, label: str) -> None:
    """One run of each restore method at ``size`` (ours restores ``backup``'s file).

    The order turns by one method each round: the first restore after the data set's files
    were written costs the server more (measured: up to 1.8x its CPU), and that must not always
    fall on the same method.
    """
    encrypted = run.workdir / "ours.ssbk"
    steps: list[Callable[[], Sample]] = [
        lambda: methods.ours_restore(run.ctx, encrypted, backup.extra["backup_id"], size)
    ]
    if run.ctx.moto is not None and run.opts.wants("restore"):
        steps.append(lambda: methods.ours_restore_s3(run.ctx, encrypted, backup, size))
    rdb = run.rdb_backup
    if rdb is not None and run.opts.wants("restore"):
        rdb_file = run.workdir / "ours-rdb.ssbk"
        steps.append(lambda: methods.ours_restore_rdb(run.ctx, rdb_file, rdb.extra["backup_id"], size))
    if resp is not None:
        steps.append(lambda: methods.pipe_restore(resp, size))
    turn = index % len(steps)
    for step in steps[turn:] + steps[:turn]:
        sample = run.record(step(), label)
        if sample.method.startswith("ours") and sample.keys != backup.keys:
            _log(f"  note: restored {sample.keys} keys of the {backup.keys} backed up (expired since)")


def prepare_plain(run: Run, ds: DataSet, size: int, with_resp: bool) -> tuple[Path, Path | None]:
    """The unencrypted record stream and, when needed, the RESP file made from it."""
    plain = run.workdir / "plain.records"
    keys = ds.write_plain_stream(plain)
    run.datasets[size]["plain_bytes"] = plain.stat().st_size
    if not with_resp:
        return plain, None
    resp = run.workdir / "restore.resp"
    started = time.perf_counter()
    written = write_resp(plain, resp)
    seconds = time.perf_counter() - started
    _log(f"  RESP file: {written:,} RESTORE commands from {keys:,} records in {seconds:.1f} s")
    return plain, resp


def measure_size(run: Run, ds: DataSet, size: int) -> None:
    """Grow the data set to ``size`` and run every selected comparison that uses it."""
    opts = run.opts
    main = size == opts.keys
    _log(f"\n== data set: {size:,} keys ({'main size' if main else 'scaling point'})")
    stats = ds.grow_to(size)
    run.datasets[size] = stats.as_dict()
    mib = stats.used_memory / 2**20
    _log(f"  {stats.keys:,} keys, used_memory {mib:,.0f} MiB, seeded in {stats.seed_seconds:.0f} s")
    repeat = opts.repeat if main else 1
    backup: Sample | None = None
    run.rdb_backup = None
    if opts.wants("backup", "restore", "memory"):
        for index in range(repeat):
            backup = backup_round(run, ds, size, f"[backup {index + 1}/{repeat}]", main)
    restoring = backup is not None and opts.wants("restore", "memory")
    plain = resp = None
    if restoring or (main and opts.wants("stages", "cluster")):
        plain, resp = prepare_plain(run, ds, size, with_resp=opts.wants("restore"))
    if restoring and backup is not None:
        for index in range(repeat):
            restore_round(run, size, backup, resp, index, f"[restore {index + 1}/{repeat}]")
    if main and opts.wants("stages") and plain is not None:
        run.results["stages"] = run_stages(run, plain)
    if main and opts.wants("cluster") and plain is not None:
        _log(f"== cluster: {', '.join(map(str, cluster_bench.SHARD_COUNTS))} primaries, {size:,} keys")
        run.results["cluster"] = cluster_bench.measure(plain, run.workdir, run.ctx.worker_env())
        for line in cluster_bench.log_lines(run.results["cluster"]):
            _log(line)
    if main and opts.profile and backup is not None:
        run.results["profiles"] = profile_once(run, ds, size, backup)
    for name in ("plain.records", "restore.resp", "ours.ssbk", "ours-rdb.ssbk"):
        (run.workdir / name).unlink(missing_ok=True)
    _log(f"  results so far: {run.save()}")


def run_stages(run: Run, plain: Path) -> dict[str, Any]:
    """Comparison 3 in its own process (clean heap, nothing else running)."""
    _log(f"== stages: EnvelopeWriter vs raw AES-256-GCM on {run.opts.stage_mib} MiB in memory")
    argv = [sys.executable, "-m", "bench.stages", "--plain", str(plain), "--mib", str(run.opts.stage_mib)]
    done = run_pipeline([[*argv, "--repeat", str(max(3, run.opts.repeat))]], env=run.ctx.worker_env())
    result: dict[str, Any] = json.loads(done.stdout)
    for name, value in result.items():
        _log(f"  {name:<34} {value:10,.1f}{'' if 'ratio' in name or 'bytes' in name else ' MB/s'}")
    return result


def profile_once(run: Run, ds: DataSet, size: int, backup: Sample) -> dict[str, Any]:
    """One extra backup and restore under cProfile (main thread only); top functions by own time."""
    import pstats

    out: dict[str, Any] = {}
    for what in ("backup", "restore"):
        path = run.opts.results_dir / f"{run.stamp}-{what}.prof"
        if what == "backup":
            methods.ours_file(run.ctx, ds.server, size, run.workdir / "profiled.ssbk", profile=str(path))
        else:
            encrypted = run.workdir / "ours.ssbk"
            methods.ours_restore(run.ctx, encrypted, backup.extra["backup_id"], size, profile=str(path))
        stats = pstats.Stats(str(path))
        rows = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)[:15]  # type: ignore[attr-defined]
        out[what] = [
            {"function": f"{Path(f).name}:{line}({name})", "calls": c[1], "own_s": c[2], "cumulative_s": c[3]}
            for (f, line, name), c in rows
        ]
        _log(f"== profile of our {what} (main thread, own time): {path}")
        for row in out[what][:10]:
            _log(f"  {row['own_s']:7.2f} s own {row['cumulative_s']:7.2f} s cum  {row['function']}")
    (run.workdir / "profiled.ssbk").unlink(missing_ok=True)
    return out


# --------------------------------------------------------------------------- summary


def print_summary(run: Run, path: Path, plot: Path | None) -> None:
    """The medians, ratios, stage rates, cold starts and targets, as plain text."""
    results = run.results
    _log("\n== medians (seconds: whole client process; MB/s: RDB size of the data set / seconds)")
    header = ("method", "keys", "runs", "seconds", "keys/s", "MB/s", "RSS MB", "CPU s", "server", "other")
    widths = (-18, 11, 5, 9, 10, 8, 8, 7, 7, 7)
    _log("".join(f"{h:<{-w}}" if w < 0 else f"{h:>{w}}" for h, w in zip(header, widths, strict=True)))
    for row in results["medians"]:
        _log(
            f"{row['method']:<18}{row['dataset_keys']:>11,}{row['runs']:>5}{row['seconds']:>9.2f}"
            f"{row['keys_per_second']:>10,.0f}{row['dataset_mb_per_second']:>8.1f}{row['peak_rss_mb']:>8.1f}"
            f"{row['cpu_seconds']:>7.1f}{row['server_cpu_seconds']:>7.1f}{row['other_cpu_seconds']:>7.1f}"
        )
    main_ratios = results["ratios"].get(str(run.opts.keys), {})
    best = results["ratios_best"].get(str(run.opts.keys), {})
    if main_ratios:
        _log(f"\n== ratios ours/theirs at {run.opts.keys:,} keys (keys per second: medians, best runs)")
        for name, value in main_ratios.items():
            _log(f"  {name:<26} {value:6.2f}x {best.get(name, 0.0):6.2f}x")
    cold = results.get("coldstart")
    if cold:
        _log(
            f"\n== cold start: import boto3 {cold['boto3_seconds']:.3f} s; slowest handler {cold['slowest']}"
        )
    _log("\n== targets")
    for target in results["targets"]:
        _log(f"  {target['status']:<13} {target['goal']:<58} {target['margin']}")
    _log(f"\nresults: {path}" + (f"\nplot:    {plot}" if plot else ""))


def draw_plot(run: Run) -> Path | None:
    """The PNG, when matplotlib is installed (``make bench`` installs bench/requirements.txt)."""
    if not any(row["method"] == "ours_file" for row in run.results.get("medians", [])):
        return None
    try:
        from .plot import draw
    except ImportError:
        _log("matplotlib is not installed: pip install -r bench/requirements.txt for the plot")
        return None
    default = run.opts.results_dir / f"{run.stamp}.png" if run.opts.quick else DEFAULT_PLOT
    try:
        return draw(run.results, run.opts.plot or default)
    except ImportError:
        _log("matplotlib is not installed: pip install -r bench/requirements.txt for the plot")
        return None


def program(opts: Options) -> Path:
    """Run every selected comparison; returns the results file."""
    tools.ensure_tools()
    if opts.workdir is not None:
        opts.workdir.mkdir(parents=True, exist_ok=True)  # --workdir may name a folder not made yet
    opts.results_dir.mkdir(parents=True, exist_ok=True)  # profiles are written there before results
    workdir = Path(tempfile.mkdtemp(prefix="ssbk-bench-", dir=opts.workdir))
    run = Run(opts, workdir)
    moto = ds = None
    try:
        if opts.wants("coldstart"):
            _log(f"== cold start: median of {opts.coldstart_runs} fresh interpreters per module")
            run.results["coldstart"] = coldstart.measure(opts.coldstart_runs)
            run.save()
        sizes = data_sizes(opts)
        if sizes:
            if opts.wants("backup", "restore") and opts.s3:
                moto = start_s3(run)
            ds = DataSet()
            for size in sizes:
                measure_size(run, ds, size)
            ds.stop()
            ds = None
        if opts.wants("drill"):
            _log(f"\n== drill: full-restore scenario at {opts.keys:,} keys (its own process)")
            run.results["drill"] = drill_bench.measure(opts.keys)
            for line in drill_bench.log_lines(run.results["drill"]):
                _log(line)
        path = run.save()
        print_summary(run, path, draw_plot(run))
        return path
    finally:
        if ds is not None:
            ds.stop()
        if moto is not None:
            moto.stop()
        _stop_gpg_agent(run.ctx.gpg_home)
        shutil.rmtree(workdir, ignore_errors=True)


def _stop_gpg_agent(home: Path) -> None:
    """Stop the gpg-agent our throwaway GNUPGHOME may have started (only that one)."""
    if shutil.which("gpgconf"):
        subprocess.run(  # noqa: S603,S607 - gpgconf from PATH with a fixed argument list
            ["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], capture_output=True, check=False
        )


def main(argv: list[str] | None = None) -> None:
    """Entry point: failures become a message and exit status 1."""
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        program(opts)
    except BenchError as exc:
        sys.exit(f"bench failed: {exc}")
    except KeyboardInterrupt:
        sys.exit("bench interrupted")


if __name__ == "__main__":
    main()

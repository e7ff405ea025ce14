"""Run processes and pipelines, measuring wall time, CPU time and peak RSS of each process.

Every measured command runs under GNU ``/usr/bin/time``, which reports the command's own
``ru_maxrss`` and CPU times. The harness cannot read them itself with ``os.wait4``: Python
starts children with vfork, and Linux carries the parent's peak RSS into a child's
``ru_maxrss`` across exec, so every child would look as large as the harness.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

CLK_TCK = os.sysconf("SC_CLK_TCK")
TIME = "/usr/bin/time"


class BenchError(RuntimeError):
    """A benchmarked command failed or produced an implausible result."""


@dataclass
class ProcessUsage:
    """What one reaped process used."""

    argv0: str
    exit_code: int
    peak_rss_kb: int
    cpu_seconds: float


@dataclass
class Sample:
    """One timed run of one method: wall seconds, summed CPU and RSS, and method details."""

    comparison: str
    method: str
    dataset_keys: int
    seconds: float
    peak_rss_kb: int
    cpu_seconds: float
    server_cpu_seconds: float = 0.0
    other_cpu_seconds: float = 0.0
    keys: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    processes: list[ProcessUsage] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return asdict(self)


@dataclass
class Completed:
    """Result of :func:`run_pipeline`: wall time, each process's usage, and captured stderr."""

    seconds: float
    usage: list[ProcessUsage]
    stdout: bytes
    stderr: list[bytes]

    @property
    def peak_rss_kb(self) -> int:
        """Sum of the stages' peaks: they run at the same time, so this bounds the footprint."""
        return sum(u.peak_rss_kb for u in self.usage)

    @property
    def cpu_seconds(self) -> float:
        """User plus system CPU of every stage."""
        return sum(u.cpu_seconds for u in self.usage)


def _reap(proc: subprocess.Popen[bytes], argv0: str, report: Any) -> ProcessUsage:
    """Wait for one ``/usr/bin/time`` wrapper and read what it measured of its command."""
    _, status, _ = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    lines = _drain(report).decode(errors="replace").split()
    try:
        rss_kb, user, system = int(lines[-3]), float(lines[-2]), float(lines[-1])
    except (IndexError, ValueError):
        rss_kb, user, system = 0, 0.0, 0.0
    return ProcessUsage(Path(argv0).name, proc.returncode, rss_kb, user + system)


def _drain(log: Any) -> bytes:
    log.seek(0)
    data: bytes = log.read()
    log.close()
    return data


def run_pipeline(
    stages: Sequence[Sequence[str]],
    *,
    stdin: BinaryIO | None = None,
    stdout: BinaryIO | None = None,
    env: Mapping[str, str] | None = None,
) -> Completed:
    """Run ``stages`` connected by pipes (like a shell ``a | b | c``) and reap each one.

    The first stage reads ``stdin`` (default: nothing), the last writes ``stdout`` (default:
    captured). Raises BenchError when any stage exits non-zero.
    """
    procs: list[subprocess.Popen[bytes]] = []
    logs = [tempfile.TemporaryFile() for _ in stages]  # files, not pipes: a chatty stage never blocks
    reports = [tempfile.NamedTemporaryFile(prefix="bench-time-") for _ in stages]  # noqa: SIM115
    started = time.perf_counter()
    upstream: Any = stdin if stdin is not None else subprocess.DEVNULL
    for index, (argv, log, report) in enumerate(zip(stages, logs, reports, strict=True)):
        last = index == len(stages) - 1
        target: Any = (stdout if stdout is not None else subprocess.PIPE) if last else subprocess.PIPE
        proc = subprocess.Popen(  # noqa: S603 - fixed tool paths and arguments
            [TIME, "-q", "-f", "%M %U %S", "-o", report.name, *argv],
            stdin=upstream,
            stdout=target,
            stderr=log,
            env=dict(env or os.environ),
        )
        if index > 0:
            upstream.close()  # only the next stage holds the read end, so SIGPIPE propagates
        upstream = proc.stdout
        procs.append(proc)
    captured = procs[-1].stdout.read() if stdout is None and procs[-1].stdout is not None else b""
    usage = [_reap(p, argv[0], r) for p, argv, r in zip(procs, stages, reports, strict=True)]
    seconds = time.perf_counter() - started
    if procs[-1].stdout is not None:
        procs[-1].stdout.close()
    errors = [_drain(log) for log in logs]
    failed = [(u, e) for u, e in zip(usage, errors, strict=True) if u.exit_code != 0]
    if failed:
        u, e = failed[0]
        raise BenchError(f"{u.argv0} exited {u.exit_code}: {e.decode(errors='replace')[-500:]}")
    return Completed(seconds, usage, captured, errors)


def process_cpu_seconds(pid: int) -> float:
    """User+system CPU of ``pid`` and its reaped children (a fork that saved an RDB), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After the command name: state is field 3, so utime..cstime (fields 14-17) are [11:15].
    return sum(int(v) for v in fields[11:15]) / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU seconds spent by every process on the machine since boot (all cores), from /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


class Meter:
    """CPU used by one server process and by the whole machine between ``start`` and ``stop``.

    The machine total minus the client and server CPU is what other processes took meanwhile:
    a noise indicator, since other work on a 2-core machine slows every method.
    """

    def __init__(self, server_pid: int) -> None:
        self._pid = server_pid
        self._server = process_cpu_seconds(server_pid)
        self._busy = machine_busy_seconds()
        self.server_cpu = 0.0
        self.machine_cpu = 0.0

    def stop(self) -> Meter:
        """Take the second reading."""
        self.server_cpu = process_cpu_seconds(self._pid) - self._server
        self.machine_cpu = machine_busy_seconds() - self._busy
        return self


def median(values: Sequence[float]) -> float:
    """Median, 0.0 for no values."""
    return float(statistics.median(values)) if values else 0.0

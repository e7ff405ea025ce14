"""Comparison 4: import time of every Lambda handler module against ``import boto3`` alone.

Each measurement is a fresh interpreter that times only the import (interpreter start-up is
excluded) and prints it; the median of several processes is reported, after one warm-up
process that writes the bytecode caches (a deployed layer ships them too). Handlers are
imported with the environment Lambda gives them (``LAMBDA_TASK_ROOT`` set, so Powertools'
Tracer is enabled and patches botocore as it does in AWS), and with tracing disabled.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from .measure import median

REPO_ROOT = Path(__file__).resolve().parent.parent
_LOAD_HANDLER = (
    "import sys, time\n"
    "started = time.perf_counter()\n"
    "import importlib.util\n"
    "spec = importlib.util.spec_from_file_location('app', sys.argv[1])\n"
    "module = importlib.util.module_from_spec(spec)\n"
    "spec.loader.exec_module(module)\n"
    "print(time.perf_counter() - started)\n"
)
_IMPORT_BOTO3 = (
    "import time\nstarted = time.perf_counter()\nimport boto3\nprint(time.perf_counter() - started)\n"
)


def lambda_env(tracing: bool) -> dict[str, str]:
    """The variables a deployed handler sees (template Globals plus the runtime's own)."""
    env = {
        **os.environ,
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_LAMBDA_FUNCTION_NAME": "bench",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
        "POWERTOOLS_SERVICE_NAME": "servalsheets-backup",
        "POWERTOOLS_METRICS_NAMESPACE": "ServalSheets/Backup",
        "LOG_LEVEL": "INFO",
        "PYTHONPATH": str(REPO_ROOT),
    }
    if tracing:
        env["LAMBDA_TASK_ROOT"] = str(REPO_ROOT)
    else:
        env["POWERTOOLS_TRACE_DISABLED"] = "true"
    return env


def _timed(
    code: str, *args: str, env: dict[str, str], extra: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our interpreter and fixed code
        [sys.executable, *extra, "-c", code, *args], env=env, capture_output=True, text=True, check=True
    )


def import_seconds(code: str, args: tuple[str, ...], env: dict[str, str]) -> float:
    """Import seconds measured in one fresh interpreter."""
    return float(_timed(code, *args, env=env).stdout.strip())


def handler_paths() -> list[Path]:
    """Every ``functions/*/app.py``."""
    return sorted((REPO_ROOT / "functions").glob("*/app.py"))


def heaviest_imports(path: Path, env: dict[str, str], top: int = 8) -> list[dict[str, Any]]:
    """``-X importtime`` of one handler, self time summed per top-level package."""
    done = _timed(_LOAD_HANDLER, str(path), env=env, extra=("-X", "importtime"))
    per_package: Counter[str] = Counter()
    for line in done.stderr.splitlines():
        parts = line.split("|")
        if len(parts) != 3 or not parts[0].startswith("import time:") or "self" in parts[0]:
            continue
        package = parts[2].strip().split(".")[0]
        per_package[package] += int(parts[0].split(":")[1])
    return [{"package": name, "self_seconds": us / 1e6} for name, us in per_package.most_common(top)]


Case = tuple[str, tuple[str, ...], dict[str, str]]


def _cases() -> dict[str, Case]:
    """name -> (code, arguments, environment) of every import measured."""
    traced, untraced = lambda_env(True), lambda_env(False)
    cases: dict[str, Case] = {"boto3": (_IMPORT_BOTO3, (), untraced)}
    for path in handler_paths():
        cases[f"{path.parent.name}"] = (_LOAD_HANDLER, (str(path),), traced)
        cases[f"{path.parent.name} (tracing off)"] = (_LOAD_HANDLER, (str(path),), untraced)
    return cases


def measure(runs: int = 5) -> dict[str, Any]:
    """Median and best import time of each handler (Lambda env and tracing off) and of ``import boto3``.

    Rounds go through every case in turn, so a burst of other work on the machine hits all of
    them alike instead of one module's consecutive runs.
    """
    cases = _cases()
    for code, args, env in cases.values():
        import_seconds(code, args, env)  # warm-up: bytecode caches
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(runs):
        for name, (code, args, env) in cases.items():
            times[name].append(import_seconds(code, args, env))
    boto3_seconds = median(times["boto3"])
    handlers: dict[str, dict[str, float]] = {}
    for path in handler_paths():
        name = path.parent.name
        seconds = median(times[name])
        handlers[name] = {
            "lambda_env_seconds": seconds,
            "lambda_env_best_seconds": min(times[name]),
            "tracing_off_seconds": median(times[f"{name} (tracing off)"]),
            "ratio_to_boto3": seconds / boto3_seconds,
        }
        print(f"  {name}: {seconds:.3f} s ({seconds / boto3_seconds:.2f}x import boto3)", flush=True)
    slowest = max(handlers, key=lambda n: handlers[n]["lambda_env_seconds"])
    return {
        "runs": runs,
        "boto3_seconds": boto3_seconds,
        "boto3_best_seconds": min(times["boto3"]),
        "handlers": handlers,
        "slowest": slowest,
        "slowest_heaviest_imports": heaviest_imports(
            REPO_ROOT / "functions" / slowest / "app.py", lambda_env(True)
        ),
    }

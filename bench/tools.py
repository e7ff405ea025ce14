"""The external tools the comparisons need, installed with apt-get when missing, and the machine."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

# tool -> Debian package that provides it (GNU time measures each process's peak RSS)
REQUIRED = {
    "redis-server": "redis-server",
    "redis-cli": "redis-tools",
    "gzip": "gzip",
    "gpg": "gnupg",
    "/usr/bin/time": "time",
}


def missing_tools() -> dict[str, str]:
    """Tools not on PATH, with their packages."""
    return {tool: package for tool, package in REQUIRED.items() if shutil.which(tool) is None}


def ensure_tools() -> None:
    """Install missing tools with apt-get when root; otherwise exit with what to install."""
    missing = missing_tools()
    if not missing:
        return
    packages = sorted(set(missing.values()))
    if os.geteuid() != 0:
        sys.exit(
            f"bench needs {', '.join(sorted(missing))}; install them with: "
            f"sudo apt-get install -y {' '.join(packages)}"
        )
    print(f"installing {' '.join(packages)} with apt-get", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)  # noqa: S607 - apt-get on PATH
    subprocess.run(["apt-get", "install", "-y", "-qq", *packages], check=True, env=env)  # noqa: S607
    still = missing_tools()
    if still:
        sys.exit(f"apt-get did not provide {', '.join(sorted(still))}")


def _first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)  # noqa: S603
    except (OSError, subprocess.TimeoutExpired):
        return "unavailable"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr).strip() else ""


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _cpu_flags() -> list[str]:
    wanted = {"aes", "vaes", "vpclmulqdq", "sha_ni", "avx2", "avx512f"}
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return sorted(wanted & set(line.split(":", 1)[1].split()))
    return []


def _memory_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / (1 << 20), 1)
    return 0.0


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine() -> dict[str, Any]:
    """CPU, memory, OS and the versions of every tool and library involved."""
    return {
        "cpu": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "kernel": platform.release(),
        "os": _first_line(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "python": platform.python_version(),
        "redis_server": _first_line(["redis-server", "--version"]),
        "redis_cli": _first_line(["redis-cli", "--version"]),
        "gzip": _first_line(["gzip", "--version"]),
        "gpg": _first_line(["gpg", "--version"]),
        "libraries": {
            name: _package_version(name)
            for name in ("redis", "hiredis", "cryptography", "zstandard", "boto3", "moto")
        },
    }

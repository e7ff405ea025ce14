"""CLI subcommands for restores and the drill (registered by cli.py)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

COMMANDS: dict[str, Callable[[argparse.Namespace, Any], int]] = {}


def register(sub: Any, add: Callable[..., None]) -> None:
    """Add the restore and drill subcommands."""

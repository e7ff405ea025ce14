"""``servalsheets-backup deploy-check``: what a deploy with these answers would do, before it runs.

Comes with the local distribution (it reads template.yaml from a checkout of this repository).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from servalsheets_backup.errors import InvalidInputError

from .deploy_check import load_parameters, preview

Handler = Callable[[argparse.Namespace, Any], int]
REPO_TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"


def register(sub: Any, add: Callable[..., None]) -> dict[str, Handler]:
    """Add the deploy-check subcommand; returns its handler by command name."""
    add(
        sub,
        "deploy-check",
        "Check a samconfig.toml or parameter file against template.yaml's parameters, Rules and "
        "Conditions, and list what the stack would create (no AWS call). Exit 2 when it cannot deploy.",
        "servalsheets-backup deploy-check --config deploy/samconfig.logical.toml  (exit 2: cannot deploy)",
        _arguments,
    )
    return {"deploy-check": cmd_deploy_check}


def _arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--config", required=True, type=Path, help="samconfig.toml, or a JSON parameter file"
    )
    command.add_argument("--config-env", default="default", help="samconfig environment (default: default)")
    command.add_argument(
        "--template", type=Path, default=REPO_TEMPLATE, help="template (default: the repo's)"
    )


def cmd_deploy_check(args: argparse.Namespace, out: Any) -> int:
    """Print what is missing or wrong, then the resources by type; exit 1 when it cannot deploy."""
    if not args.config.is_file():
        raise InvalidInputError(f"--config {args.config}: no such file")
    if not args.template.is_file():
        raise InvalidInputError(f"--template {args.template}: no such file (run from a checkout)")
    try:
        given = load_parameters(args.config, args.config_env)
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None
    result = preview(args.template, given)
    # Parameter values are not echoed: the report names parameters, never what was answered.
    report = {"ok": result.ok, "problems": result.problems, "creates": result.created}
    out.emit(report, lambda: out.line(result.summary()))
    return 0 if result.ok else 2  # 2: bad input or configuration, as everywhere in the CLI

"""``servalsheets-backup drill``: registered into the runtime CLI through an entry point.

The runtime package (what the Lambda layer ships) has no drill: this module, the drill and the
harness it starts (moto, redis-servers, the local deployer) come with the local distribution,
which ``make drill`` installs.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from servalsheets_backup.errors import InvalidInputError
from servalsheets_backup.format.manifest import COMPONENT_KINDS

from .scenarios import DRILL_SCENARIOS

Handler = Callable[[argparse.Namespace, Any], int]


def register(sub: Any, add: Callable[..., None]) -> dict[str, Handler]:
    """Add the drill subcommand; returns its handler by command name."""
    add(
        sub,
        "drill",
        "Run the local disaster-recovery drill (moto + real redis-servers; no AWS account).",
        "servalsheets-backup drill --keys 5000 --scenario rollback",
        _drill_args,
    )
    return {"drill": cmd_drill}


def _drill_args(command: argparse.ArgumentParser) -> None:
    command.add_argument("--keys", type=int, default=2000, help="Redis keys to seed (default 2000)")
    command.add_argument(
        "--kinds", default="config,tokens,redis", help="scheduled backups to run before the full one"
    )
    command.add_argument(
        "--scenario", choices=DRILL_SCENARIOS, default="full-restore", help="which restore case to drill"
    )
    command.add_argument(
        "--keep",
        action="store_true",
        help="leave the environment up (until Ctrl-C) and print how to point tools at it",
    )


def cmd_drill(args: argparse.Namespace, out: Any) -> int:
    """Run the drill and print its report."""
    from .drill import run_drill
    from .drill_report import render

    if args.keys < 10 or args.keys > 5_000_000:
        raise InvalidInputError("--keys must be between 10 and 5,000,000")
    kinds = tuple(kind.strip() for kind in args.kinds.split(",") if kind.strip())
    unknown = [kind for kind in kinds if kind not in COMPONENT_KINDS]
    if unknown:
        raise InvalidInputError(f"--kinds: unknown {', '.join(unknown)}; use config, tokens, redis")
    say = (lambda message: out.stderr.write(f"drill: {message}\n")) if not out.as_json else None
    if "LOG_LEVEL" not in os.environ:
        quiet_handler_logs()
    keep = _keep_until_interrupted(out) if args.keep else None
    report = run_drill(keys=args.keys, kinds=kinds, scenario=args.scenario, keep=keep, progress=say)
    out.emit(report.as_dict(), lambda: out.line(render(report)))
    return 0 if report.ok else 7


def quiet_handler_logs() -> None:
    """The handlers' INFO lines would bury the drill's report; warnings and errors still show."""
    import logging

    from servalsheets_backup.handler_support import logger

    logger.setLevel(logging.WARNING)
    logging.getLogger("servalsheets_backup").setLevel(logging.WARNING)


def _keep_until_interrupted(out: Any) -> Callable[[Any], None]:
    def keep(environment: Any) -> None:
        lines = [
            "The drill environment is up. In another shell:",
            f"  export AWS_ENDPOINT_URL={environment.moto.endpoint} AWS_DEFAULT_REGION=us-east-1",
            "  export AWS_ACCESS_KEY_ID=drill AWS_SECRET_ACCESS_KEY=drill BACKUP_ENVIRONMENT=drill",
            f"  export BACKUP_BUCKET={environment.output('BackupBucketName')}",
            f"  export BACKUP_KMS_KEY_ID={environment.output('BackupKeyArn')}",
            f"  export STATE_TABLE={environment.output('StateTableName')}",
            f"  export RESTORE_STATE_MACHINE_ARN={environment.output('RestoreStateMachineArn')}",
            "  servalsheets-backup list",
            f"Production Redis: redis://127.0.0.1:{environment.production.port}  "
            f"target: redis://127.0.0.1:{environment.target.port}",
            "Press Ctrl-C to stop everything.",
        ]
        out.stderr.write("\n".join(lines) + "\n")
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            sys.stderr.write("stopping the drill environment\n")

    return keep

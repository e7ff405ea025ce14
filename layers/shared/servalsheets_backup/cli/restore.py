"""CLI subcommand for restores (registered by cli/main.py)."""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from collections.abc import Callable
from typing import Any

from servalsheets_backup.errors import InvalidInputError, RestoreVerificationError
from servalsheets_backup.format.manifest import COMPONENT_KINDS, KINDS

COMMANDS: dict[str, Callable[[argparse.Namespace, Any], int]] = {}
BACKUP_ID = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{8}$")


def register(sub: Any, add: Callable[..., None]) -> None:
    """Add the restore subcommand."""
    add(
        sub,
        "restore",
        "Restore a backup set (here, or by starting the restore state machine).",
        "servalsheets-backup restore latest --dry-run                      # plan a full restore\n"
        "servalsheets-backup restore latest --kind redis --key-pattern 'refresh:*' --mode merge\n"
        "servalsheets-backup restore 2026-11-24T12:00:00Z --kind tokens     # point in time\n"
        "servalsheets-backup restore latest --kind redis --new-replication-group prod-restored "
        "--update-redis-url-secret\n"
        "servalsheets-backup restore latest --mode replace --start-execution  # via the state machine",
        _restore_args,
    )
    COMMANDS.update({"restore": cmd_restore})


def _restore_args(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "backup", help='a backup id, "latest", or an ISO time to restore the newest backup before it'
    )
    command.add_argument(
        "--kind",
        action="append",
        choices=COMPONENT_KINDS,
        dest="kinds",
        help="component to restore (repeat for several; default all three)",
    )
    command.add_argument(
        "--source-kind", choices=KINDS, help="kind of set to restore from (default: best match)"
    )
    command.add_argument(
        "--mode",
        choices=("replace", "merge", "missing-only"),
        default="merge",
        help="replace flushes the target Redis first (after the safety backup); default merge",
    )
    command.add_argument(
        "--key-pattern",
        action="append",
        default=[],
        dest="key_patterns",
        help="only Redis keys matching this glob (repeatable), e.g. 'refresh:*'",
    )
    command.add_argument("--dry-run", action="store_true", help="verify and print the plan; change nothing")
    command.add_argument(
        "--target-redis-url-secret", help="Secrets Manager secret holding the target REDIS_URL"
    )
    command.add_argument(
        "--target-token-path", help="token store path to restore to (absolute path or s3://)"
    )
    command.add_argument("--target-secret-prefix", help="restore secrets and parameters under this prefix")
    command.add_argument(
        "--new-replication-group",
        help="ElastiCache-mode backups: id of a NEW replication group to seed (the running one is kept)",
    )
    command.add_argument(
        "--new-serverless-cache",
        help="ElastiCache-mode backups: name of a NEW serverless cache to seed (the running one is kept)",
    )
    command.add_argument(
        "--update-redis-url-secret",
        action="store_true",
        help="with --new-replication-group or --new-serverless-cache: point the REDIS_URL secret at it",
    )
    command.add_argument(
        "--requested-by", default=os.environ.get("USER", "operator"), help="who asks (audit trail)"
    )
    command.add_argument("--reason", default="", help="why (audit trail)")
    command.add_argument(
        "--start-execution",
        action="store_true",
        help="start the restore state machine instead and follow it until it ends",
    )
    command.add_argument(
        "--state-machine-arn",
        default=os.environ.get("RESTORE_STATE_MACHINE_ARN"),
        help="with --start-execution (default $RESTORE_STATE_MACHINE_ARN, the stack output)",
    )


def _request(args: argparse.Namespace) -> dict[str, Any]:
    backup: Any = args.backup
    if args.backup != "latest" and not BACKUP_ID.match(args.backup):
        backup = {"as_of": args.backup}  # anything else is a point in time
    target = {
        key: value
        for key, value in {
            "redis_url_secret_id": args.target_redis_url_secret,
            "token_store_path": args.target_token_path,
            "secret_prefix": args.target_secret_prefix,
            "new_replication_group_id": args.new_replication_group,
            "new_serverless_cache_name": args.new_serverless_cache,
            "update_redis_url_secret": args.update_redis_url_secret,
        }.items()
        if value
    }
    request: dict[str, Any] = {
        "backup": backup,
        "kinds": args.kinds or list(COMPONENT_KINDS),
        "mode": args.mode,
        "key_patterns": args.key_patterns,
        "dry_run": args.dry_run,
        "requested_by": args.requested_by,
        "reason": args.reason,
        "target": target,
    }
    if args.source_kind:
        request["source_kind"] = args.source_kind
    return request


def cmd_restore(args: argparse.Namespace, out: Any) -> int:
    """Restore here, or start the state machine and follow it."""
    request = _request(args)
    if args.start_execution:
        return _follow_execution(args, request, out)
    from servalsheets_backup.services import Services
    from servalsheets_backup.workflows.restore import run_restore

    owner = f"cli:{args.requested_by}@{os.getpid()}"
    say = (lambda step: out.stderr.write(f"- {step}\n")) if not out.as_json else None
    summary = run_restore(Services.from_env(), request, owner, say)
    out.emit(summary, lambda: _print_summary(summary, out))
    return 0


def _print_summary(summary: dict[str, Any], out: Any) -> None:
    out.line(
        f"restore {summary['restore_id']}: {summary['outcome']} in {summary['duration_seconds']:.1f}s "
        f"from {summary['backup']['kind']} backup {summary['backup']['backup_id']}"
    )
    if summary["outcome"] == "planned":
        out.line(json.dumps(summary["plan"], indent=2, sort_keys=True))
    for check in summary.get("checks", []):
        out.line(f"  [{'PASS' if check['ok'] else 'FAIL'}] {check['name']} {check.get('detail', '')}")


def _follow_execution(args: argparse.Namespace, request: dict[str, Any], out: Any) -> int:
    from servalsheets_backup.adapters.aws import client

    if not args.state_machine_arn:
        raise InvalidInputError(
            "--start-execution needs --state-machine-arn or RESTORE_STATE_MACHINE_ARN "
            "(the stack's RestoreStateMachineArn output)"
        )
    sfn = client("stepfunctions")
    arn = sfn.start_execution(stateMachineArn=args.state_machine_arn, input=json.dumps(request))[
        "executionArn"
    ]
    out.stderr.write(f"started {arn}\n")
    seen = 0
    while True:
        events = sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
        for event in events[seen:]:
            details = event.get("stateEnteredEventDetails")
            if details and not out.as_json:
                out.stderr.write(f"- {details['name']}\n")
        seen = len(events)
        description = sfn.describe_execution(executionArn=arn)
        if description["status"] != "RUNNING":
            break
        time.sleep(2)
    result = {
        "execution_arn": arn,
        "status": description["status"],
        "error": description.get("error"),
        "cause": description.get("cause"),
        "output": json.loads(description.get("output") or "null"),
    }
    out.emit(
        result, lambda: out.line(f"{description['status']}: {description.get('error') or 'restore finished'}")
    )
    if description["status"] != "SUCCEEDED":
        raise RestoreVerificationError(
            f"restore execution {description['status']}: {description.get('error')}"
        )
    return 0

"""The CLI's standby-Region options: where to work (``--region``, ``--bucket``, ``--standby``) and
``verify --against-bucket``, which compares one set in the primary and the standby buckets."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

from servalsheets_backup.store.replicas import compare_copies

LOCATION_ENV = {"region": "AWS_REGION", "bucket": "BACKUP_BUCKET"}


def add_location_options(parser: argparse.ArgumentParser) -> None:
    """``--region``, ``--bucket`` and ``--standby``, given before the command."""
    parser.add_argument("--region", help="AWS Region to work in (the standby's, when the primary is down)")
    parser.add_argument(
        "--bucket", help="backup bucket (default BACKUP_BUCKET; a standby stack's BackupBucketName)"
    )
    parser.add_argument(
        "--standby",
        action="store_true",
        help="the bucket is a standby's replica: only sets whose every object has arrived count",
    )


def apply_location(args: argparse.Namespace) -> Callable[[], None]:
    """Put the location options into the environment the commands read; returns the undo."""
    wanted = {
        env: getattr(args, option) for option, env in LOCATION_ENV.items() if getattr(args, option, None)
    }
    if getattr(args, "standby", False):
        wanted["STACK_ROLE"] = "standby"
    saved = {name: os.environ.get(name) for name in wanted}
    os.environ.update(wanted)

    def undo() -> None:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    return undo


def add_compare_options(command: argparse.ArgumentParser) -> None:
    """``verify --against-bucket B [--against-region R]``."""
    command.add_argument("--against-bucket", help="also compare the set with its copy in this bucket")
    command.add_argument("--against-region", help="the Region of --against-bucket (default: the same)")


def compare_rows(args: argparse.Namespace, services: Any, ref: Any) -> list[tuple[str, bool, str, str]]:
    """(object, ok, check, detail) rows comparing ``ref`` with its copy in ``--against-bucket``."""
    if not getattr(args, "against_bucket", None):
        return []
    from servalsheets_backup.adapters import aws

    region = args.against_region or services.settings.region or os.environ.get("AWS_DEFAULT_REGION")
    other = aws.client_in("s3", region) if region else aws.client("s3")
    differences = compare_copies(services.store.s3, services.store.bucket, other, args.against_bucket, ref)
    if not differences:
        return [("set", True, f"same as in {args.against_bucket}", "manifest bytes and object sizes equal")]
    return [(name, False, f"same as in {args.against_bucket}", detail) for name, detail in differences]

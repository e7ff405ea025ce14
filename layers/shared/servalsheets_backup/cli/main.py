"""``servalsheets-backup``: the operator CLI (same code as the Lambdas).

``main()`` turns errors into exit statuses; ``program()`` holds the logic so tests call it.
Exit codes: 0 success, 1 unexpected error, 2 usage error, 3 backup not found,
4 integrity or authenticity failure, 5 lock held, 6 restore verification failed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from servalsheets_backup import __version__
from servalsheets_backup.cli import standby as cli_standby
from servalsheets_backup.errors import BackupSystemError, IntegrityError, InvalidInputError
from servalsheets_backup.format.manifest import KINDS

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_INTEGRITY = 0, 1, 2, 3, 4

EPILOG = """environment:
  BACKUP_BUCKET, BACKUP_KMS_KEY_ID     the backup bucket and KMS key (stack outputs)
  BACKUP_ENVIRONMENT                   environment name bound into every key (default prod)
  STATE_TABLE                          lock table (stack output), needed by backup and restore
  AWS_DEFAULT_REGION, AWS_ENDPOINT_URL region, and an endpoint for local use (the drill's --keep)
  --region, --bucket, --standby        work on a standby Region's bucket (docs/operations.md, Region is down)
  see docs/operations.md for the rest (REDIS_URL, GOOGLE_TOKEN_STORE_PATH, CONFIG_*)

exit codes: 0 ok, 2 usage, 3 backup not found, 4 integrity failure, 5 locked, 6 verification failed
"""


class UsageError(InvalidInputError):
    """Bad command-line usage (exit 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse exits 2 itself; keep that but via our path
        raise UsageError(f"{message}\nrun `{self.prog} --help` for usage")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = _Parser(
        prog="servalsheets-backup",
        description="Back up, verify and restore ServalSheets state (Redis, token store, configuration).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    cli_standby.add_location_options(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    _add(
        sub,
        "list",
        "List complete backup sets, newest first.",
        "servalsheets-backup list --kind redis",
        _kind_option,
    )
    _add(
        sub,
        "show",
        "Show one backup set's manifest (no secret values).",
        "servalsheets-backup show latest --kind full",
        _selector_args,
    )
    _add(
        sub,
        "verify",
        "Verify a set: manifest authenticity, hashes, full decryption; with --against-bucket, its copy too.",
        "servalsheets-backup verify latest --kind tokens\n"
        "servalsheets-backup verify latest --kind full --against-bucket STANDBY_BUCKET",
        _verify_args,
    )
    _add(
        sub,
        "decrypt",
        "Decrypt a set's objects into a directory (offline with --escrow-key).",
        "servalsheets-backup decrypt 20261125T020000Z-1a2b3c4d --kind config --out ./restore",
        _decrypt_args,
    )
    _add(
        sub,
        "backup",
        "Make a backup set now (same code as the scheduled Lambdas).",
        "servalsheets-backup backup pre-deploy --label v2.0.1",
        _backup_args,
    )
    _add(
        sub,
        "escrow-keygen",
        "Create an X25519 escrow key pair for break-glass decryption.",
        "servalsheets-backup escrow-keygen --out ./escrow",
        _keygen_args,
    )
    _register_extensions(sub)
    return parser


def _add(
    sub: Any,
    name: str,
    purpose: str,
    example: str,
    configure: Callable[[argparse.ArgumentParser], None],
) -> None:
    command = sub.add_parser(
        name,
        help=purpose,
        description=purpose,
        epilog="examples:\n  " + example.replace("\n", "\n  "),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    configure(command)
    command.add_argument("--json", action="store_true", help="machine-readable JSON on stdout, nothing else")


def _kind_option(command: argparse.ArgumentParser) -> None:
    command.add_argument("--kind", choices=KINDS, help="only sets of this kind")


def _selector_args(command: argparse.ArgumentParser) -> None:
    command.add_argument("backup", help='a backup id, or "latest" (newest set of --kind)')
    _kind_option(command)


def _verify_args(command: argparse.ArgumentParser) -> None:
    _selector_args(command)
    cli_standby.add_compare_options(command)


def _decrypt_args(command: argparse.ArgumentParser) -> None:
    _selector_args(command)
    command.add_argument(
        "--out", required=True, type=Path, help="directory to write the plaintext objects into"
    )
    command.add_argument("--escrow-key", type=Path, help="escrow private key (PEM): decrypt without KMS")


def _backup_args(command: argparse.ArgumentParser) -> None:
    command.add_argument("kind", choices=KINDS, help="what to back up")
    command.add_argument("--label", help="release label (required for pre-deploy)")
    command.add_argument(
        "--poll-seconds",
        type=float,
        default=15.0,
        help="REDIS_MODE=elasticache: how often to check the snapshot and its export (default 15)",
    )


def _keygen_args(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--out", required=True, type=Path, help="directory for escrow.pem and escrow.pub.pem"
    )


# Commands other distributions add through this entry point group: the local distribution
# (servalsheets-backup-local, installed by `make drill`) adds `drill`. The runtime package, which
# the Lambda layer ships, has none of their code.
PLUGIN_GROUP = "servalsheets_backup.cli"
PLUGIN_COMMANDS: dict[str, Callable[[argparse.Namespace, Output], int]] = {}


def _register_extensions(sub: Any) -> None:
    from importlib.metadata import entry_points

    from servalsheets_backup.cli import restore as cli_restore

    cli_restore.register(sub, _add)
    unloadable: dict[str, str] = {}
    for plugin in entry_points(group=PLUGIN_GROUP):
        try:
            register = plugin.load()
        except ImportError as exc:  # installed, but what it needs is not (moto, say)
            unloadable[plugin.name] = f"{type(exc).__name__}: {exc}"
            continue
        PLUGIN_COMMANDS.update(register(sub, _add))
    if "drill" not in PLUGIN_COMMANDS:
        _add(sub, "drill", "The local drill (not installed: see `make drill`).", "make drill", _any_args)
        PLUGIN_COMMANDS["drill"] = _not_installed("drill", unloadable.get("drill"))


def _any_args(command: argparse.ArgumentParser) -> None:
    # Whatever the missing command's options were, take them as words, so the user hears
    # that the command is missing rather than that its options are unknown.
    command.prefix_chars = "\0"
    command.add_argument("rest", nargs="*", help=argparse.SUPPRESS)


def _not_installed(command: str, why: str | None) -> Callable[[argparse.Namespace, Output], int]:
    def refuse(args: argparse.Namespace, out: Output) -> int:
        cause = f" (its plugin failed to load: {why})" if why else ""
        raise InvalidInputError(
            f"the {command} is not installed{cause}: it comes with the local distribution, not the "
            "runtime package. From a checkout, run `make drill`, or `pip install -e local/`"
        )

    return refuse


# -- output ----------------------------------------------------------------------------
class Output:
    """Human output (rich) or JSON on stdout; progress and errors on stderr."""

    def __init__(self, as_json: bool, stdout: TextIO | None = None, stderr: TextIO | None = None) -> None:
        self.as_json = as_json
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr

    def emit(self, data: Any, human: Callable[[], None]) -> None:
        """Print ``data`` as JSON or call ``human``."""
        if self.as_json:
            self.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
        else:
            human()

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """A readable table on stdout."""
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title)
        for column in columns:
            table.add_column(column)
        for row in rows:
            table.add_row(*(str(cell) for cell in row))
        Console(file=self.stdout, width=140).print(table)

    def line(self, text: str) -> None:
        """One line of human output."""
        self.stdout.write(text + "\n")

    def progress(self, total: int, description: str) -> Any:
        """A progress bar on stderr, only when stderr is a terminal."""
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

        enabled = self.stderr.isatty() and not self.as_json
        progress = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=Console(file=self.stderr),
            disable=not enabled,
            transient=True,
        )
        return progress, progress.add_task(description, total=total)


# -- commands --------------------------------------------------------------------------
def _services() -> Any:
    from servalsheets_backup.services import Services

    return Services.from_env()


def cmd_list(args: argparse.Namespace, out: Output) -> int:
    """List sets."""
    refs = _services().store.list_sets(args.kind)
    data = [{"kind": r.kind, "backup_id": r.backup_id, "created_at": r.created_at.isoformat()} for r in refs]
    out.emit(
        data,
        lambda: out.table(
            "Backup sets",
            ["kind", "backup id", "created (UTC)"],
            [(d["kind"], d["backup_id"], d["created_at"]) for d in data],
        ),
    )
    return EXIT_OK


def cmd_show(args: argparse.Namespace, out: Output) -> int:
    """Show a manifest."""
    store = _services().store
    ref = store.resolve(args.backup, args.kind)
    manifest = store.load_manifest(ref)
    body = manifest.body()

    def human() -> None:
        out.line(f"{ref.kind} backup {ref.backup_id} created {manifest.created_at} ({manifest.environment})")
        if manifest.label:
            out.line(f"label: {manifest.label}")
        out.table(
            "Objects",
            ["name", "component", "plaintext bytes", "stored bytes", "items"],
            [
                (o.name, o.component, o.plaintext_size, o.stored_size, json.dumps(o.items))
                for o in manifest.objects
            ],
        )

    out.emit(body, human)
    return EXIT_OK


def cmd_verify(args: argparse.Namespace, out: Output) -> int:
    """Verify a set end to end."""
    services = _services()
    store = services.store
    ref = store.resolve(args.backup, args.kind)
    report = _verify_with_progress(store, ref, out, None)
    rows = [(c.name, c.ok, c.check, c.detail) for c in report.checks]
    rows += cli_standby.compare_rows(args, services, ref)
    data = {
        "ok": all(row[1] for row in rows),
        "kind": ref.kind,
        "backup_id": ref.backup_id,
        "checks": [
            {"object": name, "ok": ok, "check": check, "detail": detail} for name, ok, check, detail in rows
        ],
    }

    def human() -> None:
        out.table(
            f"Verify {ref.kind} {ref.backup_id}",
            ["object", "result", "check", "detail"],
            [(name, "ok" if ok else "FAILED", check, detail) for name, ok, check, detail in rows],
        )
        out.line("VERIFIED" if data["ok"] else "VERIFICATION FAILED")

    out.emit(data, human)
    failure = next((row for row in rows if not row[1]), None)
    if failure is not None:
        out.stderr.write(f"error: {failure[0]}: {failure[2]} failed {failure[3]}\n")
        return EXIT_INTEGRITY
    return EXIT_OK


def _verify_with_progress(store: Any, ref: Any, out: Output, keyring: Any) -> Any:
    manifest = store.load_manifest(ref) if keyring is None else None
    total = sum(o.plaintext_size for o in manifest.objects) if manifest else 0
    progress, task = out.progress(total, f"verifying {ref.backup_id}")
    with progress:
        return store.verify_set(ref, progress=lambda n: progress.advance(task, n), keyring=keyring)


def cmd_decrypt(args: argparse.Namespace, out: Output) -> int:
    """Decrypt every object of a set into a directory, after verifying it."""
    from servalsheets_backup.format.keys import EscrowKeyring

    store = _services().store
    keyring = EscrowKeyring.from_pem(args.escrow_key.read_bytes()) if args.escrow_key else None
    ref = store.resolve(args.backup, args.kind)
    report = store.verify_set(ref, keyring=keyring)
    failure = report.first_failure()
    if failure is not None or report.manifest is None:
        raise IntegrityError(
            failure.name if failure else "manifest",
            failure.check if failure else "manifest",
            failure.detail if failure else "",
        )
    written = []
    versions = report.versions()
    total = sum(entry.plaintext_size for entry in report.manifest.objects)
    progress, task = out.progress(total, f"decrypting {ref.backup_id}")
    with progress:
        for entry in report.manifest.objects:
            target = _safe_target(args.out, entry.name)
            target.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "wb") as handle:
                for chunk in store.read_object(
                    ref, entry, version_id=versions.get(entry.name), keyring=keyring
                ):
                    handle.write(chunk)
                    progress.advance(task, len(chunk))
            written.append({"object": entry.name, "path": str(target), "bytes": entry.plaintext_size})

    def human() -> None:
        for item in written:
            out.line(f"wrote {item['path']} ({item['bytes']} bytes, mode 0600)")

    out.emit({"backup_id": ref.backup_id, "kind": ref.kind, "files": written}, human)
    return EXIT_OK


def _safe_target(directory: Path, name: str) -> Path:
    target = (directory / name).resolve()
    if directory.resolve() not in target.parents:
        raise InvalidInputError(f"object name {name!r} would escape {directory}")
    return target


def cmd_backup(args: argparse.Namespace, out: Output) -> int:
    """Run one backup now."""
    from servalsheets_backup.workflows.backup import run_backup

    if args.poll_seconds < 0:
        raise InvalidInputError("--poll-seconds must be 0 or more")
    owner = f"cli:{os.environ.get('USER', 'operator')}@{os.getpid()}"
    result = run_backup(
        _services(), args.kind, owner=owner, label=args.label, trigger="cli", poll_seconds=args.poll_seconds
    )
    data = result.to_dict()
    summary = f"{result.kind} backup {result.backup_id}: {result.size_bytes} bytes"
    out.emit(data, lambda: out.line(f"{summary} in {result.duration_seconds:.1f}s"))
    return EXIT_OK


def cmd_escrow_keygen(args: argparse.Namespace, out: Output) -> int:
    """Generate an X25519 escrow key pair."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import x25519

    key = x25519.X25519PrivateKey.generate()
    args.out.mkdir(parents=True, exist_ok=True)
    private_path, public_path = args.out / "escrow.pem", args.out / "escrow.pub.pem"
    descriptor = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    data = {"private_key": str(private_path), "public_key": str(public_path)}
    out.emit(
        data,
        lambda: out.line(
            f"wrote {private_path} (keep offline) and {public_path} (set as the EscrowPublicKey parameter)"
        ),
    )
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace, Output], int]] = {
    "list": cmd_list,
    "show": cmd_show,
    "verify": cmd_verify,
    "decrypt": cmd_decrypt,
    "backup": cmd_backup,
    "escrow-keygen": cmd_escrow_keygen,
}


def program(argv: Sequence[str], stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Parse ``argv`` and run the command; raises BackupSystemError subclasses on failure."""
    args = build_parser().parse_args(list(argv))
    out = Output(getattr(args, "json", False), stdout, stderr)
    handler = COMMANDS.get(args.command) or PLUGIN_COMMANDS.get(args.command)
    if handler is None:
        from servalsheets_backup.cli import restore as cli_restore

        handler = cli_restore.COMMANDS[args.command]
    undo = cli_standby.apply_location(args)
    try:
        return handler(args, out)
    finally:
        undo()


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: run ``program`` and map errors to exit codes and one stderr line."""
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "WARNING"),
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return program(sys.argv[1:] if argv is None else argv)
    except BackupSystemError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except Exception as exc:  # unexpected: name the type, never dump data that may hold secrets
        from servalsheets_backup.adapters.aws import describe_aws_error

        aws_error = describe_aws_error(exc)
        if aws_error:
            sys.stderr.write(f"error: AWS request failed: {aws_error}\n")
            return EXIT_ERROR
        sys.stderr.write(f"error: unexpected {type(exc).__name__}; rerun with LOG_LEVEL=DEBUG for details\n")
        logging.getLogger(__name__).debug("unexpected error", exc_info=True)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())

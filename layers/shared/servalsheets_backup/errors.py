"""Exception classes: their names are the Retry/Catch contract of the state machines.

Step Functions matches a Lambda failure by the Python exception class name, so renaming a
class here means changing the ASL files too. Messages must never contain secret values.
"""


class BackupSystemError(Exception):
    """Base class of every error this system raises on purpose."""

    exit_code = 1


class InvalidInputError(BackupSystemError):
    """An event, CLI argument or setting is malformed; the message says what to fix."""

    exit_code = 2


class ConfigurationError(InvalidInputError):
    """A required setting is missing or has a bad value."""


class BackupNotFoundError(BackupSystemError):
    """No complete backup set matches the request."""

    exit_code = 3


class IncompleteSetError(BackupNotFoundError):
    """A standby bucket holds a set's manifest but not yet every object it lists (replication
    has not finished, or failed): the set is not complete there and is never restored."""


class IntegrityError(BackupSystemError):
    """A backup object or manifest failed an integrity or authenticity check.

    ``subject`` names the object (or ``manifest``) and ``check`` names the check that failed.
    """

    exit_code = 4

    def __init__(self, subject: str, check: str, detail: str = "") -> None:
        self.subject = subject
        self.check = check
        self.detail = detail
        message = f"{subject}: {check} failed"
        if detail:
            message += f" ({detail})"
        super().__init__(message)


class TokenStoreError(BackupSystemError):
    """The token store file is malformed or cannot be read."""

    exit_code = 4


class TokenKeyMismatchError(TokenStoreError):
    """The live token store key cannot decrypt the token store (GCM authentication failed)."""


class InvalidRdbError(IntegrityError):
    """An RDB file is not a valid Redis snapshot (magic, version, checksum or truncation)."""


class SnapshotExportError(BackupSystemError):
    """ElastiCache failed to snapshot or export the cache, or the export never reached the bucket."""


class LockHeldError(BackupSystemError):
    """Another backup or restore holds the lock for the same kind or target."""

    exit_code = 5


class TransientError(BackupSystemError):
    """A retryable failure (throttling, connection reset); the state machines retry it."""


class RestoreVerificationError(BackupSystemError):
    """A restored target failed post-restore verification."""

    exit_code = 6


class ApplicationNotReadyError(RestoreVerificationError):
    """The restored data verified, but the application's health checks do not pass (yet).

    The restore state machine retries this for several minutes before rolling back, because the
    service has just been scaled back up.
    """


class RedisBackupError(BackupSystemError):
    """Reading from or writing to Redis failed for a reason that is not transient."""

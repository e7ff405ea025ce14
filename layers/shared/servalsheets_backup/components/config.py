"""The ``config`` component: Secrets Manager secrets, SSM parameters and files, as one bundle.

The bundle (JSON, inside the encrypted object) holds the values; the manifest holds only names
and keyed fingerprints, so plans and verification can say what changed without revealing it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from servalsheets_backup.adapters.files import FileContent, delete_source, read_source, write_source
from servalsheets_backup.adapters.secrets import (
    delete_parameter,
    get_secret_string,
    parameters_by_path,
    put_parameter,
    put_secret_string,
)
from servalsheets_backup.errors import IntegrityError
from servalsheets_backup.format.keys import value_fingerprint
from servalsheets_backup.services import Services

BUNDLE_FORMAT = "servalsheets-config-bundle"
OBJECT_NAME = "config.bundle"


@dataclass
class ConfigBundle:
    """Configuration values by source; ``files`` maps a source to (bytes, mode) or None if absent."""

    secrets: dict[str, str]
    parameters: dict[str, dict[str, str]]
    files: dict[str, FileContent | None]
    parameter_path: str | None = None

    def to_bytes(self) -> bytes:
        """Serialise for the encrypted object."""
        document = {
            "format": BUNDLE_FORMAT,
            "version": 1,
            "secrets": self.secrets,
            "parameter_path": self.parameter_path,
            "parameters": self.parameters,
            "files": {
                source: None
                if content is None
                else {
                    "mode": content.mode,
                    "content_b64": base64.b64encode(content.data).decode("ascii"),
                }
                for source, content in self.files.items()
            },
        }
        return json.dumps(document, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> ConfigBundle:
        """Parse a bundle read back from a backup."""
        try:
            document = json.loads(data)
            if document.get("format") != BUNDLE_FORMAT or document.get("version") != 1:
                raise ValueError("not a version 1 config bundle")
            files = {
                source: None
                if raw is None
                else FileContent(base64.b64decode(raw["content_b64"]), int(raw["mode"]))
                for source, raw in document["files"].items()
            }
            return cls(
                dict(document["secrets"]),
                dict(document["parameters"]),
                files,
                document.get("parameter_path"),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise IntegrityError(OBJECT_NAME, "config bundle syntax", "bundle does not parse") from exc

    def values(self) -> dict[str, bytes]:
        """Every value by a qualified name (``secret:``, ``parameter:``, ``file:``)."""
        named: dict[str, bytes] = {f"secret:{k}": v.encode() for k, v in self.secrets.items()}
        named.update({f"parameter:{k}": v["value"].encode() for k, v in self.parameters.items()})
        named.update({f"file:{k}": v.data for k, v in self.files.items() if v is not None})
        return named


def collect(services: Services) -> ConfigBundle:
    """Read the configured secrets, parameters and files as they are now."""
    settings = services.settings
    secrets = {
        sid: get_secret_string(services.client("secretsmanager"), sid) for sid in settings.config_secret_ids
    }
    parameters = (
        parameters_by_path(services.client("ssm"), settings.config_parameter_path)
        if settings.config_parameter_path
        else {}
    )
    files = {source: read_source(source, services.client("s3")) for source in settings.config_files}
    return ConfigBundle(secrets, parameters, files, settings.config_parameter_path)


def fingerprints(bundle: ConfigBundle, key: bytes) -> dict[str, str]:
    """Keyed fingerprints of every value, by qualified name."""
    return {name: value_fingerprint(key, name, value) for name, value in sorted(bundle.values().items())}


def summary(bundle: ConfigBundle, key: bytes) -> dict[str, Any]:
    """The manifest's ``components.config``: counts, names and fingerprints, no values."""
    return {
        "secret_count": len(bundle.secrets),
        "parameter_count": len(bundle.parameters),
        "file_count": sum(1 for v in bundle.files.values() if v is not None),
        "missing_files": sorted(k for k, v in bundle.files.items() if v is None),
        "fingerprints": fingerprints(bundle, key),
    }


def plan(current: ConfigBundle, backup: ConfigBundle) -> dict[str, list[str]]:
    """Names that a restore would add, change or remove (never values)."""
    now, then = current.values(), backup.values()
    return {
        "added": sorted(set(then) - set(now)),
        "changed": sorted(name for name in set(then) & set(now) if then[name] != now[name]),
        "removed": sorted(set(now) - set(then)),
        "unchanged": sorted(name for name in set(then) & set(now) if then[name] == now[name]),
    }


def apply(services: Services, bundle: ConfigBundle, current: ConfigBundle | None = None) -> dict[str, int]:
    """Write ``bundle`` back: secrets, parameters (removing ones the backup lacks) and files."""
    secrets_client, ssm, s3 = (
        services.client("secretsmanager"),
        services.client("ssm"),
        services.client("s3"),
    )
    for secret_id, value in bundle.secrets.items():
        put_secret_string(secrets_client, secret_id, value)
    for name, parameter in bundle.parameters.items():
        put_parameter(ssm, name, parameter["value"], parameter["type"])
    removed = 0
    if current is not None:
        for name in _extra(current.parameters, bundle.parameters):
            delete_parameter(ssm, name)
            removed += 1
    for source, content in bundle.files.items():
        if content is None:
            delete_source(source, s3)
        else:
            write_source(source, content, s3)
    return {
        "secrets": len(bundle.secrets),
        "parameters": len(bundle.parameters),
        "files": len(bundle.files),
        "parameters_removed": removed,
    }


def _extra(current: Mapping[str, Any], wanted: Iterable[str]) -> list[str]:
    return sorted(set(current) - set(wanted))

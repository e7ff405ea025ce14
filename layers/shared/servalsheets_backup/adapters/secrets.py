"""Secrets Manager and SSM Parameter Store: read and write configuration values."""

from __future__ import annotations

import json
from typing import Any

from servalsheets_backup.adapters.aws import error_code
from servalsheets_backup.errors import ConfigurationError

NOT_FOUND = ("ResourceNotFoundException", "ParameterNotFound")


def get_secret_string(secrets: Any, secret_id: str) -> str:
    """The SecretString of ``secret_id``; ConfigurationError naming the secret when missing."""
    try:
        response = secrets.get_secret_value(SecretId=secret_id)
    except Exception as exc:
        if error_code(exc) in NOT_FOUND:
            raise ConfigurationError(
                f"secret {secret_id!r} does not exist in Secrets Manager: create it or fix the "
                "secret name in the stack parameters"
            ) from exc
        raise
    if "SecretString" not in response:
        raise ConfigurationError(f"secret {secret_id!r} holds binary data; a SecretString is expected")
    return str(response["SecretString"])


def secret_field(secrets: Any, secret_id: str, names: tuple[str, ...]) -> str:
    """A value from a secret that is either the raw value or a JSON object with one of ``names``."""
    text = get_secret_string(secrets, secret_id).strip()
    if text.startswith("{"):
        try:
            document = json.loads(text)
        except ValueError as exc:
            raise ConfigurationError(f"secret {secret_id!r} looks like JSON but does not parse") from exc
        for name in names:
            if isinstance(document.get(name), str):
                return str(document[name])
        raise ConfigurationError(f"secret {secret_id!r} has none of the fields {', '.join(names)}")
    return text


def put_secret_string(secrets: Any, secret_id: str, value: str) -> None:
    """Write a new version of ``secret_id`` (the secret must exist)."""
    secrets.put_secret_value(SecretId=secret_id, SecretString=value)


def parameters_by_path(ssm: Any, path: str) -> dict[str, dict[str, str]]:
    """Every parameter under ``path`` (recursive, SecureStrings decrypted): name -> {type, value}."""
    found: dict[str, dict[str, str]] = {}
    paginator = ssm.get_paginator("get_parameters_by_path")
    for page in paginator.paginate(Path=path, Recursive=True, WithDecryption=True):
        for parameter in page.get("Parameters", []):
            found[parameter["Name"]] = {"type": parameter["Type"], "value": parameter["Value"]}
    return found


def put_parameter(ssm: Any, name: str, value: str, parameter_type: str) -> None:
    """Create or overwrite one parameter, keeping its type."""
    ssm.put_parameter(Name=name, Value=value, Type=parameter_type, Overwrite=True)


def delete_parameter(ssm: Any, name: str) -> None:
    """Delete one parameter."""
    ssm.delete_parameter(Name=name)

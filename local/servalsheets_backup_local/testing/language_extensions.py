"""The ``AWS::LanguageExtensions`` transform's ``Fn::ForEach``, expanded as CloudFormation does.

template.yaml generates its repeated resources (a log group and two alarms per function) with
``Fn::ForEach``. ``sam deploy`` and CloudFormation expand it before anything else; samtranslator
does not, so the local deployer and the template tests expand it here first, and then see the
same template CloudFormation would. Supported, as the language extension specifies:

    Fn::ForEach::LoopName:
      - Identifier
      - [Value1, Value2]          # a list of strings, or a Ref to a CommaDelimitedList parameter
      - OutputKey${Identifier}:   # the key must use the identifier, so outputs do not collide
          ...${Identifier}...     # replaced in every key and string below; &{Identifier} is
                                  # the value with non-alphanumeric characters removed, and
                                  # {Ref: Identifier} the value itself

in ``Resources``, ``Conditions`` and ``Outputs``, nested loops included.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

TRANSFORM = "AWS::LanguageExtensions"
PREFIX = "Fn::ForEach::"
SECTIONS = ("Resources", "Conditions", "Outputs")


class LanguageExtensionError(ValueError):
    """A malformed Fn::ForEach (what a deploy would refuse too)."""


def expand(template: dict[str, Any], parameters: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A copy of ``template`` with every Fn::ForEach expanded and the transform removed."""
    result = copy.deepcopy(template)
    for section in SECTIONS:
        if isinstance(result.get(section), dict):
            result[section] = _expand_mapping(result[section], result, parameters or {})
    transforms = result.get("Transform")
    if isinstance(transforms, list):
        remaining = [t for t in transforms if t != TRANSFORM]
        result["Transform"] = remaining[0] if len(remaining) == 1 else remaining
    elif transforms == TRANSFORM:
        result.pop("Transform")
    return result


def _expand_mapping(
    mapping: dict[str, Any], template: dict[str, Any], parameters: Mapping[str, Any]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        if not key.startswith(PREFIX):
            _put(out, key, value)
            continue
        identifier, values, body = _loop(key, value, template, parameters)
        for item in values:
            expanded = _substitute(body, identifier, item)
            for name, resource in _expand_mapping(expanded, template, parameters).items():
                _put(out, name, resource)
    return out


def _loop(
    key: str, value: Any, template: dict[str, Any], parameters: Mapping[str, Any]
) -> tuple[str, list[str], dict[str, Any]]:
    if not (
        isinstance(value, list)
        and len(value) == 3
        and isinstance(value[0], str)
        and isinstance(value[2], dict)
    ):
        raise LanguageExtensionError(f"{key}: expected [identifier, collection, output template]")
    identifier, collection, body = value
    values = _collection(key, collection, template, parameters)
    for output_key in body:
        if (
            not output_key.startswith(PREFIX)
            and f"${{{identifier}}}" not in output_key
            and f"&{{{identifier}}}" not in output_key
        ):
            raise LanguageExtensionError(f"{key}: output key {output_key!r} does not use ${{{identifier}}}")
    return identifier, values, body


def _collection(
    key: str, collection: Any, template: dict[str, Any], parameters: Mapping[str, Any]
) -> list[str]:
    if isinstance(collection, dict) and set(collection) == {"Ref"}:
        name = collection["Ref"]
        spec = template.get("Parameters", {}).get(name)
        if spec is None:
            raise LanguageExtensionError(f"{key}: collection refers to unknown parameter {name!r}")
        raw = parameters.get(name, spec.get("Default", ""))
        collection = raw if isinstance(raw, list) else [item for item in str(raw).split(",") if item]
    if not isinstance(collection, list) or not all(isinstance(item, str) for item in collection):
        raise LanguageExtensionError(f"{key}: the collection must be a list of strings")
    return collection


def _substitute(node: Any, identifier: str, value: str) -> Any:
    if isinstance(node, str):
        plain = re.sub(r"[^A-Za-z0-9]", "", value)
        return node.replace(f"${{{identifier}}}", value).replace(f"&{{{identifier}}}", plain)
    if isinstance(node, list):
        return [_substitute(item, identifier, value) for item in node]
    if isinstance(node, dict):
        if node == {"Ref": identifier}:
            return value
        return {_substitute(k, identifier, value): _substitute(v, identifier, value) for k, v in node.items()}
    return node


def _put(out: dict[str, Any], key: str, value: Any) -> None:
    if key in out:
        raise LanguageExtensionError(f"Fn::ForEach produced {key!r} twice (or it is also written out)")
    out[key] = value


def main(argv: list[str]) -> int:
    """``python -m ...language_extensions IN.yaml OUT.json``: write the expanded template as JSON.

    For tools that do not expand Fn::ForEach themselves (checkov scans the expanded template).
    """
    import json
    from pathlib import Path

    from .template_file import load_template

    source, target = (Path(arg) for arg in argv)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(load_template(source), indent=1))
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))

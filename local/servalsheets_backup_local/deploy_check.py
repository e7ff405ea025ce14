"""What a deploy with these parameters would do, decided before CloudFormation is called.

``servalsheets-backup deploy-check`` and the local deployer (the drill, the template tests) run
the same checks CloudFormation runs first: every parameter without a default answered, each
value within its AllowedValues, AllowedPattern and Min/MaxValue, then every Rule of the template
(``Rules:``; their messages name the parameters to answer). It then evaluates the Conditions and
lists what the stack would create. Nothing here calls AWS.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .testing.intrinsics import Resolver, pseudo_parameters
from .testing.template_file import load_template

# The drill stands a local directory in for the EFS mount, so its token store and configuration
# file paths cannot match the /mnt/servalsheets patterns, and it has no EFS access point.
LOCAL_PATH_PARAMETERS = frozenset({"TokenStorePath", "RestoreTestTokenPath", "ConfigFiles"})
LOCAL_EXEMPT_RULES = frozenset({"ConfigFilesNeedEfs"})


class DeployCheckError(ValueError):
    """The parameters cannot deploy; ``problems`` says why, one parameter or rule per line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("the stack cannot deploy with these parameters:\n  " + "\n  ".join(problems))
        self.problems = problems


@dataclass
class DeployPreview:
    """The outcome: resolved parameter values, what is wrong, and what would be created."""

    values: dict[str, Any]
    problems: list[str] = field(default_factory=list)
    created: dict[str, str] = field(default_factory=dict)  # logical id -> resource type
    not_created: list[str] = field(default_factory=list)  # conditional resources left out

    @property
    def ok(self) -> bool:
        """True when CloudFormation would accept the parameters."""
        return not self.problems

    def summary(self) -> str:
        """A human-readable report: problems first, then resource counts by type."""
        if self.problems:
            lines = [f"FAIL {problem}" for problem in self.problems]
            return "\n".join(
                [*lines, f"{len(self.problems)} problem(s): the stack cannot deploy; nothing listed"]
            )
        lines = ["OK   parameters and rules; the stack would create:"]
        for resource_type, count in sorted(Counter(self.created.values()).items()):
            lines.append(f"     {count:3d} x {resource_type}")
        lines.append(f"     {len(self.created)} resources, {len(self.not_created)} left out by Conditions")
        return "\n".join(lines)


def preview(template_path: Path, given: dict[str, Any], *, local_paths: bool = False) -> DeployPreview:
    """Check ``given`` against the template at ``template_path`` and list what it would create."""
    return check_template(load_template(template_path), given, local_paths=local_paths)


def check_template(
    template: dict[str, Any], given: dict[str, Any], *, local_paths: bool = False
) -> DeployPreview:
    """``preview`` of a template already loaded (Fn::ForEach expanded)."""
    values, problems = check_parameters(template, given, local_paths=local_paths)
    # CloudFormation stops at the first problem; the preview goes on, so that one run lists
    # every answer still missing (a missing parameter counts as empty for the Rules).
    result = DeployPreview(values, problems)
    result.problems.extend(evaluate_rules(template, values, local_paths=local_paths))
    if result.problems:
        return result
    resolver = _resolver(template, values)
    for logical_id, resource in template["Resources"].items():
        condition = resource.get("Condition")
        if condition is None or resolver.condition(condition):
            result.created[logical_id] = resource["Type"]
        else:
            result.not_created.append(logical_id)
    return result


def require_deployable(template: dict[str, Any], given: dict[str, Any], *, local_paths: bool = False) -> None:
    """Raise DeployCheckError naming every problem, as a deploy would fail on the first."""
    result = check_template(template, given, local_paths=local_paths)
    if not result.ok:
        raise DeployCheckError(result.problems)


# ---------------------------------------------------------------------------- parameters
def check_parameters(
    template: dict[str, Any], given: dict[str, Any], *, local_paths: bool = False
) -> tuple[dict[str, Any], list[str]]:
    """Every parameter's value (given, else its default) and the problems with them."""
    specs: dict[str, dict[str, Any]] = template.get("Parameters", {})
    problems = [
        f"{name}: not a parameter of this template (check the spelling)"
        for name in sorted(set(given) - set(specs))
    ]
    values: dict[str, Any] = {}
    for name, spec in specs.items():
        if name not in given and "Default" not in spec:
            problems.append(f"{name}: required, and no value was given. {_describe(spec)}")
            values[name] = [""] if spec.get("Type") == "CommaDelimitedList" else ""
            continue
        raw = str(given.get(name, spec.get("Default", "")))
        values[name] = raw.split(",") if spec.get("Type") == "CommaDelimitedList" else raw
        if name in given:
            skip_pattern = local_paths and name in LOCAL_PATH_PARAMETERS
            problems.extend(f"{name}: {reason}" for reason in _invalid(spec, raw, skip_pattern))
    return values, problems


def _invalid(spec: dict[str, Any], raw: str, skip_pattern: bool) -> list[str]:
    members = raw.split(",") if spec.get("Type") == "CommaDelimitedList" else [raw]
    reasons = []
    allowed = [str(value) for value in spec.get("AllowedValues", [])]
    if allowed and raw not in allowed:
        reasons.append(f"{raw!r} is not one of {', '.join(allowed)}")
    pattern = spec.get("AllowedPattern")
    if pattern and not skip_pattern:
        for member in members:
            if not re.fullmatch(pattern, member):
                hint = spec.get("ConstraintDescription") or f"the pattern {pattern}"
                reasons.append(f"{member!r} does not match {hint}")
    if spec.get("Type") == "Number":
        reasons.extend(_invalid_number(spec, raw))
    return reasons


def _invalid_number(spec: dict[str, Any], raw: str) -> list[str]:
    try:
        number = float(raw)
    except ValueError:
        return [f"{raw!r} is not a number"]
    if "MinValue" in spec and number < float(spec["MinValue"]):
        return [f"{raw} is below the minimum {spec['MinValue']}"]
    if "MaxValue" in spec and number > float(spec["MaxValue"]):
        return [f"{raw} is above the maximum {spec['MaxValue']}"]
    return []


def _describe(spec: dict[str, Any]) -> str:
    text = " ".join(str(spec.get("Description", "")).split())
    allowed = spec.get("AllowedValues")
    return text + (f" Allowed: {', '.join(map(str, allowed))}." if allowed else "")


# ---------------------------------------------------------------------------- rules
def evaluate_rules(
    template: dict[str, Any], values: dict[str, Any], *, local_paths: bool = False
) -> list[str]:
    """The AssertDescription of every failing assertion of every Rule whose condition holds."""
    problems = []
    resolver = _resolver(template, values)
    for name, rule in template.get("Rules", {}).items():
        if local_paths and name in LOCAL_EXEMPT_RULES:
            continue
        if "RuleCondition" in rule and not resolver.holds(rule["RuleCondition"]):
            continue
        for assertion in rule.get("Assertions", []):
            if not resolver.holds(assertion["Assert"]):
                description = " ".join(str(assertion.get("AssertDescription", "")).split())
                problems.append(f"{name}: {description}")
    return problems


# ---------------------------------------------------------------------------- parameter files
def load_parameters(path: Path, config_env: str = "default") -> dict[str, str]:
    """Parameter values from a samconfig.toml (its ``parameter_overrides``) or a JSON file.

    JSON may be CloudFormation's list of ``{"ParameterKey", "ParameterValue"}`` or an object.
    """
    if path.suffix == ".toml":
        config = tomllib.loads(path.read_text())
        try:
            overrides = config[config_env]["deploy"]["parameters"].get("parameter_overrides", "")
        except KeyError:
            raise ValueError(
                f"{path}: no [{config_env}.deploy.parameters] section (use --config-env)"
            ) from None
        items = overrides if isinstance(overrides, list) else shlex.split(overrides)
        return dict(_split_override(path, item) for item in items)
    data = json.loads(path.read_text())
    if isinstance(data, list):
        return {item["ParameterKey"]: str(item["ParameterValue"]) for item in data}
    return {str(key): str(value) for key, value in data.get("Parameters", data).items()}


def _split_override(path: Path, item: str) -> tuple[str, str]:
    name, equals, value = item.partition("=")
    if not equals:
        raise ValueError(f"{path}: parameter_overrides entry {name!r} has no '=' (write Name=value)")
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]  # Name="a,b" in a TOML list, as sam deploy reads it
    return name, value


def _resolver(template: dict[str, Any], values: dict[str, Any]) -> Resolver:
    """Conditions and Rules evaluated against ``values``; no resource exists yet."""
    pseudo = pseudo_parameters("us-east-1", "servalsheets-backup")
    return Resolver(values, pseudo, template.get("Conditions", {}), _no_attributes, template.get("Mappings"))


def _no_attributes(logical_id: str, attribute: str | None) -> str:
    return f"<{logical_id}{'.' + attribute if attribute else ''}>"

"""Read template.yaml and its SAM translation offline, and walk the IAM policies in it.

Nothing here talks to AWS: the template is parsed with cfn-lint's loader (which understands the
short intrinsic tags) and translated with samtranslator, with local code paths replaced by S3
URIs (as ``sam package`` would) and the AWS managed policy list stubbed.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Iterator
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any
from unittest import mock

from cfnlint.decode import cfn_yaml
from samtranslator.translator.managed_policy_translator import ManagedPolicyLoader
from samtranslator.translator.transform import transform

from servalsheets_backup_local.testing import language_extensions

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = REPO_ROOT / "template.yaml"
EVENTS_DIR = REPO_ROOT / "events"
STATEMACHINES_DIR = REPO_ROOT / "statemachines"
REGION = "us-east-1"

# The only AWS managed policies SAM may attach (basic logging, X-Ray, VPC networking).
SAM_MANAGED_POLICIES = (
    "AWSLambdaBasicExecutionRole",
    "AWSXrayWriteOnlyAccess",
    "AWSLambdaVPCAccessExecutionRole",
)
NO_VALUE = {"Ref": "AWS::NoValue"}
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_.:]+)\}")

Template = dict[str, Any]


class OfflineManagedPolicies(ManagedPolicyLoader):
    """Answers samtranslator's managed-policy lookup without calling IAM."""

    def __init__(self) -> None:
        super().__init__(iam_client=None)  # type: ignore[arg-type]

    def load(self) -> dict[str, str]:
        """Name to ARN for the managed policies SAM may attach."""
        return {name: f"arn:aws:iam::aws:policy/{name}" for name in SAM_MANAGED_POLICIES}


@cache
def _source() -> str:
    # cfn-lint's node types subclass dict/str; a JSON round trip leaves plain Python values.
    return json.dumps(cfn_yaml.load(str(TEMPLATE_PATH)))


def raw_template() -> Template:
    """template.yaml as written, Fn::ForEach loops unexpanded (a fresh copy each call)."""
    return dict(json.loads(_source()))


def source_template() -> Template:
    """template.yaml as CloudFormation sees it after AWS::LanguageExtensions (loops expanded)."""
    return language_extensions.expand(raw_template())


@cache
def _translated() -> str:
    template = source_template()
    for logical_id, resource in template["Resources"].items():
        properties = resource.get("Properties", {})
        if resource["Type"] == "AWS::Serverless::Function":
            properties["CodeUri"] = f"s3://deployment-bucket/{logical_id}.zip"
        elif resource["Type"] == "AWS::Serverless::LayerVersion":
            properties["ContentUri"] = f"s3://deployment-bucket/{logical_id}.zip"
        elif resource["Type"] == "AWS::Serverless::StateMachine":
            properties["DefinitionUri"] = f"s3://deployment-bucket/{logical_id}.asl.json"
    with mock.patch.dict(os.environ, {"AWS_DEFAULT_REGION": REGION}):
        translated = transform(template, {}, OfflineManagedPolicies())
    return json.dumps(translated)


def translated_template() -> Template:
    """The CloudFormation template SAM produces from template.yaml (a fresh copy each call)."""
    return dict(json.loads(_translated()))


def resources_of_type(template: Template, resource_type: str) -> dict[str, Any]:
    """Logical id to resource, for every resource of ``resource_type``."""
    return {k: v for k, v in template["Resources"].items() if v["Type"] == resource_type}


def function_properties(template: Template, logical_id: str) -> dict[str, Any]:
    """A SAM function's properties with Globals.Function merged underneath (maps merged, rest replaced)."""
    merged = copy.deepcopy(template.get("Globals", {}).get("Function", {}))
    for key, value in template["Resources"][logical_id]["Properties"].items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    result = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = _merge(result[key], value)
        else:
            result[key] = value
    return result


def as_list(value: Any) -> list[Any]:
    """``value`` if it is a list, else a one-element list."""
    return value if isinstance(value, list) else [value]


def branches(value: Any) -> Iterator[Any]:
    """Every value an ``Fn::If`` tree can resolve to (both branches), without AWS::NoValue."""
    if isinstance(value, dict) and list(value) == ["Fn::If"]:
        _condition, when_true, when_false = value["Fn::If"]
        yield from branches(when_true)
        yield from branches(when_false)
    elif value != NO_VALUE:
        yield value


def statements(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The statements of a policy document, each conditional statement's branches included."""
    for statement in as_list(document.get("Statement", [])):
        yield from branches(statement)


def identity_policies(template: Template) -> Iterator[tuple[str, dict[str, Any]]]:
    """(owner, policy document) for every role inline policy and customer managed policy."""
    for logical_id, role in resources_of_type(template, "AWS::IAM::Role").items():
        for conditional in role["Properties"].get("Policies", []):
            for policy in branches(conditional):  # SAM keeps an Fn::If policy as an Fn::If
                yield logical_id, policy["PolicyDocument"]
    for logical_id, policy in resources_of_type(template, "AWS::IAM::ManagedPolicy").items():
        yield logical_id, policy["Properties"]["PolicyDocument"]


def role_statements(template: Template, role_id: str) -> list[dict[str, Any]]:
    """Every statement a role gets: inline policies and the customer managed policies it attaches."""
    role = template["Resources"][role_id]["Properties"]
    found = [
        s
        for conditional in role.get("Policies", [])
        for policy in branches(conditional)
        for s in statements(policy["PolicyDocument"])
    ]
    for attached in role.get("ManagedPolicyArns", []):
        for arn in branches(attached):
            if isinstance(arn, dict) and "Ref" in arn:
                document = template["Resources"][arn["Ref"]]["Properties"]["PolicyDocument"]
                found.extend(statements(document))
    return found


def actions(statement: dict[str, Any]) -> list[str]:
    """The statement's actions, lowercased."""
    return [action.lower() for action in as_list(statement.get("Action", []))]


def statement_grants(statement: dict[str, Any], action: str) -> bool:
    """Whether an Allow statement names ``action`` (exactly, or through a trailing wildcard)."""
    if statement.get("Effect") != "Allow":
        return False
    wanted = action.lower()
    return any(
        granted == wanted or (granted.endswith("*") and wanted.startswith(granted[:-1]))
        for granted in actions(statement)
    )


def sub_text(value: Any) -> str | None:
    """The template string of an ``Fn::Sub`` (either form), else None."""
    if isinstance(value, dict) and "Fn::Sub" in value:
        sub = value["Fn::Sub"]
        return str(sub[0] if isinstance(sub, list) else sub)
    return None


def resolve_mappings(node: Any, mappings: dict[str, Any]) -> Any:
    """``node`` with every Fn::FindInMap looked up, and Fn::Sub variables that became plain text
    folded into the string (what CloudFormation resolves before any resource exists)."""
    if isinstance(node, list):
        return [resolve_mappings(item, mappings) for item in node]
    if not isinstance(node, dict):
        return node
    resolved = {key: resolve_mappings(value, mappings) for key, value in node.items()}
    if set(resolved) == {"Fn::FindInMap"}:
        name, top, second = resolved["Fn::FindInMap"]
        return mappings[name][top][second]
    sub = resolved.get("Fn::Sub")
    if isinstance(sub, list) and all(isinstance(value, str) for value in sub[1].values()):
        text = re.sub(r"\$\{(\w+)\}", lambda m: sub[1].get(m.group(1), m.group(0)), sub[0])
        return {"Fn::Sub": text}
    return resolved


def placeholders(text: str) -> set[str]:
    """The ``${Name}`` placeholders in ``text``."""
    return set(_PLACEHOLDER.findall(text))


def fill_placeholders(text: str, values: dict[str, Any]) -> str:
    """``text`` with every ``${Name}`` replaced by ``values[Name]``."""
    return _PLACEHOLDER.sub(lambda match: str(values[match.group(1)]), text)


def load_event(name: str) -> Any:
    """events/<name>.json, parsed."""
    return json.loads((EVENTS_DIR / f"{name}.json").read_text())


@cache
def _iam_reference() -> dict[str, Any]:
    # cfn-lint ships the service authorization reference (actions and their resource types).
    text = resources.files("cfnlint.data.AdditionalSpecs").joinpath("Policies.json").read_text()
    return dict(json.loads(text))


def action_resource_types(action: str) -> list[str] | None:
    """Resource types an IAM action can be scoped to ([] = none, only "*"); None if unknown."""
    service, _, name = action.lower().partition(":")
    entry = _iam_reference().get(service, {}).get("Actions", {}).get(name)
    return None if entry is None else list(entry.get("Resources", []))

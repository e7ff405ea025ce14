"""A first deploy on a real account (issue #17): required answers, Rules that name them, the VPC
endpoint option, and retention defaults, checked through the same deploy check the local deployer
and `servalsheets-backup deploy-check` run."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from servalsheets_backup_local.deploy_check import (
    DeployCheckError,
    evaluate_rules,
    load_parameters,
    preview,
    require_deployable,
)

from .template_helpers import (
    REPO_ROOT,
    TEMPLATE_PATH,
    actions,
    role_statements,
    source_template,
    translated_template,
)

pytestmark = pytest.mark.unit

EXAMPLES = sorted((REPO_ROOT / "deploy").glob("samconfig.*.toml"))
# The runbook's retention table (days a superseded set of each kind is kept).
RUNBOOK_RETENTION = {"config": 30, "tokens": 30, "redis": 7, "full": 90, "pre-deploy": 365}


def _messages(problems: list[str]) -> str:
    return "\n".join(problems)


def test_the_default_parameters_cannot_deploy_and_every_missing_answer_is_named() -> None:
    result = preview(TEMPLATE_PATH, {})
    assert not result.ok
    text = _messages(result.problems)
    assert "RedisMode: required" in text
    for parameter in (
        "TokenStorePath",
        "TokenKeySecretName",
        "ConfigSecretNames",
        "RestoreTestRedisUrlSecretName",
    ):
        assert parameter in text, parameter
    with pytest.raises(DeployCheckError, match="RedisMode"):
        require_deployable(source_template(), {})


def test_every_rule_message_names_a_parameter_its_assertion_reads() -> None:
    template = source_template()
    parameters = set(template["Parameters"])
    for name, rule in template["Rules"].items():
        for assertion in rule["Assertions"]:
            text = assertion["AssertDescription"]
            named = {word for word in re.findall(r"[A-Za-z]+", text) if word in parameters}
            read = set(re.findall(r"'Ref': '(\w+)'", str(assertion["Assert"])))
            assert named & read, f"{name}: the message names none of {sorted(read)}"


@pytest.mark.parametrize(
    ("answers", "rule"),
    [
        ({"RedisMode": "logical", "RedisUrlSecretName": ""}, "LogicalModeNeedsRedisUrl"),
        (
            {"RedisMode": "elasticache", "SubnetIds": "subnet-0a1b2c3d", "SecurityGroupIds": "sg-0a1b2c3d"},
            "ElastiCacheModeNeedsCache",
        ),
        ({"RedisMode": "elasticache", "ElastiCacheReplicationGroupId": "g"}, "ElastiCacheModeNeedsVpc"),
        ({"SubnetIds": "subnet-0a1b2c3d"}, "VpcNeedsSecurityGroups"),
        ({"ConfigFiles": "/mnt/servalsheets/.env"}, "ConfigFilesNeedEfs"),
        ({"VpcEndpoints": "create"}, "EndpointsNeedNetwork"),
        ({"EnableTokensSchedule": "true", "TokenKeySecretName": ""}, "TokenBackupsNeedTheStore"),
        ({"ConfigSecretNames": "", "ConfigParameterPath": ""}, "ConfigBackupsNeedASource"),
        ({"RestoreTestSecretPrefix": ""}, "RestoreTestNeedsScratchTargets"),
        ({"StackRole": "standby"}, "StandbyNeedsThePrimaryKey"),
        ({"StackRole": "standby", "StandbyBucketName": "b"}, "StandbyNeedsThePrimaryKey"),
        ({"StandbyBucketName": "ssbk-standby", "StandbyRegion": "us-west-2"}, "ReplicationNeedsTheStandby"),
    ],
)
def test_each_rule_refuses_the_answers_it_guards(answers: dict[str, str], rule: str) -> None:
    given = {**_logical_answers(), **answers}
    problems = preview(TEMPLATE_PATH, given).problems
    assert any(problem.startswith(f"{rule}:") for problem in problems), problems


def test_invalid_values_are_refused_with_the_constraint() -> None:
    given = {**_logical_answers(), "ConfigParameterPath": "/servalsheets/prod/", "RedisRetentionDays": "0"}
    text = _messages(preview(TEMPLATE_PATH, given).problems)
    assert "ConfigParameterPath" in text and "no trailing slash" in text
    assert "RedisRetentionDays: 0 is below the minimum 1" in text
    assert "Unknown" not in text
    assert "NotAParameter: not a parameter" in _messages(
        preview(TEMPLATE_PATH, {"NotAParameter": "x"}).problems
    )


def _logical_answers() -> dict[str, str]:
    return load_parameters(REPO_ROOT / "deploy" / "samconfig.logical.toml")


@pytest.mark.parametrize("example", EXAMPLES, ids=[path.stem for path in EXAMPLES])
def test_each_samconfig_example_passes_the_deploy_check(example: Path) -> None:
    result = preview(TEMPLATE_PATH, load_parameters(example))
    assert result.ok, result.problems
    assert "BackupBucket" in result.created


def test_there_is_an_example_for_each_redis_mode() -> None:
    modes = {load_parameters(path)["RedisMode"] for path in EXAMPLES}
    serverless = [p for p in EXAMPLES if load_parameters(p).get("ElastiCacheServerlessCacheName")]
    assert modes == {"logical", "rdb-stream", "elasticache"} and serverless


def test_samconfig_parsing_reads_lists_and_quoted_values(tmp_path: Path) -> None:
    config = tmp_path / "samconfig.toml"
    config.write_text(
        "[prod.deploy.parameters]\nparameter_overrides = ['RedisMode=logical', 'ConfigFiles=\"a,b\"']\n"
    )
    assert load_parameters(config, "prod") == {"RedisMode": "logical", "ConfigFiles": "a,b"}
    with pytest.raises(ValueError, match="--config-env"):
        load_parameters(config, "default")


# ---------------------------------------------------------------------------- networking
def _endpoint_answers() -> dict[str, str]:
    return {
        **load_parameters(REPO_ROOT / "deploy" / "samconfig.elasticache.toml"),
        "VpcEndpoints": "create",
    }


def test_the_endpoint_option_creates_an_endpoint_for_every_service_the_vpc_functions_call() -> None:
    created = preview(TEMPLATE_PATH, _endpoint_answers()).created
    endpoints = {lid for lid, kind in created.items() if kind == "AWS::EC2::VPCEndpoint"}
    services = {re.sub(r"(Interface|Gateway)Endpoint$", "", lid) for lid in endpoints}
    translated, source = translated_template(), source_template()
    called = set()
    for lid, resource in source["Resources"].items():
        if resource["Type"] == "AWS::Serverless::Function" and "VpcConfig" in resource["Properties"]:
            for statement in role_statements(translated, f"{lid}Role"):
                called |= {action.split(":")[0] for action in actions(statement)}
    # EFS is mounted over NFS inside the VPC; X-Ray receives the traces of Tracing: Active.
    assert services == (called - {"elasticfilesystem"}) | {"xray"}
    assert "VpcEndpointSecurityGroup" in created
    given = {**_endpoint_answers(), "VpcEndpointSecurityGroupId": "sg-0fedcba9"}
    assert "VpcEndpointSecurityGroup" not in preview(TEMPLATE_PATH, given).created
    assert not any(
        kind == "AWS::EC2::VPCEndpoint"
        for kind in preview(TEMPLATE_PATH, _logical_answers()).created.values()
    )


def test_endpoint_policies_admit_this_account_only() -> None:
    for lid, resource in source_template()["Resources"].items():
        if resource["Type"] != "AWS::EC2::VPCEndpoint":
            continue
        (statement,) = resource["Properties"]["PolicyDocument"]["Statement"]
        assert statement["Condition"] == {
            "StringEquals": {"aws:PrincipalAccount": {"Ref": "AWS::AccountId"}}
        }, lid
        properties = resource["Properties"]
        if properties["VpcEndpointType"] == "Interface":
            assert properties["PrivateDnsEnabled"] is True and properties["SubnetIds"] == {"Ref": "SubnetIds"}
        else:
            assert properties["RouteTableIds"] == {"Ref": "RouteTableIds"}


# ---------------------------------------------------------------------------- retention
def _rules_by_id() -> dict[str, Any]:
    bucket = source_template()["Resources"]["BackupBucket"]["Properties"]
    return {rule["Id"]: rule for rule in bucket["LifecycleConfiguration"]["Rules"]}


@pytest.mark.parametrize("kind", sorted(RUNBOOK_RETENTION))
def test_retention_defaults_match_the_runbook_and_noncurrent_versions_last_as_long(kind: str) -> None:
    template = source_template()
    rules = _rules_by_id()
    current = rules[f"expire-superseded-{kind}"]["ExpirationInDays"]["Ref"]
    noncurrent = rules[f"expire-noncurrent-{kind}"]
    assert template["Parameters"][current]["Default"] == RUNBOOK_RETENTION[kind]
    assert noncurrent["Prefix"] == f"{kind}/" and "TagFilters" not in noncurrent
    assert noncurrent["NoncurrentVersionExpiration"]["NoncurrentDays"] == {"Ref": current}


def test_every_versioned_prefix_has_a_noncurrent_rule_and_plaintext_goes_in_a_day() -> None:
    rules = _rules_by_id()
    expiring = {rule["Prefix"] for rule in rules.values() if "ExpirationInDays" in rule}
    noncurrent = {rule["Prefix"]: rule for rule in rules.values() if "NoncurrentVersionExpiration" in rule}
    assert expiring <= set(noncurrent)
    for prefix in ("staging/", "servalsheets-backup-"):
        assert noncurrent[prefix]["NoncurrentVersionExpiration"]["NoncurrentDays"] == 1


def test_object_lock_is_offered_with_its_irreversibility_explained() -> None:
    spec = source_template()["Parameters"]["EnableObjectLock"]
    assert spec["Default"] == "false"
    assert "Irreversible" in spec["Description"] and "s3:BypassGovernanceRetention" in spec["Description"]
    groups = source_template()["Metadata"]["AWS::CloudFormation::Interface"]["ParameterGroups"]
    assert any("EnableObjectLock" in group["Parameters"] for group in groups)


def test_required_answers_come_first_in_the_guided_prompt() -> None:
    template = source_template()
    groups = template["Metadata"]["AWS::CloudFormation::Interface"]["ParameterGroups"]
    first = groups[0]["Parameters"] + groups[1]["Parameters"]
    without_default = [name for name, spec in template["Parameters"].items() if "Default" not in spec]
    assert set(without_default) <= set(first)
    standby = next(g for g in groups if g["Label"]["default"].startswith("Standby Region"))["Parameters"]
    named_by_rules = set(re.findall(r"'Ref': '(\w+)'", str(template["Rules"]))) - {
        "EnableTokensSchedule",
        "EnableConfigSchedule",
        "EnableRestoreTestSchedule",
        *standby,  # answered only by who adds a standby Region (docs/operations.md)
    }
    assert named_by_rules <= set(first), named_by_rules - set(first)
    grouped = [name for group in groups for name in group["Parameters"]]
    assert sorted(grouped) == sorted(template["Parameters"]) and len(grouped) == len(set(grouped))


def test_rules_evaluate_like_cloudformation_on_lists() -> None:
    rule = {
        "Rules": {
            "R": {
                "Assertions": [
                    {
                        "Assert": {"Fn::Not": [{"Fn::EachMemberEquals": [{"Ref": "L"}, ""]}]},
                        "AssertDescription": "L needed",
                    }
                ]
            }
        }
    }
    assert evaluate_rules(rule, {"L": [""]}) == ["R: L needed"]
    assert evaluate_rules(rule, {"L": ["a"]}) == []

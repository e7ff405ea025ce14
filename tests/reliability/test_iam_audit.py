"""Every IAM policy of every function, state machine and schedule, audited with parliament.

moto accepts any action name and any resource shape, so a misspelt action or an ARN in the
wrong format would only show on a real account. parliament checks each statement against the
IAM action catalogue it ships (actions, resource types, condition keys) and flags risky grants.
The policies audited are the deployed ones: the template translated by SAM and resolved by the
drill's deployer (real-looking ARNs, Conditions applied), for each way a stack can be configured.
A finding is either fixed in template.yaml or listed in ``JUSTIFIED`` with the reason it stays.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from moto import mock_aws
from parliament import analyze_policy_string

from servalsheets_backup.adapters import aws
from servalsheets_backup_local.testing.environment import REPO_ROOT, drill_parameters
from servalsheets_backup_local.testing.lambda_runner import LambdaRunner
from servalsheets_backup_local.testing.local_deploy import LocalDeployer

pytestmark = pytest.mark.reliability

KMS_KEY_ARN = "arn:aws:kms:us-east-1:123456789012:key/0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"
# Stacks as operators configure them; together they switch on every Condition that adds a grant.
CONFIGURATIONS: dict[str, dict[str, Any]] = {
    "logical Redis, restore test, notifications": {"NotificationEmail": "ops@example.com"},
    "ElastiCache replication group, customer key, VPC, ECS": {
        "RedisMode": "elasticache",
        "ElastiCacheReplicationGroupId": "servalsheets-prod",
        "ElastiCacheKmsKeyArn": KMS_KEY_ARN,
        "ApplicationKmsKeyArns": KMS_KEY_ARN,
        "SubnetIds": "subnet-0a1b2c3d",
        "SecurityGroupIds": "sg-0a1b2c3d",
        "EcsClusterName": "servalsheets",
        "EcsServiceName": "servalsheets-mcp",
    },
    "ElastiCache Serverless, Object Lock, escrow": {
        "RedisMode": "elasticache",
        "ElastiCacheServerlessCacheName": "servalsheets-prod",
        "SubnetIds": "subnet-0a1b2c3d,subnet-0e1f2a3b",
        "SecurityGroupIds": "sg-0a1b2c3d",
        "EnableObjectLock": "true",
        "EscrowPublicKey": "-----BEGIN PUBLIC KEY-----MCowBQYDK2VuAyEA-----END PUBLIC KEY-----",
    },
}

# (issue, role or policy logical id prefix, detail) -> why the finding stays.
JUSTIFIED: dict[tuple[str, str, str], str] = {
    ("NO_VERSION", "ScheduleRole", ""): (
        "SAM generates these roles for each ScheduleV2 event: one statement allowing "
        "states:StartExecution or lambda:InvokeFunction on one ARN, without a Version. Without "
        "one, IAM reads the 2008-10-17 language, which differs from 2012-10-17 only in policy "
        "variables, and these statements have none: the grant is the same."
    ),
    ("PERMISSIONS_MANAGEMENT_ACTIONS", "IngestSnapshotFunctionRole", "s3:bypassgovernanceretention"): (
        "ElastiCache exports land in the bucket as plaintext RDB files. With Object Lock in "
        "governance mode as the bucket default, they could not be deleted after the ingest "
        "encrypted them; the grant is limited to staging/* (and the serverless export names), "
        "never to a backup set's prefix."
    ),
    ("PERMISSIONS_MANAGEMENT_ACTIONS", "RestoreRedisFunctionRole", "s3:bypassgovernanceretention"): (
        "A restore into a new cache stages plaintext RDB seed files under staging/ and deletes "
        "them once the cache has loaded them, governance retention or not; staging/* only."
    ),
    ("PERMISSIONS_MANAGEMENT_ACTIONS", "StateMachineRole", "logs:putresourcepolicy"): (
        "Step Functions' vended log delivery to CloudWatch Logs needs these log-delivery actions "
        "on '*' (they support no resource-level permissions, per the Step Functions logging "
        "documentation); without them the state machine cannot send its execution logs."
    ),
}


def _policies(properties: dict[str, Any], resource_type: str, logical_id: str) -> Iterator[tuple[str, Any]]:
    if resource_type == "AWS::IAM::Role":
        for policy in properties.get("Policies", []):
            yield f"{logical_id}/{policy['PolicyName']}", policy["PolicyDocument"]
    elif resource_type in ("AWS::IAM::ManagedPolicy", "AWS::IAM::Policy"):
        yield logical_id, properties["PolicyDocument"]


def deployed_policies(parameters: dict[str, Any]) -> dict[str, Any]:
    """Every identity policy of a stack deployed with ``parameters``, fully resolved."""
    with mock_aws(), tempfile.TemporaryDirectory() as workdir:
        aws.reset_clients()
        deployer = LocalDeployer(REPO_ROOT, "ssbk-audit", {**drill_parameters(Path(workdir)), **parameters})
        deployment = deployer.deploy(LambdaRunner(REPO_ROOT / "functions"))
    aws.reset_clients()
    resources = deployment.template["Resources"]
    return {
        name: document
        for logical_id, properties in deployment.properties.items()
        for name, document in _policies(properties, resources[logical_id]["Type"], logical_id)
    }


def _justification(issue: str, name: str, detail: str) -> str | None:
    for (known_issue, owner, known_detail), reason in JUSTIFIED.items():
        role = name.split("/")[0]
        owned = role.endswith(owner) or role.startswith(owner)
        if known_issue == issue and owned and known_detail in detail:
            return reason
    return None


def _findings(parameters: dict[str, Any]) -> list[tuple[str, str, str]]:
    found = []
    for name, document in sorted(deployed_policies(parameters).items()):
        audit = analyze_policy_string(json.dumps(document), include_community_auditors=True)
        for finding in audit.findings:
            detail = json.dumps(finding.detail) + json.dumps(finding.location.get("actions", ""))
            found.append((finding.issue, name, detail))
    return found


@pytest.fixture(scope="module")
def findings() -> dict[str, list[tuple[str, str, str]]]:
    return {label: _findings(parameters) for label, parameters in CONFIGURATIONS.items()}


@pytest.mark.parametrize("label", sorted(CONFIGURATIONS))
def test_every_finding_is_fixed_or_justified(
    findings: dict[str, list[tuple[str, str, str]]], label: str
) -> None:
    unexplained = [f for f in findings[label] if _justification(*f) is None]
    assert unexplained == []


def test_the_audit_sees_every_role_and_each_justification_is_still_needed(
    findings: dict[str, list[tuple[str, str, str]]],
) -> None:
    policies = deployed_policies(CONFIGURATIONS["logical Redis, restore test, notifications"])
    roles = {name.split("/")[0] for name in policies}
    assert {"BackupStateMachineRole", "RestoreStateMachineRole", "DumpRedisFunctionRole"} <= roles
    assert len(roles) >= 25, sorted(roles)
    used = {
        key
        for items in findings.values()
        for issue, name, detail in items
        for key in JUSTIFIED
        if _justification(issue, name, detail) == JUSTIFIED[key]
    }
    assert used == set(JUSTIFIED), set(JUSTIFIED) - used


def test_parliament_flags_what_it_should() -> None:
    # The auditor itself, on a misspelt action and an action on the wrong resource type
    bad = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "s3:GetObjekt", "Resource": "arn:aws:s3:::bucket/*"},
            {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::bucket/key"},
        ],
    }
    issues = {finding.issue for finding in analyze_policy_string(json.dumps(bad)).findings}
    assert {"UNKNOWN_ACTION", "RESOURCE_MISMATCH"} <= issues

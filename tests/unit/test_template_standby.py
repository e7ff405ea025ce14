"""The standby-Region parts of template.yaml: replication rules, the replication role, the standby
stack's key and schedules. The region-loss drill deploys both stacks; these pin the rules a
misconfiguration would break (a missing permission, a prefix left out, plaintext replicated)."""

from __future__ import annotations

from typing import Any

import pytest

from .template_helpers import NO_VALUE, actions, source_template, statements

pytestmark = pytest.mark.unit
KIND_PREFIXES = ["config/", "tokens/", "redis/", "full/", "pre-deploy/", "pre-restore/", "audit/"]


@pytest.fixture(scope="module")
def source() -> dict[str, Any]:
    return source_template()


def _replication(source: dict[str, Any]) -> dict[str, Any]:
    condition, configuration, otherwise = source["Resources"]["BackupBucket"]["Properties"][
        "ReplicationConfiguration"
    ]["Fn::If"]
    assert (condition, otherwise) == ("ReplicatesToStandby", NO_VALUE)
    return dict(configuration)


def test_every_kind_and_the_audit_records_replicate_and_plaintext_does_not(source: dict[str, Any]) -> None:
    rules = _replication(source)["Rules"]
    assert [rule["Filter"]["Prefix"] for rule in rules] == KIND_PREFIXES  # not staging/, not exports
    assert sorted(rule["Priority"] for rule in rules) == list(range(1, len(rules) + 1))
    for rule in rules:
        assert rule["Status"] == "Enabled"
        assert rule["DeleteMarkerReplication"] == {"Status": "Disabled"}, (
            "the standby keeps its own retention"
        )
        assert rule["SourceSelectionCriteria"] == {"SseKmsEncryptedObjects": {"Status": "Enabled"}}
        destination = rule["Destination"]
        assert destination["Bucket"] == {"Fn::Sub": "arn:${AWS::Partition}:s3:::${StandbyBucketName}"}
        assert destination["EncryptionConfiguration"] == {"ReplicaKmsKeyID": {"Ref": "StandbyKmsKeyArn"}}
        assert destination["Metrics"]["Status"] == "Enabled"
        condition, rtc, _ = destination["ReplicationTime"]["Fn::If"]
        assert condition == "UsesReplicationTimeControl" and rtc == {
            "Status": "Enabled",
            "Time": {"Minutes": 15},
        }
        assert destination["Account"]["Fn::If"][0] == "StandbyInAnotherAccount"


def test_the_replication_role_can_read_the_source_and_write_the_replicas(source: dict[str, Any]) -> None:
    resources = source["Resources"]
    assert _replication(source)["Role"] == {"Fn::GetAtt": ["ReplicationRole", "Arn"]}
    trust = resources["ReplicationRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]
    assert trust["Principal"] == {"Service": "s3.amazonaws.com"}
    policy = resources["ReplicationRolePolicy"]
    assert policy["Condition"] == "ReplicatesToStandby"
    granted = {
        statement["Sid"]: set(actions(statement))
        for statement in statements(policy["Properties"]["PolicyDocument"])
    }
    assert granted == {
        "ReadReplicationConfiguration": {"s3:getreplicationconfiguration", "s3:listbucket"},
        "ReadSourceVersions": {
            "s3:getobjectversionforreplication",
            "s3:getobjectversionacl",
            "s3:getobjectversiontagging",
            "s3:getobjectretention",
            "s3:getobjectlegalhold",
        },
        "WriteReplicas": {"s3:replicateobject", "s3:replicatetags", "s3:objectowneroverridetobucketowner"},
        "DecryptSourceThroughS3": {"kms:decrypt"},
        "EncryptReplicasThroughS3": {"kms:encrypt", "kms:generatedatakey"},
    }
    by_sid = {s["Sid"]: s for s in statements(policy["Properties"]["PolicyDocument"])}
    assert by_sid["EncryptReplicasThroughS3"]["Condition"]["StringEquals"] == {
        "kms:ViaService": {"Fn::Sub": "s3.${StandbyRegion}.amazonaws.com"}
    }
    assert by_sid["DecryptSourceThroughS3"]["Resource"] == {"Fn::GetAtt": ["BackupKey", "Arn"]}


def test_the_key_is_multi_region_and_the_standby_decrypts_with_its_replica(source: dict[str, Any]) -> None:
    resources = source["Resources"]
    assert resources["BackupKey"]["Properties"]["MultiRegion"] is True
    replica = resources["BackupReplicaKey"]
    assert replica["Type"] == "AWS::KMS::ReplicaKey" and replica["Condition"] == "CreatesReplicaKey"
    assert replica["Properties"]["PrimaryKeyArn"] == {"Ref": "PrimaryBackupKeyArn"}
    assert replica["DeletionPolicy"] == "Retain"
    envelope = next(
        s for s in replica["Properties"]["KeyPolicy"]["Statement"] if s["Sid"] == "EnvelopeDataKeysThroughIam"
    )
    assert envelope["Action"] == "kms:Decrypt"
    assert envelope["Condition"]["StringEquals"]["kms:EncryptionContext:servalsheets:environment"] == {
        "Ref": "Environment"
    }
    variables = source["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["STACK_ROLE"] == {"Ref": "StackRole"}
    assert variables["BACKUP_REPLICA_KMS_KEY_ID"]["Fn::If"][0] == "IsStandby"


def test_a_standby_backs_nothing_up_but_checks_freshness_and_restores(source: dict[str, Any]) -> None:
    conditions = source["Conditions"]
    for name in ("ConfigScheduleOn", "TokensScheduleOn", "RedisScheduleOn", "FullScheduleOn"):
        assert {"Condition": "IsPrimary"} in conditions[name]["Fn::And"], name
    assert "IsPrimary" not in str(conditions["FreshnessScheduleOn"])
    assert "IsPrimary" not in str(conditions["RestoreTestScheduleOn"])
    # the replica bucket is the standby's own BackupBucket: always versioned, as replication needs
    bucket = source["Resources"]["BackupBucket"]["Properties"]
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}


def test_a_standby_in_another_account_admits_only_the_primarys_replication_role(
    source: dict[str, Any],
) -> None:
    policy = source["Resources"]["BackupBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    key = source["Resources"]["BackupKey"]["Properties"]["KeyPolicy"]["Statement"]
    for statements_of in (policy, key):
        (guarded,) = [
            s["Fn::If"] for s in statements_of if "Fn::If" in s and s["Fn::If"][0].startswith("Accepts")
        ]
        condition, statement, otherwise = guarded
        assert condition == "AcceptsReplicasFromAnotherAccount" and otherwise == NO_VALUE
        assert statement["Principal"] == {"AWS": {"Ref": "PrimaryReplicationRoleArn"}}


def test_failed_replication_alarms_per_kind(source: dict[str, Any]) -> None:
    alarms = {k: v for k, v in source["Resources"].items() if k.startswith("ReplicationFailed")}
    assert sorted(alarms) == [
        f"ReplicationFailed{kind}Alarm" for kind in ("Config", "Full", "PreDeploy", "Redis", "Tokens")
    ]
    for alarm in alarms.values():
        assert alarm["Condition"] == "ReplicatesToStandby"
        properties = alarm["Properties"]
        assert (properties["Namespace"], properties["MetricName"]) == (
            "AWS/S3",
            "OperationsFailedReplication",
        )
        rule = next(d["Value"] for d in properties["Dimensions"] if d["Name"] == "RuleId")
        assert rule["Fn::Sub"][0] == "standby-${Kind}"

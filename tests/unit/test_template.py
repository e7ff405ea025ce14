"""template.yaml: schedules, retention, encryption, least privilege, alarms and outputs.

The template is checked twice: as written (what a reviewer reads) and as SAM translates it (what
CloudFormation deploys: generated roles, schedules and their policies). Values the code relies on
(environment variable names, the expirable tag, metric names and dimensions, the encryption
context, request schemas) are imported from the package, so template and code cannot drift apart.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from servalsheets_backup import settings as settings_module
from servalsheets_backup.adapters.elasticache import SNAPSHOT_PREFIX
from servalsheets_backup.format.keys import encryption_context
from servalsheets_backup.observability import NAMESPACE, SERVICE
from servalsheets_backup.store.sets import EXPIRABLE_TAG
from servalsheets_backup.workflows.requests import BackupRequest, RestoreRequest, parse

from .template_helpers import (
    NO_VALUE,
    REPO_ROOT,
    SAM_MANAGED_POLICIES,
    STATEMACHINES_DIR,
    action_resource_types,
    actions,
    as_list,
    branches,
    fill_placeholders,
    function_properties,
    identity_policies,
    load_event,
    placeholders,
    raw_template,
    resolve_mappings,
    resources_of_type,
    role_statements,
    source_template,
    statement_grants,
    statements,
    sub_text,
    translated_template,
)

pytestmark = pytest.mark.unit
SERVERLESS_EXPORTS = "servalsheets-backup-"  # ExportServerlessCacheSnapshot's names

FUNCTION_FOLDERS = {
    "BeginBackupFunction": "begin_backup",
    "BackupConfigFunction": "backup_config",
    "BackupTokensFunction": "backup_tokens",
    "DumpRedisFunction": "dump_redis",
    "SnapshotFunction": "snapshot",
    "ExportSnapshotFunction": "export_snapshot",
    "IngestSnapshotFunction": "ingest_snapshot",
    "FinalizeBackupFunction": "finalize_backup",
    "FailBackupFunction": "fail_backup",
    "CheckFreshnessFunction": "check_freshness",
    "PrepareRestoreFunction": "prepare_restore",
    "PreflightRestoreFunction": "preflight_restore",
    "MaintenanceFunction": "set_maintenance",
    "SafetyBackupFunction": "safety_backup",
    "RestoreConfigFunction": "restore_config",
    "RestoreTokensFunction": "restore_tokens",
    "RestoreRedisFunction": "restore_redis",
    "VerifyRestoreFunction": "verify_restore",
    "RollbackRestoreFunction": "rollback_restore",
    "FinishRestoreFunction": "finish_restore",
}
STATE_MACHINES = {"BackupStateMachine": "backup", "RestoreStateMachine": "restore"}
# Runbook retention (days) per kind prefix, and the parameter that carries it.
RETENTION = {
    "config": ("ConfigRetentionDays", 30),
    "tokens": ("TokensRetentionDays", 30),
    "redis": ("RedisRetentionDays", 7),
    "full": ("FullRetentionDays", 90),
    "pre-deploy": ("PreDeployRetentionDays", 365),
    "pre-restore": ("PreRestoreRetentionDays", 30),
}
KIND_IDS = {
    "config": "Config",
    "tokens": "Tokens",
    "redis": "Redis",
    "full": "Full",
    "pre-deploy": "PreDeploy",
}
SCHEDULED_KINDS = ("config", "tokens", "redis", "full")
DAILY_CRON = "cron(0 2 * * ? *)"
# Actions AWS cannot scope to a resource, so "Resource": "*" is the only form IAM accepts.
RESOURCE_STAR_ALLOWED = {
    "s3:listallmybuckets": "ElastiCache's export pre-check; ListAllMyBuckets has no resource type",
    "logs:createlogdelivery": "Step Functions log delivery (vended logs) has no resource type",
    "logs:getlogdelivery": "Step Functions log delivery (vended logs) has no resource type",
    "logs:updatelogdelivery": "Step Functions log delivery (vended logs) has no resource type",
    "logs:deletelogdelivery": "Step Functions log delivery (vended logs) has no resource type",
    "logs:listlogdeliveries": "Step Functions log delivery (vended logs) has no resource type",
    "logs:putresourcepolicy": "Step Functions log delivery (vended logs) has no resource type",
    "logs:describeresourcepolicies": "Step Functions log delivery (vended logs) has no resource type",
    "logs:describeloggroups": "Step Functions log delivery (vended logs) has no resource type",
}
# The four environment variables only Lambda tooling reads; every other one must be a settings.py name.
TOOLING_ENV = {"POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE", "LOG_LEVEL"}
IAM_MANAGED_POLICY_QUOTA = 10


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def source() -> dict[str, Any]:
    """template.yaml as written."""
    return source_template()


@pytest.fixture(scope="module")
def translated() -> dict[str, Any]:
    """template.yaml after the SAM transform."""
    return translated_template()


def parameter_default(source: dict[str, Any], name: str) -> Any:
    """The default of a template parameter."""
    return source["Parameters"][name]["Default"]


def condition_parameters(source: dict[str, Any], name: str) -> set[str]:
    """Every parameter a condition depends on, following nested conditions."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if set(node) == {"Ref"}:
                found.add(node["Ref"])
            elif set(node) == {"Condition"}:
                walk(source["Conditions"][node["Condition"]])
            else:
                for value in node.values():
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(source["Conditions"][name])
    return found


def settings_env_names() -> set[str]:
    """The environment variable names settings.py reads."""
    return {value for name, value in vars(settings_module).items() if name.startswith("ENV_")}


# ---------------------------------------------------------------------------- translation
def test_template_translates_offline_into_the_expected_resources(translated: dict[str, Any]) -> None:
    functions = resources_of_type(translated, "AWS::Lambda::Function")
    assert set(functions) == set(FUNCTION_FOLDERS)
    assert set(resources_of_type(translated, "AWS::StepFunctions::StateMachine")) == set(STATE_MACHINES)
    assert len(resources_of_type(translated, "AWS::Scheduler::Schedule")) == 6


def test_every_parameter_is_described(source: dict[str, Any]) -> None:
    undocumented = [name for name, p in source["Parameters"].items() if not p.get("Description")]
    assert undocumented == []
    switches = [name for name in source["Parameters"] if name.startswith("Enable")]
    for name in switches:
        assert source["Parameters"][name]["AllowedValues"] == ["true", "false"], name
    assert source["Parameters"]["RedisMode"]["AllowedValues"] == ["logical", "rdb-stream", "elasticache"]
    assert "Default" not in source["Parameters"]["RedisMode"]  # a first deploy must choose
    assert parameter_default(source, "Environment") == "prod"
    assert re.fullmatch(source["Parameters"]["Environment"]["AllowedPattern"], "prod")
    assert not re.fullmatch(source["Parameters"]["Environment"]["AllowedPattern"], "Prod")


# ---------------------------------------------------------------------------- functions
def test_functions_run_python312_on_arm64_with_tracing_and_the_shared_layer(
    source: dict[str, Any], translated: dict[str, Any]
) -> None:
    for logical_id, folder in FUNCTION_FOLDERS.items():
        written = function_properties(source, logical_id)
        assert written["CodeUri"] == f"functions/{folder}/", logical_id
        assert written["Handler"] == "app.lambda_handler"
        deployed = translated["Resources"][logical_id]["Properties"]
        major, minor = (int(part) for part in deployed["Runtime"].removeprefix("python").split("."))
        assert (major, minor) >= (3, 12), logical_id
        assert deployed["Architectures"] == ["arm64"]
        assert deployed["TracingConfig"] == {"Mode": "Active"}
        (layer,) = deployed["Layers"]  # SAM suffixes the layer's logical id with a content hash
        assert layer["Ref"].startswith("SharedLayer")
        assert translated["Resources"][layer["Ref"]]["Type"] == "AWS::Lambda::LayerVersion"
        assert 1 <= deployed.get("Timeout", 3) <= 900


def test_shared_layer_is_built_from_layers_shared(source: dict[str, Any]) -> None:
    layer = source["Resources"]["SharedLayer"]
    assert layer["Type"] == "AWS::Serverless::LayerVersion"
    assert layer["Properties"]["ContentUri"] == "layers/shared/"
    assert layer["Properties"]["CompatibleRuntimes"] == ["python3.12"]
    assert layer["Properties"]["CompatibleArchitectures"] == ["arm64"]
    assert layer["Metadata"]["BuildMethod"] == "python3.12"
    assert (REPO_ROOT / "layers" / "shared" / "requirements.txt").is_file()
    assert (REPO_ROOT / "layers" / "shared" / "servalsheets_backup" / "__init__.py").is_file()


def test_common_environment_names_the_backup_store(source: dict[str, Any]) -> None:
    variables = source["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["POWERTOOLS_SERVICE_NAME"] == SERVICE
    assert variables["POWERTOOLS_METRICS_NAMESPACE"] == NAMESPACE
    assert variables["LOG_LEVEL"] == "INFO"
    assert variables[settings_module.ENV_BUCKET] == {"Ref": "BackupBucket"}
    assert variables[settings_module.ENV_KMS_KEY_ID] == {"Fn::GetAtt": ["BackupKey", "Arn"]}
    assert variables[settings_module.ENV_ENVIRONMENT] == {"Ref": "Environment"}
    assert variables[settings_module.ENV_STATE_TABLE] == {"Ref": "StateTable"}
    assert variables[settings_module.ENV_NOTIFY_TOPIC_ARN] == {"Ref": "NotificationTopic"}
    assert variables[settings_module.ENV_ESCROW_PUBLIC_KEY] == {"Ref": "EscrowPublicKey"}


def test_functions_only_set_variables_that_settings_reads(source: dict[str, Any]) -> None:
    known = settings_env_names() | TOOLING_ENV
    for logical_id in FUNCTION_FOLDERS:
        names = set(function_properties(source, logical_id)["Environment"]["Variables"])
        assert names - known == set(), logical_id
    # Secrets never travel as plain environment variables, only their names.
    for logical_id in FUNCTION_FOLDERS:
        names = set(function_properties(source, logical_id)["Environment"]["Variables"])
        assert not names & {settings_module.ENV_REDIS_URL, settings_module.ENV_ENCRYPTION_KEY}


def test_every_function_has_a_log_group_and_errors_and_throttles_alarms(
    source: dict[str, Any],
) -> None:
    # The template generates these with Fn::ForEach; ``source`` is the template after the
    # language extensions, so every function's three resources must exist as written out.
    resources = source["Resources"]
    for logical_id, folder in FUNCTION_FOLDERS.items():
        function_name = function_properties(source, logical_id)["FunctionName"]
        assert function_name == {
            "Fn::Sub": f"servalsheets-backup-${{Environment}}-{folder.replace('_', '-')}"
        }
        log_group = resources[f"{logical_id}LogGroup"]["Properties"]
        assert log_group["LogGroupName"] == {"Fn::Sub": f"/aws/lambda/${{{logical_id}}}"}
        assert log_group["RetentionInDays"] == {"Ref": "LogRetentionDays"}
        for metric in ("Errors", "Throttles"):
            alarm = resources[f"{logical_id}{metric}Alarm"]["Properties"]
            assert alarm["AlarmName"] == {"Fn::Sub": f"${{{logical_id}}}-{metric.lower()}"}
            assert alarm["Namespace"] == "AWS/Lambda"
            assert alarm["MetricName"] == metric
            assert alarm["Dimensions"] == [
                {"Name": "FunctionName", "Value": {"Fn::Sub": f"${{{logical_id}}}"}}
            ]
            assert alarm["Statistic"] == "Sum"
            assert alarm["Threshold"] == 1
            assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
            assert alarm["AlarmActions"] == alarm["OKActions"] == [{"Ref": "NotificationTopic"}]
    assert parameter_default(source, "LogRetentionDays") == 90


def test_the_per_function_resources_are_generated_for_exactly_the_functions() -> None:
    # A new function cannot be forgotten: the loop's list is the template's function list.
    loop = raw_template()["Resources"]["Fn::ForEach::FunctionLogsAndAlarms"]
    assert sorted(loop[1]) == sorted(FUNCTION_FOLDERS)
    outputs = raw_template()["Outputs"]["Fn::ForEach::FunctionOutputs"]
    assert outputs[1] == loop[1]
    assert set(loop[2]) == {
        "${FunctionId}LogGroup",
        "${FunctionId}ErrorsAlarm",
        "${FunctionId}ThrottlesAlarm",
    }


# ---------------------------------------------------------------------------- schedules
SCHEDULES = [
    # event file, owner, event, expression parameter, runbook default, enable parameter
    (
        "schedule-config",
        "BackupStateMachine",
        "ConfigSchedule",
        "ConfigBackupSchedule",
        DAILY_CRON,
        "EnableConfigSchedule",
    ),
    (
        "schedule-tokens",
        "BackupStateMachine",
        "TokensSchedule",
        "TokensBackupSchedule",
        DAILY_CRON,
        "EnableTokensSchedule",
    ),
    (
        "schedule-full",
        "BackupStateMachine",
        "FullSchedule",
        "FullBackupSchedule",
        "cron(0 3 ? * SUN *)",
        "EnableFullSchedule",
    ),
    (
        "schedule-restore-test",
        "RestoreStateMachine",
        "RestoreTestSchedule",
        "RestoreTestSchedule",
        None,
        "EnableRestoreTestSchedule",
    ),
]


def schedule_event(source: dict[str, Any], owner: str, event: str) -> dict[str, Any]:
    """The ScheduleV2 event's properties."""
    definition = source["Resources"][owner]["Properties"]["Events"][event]
    assert definition["Type"] == "ScheduleV2"
    return dict(definition["Properties"])


def schedule_input(properties: dict[str, Any]) -> Any:
    """The schedule's Input as JSON (an Fn::Sub input keeps its ${...} placeholders)."""
    text = sub_text(properties["Input"]) or properties["Input"]
    return json.loads(text)


def assert_state_follows(source: dict[str, Any], properties: dict[str, Any], enable: str) -> None:
    """State is ENABLED/DISABLED from a condition that reads the Enable parameter."""
    condition, when_true, when_false = properties["State"]["Fn::If"]
    assert (when_true, when_false) == ("ENABLED", "DISABLED")
    assert enable in condition_parameters(source, condition)
    assert source["Parameters"][enable]["Default"] == "true"


@pytest.mark.parametrize(("event_file", "owner", "event", "expression", "default", "enable"), SCHEDULES)
def test_schedules_match_runbook_and_event_files(
    source: dict[str, Any],
    event_file: str,
    owner: str,
    event: str,
    expression: str,
    default: str | None,
    enable: str,
) -> None:
    properties = schedule_event(source, owner, event)
    assert properties["ScheduleExpression"] == {"Ref": expression}
    if default is not None:
        assert parameter_default(source, expression) == default
    else:  # weekly
        assert re.fullmatch(
            r"cron\(\d+ \d+ \? \* (SUN|MON|TUE|WED|THU|FRI|SAT) \*\)", parameter_default(source, expression)
        )
    assert properties["ScheduleExpressionTimezone"] == "UTC"
    assert properties["FlexibleTimeWindow"] == {"Mode": "OFF"}
    assert_state_follows(source, properties, enable)
    assert schedule_input(properties) == load_event(event_file)


def test_redis_schedule_goes_hourly_with_redis_backup_interval(source: dict[str, Any]) -> None:
    properties = schedule_event(source, "BackupStateMachine", "RedisSchedule")
    condition, hourly, daily = properties["ScheduleExpression"]["Fn::If"]
    assert (hourly, daily) == ("rate(1 hour)", {"Ref": "RedisBackupSchedule"})
    assert source["Conditions"][condition] == {"Fn::Equals": [{"Ref": "RedisBackupInterval"}, "hourly"]}
    assert parameter_default(source, "RedisBackupSchedule") == DAILY_CRON
    assert source["Parameters"]["RedisBackupInterval"]["AllowedValues"] == ["daily", "hourly"]
    assert properties["ScheduleExpressionTimezone"] == "UTC"
    assert properties["FlexibleTimeWindow"] == {"Mode": "OFF"}
    assert_state_follows(source, properties, "EnableRedisSchedule")
    assert schedule_input(properties) == load_event("schedule-redis")


def test_freshness_check_runs_hourly(source: dict[str, Any]) -> None:
    properties = schedule_event(source, "CheckFreshnessFunction", "FreshnessSchedule")
    assert properties["ScheduleExpression"] == "rate(1 hour)"
    assert properties["FlexibleTimeWindow"] == {"Mode": "OFF"}
    assert_state_follows(source, properties, "EnableFreshnessCheckSchedule")
    assert schedule_input(properties) == load_event("schedule-freshness")


@pytest.mark.parametrize("kind", SCHEDULED_KINDS)
def test_scheduled_backup_inputs_are_valid_backup_requests(kind: str) -> None:
    request = parse(BackupRequest, load_event(f"schedule-{kind}"), "schedule input")
    assert request.kind == kind
    assert request.trigger == "schedule"


def test_restore_test_targets_only_its_scratch_copies(source: dict[str, Any]) -> None:
    # Given the weekly restore test's input, with the RestoreTest* parameters filled in
    properties = schedule_event(source, "RestoreStateMachine", "RestoreTestSchedule")
    text = sub_text(properties["Input"])
    assert text is not None
    assert placeholders(text) == {
        "RestoreTestRedisUrlSecretName",
        "RestoreTestSecretPrefix",
        "RestoreTestTokenPath",
    }
    sample = {
        "RestoreTestRedisUrlSecretName": "restore-test/redis-url",
        "RestoreTestSecretPrefix": "restore-test/",
        "RestoreTestTokenPath": "/mnt/servalsheets/restore-test/tokens.encrypted",
    }
    # When it is parsed as the restore workflow parses it
    request = parse(RestoreRequest, json.loads(fill_placeholders(text, sample)), "restore test input")
    # Then it is a verification run into the scratch target, never the live defaults
    assert request.verification is True
    assert request.backup == "latest"
    assert request.kinds == ["config", "tokens", "redis"]
    assert request.target.redis_url_secret_id == sample["RestoreTestRedisUrlSecretName"]
    assert request.target.secret_prefix == sample["RestoreTestSecretPrefix"]
    assert request.target.token_store_path == sample["RestoreTestTokenPath"]
    # and the schedule cannot be enabled unless all three targets are set
    condition = properties["State"]["Fn::If"][0]
    assert set(sample) <= condition_parameters(source, condition)


def test_translated_schedules_are_named_per_environment(translated: dict[str, Any]) -> None:
    schedules = resources_of_type(translated, "AWS::Scheduler::Schedule")
    names = sorted(s["Properties"]["Name"]["Fn::Sub"] for s in schedules.values())
    assert names == sorted(
        f"servalsheets-backup-${{Environment}}-{n}"
        for n in ("config", "tokens", "redis", "full", "restore-test", "freshness")
    )


# ---------------------------------------------------------------------------- bucket
def lifecycle_rules(source: dict[str, Any]) -> list[dict[str, Any]]:
    """The backup bucket's lifecycle rules."""
    return list(source["Resources"]["BackupBucket"]["Properties"]["LifecycleConfiguration"]["Rules"])


@pytest.mark.parametrize("kind", sorted(RETENTION))
def test_kinds_expire_after_runbook_retention_only_when_tagged_expirable(
    source: dict[str, Any], kind: str
) -> None:
    parameter, days = RETENTION[kind]
    rules = [r for r in lifecycle_rules(source) if r.get("Prefix") == f"{kind}/" and "ExpirationInDays" in r]
    assert len(rules) == 1
    rule = rules[0]
    assert rule["Status"] == "Enabled"
    assert rule["ExpirationInDays"] == {"Ref": parameter}
    assert parameter_default(source, parameter) == days
    # S3's Filter And{Prefix, Tags} is spelled Prefix + TagFilters in CloudFormation.
    assert rule["TagFilters"] == [{"Key": EXPIRABLE_TAG, "Value": "true"}]


def test_no_rule_can_expire_the_newest_set_of_a_kind(source: dict[str, Any]) -> None:
    kind_prefixes = {f"{kind}/" for kind in RETENTION}
    for rule in lifecycle_rules(source):
        expires_current = "ExpirationInDays" in rule or "ExpirationDate" in rule
        if not expires_current:
            continue
        assert rule.get("Prefix"), f"{rule['Id']} expires objects bucket-wide"
        if rule["Prefix"] in kind_prefixes:
            assert rule.get("TagFilters") == [{"Key": EXPIRABLE_TAG, "Value": "true"}], rule["Id"]
        else:
            # Plaintext exports and seeds, the audit log: never a backup set (no kind is named
            # like a snapshot, so servalsheets-backup- cannot match one).
            assert rule["Prefix"] in ("staging/", "audit/", SERVERLESS_EXPORTS), rule["Id"]


def test_bucket_housekeeping_rules(source: dict[str, Any]) -> None:
    rules = {rule["Id"]: rule for rule in lifecycle_rules(source)}
    abort = [r for r in rules.values() if "AbortIncompleteMultipartUpload" in r]
    assert len(abort) == 1
    assert abort[0]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}
    assert "Prefix" not in abort[0] and "TagFilters" not in abort[0]
    markers = [r for r in rules.values() if r.get("ExpiredObjectDeleteMarker")]
    assert len(markers) == 1 and "Prefix" not in markers[0]
    staging = [r for r in rules.values() if r.get("Prefix") == "staging/"]
    assert staging[0]["ExpirationInDays"] == 1
    exports = [r for r in rules.values() if r.get("Prefix") == SERVERLESS_EXPORTS]
    assert exports[0]["ExpirationInDays"] == 1 and SERVERLESS_EXPORTS == SNAPSHOT_PREFIX
    audit = [r for r in rules.values() if r.get("Prefix") == "audit/"]
    assert audit[0]["ExpirationInDays"] == {"Ref": "AuditRetentionDays"}
    assert parameter_default(source, "AuditRetentionDays") == 400


def test_bucket_is_private_versioned_and_kms_encrypted(source: dict[str, Any]) -> None:
    bucket = source["Resources"]["BackupBucket"]
    properties = bucket["Properties"]
    assert bucket["DeletionPolicy"] == "Retain"
    assert bucket["UpdateReplacePolicy"] == "Retain"
    assert properties["VersioningConfiguration"] == {"Status": "Enabled"}
    assert properties["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert properties["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    (rule,) = properties["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "aws:kms",
        "KMSMasterKeyID": {"Fn::GetAtt": ["BackupKey", "Arn"]},
    }
    assert rule["BucketKeyEnabled"] is True


def test_object_lock_is_optional_governance_mode(source: dict[str, Any]) -> None:
    properties = source["Resources"]["BackupBucket"]["Properties"]
    assert parameter_default(source, "EnableObjectLock") == "false"
    assert properties["ObjectLockEnabled"] == {"Fn::If": ["UseObjectLock", True, {"Ref": "AWS::NoValue"}]}
    enabled = properties["ObjectLockConfiguration"]["Fn::If"][1]
    assert enabled["Rule"]["DefaultRetention"] == {
        "Mode": "GOVERNANCE",
        "Days": {"Ref": "ObjectLockRetentionDays"},
    }


def bucket_policy(source: dict[str, Any]) -> list[dict[str, Any]]:
    """The backup bucket policy's statements."""
    document = source["Resources"]["BackupBucketPolicy"]["Properties"]["PolicyDocument"]
    return list(statements(document))


def test_bucket_policy_denies_plain_http(source: dict[str, Any]) -> None:
    denies = [
        s
        for s in bucket_policy(source)
        if s["Effect"] == "Deny" and s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
    ]
    assert len(denies) == 1
    assert denies[0]["Principal"] == "*"
    assert denies[0]["Action"] == "s3:*"
    assert denies[0]["Resource"] == [
        {"Fn::GetAtt": ["BackupBucket", "Arn"]},
        {"Fn::Sub": "${BackupBucket.Arn}/*"},
    ]


def test_bucket_policy_denies_writes_not_encrypted_with_the_backup_key(source: dict[str, Any]) -> None:
    denies = [s for s in bucket_policy(source) if s["Effect"] == "Deny" and s["Action"] == "s3:PutObject"]
    conditions = [s["Condition"] for s in denies]
    assert {"StringNotEqualsIfExists": {"s3:x-amz-server-side-encryption": "aws:kms"}} in conditions
    assert {
        "StringNotEqualsIfExists": {
            "s3:x-amz-server-side-encryption-aws-kms-key-id": {"Fn::GetAtt": ["BackupKey", "Arn"]}
        }
    } in conditions
    for deny in denies:
        assert deny["Principal"] == "*"
        # staging/ is exempt: ElastiCache writes exports there and only reads SSE-S3 seeds; with
        # a serverless cache so are the root objects ExportServerlessCacheSnapshot writes.
        condition, serverless, node_based = deny["NotResource"]["Fn::If"]
        assert condition == "SnapshotsServerlessCache"
        assert node_based == {"Fn::Sub": "${BackupBucket.Arn}/staging/*"}
        assert serverless == [node_based, {"Fn::Sub": "${BackupBucket.Arn}/" + SERVERLESS_EXPORTS + "*"}]


def test_bucket_policy_lets_elasticache_into_staging_and_its_own_exports_only(
    source: dict[str, Any],
) -> None:
    allows = [s for s in bucket_policy(source) if s["Effect"] == "Allow"]
    assert allows, "ElastiCache exports need a bucket policy grant"
    document = source["Resources"]["BackupBucketPolicy"]["Properties"]["PolicyDocument"]
    serverless = [s["Fn::If"] for s in document["Statement"] if "Fn::If" in s]
    # The bucket root is opened only when a serverless cache is configured.
    assert [(c, s["Sid"], f) for c, s, f in serverless] == [
        ("SnapshotsServerlessCache", "ElastiCacheServerlessExportObjects", NO_VALUE),
        # ... and a standby lets a primary in another account replicate into it
        ("AcceptsReplicasFromAnotherAccount", "ReplicasFromThePrimaryAccount", NO_VALUE),
    ]
    replicas = [a for a in allows if a.get("Sid") == "ReplicasFromThePrimaryAccount"]
    assert [a["Principal"] for a in replicas] == [{"AWS": {"Ref": "PrimaryReplicationRoleArn"}}]
    assert all(
        action.startswith(
            ("s3:replicate", "s3:objectowner", "s3:getbucketversioning", "s3:putbucketversioning")
        )
        for action in actions(replicas[0])
    )
    granted: set[str] = set()
    for allow in (a for a in allows if a not in replicas):
        assert allow["Principal"] == {
            "Service": {"Fn::Sub": "${AWS::Region}.elasticache-snapshot.amazonaws.com"}
        }
        assert allow["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}
        granted.update(actions(allow))
        for resource in as_list(allow["Resource"]):
            text = sub_text(resource)
            if text is not None:
                assert text in ("${BackupBucket.Arn}/staging/*", "${BackupBucket.Arn}/servalsheets-backup-*")
            else:
                assert resource == {"Fn::GetAtt": ["BackupBucket", "Arn"]}
                assert set(actions(allow)) <= {
                    "s3:listbucket",
                    "s3:getbucketacl",
                    "s3:listbucketmultipartuploads",
                }
    assert granted == {
        "s3:putobject",
        "s3:getobject",
        "s3:listmultipartuploadparts",
        "s3:listbucket",
        "s3:getbucketacl",
        "s3:listbucketmultipartuploads",
    }


# ---------------------------------------------------------------------------- key, table, topic
def test_backup_key_rotates_and_is_retained(source: dict[str, Any]) -> None:
    key = source["Resources"]["BackupKey"]
    assert key["DeletionPolicy"] == "Retain"
    assert key["Properties"]["EnableKeyRotation"] is True
    assert 7 <= key["Properties"]["PendingWindowInDays"] <= 30
    alias = source["Resources"]["BackupKeyAlias"]["Properties"]
    assert alias["AliasName"] == {"Fn::Sub": "alias/servalsheets-backup-${Environment}"}
    assert alias["TargetKeyId"] == {"Ref": "BackupKey"}


def test_key_policy_grants_no_blanket_use(source: dict[str, Any]) -> None:
    usage = {"kms:decrypt", "kms:encrypt", "kms:generatedatakey", "kms:generatedatakey*", "kms:creategrant"}
    policy = source["Resources"]["BackupKey"]["Properties"]["KeyPolicy"]
    for statement in statements(policy):
        assert statement["Effect"] == "Allow"
        assert "kms:*" not in actions(statement) and "*" not in actions(statement)
        assert statement["Principal"] != "*" and statement["Principal"] != {"AWS": "*"}
        if set(actions(statement)) & usage:
            # Every statement that lets anyone use the key is conditioned.
            assert statement.get("Condition"), statement.get("Sid")
    admin = next(s for s in statements(policy) if s.get("Sid") == "AccountAdministersKey")
    assert "kms:putkeypolicy" in actions(admin)  # the account can always fix the policy
    assert not set(actions(admin)) & usage


def test_envelope_key_use_is_bound_to_the_backup_encryption_context(source: dict[str, Any]) -> None:
    policy = source["Resources"]["BackupKey"]["Properties"]["KeyPolicy"]
    envelope = next(s for s in statements(policy) if s.get("Sid") == "EnvelopeDataKeysThroughIam")
    context = encryption_context("backup-id", "config", "object", "prod")
    allowed_keys = envelope["Condition"]["ForAllValues:StringEquals"]["kms:EncryptionContextKeys"]
    assert sorted(allowed_keys) == sorted(context)
    environment_key = next(k for k in context if k.endswith(":environment"))
    assert envelope["Condition"]["StringEquals"][f"kms:EncryptionContext:{environment_key}"] == {
        "Ref": "Environment"
    }


def test_state_table_holds_locks_and_idempotency(source: dict[str, Any]) -> None:
    table = source["Resources"]["StateTable"]["Properties"]
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
    assert table["AttributeDefinitions"] == [{"AttributeName": "pk", "AttributeType": "S"}]
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert table["SSESpecification"]["SSEEnabled"] is True


def test_notifications_are_encrypted_and_email_is_optional(source: dict[str, Any]) -> None:
    resources = source["Resources"]
    assert resources["NotificationTopic"]["Properties"]["KmsMasterKeyId"] == {"Ref": "BackupKey"}
    subscription = resources["NotificationEmailSubscription"]
    assert subscription["Condition"] == "HasNotificationEmail"
    assert subscription["Properties"]["Protocol"] == "email"
    topic_policy = resources["NotificationTopicPolicy"]["Properties"]["PolicyDocument"]
    assert any(
        s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        for s in statements(topic_policy)
    )


# ---------------------------------------------------------------------------- state machines
def asl_text(name: str) -> str:
    """statemachines/<name>.asl.json, or skip the test while it has not been written."""
    path = STATEMACHINES_DIR / f"{name}.asl.json"
    if not path.is_file():
        pytest.skip(f"{path.relative_to(REPO_ROOT)} does not exist yet")
    return path.read_text()


@pytest.mark.parametrize("machine", sorted(STATE_MACHINES))
def test_definition_substitutions_cover_every_placeholder(source: dict[str, Any], machine: str) -> None:
    properties = source["Resources"][machine]["Properties"]
    assert properties["DefinitionUri"] == f"statemachines/{STATE_MACHINES[machine]}.asl.json"
    substitutions = properties["DefinitionSubstitutions"]
    used = placeholders(asl_text(STATE_MACHINES[machine]))
    assert used - set(substitutions) == set()
    json.loads(asl_text(STATE_MACHINES[machine]))  # the definition is JSON


@pytest.mark.parametrize("machine", sorted(STATE_MACHINES))
def test_substitutions_are_only_arns_and_names(source: dict[str, Any], machine: str) -> None:
    substitutions = source["Resources"][machine]["Properties"]["DefinitionSubstitutions"]
    for key, value in substitutions.items():
        if key.endswith("FunctionArn"):
            function = key.removesuffix("Arn")
            assert function in FUNCTION_FOLDERS, key
            assert value == {"Fn::GetAtt": [function, "Arn"]}
        else:
            assert set(value) <= {"Ref", "Fn::GetAtt"}, key
    for common in ("BackupBucketName", "NotifyTopicArn", "RedisMode", "ReplicationGroupId"):
        assert common in substitutions


@pytest.mark.parametrize("machine", sorted(STATE_MACHINES))
def test_state_machines_may_invoke_exactly_what_they_call(source: dict[str, Any], machine: str) -> None:
    properties = source["Resources"][machine]["Properties"]
    invokable = {
        resource["Fn::GetAtt"][0]
        for policy in properties["Policies"]
        if isinstance(policy, dict) and "Statement" in policy
        for statement in policy["Statement"]
        if statement.get("Sid") == "InvokeWorkflowFunctions"
        for resource in statement["Resource"]
    }
    substituted = {
        k.removesuffix("Arn") for k in properties["DefinitionSubstitutions"] if k.endswith("FunctionArn")
    }
    assert invokable == substituted
    called = {name.removesuffix("Arn") for name in placeholders(asl_text(STATE_MACHINES[machine]))}
    assert {name for name in called if name.endswith("Function")} <= invokable


@pytest.mark.parametrize("machine", sorted(STATE_MACHINES))
def test_sdk_integrations_in_the_definition_are_granted(translated: dict[str, Any], machine: str) -> None:
    integrations = re.findall(
        r"arn:aws:states:::aws-sdk:([a-z0-9]+):(\w+)", asl_text(STATE_MACHINES[machine])
    )
    granted = role_statements(translated, f"{machine}Role")
    for service, operation in integrations:
        action = f"{service}:{operation[0].upper()}{operation[1:]}"
        assert any(statement_grants(s, action) for s in granted), action


@pytest.mark.parametrize("machine", sorted(STATE_MACHINES))
def test_state_machines_log_without_execution_data_and_trace(source: dict[str, Any], machine: str) -> None:
    properties = source["Resources"][machine]["Properties"]
    logging_config = properties["Logging"]
    assert logging_config["IncludeExecutionData"] is False
    assert logging_config["Level"] in ("ALL", "ERROR", "FATAL")
    (destination,) = logging_config["Destinations"]
    assert destination["CloudWatchLogsLogGroup"]["LogGroupArn"] == {
        "Fn::GetAtt": [f"{machine}LogGroup", "Arn"]
    }
    assert properties["Tracing"] == {"Enabled": True}


# ---------------------------------------------------------------------------- least privilege
def test_no_allow_statement_uses_a_wildcard_action(translated: dict[str, Any]) -> None:
    for owner, document in identity_policies(translated):
        for statement in statements(document):
            assert "NotAction" not in statement, owner
            for action in actions(statement):
                assert action != "*" and not action.endswith(":*"), (owner, action)


def resource_is_star(statement: dict[str, Any]) -> bool:
    """Whether any branch of the statement's Resource is the bare "*"."""
    return any(resource == "*" for value in as_list(statement["Resource"]) for resource in branches(value))


def test_resource_star_only_where_aws_allows_nothing_narrower(translated: dict[str, Any]) -> None:
    for owner, document in identity_policies(translated):
        for statement in statements(document):
            assert "NotResource" not in statement, owner
            if resource_is_star(statement):
                unexpected = set(actions(statement)) - set(RESOURCE_STAR_ALLOWED)
                assert unexpected == set(), (owner, unexpected)


@pytest.mark.parametrize("action", sorted(RESOURCE_STAR_ALLOWED))
def test_allow_list_names_only_actions_without_resource_types(action: str) -> None:
    assert action_resource_types(action) == [], RESOURCE_STAR_ALLOWED[action]


def test_every_granted_action_exists(translated: dict[str, Any]) -> None:
    for owner, document in identity_policies(translated):
        for statement in statements(document):
            for action in actions(statement):
                if not action.endswith("*"):
                    assert action_resource_types(action) is not None, (owner, action)


def test_kms_grants_name_only_the_backup_key_or_application_keys(translated: dict[str, Any]) -> None:
    backup_key = {"Fn::GetAtt": ["BackupKey", "Arn"]}
    # a standby's replica of the primary's multi-Region key: that key's account and id, this Region
    replica = {
        "Fn::Sub": [
            "arn:${AWS::Partition}:kms:${AWS::Region}:${Account}:key/${KeyId}",
            {
                "Account": {
                    "Fn::Select": [4, {"Fn::Split": [":", {"Fn::Sub": "${PrimaryBackupKeyArn}:::::"}]}]
                },
                "KeyId": {"Fn::Select": [1, {"Fn::Split": ["/", {"Fn::Sub": "${PrimaryBackupKeyArn}/"}]}]},
            },
        ]
    }
    allowed = (
        backup_key,
        {"Ref": "ApplicationKmsKeyArns"},
        {"Ref": "ElastiCacheKmsKeyArn"},
        [backup_key, {"Fn::If": ["IsStandby", replica, NO_VALUE]}],
    )
    for owner, document in identity_policies(translated):
        for statement in statements(document):
            if any(action.startswith("kms:") for action in actions(statement)):
                assert statement["Resource"] in allowed, owner


def test_only_the_redis_restore_may_grant_elasticache_the_cache_key(translated: dict[str, Any]) -> None:
    # A seeded cache keeps the running cache's customer managed key: CreateGrant through
    # ElastiCache only, and only when ElastiCacheKmsKeyArn is set.
    owners = {
        owner
        for owner, document in identity_policies(translated)
        for statement in statements(document)
        if statement.get("Resource") == {"Ref": "ElastiCacheKmsKeyArn"}
    }
    assert owners == {"RestoreRedisFunctionRole"}
    document = next(
        policy["PolicyDocument"]
        for policy in translated["Resources"]["RestoreRedisFunctionRole"]["Properties"]["Policies"]
        if "SeedWithTheCacheKey" in json.dumps(policy)
    )
    [conditional] = [s["Fn::If"] for s in document["Statement"] if "SeedWithTheCacheKey" in json.dumps(s)]
    condition, statement, otherwise = conditional
    assert (condition, otherwise) == ("SeedsWithCacheKey", NO_VALUE)
    assert sorted(statement["Action"]) == ["kms:CreateGrant", "kms:DescribeKey"]
    assert statement["Condition"] == {
        "StringEquals": {"kms:ViaService": {"Fn::Sub": "elasticache.${AWS::Region}.amazonaws.com"}}
    }


def test_only_basic_sam_managed_policies_are_attached(translated: dict[str, Any]) -> None:
    for logical_id, role in resources_of_type(translated, "AWS::IAM::Role").items():
        attached = role["Properties"].get("ManagedPolicyArns", [])
        assert len(attached) <= IAM_MANAGED_POLICY_QUOTA, logical_id
        for arn in attached:
            if isinstance(arn, str):
                assert arn.rsplit("/", 1)[-1] in SAM_MANAGED_POLICIES, (logical_id, arn)


def test_policies_leave_room_under_iam_size_limits(translated: dict[str, Any]) -> None:
    # Sizes are measured before intrinsics resolve; the margin covers resolved ARNs and lists.
    for logical_id, role in resources_of_type(translated, "AWS::IAM::Role").items():
        inline = json.dumps(role["Properties"].get("Policies", []), separators=(",", ":"))
        assert len(inline) < 10_240 * 0.6, logical_id
    for logical_id, policy in resources_of_type(translated, "AWS::IAM::ManagedPolicy").items():
        document = json.dumps(policy["Properties"]["PolicyDocument"], separators=(",", ":"))
        assert len(document) < 6_144 * 0.6, logical_id


def test_no_logs_wildcard_anywhere() -> None:
    text = (REPO_ROOT / "template.yaml").read_text()
    assert "logs:*" not in text


# ---------------------------------------------------------------------------- alarms
def alarm(source: dict[str, Any], logical_id: str) -> dict[str, Any]:
    """An alarm's properties, checked for the common pattern (name, topic actions)."""
    properties = resolve_mappings(source["Resources"][logical_id]["Properties"], source.get("Mappings", {}))
    name = sub_text(properties["AlarmName"])
    # Per-function alarms are named after their function, whose name has the same prefix.
    function = re.fullmatch(r"\$\{(\w+Function)\}-(errors|throttles)", name or "")
    if function:
        name = sub_text(function_properties(source, function.group(1))["FunctionName"])
    assert name.startswith("servalsheets-backup-${Environment}-")
    assert properties["AlarmActions"] == [{"Ref": "NotificationTopic"}]
    assert properties["OKActions"] == [{"Ref": "NotificationTopic"}]
    return properties


def business_dimensions(kind: str) -> list[dict[str, str]]:
    """The dimensions the package's Powertools metrics carry."""
    return [{"Name": "service", "Value": SERVICE}, {"Name": "Kind", "Value": kind}]


def test_every_alarm_notifies_the_topic_under_a_unique_name(source: dict[str, Any]) -> None:
    alarms = resources_of_type(source, "AWS::CloudWatch::Alarm")
    names = [sub_text(alarm(source, logical_id)["AlarmName"]) for logical_id in alarms]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("kind", SCHEDULED_KINDS)
def test_backup_stale_alarms(source: dict[str, Any], kind: str) -> None:
    properties = alarm(source, f"BackupStale{KIND_IDS[kind]}Alarm")
    assert properties["Namespace"] == NAMESPACE
    assert properties["MetricName"] == "BackupAgeSeconds"
    assert properties["Dimensions"] == business_dimensions(kind)
    assert properties["Statistic"] == "Maximum"
    assert properties["ComparisonOperator"] == "GreaterThanThreshold"
    assert properties["TreatMissingData"] == "breaching"
    # (seconds when RedisBackupInterval=hourly, seconds when daily): only Redis changes.
    expected = {
        "config": (93_600, 93_600),
        "tokens": (93_600, 93_600),
        "redis": (7_200, 93_600),
        "full": (691_200, 691_200),
    }
    assert properties["Threshold"] == {"Fn::If": ["RedisHourly", *expected[kind]]}


@pytest.mark.parametrize("kind", sorted(KIND_IDS))
def test_backup_failed_alarms(source: dict[str, Any], kind: str) -> None:
    properties = alarm(source, f"BackupFailed{KIND_IDS[kind]}Alarm")
    assert properties["MetricName"] == "BackupFailed"
    assert properties["Dimensions"] == business_dimensions(kind)
    assert properties["Statistic"] == "Sum"
    assert properties["Threshold"] == 1
    assert properties["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert properties["TreatMissingData"] == "notBreaching"


@pytest.mark.parametrize("kind", SCHEDULED_KINDS)
def test_backup_size_too_small_alarms(source: dict[str, Any], kind: str) -> None:
    properties = alarm(source, f"BackupSizeTooSmall{KIND_IDS[kind]}Alarm")
    assert properties["MetricName"] == "BackupSizeBytes"
    assert properties["Dimensions"] == business_dimensions(kind)
    assert properties["Statistic"] == "Minimum"
    assert properties["ComparisonOperator"] == "LessThanThreshold"
    assert sub_text(properties["Threshold"]) == f"${{MinBackupSizeBytes{KIND_IDS[kind]}}}"
    assert properties["TreatMissingData"] == "notBreaching"
    assert parameter_default(source, "MinBackupSizeBytesFull") == 1_000_000


def test_restore_alarms(source: dict[str, Any]) -> None:
    failed = alarm(source, "RestoreVerificationFailedAlarm")
    assert (failed["MetricName"], failed["Statistic"], failed["Threshold"]) == (
        "VerificationFailed",
        "Sum",
        1,
    )
    assert failed["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert failed["Dimensions"] == business_dimensions("verification")
    stale = alarm(source, "RestoreVerificationStaleAlarm")
    assert (stale["MetricName"], stale["Threshold"]) == ("VerificationAgeSeconds", 691_200)
    assert stale["ComparisonOperator"] == "GreaterThanThreshold"
    assert stale["TreatMissingData"] == "breaching"
    assert stale["Dimensions"] == business_dimensions("verification")
    slow = alarm(source, "RestoreTooSlowAlarm")
    assert (slow["MetricName"], slow["Statistic"]) == ("RestoreDurationSeconds", "Maximum")
    assert slow["Threshold"] == {"Ref": "RtoTargetSeconds"}
    assert slow["ComparisonOperator"] == "GreaterThanThreshold"
    assert slow["Dimensions"] == business_dimensions("restore")
    assert parameter_default(source, "RtoTargetSeconds") == 3600


@pytest.mark.parametrize("machine", sorted(STATE_MACHINES))
def test_workflow_failure_alarms(source: dict[str, Any], machine: str) -> None:
    for suffix, metric in (("FailedAlarm", "ExecutionsFailed"), ("TimedOutAlarm", "ExecutionsTimedOut")):
        properties = alarm(source, f"{machine}{suffix}")
        assert properties["Namespace"] == "AWS/States"
        assert properties["MetricName"] == metric
        assert properties["Dimensions"] == [
            {"Name": "StateMachineArn", "Value": {"Fn::Sub": f"${{{machine}}}"}}
        ]
        assert properties["Threshold"] == 1


def test_alarmed_metric_names_are_emitted_by_the_package(source: dict[str, Any]) -> None:
    package = REPO_ROOT / "layers" / "shared" / "servalsheets_backup"
    code = "\n".join(path.read_text() for path in package.rglob("*.py"))
    for properties in resources_of_type(source, "AWS::CloudWatch::Alarm").values():
        if properties["Properties"]["Namespace"] == NAMESPACE:
            assert f'"{properties["Properties"]["MetricName"]}"' in code


# ---------------------------------------------------------------------------- dashboard, tags, outputs
def test_dashboard_is_valid_json_and_lists_the_alarms(source: dict[str, Any]) -> None:
    text = sub_text(source["Resources"]["Dashboard"]["Properties"]["DashboardBody"])
    assert text is not None
    values = {name: 1 if name in source["Parameters"] else "x" for name in placeholders(text)}
    body = json.loads(fill_placeholders(text, values))
    referenced = {name.removesuffix(".Arn") for name in placeholders(text) if name.endswith(".Arn")}
    # A conditional alarm (the standby replication ones) cannot be named in the dashboard's Sub:
    # the dashboard would not deploy without it. Those page through the topic only.
    alarms = {
        k for k, v in resources_of_type(source, "AWS::CloudWatch::Alarm").items() if "Condition" not in v
    }
    assert referenced == alarms
    titles = " ".join(w["properties"].get("title", "") for w in body["widgets"])
    for wanted in ("age", "size", "duration", "Restore duration vs RTO"):
        assert wanted in titles
    assert "${RtoTargetSeconds}" in text  # the RTO target line


TAGGABLE = (
    "AWS::Lambda::Function",
    "AWS::IAM::Role",
    "AWS::Logs::LogGroup",
    "AWS::S3::Bucket",
    "AWS::KMS::Key",
    "AWS::DynamoDB::Table",
    "AWS::SNS::Topic",
    "AWS::StepFunctions::StateMachine",
    "AWS::CloudWatch::Alarm",
    "AWS::CloudWatch::Dashboard",
)


def test_everything_taggable_is_tagged(translated: dict[str, Any]) -> None:
    for logical_id, resource in translated["Resources"].items():
        if resource["Type"] not in TAGGABLE:
            continue
        tags = {tag["Key"]: tag["Value"] for tag in resource["Properties"].get("Tags", [])}
        assert tags.get("Project") == "servalsheets-backup", logical_id
        assert tags.get("Environment") == {"Ref": "Environment"}, logical_id


def test_outputs_name_every_arn_and_name_a_user_needs(source: dict[str, Any]) -> None:
    outputs = source["Outputs"]
    expected = {
        "BackupBucketName",
        "BackupBucketArn",
        "BackupKeyArn",
        "BackupKeyAliasName",
        "StateTableName",
        "StateTableArn",
        "NotificationTopicArn",
        "NotificationTopicName",
        "SharedLayerArn",
        "DashboardName",
    }
    for machine in STATE_MACHINES:
        expected |= {f"{machine}Arn", f"{machine}Name"}
    for function in FUNCTION_FOLDERS:
        expected |= {f"{function}Arn", f"{function}Name"}
    assert expected <= set(outputs)
    for name, output in outputs.items():
        assert output.get("Description"), name
        value = output["Value"]
        target = value.get("Ref") or (value.get("Fn::GetAtt") or [None])[0]
        reference = re.fullmatch(r"\$\{(\w+)(\.Arn)?\}", sub_text(value) or "")
        if reference:
            target = reference.group(1)
        if target is not None and target not in source["Parameters"]:
            assert target in source["Resources"], name


# Every ElastiCache call the code makes, by the function that makes it (adapters/elasticache.py,
# component_snapshot.py, component_redis_restore.py); both modes, because one stack may use either.
ELASTICACHE_CALLS = {
    "SnapshotFunction": {
        "CreateSnapshot",
        "DescribeSnapshots",
        "CreateServerlessCacheSnapshot",
        "DescribeServerlessCacheSnapshots",
        "AddTagsToResource",
    },
    "ExportSnapshotFunction": {"CopySnapshot", "DescribeReplicationGroups", "ExportServerlessCacheSnapshot"},
    "IngestSnapshotFunction": {"DescribeServerlessCacheSnapshots"},
    "FinalizeBackupFunction": {
        "DescribeSnapshots",
        "DeleteSnapshot",
        "DescribeServerlessCacheSnapshots",
        "DeleteServerlessCacheSnapshot",
    },
    "RestoreRedisFunction": {
        "CreateReplicationGroup",
        "DescribeReplicationGroups",
        "CreateServerlessCache",
        "DescribeServerlessCaches",
        "AddTagsToResource",
    },
    "VerifyRestoreFunction": {"DescribeReplicationGroups", "DescribeServerlessCaches"},
    "RollbackRestoreFunction": {"DeleteReplicationGroup", "DeleteServerlessCache"},
}


@pytest.mark.parametrize("function", sorted(ELASTICACHE_CALLS))
def test_each_function_may_make_the_elasticache_calls_its_code_makes(
    translated: dict[str, Any], function: str
) -> None:
    granted = role_statements(translated, f"{function}Role")
    missing = [
        call
        for call in sorted(ELASTICACHE_CALLS[function])
        if not any(statement_grants(statement, f"elasticache:{call}") for statement in granted)
    ]
    assert missing == [], f"{function} lacks {missing}"

"""Deploy template.yaml into moto: translate with aws-sam-translator, then create each resource.

moto's CloudFormation skips or half-creates several resource types (see shared/local-aws.md),
so every resource is created through the service APIs from the translated template's own
values: the template stays the single source of truth for names, settings and wiring.
Resource types moto cannot enforce (bucket policies) are recorded as skipped.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from servalsheets_backup.adapters import aws

from ..deploy_check import require_deployable
from . import bucket_resources, network_resources
from .bucket_resources import replication_rules
from .intrinsics import LOCAL_ACCOUNT, NO_VALUE, Resolver, pseudo_parameters
from .lambda_runner import LambdaRunner
from .template_file import load_template

ACCOUNT = LOCAL_ACCOUNT
ARTIFACTS = "local-artifacts"
_REF_PATTERN = re.compile(r"\$\{([A-Za-z0-9]+)")


class _EmptyPolicyLoader:
    def load(self) -> dict[str, str]:
        return {}


def translate(
    template: dict[str, Any], parameters: dict[str, Any], region: str
) -> tuple[dict[str, Any], dict[str, str]]:
    """SAM -> CloudFormation offline; local CodeUri/DefinitionUri become S3 placeholders.

    Returns the translated template and a map placeholder key -> local path.
    """
    import os

    from samtranslator.translator.transform import transform

    os.environ.setdefault("AWS_DEFAULT_REGION", region)
    sam = copy.deepcopy(template)
    local_paths: dict[str, str] = {}
    for resource in sam.get("Resources", {}).values():
        properties = resource.get("Properties", {})
        for uri_field in ("CodeUri", "ContentUri", "DefinitionUri"):
            value = properties.get(uri_field)
            if isinstance(value, str) and not value.startswith("s3://"):
                key = value.strip("/").replace("/", "__")
                local_paths[key] = value
                properties[uri_field] = {"Bucket": ARTIFACTS, "Key": key}
    translated = transform(sam, parameters, _EmptyPolicyLoader())
    return translated, local_paths


@dataclass
class Deployment:
    """What was created: physical ids and attributes by logical id, plus what was skipped."""

    template: dict[str, Any]
    physical: dict[str, str] = field(default_factory=dict)
    attributes: dict[str, dict[str, str]] = field(default_factory=dict)
    properties: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    function_folders: dict[str, str] = field(default_factory=dict)

    def resources_of(self, resource_type: str) -> list[str]:
        """Logical ids of created resources of one type."""
        return [
            lid
            for lid, res in self.template["Resources"].items()
            if res["Type"] == resource_type and lid in self.physical
        ]


class LocalDeployer:
    """Creates the translated template's resources in moto, in dependency order."""

    def __init__(
        self,
        repo_root: Path,
        stack_name: str,
        parameters: dict[str, Any],
        region: str = "us-east-1",
    ) -> None:
        self.repo_root = repo_root
        self.stack_name = stack_name
        self.parameters = parameters
        self.region = region

    def deploy(self, runner: LambdaRunner) -> Deployment:
        """Check the parameters as CloudFormation would, then translate, resolve and create every
        resource in the deployer's Region; register handlers with ``runner``. Raises
        DeployCheckError naming what is wrong."""
        return self._in_region(self._deploy, runner)

    def _in_region(self, step: Callable[..., Deployment], *args: Any) -> Deployment:
        saved = os.environ.get("AWS_REGION")
        os.environ["AWS_REGION"] = self.region  # aws.client() picks the Region up per call
        try:
            return step(*args)
        finally:
            if saved is None:
                os.environ.pop("AWS_REGION", None)
            else:
                os.environ["AWS_REGION"] = saved

    def _deploy(self, runner: LambdaRunner, deployment: Deployment | None = None) -> Deployment:
        template = load_template(self.repo_root / "template.yaml")
        require_deployable(template, self.parameters, local_paths=True)
        parameters = self._parameters(template)
        translated, local_paths = translate(template, parameters, self.region)
        deployment = deployment or Deployment(translated)
        resolver = Resolver(
            parameters,
            self._pseudo(),
            translated.get("Conditions", {}),
            lambda logical, attribute: _attribute(deployment, logical, attribute),
            translated.get("Mappings", {}),
        )
        for logical_id in _order(translated["Resources"]):
            resource = translated["Resources"][logical_id]
            if "Condition" in resource and not resolver.condition(resource["Condition"]):
                continue
            properties = resolver.resolve(resource.get("Properties", {}))
            if logical_id in deployment.physical or logical_id in deployment.skipped:
                _update(deployment, logical_id, resource["Type"], properties)
                continue
            deployment.properties[logical_id] = properties
            if resource["Type"] not in _CREATORS:
                deployment.skipped[logical_id] = resource["Type"]
                continue
            self.create(Site(self, deployment, local_paths, runner), logical_id, resource["Type"], properties)
        for name, output in translated.get("Outputs", {}).items():
            if "Condition" in output and not resolver.condition(output["Condition"]):
                continue
            value = resolver.resolve(output["Value"])
            if value is not NO_VALUE:
                deployment.outputs[name] = value
        return deployment

    def update(self, deployment: Deployment, runner: LambdaRunner, parameters: dict[str, Any]) -> Deployment:
        """A stack update with changed ``parameters``, as far as a standby needs one: resources
        whose condition now holds are created and a bucket takes its new replication rules; any
        other property change of an existing resource is refused by name (this is not CloudFormation)."""
        self.parameters = {**self.parameters, **parameters}
        return self._in_region(self._deploy, runner, deployment)

    def create(self, site: Site, logical_id: str, resource_type: str, properties: dict[str, Any]) -> None:
        """Create one resource in moto and record its physical id and attributes."""
        created = _CREATORS[resource_type](site, logical_id, properties)
        site.deployment.physical[logical_id] = created.physical
        if created.attributes:
            site.deployment.attributes[logical_id] = created.attributes

    def _parameters(self, template: dict[str, Any]) -> dict[str, Any]:
        values = {name: spec.get("Default") for name, spec in template.get("Parameters", {}).items()}
        values.update(self.parameters)
        unknown = set(self.parameters) - set(template.get("Parameters", {}))
        if unknown:
            raise ValueError(f"unknown template parameters: {', '.join(sorted(unknown))}")
        for name, spec in template.get("Parameters", {}).items():
            if spec.get("Type") == "CommaDelimitedList" and isinstance(values.get(name), str):
                values[name] = [item for item in values[name].split(",") if item] if values[name] else [""]
        return values

    def _pseudo(self) -> dict[str, str]:
        return pseudo_parameters(self.region, self.stack_name)

    def generated_name(self, logical_id: str, limit: int = 64, lower: bool = False) -> str:
        """A physical name like CloudFormation's: stack-LogicalId-suffix."""
        name = f"{self.stack_name}-{logical_id}"[: limit - 7] + "-local1"
        return name.lower() if lower else name


def _update(deployment: Deployment, logical_id: str, resource_type: str, properties: dict[str, Any]) -> None:
    """Apply the one in-place change the local deployer supports: a bucket's replication rules."""
    before = deployment.properties.get(logical_id, {})
    if before == properties:
        return
    changed = sorted(k for k in before.keys() | properties.keys() if before.get(k) != properties.get(k))
    if resource_type == "AWS::S3::Bucket" and changed == ["ReplicationConfiguration"]:
        rules = replication_rules(properties["ReplicationConfiguration"])
        aws.client("s3").put_bucket_replication(
            Bucket=deployment.physical[logical_id], ReplicationConfiguration=rules
        )
    elif resource_type in _CREATORS:
        raise ValueError(
            f"the local deployer cannot update {logical_id} ({resource_type}): {', '.join(changed)} changed"
        )
    deployment.properties[logical_id] = properties


def _references(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "Ref" and isinstance(value, str):
                found.add(value)
            elif key == "Fn::GetAtt":
                found.add(value[0] if isinstance(value, list) else str(value).split(".")[0])
            elif key == "Fn::Sub":
                text = value if isinstance(value, str) else value[0]
                found.update(_REF_PATTERN.findall(text))
                found |= _references(value)
            elif key == "DependsOn":
                found.update([value] if isinstance(value, str) else value)
            else:
                found |= _references(value)
    elif isinstance(node, list):
        for item in node:
            found |= _references(item)
    return found


def _order(resources: dict[str, Any]) -> list[str]:
    ordered: list[str] = []
    visiting: set[str] = set()

    def visit(logical_id: str) -> None:
        if logical_id in ordered or logical_id not in resources:
            return
        if logical_id in visiting:
            raise ValueError(f"circular dependency at {logical_id}")
        visiting.add(logical_id)
        for dependency in sorted(_references(resources[logical_id])):
            visit(dependency)
        visiting.discard(logical_id)
        ordered.append(logical_id)

    for logical_id in resources:
        visit(logical_id)
    return ordered


def _attribute(deployment: Deployment, logical_id: str, attribute: str | None) -> Any:
    if logical_id not in deployment.physical:
        return f"unresolved:{logical_id}"  # a resource moto cannot create (skipped or conditional)
    if attribute is None:
        return deployment.physical[logical_id]
    return deployment.attributes.get(logical_id, {}).get(attribute, f"unresolved:{logical_id}.{attribute}")


# -- creators ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Site:
    """What every creator needs: the deployer, the deployment so far, code paths and the runner."""

    deployer: LocalDeployer
    deployment: Deployment
    local_paths: dict[str, str]
    runner: LambdaRunner

    @property
    def region(self) -> str:
        """The deployment's region."""
        return self.deployer.region

    @property
    def repo_root(self) -> Path:
        """The repository the template and functions come from."""
        return self.deployer.repo_root

    def generated_name(self, logical_id: str, limit: int = 64, lower: bool = False) -> str:
        """A physical name like CloudFormation's (see LocalDeployer.generated_name)."""
        return self.deployer.generated_name(logical_id, limit, lower)


@dataclass(frozen=True)
class Created:
    """A created resource: its physical id (what Ref returns) and its Fn::GetAtt attributes."""

    physical: str
    attributes: dict[str, Any] = field(default_factory=dict)


Creator = Callable[[Site, str, dict[str, Any]], Created]


def _kms_key(site: Site, lid: str, p: dict[str, Any]) -> Created:
    kms = aws.client("kms")
    key = kms.create_key(
        Description=p.get("Description", lid),
        Policy=json.dumps(p.get("KeyPolicy", {})),
        MultiRegion=bool(p.get("MultiRegion")),
    )
    key_id = key["KeyMetadata"]["KeyId"]
    if p.get("EnableKeyRotation"):
        kms.enable_key_rotation(KeyId=key_id)
    return Created(key_id, {"Arn": key["KeyMetadata"]["Arn"], "KeyId": key_id})


def _kms_replica_key(site: Site, lid: str, p: dict[str, Any]) -> Created:
    """ReplicateKey, asked of the primary key's Region, into this deployment's Region."""
    primary = str(p["PrimaryKeyArn"])
    source = aws.client_in("kms", primary.split(":")[3])
    # moto 5.2.5's ReplicateKey wants the key id (an ARN raises KeyError); AWS takes either
    replica = source.replicate_key(
        KeyId=primary.rsplit("/", 1)[1], ReplicaRegion=site.region, Policy=json.dumps(p.get("KeyPolicy", {}))
    )["ReplicaKeyMetadata"]
    return Created(replica["KeyId"], {"Arn": replica["Arn"], "KeyId": replica["KeyId"]})


def _kms_alias(site: Site, lid: str, p: dict[str, Any]) -> Created:
    aws.client("kms").create_alias(AliasName=p["AliasName"], TargetKeyId=p["TargetKeyId"])
    return Created(p["AliasName"])


def _bucket(site: Site, lid: str, p: dict[str, Any]) -> Created:
    name = p.get("BucketName") or site.generated_name(lid, 63, lower=True)
    bucket_resources.create_bucket(name, site.region, p)
    return Created(name, {"Arn": f"arn:aws:s3:::{name}", "DomainName": f"{name}.s3.amazonaws.com"})


def _table(site: Site, lid: str, p: dict[str, Any]) -> Created:
    name = p.get("TableName") or site.generated_name(lid)
    aws.client("dynamodb").create_table(
        TableName=name,
        KeySchema=p["KeySchema"],
        AttributeDefinitions=p["AttributeDefinitions"],
        BillingMode=p.get("BillingMode", "PAY_PER_REQUEST"),
    )
    return Created(name, {"Arn": f"arn:aws:dynamodb:{site.region}:{ACCOUNT}:table/{name}"})


def _topic(site: Site, lid: str, p: dict[str, Any]) -> Created:
    name = p.get("TopicName") or site.generated_name(lid, 256)
    arn = aws.client("sns").create_topic(Name=name)["TopicArn"]
    return Created(arn, {"TopicName": name, "TopicArn": arn})


def _role(site: Site, lid: str, p: dict[str, Any]) -> Created:
    name = p.get("RoleName") or site.generated_name(lid)
    role = aws.client("iam").create_role(
        RoleName=name, AssumeRolePolicyDocument=json.dumps(p.get("AssumeRolePolicyDocument", {}))
    )
    return Created(name, {"Arn": role["Role"]["Arn"], "RoleId": role["Role"]["RoleId"]})


def _log_group(site: Site, lid: str, p: dict[str, Any]) -> Created:
    name = p.get("LogGroupName") or site.generated_name(lid, 512)
    logs = aws.client("logs")
    logs.create_log_group(logGroupName=name)
    if "RetentionInDays" in p:
        logs.put_retention_policy(logGroupName=name, retentionInDays=int(p["RetentionInDays"]))
    return Created(name, {"Arn": f"arn:aws:logs:{site.region}:{ACCOUNT}:log-group:{name}:*"})


def _layer(site: Site, lid: str, p: dict[str, Any]) -> Created:
    return Created(f"arn:aws:lambda:{site.region}:{ACCOUNT}:layer:{p.get('LayerName', lid)}:1")


def _function(site: Site, lid: str, p: dict[str, Any]) -> Created:
    import io
    import zipfile

    name = p.get("FunctionName") or site.generated_name(lid)
    folder = Path(site.local_paths[p["Code"]["S3Key"]]).name
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("app.py", (site.repo_root / "functions" / folder / "app.py").read_text())
    environment = {k: str(v) for k, v in p.get("Environment", {}).get("Variables", {}).items()}
    response = aws.client("lambda").create_function(
        FunctionName=name,
        Runtime=p.get("Runtime", "python3.12"),
        Role=p["Role"],
        Handler=p["Handler"],
        Code={"ZipFile": archive.getvalue()},
        Timeout=int(p.get("Timeout", 3)),
        MemorySize=int(p.get("MemorySize", 128)),
        Environment={"Variables": environment},
        Architectures=p.get("Architectures", ["x86_64"]),
    )
    site.runner.register(name, folder)
    site.deployment.function_folders[lid] = folder
    return Created(name, {"Arn": response["FunctionArn"]})


def _state_machine(site: Site, lid: str, p: dict[str, Any]) -> Created:
    name = p.get("StateMachineName") or site.generated_name(lid, 80)
    definition = (site.repo_root / site.local_paths[p["DefinitionS3Location"]["Key"]]).read_text()
    for key, value in p.get("DefinitionSubstitutions", {}).items():
        definition = definition.replace("${" + key + "}", str(value))
    leftover = re.findall(r"\$\{[A-Za-z0-9]+\}", definition)
    if leftover:
        raise ValueError(f"{lid}: DefinitionSubstitutions do not cover {sorted(set(leftover))}")
    arn = aws.client("stepfunctions").create_state_machine(
        name=name,
        definition=definition,
        roleArn=p["RoleArn"],
        type=p.get("StateMachineType", "STANDARD"),
    )["stateMachineArn"]
    return Created(arn, {"Name": name, "Arn": arn})


def _alarm(site: Site, lid: str, p: dict[str, Any]) -> Created:
    name = p.get("AlarmName") or site.generated_name(lid, 255)
    args = {
        k: v
        for k, v in p.items()
        if k
        in (
            "AlarmDescription",
            "ActionsEnabled",
            "OKActions",
            "AlarmActions",
            "InsufficientDataActions",
            "MetricName",
            "Namespace",
            "Statistic",
            "ExtendedStatistic",
            "Dimensions",
            "Period",
            "Unit",
            "EvaluationPeriods",
            "DatapointsToAlarm",
            "Threshold",
            "ComparisonOperator",
            "TreatMissingData",
            "Metrics",
        )
    }
    for number in ("Period", "EvaluationPeriods", "DatapointsToAlarm"):
        if number in args:
            args[number] = int(args[number])
    if "Threshold" in args:
        args["Threshold"] = float(args["Threshold"])
    aws.client("cloudwatch").put_metric_alarm(AlarmName=name, **args)
    return Created(name, {"Arn": f"arn:aws:cloudwatch:{site.region}:{ACCOUNT}:alarm:{name}"})


def _dashboard(site: Site, lid: str, p: dict[str, Any]) -> Created:
    name = p.get("DashboardName") or site.generated_name(lid)
    aws.client("cloudwatch").put_dashboard(DashboardName=name, DashboardBody=p["DashboardBody"])
    return Created(name)


def _security_group(site: Site, lid: str, p: dict[str, Any]) -> Created:
    group_id, attributes = network_resources.create_security_group(site.generated_name(lid), p)
    return Created(group_id, attributes)


def _vpc_endpoint(site: Site, lid: str, p: dict[str, Any]) -> Created:
    endpoint_id, attributes = network_resources.create_vpc_endpoint(p)
    return Created(endpoint_id, attributes)


def _schedule(site: Site, lid: str, p: dict[str, Any]) -> Created:
    # EventBridge schedules never fire in moto: the drill starts what they would start itself.
    return Created(p.get("Name") or site.generated_name(lid))


_CREATORS: dict[str, Creator] = {
    "AWS::KMS::Key": _kms_key,
    "AWS::KMS::Alias": _kms_alias,
    "AWS::KMS::ReplicaKey": _kms_replica_key,
    "AWS::S3::Bucket": _bucket,
    "AWS::DynamoDB::Table": _table,
    "AWS::SNS::Topic": _topic,
    "AWS::IAM::Role": _role,
    "AWS::Logs::LogGroup": _log_group,
    "AWS::Lambda::LayerVersion": _layer,
    "AWS::Lambda::Function": _function,
    "AWS::StepFunctions::StateMachine": _state_machine,
    "AWS::CloudWatch::Alarm": _alarm,
    "AWS::CloudWatch::Dashboard": _dashboard,
    "AWS::Scheduler::Schedule": _schedule,
    "AWS::EC2::SecurityGroup": _security_group,
    "AWS::EC2::VPCEndpoint": _vpc_endpoint,
}

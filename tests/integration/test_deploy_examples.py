"""The samconfig examples deploy through the drill's local deployer into moto, and a stack with
VpcEndpoints=create gets its endpoints, their policies and their security group (issue #17)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from moto import mock_aws

from servalsheets_backup.adapters import aws
from servalsheets_backup_local.deploy_check import DeployCheckError, load_parameters
from servalsheets_backup_local.testing.environment import REPO_ROOT
from servalsheets_backup_local.testing.lambda_runner import LambdaRunner
from servalsheets_backup_local.testing.local_deploy import Deployment, LocalDeployer

pytestmark = pytest.mark.integration

NOT_EMULATED = {
    "AWS::S3::BucketPolicy",
    "AWS::SNS::TopicPolicy",
    "AWS::SNS::Subscription",
    "AWS::IAM::ManagedPolicy",
}
EXAMPLES = sorted((REPO_ROOT / "deploy").glob("samconfig.*.toml"))


def _network() -> dict[str, str]:
    """A VPC in moto, standing in for the example's: two subnets, a route table, a group."""
    ec2 = aws.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.20.{n}.0/24", AvailabilityZone=f"us-east-1{zone}")[
            "Subnet"
        ]["SubnetId"]
        for n, zone in ((1, "a"), (2, "b"))
    ]
    table = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    group = ec2.create_security_group(GroupName="functions", Description="functions", VpcId=vpc)["GroupId"]
    return {"VpcId": vpc, "SubnetIds": ",".join(subnets), "RouteTableIds": table, "SecurityGroupIds": group}


def _deploy(parameters: dict[str, Any]) -> Deployment:
    return LocalDeployer(REPO_ROOT, "ssbk-first-deploy", parameters).deploy(
        LambdaRunner(REPO_ROOT / "functions")
    )


@pytest.fixture
def moto_account() -> Any:
    with mock_aws():
        aws.reset_clients()
        yield
    aws.reset_clients()


@pytest.mark.parametrize("example", EXAMPLES, ids=[path.stem for path in EXAMPLES])
def test_each_example_deploys_in_moto(moto_account: Any, example: Path) -> None:
    parameters = load_parameters(example)
    if "SubnetIds" in parameters:  # only the network ids are the example's own placeholders
        parameters.update(_network())
    deployment = _deploy(parameters)
    assert len(deployment.resources_of("AWS::Lambda::Function")) == 20
    assert len(deployment.resources_of("AWS::StepFunctions::StateMachine")) == 2
    # What moto cannot enforce is recorded, never silently dropped (shared/local-aws.md).
    assert set(deployment.skipped.values()) <= NOT_EMULATED, set(deployment.skipped.values()) - NOT_EMULATED


def test_the_endpoint_option_creates_endpoints_with_their_policies(moto_account: Any) -> None:
    network = _network()
    parameters = {**load_parameters(REPO_ROOT / "deploy" / "samconfig.elasticache.toml"), **network}
    deployment = _deploy(parameters)
    endpoints = aws.client("ec2").describe_vpc_endpoints()["VpcEndpoints"]
    by_service = {endpoint["ServiceName"].rsplit(".", 1)[1]: endpoint for endpoint in endpoints}
    assert set(by_service) == {"s3", "dynamodb", "kms", "secretsmanager", "ssm", "sns", "elasticache", "xray"}
    group = deployment.physical["VpcEndpointSecurityGroup"]
    for service, endpoint in by_service.items():
        policy = json.loads(endpoint["PolicyDocument"])
        assert policy["Statement"][0]["Condition"] == {
            "StringEquals": {"aws:PrincipalAccount": "123456789012"}
        }
        if service in ("s3", "dynamodb"):
            assert endpoint["RouteTableIds"] == [network["RouteTableIds"]]
        else:
            assert sorted(endpoint["SubnetIds"]) == sorted(network["SubnetIds"].split(","))
            assert [g["GroupId"] for g in endpoint["Groups"]] == [group]
    (described,) = aws.client("ec2").describe_security_groups(GroupIds=[group])["SecurityGroups"]
    (ingress,) = described["IpPermissions"]
    assert (ingress["FromPort"], ingress["ToPort"]) == (443, 443)
    assert ingress["UserIdGroupPairs"][0]["GroupId"] == network["SecurityGroupIds"]


def test_the_default_parameter_file_fails_naming_the_missing_answers(moto_account: Any) -> None:
    defaults = load_parameters(REPO_ROOT / "samconfig.toml")  # the guided deploy's starting point
    assert defaults == {}
    with pytest.raises(DeployCheckError) as refused:
        _deploy(defaults)
    message = str(refused.value)
    for parameter in ("RedisMode", "TokenStorePath", "TokenKeySecretName", "RestoreTestRedisUrlSecretName"):
        assert parameter in message
    assert aws.client("lambda").list_functions()["Functions"] == []  # nothing was created

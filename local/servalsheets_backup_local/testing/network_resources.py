"""The VPC endpoints and their security group (VpcEndpoints=create), created in moto's EC2.

moto keeps endpoints, their policies and route table associations, so a test can read back what
the template asked for; it routes nothing (there is no network to route).
"""

from __future__ import annotations

import json
from typing import Any

from servalsheets_backup.adapters import aws


def create_security_group(name: str, properties: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Create the group with its ingress rules; returns (group id, attributes)."""
    ec2 = aws.client("ec2")
    group = ec2.create_security_group(
        GroupName=name, Description=properties["GroupDescription"], VpcId=properties["VpcId"]
    )
    group_id = group["GroupId"]
    ingress = [
        {
            "IpProtocol": rule["IpProtocol"],
            "FromPort": int(rule["FromPort"]),
            "ToPort": int(rule["ToPort"]),
            "UserIdGroupPairs": [{"GroupId": rule["SourceSecurityGroupId"]}],
        }
        for rule in properties.get("SecurityGroupIngress", [])
    ]
    if ingress:
        ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=ingress)
    return group_id, {"GroupId": group_id, "VpcId": properties["VpcId"]}


def create_vpc_endpoint(properties: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Create an interface or gateway endpoint as the template describes it."""
    args: dict[str, Any] = {
        "VpcEndpointType": properties.get("VpcEndpointType", "Gateway"),
        "VpcId": properties["VpcId"],
        "ServiceName": properties["ServiceName"],
    }
    for name in ("SubnetIds", "SecurityGroupIds", "RouteTableIds", "PrivateDnsEnabled"):
        if name in properties:
            args[name] = properties[name]
    if "PolicyDocument" in properties:
        args["PolicyDocument"] = json.dumps(properties["PolicyDocument"])
    endpoint = aws.client("ec2").create_vpc_endpoint(**args)["VpcEndpoint"]
    return endpoint["VpcEndpointId"], {"Id": endpoint["VpcEndpointId"]}

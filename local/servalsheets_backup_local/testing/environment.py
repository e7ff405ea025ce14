"""The local environment the drill and the workflow tests run in, on 127.0.0.1 only.

A moto server stands in for AWS (with real Step Functions execution and the project's handlers
run in-process), two real redis-server processes play production and restore target, and the
stack is deployed from template.yaml. ``close()`` stops everything by pid, also on failure.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from servalsheets_backup.adapters import aws
from servalsheets_backup.observability import CollectingMetrics
from servalsheets_backup.services import Services
from servalsheets_backup.settings import Settings

from .app_standin import AppStandIn
from .lambda_runner import LambdaRunner
from .local_deploy import Deployment, LocalDeployer
from .moto_server import MotoServer, start_moto
from .redis_server import RedisServer, start_redis

REPO_ROOT = Path(__file__).resolve().parents[3]
# bandit B105: names of the drill's Secrets Manager secrets, not their values.
REDIS_SECRET = "servalsheets/drill/redis-url"  # nosec B105
TARGET_REDIS_SECRET = "servalsheets/drill/restore-test-redis-url"  # nosec B105
TOKEN_KEY_SECRET = "servalsheets/drill/token-key"  # nosec B105
ENV_SECRET = "servalsheets/drill/env"  # nosec B105
PARAMETER_PATH = "/servalsheets/drill/"


@dataclass
class LocalEnvironment:
    """Everything started for one drill or workflow test; close() undoes it."""

    workdir: Path
    moto: MotoServer
    production: RedisServer
    target: RedisServer
    deployment: Deployment
    runner: LambdaRunner
    metrics: CollectingMetrics = field(default_factory=CollectingMetrics)
    app: AppStandIn | None = None
    saved_env: dict[str, str | None] = field(default_factory=dict)
    undo: list[Callable[[], None]] = field(default_factory=list)
    region: str = "us-east-1"
    parameters: dict[str, Any] = field(default_factory=dict)  # the stack's parameter answers

    @property
    def token_path(self) -> Path:
        """The production token store file."""
        return self.workdir / "servalsheets" / "tokens.encrypted"

    @property
    def credentials_path(self) -> Path:
        """The production credentials.json."""
        return self.workdir / "servalsheets" / "credentials.json"

    def schedules(self) -> dict[str, dict[str, Any]]:
        """Deployed EventBridge schedules by logical id: expression, state, target and input."""
        found: dict[str, dict[str, Any]] = {}
        for logical_id in self.deployment.resources_of("AWS::Scheduler::Schedule"):
            props = self.deployment.properties[logical_id]
            target = props["Target"]
            found[logical_id] = {
                "expression": props.get("ScheduleExpression"),
                "state": props.get("State"),
                "target": target["Arn"],
                "input": json.loads(target.get("Input") or "{}"),
            }
        return found

    def fire_schedule(self, logical_id: str) -> dict[str, Any]:
        """Do what EventBridge Scheduler does: start the target with the schedule's input."""
        schedule = self.schedules()[logical_id]
        if ":stateMachine:" in schedule["target"]:
            description = self.wait(self._start_arn(schedule["target"], schedule["input"]))
            return description
        response = self.client("lambda").invoke(
            FunctionName=schedule["target"], Payload=json.dumps(schedule["input"]).encode()
        )
        return {
            "status": "FAILED" if response.get("FunctionError") else "SUCCEEDED",
            "output": response["Payload"].read().decode(),
        }

    def _start_arn(self, state_machine_arn: str, payload: dict[str, Any]) -> str:
        import uuid

        response = self.client("stepfunctions").start_execution(
            stateMachineArn=state_machine_arn,
            name=f"schedule-{uuid.uuid4().hex[:12]}",
            input=json.dumps(payload),
        )
        return str(response["executionArn"])

    def output(self, name: str) -> str:
        """A stack output, e.g. BackupBucketName."""
        return str(self.deployment.outputs[name])

    def state_machine_arn(self, logical_id: str) -> str:
        """ARN of a state machine by logical id."""
        return self.deployment.physical[logical_id]

    def function_name(self, logical_id: str) -> str:
        """Physical name of a function by logical id."""
        return self.deployment.physical[logical_id]

    def function_env(self, logical_id: str) -> dict[str, str]:
        """The environment the template gives one function."""
        props = self.deployment.properties[logical_id]
        return {k: str(v) for k, v in props.get("Environment", {}).get("Variables", {}).items()}

    def services(self) -> Services:
        """Services configured like the given function (defaults to the restore function)."""
        environment = {**os.environ, **self.function_env("PrepareRestoreFunction"), "AWS_REGION": self.region}
        return Services(Settings.from_env(environment), self.metrics)

    def client(self, service: str) -> Any:
        """A boto3 client for the local endpoint, in this deployment's Region."""
        return aws.client_in(service, self.region)

    def start_execution(self, logical_id: str, payload: dict[str, Any], name: str | None = None) -> str:
        """Start a state machine execution; returns its ARN."""
        sfn = self.client("stepfunctions")
        import uuid

        response = sfn.start_execution(
            stateMachineArn=self.state_machine_arn(logical_id),
            name=name or f"{logical_id}-{uuid.uuid4().hex[:12]}",
            input=json.dumps(payload),
        )
        return str(response["executionArn"])

    def wait(self, execution_arn: str, timeout: float = 300) -> dict[str, Any]:
        """Follow an execution until it ends; returns describe_execution's answer."""
        sfn = self.client("stepfunctions")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            description = sfn.describe_execution(executionArn=execution_arn)
            if description["status"] != "RUNNING":
                return dict(description)
            time.sleep(0.05)
        raise TimeoutError(f"execution {execution_arn} still running after {timeout}s")

    def run(self, logical_id: str, payload: dict[str, Any], timeout: float = 300) -> dict[str, Any]:
        """Start an execution and wait for it."""
        return self.wait(self.start_execution(logical_id, payload), timeout)

    def history(self, execution_arn: str) -> list[dict[str, Any]]:
        """The execution's events."""
        sfn = self.client("stepfunctions")
        events: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"executionArn": execution_arn, "maxResults": 1000}
            if token:
                kwargs["nextToken"] = token
            page = sfn.get_execution_history(**kwargs)
            events.extend(page["events"])
            token = page.get("nextToken")
            if not token:
                return events

    def cap_wait_states(self, seconds: float) -> None:
        """Make every Wait state of the local Step Functions last at most ``seconds`` (until close).

        For local runs whose stand-ins finish at once: a schedule's 30 s poll interval then costs
        ``seconds``. The number of polls, and so the path through the state machine, is unchanged.
        """
        from moto.stepfunctions.parser.asl.component.state.wait.wait_function.wait_function import (
            WaitFunction,
        )

        original = WaitFunction._wait_interval

        def capped(function: Any, env: Any, wait_seconds: int) -> None:
            time.sleep(min(float(wait_seconds), seconds))

        WaitFunction._wait_interval = capped  # type: ignore[method-assign,assignment]
        self.undo.append(lambda: setattr(WaitFunction, "_wait_interval", original))

    def close(self) -> None:
        """Stop every process this environment started and restore the process environment."""
        from servalsheets_backup.handler_support import set_services_factory

        while self.undo:
            self.undo.pop()()
        set_services_factory(None)
        self.runner.uninstall()
        if self.app is not None:
            self.app.stop()
        for server in (self.production, self.target):
            server.stop()
        self.moto.stop()
        for name, value in self.saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        aws.reset_clients()
        shutil.rmtree(self.workdir, ignore_errors=True)


# ElastiCache modes need subnets (template Rule ElastiCacheModeNeedsVpc). moto's Lambda attaches
# no function to a network, so ids shaped like real ones are enough for a local deployment.
STAND_IN_NETWORK = {"SubnetIds": "subnet-0d1a2b3c4d5e6f708", "SecurityGroupIds": "sg-0d1a2b3c4d5e6f708"}


def drill_parameters(workdir: Path) -> dict[str, Any]:
    """Template parameter values for a local deployment."""
    servalsheets = workdir / "servalsheets"
    return {
        "Environment": "drill",
        "RedisMode": "logical",
        "RedisUrlSecretName": REDIS_SECRET,
        "TokenStorePath": str(servalsheets / "tokens.encrypted"),
        "TokenKeySecretName": TOKEN_KEY_SECRET,
        "ConfigSecretNames": ENV_SECRET,
        "ConfigParameterPath": PARAMETER_PATH.rstrip("/"),  # the template refuses a trailing slash
        "ConfigFiles": str(servalsheets / "credentials.json"),
        "RestoreTestRedisUrlSecretName": TARGET_REDIS_SECRET,
        "RestoreTestSecretPrefix": "restore-test/",
        "RestoreTestTokenPath": str(workdir / "restore-test" / "tokens.encrypted"),
    }


APP_ISSUER = "https://servalsheets.example.com"


def start_environment(
    budget_ms: int = 900_000, extra_parameters: dict[str, Any] | None = None, with_app: bool = False
) -> LocalEnvironment:
    """Start moto, two redis-servers, deploy the template; always cleans up if start-up fails."""
    workdir = Path(tempfile.mkdtemp(prefix="ssbk-drill-"))
    (workdir / "servalsheets").mkdir(mode=0o700)
    started: list[Any] = []
    saved = {
        name: os.environ.get(name)
        for name in (
            "AWS_ENDPOINT_URL",
            "MOTO_PORT",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_DEFAULT_REGION",
        )
    }
    try:
        moto = start_moto(execute_state_machines=True)
        started.append(moto)
        os.environ.update(
            {
                "AWS_ENDPOINT_URL": moto.endpoint,
                "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_ACCESS_KEY_ID": "drill",
                # bandit B105: a dummy credential for the local moto server on 127.0.0.1.
                "AWS_SECRET_ACCESS_KEY": "drill",  # nosec B105
            }
        )
        aws.reset_clients()
        production, target = start_redis(), start_redis()
        started += [production, target]
        app = AppStandIn(production.url, APP_ISSUER).start() if with_app else None
        if app is not None:
            started.append(app)
            extra_parameters = {
                "ApplicationUrl": app.url,
                "OAuthIssuer": APP_ISSUER,
                **(extra_parameters or {}),
            }
        runner = LambdaRunner(REPO_ROOT / "functions", budget_ms)
        # Local-only switches: fault injection, and literal redis:// targets on loopback.
        runner.extra_env = {
            "AWS_ENDPOINT_URL": moto.endpoint,
            "ALLOW_FAULT_INJECTION": "true",
            "ALLOW_LITERAL_REDIS_URL": "true",
        }
        runner.install()
        parameters = {**drill_parameters(workdir), **(extra_parameters or {})}
        deployment = LocalDeployer(REPO_ROOT, "servalsheets-backup-drill", parameters).deploy(runner)
        environment = LocalEnvironment(
            workdir,
            moto,
            production,
            target,
            deployment,
            runner,
            app=app,
            saved_env=saved,
            parameters=parameters,
        )
        _install_services_factory(environment)
        _create_application_secrets(environment)
        return environment
    except BaseException:
        for item in reversed(started):
            item.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        raise


def _install_services_factory(environment: LocalEnvironment) -> None:
    from servalsheets_backup.handler_support import set_services_factory

    set_services_factory(lambda: Services(Settings.from_env(), environment.metrics))


def _create_application_secrets(environment: LocalEnvironment) -> None:
    """The secrets the stack's parameters name: the Redis URLs and the token store key."""
    manager = environment.client("secretsmanager")
    manager.create_secret(
        Name=REDIS_SECRET, SecretString=json.dumps({"REDIS_URL": environment.production.url})
    )
    manager.create_secret(
        Name=TARGET_REDIS_SECRET, SecretString=json.dumps({"REDIS_URL": environment.target.url})
    )
    manager.create_secret(
        Name=TOKEN_KEY_SECRET, SecretString=json.dumps({"ENCRYPTION_KEY": secrets.token_hex(32)})
    )

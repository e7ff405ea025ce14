"""Run the project's real Lambda handlers in-process whenever moto invokes a function.

moto's Lambda backend needs Docker to run code. Patching
``moto.awslambda.models.LambdaFunction._invoke_lambda`` (see shared/local-aws.md) lets direct
invokes and Step Functions Task states call ``functions/<folder>/app.py`` here, with the
function's environment variables from the template applied for the duration of the call.
Errors come back in Lambda's shape, so Retry/Catch match on the Python exception class name.
"""

from __future__ import annotations

import importlib.util
import json
import os
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

_ENV_LOCK = threading.RLock()


@dataclass
class InvocationContext:
    """A Lambda context with a configurable time budget."""

    function_name: str
    aws_request_id: str
    budget_ms: int
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = ""
    _started: float = field(default_factory=lambda: __import__("time").monotonic())

    def get_remaining_time_in_millis(self) -> int:
        """Budget minus time spent so far."""
        import time

        return max(0, int(self.budget_ms - (time.monotonic() - self._started) * 1000))


@dataclass
class Invocation:
    """One recorded call (the drill reports steps and durations from these)."""

    function: str
    seconds: float
    error: str | None


class LambdaRunner:
    """Maps moto function names to handler folders and runs them in this process."""

    def __init__(self, functions_dir: Path, budget_ms: int = 900_000) -> None:
        self.functions_dir = functions_dir
        self.budget_ms = budget_ms
        self.folders: dict[str, str] = {}
        self.extra_env: dict[str, str] = {}
        self.invocations: list[Invocation] = []
        self.before_invoke: Callable[[str, dict[str, Any]], None] | None = None
        self._modules: dict[str, ModuleType] = {}
        self._original: Any = None

    def register(self, function_name: str, folder: str) -> None:
        """Run ``functions/<folder>/app.py`` when ``function_name`` is invoked."""
        self.folders[function_name] = folder

    def module(self, folder: str) -> ModuleType:
        """The imported ``functions/<folder>/app.py`` module (tests patch its globals)."""
        self.handler(folder)
        return self._modules[folder]

    def handler(self, folder: str) -> Callable[[Any, Any], Any]:
        """The ``lambda_handler`` of one folder, imported once under a unique module name."""
        if folder not in self._modules:
            path = self.functions_dir / folder / "app.py"
            spec = importlib.util.spec_from_file_location(f"ssbk_function_{folder}", path)
            if spec is None or spec.loader is None:
                raise FileNotFoundError(path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            self._modules[folder] = module
        handler: Callable[[Any, Any], Any] = self._modules[folder].lambda_handler
        return handler

    def install(self) -> None:
        """Patch moto so every invocation runs here."""
        from moto.awslambda.models import LambdaFunction

        runner = self
        self._original = LambdaFunction._invoke_lambda

        def _invoke_lambda(function: Any, event: str | None = None) -> tuple[str, bool, str]:
            # Lambda sets AWS_REGION to the function's Region: clients then talk to that Region
            environment = {**function.environment_vars, "AWS_REGION": function.region}
            return runner.invoke(function.function_name, environment, event)

        LambdaFunction._invoke_lambda = _invoke_lambda  # type: ignore[method-assign,assignment]

    def uninstall(self) -> None:
        """Undo the patch."""
        if self._original is not None:
            from moto.awslambda.models import LambdaFunction

            LambdaFunction._invoke_lambda = self._original  # type: ignore[method-assign]
            self._original = None

    def invoke(self, name: str, environment: dict[str, str], event: Any) -> tuple[str, bool, str]:
        """Run the handler for ``name``; returns (payload JSON, errored, logs) as moto expects."""
        import time
        import uuid

        folder = self.folders.get(name)
        if folder is None:
            return (
                json.dumps({"errorType": "ResourceNotFound", "errorMessage": f"no handler for {name}"}),
                True,
                "",
            )
        payload = json.loads(event) if isinstance(event, str | bytes) and event else (event or {})
        context = InvocationContext(name, str(uuid.uuid4()), self.budget_ms)
        started = time.monotonic()
        try:
            with _applied_env({**environment, **self.extra_env}):
                if self.before_invoke is not None:
                    self.before_invoke(folder, payload)
                result = self.handler(folder)(payload, context)
        except Exception as exc:  # the Lambda runtime reports any exception as a function error
            self.invocations.append(Invocation(folder, time.monotonic() - started, type(exc).__name__))
            body = {
                "errorType": type(exc).__name__,
                "errorMessage": str(exc),
                "stackTrace": traceback.format_exception_only(type(exc), exc),
            }
            return json.dumps(body), True, ""
        self.invocations.append(Invocation(folder, time.monotonic() - started, None))
        return json.dumps(result, default=str), False, ""


@contextmanager
def _applied_env(values: dict[str, str]) -> Iterator[None]:
    with _ENV_LOCK:
        saved = {name: os.environ.get(name) for name in values}
        os.environ.update({k: str(v) for k, v in values.items()})
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

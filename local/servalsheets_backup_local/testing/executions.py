"""A finished Step Functions execution with its history, as the workflow and reliability tests read it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .environment import LocalEnvironment


@dataclass
class Run:
    """One finished execution: its description and its history."""

    arn: str
    description: dict[str, Any]
    events: list[dict[str, Any]]

    @property
    def status(self) -> str:
        """SUCCEEDED, FAILED, ..."""
        return str(self.description["status"])

    @property
    def error(self) -> str | None:
        """The execution's error name (FAILED runs)."""
        return self.description.get("error")

    @property
    def cause(self) -> str:
        """The execution's cause text (FAILED runs)."""
        return str(self.description.get("cause") or "")

    @property
    def message(self) -> str:
        """The Lambda errorMessage inside the cause when the cause is a Lambda error, else the cause."""
        try:
            return str(json.loads(self.cause).get("errorMessage", self.cause))
        except (ValueError, AttributeError):
            return self.cause

    @property
    def output(self) -> dict[str, Any]:
        """The parsed output (SUCCEEDED runs)."""
        return dict(json.loads(self.description["output"]))

    @property
    def entered(self) -> list[str]:
        """State names in the order they were entered."""
        return [e["stateEnteredEventDetails"]["name"] for e in self.events if "stateEnteredEventDetails" in e]

    def task_output(self, state: str) -> dict[str, Any]:
        """The result of the last successful task of ``state``."""
        current = None
        found: dict[str, Any] | None = None
        for event in self.events:
            if "stateEnteredEventDetails" in event:
                current = event["stateEnteredEventDetails"]["name"]
            details = event.get("lambdaFunctionSucceededEventDetails") or event.get(
                "taskSucceededEventDetails"
            )
            if details and current == state:
                found = json.loads(details["output"])
        if found is None:
            raise AssertionError(f"state {state!r} never succeeded; entered: {self.entered}")
        return found

    def task_input(self, state: str) -> dict[str, Any]:
        """The parameters of the first task scheduled in ``state``."""
        current = None
        for event in self.events:
            if "stateEnteredEventDetails" in event:
                current = event["stateEnteredEventDetails"]["name"]
            details = event.get("lambdaFunctionScheduledEventDetails")
            if details and current == state:
                return dict(json.loads(details["input"]))
            details = event.get("taskScheduledEventDetails")
            if details and current == state:
                return dict(json.loads(details["parameters"]))
        raise AssertionError(f"no task scheduled in {state!r}; entered: {self.entered}")

    def text(self) -> str:
        """Description and every history event as one string (for secret searches)."""
        return json.dumps({"description": self.description, "events": self.events}, default=str)

    def attempts(self, state: str) -> int:
        """How many times a Lambda task of ``state`` was scheduled (retries included)."""
        count, current = 0, None
        for event in self.events:
            if "stateEnteredEventDetails" in event:
                current = event["stateEnteredEventDetails"]["name"]
            if "lambdaFunctionScheduledEventDetails" in event and current == state:
                count += 1
        return count


def finish(env: LocalEnvironment, arn: str, timeout: float = 180) -> Run:
    """Wait for an execution and fetch its history."""
    return Run(arn, env.wait(arn, timeout), env.history(arn))

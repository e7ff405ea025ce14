"""Metrics and logging seams: Powertools (EMF) in Lambda, a collector for the CLI and tests.

Domain code logs through the standard ``logging`` module with structured ``extra`` fields and
records metrics through a :class:`MetricsSink`; handlers wire both to Powertools.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

NAMESPACE = "ServalSheets/Backup"
SERVICE = "servalsheets-backup"


class MetricsSink(Protocol):
    """Where business metrics go (one call per outcome)."""

    def put(self, name: str, unit: str, value: float, kind: str) -> None:
        """Record ``value`` for metric ``name`` with the ``Kind`` dimension."""
        ...


@dataclass
class CollectingMetrics:
    """Keeps metrics in memory (CLI ``--json`` output, tests, the drill report)."""

    points: list[dict[str, Any]] = field(default_factory=list)

    def put(self, name: str, unit: str, value: float, kind: str) -> None:
        """Append one data point."""
        self.points.append({"name": name, "unit": unit, "value": value, "kind": kind})

    def values(self, name: str, kind: str | None = None) -> list[float]:
        """Every value recorded for ``name`` (and ``kind``)."""
        return [p["value"] for p in self.points if p["name"] == name and (kind is None or p["kind"] == kind)]


class PowertoolsMetrics:
    """Emits each metric as its own EMF document so every point keeps its own Kind dimension."""

    def __init__(self) -> None:
        from aws_lambda_powertools import single_metric

        self._single_metric = single_metric

    def put(self, name: str, unit: str, value: float, kind: str) -> None:
        """Flush one EMF line with dimensions service and Kind."""
        from aws_lambda_powertools.metrics import MetricUnit

        with self._single_metric(
            name=name, unit=MetricUnit(unit), value=value, namespace=NAMESPACE
        ) as metric:
            metric.add_dimension(name="Kind", value=kind)

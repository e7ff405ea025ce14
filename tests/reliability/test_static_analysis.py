"""The static-analysis gates of `make test`: every exception is written down with its reason.

checkov and bandit themselves run as Makefile targets (`make checkov`, `make bandit`); these tests
keep their exceptions honest (each checkov skip in template.yaml and each ``# nosec`` in the code
carries a reason) and pin how the pip-audit gate judges a report, since the vulnerability service
is not reachable from every machine.
"""

from __future__ import annotations

import re

import pytest

from servalsheets_backup_local.testing.template_file import load_template

from .helpers import REPO_ROOT, TEMPLATE_PATH
from .pip_audit_gate import verdict

pytestmark = pytest.mark.reliability


def test_every_checkov_skip_in_the_template_gives_a_reason() -> None:
    resources = load_template(TEMPLATE_PATH)["Resources"]
    skips = [
        (name, skip)
        for name, resource in resources.items()
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", [])
    ]
    assert skips, "checkov exceptions are recorded in the resources' Metadata"
    for name, skip in skips:
        assert re.fullmatch(r"CKV_AWS_\d+", skip["id"]), (name, skip)
        assert len(skip.get("comment", "")) >= 30, f"{name}: {skip['id']} is skipped without a reason"


def test_every_template_wide_checkov_skip_gives_a_reason_and_is_documented() -> None:
    lines = (REPO_ROOT / ".checkov.yaml").read_text().splitlines()
    skipped = [line for line in lines if re.match(r"\s+- CKV_", line)]
    assert skipped, ".checkov.yaml lists the checks skipped for every function"
    documented = (REPO_ROOT / "docs" / "reliability.md").read_text()
    for line in skipped:
        check, _, reason = line.strip()[2:].partition("#")
        assert re.fullmatch(r"CKV_AWS_\d+", check.strip()), line
        assert len(reason.strip()) >= 30, f"{check.strip()} is skipped without a reason"
        assert f"| {check.strip()} " in documented, f"{check.strip()}: add it to docs/reliability.md's table"


def test_every_nosec_in_the_code_gives_a_reason() -> None:
    files = [
        path
        for folder in ("layers", "functions", "local")
        for path in sorted((REPO_ROOT / folder).rglob("*.py"))
    ]
    for path in files:
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines):
            if "# nosec" not in line:
                continue
            assert re.search(r"# nosec B\d{3}", line), f"{path}:{number + 1}: name the bandit test"
            nearby = "\n".join(lines[max(0, number - 16) : number + 1])
            assert "bandit B" in nearby or re.search(r"noqa: S\d+ - \w", line), (
                f"{path}:{number + 1}: say why, in a comment above"
            )


def _report(*dependencies: dict[str, object]) -> dict[str, object]:
    return {"dependencies": list(dependencies), "fixes": []}


def test_pip_audit_gate_fails_on_a_known_vulnerability() -> None:
    report = _report(
        {"name": "jinja2", "version": "2.4.1", "vulns": [{"id": "PYSEC-2014-8", "fix_versions": ["2.7.2"]}]},
        {"name": "boto3", "version": "1.44.8", "vulns": []},
    )
    status, message = verdict(report, strict=False)
    assert status == 1 and "jinja2 2.4.1: PYSEC-2014-8 (fixed in 2.7.2)" in message


def test_pip_audit_gate_passes_a_fully_audited_clean_report() -> None:
    status, message = verdict(_report({"name": "boto3", "version": "1.44.8", "vulns": []}), strict=True)
    assert (status, message) == (0, "pip-audit: 1 pinned dependencies audited, no known vulnerabilities")


def test_pip_audit_gate_never_calls_an_unaudited_run_clean() -> None:
    skipped = {"name": "boto3", "skip_reason": "Dependency not found on PyPI and could not be audited: boto3"}
    status, message = verdict(_report(skipped), strict=False)
    assert status == 0 and message.startswith("pip-audit: NOT AUDITED: 1 of 1 dependencies")
    assert "NOT a clean result" in message
    assert verdict(_report(skipped), strict=True)[0] == 1

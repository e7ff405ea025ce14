"""The documentation stays true to the code.

- docs/*-state-machine.md are what tools/asl_diagram.py makes of statemachines/*.asl.json today;
- every restore sample in events/ is a valid restore input, and the console cookbook in
  docs/operations.md shows each events/restore-*.json verbatim;
- every file and heading the docs point at exists.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from servalsheets_backup.cli import restore as cli_restore
from servalsheets_backup.cli.main import build_parser
from servalsheets_backup.format.redis_keys import OAUTH_KEY_PATTERNS
from servalsheets_backup.workflows.requests import RestoreRequest, parse

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[2]
EVENTS_DIR = REPO_ROOT / "events"
OPERATIONS = REPO_ROOT / "docs" / "operations.md"
DOC_FILES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
# Documents other engineers are writing: links to them are checked as soon as they exist.
PENDING_DOCS = {"docs/reliability.md", "docs/benchmarks.md"}
# What the template puts into the weekly restore test's input (the RestoreTest* parameters);
# the same names as the scratch target in events/restore-weekly-verification.json.
RESTORE_TEST_PARAMETERS = {
    "RestoreTestRedisUrlSecretName": "servalsheets/prod/restore-test/redis-url",
    "RestoreTestSecretPrefix": "restore-test/",
    "RestoreTestTokenPath": "/mnt/servalsheets/restore-test/tokens.encrypted",
}
_PLACEHOLDER = re.compile(r"\$\{(\w+)\}")


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("asl_diagram", REPO_ROOT / "tools" / "asl_diagram.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


asl_diagram = _generator()


# ---------------------------------------------------------------------------- diagrams
def test_generated_diagrams_are_current() -> None:
    pages = asl_diagram.render_all(REPO_ROOT)
    assert {path.name for path in pages} == {
        f"{asl.name.removesuffix('.asl.json')}-state-machine.md"
        for asl in (REPO_ROOT / "statemachines").glob("*.asl.json")
    }
    for path, text in pages.items():
        assert path.exists(), f"{path.relative_to(REPO_ROOT)} is missing: run `make diagrams`"
        assert path.read_text(encoding="utf-8") == text, (
            f"{path.relative_to(REPO_ROOT)} is out of date with the ASL: run `make diagrams`"
        )


@pytest.mark.parametrize(
    "asl", sorted((REPO_ROOT / "statemachines").glob("*.asl.json")), ids=lambda p: p.name
)
def test_diagram_draws_every_state_and_labels_every_catch(asl: Path) -> None:
    # Given a real state machine definition
    definition = json.loads(asl.read_text(encoding="utf-8"))
    # When it is drawn
    lines = asl_diagram.mermaid(definition)
    ids = asl_diagram._state_ids(list(definition["States"]))
    # Then every state is declared and every Catch clause is a labelled edge to its handler
    for name, state in definition["States"].items():
        declared = (f" as {ids[name]}", f" as {ids[name]} {{")  # a Map is a box around its iteration
        assert any(line.strip().endswith(declared) for line in lines), name
        for catcher in state.get("Catch", []):
            label = "catch " + ", ".join(catcher["ErrorEquals"])
            assert f"    {ids[name]} --> {ids[catcher['Next']]} : {label}" in lines, (name, label)


def test_a_map_is_drawn_as_a_box_around_its_iteration() -> None:
    definition = json.loads((REPO_ROOT / "statemachines" / "restore.asl.json").read_text(encoding="utf-8"))
    lines = [line.strip() for line in asl_diagram.mermaid(definition)]
    start = lines.index('state "Restore every shard" as s_restore_every_shard {')
    inner = lines[start + 1 : lines.index("}", start)]
    assert 'state "Restore shard chunks" as s_restore_every_shard__restore_shard_chunks' in inner
    assert (
        "s_restore_every_shard__shard_restored --> s_restore_every_shard__restore_shard_chunks : otherwise"
        in inner
    )
    rows = asl_diagram.table(definition)
    assert any(row.startswith("| Restore every shard / Restore shard chunks | Task |") for row in rows)


def test_generator_draws_choices_defaults_ends_and_catches() -> None:
    definition = {
        "StartAt": "Work",
        "States": {
            "Work": {
                "Type": "Task",
                "Resource": "${WorkFunctionArn}",
                "Next": "Done?",
                "Catch": [{"ErrorEquals": ["LockHeldError", "States.Timeout"], "Next": "Failed"}],
            },
            "Done?": {
                "Type": "Choice",
                "Choices": [
                    {
                        "And": [
                            {"Variable": "$.job.done", "BooleanEquals": True},
                            {"Variable": "$.items[0]", "StringEquals": "ok"},
                        ],
                        "Next": "Finished",
                    }
                ],
                "Default": "Work",
            },
            "Finished": {"Type": "Pass", "End": True},
            "Failed": {"Type": "Fail", "Error": "Broken"},
        },
    }
    lines = asl_diagram.mermaid(definition)
    assert lines[0] == "stateDiagram-v2"
    assert "    [*] --> s_work" in lines
    assert "    s_work : WorkFunction" in lines
    assert "    s_work --> s_failed : catch LockHeldError, States.Timeout" in lines
    assert "    s_done --> s_finished : job.done = true and items(0) = ok" in lines
    assert "    s_done --> s_work : otherwise" in lines
    assert "    s_finished --> [*]" in lines
    assert "    s_failed --> [*]" in lines
    assert asl_diagram.render(definition, "x.asl.json", "X") == asl_diagram.render(
        definition, "x.asl.json", "X"
    )


# ---------------------------------------------------------------------------- restore samples
def _restore_samples() -> list[Path]:
    return sorted(path for path in EVENTS_DIR.glob("*.json") if "restore" in path.stem)


def _load_sample(path: Path) -> Any:
    text = _PLACEHOLDER.sub(lambda match: RESTORE_TEST_PARAMETERS[match.group(1)], path.read_text())
    return json.loads(text)


@pytest.mark.parametrize("path", _restore_samples(), ids=lambda p: p.name)
def test_restore_samples_are_valid_restore_inputs(path: Path) -> None:
    request = parse(RestoreRequest, _load_sample(path), path.name)
    assert request.fail_after is None, "fault injection is refused outside tests"
    assert request.requested_by != "unknown" and request.reason, "samples fill in the audit trail"
    if request.key_patterns:
        assert request.mode != "replace", "replace flushes every key first; with patterns use merge"


def test_there_is_a_sample_for_every_cookbook_scenario() -> None:
    names = {path.stem for path in _restore_samples()}
    assert {
        "restore-latest-full",
        "restore-point-in-time",
        "restore-config-only",
        "restore-tokens-only",
        "restore-redis-only",
        "restore-oauth-keys",
        "restore-dry-run",
        "restore-isolated-target",
        "restore-weekly-verification",
        "restore-pre-deploy",
        "restore-elasticache-new-group",
        "restore-elasticache-new-serverless-cache",
    } <= names


def test_oauth_sample_selects_exactly_the_long_lived_oauth_keys() -> None:
    request = parse(RestoreRequest, _load_sample(EVENTS_DIR / "restore-oauth-keys.json"), "oauth sample")
    assert request.kinds == ["redis"]
    assert request.mode == "merge"
    assert request.key_patterns == list(OAUTH_KEY_PATTERNS)


def test_point_in_time_sample_names_a_time() -> None:
    request = parse(RestoreRequest, _load_sample(EVENTS_DIR / "restore-point-in-time.json"), "pit sample")
    assert not isinstance(request.backup, str)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", request.backup.as_of)


def test_scratch_target_samples_match_the_weekly_restore_test() -> None:
    # The manual verification run is the scheduled one with the RestoreTest* parameters filled in,
    scheduled = _load_sample(EVENTS_DIR / "schedule-restore-test.json")
    manual = _load_sample(EVENTS_DIR / "restore-weekly-verification.json")
    ignored = {"requested_by", "reason"}
    assert {k: v for k, v in manual.items() if k not in ignored} == {
        k: v for k, v in scheduled.items() if k not in ignored
    }
    # and the isolated restore uses the same scratch target (the only one its IAM grants allow).
    isolated = _load_sample(EVENTS_DIR / "restore-isolated-target.json")
    assert isolated["target"] == manual["target"]
    assert not isolated.get("verification"), "an isolated restore keeps its copies for inspection"


def _json_blocks(text: str) -> list[Any]:
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)```", text, re.DOTALL)]


@pytest.mark.parametrize(
    "path", sorted(EVENTS_DIR.glob("restore-*.json")), ids=lambda p: p.name.removesuffix(".json")
)
def test_console_cookbook_shows_each_sample_verbatim(path: Path) -> None:
    blocks = _json_blocks(OPERATIONS.read_text(encoding="utf-8"))
    assert json.loads(path.read_text()) in blocks, (
        f"docs/operations.md should show {path.name} as a ```json block, exactly as the file has it"
    )
    assert f"events/{path.name}" in OPERATIONS.read_text(encoding="utf-8")


def _cookbook_pairs() -> list[tuple[str, Any]]:
    """(CLI command, the JSON input shown before it) for each restore command in the cookbook."""
    text = OPERATIONS.read_text(encoding="utf-8")
    section = text.split("\n## Restore cookbook", 1)[1].split("\n## ", 1)[0]
    pairs: list[tuple[str, Any]] = []
    last_input: Any = None
    for language, body in re.findall(r"```(json|bash)\n(.*?)```", section, re.DOTALL):
        if language == "json":
            last_input = json.loads(body)
            continue
        for line in body.replace("\\\n", " ").splitlines():
            if line.strip().startswith("servalsheets-backup restore"):
                pairs.append((line.strip(), last_input))
    return pairs


@pytest.mark.parametrize(("command", "sample"), _cookbook_pairs(), ids=lambda v: str(v)[:60])
def test_cookbook_cli_commands_request_what_their_json_sample_does(command: str, sample: Any) -> None:
    # Given the CLI command printed under a console input
    args = build_parser().parse_args(shlex.split(command)[1:])
    # When the CLI builds its restore request
    from_cli = parse(RestoreRequest, cli_restore._request(args), "cli request").model_dump()
    from_console = parse(RestoreRequest, sample, "console input").model_dump()
    # Then it asks for the same restore (only who and why may differ)
    for field in ("requested_by", "reason"):
        from_cli.pop(field)
        from_console.pop(field)
    assert from_cli == from_console
    assert "--start-execution" in command, "the cookbook runs restores in the state machine"


# ---------------------------------------------------------------------------- references
_LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
_REPO_PATH = re.compile(
    r"(?<![\w/.:-])((?:events|docs|tools|statemachines|functions|layers|tests|bench|\.ci)/[\w./-]*[\w/])"
)
_FENCE = re.compile(r"^(```|~~~)", re.MULTILINE)


def _without_fences(text: str) -> str:
    """Text with fenced code blocks blanked out (headings inside them are not headings)."""
    parts = _FENCE.split(text)
    kept, inside = [], False
    for part in parts:
        if part in ("```", "~~~"):
            inside = not inside
            continue
        kept.append("" if inside else part)
    return "".join(kept)


def _slugs(path: Path) -> set[str]:
    """GitHub's anchors for the headings of a Markdown file."""
    slugs: set[str] = set()
    counts: dict[str, int] = {}
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", _without_fences(path.read_text()), re.MULTILINE):
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
        slug = re.sub(r"[^\w\- ]", "", text.lower().replace("`", "")).replace(" ", "-")
        count = counts.get(slug, 0)
        counts[slug] = count + 1
        slugs.add(slug if count == 0 else f"{slug}-{count}")
    return slugs


def _references() -> list[tuple[str, str, str]]:
    """(document, target path relative to the repo, anchor) for every reference in the docs."""
    found: set[tuple[str, str, str]] = set()
    for doc in DOC_FILES:
        text = doc.read_text(encoding="utf-8")
        name = str(doc.relative_to(REPO_ROOT))
        for target in _LINK.findall(text):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
                continue
            file_part, _, anchor = target.partition("#")
            resolved = (doc.parent / file_part).resolve() if file_part else doc
            found.add((name, str(resolved.relative_to(REPO_ROOT)), anchor))
        text = text.replace("file://", " ")  # --input file://events/... names a repository file
        for match in _REPO_PATH.finditer(text):
            if re.match(r"[\w.-]*[<*{$]", text[match.end() :]):
                continue  # a pattern such as events/restore-<scenario>.json, not a file
            found.add((name, match.group(1).rstrip("/."), ""))
    return sorted(found)


@pytest.mark.parametrize(("doc", "target", "anchor"), _references(), ids=lambda value: value or "-")
def test_every_reference_in_the_docs_resolves(doc: str, target: str, anchor: str) -> None:
    path = REPO_ROOT / target
    if target in PENDING_DOCS and not path.exists():
        pytest.skip(f"{target} is being written by another engineer")
    assert path.exists(), f"{doc} refers to {target}, which does not exist"
    if anchor:
        assert path.suffix == ".md", f"{doc}: anchors only work on Markdown files ({target}#{anchor})"
        assert anchor in _slugs(path), f"{doc} links to {target}#{anchor}, which has no such heading"

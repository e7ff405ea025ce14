"""Render every ``statemachines/*.asl.json`` as a Mermaid ``stateDiagram-v2`` page in ``docs/``.

    python3 tools/asl_diagram.py           write docs/<name>-state-machine.md (make diagrams)
    python3 tools/asl_diagram.py --check   exit 1 when a page is missing or out of date

Standard library only, and deterministic: the same ASL always gives the same bytes, so
``tests/unit/test_docs.py`` can regenerate in memory and compare. Every transition is drawn:
``Next``, ``End``, each ``Choice`` rule (labelled with its condition), ``Default`` (labelled
``otherwise``) and each ``Catch`` (labelled ``catch <errors>``). Retry policies are listed in
the table under the diagram rather than drawn, because a retry stays in the same state.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
STATEMACHINES_DIR = "statemachines"
DOCS_DIR = "docs"
ASL_SUFFIX = ".asl.json"
GENERATOR = "tools/asl_diagram.py"

# Choice rule operators and how a label spells them (words, not < or >, which Mermaid may
# treat as markup).
_OPERATORS = {
    "BooleanEquals": "=",
    "StringEquals": "=",
    "NumericEquals": "=",
    "TimestampEquals": "=",
    "StringMatches": "matches",
    "StringGreaterThan": "gt",
    "StringGreaterThanEquals": "ge",
    "StringLessThan": "lt",
    "StringLessThanEquals": "le",
    "NumericGreaterThan": "gt",
    "NumericGreaterThanEquals": "ge",
    "NumericLessThan": "lt",
    "NumericLessThanEquals": "le",
    "TimestampGreaterThan": "after",
    "TimestampGreaterThanEquals": "at or after",
    "TimestampLessThan": "before",
    "TimestampLessThanEquals": "at or before",
}
_TYPE_CHECKS = {
    "IsPresent": "is present",
    "IsNull": "is null",
    "IsBoolean": "is a boolean",
    "IsNumeric": "is a number",
    "IsString": "is a string",
    "IsTimestamp": "is a timestamp",
}
_CLASSES = {
    "Task": ("task", "fill:#e8f0fe,stroke:#3b6fb6"),
    "Choice": ("choice", "fill:#fff8e1,stroke:#b08900"),
    "Wait": ("wait", "fill:#f3f3f3,stroke:#777777"),
    "Pass": ("pass", "fill:#f3f3f3,stroke:#777777"),
    "Parallel": ("task", "fill:#e8f0fe,stroke:#3b6fb6"),
    "Map": ("task", "fill:#e8f0fe,stroke:#3b6fb6"),
    "Succeed": ("succeed", "fill:#e6f4ea,stroke:#2e7d32"),
    "Fail": ("fail", "fill:#fdecea,stroke:#c0392b"),
}


# -- text helpers ------------------------------------------------------------------------------
def _clean(text: str) -> str:
    """Text safe inside a Mermaid label: no quotes, colons, semicolons, brackets or markup."""
    text = text.replace("$$.", "").replace("$.", "")
    text = re.sub(r"\[(\d+)\]", r"(\1)", text)
    text = re.sub(r'["`;:#{}<>\[\]|]', " ", text)
    return re.sub(r"\s+", " ", text).strip()


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return re.sub(r"\s+", " ", text.replace("|", "\\|")).strip()


def _state_ids(names: Sequence[str]) -> dict[str, str]:
    """A unique Mermaid id per state name (``s_`` + lowercase words joined by ``_``)."""
    ids: dict[str, str] = {}
    used: set[str] = set()
    for name in names:
        base = "s_" + (re.sub(r"[^0-9A-Za-z]+", "_", name).strip("_").lower() or "state")
        candidate, counter = base, 2
        while candidate in used:
            candidate, counter = f"{base}_{counter}", counter + 1
        used.add(candidate)
        ids[name] = candidate
    return ids


def _resource(state: Mapping[str, Any]) -> str:
    """What a Task runs: a substituted function name, or ``service action`` of an integration."""
    resource = str(state.get("Resource", ""))
    substituted = re.fullmatch(r"\$\{(\w+?)(?:Arn)?\}", resource)
    if substituted:
        return substituted.group(1)
    integration = re.fullmatch(r"arn:aws:states:::(?:aws-sdk:)?([\w-]+):(\w+)(?:\.\w+)?", resource)
    if integration:
        return f"{integration.group(1)} {integration.group(2)}"
    return _clean(resource)


def describe_rule(rule: Mapping[str, Any]) -> str:
    """A Choice rule as short text, e.g. ``plan.redis = true and plan.redis_mode = logical``."""
    if "And" in rule:
        return " and ".join(describe_rule(part) for part in rule["And"])
    if "Or" in rule:
        return " or ".join(describe_rule(part) for part in rule["Or"])
    if "Not" in rule:
        return f"not ({describe_rule(rule['Not'])})"
    variable = _clean(str(rule.get("Variable", "")))
    for key, value in rule.items():
        if key in _TYPE_CHECKS:
            return f"{variable} {_TYPE_CHECKS[key]}" if value else f"{variable} not {_TYPE_CHECKS[key][3:]}"
        operator = key[: -len("Path")] if key.endswith("Path") and key != "Variable" else key
        if operator in _OPERATORS:
            shown = json.dumps(value) if isinstance(value, bool) else str(value)
            return f"{variable} {_OPERATORS[operator]} {_clean(shown)}"
    if "Condition" in rule:  # JSONata
        return _clean(str(rule["Condition"]))
    return "rule"


# -- the diagram -------------------------------------------------------------------------------
def _transitions(name: str, state: Mapping[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(from, to, label) for every way out of one state; ``[*]`` is the end."""
    kind = state.get("Type")
    if kind == "Choice":
        for rule in state.get("Choices", []):
            yield name, str(rule["Next"]), describe_rule(rule)
        if "Default" in state:
            yield name, str(state["Default"]), "otherwise"
    if "Next" in state:
        yield name, str(state["Next"]), ""
    if state.get("End") or kind in ("Succeed", "Fail"):
        yield name, "[*]", ""
    for catcher in state.get("Catch", []):
        errors = ", ".join(str(error) for error in catcher.get("ErrorEquals", []))
        yield name, str(catcher["Next"]), f"catch {errors}"


def mermaid(definition: Mapping[str, Any]) -> list[str]:
    """The ``stateDiagram-v2`` lines for one state machine definition."""
    by_class: dict[str, list[str]] = {}
    lines = ["stateDiagram-v2", "    direction TB", *_body(definition, "s_", "    ", by_class)]
    for css_class in sorted(by_class):
        lines.append(f"    classDef {css_class} {_CLASSES_BY_NAME[css_class]}")
        lines.append(f"    class {','.join(by_class[css_class])} {css_class}")
    return lines


_CLASSES_BY_NAME = dict(_CLASSES.values())


def _body(
    definition: Mapping[str, Any], prefix: str, indent: str, by_class: dict[str, list[str]]
) -> list[str]:
    """States and transitions of one state list; a Map's iteration is drawn inside the Map's box."""
    states: Mapping[str, Any] = definition["States"]
    ids = {name: prefix + state_id[2:] for name, state_id in _state_ids(list(states)).items()}
    lines = []
    for name, state in states.items():
        processor = state.get("ItemProcessor") or state.get("Iterator")
        if state.get("Type") == "Map" and processor:
            lines.append(f'{indent}state "{_clean(name)}" as {ids[name]} {{')
            lines += _body(processor, f"{ids[name]}__", indent + "    ", by_class)
            lines.append(f"{indent}}}")
        else:
            lines.append(f'{indent}state "{_clean(name)}" as {ids[name]}')
            css_class = _CLASSES.get(str(state.get("Type")), _CLASSES["Task"])[0]
            by_class.setdefault(css_class, []).append(ids[name])
        if state.get("Type") == "Task":
            lines.append(f"{indent}{ids[name]} : {_clean(_resource(state))}")
    lines.append(f"{indent}[*] --> {ids[definition['StartAt']]}")
    for name, state in states.items():
        for source, target, label in _transitions(name, state):
            arrow = f"{indent}{ids[source]} --> {ids.get(target, target)}"
            lines.append(f"{arrow} : {_clean(label)}" if label else arrow)
    return lines


# -- the table ---------------------------------------------------------------------------------
def _retry_text(state: Mapping[str, Any]) -> str:
    parts = []
    for retrier in state.get("Retry", []):
        errors = ", ".join(str(error) for error in retrier.get("ErrorEquals", []))
        attempts = retrier.get("MaxAttempts", 3)
        interval = retrier.get("IntervalSeconds", 1)
        backoff = retrier.get("BackoffRate", 2.0)
        jitter = ", full jitter" if retrier.get("JitterStrategy") == "FULL" else ""
        parts.append(f"{attempts} x from {interval} s, backoff {backoff:g}{jitter}: {errors}")
    return "; ".join(parts) or "-"


def _catch_text(state: Mapping[str, Any]) -> str:
    parts = []
    for catcher in state.get("Catch", []):
        errors = ", ".join(str(error) for error in catcher.get("ErrorEquals", []))
        result = f" (error in `{catcher['ResultPath']}`)" if "ResultPath" in catcher else ""
        parts.append(f"{errors} -> {catcher['Next']}{result}")
    return "; ".join(parts) or "-"


def _what(state: Mapping[str, Any]) -> str:
    kind = state.get("Type")
    comment = str(state.get("Comment", ""))
    if kind == "Task":
        runs = f"`{_resource(state)}`"
        return f"{runs}: {comment}" if comment else runs
    if kind == "Choice":
        rules = [f"{describe_rule(r)} -> {r['Next']}" for r in state.get("Choices", [])]
        if "Default" in state:
            rules.append(f"otherwise -> {state['Default']}")
        return "; ".join(rules)
    if kind == "Wait":
        seconds = state.get("SecondsPath", state.get("Seconds", ""))
        return f"wait {_clean(str(seconds))} seconds" + (f": {comment}" if comment else "")
    if kind == "Fail":
        error = f"`{state['Error']}`" if "Error" in state else f"the error at `{state.get('ErrorPath', '')}`"
        return f"fails with {error}" + (f": {comment}" if comment else "")
    if kind == "Pass" and "ResultPath" in state:
        return f"sets `{state['ResultPath']}`" + (f": {comment}" if comment else "")
    if kind == "Map":
        items = state.get("ItemsPath", "$")
        limit = state.get("MaxConcurrencyPath", state.get("MaxConcurrency", "no limit"))
        runs = f"one iteration per item of `{items}`, at most `{limit}` at once"
        return f"{runs}: {comment}" if comment else runs
    if kind == "Succeed":
        output = f" with `{state['OutputPath']}` as the output" if "OutputPath" in state else ""
        return f"ends the execution{output}" + (f": {comment}" if comment else "")
    return comment


def table(definition: Mapping[str, Any]) -> list[str]:
    """A Markdown table of every state: type, what it does, retries and catches."""
    lines = [
        "| State | Type | What it does | Retry | On error |",
        "|---|---|---|---|---|",
    ]
    for name, state in _every_state(definition):
        what = _what(state)
        if " / " in name:  # inside a Map, a Succeed state ends the iteration, not the execution
            what = what.replace("ends the execution", "ends the iteration")
        cells = [name, str(state.get("Type", "")), what, _retry_text(state), _catch_text(state)]
        lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    return lines


def _every_state(definition: Mapping[str, Any], within: str = "") -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(name, state) of every state, a Map's iteration states named ``Map / state`` after it."""
    for name, state in definition["States"].items():
        yield within + name, state
        processor = state.get("ItemProcessor") or state.get("Iterator")
        if state.get("Type") == "Map" and processor:
            yield from _every_state(processor, f"{within}{name} / ")


# -- pages -------------------------------------------------------------------------------------
def render(definition: Mapping[str, Any], source: str, title: str) -> str:
    """The whole Markdown page for one state machine."""
    timeout = definition.get("TimeoutSeconds")
    lines = [
        f"<!-- Generated by {GENERATOR} from {source}. Do not edit: run `make diagrams`. -->",
        f"# {title}",
        "",
        f"Source: [`{source}`](../{source}). {definition.get('Comment', '')}".rstrip(),
        "",
        "Every transition is drawn: `catch ...` edges are the Catch clauses (where an error goes),",
        "`otherwise` is a Choice state's Default. Retries stay in the same state; they are listed",
        "in the table below."
        + (f" The whole execution times out after {timeout} seconds." if timeout else ""),
        "",
        "```mermaid",
        *mermaid(definition),
        "```",
        "",
        "## States",
        "",
        *table(definition),
        "",
    ]
    return "\n".join(lines)


def page_path(asl: Path, root: Path = REPO_ROOT) -> Path:
    """``statemachines/backup.asl.json`` -> ``docs/backup-state-machine.md``."""
    return root / DOCS_DIR / f"{asl.name[: -len(ASL_SUFFIX)]}-state-machine.md"


def render_all(root: Path = REPO_ROOT) -> dict[Path, str]:
    """Every page, keyed by the path it belongs at, in file name order."""
    pages: dict[Path, str] = {}
    for asl in sorted((root / STATEMACHINES_DIR).glob(f"*{ASL_SUFFIX}")):
        name = asl.name[: -len(ASL_SUFFIX)]
        definition = json.loads(asl.read_text(encoding="utf-8"))
        source = f"{STATEMACHINES_DIR}/{asl.name}"
        pages[page_path(asl, root)] = render(definition, source, f"{name.capitalize()} state machine")
    return pages


def main(argv: Sequence[str] | None = None) -> int:
    """Write the pages, or with ``--check`` report which are stale (exit 1)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="only check; exit 1 if a page is stale")
    parser.add_argument("--root", type=Path, default=REPO_ROOT, help="repository root (default: this one)")
    args = parser.parse_args(argv)
    stale = []
    for path, text in render_all(args.root).items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        if args.check:
            stale.append(path)
            continue
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(args.root)}")
    for path in stale:
        print(f"stale: {path.relative_to(args.root)} (run `make diagrams`)", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())

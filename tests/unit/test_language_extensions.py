"""Fn::ForEach expanded as the AWS::LanguageExtensions transform does (for the local deployer)."""

from __future__ import annotations

import pytest

from servalsheets_backup_local.testing.language_extensions import LanguageExtensionError, expand

pytestmark = pytest.mark.unit


def _template(loop: list[object], **extra: object) -> dict[str, object]:
    return {
        "Transform": ["AWS::LanguageExtensions", "AWS::Serverless-2016-10-31"],
        "Parameters": {"Names": {"Type": "CommaDelimitedList", "Default": "Alpha,Beta"}},
        "Resources": {"Fn::ForEach::Topics": loop, "Kept": {"Type": "AWS::SNS::Topic"}, **extra},
    }


def test_each_value_gives_one_copy_with_the_identifier_replaced_in_keys_and_strings() -> None:
    body = {
        "${Name}Topic": {
            "Type": "AWS::SNS::Topic",
            "Properties": {
                "TopicName": {"Fn::Sub": "x-${Name}-${AWS::Region}"},
                "Ref": {"Ref": "${Name}Fn"},
                "Looked": {"Fn::FindInMap": ["Names", {"Ref": "Name"}, "Label"]},
            },
        }
    }
    expanded = expand(_template(["Name", ["Alpha", "Beta"], body]))
    assert expanded["Transform"] == "AWS::Serverless-2016-10-31"
    assert set(expanded["Resources"]) == {"AlphaTopic", "BetaTopic", "Kept"}
    beta = expanded["Resources"]["BetaTopic"]["Properties"]
    assert beta == {
        "TopicName": {"Fn::Sub": "x-Beta-${AWS::Region}"},
        "Ref": {"Ref": "BetaFn"},
        "Looked": {"Fn::FindInMap": ["Names", "Beta", "Label"]},
    }


def test_a_collection_from_a_parameter_and_the_alphanumeric_form() -> None:
    body = {"&{Name}Topic": {"Type": "AWS::SNS::Topic", "Properties": {"TopicName": "${Name}"}}}
    expanded = expand(_template(["Name", {"Ref": "Names"}, body]), {"Names": ["a-1", "b.2"]})
    assert expanded["Resources"]["a1Topic"]["Properties"]["TopicName"] == "a-1"
    assert "b2Topic" in expanded["Resources"]
    assert set(expand(_template(["Name", {"Ref": "Names"}, body]))["Resources"]) == {
        "AlphaTopic",
        "BetaTopic",
        "Kept",
    }


def test_nested_loops_expand_too() -> None:
    inner = {
        "Fn::ForEach::Inner": ["Size", ["Small", "Large"], {"${Name}${Size}": {"Type": "AWS::SNS::Topic"}}]
    }
    expanded = expand(_template(["Name", ["Alpha"], inner]))
    assert set(expanded["Resources"]) == {"AlphaSmall", "AlphaLarge", "Kept"}


@pytest.mark.parametrize(
    ("loop", "message"),
    [
        (["Name", ["Alpha"], {"Static": {}}], "does not use"),
        (["Name", "Alpha", {"${Name}X": {}}], "list of strings"),
        (["Name", {"Ref": "Missing"}, {"${Name}X": {}}], "unknown parameter"),
        (["Name", ["Kept"], {"${Name}": {}}], "twice"),
        (["Name", ["A"]], "expected"),
    ],
)
def test_malformed_loops_are_refused_with_the_reason(loop: list[object], message: str) -> None:
    with pytest.raises(LanguageExtensionError, match=message):
        expand(_template(loop))

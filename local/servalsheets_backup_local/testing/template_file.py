"""Read template.yaml as CloudFormation sees it: short-form intrinsics, then Fn::ForEach expanded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from . import language_extensions


class _CfnLoader(yaml.SafeLoader):
    """YAML loader that turns CloudFormation short tags (!Ref, !Sub, ...) into their long form."""


def _short_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    name = "Ref" if suffix == "Ref" else ("Condition" if suffix == "Condition" else f"Fn::{suffix}")
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


_CfnLoader.add_multi_constructor("!", _short_tag)


def load_template(path: Path, *, expand_loops: bool = True) -> dict[str, Any]:
    """Read a CloudFormation/SAM YAML template with short-form intrinsics.

    With ``expand_loops`` (the default) every ``Fn::ForEach`` is expanded first, as the
    ``AWS::LanguageExtensions`` transform does before SAM and CloudFormation see the template.
    """
    # bandit B506: _CfnLoader is a yaml.SafeLoader subclass (plus CloudFormation's short tags).
    document: dict[str, Any] = yaml.load(path.read_text(), Loader=_CfnLoader)  # noqa: S506  # nosec B506
    return language_extensions.expand(document) if expand_loops else document

"""A small CloudFormation intrinsic-function resolver for deploying template.yaml into moto.

It covers what this project's translated template uses: Ref, Fn::GetAtt, Fn::Sub, Fn::If,
Fn::Join, Fn::Select, Fn::Split, Fn::FindInMap, Fn::Equals/And/Or/Not (conditions), the Rules
functions Fn::EachMemberEquals/EachMemberIn/Contains, and AWS::NoValue.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

NO_VALUE = object()
LOCAL_ACCOUNT = "123456789012"  # the account moto (and deploy-check) deploy into
_SUB_VARIABLE = re.compile(r"\$\{([^}!][^}]*)\}")


def pseudo_parameters(region: str, stack_name: str) -> dict[str, str]:
    """CloudFormation's pseudo parameters for a stack deployed outside AWS (moto, deploy-check)."""
    return {
        "AWS::Region": region,
        "AWS::AccountId": LOCAL_ACCOUNT,
        "AWS::Partition": "aws",
        "AWS::StackName": stack_name,
        "AWS::URLSuffix": "amazonaws.com",
        "AWS::StackId": f"arn:aws:cloudformation:{region}:{LOCAL_ACCOUNT}:stack/{stack_name}/local",
    }


class Resolver:
    """Resolves intrinsics against parameters, conditions and already-known resource attributes."""

    def __init__(
        self,
        parameters: Mapping[str, Any],
        pseudo: Mapping[str, str],
        conditions: Mapping[str, Any],
        attribute: Callable[[str, str | None], Any],
        mappings: Mapping[str, Any] | None = None,
    ) -> None:
        self.parameters = dict(parameters)
        self.mappings = dict(mappings or {})
        self.pseudo = dict(pseudo)
        self._raw_conditions = dict(conditions)
        self._conditions: dict[str, bool] = {}
        self._attribute = attribute

    def condition(self, name: str) -> bool:
        """Evaluate a named condition (memoised)."""
        if name not in self._conditions:
            self._conditions[name] = bool(self._eval_condition(self._raw_conditions[name]))
        return self._conditions[name]

    def holds(self, node: Any) -> bool:
        """Evaluate a condition expression (a Condition's, or a Rule's condition or assertion)."""
        return self._eval_condition(node)

    def _eval_condition(self, node: Any) -> bool:
        if isinstance(node, dict) and len(node) == 1:
            ((function, argument),) = node.items()
            if function == "Condition":
                return self.condition(argument)
            if function == "Fn::Equals":
                return bool(self.resolve(argument[0]) == self.resolve(argument[1]))
            if function == "Fn::Not":
                return not self._eval_condition(argument[0])
            if function == "Fn::And":
                return all(self._eval_condition(a) for a in argument)
            if function == "Fn::Or":
                return any(self._eval_condition(a) for a in argument)
        return bool(self.resolve(node))

    def resolve(self, node: Any) -> Any:
        """Resolve every intrinsic in ``node`` recursively; NO_VALUE entries are dropped."""
        if isinstance(node, list):
            return [value for value in (self.resolve(item) for item in node) if value is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((function, argument),) = node.items()
            handler = getattr(self, "_fn_" + function.replace("::", "_").replace("Fn_", ""), None)
            if function in ("Ref", "Condition") or function.startswith("Fn::"):
                if handler is None:
                    raise NotImplementedError(f"intrinsic {function} is not supported")
                return handler(argument)
        resolved = {key: self.resolve(value) for key, value in node.items()}
        return {key: value for key, value in resolved.items() if value is not NO_VALUE}

    def _fn_Ref(self, name: str) -> Any:  # noqa: N802 - CloudFormation's names
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        return self._attribute(name, None)

    def _fn_GetAtt(self, argument: Any) -> Any:  # noqa: N802
        if isinstance(argument, str):
            argument = argument.split(".", 1)
        return self._attribute(argument[0], self.resolve(argument[1]))

    def _fn_Sub(self, argument: Any) -> str:  # noqa: N802
        template, variables = (argument, {}) if isinstance(argument, str) else argument
        values = {key: self.resolve(value) for key, value in variables.items()}

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in values:
                return str(values[name])
            if "." in name:
                logical, attribute = name.split(".", 1)
                return str(self._attribute(logical, attribute))
            value = self._fn_Ref(name)
            return ",".join(value) if isinstance(value, list) else str(value)

        return _SUB_VARIABLE.sub(replace, template).replace("${!", "${")

    def _fn_If(self, argument: list[Any]) -> Any:  # noqa: N802
        name, when_true, when_false = argument
        return self.resolve(when_true if self.condition(name) else when_false)

    def _fn_Join(self, argument: list[Any]) -> str:  # noqa: N802
        delimiter, values = argument
        return str(delimiter).join(str(v) for v in self.resolve(values))

    def _fn_Select(self, argument: list[Any]) -> Any:  # noqa: N802
        index, values = argument
        return self.resolve(values)[int(self.resolve(index))]

    def _fn_Split(self, argument: list[Any]) -> list[str]:  # noqa: N802
        delimiter, value = argument
        return str(self.resolve(value)).split(delimiter)

    def _fn_FindInMap(self, argument: list[Any]) -> Any:  # noqa: N802
        name, top, second = (self.resolve(part) for part in argument)
        try:
            return self.mappings[name][top][second]
        except KeyError:
            raise KeyError(f"Fn::FindInMap: no {name}.{top}.{second} in the template's Mappings") from None

    def _fn_Equals(self, argument: list[Any]) -> bool:  # noqa: N802
        return bool(self.resolve(argument[0]) == self.resolve(argument[1]))

    def _fn_EachMemberEquals(self, argument: list[Any]) -> bool:  # noqa: N802
        members, value = self.resolve(argument[0]), self.resolve(argument[1])
        return all(member == value for member in members)

    def _fn_EachMemberIn(self, argument: list[Any]) -> bool:  # noqa: N802
        members, allowed = self.resolve(argument[0]), self.resolve(argument[1])
        return all(member in allowed for member in members)

    def _fn_Contains(self, argument: list[Any]) -> bool:  # noqa: N802
        return self.resolve(argument[1]) in self.resolve(argument[0])

    def _fn_Condition(self, name: str) -> bool:  # noqa: N802
        return self.condition(name)

    def _fn_GetAZs(self, argument: Any) -> list[str]:  # noqa: N802
        region = self.pseudo["AWS::Region"]
        return [f"{region}a", f"{region}b"]

    def _fn_ToJsonString(self, argument: Any) -> str:  # noqa: N802
        import json

        return json.dumps(self.resolve(argument))

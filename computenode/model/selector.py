"""Node selectors: Kubernetes label requirements, matched against a node's labels.

The wire carries k8s.io/apimachinery's selection.Operator values (`in`, `notin`,
`exists`, `!`, `=`, `==`, `!=`, `gt`, `lt`); the spelled-out names (In, NotIn,
Exists, DoesNotExist) are accepted too. Semantics follow apimachinery's
labels.Requirement.Matches: `notin` and `!=` match a missing key; `gt`/`lt`
compare integers and never match a missing or non-integer label.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from pydantic import Field, field_validator, model_validator

from computenode.model.base import Wire, WireEnum

_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
_PREFIX = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class Operator(WireEnum):
    IN = "in"
    NOT_IN = "notin"
    EXISTS = "exists"
    DOES_NOT_EXIST = "!"
    EQUALS = "="
    DOUBLE_EQUALS = "=="
    NOT_EQUALS = "!="
    GREATER_THAN = "gt"
    LESS_THAN = "lt"

    @classmethod
    def _missing_(cls, value: object) -> Operator | None:
        if isinstance(value, str):
            alias = _ALIASES.get(value.strip().lower())
            if alias is not None:
                return cls(alias)
        return super()._missing_(value)  # type: ignore[return-value]


_ALIASES = {"doesnotexist": "!", ">": "gt", "<": "lt"}


def _check_key(key: str) -> str:
    prefix, _, name = key.rpartition("/")
    if not name or len(name) > 63 or not _NAME.match(name):
        raise ValueError(f"{key!r} is not a valid label key")
    if prefix and (len(prefix) > 253 or not _PREFIX.match(prefix)):
        raise ValueError(f"{key!r} has an invalid prefix")
    return key


class LabelSelectorRequirement(Wire):
    key: str = Field(alias="Key")
    operator: Operator = Field(alias="Operator")
    values: list[str] = Field(default_factory=list, alias="Values", max_length=1000)

    @field_validator("key")
    @classmethod
    def _key(cls, v: str) -> str:
        return _check_key(v)

    @field_validator("values", mode="before")
    @classmethod
    def _none_is_empty(cls, v: object) -> object:
        return [] if v is None else v

    @field_validator("values")
    @classmethod
    def _value_syntax(cls, v: list[str]) -> list[str]:
        for value in v:
            if len(value) > 63 or not _NAME.match(value):
                raise ValueError(f"{value!r} is not a valid label value")
        return v

    @model_validator(mode="after")
    def _arity(self) -> LabelSelectorRequirement:
        op, n = self.operator, len(self.values)
        if op in (Operator.IN, Operator.NOT_IN) and n == 0:
            raise ValueError(f"operator {op.value!r} needs at least one value")
        if op in (Operator.EXISTS, Operator.DOES_NOT_EXIST) and n:
            raise ValueError(f"operator {op.value!r} takes no values")
        if op in (Operator.EQUALS, Operator.DOUBLE_EQUALS, Operator.NOT_EQUALS) and n != 1:
            raise ValueError(f"operator {op.value!r} takes exactly one value")
        if op in (Operator.GREATER_THAN, Operator.LESS_THAN):
            if n != 1:
                raise ValueError(f"operator {op.value!r} takes exactly one value")
            if not re.fullmatch(r"-?\d+", self.values[0]):
                raise ValueError(f"operator {op.value!r} needs an integer value, got {self.values[0]!r}")
        return self

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.key)
        match self.operator:
            case Operator.IN:
                return value is not None and value in self.values
            case Operator.NOT_IN:
                return value is None or value not in self.values
            case Operator.EQUALS | Operator.DOUBLE_EQUALS:
                return value == self.values[0]
            case Operator.NOT_EQUALS:
                return value is None or value != self.values[0]
            case Operator.EXISTS:
                return value is not None
            case Operator.DOES_NOT_EXIST:
                return value is None
            case Operator.GREATER_THAN | Operator.LESS_THAN:
                try:
                    have, want = int(value or ""), int(self.values[0])
                except ValueError:
                    return False
                return have > want if self.operator is Operator.GREATER_THAN else have < want
        return False  # unreachable: every operator is handled above

    def describe(self) -> str:
        """The requirement in selector syntax, for rejection reasons."""
        op = self.operator
        if op is Operator.EXISTS:
            return self.key
        if op is Operator.DOES_NOT_EXIST:
            return f"!{self.key}"
        if op in (Operator.IN, Operator.NOT_IN):
            return f"{self.key} {op.value} ({', '.join(self.values)})"
        return f"{self.key} {op.value} {self.values[0]}"


def unmatched(selectors: list[LabelSelectorRequirement], labels: Mapping[str, str]) -> list[str]:
    """The selectors that `labels` does not satisfy, as reasons naming each key."""
    return [
        f"node selector {s.describe()!r} does not match label {s.key}="
        + (repr(labels[s.key]) if s.key in labels else "(absent)")
        for s in selectors
        if not s.matches(labels)
    ]

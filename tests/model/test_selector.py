"""Node selectors: every operator spelling, with k8s.io/apimachinery labels.Requirement semantics."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from computenode.errors import SpecError
from computenode.model import LabelSelectorRequirement, Operator, parse_job
from computenode.model.selector import unmatched

LABELS = {"env": "prod", "tier": "web", "gpu": "true", "cores": "16", "odd": "x1"}


def req(op: str, *values: str, key: str = "env") -> LabelSelectorRequirement:
    return LabelSelectorRequirement.model_validate({"Key": key, "Operator": op, "Values": list(values)})


@pytest.mark.parametrize(
    ("spelling", "op"),
    [("in", Operator.IN), ("In", Operator.IN), ("IN", Operator.IN),
     ("notin", Operator.NOT_IN), ("NotIn", Operator.NOT_IN), ("NOTIN", Operator.NOT_IN),
     ("exists", Operator.EXISTS), ("Exists", Operator.EXISTS),
     ("!", Operator.DOES_NOT_EXIST), ("DoesNotExist", Operator.DOES_NOT_EXIST), ("doesnotexist", Operator.DOES_NOT_EXIST),
     ("=", Operator.EQUALS), ("==", Operator.DOUBLE_EQUALS), ("!=", Operator.NOT_EQUALS),
     ("gt", Operator.GREATER_THAN), ("Gt", Operator.GREATER_THAN), ("lt", Operator.LESS_THAN), ("LT", Operator.LESS_THAN)],
)  # fmt: skip
def test_spellings(spelling: str, op: Operator) -> None:
    assert Operator(spelling) is op


# (operator, values, key, expected against LABELS): the cases of apimachinery's selector_test.go.
CASES = [
    ("in", ["prod", "staging"], "env", True),
    ("in", ["dev"], "env", False),
    ("in", ["x"], "missing", False),
    ("notin", ["dev"], "env", True),
    ("notin", ["prod"], "env", False),
    ("notin", ["a"], "missing", True),  # notin matches an absent key
    ("exists", [], "gpu", True),
    ("exists", [], "missing", False),
    ("!", [], "spot", True),
    ("!", [], "env", False),
    ("=", ["web"], "tier", True),
    ("=", ["db"], "tier", False),
    ("=", ["x"], "missing", False),
    ("==", ["web"], "tier", True),
    ("==", ["db"], "tier", False),
    ("!=", ["dev"], "env", True),
    ("!=", ["prod"], "env", False),
    ("!=", ["x"], "missing", True),  # != matches an absent key
    ("gt", ["8"], "cores", True),
    ("gt", ["16"], "cores", False),
    ("gt", ["1"], "missing", False),
    ("gt", ["1"], "odd", False),  # a label that is not an integer never matches
    ("lt", ["32"], "cores", True),
    ("lt", ["16"], "cores", False),
    ("lt", ["1"], "missing", False),
    ("lt", ["100"], "odd", False),
]


@pytest.mark.parametrize(("op", "values", "key", "expected"), CASES)
def test_matches(op: str, values: list[str], key: str, expected: bool) -> None:
    assert req(op, *values, key=key).matches(LABELS) is expected
    # The spelled-out names behave the same.
    long = {"in": "In", "notin": "NotIn", "exists": "Exists", "!": "DoesNotExist"}.get(op)
    if long:
        assert req(long, *values, key=key).matches(LABELS) is expected


@pytest.mark.parametrize(
    ("op", "values"),
    [("in", []), ("notin", []), ("exists", ["x"]), ("!", ["x"]), ("=", []), ("=", ["a", "b"]), ("==", []),
     ("!=", ["a", "b"]), ("gt", []), ("gt", ["a"]), ("lt", ["1", "2"]), ("lt", ["1.5"]),
     # apimachinery also checks a gt/lt value as a label value, so it takes no sign.
     ("gt", ["-1"]), ("bogus", ["a"])],
)  # fmt: skip
def test_arity_and_values(op: str, values: list[str]) -> None:
    with pytest.raises(ValidationError):
        req(op, *values)


@pytest.mark.parametrize("key", ["", "-bad", "a" * 64, "Bad_Prefix/x", "a/b/c/", "spaces here", "x/"])
def test_bad_keys(key: str) -> None:
    with pytest.raises(ValidationError):
        req("exists", key=key)


@pytest.mark.parametrize(
    "key", ["env", "node.kubernetes.io/zone", "a" * 63, "A_b.c-d", "example.com/gpu-model"]
)
def test_good_keys(key: str) -> None:
    assert req("exists", key=key).key == key


@pytest.mark.parametrize("value", ["has space", "a" * 64, "-lead", "trail-", "x/y"])
def test_bad_values(value: str) -> None:
    with pytest.raises(ValidationError):
        req("in", value)


def test_empty_value_is_allowed_for_equals() -> None:
    assert req("=", "", key="missing").matches({"missing": ""})


def test_round_trip_uses_wire_values() -> None:
    r = req("DoesNotExist", key="spot")
    assert r.to_wire() == {"Key": "spot", "Operator": "!", "Values": []}
    assert LabelSelectorRequirement.model_validate(r.to_wire()) == r


def test_in_a_job_with_field_paths() -> None:
    doc = {"Spec": {"Engine": "Docker", "Docker": {"Image": "x"},
                    "NodeSelectors": [{"Key": "env", "Operator": "In", "Values": ["prod"]},
                                      {"Key": "zone", "Operator": "In", "Values": []}]}}  # fmt: skip
    with pytest.raises(SpecError) as info:
        parse_job(json.dumps(doc))
    [(field, msg)] = info.value.errors
    assert field == "Spec.NodeSelectors.1" and "at least one value" in msg


def test_unmatched_reasons_name_the_key() -> None:
    reasons = unmatched([req("in", "dev"), req("exists", key="gpu"), req("=", "a", key="zone")], LABELS)
    assert len(reasons) == 2
    assert "env in (dev)" in reasons[0] and "env='prod'" in reasons[0]
    assert "zone" in reasons[1] and "(absent)" in reasons[1]

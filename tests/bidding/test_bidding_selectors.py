"""Node selectors for every operator, Kubernetes semantics, through Bidder.evaluate.

The node's labels (bidhelpers.Setup): zone=eu, gpus=2, tier=gold.
"""

from __future__ import annotations

import pytest
from bidhelpers import Setup, make_job


def selector(key: str, op: str, *values: str) -> dict[str, object]:
    return {"Key": key, "Operator": op, "Values": list(values)}


CASES = [
    # (key, operator, values, matches)
    ("zone", "in", ["eu", "us"], True),
    ("zone", "In", ["us", "ap"], False),
    ("missing", "in", ["x"], False),
    ("zone", "notin", ["us"], True),
    ("zone", "NotIn", ["eu"], False),
    ("missing", "notin", ["x"], True),  # k8s: notin matches a missing key
    ("tier", "exists", [], True),
    ("missing", "Exists", [], False),
    ("missing", "!", [], True),
    ("zone", "DoesNotExist", [], False),
    ("zone", "=", ["eu"], True),
    ("zone", "=", ["us"], False),
    ("missing", "=", ["x"], False),
    ("tier", "==", ["gold"], True),
    ("tier", "==", ["silver"], False),
    ("tier", "!=", ["silver"], True),
    ("tier", "!=", ["gold"], False),
    ("missing", "!=", ["x"], True),  # k8s: != matches a missing key
    ("gpus", "gt", ["1"], True),
    ("gpus", "gt", ["2"], False),
    ("zone", "gt", ["1"], False),  # not an integer label: never matches
    ("missing", "gt", ["1"], False),
    ("gpus", "lt", ["3"], True),
    ("gpus", "lt", ["2"], False),
    ("missing", "lt", ["3"], False),
]


@pytest.mark.parametrize(("key", "op", "values", "matches"), CASES)
async def test_operator(bidder, key: str, op: str, values: list[str], matches: bool) -> None:
    job = make_job(NodeSelectors=[selector(key, op, *values)])
    v = {v.name: v for v in await bidder().evaluate(job)}["node_selectors"]
    assert v.ok is matches, v
    if not matches:
        assert key in v.reason


async def test_every_unmatched_selector_is_named(bidder, setup: Setup) -> None:
    job = make_job(
        NodeSelectors=[
            selector("zone", "=", "us"),
            selector("tier", "in", "gold", "silver"),
            selector("gpus", "gt", "4"),
            selector("arch", "exists"),
        ]
    )
    v = {v.name: v for v in await bidder().evaluate(job)}["node_selectors"]
    assert not v.ok
    assert "'zone = us' does not match label zone='eu'" in v.reason
    assert "gpus gt 4" in v.reason and "label arch=(absent)" in v.reason
    assert "tier" not in v.reason


async def test_labels_are_read_at_each_offer(bidder, setup: Setup) -> None:
    b = bidder()
    job = make_job(NodeSelectors=[selector("zone", "=", "us")])
    assert not {v.name: v for v in await b.evaluate(job)}["node_selectors"].ok
    setup.labels["zone"] = "us"
    assert {v.name: v for v in await b.evaluate(job)}["node_selectors"].ok

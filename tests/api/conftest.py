"""The in-process node fixtures of tests/node, shared here."""

from tests.node.conftest import make_node  # noqa: F401

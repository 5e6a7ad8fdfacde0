"""Shared inputs of the model tests: the project's example specs."""

from __future__ import annotations

from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def seed_002() -> bytes:
    """Seed 002's example submit request, envelope and all (kept verbatim in examples/)."""
    return (EXAMPLES / "seed-002-submit.json").read_bytes()

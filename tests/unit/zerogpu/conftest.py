"""Fixtures for the ZeroGPU client unit tests."""

from __future__ import annotations

import pytest
from zerogpu_fakes import Harness


@pytest.fixture
def harness() -> Harness:
    return Harness()

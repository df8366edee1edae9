"""The runnable examples in the public docstrings still run (docs/ARCHITECTURE.md points readers at them)."""
from __future__ import annotations

import doctest

import suprem_auto.networks as networks


def test_build_network_docstring_example_runs() -> None:
    result = doctest.testmod(networks, verbose=False)
    assert result.attempted >= 3
    assert result.failed == 0

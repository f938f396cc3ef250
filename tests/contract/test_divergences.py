"""The registry of declared divergences names tests that exist, on implementations that do."""

from __future__ import annotations

import importlib

from tests.contract.conftest import DIVERGENCES, IMPLEMENTATIONS


def test_every_declared_divergence_names_a_real_test_and_implementation() -> None:
    implementations = {param.values[0] for param in IMPLEMENTATIONS}
    unknown = []
    for implementation, gaps in DIVERGENCES.items():
        if implementation not in implementations:
            unknown.append(implementation)
        for test in gaps:
            module, _, function = test.partition("::")
            if not callable(
                getattr(importlib.import_module(f"tests.contract.{module}"), function, None)
            ):
                unknown.append(test)
    assert unknown == []

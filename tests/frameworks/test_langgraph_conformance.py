"""LangGraph's own conformance suite (``langgraph-checkpoint-conformance``) against
:class:`~convostore.integrations.langgraph.ConvostoreSaver`, on every SQL backend and
behind PgBouncer in transaction pooling mode: every capability detected, every test passed.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

pytest.importorskip("langgraph.checkpoint.conformance")

from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import ALL_CAPABILITIES

from convostore.encryption import Keyring, install
from convostore.integrations.langgraph import ConvostoreSaver
from tests.conftest import WITH_PGBOUNCER, require_backend
from tests.frameworks.conftest import open_engine


@pytest.fixture(params=WITH_PGBOUNCER)
def saver_backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    require_backend(request.config, name)
    return name


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
async def test_conformance_is_full(saver_backend: str, encrypted: bool, tmp_path: Path) -> None:
    engine = await open_engine(saver_backend, tmp_path)
    if encrypted:
        install(engine, Keyring({"k1": os.urandom(32)}, current="k1"))
    try:

        @checkpointer_test(name=f"ConvostoreSaver[{saver_backend}]")  # type: ignore[untyped-decorator]
        async def factory() -> AsyncIterator[ConvostoreSaver]:
            yield ConvostoreSaver(engine)

        report = await validate(factory)
        failures = {
            name: result.failures for name, result in report.results.items() if result.failures
        }
        assert failures == {}
        detected = {name for name, result in report.results.items() if result.detected}
        assert detected == {capability.value for capability in ALL_CAPABILITIES}
        assert report.conformance_level() == "FULL"
    finally:
        await engine.dispose()

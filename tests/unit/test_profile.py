"""The EngineProfile create_engine builds for each URL and argument, and who reads it.

No server is contacted: creating an engine opens no connection.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from convostore import ContextMessage, SQLAlchemyContextStore, connect, create_engine
from convostore.encryption import Keyring, install, keyring_of
from convostore.errors import ConfigurationError
from convostore.sql.engine import family, is_read_only, twin_engine
from convostore.sql.group_commit import committer_for, committer_loops
from convostore.sql.options import DEFAULT_DEADLINE_S
from convostore.sql.pgbouncer import runs_in_transactions
from convostore.sql.profile import EngineProfile, committers_of, profile_of, replace_profile
from convostore.sql.replicas import ReadReplicas, attach_replicas, replicas_of
from convostore.sql.runner import TransactionRunner
from convostore.sql.types import writes_search_index
from tests.backends.encrypted import K1, ring

PASSWORD = "s3cret-pw"


def test_sqlite_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONVOSTORE_SQLITE_WRITER", raising=False)
    monkeypatch.delenv("CONVOSTORE_SQLITE_DRIVER", raising=False)
    path = tmp_path / "x.db"
    profile = profile_of(create_engine(str(path)))
    assert profile == EngineProfile(
        family="sqlite",
        deadline=DEFAULT_DEADLINE_S,
        sqlite_driver="thin",
        sqlite_writer=os.path.realpath(path),
    )
    assert (profile.pgbouncer, profile.replicas, profile.keyring) == (None, None, None)
    assert profile.search_index
    assert profile.writes_search_index
    assert profile.clear_text
    assert profile.sqlite_precompile
    assert not profile.read_only


def test_sqlite_switches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONVOSTORE_SQLITE_WRITER", raising=False)
    monkeypatch.delenv("CONVOSTORE_SQLITE_DRIVER", raising=False)
    path = tmp_path / "x.db"
    url = f"sqlite+aiosqlite:///{path}"
    assert profile_of(create_engine(url, fast_sqlite=False)).sqlite_driver == "aiosqlite"
    assert profile_of(create_engine(f"{url}?sqlite_writer=false")).sqlite_writer is None
    assert profile_of(create_engine(url, sqlite_writer=False)).sqlite_writer is None
    off = profile_of(create_engine(f"{url}?search_index=off&deadline=2"))
    assert (off.search_index, off.writes_search_index, off.deadline) == (False, False, 2.0)
    memory = profile_of(create_engine("sqlite+aiosqlite://"))
    assert (memory.sqlite_driver, memory.sqlite_writer) == ("thin", None)
    monkeypatch.setenv("CONVOSTORE_SQLITE_WRITER", "off")
    monkeypatch.setenv("CONVOSTORE_SQLITE_DRIVER", "aiosqlite")
    from_env = profile_of(create_engine(url))
    assert (from_env.sqlite_driver, from_env.sqlite_writer) == ("aiosqlite", None)


def test_read_only_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    path.touch()
    for engine in (
        create_engine(str(path), read_only=True),
        create_engine(f"sqlite+aiosqlite:///{path}?mode=ro"),
    ):
        profile = profile_of(engine)
        assert profile.read_only
        assert is_read_only(engine)
        assert profile.sqlite_writer is None  # a read-only engine never writes


def test_postgresql_and_pgbouncer() -> None:
    plain = create_engine(f"postgresql://app:{PASSWORD}@db/agents")
    assert profile_of(plain) == EngineProfile(family="postgresql")
    assert not runs_in_transactions(plain)
    pooled = create_engine(f"postgresql://app:{PASSWORD}@db:6432/agents?pgbouncer=transaction")
    assert profile_of(pooled).pgbouncer == "transaction"
    assert runs_in_transactions(pooled)
    assert TransactionRunner(pooled)._transactions_only
    session = create_engine("postgresql://app@db:6432/agents?pgbouncer=session&deadline=off")
    assert (profile_of(session).pgbouncer, profile_of(session).deadline) == ("session", None)
    assert not runs_in_transactions(session)
    assert profile_of(create_engine("postgresql://app@db/agents", deadline=3)).deadline == 3.0


@pytest.mark.parametrize("url", ["mariadb://root@db/agents", "mysql://root@db/agents"])
def test_mysql_and_mariadb_are_one_family(url: str) -> None:
    engine = create_engine(url, search_index=False)
    assert profile_of(engine) == EngineProfile(family="mysql", search_index=False)
    assert family(engine) == "mysql"
    assert not writes_search_index(engine)


def test_keyring_and_clear_text_policy() -> None:
    keyring = Keyring({"k1": K1}, current="k1", clear_text=False)
    engine = create_engine("postgresql://app@db/agents", encryption=keyring)
    profile = profile_of(engine)
    assert profile.keyring is keyring
    assert keyring_of(engine) is keyring
    # Nothing in clear: no search feed either, though the switch is on.
    assert profile.search_index
    assert not profile.clear_text
    assert not profile.writes_search_index


def test_replicas_carry_the_keyring_and_dispose_with_the_engine() -> None:
    keyring = ring("k1", current="k1")
    engine = create_engine(
        "postgresql://app@primary/agents",
        encryption=keyring,
        read_url=ReadReplicas([f"postgresql://app:{PASSWORD}@standby/agents"], max_wait=0.1),
    )
    replicas = profile_of(engine).replicas
    assert replicas is not None
    assert replicas_of(engine) is replicas
    assert TransactionRunner(engine).replicas is replicas
    [replica] = replicas.engines
    assert profile_of(replica).keyring is keyring
    with pytest.raises(ConfigurationError, match="PostgreSQL only"):
        create_engine("postgresql://app@primary/agents", read_url="mariadb://root@db/agents")


def test_frozen_and_redacted() -> None:
    engine = create_engine(
        f"postgresql://app:{PASSWORD}@primary/agents",
        encryption=ring("k1", current="k1"),
        read_url=f"postgresql://app:{PASSWORD}@standby/agents",
    )
    profile = profile_of(engine)
    with pytest.raises(dataclasses.FrozenInstanceError):
        profile.deadline = None  # type: ignore[misc]
    shown = repr(profile)
    assert PASSWORD not in shown
    assert "***" in shown
    assert K1.hex() not in shown
    assert repr(K1) not in shown
    assert "current='k1'" in shown
    assert "standby" in shown


def test_an_engine_made_elsewhere_gets_the_default_profile_once() -> None:
    engine = create_async_engine("postgresql+asyncpg://app@db/agents")
    profile = profile_of(engine)
    assert profile == EngineProfile(family="postgresql")
    assert profile_of(engine) is profile  # stored
    # The public setters replace the profile; the committers stay with the engine.
    keyring = ring("k1", current="k1")
    install(engine, keyring)
    assert profile_of(engine).keyring is keyring
    assert committers_of(engine) is committers_of(engine)
    install(engine, keyring)  # the same keyring again: nothing to do
    with pytest.raises(ConfigurationError, match="another keyring"):
        install(engine, ring("k2", current="k2"))
    install(engine, None, replace=True)
    assert profile_of(engine).keyring is None
    replicas = create_engine("postgresql://app@db/agents", read_url="postgresql://app@standby/a")
    attach_replicas(engine, profile_of(replicas).replicas)
    assert replicas_of(engine) is profile_of(replicas).replicas
    file = create_async_engine("sqlite+aiosqlite:///never-opened.db")
    assert profile_of(file) == EngineProfile(family="sqlite", sqlite_driver="aiosqlite")
    assert profile_of(twin_engine(file)) == profile_of(file)
    # A keyring installed later reaches the replicas too.
    install(engine, keyring)
    assert {profile_of(r).keyring for r in replicas_of(engine).engines} == {keyring}  # type: ignore[union-attr]


async def test_a_twin_is_a_faithful_copy(tmp_path: Path) -> None:
    engine = await connect(tmp_path / "x.db")
    await engine.dispose()
    keyring = ring("k1", current="k1")
    sources = [
        create_engine(str(tmp_path / "x.db"), deadline=3, search_index=False, encryption=keyring),
        create_engine(str(tmp_path / "x.db"), read_only=True, fast_sqlite=False),
        create_engine(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}?sqlite_writer=off&deadline=0"),
        create_engine(
            f"postgresql://app:{PASSWORD}@db/agents?pgbouncer=transaction",
            read_url=["postgresql://app@standby1/agents", "postgresql://app@standby2/agents"],
        ),
    ]
    replace_profile(sources[0], sqlite_precompile=False)
    for source in sources:
        twin = twin_engine(source)
        mine, theirs = profile_of(source), profile_of(twin)
        # Replicas: the same URLs and options, engines of its own (checked below).
        assert dataclasses.replace(theirs, replicas=None) == dataclasses.replace(
            mine, replicas=None
        )
        assert (theirs.replicas is None) == (mine.replicas is None)
        assert committers_of(twin) is not committers_of(source)
        assert twin.url == source.url
    replicas, copied = profile_of(sources[3]).replicas, profile_of(twin).replicas
    assert replicas is not None
    assert copied is not None
    assert copied is not replicas
    assert copied.options == replicas.options
    assert [e.url for e in copied.engines] == [e.url for e in replicas.engines]
    for source in sources:
        await source.dispose()


async def test_committers_live_on_the_engine_and_go_with_their_loop(tmp_path: Path) -> None:
    engine = await connect(tmp_path / "c.db")
    try:
        store = SQLAlchemyContextStore(engine, project="/p", session_id="s")
        await store.append(ContextMessage(role="user", content=[{"type": "text", "text": "hi"}]))
        assert committer_loops(engine) == 1
        [committer] = committers_of(engine).on(asyncio.get_running_loop())
        # Replacing the profile (a keyring installed later) keeps the committers.
        replace_profile(engine, search_index=False)
        assert committers_of(engine).on(asyncio.get_running_loop()) == [committer]
        # Another loop, closed: its committers are dropped at the next look-up.
        await asyncio.to_thread(asyncio.run, _committer_on(engine))
        assert committer_loops(engine) == 1
    finally:
        await engine.dispose()


async def _committer_on(engine: AsyncEngine) -> None:
    async def write(*_: Any) -> Any:
        raise AssertionError("nothing is submitted")

    committer_for(engine, "other", write, write)
    assert committer_loops(engine) == 2

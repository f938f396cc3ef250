"""convostore's Database where agentstr takes a ``BaseDatabase``, against agentstr's own code.

agentstr-sdk is not a dependency: its ``__init__`` imports its whole agent stack (LangGraph,
DSPy, MCP, ...). These tests need only its database base module and models, so when the full
package does not import they load those modules from the installed package on their own:
``pip install --no-deps --target DIR agentstr-sdk pynostr coincurve tlv8`` and
``CONVOSTORE_AGENTSTR_PATH=DIR`` is enough. Without agentstr they are skipped, except the
tests of what happens without it.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from convostore import Message, SQLAlchemyDatabase, User
from convostore.integrations import agentstr as integration

_SHELLS = ("agentstr", "agentstr.database")


def _load_agentstr() -> tuple[types.ModuleType, types.ModuleType, list[str]]:
    """agentstr's ``database.base`` and ``models`` modules, and the module names we added."""
    try:
        return (
            importlib.import_module("agentstr.database.base"),
            importlib.import_module("agentstr.models"),
            [],
        )
    except ImportError:
        pass
    spec = importlib.util.find_spec("agentstr")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("agentstr-sdk is not installed (set CONVOSTORE_AGENTSTR_PATH)")
    root = Path(next(iter(spec.submodule_search_locations)))
    # Package shells with the real search paths: the submodules are agentstr's own files.
    added = [name for name in _SHELLS if name not in sys.modules]
    for name in added:
        shell = types.ModuleType(name)
        shell.__path__ = [str(root.joinpath(*name.split(".")[1:]))]
        sys.modules[name] = shell
    before = set(sys.modules)
    try:
        base = importlib.import_module("agentstr.database.base")
        models = importlib.import_module("agentstr.models")
    except ImportError as exc:
        for name in added:
            del sys.modules[name]
        pytest.skip(f"agentstr's database module cannot be imported: {exc}")
    return base, models, added + sorted(set(sys.modules) - before)


@pytest.fixture(scope="module")
def agentstr() -> Iterator[tuple[Any, Any]]:
    """``(BaseDatabase, agentstr.models)`` from the installed agentstr."""
    extra = os.environ.get("CONVOSTORE_AGENTSTR_PATH")
    if extra:
        sys.path.append(extra)
    try:
        base, models, added = _load_agentstr()
        yield base.BaseDatabase, models
        for name in added:
            sys.modules.pop(name, None)
    finally:
        if extra:
            sys.path.remove(extra)


# --- Without agentstr ---------------------------------------------------------------------


def test_register_without_agentstr_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "agentstr.database.base", None)  # makes the import fail
    assert integration.register() is False


def test_register_if_loaded_imports_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "agentstr.database.base", raising=False)
    assert integration.register_if_loaded() is False
    assert "agentstr.database.base" not in sys.modules


# --- With agentstr ------------------------------------------------------------------------


def test_register_makes_our_database_a_base_database(agentstr: tuple[Any, Any]) -> None:
    base_database, _ = agentstr
    assert integration.register() is True
    assert integration.register() is True  # idempotent
    assert integration.register_if_loaded() is True
    assert issubclass(SQLAlchemyDatabase, base_database)


async def test_the_one_line_switch(agentstr: tuple[Any, Any], tmp_path: Path) -> None:
    base_database, _ = agentstr
    db = integration.Database(f"sqlite://{tmp_path / 'agent.db'}", agent_name="agent")
    try:
        assert isinstance(db, base_database)
        assert db.conn_str == f"sqlite://{tmp_path / 'agent.db'}"
        assert db.agent_name == "agent"
        assert await db.async_init() is db
    finally:
        await db.close()


def test_every_base_database_method_has_the_same_signature(agentstr: tuple[Any, Any]) -> None:
    """Every call that works against agentstr's signature works against ours.

    Ours may add parameters only after agentstr's, keyword-only and with a default (such
    as add_message's client_id): no existing call can reach them by accident.
    """
    base_database, _ = agentstr
    for name in sorted(base_database.__abstractmethods__):
        theirs = inspect.signature(getattr(base_database, name)).parameters
        ours = inspect.signature(getattr(SQLAlchemyDatabase, name)).parameters
        assert list(ours)[: len(theirs)] == list(theirs), name
        for extra in list(ours)[len(theirs) :]:
            assert ours[extra].kind is inspect.Parameter.KEYWORD_ONLY, (name, extra)
            assert ours[extra].default is not inspect.Parameter.empty, (name, extra)
        for param, expected in theirs.items():
            actual = ours[param]
            assert actual.kind == expected.kind, (name, param)
            if expected.default == {}:
                # agentstr's mutable {} default: we take None and store {} for it.
                assert actual.default is None, (name, param)
            else:
                assert actual.default == expected.default, (name, param)


def test_user_and_message_have_agentstrs_fields(agentstr: tuple[Any, Any]) -> None:
    _, models = agentstr
    assert set(User.model_fields) == set(models.User.model_fields)
    assert set(Message.model_fields) == set(models.Message.model_fields)
    for model, theirs in ((User, models.User), (Message, models.Message)):
        for name, field in theirs.model_fields.items():
            if not field.is_required():
                assert (
                    model.model_fields[name].get_default(call_default_factory=True)
                    == (field.get_default(call_default_factory=True))
                    or name == "created_at"
                ), (model.__name__, name)


def test_our_user_refuses_the_unknown_fields_agentstrs_ignores(
    agentstr: tuple[Any, Any],
) -> None:
    """The one deliberate difference of the drop-in's models: agentstr's ``User`` drops a
    misspelt field (a zero balance), ours refuses it; every valid use is unchanged."""
    from convostore import ValidationError

    _, models = agentstr
    assert models.User(user_id="u", balance=5).available_balance == 0
    with pytest.raises(ValidationError, match="unknown field 'balance'"):
        User(user_id="u", balance=5)  # type: ignore[call-arg]


async def test_models_convert_both_ways_through_a_database(
    agentstr: tuple[Any, Any], tmp_path: Path
) -> None:
    _, models = agentstr
    db = await integration.Database(
        f"sqlite://{tmp_path / 'a.db'}", agent_name="agent"
    ).async_init()
    try:
        await db.upsert_user(models.User(user_id="u1", available_balance=5, current_thread_id="t"))
        user = await db.get_user("u1")
        assert models.User(**user.model_dump()) == models.User(
            user_id="u1", available_balance=5, current_thread_id="t"
        )
        stored = await db.add_message(
            "t", "u1", "agent", message="hi", kind="final_response", extra_outputs={"k": [1]}
        )
        [read] = await db.get_messages("t", "u1")
        assert read == stored
        theirs = models.Message(**read.model_dump())
        assert theirs.model_dump() == read.model_dump()
    finally:
        await db.close()


async def test_agentstr_names_make_the_import_line_the_only_change(tmp_path: Path) -> None:
    # agentstr's documented usage of its backend class, with the import changed.
    db = integration.SQLiteDatabase(conn_str="sqlite://:memory:")
    assert db.conn is None  # agentstr's server calls async_init() when conn is falsy
    await db.async_init()
    assert db.conn is not None
    await db.upsert_user(integration.User(user_id="u1", available_balance=42))
    stored = await db.add_message("t1", "u1", "user", content="hi")
    assert isinstance(stored, integration.Message)
    assert stored.idx == 0
    assert isinstance(db, integration.BaseDatabase)
    await db.close()
    assert db.conn is None


@pytest.mark.parametrize(
    ("cls", "url"),
    [
        (integration.SQLiteDatabase, "postgres://app:secret@db.internal/agents"),
        (integration.PostgresDatabase, "sqlite://:memory:"),
    ],
)
def test_backend_classes_refuse_the_other_backend(cls: Any, url: str) -> None:
    from convostore import ConfigurationError

    with pytest.raises(ConfigurationError, match=cls.__name__) as caught:
        cls(url)
    assert "secret" not in str(caught.value)


async def test_async_init_after_close_reopens_like_agentstrs_own_database(
    agentstr: tuple[Any, Any], tmp_path: Path
) -> None:
    """agentstr's backends reconnect in ``async_init`` after ``close``; so does ours, on the
    same file, with what was stored there. A call between the two fails on both: agentstr's
    with an AttributeError on its ``None`` connection, ours with a ConfigurationError that
    says to call ``async_init()``."""
    from convostore import ConfigurationError

    theirs_module = importlib.import_module("agentstr.database.sqlite")

    async def reopened(db: Any) -> list[str]:
        await db.async_init()
        await db.add_message("t", "u", "user", message="kept")
        await db.close()
        assert db.conn is None
        error: BaseException | None = None
        try:
            await db.get_messages("t", "u")
        except Exception as exc:
            error = exc
        assert error is not None
        assert await db.async_init() is db
        try:
            return [m.message for m in await db.get_messages("t", "u")]
        finally:
            await db.close()

    theirs = theirs_module.SQLiteDatabase(f"sqlite://{tmp_path / 'theirs.db'}", agent_name="a")
    ours = integration.Database(f"sqlite://{tmp_path / 'ours.db'}", agent_name="a")
    assert await reopened(theirs) == await reopened(ours) == ["kept"]
    await ours.close()
    with pytest.raises(ConfigurationError, match="async_init"):
        await ours.get_user("u")

"""What convostore knows about an engine, in one place: its :class:`EngineProfile`.

:func:`convostore.create_engine` (and so :func:`convostore.connect` and the façades given
a URL) builds one profile per engine from its URL and arguments, and stores it once, as one
attribute of the engine's SQLAlchemy dialect. Everything convostore decides per engine
reads it there: the runner (deadline, PgBouncer mode, read replicas, the SQLite writer),
the column types (the keyring and the search switch), the migrations (the deadline,
read-only). What holds the engine itself, its group committers, lives on the engine
instead (:func:`committers_of`).

Why the dialect: a column type (:mod:`convostore.sql.types`) sees only the dialect when it
binds or reads a value, and the dialect is shared by everything made from the engine
(``engine.execution_options(...)``, its connections, sessions and the ORM), so no copy of
an engine can miss its settings. The SQLite writer's sync connection
(:mod:`convostore.sql.sqlite_writer`) has a dialect of its own, which points at the same
profile object.

Read it with :func:`profile_of`::

    from convostore import create_engine
    from convostore.sql.profile import profile_of

    engine = create_engine("postgresql://app@db/agents?pgbouncer=transaction&deadline=5")
    profile = profile_of(engine)
    assert profile.family == "postgresql"
    assert (profile.deadline, profile.pgbouncer) == (5.0, "transaction")

An engine made elsewhere (``sqlalchemy.ext.asyncio.create_async_engine``) gets the default
profile of its backend the first time convostore looks; :func:`convostore.encryption.install`
and :func:`convostore.sql.replicas.attach_replicas` replace an engine's profile with one
that has a keyring or replicas, for engines convostore did not create.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from convostore.errors import ConfigurationError
from convostore.sql.options import DEFAULT_DEADLINE_S, PoolerMode

if TYPE_CHECKING:
    from sqlalchemy.engine import Dialect
    from sqlalchemy.ext.asyncio import AsyncEngine

    from convostore.encryption import Keyring
    from convostore.sql.replicas import ReplicaSet

__all__ = [
    "Committers",
    "EngineProfile",
    "Family",
    "SQLiteDriver",
    "committers_of",
    "family_from_name",
    "profile_of",
    "replace_profile",
]

Family = Literal["sqlite", "postgresql", "mysql"]
"""A backend family; MySQL and MariaDB are one family (``"mysql"``)."""

SQLiteDriver = Literal["thin", "aiosqlite"]
"""How an SQLite engine reaches SQLite: convostore's thin adapter
(:mod:`convostore.sql.sqlite_driver`) or plain aiosqlite."""

T = TypeVar("T")

_ATTRIBUTE = "convostore_profile"
# Guards the first store of a default profile on an engine made elsewhere.
_lock = threading.RLock()


def family_from_name(name: str) -> Family:
    """The backend family of a dialect name; MySQL and MariaDB are one family.

    Raises:
        ConfigurationError: convostore does not support this backend.
    """
    if name == "sqlite":
        return "sqlite"
    if name == "postgresql":
        return "postgresql"
    if name in ("mysql", "mariadb"):
        return "mysql"
    raise ConfigurationError(f"unsupported database backend {name!r}")


class Committers:
    """The group committers of one engine (:mod:`convostore.sql.group_commit`), from
    :func:`committers_of`.

    Per event loop (held weakly, and a closed loop's are dropped at the next look-up, so a
    loop closed with a write in flight leaks nothing), then per kind of item. Several
    threads may ask at once, each for its own loop. Held by the engine itself (an attribute
    of its sync ``Engine``) and holding it back (each committer's runner), a cycle the
    collector frees: nothing global keeps a dropped engine alive. Not in the profile: the
    profile lives on the dialect, which SQLAlchemy may keep after the engine is gone (the
    PostgreSQL dialect's reflection methods, ``has_table`` included, are cached by
    ``functools.lru_cache`` on it), and committers there kept every disposed engine alive.
    """

    __slots__ = ("_lock", "_per_loop")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Any]] = (
            weakref.WeakKeyDictionary()
        )

    def get(self, loop: asyncio.AbstractEventLoop, kind: str, make: Callable[[], T]) -> T:
        """The committer of ``kind`` on ``loop``, made by ``make()`` on first use."""
        with self._lock:
            self._drop_closed()
            per_kind = self._per_loop.get(loop)
            if per_kind is None:
                per_kind = self._per_loop[loop] = {}
            found: T | None = per_kind.get(kind)
            if found is None:
                found = per_kind[kind] = make()
            return found

    def on(self, loop: asyncio.AbstractEventLoop) -> list[Any]:
        """The committers serving ``loop``."""
        with self._lock:
            return list(self._per_loop.get(loop, {}).values())

    def loops(self) -> int:
        """How many open event loops have committers."""
        with self._lock:
            self._drop_closed()
            return len(self._per_loop)

    def _drop_closed(self) -> None:
        for loop in [loop for loop in self._per_loop if loop.is_closed()]:
            del self._per_loop[loop]

    def __repr__(self) -> str:
        return "Committers()"


@dataclass(frozen=True, kw_only=True)
class EngineProfile:
    """Everything convostore decided about one engine when it was created.

    Made by :func:`convostore.create_engine` from the URL's options (see
    :mod:`convostore.sql.options`) and its arguments, which win; read with
    :func:`profile_of`. Frozen: a different setting means a different profile (see
    :func:`replace_profile`).

    Attributes:
        family: ``"sqlite"``, ``"postgresql"`` or ``"mysql"`` (MySQL and MariaDB).
        deadline: Seconds one public call of a façade may take, retries and lock waits
            included; ``None``: no deadline.
        pgbouncer: ``"transaction"``: the URL is PgBouncer in transaction pooling mode
            (see :mod:`convostore.sql.pgbouncer`); ``"session"``; ``None``: no PgBouncer.
        replicas: The read replicas the engine's stores read from (``read_url=``), which
            are disposed with it.
        keyring: Payloads are encrypted at rest with it (:mod:`convostore.encryption`).
        search_index: ``False``: the engine writes no search feed (``search_index=False``).
        read_only: An SQLite file opened read-only: no write, no migration.
        sqlite_driver: On SQLite, the thin adapter or aiosqlite; ``None`` elsewhere.
        sqlite_writer: On an SQLite file with the writer on, the file (its real path)
            whose writer thread takes the façades' write transactions
            (:mod:`convostore.sql.sqlite_writer`); ``None``: writes stay on the engine.
        sqlite_precompile: The writer runs hot statements precompiled; ``False`` runs
            every statement through SQLAlchemy Core (tests compare the two).
    """

    family: Family
    deadline: float | None = DEFAULT_DEADLINE_S
    pgbouncer: PoolerMode | None = None
    replicas: ReplicaSet | None = None
    keyring: Keyring | None = None
    search_index: bool = True
    read_only: bool = False
    sqlite_driver: SQLiteDriver | None = None
    sqlite_writer: str | None = None
    sqlite_precompile: bool = True

    @property
    def clear_text(self) -> bool:
        """Whether anything derived from message text may be stored in clear: ``False``
        only with a keyring whose ``clear_text`` is off."""
        return self.keyring is None or self.keyring.clear_text

    @property
    def writes_search_index(self) -> bool:
        """Whether the engine writes the search feed: not with ``search_index=False``, nor
        with a keyring that stores nothing in clear."""
        return self.search_index and self.clear_text

    @property
    def runs_in_transactions(self) -> bool:
        """Whether every statement must run inside an explicit transaction (PgBouncer in
        transaction pooling mode)."""
        return self.pgbouncer == "transaction"

    def __repr__(self) -> str:
        # Never a password (the replicas' URLs are redacted) nor a key (the keyring's repr
        # shows only its current key id and clear-text policy).
        shown = []
        for each in dataclasses.fields(self):
            value = getattr(self, each.name)
            if each.name == "replicas" and value is not None:
                from convostore.settings import redact

                value = [redact(engine.url) for engine in value.engines]
            shown.append(f"{each.name}={value!r}")
        return f"EngineProfile({', '.join(shown)})"


def profile_of(target: AsyncEngine | Any) -> EngineProfile:
    """The profile of an engine (an ``AsyncEngine``, a sync ``Engine``, a connection, or
    their dialect).

    An engine :func:`convostore.create_engine` did not make gets the default profile of
    its backend (stored, so it is made once): the default deadline, no keyring,
    the search index on, and on SQLite aiosqlite without the writer thread.

    Raises:
        ConfigurationError: The engine's backend is not one convostore supports.
    """
    dialect = getattr(target, "dialect", target)
    found: EngineProfile | None = getattr(dialect, _ATTRIBUTE, None)
    if found is not None:
        return found
    with _lock:
        found = getattr(dialect, _ATTRIBUTE, None)
        if found is None:
            kind = family_from_name(dialect.name)
            # SQLAlchemy's own asyncio SQLite dialect runs on aiosqlite.
            driver: SQLiteDriver | None = "aiosqlite" if kind == "sqlite" else None
            found = EngineProfile(family=kind, sqlite_driver=driver)
            setattr(dialect, _ATTRIBUTE, found)
    return found


def stored_profile(dialect: Dialect) -> EngineProfile | None:
    """The profile stored on ``dialect``, if any (for the column types, which bind and
    read through dialects convostore may not have made: then the defaults apply)."""
    found: EngineProfile | None = getattr(dialect, _ATTRIBUTE, None)
    return found


_COMMITTERS = "_convostore_committers"


def committers_of(engine: AsyncEngine) -> Committers:
    """The group committers of ``engine`` (made on first use); a copy of the engine made
    with ``execution_options`` or :func:`~convostore.sql.engine.twin_engine` has its own."""
    owner = vars(engine.sync_engine)
    with _lock:
        committers: Committers | None = owner.get(_COMMITTERS)
        if committers is None:
            committers = owner[_COMMITTERS] = Committers()
    return committers


def store_profile(target: AsyncEngine | Any, profile: EngineProfile) -> None:
    """Make ``profile`` the profile of ``target`` (an engine or its dialect)."""
    setattr(getattr(target, "dialect", target), _ATTRIBUTE, profile)


def replace_profile(engine: AsyncEngine, **changes: Any) -> EngineProfile:
    """Give ``engine`` a copy of its profile with ``changes``, and return it.

    For settings that cannot be passed to :func:`convostore.create_engine` because the
    engine was made elsewhere (the keyring: :func:`convostore.encryption.install`; read
    replicas: :func:`convostore.sql.replicas.attach_replicas`); an engine convostore made
    takes its settings as arguments instead.
    """
    with _lock:
        profile = dataclasses.replace(profile_of(engine), **changes)
        store_profile(engine, profile)
    return profile

"""Connection options convostore reads from the URL's query string.

They let a deployment tune convostore from the one string it already configures
(``CONVOSTORE_DATABASE_URL``), and are removed before the driver sees the URL:

=================  ==========================================================================
``deadline``       seconds one public call may take, retries and lock waits included
                   (default :data:`DEFAULT_DEADLINE_S`); ``0`` turns the deadline off
``pgbouncer``      ``transaction``: the URL points at PgBouncer in transaction pooling mode
                   (see :mod:`convostore.sql.pgbouncer`); ``session``: PgBouncer in session
                   mode, which needs nothing special
``pool_size``      connections the pool keeps open (SQLAlchemy's default: 5)
``max_overflow``   connections it may open beyond ``pool_size`` under load (default 10)
``pool_timeout``   seconds a call waits for a free connection (default 30)
``pool_recycle``   seconds after which a connection is replaced at checkout (default never)
``pool_pre_ping``  ``true``/``false``: test each connection at checkout
``search_index``   ``false``: write no search feed (messages written are not found by
                   ``search()`` until ``convostore search --backfill``); default ``true``
``sqlite_writer``  ``false``: SQLite writes stay on the async engine, where its event hooks
                   see every statement (see :mod:`convostore.sql.sqlite_writer`)
=================  ==========================================================================

Keyword arguments of :func:`convostore.create_engine` with the same names override the URL;
what an engine ends up with is its :class:`~convostore.sql.profile.EngineProfile`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import URL

from convostore.errors import ConfigurationError

__all__ = [
    "DEFAULT_DEADLINE_S",
    "QUERY_KEYS",
    "UrlOptions",
    "parse_deadline",
    "url_options",
]

DEFAULT_DEADLINE_S = 30.0
"""The default per-call deadline: long enough for any call of a healthy database under load
(the retry pauses add up to 0.71 s; a lock is normally held for milliseconds), short enough
that a stuck lock or an unreachable server surfaces as an error rather than a hang."""

PoolerMode = Literal["transaction", "session"]

_POOL_INTS = ("pool_size", "max_overflow")
_POOL_FLOATS = ("pool_timeout", "pool_recycle")
QUERY_KEYS = frozenset(
    {
        "deadline",
        "pgbouncer",
        "pool_pre_ping",
        "search_index",
        "sqlite_writer",
        *_POOL_INTS,
        *_POOL_FLOATS,
    }
)
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True)
class UrlOptions:
    """What a URL's query string asked of convostore."""

    deadline: float | None = DEFAULT_DEADLINE_S
    pgbouncer: PoolerMode | None = None
    pool: dict[str, Any] = field(default_factory=dict)
    search_index: bool = True
    sqlite_writer: bool | None = None


def url_options(url: URL) -> UrlOptions:
    """Read (and check) convostore's query parameters of ``url``.

    Raises:
        ConfigurationError: A value is not usable (the message names the parameter).
    """
    query = url.query
    pool: dict[str, Any] = {}
    for name in _POOL_INTS:
        if name in query:
            pool[name] = _number(query, name, int, minimum=-1 if name == "max_overflow" else 1)
    for name in _POOL_FLOATS:
        if name in query:
            pool[name] = _number(query, name, float, minimum=-1 if name == "pool_recycle" else 0)
    if "pool_pre_ping" in query:
        flag = _single(query, "pool_pre_ping").lower()
        if flag not in _TRUE | _FALSE:
            raise ConfigurationError(f"pool_pre_ping={flag!r} in the URL: use true or false")
        pool["pool_pre_ping"] = flag in _TRUE
    search_index = True
    if "search_index" in query:
        flag = _single(query, "search_index").lower()
        if flag not in _TRUE | _FALSE:
            raise ConfigurationError(f"search_index={flag!r} in the URL: use true or false")
        search_index = flag in _TRUE
    sqlite_writer = None
    if "sqlite_writer" in query:
        flag = _single(query, "sqlite_writer").lower()
        if flag not in _TRUE | _FALSE:
            raise ConfigurationError(f"sqlite_writer={flag!r} in the URL: use true or false")
        sqlite_writer = flag in _TRUE
    deadline: float | None = DEFAULT_DEADLINE_S
    if "deadline" in query:
        deadline = parse_deadline(_single(query, "deadline"))
    pgbouncer: PoolerMode | None = None
    if "pgbouncer" in query:
        if url.get_backend_name() != "postgresql":
            raise ConfigurationError("pgbouncer= in the URL applies to PostgreSQL URLs only")
        mode = _single(query, "pgbouncer").lower()
        if mode == "statement":
            raise ConfigurationError(
                "pgbouncer=statement: statement pooling cannot run multi-statement "
                "transactions, which every convostore write needs; set PgBouncer's "
                "pool_mode to transaction and use pgbouncer=transaction"
            )
        if mode not in ("transaction", "session"):
            raise ConfigurationError(
                f"pgbouncer={mode!r} in the URL: use transaction (PgBouncer's pool_mode) or session"
            )
        pgbouncer = "transaction" if mode == "transaction" else "session"
    return UrlOptions(
        deadline=deadline,
        pgbouncer=pgbouncer,
        pool=pool,
        search_index=search_index,
        sqlite_writer=sqlite_writer,
    )


def parse_deadline(value: float | str | None) -> float | None:
    """A deadline in seconds (``None``: no deadline); ``0``, ``none`` and ``off`` turn it off.

    Raises:
        ConfigurationError: Negative, not a number, or not finite.
    """
    if value is None:
        return None
    if isinstance(value, str):
        if value.strip().lower() in ("none", "off"):
            return None
        try:
            value = float(value)
        except ValueError as exc:
            raise ConfigurationError(f"deadline={value!r}: expected seconds") from exc
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"deadline={value!r}: expected seconds")
    if not math.isfinite(value) or value < 0:
        raise ConfigurationError(f"deadline={value!r}: expected a finite number >= 0")
    return None if value == 0 else float(value)


def _single(query: Any, name: str) -> str:
    value = query[name]
    if not isinstance(value, str):  # ?x=1&x=2
        raise ConfigurationError(f"{name} is given more than once in the URL")
    return value


def _number(query: Any, name: str, kind: type[float], *, minimum: float) -> Any:
    text = _single(query, name)
    try:
        value = kind(text)
    except ValueError as exc:
        raise ConfigurationError(f"{name}={text!r} in the URL is not a number") from exc
    if not math.isfinite(value) or value < minimum:
        raise ConfigurationError(f"{name}={text!r} in the URL: expected at least {minimum:g}")
    return value

"""Where the database is: URL resolution and the short forms users paste.

Precedence: an explicit argument, then ``CONVOSTORE_DATABASE_URL``, then ``DATABASE_URL``,
then an SQLite file ``convostore.db`` in the working directory.

``DATABASE_URL`` is shared with every other tool of an environment (SQLAlchemy, Flask,
Alembic), so it is read with SQLAlchemy's rules: ``sqlite:///app.db`` is ``./app.db``.
An argument and ``CONVOSTORE_DATABASE_URL`` keep agentstr's ``sqlite://PATH`` form (its
``conn_str``), where ``sqlite:///app.db`` is ``/app.db``. Where the two readings of a
``sqlite:///`` URL in either variable differ, an :class:`AmbiguousSQLiteURL` warning says
which one was used (an argument is the caller's own code, written in the documented form:
no warning).

Accepted forms (see ``docs/backends.md``):

* any SQLAlchemy URL with an async driver, e.g. ``sqlite+aiosqlite:///x.db`` or
  ``postgresql+asyncpg://...``; these follow SQLAlchemy's rules exactly;
* agentstr's ``sqlite://PATH``: everything after ``sqlite://`` is the file path, so
  ``sqlite:///var/data/x.db`` is the absolute path ``/var/data/x.db`` and
  ``sqlite://:memory:`` is an in-memory database;
* ``postgres://``, ``postgresql://``, ``mysql://`` and ``mariadb://`` without a driver, which
  are given the async driver convostore supports;
* a bare file path (``chat.db``, ``/tmp/chat.db``) or ``:memory:``, for :func:`convostore.connect`.
"""

from __future__ import annotations

import os
import warnings
from urllib.parse import parse_qsl

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from convostore.errors import ConfigurationError

__all__ = [
    "DEFAULT_SQLITE_PATH",
    "ENV_VARS",
    "AmbiguousSQLiteURL",
    "configured_url",
    "is_memory_sqlite",
    "redact",
    "resolve_url",
]

DEFAULT_SQLITE_PATH = "convostore.db"
ENV_VARS = ("CONVOSTORE_DATABASE_URL", "DATABASE_URL")

# The async driver used when a URL names a backend without one.
_ASYNC_DRIVERS = {
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "mysql": "mysql+asyncmy",
    "mariadb": "mariadb+asyncmy",
}
_SYNC_ONLY_DRIVERS = {"pysqlite", "psycopg2", "pymysql", "mysqldb", "mysqlconnector", "pg8000"}


class AmbiguousSQLiteURL(UserWarning):
    """A ``sqlite:///PATH`` URL that agentstr and SQLAlchemy read as different files."""


def resolve_url(url: str | URL | None = None) -> URL:
    """Turn what a user gave (or the environment) into an async SQLAlchemy URL.

    Args:
        url: A URL, an agentstr-style ``sqlite://PATH``, a file path, or ``None`` to consult
            ``CONVOSTORE_DATABASE_URL``, then ``DATABASE_URL``, then use ``convostore.db``.

    Raises:
        ConfigurationError: The URL cannot be parsed or names a synchronous driver.
    """
    if url is None:
        url = configured_url()
    if url is None:
        return _sqlite_url(DEFAULT_SQLITE_PATH)
    if isinstance(url, URL):
        return _with_async_driver(url)
    text = url.strip()
    if not text:
        raise ConfigurationError("the database URL is empty")
    if text.startswith("sqlite://"):
        # agentstr's form: the remainder is a path, never SQLAlchemy's slash-counting rules.
        path, _, query = text[len("sqlite://") :].partition("?")
        # The query is options, as in any URL (?mode=ro, ?deadline=5), not part of the path.
        return _sqlite_url(path or ":memory:").update_query_pairs(
            parse_qsl(query, keep_blank_values=True)
        )
    if "://" not in text:
        return _sqlite_url(text)
    try:
        parsed = make_url(text)
    except (ArgumentError, ValueError) as exc:
        # A non-numeric port raises ValueError rather than ArgumentError.
        raise ConfigurationError(f"cannot parse database URL {_redact_text(text)!r}") from exc
    if "@" in (parsed.host or ""):
        # An unescaped "@" in the password: SQLAlchemy would take its tail for the host.
        raise ConfigurationError(
            f"cannot parse database URL {_redact_text(text)!r}: escape '@' in the password as %40"
        )
    return _with_async_driver(parsed)


def configured_url() -> str | None:
    """The URL the environment configures (``CONVOSTORE_DATABASE_URL``, then
    ``DATABASE_URL``), or ``None``.

    A driverless ``sqlite:///`` URL from ``DATABASE_URL`` is returned with the driver named
    (``sqlite+aiosqlite://``), so that it resolves with SQLAlchemy's rules as everything
    else that reads ``DATABASE_URL`` does.
    """
    for name in ENV_VARS:
        value = os.environ.get(name)
        if not value:
            continue
        text = value.strip()
        relative = _sqlalchemy_relative_path(text)
        if name != "DATABASE_URL":
            if relative is not None:
                warnings.warn(
                    f"{name}={text!r} is read in agentstr's form: the absolute path "
                    f"'/{relative}' (SQLAlchemy would read the relative {relative!r}); write "
                    f"'sqlite:////{relative}' for the absolute path, or "
                    f"'sqlite+aiosqlite:///{relative}' for the relative one",
                    AmbiguousSQLiteURL,
                    stacklevel=2,
                )
            return value
        if not text.startswith("sqlite:///"):
            # Two slashes (sqlite://data/x.db, sqlite://:memory:) SQLAlchemy cannot read
            # as a path at all (it takes "data" for a host): agentstr's reading stays.
            return value
        if relative is not None:
            warnings.warn(
                f"DATABASE_URL={text!r} is read with SQLAlchemy's rules: the relative path "
                f"{relative!r} (agentstr would read the absolute '/{relative}'); write "
                f"'sqlite:////{relative}' for the absolute path, or set "
                "CONVOSTORE_DATABASE_URL, which is read in agentstr's form",
                AmbiguousSQLiteURL,
                stacklevel=2,
            )
        return "sqlite+aiosqlite://" + text[len("sqlite://") :]
    return None


def _sqlalchemy_relative_path(text: str) -> str | None:
    """The relative path SQLAlchemy reads in ``sqlite:///PATH`` where agentstr's form reads
    the absolute ``/PATH``; ``None`` where the two agree (``sqlite:////abs``, ``:memory:``)."""
    rest = text[len("sqlite:///") :] if text.startswith("sqlite:///") else None
    if not rest or rest.startswith("/"):
        return None
    path = rest.partition("?")[0]
    return None if path in ("", ":memory:") else path


def is_memory_sqlite(url: URL) -> bool:
    """Whether ``url`` is a private in-memory SQLite database."""
    database = url.database or ""
    # SQLAlchemy moves ``?mode=memory`` of a ``file:`` URI into the query.
    return url.get_backend_name() == "sqlite" and (
        database in ("", ":memory:")
        or "mode=memory" in database
        or url.query.get("mode") == "memory"
    )


# Query parameters that carry secrets (drivers accept passwords there too).
_SECRET_QUERY_KEYS = frozenset({"password", "passwd", "sslpassword", "ssl_key_password"})


def redact(url: str | URL) -> str:
    """Render a URL for messages and logs with any password hidden (in the query too)."""
    if isinstance(url, URL):
        secrets = _SECRET_QUERY_KEYS.intersection(key.lower() for key in url.query)
        if secrets:
            hidden = {key: "***" for key in url.query if key.lower() in secrets}
            url = url.update_query_dict(hidden)
        return url.render_as_string(hide_password=True)
    return _redact_text(url)


def _redact_text(text: str) -> str:
    try:
        url: URL | None = make_url(text)
    except (ArgumentError, ValueError):
        url = None
    # An "@" left in the host means SQLAlchemy split an unescaped password at its first
    # "@"; the last "@" is where the credentials really end.
    if url is not None and "@" not in (url.host or ""):
        return redact(url)
    scheme, sep, rest = text.partition("://")
    if not sep or "@" not in rest:
        return text
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


def _sqlite_url(path: str) -> URL:
    return URL.create("sqlite+aiosqlite", database=path)


def _with_async_driver(url: URL) -> URL:
    url = _driver_url(url)
    if url.drivername == "postgresql+asyncpg" and "sslmode" in url.query:
        # libpq's sslmode, as pasted from every hosting dashboard, is asyncpg's ssl.
        sslmode = url.query["sslmode"]
        url = url.difference_update_query(["sslmode"]).update_query_dict({"ssl": sslmode})
    return url


def _driver_url(url: URL) -> URL:
    backend, _, driver = url.drivername.partition("+")
    if backend != "sqlite" and backend not in _ASYNC_DRIVERS:
        raise ConfigurationError(f"unsupported database backend {backend!r} in {redact(url)!r}")
    if not driver:
        if backend == "sqlite":
            return url.set(drivername="sqlite+aiosqlite")
        return url.set(drivername=_ASYNC_DRIVERS[backend])
    if driver in _SYNC_ONLY_DRIVERS:
        raise ConfigurationError(
            f"driver {driver!r} in {redact(url)!r} is synchronous; use an async driver "
            "(aiosqlite, asyncpg, asyncmy or aiomysql)"
        )
    if backend == "postgres":
        return url.set(drivername=f"postgresql+{driver}")
    return url

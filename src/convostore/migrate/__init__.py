"""Run the packaged Alembic migrations from Python.

The migrations live in ``migrations/`` at the top of the repository and ship inside the wheel
as ``convostore/migrations``, so an installed package can migrate any database::

    from convostore import migrate
    await migrate.upgrade("postgresql://user@host/db")

or, from a shell, ``python -m convostore.migrate upgrade --url URL``.

Every run holds a database-wide lock (:func:`migration_lock`), so several processes starting
at once migrate the database once and the others find it at head.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import URL, Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool

from convostore.engine import create_engine, family, family_from_name
from convostore.errors import (
    ConfigurationError,
    ConvostoreError,
    DatabaseError,
    SchemaVersionError,
    translate_errors,
)
from convostore.settings import redact

__all__ = [
    "alembic_config",
    "assert_at_head",
    "current",
    "downgrade",
    "head",
    "migration_lock",
    "migrations_dir",
    "prepare",
    "upgrade",
]

_LOCK_NAME = "convostore_migrations"
_PG_LOCK_KEY = 0x636F6E766F  # "convo"
_MYSQL_LOCK_TIMEOUT_S = 300

Target = str | URL | AsyncEngine | None

# Engines already known to be at head, so façades check once per engine, not per call.
_prepared: weakref.WeakSet[AsyncEngine] = weakref.WeakSet()


def migrations_dir() -> Path:
    """The directory holding ``env.py`` and ``versions/``: in the wheel, or in the checkout."""
    package = Path(__file__).resolve().parents[1]  # .../convostore
    for candidate in (package / "migrations", package.parents[1] / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise ConfigurationError("convostore's migrations are missing from this installation")


def alembic_config(url: str | URL | None = None) -> Config:
    """An Alembic :class:`~alembic.config.Config` for the packaged migrations.

    Args:
        url: Passed to ``env.py`` as ``-x url=...``; ``None`` lets it resolve the URL the
            way the library does.
    """
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    if url is not None:
        rendered = url.render_as_string(hide_password=False) if isinstance(url, URL) else url
        config.cmd_opts = argparse.Namespace(x=[f"url={rendered}"])
    return config


@functools.cache
def head() -> str:
    """The revision this version of convostore expects."""
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    if len(heads) != 1:
        raise ConfigurationError(f"the migrations have {len(heads)} heads; expected one")
    return heads[0]


async def upgrade(target: Target = None, revision: str = "head") -> None:
    """Upgrade the database at ``target`` (URL or engine) to ``revision``."""
    await _run(target, "upgrade", revision)


async def downgrade(target: Target, revision: str) -> None:
    """Downgrade the database at ``target`` (URL or engine) to ``revision`` (``"base"``: empty)."""
    await _run(target, "downgrade", revision)


async def current(target: Target = None) -> str | None:
    """The database's current revision, or ``None`` if it has never been migrated."""
    engine, owned = _engine_for(target)
    try:
        with translate_errors():
            async with engine.connect() as conn:
                return await conn.run_sync(_current_revision)
    finally:
        if owned:
            await engine.dispose()


async def assert_at_head(engine: AsyncEngine) -> None:
    """Raise :class:`SchemaVersionError` unless the database is at :func:`head`."""
    revision = await current(engine)
    expected = head()
    if revision != expected:
        raise _version_error(engine.url, revision, expected)


async def prepare(engine: AsyncEngine, *, migrate: bool | None = None) -> None:
    """Bring a database to head, or check it is there, as a façade starts.

    SQLite databases are embedded: they are upgraded unless ``migrate=False``. Server
    databases are only checked unless ``migrate=True``, since their schema usually belongs
    to a deployment step. A database at a revision this code does not know (newer code has
    migrated it) is refused either way.

    Raises:
        SchemaVersionError: The database is not at head and may not be migrated here.
    """
    if engine in _prepared:
        return
    if migrate is None:
        migrate = family(engine) == "sqlite"
    revision = await current(engine)
    expected = head()
    if revision == expected:
        _prepared.add(engine)
        return
    if revision is not None and not _is_known(revision):
        raise _version_error(engine.url, revision, expected)
    if not migrate:
        raise _version_error(engine.url, revision, expected)
    await upgrade(engine)
    _prepared.add(engine)


@contextmanager
def migration_lock(connection: Connection) -> Iterator[None]:
    """Hold the database-wide migration lock, and commit what ran under it.

    * SQLite: ``BEGIN IMMEDIATE`` takes the write lock, and the migrations run in that one
      transaction (SQLite has transactional DDL), with foreign keys off so that table
      rebuilds in batch mode cannot cascade; ``PRAGMA foreign_key_check`` runs before commit.
    * PostgreSQL: ``pg_advisory_xact_lock``, released by the commit.
    * MySQL/MariaDB: ``GET_LOCK``, released after the (auto-committed) DDL.

    Statements run before Alembic is configured, so Alembic sees an external transaction
    and leaves committing to this function.
    """
    kind = family_from_name(connection.dialect.name)
    if kind == "sqlite":
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        connection.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            yield
            problems = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if problems:
                raise DatabaseError(f"migration left foreign key violations: {problems[:5]}")
            connection.commit()
        except BaseException:
            connection.rollback()
            raise
        finally:
            connection.exec_driver_sql("PRAGMA foreign_keys=ON")
            connection.commit()
    elif kind == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        try:
            yield
            connection.commit()
        except BaseException:
            connection.rollback()
            raise
    else:
        got = connection.execute(
            text("SELECT GET_LOCK(:name, :timeout)"),
            {"name": _LOCK_NAME, "timeout": _MYSQL_LOCK_TIMEOUT_S},
        ).scalar()
        if got != 1:
            raise DatabaseError("timed out waiting for the migration lock (GET_LOCK)")
        try:
            yield
            connection.commit()
        except BaseException:
            connection.rollback()
            raise
        finally:
            connection.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": _LOCK_NAME})
            connection.commit()


async def _run(target: Target, name: str, revision: str) -> None:
    engine, owned = _engine_for(target)
    try:
        with translate_errors():
            async with engine.connect() as conn:
                await conn.run_sync(_run_command, name, revision)
    finally:
        if owned:
            await engine.dispose()


def _run_command(connection: Connection, name: str, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    try:
        getattr(command, name)(config, revision)
    except CommandError as exc:
        # Alembic's own error type would leak out of the public API; say which side is wrong.
        found = _current_revision(connection)
        if found is not None and not _is_known(found):
            raise _version_error(connection.engine.url, found, head()) from exc
        raise ConfigurationError(f"cannot {name} to {revision!r}: {exc}") from exc


def _current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _is_known(revision: str) -> bool:
    script = ScriptDirectory.from_config(alembic_config())
    try:
        return script.get_revision(revision) is not None
    except Exception:  # alembic raises several types for unknown or malformed ids
        return False


def _engine_for(target: Target) -> tuple[AsyncEngine, bool]:
    if isinstance(target, AsyncEngine):
        return target, False
    return create_engine(target, poolclass=NullPool), True


def _version_error(url: URL, revision: str | None, expected: str) -> SchemaVersionError:
    shown = redact(url)
    if revision is not None and not _is_known(revision):
        return SchemaVersionError(
            f"database {shown} is at revision {revision}, which this version of convostore "
            f"does not know (it expects {expected}): upgrade convostore"
        )
    return SchemaVersionError(
        f"database {shown} is at revision {revision or '(empty)'}, convostore expects "
        f"{expected}: run `python -m convostore.migrate upgrade --url '{shown}'` "
        f"(or `alembic -x url='{shown}' upgrade head` in a checkout), or pass migrate=True"
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m convostore.migrate {upgrade,downgrade,current} [--url URL] [REVISION]``."""
    parser = argparse.ArgumentParser(prog="python -m convostore.migrate")
    parser.add_argument("action", choices=["upgrade", "downgrade", "current", "head"])
    parser.add_argument("revision", nargs="?", default=None)
    parser.add_argument("--url", default=None, help="database URL (default: the library's)")
    args = parser.parse_args(argv)
    actions: dict[str, Any] = {
        "upgrade": lambda: upgrade(args.url, args.revision or "head"),
        "downgrade": lambda: downgrade(args.url, args.revision or "-1"),
        "current": lambda: current(args.url),
    }
    if args.action == "head":
        print(head())
        return 0
    try:
        result = asyncio.run(actions[args.action]())
    except ConvostoreError as exc:
        # A message (already free of passwords) rather than a traceback, and a failing status.
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.action == "current":
        print(result or "(empty)")
    return 0

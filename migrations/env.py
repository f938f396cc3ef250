"""Alembic environment for convostore (async).

URL precedence: ``-x url=...``, then the library's own resolution
(``CONVOSTORE_DATABASE_URL``, ``DATABASE_URL``, then ``convostore.db``). When
``convostore.migrate`` runs a command it hands over its own connection in
``config.attributes["connection"]`` instead.
"""

from __future__ import annotations

import asyncio
import logging.config

from alembic import context
from sqlalchemy import Connection
from sqlalchemy.pool import NullPool

from convostore.migrate import DEADLINE_ATTRIBUTE, migration_lock
from convostore.sql.engine import create_engine
from convostore.sql.tables import Base, described_here

config = context.config
if config.config_file_name is not None:
    logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _include_object(
    _object: object, name: str | None, type_: str, _reflected: bool, _compare_to: object
) -> bool:
    # The search index of revisions 0005 and 0007 is backend-specific SQL the models do not
    # describe.
    return described_here(name, type_, context.get_context().dialect.name)


def _url() -> str | None:
    return context.get_x_argument(as_dictionary=True).get("url")


def run_migrations_offline() -> None:
    """Render the SQL instead of running it (``alembic upgrade head --sql``)."""
    engine = create_engine(_url())
    context.configure(
        url=engine.url.render_as_string(hide_password=False),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


class _NamedPrimaryKeys(logging.Filter):
    """MariaDB answers each named primary key with warning 1280 ("Name 'pk_...' ignored for
    PRIMARY key": its primary key is always called PRIMARY), which asyncmy logs: ten lines
    on stderr per migration, with nothing to act on. Every other warning passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Name '") and message.endswith("ignored for PRIMARY key."))


def do_run_migrations(connection: Connection) -> None:
    driver_log = logging.getLogger("asyncmy")
    quiet = _NamedPrimaryKeys()
    driver_log.addFilter(quiet)
    try:
        # The deadline convostore.migrate.prepare runs under bounds the wait for the lock.
        with migration_lock(connection, config.attributes.get(DEADLINE_ATTRIBUTE)):
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                render_as_batch=connection.dialect.name == "sqlite",
                compare_type=True,
                include_object=_include_object,
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        driver_log.removeFilter(quiet)


async def run_async_migrations() -> None:
    engine = create_engine(_url(), poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        do_run_migrations(connection)
    else:
        asyncio.run(run_async_migrations())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

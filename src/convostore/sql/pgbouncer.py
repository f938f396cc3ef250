"""PostgreSQL behind PgBouncer in transaction pooling mode (``?pgbouncer=transaction``).

In transaction pooling mode PgBouncer lends a server connection to a client for one
transaction at a time, so nothing may outlive a transaction on the server side:

* **Prepared statements.** asyncpg prepares every statement, and caches them per
  connection under names it numbers per connection. Behind PgBouncer (1.18 and every
  version without ``max_prepared_statements``) a cached statement may be looked for on
  another server connection ("prepared statement ... does not exist"), and two clients'
  numbered names collide on one ("... already exists"). convostore turns both caches off
  (asyncpg's ``statement_cache_size`` and SQLAlchemy's ``prepared_statement_cache_size``)
  and names each statement uniquely (:func:`unique_statement_name`).
* **Statements outside a transaction.** A statement run in autocommit mode is parsed and
  executed in separate protocol steps that PgBouncer may send to different server
  connections; every call therefore runs inside ``BEGIN``/``COMMIT``, including the
  single-statement appends convostore otherwise runs in autocommit
  (:func:`runs_in_transactions`).
* **Session state.** convostore keeps none: the migration lock is
  ``pg_advisory_xact_lock`` (released by the migration's own commit) and per-call server
  settings are transaction-local; connection-level server settings that PgBouncer would
  refuse as startup parameters are not sent.

``?pgbouncer=session`` (PgBouncer in session mode) needs none of this and changes nothing.
"""

from __future__ import annotations

from typing import Any
from uuid import uuid4

from sqlalchemy.ext.asyncio import AsyncEngine

from convostore.sql.profile import profile_of

__all__ = ["DRIVER_ARGUMENTS", "runs_in_transactions", "unique_statement_name"]


def unique_statement_name() -> str:
    """A prepared-statement name no other client of the same PgBouncer will use."""
    return f"__convostore_{uuid4().hex}__"


# asyncpg's and SQLAlchemy's connect arguments for transaction pooling.
DRIVER_ARGUMENTS: dict[str, Any] = {
    "statement_cache_size": 0,
    "prepared_statement_cache_size": 0,
    "prepared_statement_name_func": unique_statement_name,
}


def runs_in_transactions(engine: AsyncEngine) -> bool:
    """Whether every statement on ``engine`` must run inside an explicit transaction."""
    return profile_of(engine).runs_in_transactions

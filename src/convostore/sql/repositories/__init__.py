"""Repositories: the SQL of each aggregate, over an ``AsyncSession`` they never commit.

They run their statements on a :data:`~convostore.sql.dml.Executor`: the caller's
``AsyncSession`` in a unit of work, or the ``AsyncConnection`` of a transaction a façade owns
(cheaper than a session for one short call; they need nothing but ``execute()``).

Each repository is built for one scope (an agent, or a project + session) and puts that
scope's key into every statement it issues, so no method can touch another tenant's rows.
They may flush; commit, rollback and close belong to the caller (the façades in
:mod:`convostore.database` and :mod:`convostore.context`, or the user's unit of work).

One module per aggregate: :mod:`.users`, :mod:`.threads` (agent threads and their
messages), :mod:`.sessions` (context-store sessions), :mod:`.search` (both message tables);
:mod:`.rows` holds what they share (tables, columns, row conversion).

Hot paths use Core statements, built once, through the session rather than ORM
unit-of-work flushes: an append is one counter bump plus one ``INSERT`` (a single
statement on PostgreSQL, see :func:`convostore.sql.counters.insert_at_counter`).
"""

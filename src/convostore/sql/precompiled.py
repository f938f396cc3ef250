"""Hot statements compiled once from Core and bound through the columns' own processors.

A Core statement executed on a SQLAlchemy ``Connection`` costs ~70 µs of CPU on this
project's reference machine, most of it in the execution context (events, the compiled
cache lookup, parameter processing, the result's metadata); the same statement run on the
DB-API cursor with its parameters already converted costs ~20 µs. :class:`Precompiled`
keeps the first half of SQLAlchemy's work (the SQL text compiled for the dialect, the order
of the positional parameters and each bind parameter's processor, so ``CompressedJSON``,
``UTCDateTime`` and the rest convert values exactly as in a Core execution) and does the
second half on the cursor itself.

Only statements whose results need no result processing qualify (their rows are plain
integers and strings: positions, counters): :func:`compile_hot` returns ``None`` for any
other, and the caller runs it through Core. What runs here is invisible to SQLAlchemy's
execution events (``before_cursor_execute``, echo); docs/performance.md says which
statements and how to turn it off.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement

__all__ = ["Memo", "Precompiled", "Rows", "compile_hot"]

_Bind = tuple[str, Callable[[Any], Any] | None, bool, Any]

Memo = dict[tuple[int, int], tuple[Any, Any]]
"""Converted bind values of one unit of work: (processor id, value id) → (value, converted)."""


class Rows:
    """The part of a SQLAlchemy result the repositories use on a hot statement's rows."""

    __slots__ = ("_rows", "lastrowid", "rowcount")

    def __init__(self, rows: list[Any], rowcount: int, lastrowid: int | None) -> None:
        self._rows = rows
        self.rowcount = rowcount
        self.lastrowid = lastrowid

    def all(self) -> list[Any]:
        return self._rows

    def first(self) -> Any:
        return self._rows[0] if self._rows else None

    def one(self) -> Any:
        if len(self._rows) != 1:
            raise (
                sa_exc.NoResultFound("expected one row")
                if not self._rows
                else (sa_exc.MultipleResultsFound("expected one row"))
            )
        return self._rows[0]

    def one_or_none(self) -> Any:
        if len(self._rows) > 1:
            raise sa_exc.MultipleResultsFound("expected at most one row")
        return self._rows[0] if self._rows else None

    def scalar(self) -> Any:
        return self._rows[0][0] if self._rows else None

    def scalar_one(self) -> Any:
        return self.one()[0]

    def scalar_one_or_none(self) -> Any:
        row = self.one_or_none()
        return None if row is None else row[0]


class Precompiled:
    """One statement compiled for one dialect; :meth:`run` executes it on a DB-API cursor."""

    __slots__ = ("binds", "returns_rows", "sql")

    def __init__(self, sql: str, binds: Sequence[_Bind], *, returns_rows: bool = True) -> None:
        self.sql = sql
        self.binds = tuple(binds)
        # Whether it has result rows (RETURNING, SELECT) or only a row count.
        self.returns_rows = returns_rows

    def parameters(self, values: Mapping[str, Any], memo: Memo | None = None) -> tuple[Any, ...]:
        """The positional DB-API parameters for ``values`` (bind parameter name → value).

        ``memo`` (one per unit of work) keeps each converted value by the identity of the
        value and its processor, so an object bound several times in a unit is converted
        once: an append binds its timestamp three times (the message's ``created_at``, the
        session's ``created_at`` and ``updated_at``), each a ``strftime``-like formatting.
        Only datetimes are kept (immutable; a processor is a pure function of its value),
        and the memo holds the value itself, so its identity cannot pass to another object
        while the memo lives.
        """
        if memo is None:
            return tuple(
                constant if fixed else (values[name] if process is None else process(values[name]))
                for name, process, fixed, constant in self.binds
            )
        out: list[Any] = []
        for name, process, fixed, constant in self.binds:
            if fixed:
                out.append(constant)
                continue
            value = values[name]
            if process is None or type(value) is not datetime:
                out.append(value if process is None else process(value))
                continue
            key = (id(process), id(value))
            seen = memo.get(key)
            if seen is None or seen[0] is not value:
                seen = memo[key] = (value, process(value))
            out.append(seen[1])
        return tuple(out)

    def run(
        self,
        dbapi_connection: sqlite3.Connection,
        values: Mapping[str, Any],
        memo: Memo | None = None,
    ) -> Rows:
        """Execute with ``values`` on ``dbapi_connection``; errors come as SQLAlchemy's.

        A failure is wrapped exactly as a Core execution would wrap it
        (``sqlalchemy.exc.DBAPIError.instance``), so retries and error translation see the
        same exception classes on both paths. ``memo``: as for :meth:`parameters`.
        """
        parameters = self.parameters(values, memo)
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(self.sql, parameters)
            rows = cursor.fetchall() if cursor.description is not None else []
            return Rows(rows, cursor.rowcount, cursor.lastrowid)
        except sqlite3.Error as exc:
            raise sa_exc.DBAPIError.instance(
                self.sql, parameters, exc, sqlite3.Error, hide_parameters=True
            ) from exc
        finally:
            cursor.close()


def compile_hot(statement: ClauseElement, dialect: Dialect) -> Precompiled | None:
    """``statement`` compiled for ``dialect``, or ``None`` if it must run through Core.

    It must run through Core when its SQL depends on the parameters (expanding ``IN``,
    values rendered at execution) or its result columns need processing.
    """
    compiled = statement.compile(dialect=dialect)
    if not isinstance(compiled, SQLCompiler) or not compiled.positional:
        return None
    if compiled.literal_execute_params or compiled.post_compile_params:
        return None
    for entry in compiled._result_columns:
        if entry[3]._cached_result_processor(dialect, None) is not None:
            return None
    binds: list[_Bind] = []
    for name in compiled.positiontup or ():
        bind = compiled.binds[name]
        if bind.expanding:
            return None
        process = _shared(bind.type, bind.type._cached_bind_processor(dialect), dialect)
        if bind.callable is not None:
            return None
        if not bind.required:
            if not bind.unique:
                return None  # a named default a caller could override: Core decides
            # A value the statement carries (the 1 of "counter - 1"): converted once, here.
            value = bind.value
            binds.append((name, None, True, value if process is None else process(value)))
        else:
            binds.append((name, process, False, None))
    return Precompiled(compiled.string, binds, returns_rows=bool(compiled._result_columns))


_PROCESSORS = "_convostore_shared_processors"


def _shared(type_: Any, process: Callable[[Any], Any] | None, dialect: Dialect) -> Any:
    """One processor object per type and dialect, so a unit's memo (keyed by processor)
    finds a value converted for another column of the same type (an append's three
    timestamps sit in three columns, each with its own ``UTCDateTime()`` instance).

    Types are the same when SQLAlchemy's cache key says so (it reuses compiled SQL on the
    same condition); a type without one keeps its own processor. Per dialect, because
    processors read that dialect's profile (its keyring).
    """
    if process is None:
        return None
    try:
        key = type_._static_cache_key
        hash(key)
    except (AttributeError, TypeError, NotImplementedError):
        return process
    # Kept on the dialect itself (a cycle through the processors' closures, which the
    # collector frees): a registry outside it would keep every engine's dialect alive.
    shared: dict[Any, Callable[[Any], Any]] = vars(dialect).setdefault(_PROCESSORS, {})
    return shared.setdefault(key, process)

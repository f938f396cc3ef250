"""The classifier of driver errors, on errors a real SQLite database raises."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy import exc as sa_exc

from convostore.errors import ConflictError, DatabaseError
from convostore.sql.retry import RETRYABLE, classify, is_retryable, translate_errors


def test_a_locked_sqlite_database_is_retryable(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x INTEGER)")
    holder.execute("BEGIN IMMEDIATE")
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 0})
    try:
        with pytest.raises(sa_exc.OperationalError) as caught, engine.begin() as conn:
            conn.execute(text("INSERT INTO t VALUES (1)"))
        assert classify(caught.value.orig) == RETRYABLE
        assert is_retryable(caught.value)
        with pytest.raises(DatabaseError), translate_errors():
            raise caught.value
    finally:
        engine.dispose()
        holder.close()


def test_a_constraint_is_a_conflict_and_not_retryable(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (x INTEGER PRIMARY KEY)"))
            conn.execute(text("INSERT INTO t VALUES (1)"))
        with pytest.raises(sa_exc.IntegrityError) as caught, engine.begin() as conn:
            conn.execute(text("INSERT INTO t VALUES (1)"))
        assert classify(caught.value.orig) is None
        assert not is_retryable(caught.value)
        with pytest.raises(ConflictError), translate_errors():
            raise caught.value
    finally:
        engine.dispose()


def test_errors_that_are_not_from_a_database_pass_through() -> None:
    with pytest.raises(KeyError), translate_errors():
        raise KeyError("x")
    assert classify(None) is None
    assert not is_retryable(ValueError("database is locked"))

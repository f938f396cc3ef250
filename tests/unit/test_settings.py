"""URL resolution: every form in README's "Connection strings" table, precedence, redaction."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from sqlalchemy import URL, text

from convostore import Database
from convostore.errors import ConfigurationError
from convostore.settings import (
    ENV_VARS,
    AmbiguousSQLiteURL,
    is_memory_sqlite,
    redact,
    resolve_url,
)
from convostore.sql.engine import create_engine
from tests.conftest import require_backend, server_admin_url

SECRET = "s3cr3t-pw"


@pytest.fixture(autouse=True)
def _no_database_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("given", "database"),
    [
        # agentstr's sqlite://PATH: everything after sqlite:// is the path.
        ("sqlite://:memory:", ":memory:"),
        ("sqlite://", ":memory:"),
        ("sqlite://rel/x.db", "rel/x.db"),
        ("sqlite://data/x.db", "data/x.db"),
        ("sqlite:///abs/x.db", "/abs/x.db"),
        ("sqlite:///var/data/x.db", "/var/data/x.db"),
        # A URL with a driver follows SQLAlchemy: three slashes, relative path; four, absolute.
        ("sqlite+aiosqlite:///x.db", "x.db"),
        ("sqlite+aiosqlite:///data/x.db", "data/x.db"),
        ("sqlite+aiosqlite:////abs/x.db", "/abs/x.db"),
        ("sqlite+aiosqlite:///:memory:", ":memory:"),
        # Bare file paths, for connect().
        ("chat.db", "chat.db"),
        ("data/chat.db", "data/chat.db"),
        ("/tmp/chat.db", "/tmp/chat.db"),
        (":memory:", ":memory:"),
        ("  chat.db  ", "chat.db"),
    ],
)
def test_sqlite_forms(given: str, database: str) -> None:
    url = resolve_url(given)
    assert url.drivername == "sqlite+aiosqlite"
    assert url.database == database
    assert is_memory_sqlite(url) == (database == ":memory:")


def test_sqlite_without_database_is_in_memory() -> None:
    assert is_memory_sqlite(resolve_url("sqlite+aiosqlite://"))
    assert is_memory_sqlite(resolve_url("sqlite+aiosqlite:///file:x?mode=memory&uri=true"))
    assert not is_memory_sqlite(resolve_url("postgresql://u@h/d"))


@pytest.mark.parametrize(
    ("given", "drivername"),
    [
        ("postgres://u:p@h:5/d", "postgresql+asyncpg"),
        ("postgresql://u:p@h:5/d", "postgresql+asyncpg"),
        ("postgres+asyncpg://u:p@h:5/d", "postgresql+asyncpg"),
        ("postgresql+asyncpg://u:p@h:5/d", "postgresql+asyncpg"),
        ("mysql://u:p@h:5/d", "mysql+asyncmy"),
        ("mariadb://u:p@h:5/d", "mariadb+asyncmy"),
        ("mysql+asyncmy://u:p@h:5/d", "mysql+asyncmy"),
        ("mysql+aiomysql://u:p@h:5/d", "mysql+aiomysql"),
    ],
)
def test_server_forms_get_an_async_driver(given: str, drivername: str) -> None:
    url = resolve_url(given)
    assert url.drivername == drivername
    assert (url.username, url.password, url.host, url.port, url.database) == ("u", "p", "h", 5, "d")


def test_url_objects_are_resolved_too() -> None:
    given = URL.create("postgresql", username="u", password=SECRET, host="h", database="d")
    url = resolve_url(given)
    assert url.drivername == "postgresql+asyncpg"
    assert url.password == SECRET
    assert resolve_url(URL.create("sqlite", database="x.db")).drivername == "sqlite+aiosqlite"


def test_escaped_characters_in_the_password_are_decoded() -> None:
    assert resolve_url("postgresql://u:p%40ss%2Fword@h/d").password == "p@ss/word"


@pytest.mark.parametrize(
    "given",
    [
        "sqlite+pysqlite:///x.db",
        f"postgresql+psycopg2://u:{SECRET}@h/d",
        f"postgresql+pg8000://u:{SECRET}@h/d",
        f"mysql+pymysql://u:{SECRET}@h/d",
        f"mysql+mysqldb://u:{SECRET}@h/d",
        f"mysql+mysqlconnector://u:{SECRET}@h/d",
        URL.create("postgresql+psycopg2", username="u", password=SECRET, host="h"),
    ],
)
def test_sync_drivers_are_refused(given: str | URL) -> None:
    with pytest.raises(ConfigurationError, match="synchronous") as caught:
        resolve_url(given)
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    "given",
    [
        f"oracle://u:{SECRET}@h/d",
        f"mssql+aioodbc://u:{SECRET}@h/d",
        f"postgresql://u:{SECRET}@h:notaport/d",
        f"postgresql://u:{SECRET}@with@h/d",
        "not a url ://",
    ],
    ids=["unsupported", "unsupported-async", "bad-port", "unescaped-at", "garbage"],
)
def test_unusable_urls_are_refused_without_the_password(given: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        resolve_url(given)
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize("given", ["", "   ", "\n"])
def test_empty_url_is_refused(given: str) -> None:
    with pytest.raises(ConfigurationError, match="empty"):
        resolve_url(given)


# -- precedence ------------------------------------------------------------------------------


def test_default_is_convostore_db() -> None:
    url = resolve_url()
    assert (url.drivername, url.database) == ("sqlite+aiosqlite", "convostore.db")


def test_database_url_is_used_when_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://u@h/from_database_url")
    url = resolve_url()
    assert (url.drivername, url.database) == ("postgresql+asyncpg", "from_database_url")


def test_convostore_database_url_beats_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://u@h/from_database_url")
    monkeypatch.setenv("CONVOSTORE_DATABASE_URL", "sqlite:///abs/ours.db")
    # Three slashes name different files in agentstr's form and SQLAlchemy's: it says so.
    with pytest.warns(AmbiguousSQLiteURL):
        url = resolve_url()
    assert (url.drivername, url.database) == ("sqlite+aiosqlite", "/abs/ours.db")


def test_argument_beats_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://u@h/from_database_url")
    monkeypatch.setenv("CONVOSTORE_DATABASE_URL", "sqlite:///abs/ours.db")
    assert resolve_url("sqlite://:memory:").database == ":memory:"


def test_empty_environment_variables_are_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVOSTORE_DATABASE_URL", "")
    monkeypatch.setenv("DATABASE_URL", "mysql://u@h/d")
    assert resolve_url().drivername == "mysql+asyncmy"
    monkeypatch.setenv("DATABASE_URL", "")
    assert resolve_url().database == "convostore.db"


@pytest.mark.parametrize(
    ("value", "database"),
    [
        ("sqlite:///app.db", "app.db"),  # what every SQLAlchemy/Flask app means: ./app.db
        ("sqlite:///data/app.db", "data/app.db"),
        ("sqlite:////tmp/app.db", "/tmp/app.db"),
        ("sqlite:///:memory:", ":memory:"),
        ("sqlite://:memory:", ":memory:"),  # two slashes: agentstr's, SQLAlchemy has no path
        ("sqlite://data/app.db", "data/app.db"),
    ],
)
async def test_database_url_is_read_with_sqlalchemys_rules(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str, database: str
) -> None:
    """DATABASE_URL=sqlite:///app.db once wrote /app.db at the file-system root."""
    monkeypatch.setenv("DATABASE_URL", value)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        assert resolve_url().database == database
        db = Database(agent_name="a")  # agentstr's factory without conn_str reads it too
    assert db.engine.url.database == database
    await db.close()


def test_the_two_readings_warn_where_they_differ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "sqlite:///app.db")
    with pytest.warns(AmbiguousSQLiteURL, match="SQLAlchemy's rules: the relative path 'app.db'"):
        assert resolve_url().database == "app.db"
    monkeypatch.setenv("CONVOSTORE_DATABASE_URL", "sqlite:///app.db")
    with pytest.warns(AmbiguousSQLiteURL, match="agentstr's form: the absolute path '/app.db'"):
        assert resolve_url().database == "/app.db"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # An argument is the caller's code, in the documented (agentstr's) form.
        assert resolve_url("sqlite:///app.db").database == "/app.db"
        for same in ("sqlite:////abs/app.db", "sqlite://:memory:", "sqlite+aiosqlite:///a.db"):
            resolve_url(same)
        monkeypatch.setenv("CONVOSTORE_DATABASE_URL", "sqlite:////abs/app.db")
        resolve_url()


def test_environment_urls_are_checked_like_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgresql+psycopg2://u:{SECRET}@h/d")
    with pytest.raises(ConfigurationError) as caught:
        resolve_url()
    assert SECRET not in str(caught.value)


# -- redaction -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (f"postgresql://u:{SECRET}@h:5/d", "postgresql://u:***@h:5/d"),
        (f"postgresql+asyncpg://u:{SECRET}@h/d?ssl=require", "postgresql+asyncpg://u:***@h/d?ssl=require"),
        (f"mysql://u:{SECRET}%40x@h/d", "mysql://u:***@h/d"),
        (f"postgresql://u:{SECRET}@h:notaport/d", "postgresql://u:***@h:notaport/d"),
        (f"postgresql://u:{SECRET}@with@h/d", "postgresql://u:***@h/d"),
        (f"post gres://u:{SECRET}@h/d", "post gres://u:***@h/d"),
        ("postgresql://u@h/d", "postgresql://u@h/d"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("chat.db", "chat.db"),
    ],
)  # fmt: skip
def test_redact_strings(given: str, expected: str) -> None:
    assert redact(given) == expected
    assert SECRET not in redact(given)


def test_redact_url_objects() -> None:
    url = URL.create("postgresql+asyncpg", username="u", password=SECRET, host="h", database="d")
    assert redact(url) == "postgresql+asyncpg://u:***@h/d"
    assert SECRET not in redact(resolve_url(f"postgres://u:{SECRET}@h/d"))


def test_libpq_sslmode_becomes_asyncpg_ssl() -> None:
    url = resolve_url("postgres://app:pw@db.example:5432/agents?sslmode=require")
    assert url.drivername == "postgresql+asyncpg"
    assert dict(url.query) == {"ssl": "require"}


@pytest.mark.postgresql
async def test_sslmode_url_connects(request: pytest.FixtureRequest) -> None:
    require_backend(request.config, "postgresql")
    url = server_admin_url("postgresql").set(drivername="postgresql")
    engine = create_engine(url.update_query_dict({"sslmode": "disable"}))
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar() == 1
    finally:
        await engine.dispose()


def test_passwords_in_the_query_string_are_hidden() -> None:
    for raw in (
        "postgresql://postgres@127.0.0.1:5432/x?password=s3cret",
        "postgresql://u:pw@h/x?sslpassword=s3cret&application_name=a",
    ):
        assert "s3cret" not in redact(raw)
        assert "s3cret" not in redact(resolve_url(raw))
    assert "application_name=a" in redact(
        "postgresql://u:pw@h/x?sslpassword=s3cret&application_name=a"
    )

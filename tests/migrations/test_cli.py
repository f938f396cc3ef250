"""The command lines: ``alembic`` from the checkout and ``python -m convostore.migrate``.

Each runs as a subprocess with no database URL in its environment unless the test sets one,
so nothing lands in the checkout's own ``convostore.db``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sqlalchemy import URL

from convostore import migrate
from tests.migrations.conftest import (
    REPO_ROOT,
    SCHEMA_TABLES,
    alembic_command,
    execute,
    plain,
    subprocess_env,
    table_names,
    version_rows,
)

TIMEOUT_S = 120


def run(
    command: list[str], *, cwd: Path, env: dict[str, str] | None = None, ok: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        command,
        cwd=cwd,
        env=subprocess_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    if ok:
        assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result


def sqlite_url(path: Path) -> URL:
    return URL.create("sqlite+aiosqlite", database=str(path))


async def test_alembic_from_the_repo_root_uses_convostore_database_url(tmp_path: Path) -> None:
    db = tmp_path / "env.db"
    env = subprocess_env(CONVOSTORE_DATABASE_URL=plain(sqlite_url(db)))

    run(alembic_command("upgrade", "head"), cwd=REPO_ROOT, env=env)
    assert await table_names(sqlite_url(db)) == SCHEMA_TABLES | {"alembic_version"}
    assert await version_rows(sqlite_url(db)) == [migrate.head()]

    check = run(alembic_command("check"), cwd=REPO_ROOT, env=env)
    assert "No new upgrade operations detected" in check.stdout + check.stderr

    run(alembic_command("downgrade", "base"), cwd=REPO_ROOT, env=env)
    assert await table_names(sqlite_url(db)) <= {"alembic_version"}
    current = run(alembic_command("current"), cwd=REPO_ROOT, env=env)
    assert migrate.head() not in current.stdout


async def test_alembic_x_url_on_every_backend(empty_url: URL) -> None:
    run(alembic_command("-x", f"url={plain(empty_url)}", "upgrade", "head"), cwd=REPO_ROOT)
    assert await table_names(empty_url) == SCHEMA_TABLES | {"alembic_version"}
    assert await version_rows(empty_url) == [migrate.head()]
    run(alembic_command("-x", f"url={plain(empty_url)}", "check"), cwd=REPO_ROOT)


async def test_url_precedence_x_url_then_convostore_database_url_then_database_url(
    tmp_path: Path,
) -> None:
    x_url, ours, generic = (tmp_path / name for name in ("x.db", "ours.db", "generic.db"))
    both = subprocess_env(
        CONVOSTORE_DATABASE_URL=plain(sqlite_url(ours)), DATABASE_URL=plain(sqlite_url(generic))
    )

    run(
        alembic_command("-x", f"url={plain(sqlite_url(x_url))}", "upgrade", "head"),
        cwd=REPO_ROOT,
        env=both,
    )
    assert [p.name for p in (x_url, ours, generic) if p.exists()] == ["x.db"]

    run(alembic_command("upgrade", "head"), cwd=REPO_ROOT, env=both)
    assert [p.name for p in (x_url, ours, generic) if p.exists()] == ["x.db", "ours.db"]

    only_generic = subprocess_env(DATABASE_URL=plain(sqlite_url(generic)))
    run(alembic_command("upgrade", "head"), cwd=REPO_ROOT, env=only_generic)
    for path in (x_url, ours, generic):
        assert await version_rows(sqlite_url(path)) == [migrate.head()]


async def test_alembic_without_any_url_migrates_convostore_db_in_the_working_directory(
    tmp_path: Path,
) -> None:
    run(alembic_command("-c", str(REPO_ROOT / "alembic.ini"), "upgrade", "head"), cwd=tmp_path)
    db = tmp_path / "convostore.db"
    assert db.is_file()
    assert await table_names(sqlite_url(db)) == SCHEMA_TABLES | {"alembic_version"}
    assert await version_rows(sqlite_url(db)) == [migrate.head()]


def migrate_module(*args: str) -> list[str]:
    return [sys.executable, "-m", "convostore.migrate", *args]


async def test_python_m_convostore_migrate(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    url = plain(sqlite_url(db))
    from_env = subprocess_env(CONVOSTORE_DATABASE_URL=url)
    assert run(migrate_module("head"), cwd=tmp_path).stdout.strip() == migrate.head()

    upgraded = run(migrate_module("upgrade"), cwd=tmp_path, env=from_env)
    assert "RuntimeWarning" not in upgraded.stderr  # -m on a module the package already imported
    assert not (tmp_path / "convostore.db").exists()
    assert await table_names(sqlite_url(db)) == SCHEMA_TABLES | {"alembic_version"}
    current = run(migrate_module("current", "--url", url), cwd=tmp_path)
    assert current.stdout.strip() == migrate.head()

    run(migrate_module("downgrade", "base", "--url", url), cwd=tmp_path)
    current = run(migrate_module("current"), cwd=tmp_path, env=from_env)
    assert current.stdout.strip() == "(empty)"
    assert await table_names(sqlite_url(db)) <= {"alembic_version"}


async def test_python_m_convostore_migrate_fails_cleanly(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "future.db")
    await migrate.upgrade(url)
    await execute(url, "UPDATE alembic_version SET version_num = 'ffff_future'")

    refused = run(migrate_module("upgrade", "--url", plain(url)), cwd=tmp_path, ok=False)
    assert refused.returncode == 1
    assert "upgrade convostore" in refused.stderr
    assert "Traceback" not in refused.stderr

    assert await version_rows(url) == ["ffff_future"]

    at_head = sqlite_url(tmp_path / "head.db")
    await migrate.upgrade(at_head)
    unknown = run(
        migrate_module("upgrade", "no_such_rev", "--url", plain(at_head)), cwd=tmp_path, ok=False
    )
    assert unknown.returncode == 1
    assert "no_such_rev" in unknown.stderr
    assert "Traceback" not in unknown.stderr

"""The wheel carries the migrations: installed in a fresh venv, used outside the checkout.

Builds the wheel, checks what it contains, installs it (with its dependencies from the
package index) into a new virtual environment, and from a directory outside the checkout
runs the README's migration commands as written, migrates an SQLite file with
``convostore.migrate`` and uses both interfaces on it.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 600

SCRIPT = """
import asyncio
import sys
from pathlib import Path

import convostore
from convostore import migrate

venv = Path(sys.argv[1]).resolve()
url = "sqlite+aiosqlite:///" + sys.argv[2]
package = Path(convostore.__file__).resolve().parent
assert package.is_relative_to(venv), f"imported from {package}, not the venv {venv}"
assert migrate.migrations_dir().is_relative_to(package), migrate.migrations_dir()
assert (package / "py.typed").is_file()


async def main() -> None:
    await migrate.upgrade(url)
    assert await migrate.current(url) == migrate.head()

    db = await convostore.Database(url, agent_name="wheel").async_init()
    await db.add_message("t1", "u1", "user", message="hello from the wheel")
    assert [m.message for m in await db.get_messages("t1", "u1")] == ["hello from the wheel"]
    await db.close()

    engine = await convostore.connect(url)
    store = convostore.SQLAlchemyContextStore(engine, session_id="s1", project="p")
    message = convostore.ContextMessage(role="user", content=[{"type": "text", "text": "hi"}])
    await store.append(message)
    assert await store.get_history() == [message]
    await engine.dispose()
    print("wheel ok", migrate.head())


asyncio.run(main())
"""


def run(command: list[str], *, cwd: Path) -> subprocess.CompletedProcess[str]:
    # Nothing from this environment that could put the checkout on the path or pick a database.
    drop = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "CONVOSTORE_DATABASE_URL", "DATABASE_URL")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    result = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result


def readme_wheel_commands() -> list[str]:
    """The commands of README's block marked ``<!-- wheel-commands ... -->``, one a line."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- wheel-commands[^>]*-->\s*```bash\n(.*?)```", readme, re.S)
    assert match, "README.md has no block marked <!-- wheel-commands -->"
    lines = [line.split("#", 1)[0].strip() for line in match.group(1).splitlines()]
    return [line for line in lines if line]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(REPO_ROOT)], cwd=dist)
    (built,) = dist.glob("convostore-*.whl")
    return built


def test_wheel_contains_the_migrations_and_the_type_marker(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert "convostore/py.typed" in names
    assert "convostore/migrations/env.py" in names
    assert "convostore/migrate/__main__.py" in names
    assert any(
        name.startswith("convostore/migrations/versions/0001_") and name.endswith(".py")
        for name in names
    )
    revisions = sorted(p.name for p in (REPO_ROOT / "migrations" / "versions").glob("*.py"))
    assert revisions == sorted(
        Path(n).name for n in names if n.startswith("convostore/migrations/versions/")
    )


@pytest.mark.slow
def test_installed_wheel_migrates_and_works_outside_the_checkout(
    wheel: Path, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path)
    python = venv / "bin" / "python"
    run(
        [str(python), "-m", "pip", "install", "--disable-pip-version-check", str(wheel)],
        cwd=tmp_path,
    )

    # README's commands, as written, in a new directory (with the venv's bin first on PATH,
    # as an activated venv has it).
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    commands = readme_wheel_commands()
    assert any(c.startswith("convostore db upgrade") for c in commands)
    assert any(c.startswith("python -m convostore.migrate") for c in commands)
    for command in commands:
        words = shlex.split(command)
        run([str(venv / "bin" / words[0]), *words[1:]], cwd=fresh)
    assert (fresh / "convostore.db").is_file()
    current = run([str(venv / "bin" / "convostore"), "db", "current", "--short"], cwd=fresh)
    head = run([str(venv / "bin" / "convostore"), "db", "head"], cwd=fresh)
    assert current.stdout.strip() == head.stdout.strip()

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    script = outside / "use_wheel.py"
    script.write_text(SCRIPT, encoding="utf-8")
    database = outside / "w.db"
    # -I: isolated mode, so neither the environment nor the working directory adds paths.
    result = run([str(python), "-I", str(script), str(venv), str(database)], cwd=outside)
    assert "wheel ok" in result.stdout
    assert database.is_file()

    current = run(
        [str(python), "-I", "-m", "convostore.migrate", "current", "--url", str(database)],
        cwd=outside,
    )
    assert current.stdout.strip() == result.stdout.split()[-1]

"""The ``convostore`` command: migrations, inspection, export/import, retention, statistics.

Every command takes ``--url``; without it the database is the library's default
(``CONVOSTORE_DATABASE_URL``, then ``DATABASE_URL``, then ``./convostore.db``). Exit codes:
0 success, 1 an error (one red line on stderr, no traceback), 2 a usage error. Passwords in
URLs are never printed. ``docs/cli.md`` is the reference.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, BinaryIO, NoReturn, TypeVar

import orjson
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.progress import Progress as RichProgress
from rich.table import Table
from rich.text import Text
from sqlalchemy import URL
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.core import TyperGroup

from convostore import __version__, encryption, migrate, transfer
from convostore.errors import ConfigurationError, ConvostoreError, NotFoundError, ValidationError
from convostore.settings import redact, resolve_url
from convostore.sql.engine import create_engine, sqlite_path

__all__ = ["app", "main"]

T = TypeVar("T")


class _OneLineErrors(TyperGroup):
    """The top-level command group: an error outside :func:`_run` too (resolving ``--url``,
    opening a file) is one red line and exit 1, never a traceback."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except ConvostoreError as exc:
            _fail(str(exc))
        except OSError as exc:
            _fail(f"{exc.strerror or type(exc).__name__}: {exc.filename or exc}")


app = typer.Typer(
    cls=_OneLineErrors,
    name="convostore",
    help="Inspect, migrate and move convostore databases.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
db_app = typer.Typer(  # also run alone, by python -m convostore.migrate
    cls=_OneLineErrors,
    help="Schema migrations (the packaged Alembic revisions).",
    no_args_is_help=True,
)
sessions_app = typer.Typer(
    help="Context-store sessions (axio's ContextStore).", no_args_is_help=True
)
threads_app = typer.Typer(help="Agent threads (agentstr's database).", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(sessions_app, name="sessions")
app.add_typer(threads_app, name="threads")

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="Database URL or SQLite path (default: $CONVOSTORE_DATABASE_URL, $DATABASE_URL, "
        "./convostore.db).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
AgentOption = Annotated[
    str,
    typer.Option("--agent", help='Agent name ("" for the default agent, agent_name=None).'),
]

# Passwords of the URLs this process resolved: scrubbed from every message as a last guard.
_secrets: set[str] = set()


# --- plumbing -------------------------------------------------------------------------------


def _out() -> Console:
    # soft_wrap: long lines are left to the terminal, so pipes get whole lines.
    return Console(highlight=False, soft_wrap=True)


def _err() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def _scrub(message: str) -> str:
    for secret in _secrets:
        message = message.replace(secret, "***")
    return message


def _fail(message: str) -> NoReturn:
    _err().print(Text(f"error: {_scrub(message)}", style="bold red"))
    raise typer.Exit(1)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine, turning convostore errors into one red line and exit 1."""
    # asyncmy logs MariaDB's notes on DDL (named primary keys) as warnings: not for users.
    logging.getLogger("asyncmy").setLevel(logging.ERROR)
    try:
        return asyncio.run(coro)
    except ConvostoreError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"{exc.strerror or type(exc).__name__}: {exc.filename or exc}")
    except KeyboardInterrupt:
        _err().print(Text("interrupted", style="red"))
        raise typer.Exit(130) from None


def _resolve(url: str | None) -> URL:
    resolved = resolve_url(url)
    if resolved.password:
        _secrets.add(str(resolved.password))
    return resolved


def _require_existing(resolved: URL) -> None:
    """Refuse to read an SQLite file that is not there (connecting would create it)."""
    path = sqlite_path(resolved)
    if path is not None and not path.exists():
        raise ConfigurationError(f"no database at {path} (create one with `convostore db upgrade`)")


@asynccontextmanager
async def _database(url: str | None, *, write: bool) -> AsyncIterator[AsyncEngine]:
    """An engine on a database at head; writers migrate SQLite as the library does."""
    resolved = _resolve(url)
    if not write:
        _require_existing(resolved)
    # Reads open an SQLite file read-only: they work on read-only storage (or someone
    # else's file) and cannot change it, not even its journal mode.
    read_only = not write and resolved.get_backend_name() == "sqlite"
    engine = create_engine(resolved, encryption=_env_keyring(), read_only=read_only)
    try:
        try:
            await migrate.prepare(engine, migrate=None if write else False)
        except ConvostoreError as exc:
            if type(exc).__name__ == "SchemaVersionError":
                raise type(exc)(
                    f"{exc} (or run `convostore db upgrade --url '{redact(resolved)}'`)"
                ) from exc
            raise
        yield engine
    finally:
        await engine.dispose()


def _env_keyring() -> encryption.Keyring | None:
    """The keyring of ``CONVOSTORE_ENCRYPTION_KEYS``, if set: every command reads with it."""
    if not os.environ.get(encryption.KEYS_ENV, "").strip():
        return None
    return encryption.Keyring.from_env()


def _print_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


def _when(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _Bar:
    """Adapts :class:`transfer.Progress` to a rich progress bar."""

    def __init__(self, progress: RichProgress) -> None:
        self._progress = progress
        self._task: TaskID | None = None

    def start(self, label: str, total: int | None) -> None:
        if self._task is not None:
            self._progress.stop_task(self._task)
        self._task = self._progress.add_task(label, total=total)

    def advance(self, amount: int) -> None:
        if self._task is not None:
            self._progress.advance(self._task, amount)


@contextlib.contextmanager
def _progress() -> Iterator[_Bar | None]:
    """A progress bar on stderr when attached to a terminal; nothing in pipes and scripts."""
    if not (sys.stdout.isatty() and sys.stderr.isatty()):
        yield None
        return
    bar = RichProgress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=_err(),
        transient=True,
    )
    with bar:
        yield _Bar(bar)


# --- db -------------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade(
    url: UrlOption = None,
    revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
) -> None:
    """Migrate the database to the latest schema (or to --revision)."""
    resolved = _resolve(url)

    async def work() -> tuple[str | None, str | None]:
        before = await migrate.current(resolved)
        await migrate.upgrade(resolved, revision)
        return before, await migrate.current(resolved)

    before, after = _run(work())
    where = redact(resolved)
    if before == after:
        _out().print(f"{where} is already at {after or '(empty)'}")
    else:
        _out().print(f"{where} upgraded from {before or '(empty)'} to {after}")


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help='Target revision: "-1", an id, or "base".')],
    url: UrlOption = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask before dropping tables.")] = False,
) -> None:
    """Migrate the database down to REVISION ("base" drops every convostore table)."""
    resolved = _resolve(url)
    try:
        _require_existing(resolved)
    except ConvostoreError as exc:
        _fail(str(exc))
    if revision == "base" and not yes:
        if not sys.stdin.isatty():
            _fail("downgrading to base deletes all data: pass --yes to confirm")
        typer.confirm(f"Drop every convostore table in {redact(resolved)}?", abort=True)

    async def work() -> tuple[str | None, str | None]:
        before = await migrate.current(resolved)
        await migrate.downgrade(resolved, revision)
        return before, await migrate.current(resolved)

    before, after = _run(work())
    _out().print(
        f"{redact(resolved)} downgraded from {before or '(empty)'} to {after or '(empty)'}"
    )


@db_app.command("current")
def db_current(
    url: UrlOption = None,
    json: JsonOption = False,
    short: Annotated[
        bool, typer.Option("--short", help='Print only the revision ("(empty)" if none).')
    ] = False,
) -> None:
    """Show the database's schema revision and the one this convostore expects."""
    resolved = _resolve(url)

    async def work() -> str | None:
        _require_existing(resolved)
        return await migrate.current(resolved)

    current = _run(work())
    head = migrate.head()
    if json:
        _print_json(
            {"url": redact(resolved), "current": current, "head": head, "at_head": current == head}
        )
        return
    if short:
        _out().print(current or "(empty)")
        return
    state = "at head" if current == head else f"expected {head}"
    _out().print(f"{redact(resolved)}: {current or '(empty)'} ({state})")


@db_app.command("head")
def db_head() -> None:
    """Print the schema revision this convostore expects."""
    _out().print(migrate.head())


@db_app.command("check")
def db_check(url: UrlOption = None, json: JsonOption = False) -> None:
    """Exit 1 unless the database is at head and its schema matches the models (no drift)."""
    resolved = _resolve(url)

    async def work() -> migrate.SchemaCheck:
        _require_existing(resolved)
        return await migrate.check(resolved)

    result = _run(work())
    if json:
        _print_json(
            {
                "url": result.url,
                "current": result.current,
                "head": result.head,
                "at_head": result.at_head,
                "drift": result.drift,
                "ok": result.ok,
            }
        )
        if not result.ok:
            raise typer.Exit(1)
        return
    if not result.at_head:
        _fail(
            f"{result.url} is at {result.current or '(empty)'}, expected {result.head}: "
            "run `convostore db upgrade`"
        )
    if result.drift is not None:
        _fail(f"{result.url} differs from the models: {result.drift}")
    _out().print(f"{result.url}: at head {result.head}, schema matches the models")


def migrate_main(argv: list[str] | None = None) -> None:
    """``python -m convostore.migrate ACTION [REVISION] [--url URL]``: ``convostore db``.

    The older spelling of the same commands, kept for the scripts and docs that use it:
    ``upgrade [REVISION]``, ``downgrade [REVISION]`` (default ``-1``; never asks, as it
    never did), ``current`` (the bare revision) and ``head``.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("upgrade", "downgrade", "current", "head"):
        action, rest = args[0], args[1:]
        positional: list[str] = []
        options: list[str] = []
        iterator = iter(rest)
        for arg in iterator:
            if arg == "--url":
                options += [arg, next(iterator, "")]
            elif arg.startswith("-"):
                options.append(arg)
            else:
                positional.append(arg)
        revision = positional[:1]
        if action == "upgrade":
            args = ["upgrade", *options, *(["--revision", *revision] if revision else [])]
        elif action == "downgrade":
            args = ["downgrade", *(revision or ["-1"]), "--yes", *options]
        elif action == "current":
            args = ["current", "--short", *options]
        else:
            args = ["head"]
    db_app(args, prog_name="python -m convostore.migrate")


# --- sessions -------------------------------------------------------------------------------


@sessions_app.command("list")
def sessions_list(
    project: Annotated[
        str | None, typer.Option(help="Only this project (default: every project).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many.")] = 50,
    url: UrlOption = None,
    json: JsonOption = False,
) -> None:
    """List sessions that hold messages, newest first."""

    async def work() -> list[transfer.SessionRow]:
        async with _database(url, write=False) as engine:
            return await transfer.list_sessions(engine, project=project, limit=limit)

    rows = _run(work())
    if json:
        _print_json(
            [
                {
                    "project": r.project,
                    "session_id": r.session_id,
                    "message_count": r.message_count,
                    "preview": r.preview,
                    "created_at": _iso(r.created_at),
                    "input_tokens": r.input_tokens,
                    "output_tokens": r.output_tokens,
                }
                for r in rows
            ]
        )
        return
    table = Table(title=f"Sessions ({len(rows)})", title_justify="left")
    if project is None:
        table.add_column("project", overflow="fold")
    table.add_column("session", overflow="fold")
    table.add_column("msgs", justify="right")
    table.add_column("tokens in/out", justify="right")
    table.add_column("created (UTC)", no_wrap=True)
    table.add_column("preview")
    for r in rows:
        cells = [
            r.session_id,
            str(r.message_count),
            f"{r.input_tokens}/{r.output_tokens}",
            _when(r.created_at),
            r.preview,
        ]
        table.add_row(*([r.project] if project is None else []), *map(Text, cells))
    _out().print(table)


@sessions_app.command("show")
def sessions_show(
    session_id: Annotated[str, typer.Argument(help="The session's id.")],
    project: Annotated[
        str | None, typer.Option(help="The session's project (needed if several have the id).")
    ] = None,
    url: UrlOption = None,
    json: JsonOption = False,
) -> None:
    """Print one session's transcript."""

    async def work() -> transfer.SessionTranscript:
        async with _database(url, write=False) as engine:
            return await transfer.session_transcript(engine, session_id, project=project)

    session = _run(work())
    chosen, history = session.project, session.messages
    tokens_in, tokens_out = session.input_tokens, session.output_tokens
    if json:
        _print_json(
            {
                "project": chosen,
                "session_id": session_id,
                "input_tokens": tokens_in,
                "output_tokens": tokens_out,
                "messages": [
                    {"position": n, "role": m.role, "content": m.content}
                    for n, m in enumerate(history)
                ],
            }
        )
        return
    out = _out()
    out.print(
        Text.assemble(
            ("session ", "bold"),
            session_id,
            ("  project ", "bold"),
            chosen,
            ("  tokens ", "bold"),
            f"{tokens_in} in / {tokens_out} out",
        )
    )
    styles = {"user": "bold cyan", "assistant": "bold green", "system": "bold magenta"}
    for position, message in enumerate(history):
        out.print()
        out.print(Text(f"[{position}] {message.role}", style=styles.get(message.role, "bold")))
        for block in message.content:
            out.print(_block_text(block))


def _block_text(block: dict[str, Any]) -> Text:
    """A readable rendering of one content block (text as is, anything else as JSON)."""
    kind = block.get("type")
    if kind == "text" and isinstance(block.get("text"), str):
        return Text(block["text"])
    if kind == "tool_use":
        arguments = orjson.dumps(block.get("input", {})).decode()
        return Text(f"→ {block.get('name', '?')}({arguments})", style="yellow")
    if kind == "tool_result":
        inner = block.get("content")
        if isinstance(inner, list):
            parts = [b.get("text", "") for b in inner if isinstance(b, dict)]
            inner = "\n".join(p for p in parts if isinstance(p, str))
        body = inner if isinstance(inner, str) else orjson.dumps(inner).decode()
        return Text(f"← {body}", style="yellow")
    return Text(orjson.dumps(block).decode(), style="dim")


# --- threads --------------------------------------------------------------------------------


@threads_app.command("list")
def threads_list(
    agent: AgentOption,
    user: Annotated[str | None, typer.Option("--user", help="Only this user.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many.")] = 50,
    url: UrlOption = None,
    json: JsonOption = False,
) -> None:
    """List an agent's threads (one row per thread and user), most recent first."""

    async def work() -> list[transfer.ThreadRow]:
        async with _database(url, write=False) as engine:
            return await transfer.list_threads(engine, agent=agent, user=user, limit=limit)

    rows = _run(work())
    if json:
        _print_json(
            [
                {
                    "thread_id": r.thread_id,
                    "user_id": r.user_id,
                    "message_count": r.message_count,
                    "first_idx": r.first_idx,
                    "last_idx": r.last_idx,
                    "last_at": _iso(r.last_at),
                }
                for r in rows
            ]
        )
        return
    table = Table(title=f"Threads of agent {agent!r} ({len(rows)})", title_justify="left")
    for name, justify in (
        ("thread", "left"),
        ("user", "left"),
        ("messages", "right"),
        ("idx", "right"),
        ("last message (UTC)", "left"),
    ):
        table.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for r in rows:
        table.add_row(
            Text(r.thread_id),
            Text(r.user_id),
            str(r.message_count),
            f"{r.first_idx}..{r.last_idx}",
            _when(r.last_at),
        )
    _out().print(table)


@threads_app.command("show")
def threads_show(
    thread_id: Annotated[str, typer.Argument(help="The thread's id.")],
    agent: AgentOption,
    user: Annotated[str | None, typer.Option("--user", help="Only this user's messages.")] = None,
    url: UrlOption = None,
    json: JsonOption = False,
) -> None:
    """Print one thread's messages in order."""

    async def work() -> list[dict[str, Any]]:
        async with _database(url, write=False) as engine:
            messages = await transfer.thread_messages(
                engine, agent=agent, thread_id=thread_id, user=user
            )
        if not messages:
            who = f" for user {user!r}" if user is not None else ""
            raise NotFoundError(f"no messages in thread {thread_id!r} of agent {agent!r}{who}")
        return [m.model_dump() for m in messages]

    rows = _run(work())
    if json:
        keys = (
            "idx",
            "user_id",
            "role",
            "kind",
            "message",
            "content",
            "satoshis",
            "extra_inputs",
            "extra_outputs",
        )
        _print_json(
            {
                "agent_name": agent,
                "thread_id": thread_id,
                "messages": [
                    {**{k: r[k] for k in keys}, "created_at": _iso(r["created_at"])} for r in rows
                ],
            }
        )
        return
    out = _out()
    out.print(Text.assemble(("thread ", "bold"), thread_id, ("  agent ", "bold"), repr(agent)))
    styles = {"user": "bold cyan", "agent": "bold green", "tool": "bold yellow"}
    for r in rows:
        out.print()
        header = f"[{r['idx']}] {r['role']} {r['user_id']} · {r['kind']} · {_when(r['created_at'])}"
        if r["satoshis"] is not None:
            header += f" · {r['satoshis']} sats"
        out.print(Text(header, style=styles.get(r["role"], "bold")))
        if r["message"]:
            out.print(Text(r["message"]))
        if r["content"] and r["content"] != r["message"]:
            out.print(Text(r["content"], style="dim"))


# --- export / import ------------------------------------------------------------------------


def _report(report: transfer.TransferReport, json: bool, *, to_stderr: bool = False) -> None:
    if json:
        text = orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2).decode() + "\n"
        (sys.stderr if to_stderr else sys.stdout).write(text)
        return
    console = _err() if to_stderr else _out()
    console.print(Text(f"{report.operation}: {report.source or '-'} → {report.destination or '-'}"))
    table = Table()
    columns = sorted({c for counts in report.counts.values() for c in counts})
    order = [c for c in ("source", "inserted", "skipped") if c in columns]
    table.add_column("records")
    for column in order:
        table.add_column("read" if column == "source" else column, justify="right")
    for name, counts in report.counts.items():
        table.add_row(name, *(str(counts.get(c, 0)) for c in order))
    console.print(table)
    console.print("verified" if report.verified else "NOT verified", style="green")


@app.command("export")
def export(
    url: UrlOption = None,
    output: Annotated[
        str, typer.Option("--output", "-o", help='File to write, or "-" for stdout.')
    ] = "-",
    json: JsonOption = False,
) -> None:
    """Write the whole database as JSONL (format: docs/cli.md); the summary goes to stderr
    when the data goes to stdout."""
    to_stdout = output == "-"

    async def work(handle: BinaryIO) -> transfer.TransferReport:
        async with _database(url, write=False) as engine:
            with _progress() as bar:
                report = await transfer.export_jsonl(engine, handle, progress=bar)
        handle.flush()
        report.destination = "stdout" if to_stdout else output
        return report

    if to_stdout:
        _report(_run(work(sys.stdout.buffer)), json, to_stderr=True)
        return
    # Written beside the target and renamed at the end: a failed export leaves no file.
    target = Path(output)
    partial = target.with_name(target.name + ".partial")
    try:
        try:
            handle = partial.open("wb")
        except OSError as exc:
            _fail(f"cannot write {output}: {exc.strerror or exc}")
        with handle:
            report = _run(work(handle))
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    _report(report, json)


@app.command("import")
def import_(
    file: Annotated[str, typer.Argument(help='An export file, or "-" for stdin.')],
    url: UrlOption = None,
    json: JsonOption = False,
) -> None:
    """Import an export file; records already present are skipped (safe to run twice)."""

    async def work(handle: BinaryIO) -> transfer.TransferReport:
        async with _database(url, write=True) as engine:
            with _progress() as bar:
                return await transfer.import_jsonl(
                    engine, handle, source="stdin" if file == "-" else file, progress=bar
                )

    if file == "-":
        _report(_run(work(sys.stdin.buffer)), json)
        return
    try:
        handle = Path(file).open("rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        _fail(f"cannot read {file}: {exc.strerror or exc}")
    with handle:
        report = _run(work(handle))
    _report(report, json)


@app.command("import-axio")
def import_axio(
    source: Annotated[Path, typer.Argument(help="An axio-context-sqlite database file.")],
    url: UrlOption = None,
    json: JsonOption = False,
) -> None:
    """Copy an axio-context-sqlite database into the destination (idempotent)."""
    _require_file(source)

    async def work() -> transfer.TransferReport:
        async with _database(url, write=True) as engine:
            with _progress() as bar:
                return await transfer.import_axio(engine, source, progress=bar)

    _report(_run(work()), json)


@app.command("import-agentstr")
def import_agentstr(
    source: Annotated[Path, typer.Argument(help="An agentstr SQLite database file.")],
    agent: Annotated[
        list[str] | None,
        typer.Option("--agent", help='Import only this agent (repeatable; "" = default agent).'),
    ] = None,
    url: UrlOption = None,
    json: JsonOption = False,
) -> None:
    """Copy an agentstr SQLite database (users, balances, threads, messages; idempotent)."""
    _require_file(source)

    async def work() -> transfer.TransferReport:
        async with _database(url, write=True) as engine:
            with _progress() as bar:
                return await transfer.import_agentstr(engine, source, agents=agent, progress=bar)

    _report(_run(work()), json)


def _require_file(source: Path) -> None:
    # Checked before the destination is opened, which may create an SQLite file.
    if not source.is_file():
        _fail(f"{source}: no such file")


# --- search ---------------------------------------------------------------------------------


@app.command("search")
def search_history(
    query: Annotated[str | None, typer.Argument(help="The words to find (word* = prefix).")] = None,
    project: Annotated[
        str | None, typer.Option(help="Search this project's sessions (context store).")
    ] = None,
    namespace: Annotated[
        str | None, typer.Option(help="The project's namespace (axio's db_name).")
    ] = None,
    session: Annotated[str | None, typer.Option(help="Only this session.")] = None,
    agent: Annotated[
        str | None,
        typer.Option("--agent", help='Search this agent\'s messages ("" = default agent).'),
    ] = None,
    user: Annotated[str | None, typer.Option(help="Only this user's messages.")] = None,
    thread: Annotated[str | None, typer.Option(help="Only this thread.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Show at most this many.")] = 20,
    backfill: Annotated[
        bool,
        typer.Option(
            "--backfill", help="Deprecated: use `convostore reindex` (removed in the next release)."
        ),
    ] = False,
    batch_size: Annotated[
        int, typer.Option(min=1, help="Messages per transaction with --backfill.")
    ] = transfer.reindex.DEFAULT_BATCH_SIZE,
    url: UrlOption = None,
    json: JsonOption = False,
) -> None:
    """Find messages by what was said in them."""
    if backfill:
        _deprecated_backfill(query, url, batch_size, json)
        return
    if query is None:
        raise typer.BadParameter("give the words to search for")
    _check_search_scope(project, agent, by_agent=(user, thread), by_project=(session, namespace))

    async def work() -> list[dict[str, Any]]:
        from convostore.context import SQLAlchemyContextStore
        from convostore.database import SQLAlchemyDatabase

        async with _database(url, write=False) as engine:
            if project is not None:
                store = SQLAlchemyContextStore(engine, project=project, namespace=namespace)
                return [
                    {
                        "session_id": hit.session_id,
                        "position": hit.message.position,
                        "role": hit.message.role,
                        "created_at": _iso(hit.message.created_at),
                        "snippet": hit.snippet,
                        "highlights": hit.highlights,
                        "rank": hit.rank,
                    }
                    for hit in await store.search(query, limit=limit, session_id=session)
                ]
            db = SQLAlchemyDatabase(engine=engine, agent_name=agent or None)
            return [
                {
                    "thread_id": hit.message.thread_id,
                    "user_id": hit.message.user_id,
                    "idx": hit.message.idx,
                    "role": hit.message.role,
                    "created_at": _iso(hit.message.created_at),
                    "snippet": hit.snippet,
                    "highlights": hit.highlights,
                    "rank": hit.rank,
                }
                for hit in await db.search(query, limit=limit, user_id=user, thread_id=thread)
            ]

    hits = _run(work())
    if json:
        _print_json(hits)
        return
    out = _out()
    for hit in hits:
        where = (
            f"{hit['session_id']} #{hit['position']}"
            if "session_id" in hit
            else f"{hit['thread_id']} #{hit['idx']} ({hit['user_id']})"
        )
        line = Text(f"{where} {hit['role']} {hit['created_at'][:19]}  ", style="dim")
        at = 0
        for start, end in hit["highlights"]:
            line.append(hit["snippet"][at:start])
            line.append(hit["snippet"][start:end], style="bold")
            at = end
        line.append(hit["snippet"][at:])
        out.print(line)
    if not hits:
        out.print("no messages found")


def _deprecated_backfill(query: str | None, url: str | None, batch_size: int, json: bool) -> None:
    if query is not None:
        raise typer.BadParameter("give a query or --backfill, not both")
    # On stderr, so that --json output stays one JSON document.
    _err().print(
        "convostore search --backfill is deprecated and goes in the next release: "
        "run convostore reindex",
        markup=False,
    )
    _reindex(url, batch_size, json)


def _check_search_scope(
    project: str | None,
    agent: str | None,
    *,
    by_agent: tuple[str | None, ...],
    by_project: tuple[str | None, ...],
) -> None:
    """One of --project or --agent, and only the filters that go with it."""
    if (project is None) == (agent is None):
        raise typer.BadParameter("give --project (context store) or --agent (agent database)")
    if project is not None and any(value is not None for value in by_agent):
        raise typer.BadParameter("--user and --thread go with --agent")
    if agent is not None and any(value is not None for value in by_project):
        raise typer.BadParameter("--session and --namespace go with --project")


@app.command("reindex")
def reindex(
    batch_size: Annotated[
        int, typer.Option(min=1, help="Messages per transaction.")
    ] = transfer.reindex.DEFAULT_BATCH_SIZE,
    url: UrlOption = None,
    json: JsonOption = False,
) -> None:
    """Index the messages written before search existed, in batches (resumable)."""
    _reindex(url, batch_size, json)


def _reindex(url: str | None, batch_size: int, json: bool) -> None:
    async def work() -> transfer.ReindexReport:
        async with _database(url, write=True) as engine:
            with _progress() as bar:
                return await transfer.backfill(engine, batch_size=batch_size, progress=bar)

    report = _run(work())
    if json:
        _print_json(report.as_dict())
        return
    counts = report.indexed
    _out().print(
        f"indexed {counts.get('context_messages', 0)} context messages and "
        f"{counts.get('messages', 0)} agent messages"
    )


# --- prune / stats --------------------------------------------------------------------------


@app.command("prune")
def prune(
    older_than: Annotated[
        str, typer.Option("--older-than", help="Age of last activity: 30d, 12h, 90m, 2w, 45s.")
    ],
    project: Annotated[str | None, typer.Option(help="Only this project's sessions.")] = None,
    agent: Annotated[
        str | None, typer.Option("--agent", help='Only this agent\'s threads ("" = default).')
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would go; delete nothing.")
    ] = False,
    url: UrlOption = None,
    json: JsonOption = False,
) -> None:
    """Delete sessions and threads whose last activity is older than --older-than."""
    if project is not None and agent is not None:
        raise typer.BadParameter("give --project or --agent, not both")
    try:
        age = transfer.parse_age(older_than)
    except ValidationError as exc:
        raise typer.BadParameter(str(exc), param_hint="--older-than") from exc

    async def work() -> transfer.PruneReport:
        async with _database(url, write=True) as engine:
            with _progress() as bar:
                return await transfer.prune(
                    engine,
                    older_than=age,
                    project=project,
                    agent=agent,
                    dry_run=dry_run,
                    progress=bar,
                )

    report = _run(work())
    if json:
        _print_json(report.as_dict())
        return
    verb = "would delete" if dry_run else "deleted"
    _out().print(
        f"{verb} {report.sessions} sessions ({report.context_messages} messages), "
        f"{report.threads} threads ({report.messages} messages) and "
        f"{report.langgraph_threads} LangGraph threads ({report.langgraph_checkpoints} "
        f"checkpoints) last active before {_when(report.cutoff)} UTC"
    )


@app.command("stats")
def stats(url: UrlOption = None, json: JsonOption = False) -> None:
    """Rows per table, sessions, threads, payload bytes and compression ratio."""

    async def work() -> transfer.Stats:
        async with _database(url, write=False) as engine:
            with _progress() as bar:
                return await transfer.stats(engine, progress=bar)

    result = _run(work())
    if json:
        _print_json(result.as_dict())
        return
    out = _out()
    out.print(Text(result.url))
    table = Table()
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, count in result.rows.items():
        table.add_row(name, f"{count:,}")
    out.print(table)
    out.print(
        f"{result.rows['context_tokens']:,} sessions in {result.projects:,} projects, "
        f"{result.rows['threads']:,} threads of {result.agents:,} agents"
    )
    out.print(
        f"payloads: {result.stored_bytes:,} bytes stored, {result.json_bytes:,} bytes of JSON "
        f"(compression ratio {result.compression_ratio:.2f})"
    )


# --- ui -------------------------------------------------------------------------------------


@app.command("ui")
def ui(
    url: UrlOption = None,
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free port).")] = 8765,
    host: Annotated[
        str | None,
        typer.Option(
            help="Listen on this address instead of 127.0.0.1 (requires a token: --token, "
            "or one is generated and printed).",
            show_default=False,
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(help="Require this token on every request.", show_default=False),
    ] = None,
    open_browser: Annotated[
        bool, typer.Option("--open", help="Open the viewer in the default browser.")
    ] = False,
) -> None:
    """Browse the database in a local, read-only web viewer (needs convostore[ui])."""
    try:
        from convostore.ui import server
    except ImportError as exc:
        _fail(
            f"the viewer needs the ui extra ({exc.name} is missing): pip install 'convostore[ui]'"
        )
    if token is not None and not server.TOKEN.fullmatch(token):
        raise typer.BadParameter(
            "16 to 256 letters, digits, '-' or '_' (it goes into a URL and a cookie)",
            param_hint="--token",
        )
    if host is not None and token is None:
        token = server.new_token()
    listen = host or "127.0.0.1"

    def announce(address: str) -> None:
        _out().print(f"convostore ui: {address}  (read-only; Ctrl+C to stop)")

    async def work() -> None:
        async with _database(url, write=False) as engine:
            _out().print(f"database: {redact(engine.url)}")
            await server.serve(
                server.read_only(engine),
                host=listen,
                port=port,
                token=token,
                open_browser=open_browser,
                announce=announce,
            )

    _run(work())


# --- rotate-keys ----------------------------------------------------------------------------


@app.command("rotate-keys")
def rotate_keys(
    url: UrlOption = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Rows per transaction.")
    ] = 500,
    encrypt_plain: Annotated[
        bool,
        typer.Option("--encrypt-plain/--keep-plain", help="Also encrypt payloads stored in plain."),
    ] = True,
    decrypt: Annotated[
        bool, typer.Option("--decrypt", help="Write every value back in plain instead.")
    ] = False,
    json: JsonOption = False,
) -> None:
    """Re-encrypt every stored value with the current key of $CONVOSTORE_ENCRYPTION_KEYS
    (resumable: run it again after an interruption)."""
    from convostore.sql.rotation import rotate

    def show(table: str, rows: int, rewritten: int) -> None:
        _err().print(f"{table}: {rows:,} rows read, {rewritten:,} values rewritten so far")

    async def work() -> dict[str, Any]:
        keyring = encryption.Keyring.from_env()
        async with _database(url, write=True) as engine:
            report = await rotate(
                engine,
                keyring,
                batch_size=batch_size,
                encrypt_plain=encrypt_plain,
                decrypt=decrypt,
                progress=None if json else show,
            )
        return {"current": None if decrypt else keyring.current, **report.as_dict()}

    result = _run(work())
    if json:
        _print_json(result)
        return
    target = "plain" if decrypt else f"key {result['current']!r}"
    _out().print(
        f"{result['total']:,} values rewritten to {target} in {result['rows']:,} rows"
        + (
            f"; {result['changed_meanwhile']:,} changed meanwhile (run again)"
            if result["changed_meanwhile"]
            else ""
        )
    )


def _print_version(value: bool) -> None:
    if value:
        _out().print(__version__)
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print convostore's version and exit.",
            callback=_print_version,
            is_eager=True,
        ),
    ] = False,
) -> None:
    """Inspect, migrate and move convostore databases."""


def main() -> None:
    """Entry point of the ``convostore`` console script."""
    app(prog_name="convostore")


if __name__ == "__main__":
    main()

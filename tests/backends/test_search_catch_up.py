"""SQLite's search index off the append's path (migration 0007): what it promises.

Appends store the message only; the index catches up with the rows above its watermark
when a search runs (or the writer thread is idle). These tests hold it to: a search sees
every acknowledged append (other engines and another process writing too); after forks,
clears, replacements, pops, prunes and deletes the index is exactly the words of the
messages there are (its ``fts5vocab`` view, entry by entry, against the feeds rebuilt from
the messages, and search results against a recomputation); a read-only engine finds the
rows the index has not reached; a SIGKILL during the catch-up loses nothing; and no row
holds the message's words in clear.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import URL

from convostore import (
    ConflictError,
    ContextMessage,
    SQLAlchemyContextStore,
    SQLAlchemyDatabase,
    codec,
    create_engine,
    search,
    transfer,
)
from convostore.sql.search_index import rank_of

pytestmark = pytest.mark.sqlite

WRITER = Path(__file__).with_name("search_writer.py")
ROOT = Path(__file__).resolve().parents[2]
WORDS = ("apple", "banana", "cherry", "delta", "echo", "fig")
QUERIES = ("apple", "banana cherry", "ch*", "delta delta echo", "fig* apple", "zzz")


def user(text: str) -> ContextMessage:
    return ContextMessage(role="user", content=[{"type": "text", "text": text}])


def url_of(path: Path) -> URL:
    return URL.create("sqlite+aiosqlite", database=str(path))


def second_process(path: Path, *args: str) -> subprocess.Popen[str]:
    """``search_writer.py`` on ``path`` (see its docstring), its output piped."""
    return subprocess.Popen(
        [sys.executable, str(WRITER), str(path), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def file_bytes(path: Path) -> bytes:
    return path.read_bytes()


def index_entries(path: Path) -> dict[tuple[str, str, int], Counter[str]]:
    """The context index as it stands: each message key's words, from the index itself."""
    with sqlite3.connect(path) as conn:
        keys = {
            doc: (project, session, position)
            for doc, project, session, position in conn.execute(
                "SELECT doc_id, project, session_id, position FROM context_search_docs"
            )
        }
        entries: dict[tuple[str, str, int], Counter[str]] = {}
        for term, doc in conn.execute("SELECT term, doc FROM context_search_vocab"):
            assert doc in keys, f"words of a message no longer there (doc {doc})"
            entries.setdefault(keys[doc], Counter())[term] += 1
        words = dict(conn.execute("SELECT doc_id, words FROM context_search_docs").fetchall())
    for doc, key in keys.items():
        assert sum(entries.get(key, Counter()).values()) == words[doc]
    return entries


async def expected_entries(engine: Any, project: str) -> dict[tuple[str, str, int], Counter[str]]:
    """What the index must hold: every message's feed words (as FTS5 reads them)."""
    store = SQLAlchemyContextStore(engine, project=project)
    out: dict[tuple[str, str, int], Counter[str]] = {}
    for info in await store.list_sessions():
        for message in await store.with_session(info.session_id).get_messages():
            feed = search.context_feed(message.content)
            if feed:
                words = Counter(word.rstrip(search.PAD) for word in feed.split(" "))
                out[(project, info.session_id, message.position)] = words
    return out


async def recomputed(
    engine: Any, project: str, query: str, session_id: str | None = None
) -> list[tuple[str, int, int]]:
    """A search's hits, best first, recomputed from the messages alone."""
    terms = search.parse_query(query).indexed_terms()
    store = SQLAlchemyContextStore(engine, project=project)
    hits = []
    for info in await store.list_sessions():
        for message in await store.with_session(info.session_id).get_messages():
            feed = search.context_feed(message.content)
            rank = rank_of(feed.split(" "), terms) if feed else None
            if rank is not None and session_id in (None, info.session_id):
                hits.append((info.session_id, message.position, rank))
    return sorted(hits, key=lambda h: (-h[2], h[0], h[1]))


async def searched(store: SQLAlchemyContextStore, query: str, **kw: Any) -> list[Any]:
    hits, before = [], None
    while True:
        page = await store.search(query, limit=3, before=before, **kw)
        hits += [(h.session_id, h.message.position, h.rank) for h in page]
        if len(page) < 3:
            return hits
        before = page[-1]


async def test_a_search_right_after_an_append_sees_every_acknowledged_append(
    sqlite_file: Path,
) -> None:
    url = url_of(sqlite_file)
    writers = [create_engine(url), create_engine(url)]
    reader = create_engine(url)
    other = second_process(sqlite_file, "append", "40", "proc")
    try:
        stores = [
            SQLAlchemyContextStore(engine, project="/p", session_id=f"w{n}")
            for n, engine in enumerate(writers)
        ]
        finder = SQLAlchemyContextStore(reader, project="/p")

        async def write_and_find(n: int) -> None:
            for i in range(15):
                await stores[n].append(user(f"w{n} word{i}"))
                hits = await finder.search(f"w{n} word{i}")
                assert [(h.session_id, h.message.position) for h in hits] == [(f"w{n}", i)]

        async def follow_the_other_process() -> None:
            assert other.stdout is not None
            for i in range(40):
                line = await asyncio.to_thread(other.stdout.readline)
                assert line == f"ok {i}\n", other.stderr.read() if other.stderr else ""
                hits = await finder.search(f"proc word{i}")
                assert [(h.session_id, h.message.position) for h in hits] == [("proc", i)]

        await asyncio.gather(write_and_find(0), write_and_find(1), follow_the_other_process())
        assert other.wait() == 0
        assert len(await searched(finder, "word*")) == 15 + 15 + 40
    finally:
        if other.poll() is None:
            other.kill()
        other.wait()
        for engine in (*writers, reader):
            await engine.dispose()


async def test_fork_clear_replace_pop_prune_and_delete_keep_the_index_exact(
    sqlite_file: Path,
) -> None:
    rng = random.Random(7)
    engine = create_engine(url_of(sqlite_file))

    def text() -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6)))

    try:
        base = SQLAlchemyContextStore(engine, project="/p", session_id="s0")
        sessions = [base]
        for step in range(60):
            store = rng.choice(sessions)
            action = rng.random()
            if action < 0.45:
                await store.append_many([user(text()) for _ in range(rng.randint(1, 4))])
            elif action < 0.55:
                sessions.append(await store.fork(at=rng.choice([None, 1, 2])))
            elif action < 0.65:
                await store.replace_history([user(text()) for _ in range(rng.randint(0, 3))])
            elif action < 0.75:
                await store.pop()
            elif action < 0.8:
                await store.clear()
            else:
                await store.search(rng.choice(WORDS))  # catches up part-way through
            if step % 10 == 9:
                everything = SQLAlchemyContextStore(engine, project="/p")
                for query in QUERIES:
                    assert await searched(everything, query) == await recomputed(
                        engine, "/p", query
                    )
                    one = rng.choice(sessions).session_id
                    assert await searched(everything, query, session_id=one) == (
                        await recomputed(engine, "/p", query, one)
                    )
                assert index_entries(sqlite_file) == await expected_entries(engine, "/p")
        # Retention: every session is old a month from now.
        report = await transfer.prune(
            engine, older_than=timedelta(days=1), now=datetime.now(UTC) + timedelta(days=30)
        )
        assert report.context_messages > 0
        assert index_entries(sqlite_file) == {}
        everything = SQLAlchemyContextStore(engine, project="/p")
        for query in QUERIES:
            assert await everything.search(query) == []
        # The rowids freed by the prune come back: the new rows are still found.
        again = SQLAlchemyContextStore(engine, project="/p", session_id="after")
        await again.append_many([user("apple pie"), user("apple tart")])
        assert [h.message.position for h in await again.search("apple")] == [0, 1]
        assert index_entries(sqlite_file) == await expected_entries(engine, "/p")
    finally:
        await engine.dispose()


async def test_a_read_only_engine_finds_the_rows_the_index_has_not_reached(
    sqlite_file: Path,
) -> None:
    url = url_of(sqlite_file)
    # An engine that indexes nothing never catches up (not even when idle): its rows wait.
    plain = create_engine(url, search_index=False)
    writable = create_engine(url)
    reader = create_engine(url, read_only=True)
    try:
        rng = random.Random(3)
        store = SQLAlchemyContextStore(plain, project="/p", session_id="s")
        await store.append_many([user(" ".join(rng.choices(WORDS, k=4))) for _ in range(12)])
        await SQLAlchemyContextStore(writable, project="/p").search("apple")  # caught up
        # Closed: its writer thread would catch up with the next rows when idle.
        await writable.dispose()
        await store.append_many([user(" ".join(rng.choices(WORDS, k=4))) for _ in range(12)])
        await SQLAlchemyDatabase(engine=plain, agent_name="a").add_message(
            "t", "u", "user", message="apple invoice"
        )
        with sqlite3.connect(sqlite_file) as conn:
            (pending,) = conn.execute(
                "SELECT count(*) FROM context_messages WHERE rowid > "
                "(SELECT watermark FROM search_state WHERE name = 'context_messages')"
            ).fetchone()
        assert pending == 12
        ro = SQLAlchemyContextStore(reader, project="/p")
        found = {query: await searched(ro, query) for query in QUERIES}
        found_in_session = await searched(ro, "apple", session_id="s")
        assert found_in_session
        (hit,) = await SQLAlchemyDatabase(engine=reader, agent_name="a").search("invoice")
        assert hit.message.message == "apple invoice"
        # The reader wrote nothing: the rows are still pending.
        with sqlite3.connect(sqlite_file) as conn:
            still = conn.execute("SELECT watermark FROM search_state").fetchall()
        assert sorted(still) == [(0,), (12,)]
        # The same hits, ranks and pages as the index gives once caught up.
        writable = create_engine(url)
        caught_up = SQLAlchemyContextStore(writable, project="/p")
        for query in QUERIES:
            assert found[query] == await searched(caught_up, query), query
            assert found[query] == await recomputed(writable, "/p", query), query
        assert found_in_session == await searched(caught_up, "apple", session_id="s")
    finally:
        for engine in (plain, writable, reader):
            await engine.dispose()


async def test_a_sigkill_during_the_catch_up_loses_nothing(sqlite_file: Path) -> None:
    url = url_of(sqlite_file)
    plain = create_engine(url, search_index=False)
    try:
        store = SQLAlchemyContextStore(plain, project="/p", session_id="s")
        rng = random.Random(11)
        await store.append_many(
            [user(" ".join(rng.choices(WORDS, k=rng.randint(1, 8)))) for _ in range(3000)]
        )
    finally:
        await plain.dispose()
    for kill_after in (1, 3, 7):
        catching_up = second_process(sqlite_file, "catch-up", "100")
        assert catching_up.stdout is not None
        for _ in range(kill_after):
            assert catching_up.stdout.readline() == "batch\n"
        catching_up.kill()  # SIGKILL, somewhere in the next batch
        catching_up.wait()
        catching_up.stdout.close()
        assert catching_up.stderr is not None
        catching_up.stderr.close()
        with sqlite3.connect(sqlite_file) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            (mark,) = conn.execute(
                "SELECT watermark FROM search_state WHERE name = 'context_messages'"
            ).fetchone()
            (below,) = conn.execute(
                "SELECT count(*) FROM context_messages WHERE rowid <= ?", (mark,)
            ).fetchone()
        assert mark >= 100 * kill_after
        # Every row below the mark is in the index, with exactly its words, and no more.
        entries = index_entries(sqlite_file)
        assert len(entries) == below
    engine = create_engine(url)
    try:
        assert index_entries(sqlite_file) != {}
        everything = SQLAlchemyContextStore(engine, project="/p")
        for query in QUERIES:
            assert await searched(everything, query) == await recomputed(engine, "/p", query)
        assert index_entries(sqlite_file) == await expected_entries(engine, "/p")
    finally:
        await engine.dispose()


async def test_no_row_holds_the_words_in_clear(sqlite_file: Path) -> None:
    engine = create_engine(url_of(sqlite_file))
    phrase = "zebra quantum marmalade"
    filler = " ".join(f"{WORDS[i % len(WORDS)]}{i}" for i in range(300))  # ~2 KB
    try:
        store = SQLAlchemyContextStore(engine, project="/p", session_id="s")
        await store.append(user(f"{filler} {phrase} {filler}"))
        (hit,) = await store.search("quantum marmalade")
        assert phrase in hit.snippet
        # An agent message's text is the row's own ``message`` column (in clear unless the
        # keyring says clear_text=False); what must not be there is a second copy.
        db = SQLAlchemyDatabase(engine=engine, agent_name="a")
        await db.add_message("t", "u", "user", message="walrus")
        assert await db.search("walrus")
    finally:
        await engine.dispose()
    with sqlite3.connect(sqlite_file) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        for table in ("context_messages", "messages"):
            columns = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
            assert "search_text" not in columns
        (content,) = conn.execute("SELECT content FROM context_messages").fetchone()
    assert phrase.encode() not in content
    data = file_bytes(sqlite_file)
    # Neither the feed ("zebra_ quantum_ …", "walrus_") nor the text in clear: the payload
    # is compressed, and the index holds single words (FTS5 terms), not the text.
    assert b"zebra_" not in data
    assert b"walrus_" not in data
    assert phrase.encode() not in data


async def test_a_message_edited_outside_convostore_fails_its_delete_until_a_rebuild(
    sqlite_file: Path,
) -> None:
    # The index forgets a message by its exact words, rebuilt from the payload. A payload
    # changed behind convostore's back would give other words: the delete is refused
    # (the word count differs) instead of leaving the old words in the index.
    engine = create_engine(url_of(sqlite_file))
    try:
        store = SQLAlchemyContextStore(engine, project="/p", session_id="s")
        await store.append(user("apple banana"))
        assert await store.search("apple")
        with sqlite3.connect(sqlite_file) as conn:
            conn.execute(
                "UPDATE context_messages SET content = ?",
                (codec.encode([{"type": "text", "text": "cherry"}]),),
            )
        with pytest.raises(ConflictError, match="rebuild_search_index"):
            await store.clear()
        assert [h.message.position for h in await store.search("apple")] == [0]
        await transfer.rebuild_search_index(engine)
        assert await store.search("apple") == []
        assert [h.snippet for h in await store.search("cherry")] == ["cherry"]
        await store.clear()
        assert index_entries(sqlite_file) == {}
    finally:
        await engine.dispose()

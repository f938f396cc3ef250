"""Encryption at rest on every backend: round trips, raw bytes, mixed rows, keys, rotation.

Every check of what is stored reads the columns themselves (or, on SQLite, the file's
bytes), never through convostore's types.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import URL, event, text

from convostore import (
    ContextMessage,
    DecryptionError,
    KeyNotFoundError,
    SQLAlchemyContextStore,
    SQLAlchemyDatabase,
    codec,
    encryption,
    migrate,
    transfer,
)
from convostore.sql.engine import create_engine, sqlite_path
from convostore.sql.rotation import rotate
from tests.backends.encrypted import (
    AGENT,
    K2,
    MARKER,
    PROJECT,
    context_keys,
    message,
    payload_keys,
    raw_values,
    read_all,
    ring,
    write,
)


async def test_round_trip_through_both_facades_stores_only_ciphertext(db_url: URL) -> None:
    plain = create_engine(db_url)
    sealed = create_engine(db_url, encryption=ring("k1", current="k1"))
    try:
        await write(plain, "s-plain", 0, 10)
        await write(sealed, "s-sealed", 0, 10)
        # The same writes read back alike, encrypted or not.
        expected = (await read_all(plain, ["s-plain"]))["s-plain"]
        assert (await read_all(sealed, ["s-sealed"]))["s-sealed"] == expected
        stored = await raw_values(sealed)
        payloads = [v for k, vs in stored.items() for v in vs if isinstance(v, bytes)]
        assert {encryption.key_id_of(v) for v in payloads} == {"k1", None}
        sealed_rows = [v for v in payloads if encryption.key_id_of(v) == "k1"]
        assert len(sealed_rows) == 10 + 3 * 4  # context messages; 4 messages x 3 payloads
        assert not any(MARKER.encode() in v for v in sealed_rows)
        # clear_text=True: the message text and the preview stay readable in clear.
        assert any(MARKER in v for v in stored["messages.message"])
        sessions = await SQLAlchemyContextStore(sealed, project=PROJECT).list_sessions()
        assert {s.session_id for s in sessions if MARKER in s.preview} == {"s-plain", "s-sealed"}
        # stats opens the envelopes it measures.
        assert (await transfer.stats(sealed)).json_bytes > 0
    finally:
        await plain.dispose()
        await sealed.dispose()


async def test_clear_text_false_leaves_no_plaintext(db_url: URL) -> None:
    keyring = ring("k1", current="k1", clear_text=False)
    engine = create_engine(db_url, encryption=keyring)
    try:
        assert not encryption.clear_text_allowed(engine)
        await write(engine, "s", 0, 8)
        store = SQLAlchemyContextStore(engine, project=PROJECT, session_id="s")
        await store.fork(at=3)
        assert [s.preview for s in await store.list_sessions()] == ["(no preview)"] * 2
        assert len((await read_all(engine, ["s"]))["s"][1]) == 4
        messages = await SQLAlchemyDatabase(engine=engine, agent_name=AGENT).get_messages("s", "u")
        assert {m.message for m in messages} >= {f"{MARKER} text 0", f"{MARKER} reply"}
        stored = await raw_values(engine)
        assert stored["context_tokens.preview"] == []
        for values in stored.values():
            for value in values:
                blob = value if isinstance(value, bytes) else value.encode()
                assert MARKER.encode() not in blob
    finally:
        await engine.dispose()
    path = sqlite_path(db_url)
    if path is not None:
        # The whole file, and its WAL (the engine is closed, so it was checkpointed).
        files = [p for p in (path, Path(f"{path}-wal")) if p.exists()]
        assert files
        assert not any(MARKER.encode() in p.read_bytes() for p in files)
    else:
        # Every text and binary column of every table, as the server holds it.
        await _assert_marker_absent_on_server(db_url)


async def _assert_marker_absent_on_server(url: URL) -> None:
    # PostgreSQL renders a whole row as text (its bytea columns in hex: the payloads were
    # checked as bytes above); MariaDB concatenates every column's bytes.
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            for table in ("messages", "context_messages", "context_tokens", "threads", "users"):
                cast = "CAST(t AS TEXT)" if url.get_backend_name() == "postgresql" else "t"
                row = f"{table}" if url.get_backend_name() == "postgresql" else None
                if row is not None:
                    query = f"SELECT count(*) FROM {table} AS t WHERE {cast} LIKE :m"
                else:
                    columns = (
                        await conn.execute(
                            text(
                                "SELECT column_name FROM information_schema.columns"
                                " WHERE table_schema = DATABASE() AND table_name = :t"
                            ),
                            {"t": table},
                        )
                    ).scalars()
                    joined = ", ".join(f"COALESCE(CAST(`{c}` AS BINARY), '')" for c in columns)
                    query = f"SELECT count(*) FROM {table} WHERE CONCAT({joined}) LIKE :m"
                found = (await conn.execute(text(query), {"m": f"%{MARKER}%"})).scalar_one()
                assert found == 0, table
    finally:
        await engine.dispose()


async def test_mixed_rows_read_together(db_url: URL) -> None:
    for name, keyring in (
        ("s-plain", None),
        ("s-old", ring("k1", current="k1")),
        ("s-new", ring("k1", "k2", current="k2")),
    ):
        engine = create_engine(db_url, encryption=keyring)
        try:
            await write(engine, name, 0, 6)
            # The old key's rows and the new key's rows in one session, too.
            store = SQLAlchemyContextStore(engine, project=PROJECT, session_id="s-mixed")
            await store.append(
                ContextMessage(role="user", content=[{"type": "text", "text": name}])
            )
        finally:
            await engine.dispose()
    reader = create_engine(db_url, encryption=ring("k1", "k2", current="k2"))
    try:
        assert await context_keys(reader) == {None: 7, "k1": 7, "k2": 7}
        everything = await read_all(reader, ["s-plain", "s-old", "s-new"])
        assert everything["s-plain"] == everything["s-old"] == everything["s-new"]
        history = await SQLAlchemyContextStore(
            reader, project=PROJECT, session_id="s-mixed"
        ).get_history()
        assert [m.content[0]["text"] for m in history] == ["s-plain", "s-old", "s-new"]
    finally:
        await reader.dispose()


@pytest.mark.parametrize(
    ("keyring", "error"),
    [
        (None, KeyNotFoundError),
        (ring("k2", current="k2"), KeyNotFoundError),
        (encryption.Keyring({"k1": K2}, current="k1"), DecryptionError),
    ],
    ids=["no-keyring", "unknown-key", "wrong-key"],
)
async def test_wrong_or_missing_key_is_a_typed_error(
    db_url: URL, keyring: encryption.Keyring | None, error: type[Exception]
) -> None:
    writer = create_engine(db_url, encryption=ring("k1", current="k1"))
    try:
        await write(writer, "s", 0, 4)
    finally:
        await writer.dispose()
    reader = create_engine(db_url, encryption=keyring)
    try:
        store = SQLAlchemyContextStore(reader, project=PROJECT, session_id="s")
        with pytest.raises(error):
            await store.get_history()
        with pytest.raises(error):
            await SQLAlchemyDatabase(engine=reader, agent_name=AGENT).get_messages("s", "u")
        # What is stored in clear still lists.
        assert [s.message_count for s in await store.list_sessions()] == [4]
    finally:
        await reader.dispose()


async def test_rotation_moves_everything_and_the_old_key_can_go(db_url: URL) -> None:
    for name, keyring in (("s-plain", None), ("s-old", ring("k1", current="k1"))):
        engine = create_engine(db_url, encryption=keyring)
        try:
            await write(engine, name, 0, 6)
        finally:
            await engine.dispose()
    both = ring("k1", "k2", current="k2")
    engine = create_engine(db_url, encryption=both)
    try:
        before = await read_all(engine, ["s-plain", "s-old"])
        seen: list[tuple[str, int, int]] = []
        report = await rotate(engine, both, batch_size=4, progress=lambda *a: seen.append(a))
        # 12 context messages, 8 agent messages x 3 payloads; half of them plain.
        assert report.total == 12 + 8 * 3
        assert report.rewritten["context_messages.content"] == 12
        assert report.changed_meanwhile == 0
        assert seen
        assert seen[-1][2] == report.total
        assert set(await payload_keys(engine)) == {"k2"}
        again = await rotate(engine, both, batch_size=4)
        assert again.total == 0
        assert again.rows == report.rows
    finally:
        await engine.dispose()
    only_new = create_engine(db_url, encryption=ring("k2", current="k2"))
    try:
        assert await read_all(only_new, ["s-plain", "s-old"]) == before
        # clear_text=False: rotation also seals the message texts, drops the previews and
        # empties the search index (one feed per message).
        strict = ring("k2", current="k2", clear_text=False)
        async with only_new.connect() as conn:
            counts = [
                (await conn.execute(text(f"SELECT count(*) FROM {t}"))).scalar_one()
                for t in ("context_messages", "messages")
            ]
        report = await rotate(only_new, strict, batch_size=3)
        assert report.rewritten == {
            "messages.message": 8,
            "context_tokens.preview": 2,
            "search_text": sum(counts),
        }
        stored = await raw_values(only_new)
        assert stored["context_tokens.preview"] == []
        assert not any(MARKER in v for v in stored["messages.message"])
        assert await read_all(only_new, ["s-plain", "s-old"]) == before
        # And back to plain (previews come back with the next append).
        decrypted = await rotate(only_new, ring("k2", current="k2"), decrypt=True)
        assert decrypted.total == 12 + 8 * 4
        assert set(await payload_keys(only_new)) == {None}
    finally:
        await only_new.dispose()
    plain = create_engine(db_url)
    try:
        assert await read_all(plain, ["s-plain", "s-old"]) == before
    finally:
        await plain.dispose()


async def test_rotation_needs_every_key_it_meets(db_url: URL) -> None:
    engine = create_engine(db_url, encryption=ring("k1", current="k1"))
    try:
        await write(engine, "s", 0, 4)
        with pytest.raises(KeyNotFoundError, match=r"context_messages\.content"):
            await rotate(engine, ring("k2", current="k2"))
        assert set(await context_keys(engine)) == {"k1"}
    finally:
        await engine.dispose()


async def test_export_decrypts_and_import_encrypts(db_url: URL, tmp_path: Path) -> None:
    source = create_engine(db_url, encryption=ring("k1", current="k1"))
    target_url = URL.create("sqlite+aiosqlite", database=str(tmp_path / "copy.db"))
    target = create_engine(target_url, encryption=ring("k2", current="k2", clear_text=False))
    try:
        await write(source, "s", 0, 6)
        out = io.BytesIO()
        await transfer.export_jsonl(source, out)
        assert MARKER.encode() in out.getvalue()  # exports are plain, as documented
        await migrate.upgrade(target_url)
        report = await transfer.import_jsonl(target, out.getvalue().splitlines())
        assert report.verified
        assert await read_all(target, ["s"]) == await read_all(source, ["s"])
        assert set(await payload_keys(target)) == {"k2"}
        stored = await raw_values(target)
        assert not any(MARKER in v for v in stored["messages.message"])
        assert stored["context_tokens.preview"] == []
    finally:
        await source.dispose()
        await target.dispose()


async def test_rotation_never_overwrites_a_value_changed_meanwhile(db_url: URL) -> None:
    old = ring("k1", current="k1")
    engine = create_engine(db_url, encryption=old)
    await write(engine, "s", 0, 2)
    await engine.dispose()
    both = ring("k1", "k2", current="k2")
    newer = both.seal(codec.encode([{"type": "text", "text": "written meanwhile"}]))
    engine = create_engine(db_url)
    replaced: list[bool] = []

    def writer_gets_there_first(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        # Between rotation's read of the batch and its update of position 0, a writer
        # replaces that row (here in the same transaction, so the order is certain).
        if statement.startswith("UPDATE context_messages") and not replaced:
            replaced.append(True)
            conn.execute(
                text("UPDATE context_messages SET content = :c WHERE position = 0"), {"c": newer}
            )

    event.listen(engine.sync_engine, "before_cursor_execute", writer_gets_there_first)
    try:
        report = await rotate(engine, both, batch_size=10)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", writer_gets_there_first)
        await engine.dispose()
    assert replaced
    assert report.changed_meanwhile == 1
    assert report.rewritten["context_messages.content"] == 1
    reader = create_engine(db_url, encryption=both)
    try:
        history = await SQLAlchemyContextStore(
            reader, project=PROJECT, session_id="s"
        ).get_history()
        assert history[0].content == [{"type": "text", "text": "written meanwhile"}]
        assert history[1].content == message(1, "assistant").content
    finally:
        await reader.dispose()

"""Documented id lengths that every backend holds, and the one byte limit checked before SQL.

A project of 512, a session id of 128 and a client id of 128 four-byte characters are each
within their documented lengths, but together form a 3072-byte key of the unique client-id
index, beyond PostgreSQL's 2704-byte B-tree limit. Before the fix PostgreSQL refused the
row with "index row size 3096 exceeds btree version 4 maximum 2704" as a plain
``DatabaseError`` (what transient failures raise too), while the other backends stored
it. Now every implementation refuses it before any SQL with a ``ValidationError`` naming
``CLIENT_KEY_BYTES``, and a key just within the limit is stored and found again.
"""

from __future__ import annotations

import random

import pytest

from convostore import ContextMessage, ValidationError
from convostore.rules import (
    CLIENT_ID_LENGTH,
    CLIENT_KEY_BYTES,
    PROJECT_LENGTH,
    SESSION_ID_LENGTH,
)
from tests.contract.conftest import MakeStore

_DRAW = random.Random(21)


def wide(count: int) -> str:
    """``count`` four-byte characters (CJK Extension B) drawn at random: PostgreSQL
    compresses a long index key before measuring it, so a repeated character would fit."""
    return "".join(chr(_DRAW.randrange(0x20000, 0x2A6E0)) for _ in range(count))


def message(text: str) -> ContextMessage:
    return ContextMessage(role="user", content=[{"type": "text", "text": text}])


async def test_the_widest_documented_ids_are_refused_before_sql(make_store: MakeStore) -> None:
    store = await make_store(session_id=wide(SESSION_ID_LENGTH), project=wide(PROJECT_LENGTH))
    with pytest.raises(ValidationError, match="CLIENT_KEY_BYTES"):
        await store.append(message("x"), client_id=wide(CLIENT_ID_LENGTH))
    batch = [message("a"), message("b")]
    with pytest.raises(ValidationError, match="CLIENT_KEY_BYTES"):
        await store.append_many(batch, client_ids=[None, wide(CLIENT_ID_LENGTH)])
    assert await store.get_history() == []
    # Without a client id the same scope is stored: the key is the primary key's, which fits.
    await store.append(message("kept"))
    assert len(await store.get_history()) == 1


async def test_a_key_at_the_limit_is_stored_and_found_again(make_store: MakeStore) -> None:
    project = wide(PROJECT_LENGTH)  # 2048 bytes
    session_id = wide(SESSION_ID_LENGTH)  # 512 bytes
    room = CLIENT_KEY_BYTES - len(project.encode()) - len(session_id.encode())
    client_id = wide(room // 4) + "c" * (room % 4)
    store = await make_store(session_id=session_id, project=project)
    first = await store.append(message("once"), client_id=client_id)
    again = await store.append(message("once"), client_id=client_id)
    assert again.position == first.position
    assert len(await store.get_history()) == 1
    with pytest.raises(ValidationError, match="CLIENT_KEY_BYTES"):
        await store.append(message("over"), client_id=client_id + "c")

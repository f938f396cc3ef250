"""Write a conversation through both interfaces, then read it back from another process.

    python examples/quickstart.py write   # writes to the default database (convostore.db)
    python examples/quickstart.py read    # a new process: reads what `write` stored

The database comes from CONVOSTORE_DATABASE_URL, then DATABASE_URL, then ./convostore.db.
Both steps can run any number of times: ``write`` leaves the same state each time.
"""

from __future__ import annotations

import asyncio
import sys

from convostore import ContextMessage, Database, SQLAlchemyContextStore, User, connect

PROJECT = "quickstart"
SESSION = "demo-session"


async def write() -> None:
    db = await Database(agent_name="support-bot").async_init()
    await db.upsert_user(User(user_id="alice", available_balance=100))
    await db.set_current_thread_id("alice", "thread-1")
    # A client id makes each write idempotent: run this twice and the thread still holds
    # two messages (the second run gets the stored ones back).
    await db.add_message("thread-1", "alice", "user", message="What is 2 + 2?", client_id="q1")
    await db.add_message(
        "thread-1",
        "alice",
        "agent",
        message="4",
        kind="final_response",
        satoshis=5,
        client_id="a1",
    )
    await db.debit("alice", 5)  # from the 100 just set: 95 after every run
    await db.close()

    engine = await connect()
    store = SQLAlchemyContextStore(engine, session_id=SESSION, project=PROJECT)
    await store.clear()
    await store.append(ContextMessage(role="user", content=[{"type": "text", "text": "Hello"}]))
    await store.append(
        ContextMessage(role="assistant", content=[{"type": "text", "text": "Hi! How can I help?"}])
    )
    await store.add_context_tokens(12, 7)
    await engine.dispose()
    print("wrote a thread for alice and session", SESSION)


async def read() -> None:
    db = await Database(agent_name="support-bot").async_init()
    user = await db.get_user("alice")
    thread = await db.get_current_thread_id("alice")
    assert thread is not None
    print(f"alice: balance {user.available_balance}, current thread {thread}")
    for message in await db.get_messages(thread, "alice"):
        print(f"  [{message.idx}] {message.role}: {message.message}")
    await db.close()

    engine = await connect()
    store = SQLAlchemyContextStore(engine, session_id=SESSION, project=PROJECT)
    for message in await store.get_history():
        print(f"  {message.role}: {message.content[0]['text']}")
    print("  tokens (in, out):", await store.get_context_tokens())
    for info in await store.list_sessions():
        print(f"  session {info.session_id}: {info.message_count} messages, {info.preview!r}")
    await engine.dispose()


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else "write"
    asyncio.run(write() if mode == "write" else read())

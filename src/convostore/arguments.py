"""The argument checks of every operation, one function per operation.

:class:`~convostore.SQLAlchemyDatabase`, :class:`~convostore.SQLAlchemyContextStore` and
their in-memory twins call the same function for the same operation, so what one refuses
the others refuse, with the same message. Nothing here touches SQL: each function returns
the checked values (or raises :class:`~convostore.errors.ValidationError`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from uuid import uuid4

from pydantic import BaseModel

from convostore.errors import ValidationError
from convostore.models import (
    ContextSearchHit,
    MessageSearchHit,
    NewMessage,
    SessionInfo,
    ThreadInfo,
    User,
    check_amount,
    check_bool,
    check_client_ids,
    check_id,
    check_namespace,
    check_optional_int,
    check_page,
    new_message,
    new_message_batch,
    scoped_project,
    validated,
)
from convostore.rules import (
    AGENT_NAME_LENGTH,
    CLIENT_ID_LENGTH,
    DEFAULT_AGENT_KEY,
    PROJECT_LENGTH,
    SESSION_ID_LENGTH,
    THREAD_ID_LENGTH,
    USER_ID_LENGTH,
    default_project,
)
from convostore.search import Query, parse_query

__all__ = [
    "MAX_SEARCH_LIMIT",
    "add_message",
    "add_messages",
    "agent_key",
    "balance_change",
    "client_ids",
    "context_window",
    "count",
    "fork_at",
    "get_messages",
    "list_sessions",
    "list_threads",
    "open_session",
    "search_context",
    "search_messages",
    "search_page",
    "session_id",
    "set_current_thread",
    "tokens",
    "upsert_user",
    "user_id",
]

_ID_LENGTHS = (THREAD_ID_LENGTH, USER_ID_LENGTH)

# --- the agent database ----------------------------------------------------------------------


def agent_key(agent_name: str | None) -> str:
    """The stored key of the agent ``agent_name`` (``None``: the default agent)."""
    return (
        DEFAULT_AGENT_KEY
        if agent_name is None
        else check_id(agent_name, "agent_name", AGENT_NAME_LENGTH)
    )


def user_id(value: str) -> str:
    """``get_user`` / ``get_current_thread_id``: the user's id."""
    return check_id(value, "user_id", USER_ID_LENGTH)


def upsert_user(user: User) -> User:
    """``upsert_user``: a checked copy of ``user``."""
    checked = validated(User, user)
    check_id(checked.user_id, "user_id", USER_ID_LENGTH)
    if checked.current_thread_id is not None:
        check_id(checked.current_thread_id, "current_thread_id", THREAD_ID_LENGTH)
    check_amount(checked.available_balance, "available_balance")
    return checked


def set_current_thread(user: str, thread_id: str | None) -> None:
    """``set_current_thread_id``."""
    check_id(user, "user_id", USER_ID_LENGTH)
    if thread_id is not None:
        check_id(thread_id, "thread_id", THREAD_ID_LENGTH)


def balance_change(user: str, amount: int) -> None:
    """``credit`` / ``debit``."""
    check_id(user, "user_id", USER_ID_LENGTH)
    check_amount(amount, "amount")


def add_message(
    thread_id: object,
    user: object,
    role: object,
    message: object,
    content: object,
    kind: object,
    satoshis: object,
    extra_inputs: object,
    extra_outputs: object,
    *,
    feed: bool = True,
) -> NewMessage:
    """``add_message``: the checked message, payloads encoded (the search feed if ``feed``)."""
    return new_message(
        thread_id,
        user,
        role,
        message,
        content,
        kind,
        satoshis,
        extra_inputs,
        extra_outputs,
        id_lengths=_ID_LENGTHS,
        feed=feed,
    )


def add_messages(
    thread_id: object, user: object, messages: Iterable[Mapping[str, Any]], *, feed: bool = True
) -> tuple[list[NewMessage], list[str | None]]:
    """``add_messages``: the checked messages and their client ids."""
    news, client_ids = new_message_batch(
        thread_id, user, messages, id_lengths=_ID_LENGTHS, feed=feed
    )
    return list(news), list(client_ids)


def client_ids(ids: Sequence[str | None] | None, count: int) -> list[str | None]:
    """The client ids of a batch of ``count`` messages (``None``: none given)."""
    return check_client_ids(ids, count, CLIENT_ID_LENGTH)


def get_messages(
    thread_id: str,
    user: str,
    limit: int | None,
    before_idx: int | None,
    after_idx: int | None,
    reverse: bool,
) -> None:
    """``get_messages`` of the agent database."""
    check_id(thread_id, "thread_id", THREAD_ID_LENGTH)
    check_id(user, "user_id", USER_ID_LENGTH)
    check_optional_int(limit, "limit", minimum=0)
    check_optional_int(before_idx, "before_idx")
    check_optional_int(after_idx, "after_idx")
    check_bool(reverse, "reverse")


def list_threads(user: str, limit: int | None, before: ThreadInfo | None) -> None:
    """``list_threads``."""
    check_id(user, "user_id", USER_ID_LENGTH)
    check_page(limit, before, ThreadInfo)


# --- the context store -----------------------------------------------------------------------


def session_id(value: str) -> str:
    """A session's id (``with_session``)."""
    return check_id(value, "session_id", SESSION_ID_LENGTH)


def open_session(
    session: str | None, project: str | None, namespace: str | None
) -> tuple[str, str, str | None, str]:
    """A store's constructor: (session id, project, namespace, stored project key).

    The session id defaults to a new random one, the project to the current directory.
    """
    checked_session = session_id(uuid4().hex if session is None else session)
    checked_project = check_id(
        default_project() if project is None else project, "project", PROJECT_LENGTH
    )
    checked_namespace = check_namespace(namespace)
    scope = scoped_project(checked_namespace, checked_project, PROJECT_LENGTH)
    return checked_session, checked_project, checked_namespace, scope


def count(value: int) -> None:
    """``get_last``."""
    check_amount(value, "count")


def fork_at(at: int | None) -> None:
    """``fork``."""
    if at is not None:
        check_amount(at, "at")


def context_window(after: int | None, before: int | None, limit: int | None, reverse: bool) -> None:
    """``get_messages`` of the context store."""
    check_optional_int(after, "after")
    check_optional_int(before, "before")
    check_optional_int(limit, "limit", minimum=0)
    check_bool(reverse, "reverse")


def tokens(input_tokens: int, output_tokens: int) -> None:
    """``set_context_tokens`` / ``add_context_tokens``."""
    check_amount(input_tokens, "input_tokens")
    check_amount(output_tokens, "output_tokens")


def list_sessions(limit: int | None, before: SessionInfo | None) -> None:
    """``list_sessions``."""
    check_page(limit, before, SessionInfo)


# --- search ----------------------------------------------------------------------------------

MAX_SEARCH_LIMIT = 1000
"""The largest page a search returns."""


def search_page(query: object, limit: object, before: object, cursor: type[BaseModel]) -> Query:
    """Both interfaces' ``search``: the parsed query, a page of 1 to 1000, a hit as cursor."""
    parsed = parse_query(query)
    if type(limit) is not int or not 1 <= limit <= MAX_SEARCH_LIMIT:
        raise ValidationError(f"limit must be an int from 1 to {MAX_SEARCH_LIMIT}, got {limit!r}")
    if before is not None and not isinstance(before, cursor):
        raise ValidationError(f"before must be a {cursor.__name__} from a previous page")
    return parsed


def search_context(
    query: object, limit: object, before: object, session: object
) -> tuple[Query, str | None]:
    """The context store's ``search``: the parsed query and the session to search in."""
    parsed = search_page(query, limit, before, ContextSearchHit)
    return parsed, None if session is None else check_id(session, "session_id", SESSION_ID_LENGTH)


def search_messages(
    query: object, limit: object, before: object, user: object, thread: object
) -> Query:
    """The agent database's ``search``."""
    parsed = search_page(query, limit, before, MessageSearchHit)
    if user is not None:
        check_id(user, "user_id", USER_ID_LENGTH)
    if thread is not None:
        check_id(thread, "thread_id", THREAD_ID_LENGTH)
    return parsed

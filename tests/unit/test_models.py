"""convostore.models.construct builds exactly what pydantic's model_construct builds."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel

from convostore.models import ContextMessage, SessionInfo, StoredContextMessage, construct

NOW = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
CASES: list[tuple[type[BaseModel], dict[str, Any]]] = [
    (ContextMessage, {"role": "user", "content": [{"type": "text", "text": "hi"}]}),
    (
        StoredContextMessage,
        {"role": "tool", "content": [], "position": 3, "created_at": NOW, "client_id": "c"},
    ),
    (
        SessionInfo,
        {
            "session_id": "s",
            "message_count": 2,
            "preview": "hi",
            "created_at": NOW,
            "input_tokens": 1,
            "output_tokens": 2,
            "updated_at": NOW,
            "parent_session_id": None,
            "forked_at": None,
        },
    ),
]


@pytest.mark.parametrize(("model", "values"), CASES, ids=lambda c: getattr(c, "__name__", ""))
def test_construct_matches_model_construct(model: type[BaseModel], values: dict[str, Any]) -> None:
    ours = construct(model, dict(values))
    theirs = model.model_construct(**values)
    assert ours == theirs
    assert repr(ours) == repr(theirs)
    assert ours.model_dump() == theirs.model_dump() == model.model_validate(values).model_dump()
    assert ours.model_fields_set == theirs.model_fields_set
    assert ours.model_dump_json() == theirs.model_dump_json()
    copy = ours.model_copy(update={next(iter(values)): values[next(iter(values))]})
    assert copy == ours

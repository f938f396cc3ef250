"""Optional OpenTelemetry spans and metrics (``pip install 'convostore[otel]'``).

With ``opentelemetry-api`` installed, every public call of a store or database is one
span, ``convostore.<operation>`` (kind ``CLIENT``), on the tracer provider the application
configured (none configured: OpenTelemetry's no-op). Without the package nothing is
traced and nothing is imported; ``CONVOSTORE_TELEMETRY=off`` in the environment (read at
import) turns it off where the package is installed for something else.

Span attributes, identifiers only — never a payload, a message text or a URL:

* ``db.system``: ``sqlite``, ``postgresql``, ``mysql``/``mariadb``;
* ``convostore.operation``: the method's name;
* the scope: ``convostore.project``, ``convostore.session_id`` and ``convostore.namespace``
  for a context store; ``convostore.agent_name`` for an agent database, with
  ``convostore.thread_id`` / ``convostore.user_id`` where the call names them;
* ``convostore.rows``: messages, sessions or threads returned or written, where the call
  returns them;
* ``convostore.retries``: transient conflicts retried (:mod:`convostore.sql.runner`);
* on failure, status ``ERROR`` with the exception's class name as description and
  ``error.type`` (messages are left out: they may quote ids, never payloads, but a span
  is not the place to decide).

Metrics (meter ``convostore``): ``convostore.call.duration`` (histogram, seconds) and
``convostore.call.retries`` (counter), both with ``db.system``, ``convostore.operation``
and, on failure, ``error.type``.
"""

from __future__ import annotations

import functools
import inspect
import os
import time
from collections.abc import Callable, Coroutine
from contextvars import ContextVar
from typing import Any, TypeVar

from pydantic import BaseModel

from convostore.deadlines import one_budget

__all__ = ["enabled", "note_retry", "traced"]

try:
    from opentelemetry import metrics, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError:  # the otel extra is not installed: nothing to do
    _otel = False
else:
    _otel = os.environ.get("CONVOSTORE_TELEMETRY", "on").lower() != "off"

F = TypeVar("F", bound=Callable[..., Coroutine[Any, Any, Any]])

# Retries of the call running in this task (None: no span to report them on).
_retries: ContextVar[list[int] | None] = ContextVar("convostore_retries", default=None)

_instruments: dict[str, Any] = {}


def enabled() -> bool:
    """Whether OpenTelemetry is installed, so that calls are traced."""
    return _otel


def note_retry() -> None:
    """Count one retry of the current call (called by the transaction runner)."""
    counter = _retries.get()
    if counter is not None:
        counter[0] += 1


def _meters() -> dict[str, Any]:
    if not _instruments:
        meter = metrics.get_meter("convostore")
        _instruments["duration"] = meter.create_histogram(
            "convostore.call.duration", unit="s", description="Duration of convostore calls"
        )
        _instruments["retries"] = meter.create_counter(
            "convostore.call.retries", description="Transient conflicts retried"
        )
    return _instruments


def _scope(facade: Any) -> dict[str, str]:
    attributes = {"db.system": facade.engine.dialect.name}
    if hasattr(facade, "session_id"):
        attributes["convostore.project"] = facade.project
        attributes["convostore.session_id"] = facade.session_id
        if facade.namespace is not None:
            attributes["convostore.namespace"] = facade.namespace
    elif facade.agent_name is not None:
        attributes["convostore.agent_name"] = facade.agent_name
    return attributes


def _rows(result: Any) -> int | None:
    if isinstance(result, list):
        return len(result)
    return 1 if isinstance(result, BaseModel) else None  # one message or user


def traced(*named: str) -> Callable[[F], F]:
    """Make each call of the decorated façade method one span (see the module docs), and
    one deadline budget (:func:`convostore.deadlines.one_budget`), traced or not.

    Args:
        named: Names of the method's id parameters to record (``thread_id``, ``user_id``).
    """

    def decorate(method: F) -> F:
        if not _otel:
            return one_budget(method)
        operation = method.__name__
        parameters = list(inspect.signature(method).parameters)[1:]
        positions = {name: parameters.index(name) for name in named}

        @functools.wraps(method)
        async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            attributes: dict[str, Any] = _scope(self)
            attributes["convostore.operation"] = operation
            for name, index in positions.items():
                value = kwargs.get(name, args[index] if index < len(args) else None)
                if isinstance(value, str):
                    attributes[f"convostore.{name}"] = value
            counter = [0]
            token = _retries.set(counter)
            started = time.perf_counter()
            error: str | None = None
            tracer = trace.get_tracer("convostore")
            with tracer.start_as_current_span(
                f"convostore.{operation}",
                kind=SpanKind.CLIENT,
                attributes=attributes,
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                try:
                    result = await method(self, *args, **kwargs)
                except BaseException as exc:
                    error = type(exc).__name__
                    span.set_status(Status(StatusCode.ERROR, error))
                    span.set_attribute("error.type", error)
                    raise
                else:
                    rows = _rows(result)
                    if rows is not None:
                        span.set_attribute("convostore.rows", rows)
                    return result
                finally:
                    _retries.reset(token)
                    span.set_attribute("convostore.retries", counter[0])
                    measured = {
                        "db.system": attributes["db.system"],
                        "convostore.operation": operation,
                    }
                    if error is not None:
                        measured["error.type"] = error
                    instruments = _meters()
                    instruments["duration"].record(time.perf_counter() - started, measured)
                    if counter[0]:
                        instruments["retries"].add(counter[0], measured)

        return one_budget(wrapper)  # type: ignore[return-value]

    return decorate

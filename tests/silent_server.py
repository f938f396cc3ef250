"""Servers that misbehave at the TCP level, for the deadline tests.

Both run in the test's own event loop on a free loopback port and hold no state beyond
their sockets, which :meth:`close` (or ``async with``) closes.

* :class:`SilentServer` accepts every connection and never sends a byte: what a client
  sees of a server whose process is stuck, or of a firewall that swallows packets after
  the handshake. A driver waits for the server's greeting (MySQL) or its answer to the
  startup message (PostgreSQL) for as long as the client lets it.
* :class:`PausableProxy` forwards to a real server until :meth:`PausableProxy.pause`;
  from then on nothing is forwarded in either direction (connections stay open), so a
  client that started up normally finds the server silent mid-conversation.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Self

from sqlalchemy import URL

__all__ = ["PausableProxy", "SilentServer"]

LOOPBACK = "127.0.0.1"


class _Listener:
    """What both servers share: a listening socket, the connections it accepted, closing."""

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.accepted = 0
        """Connections accepted so far."""

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def url(self, url: URL) -> URL:
        """``url`` pointed at this server instead of its own host and port."""
        return url.set(host=LOOPBACK, port=self.port)

    async def start(self) -> Self:
        self._server = await asyncio.start_server(self._accept, LOOPBACK, 0)
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.append(writer)
        await self._serve(reader, writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            # Closing the writers lets the handlers (and so wait_closed) finish.
            await self._server.wait_closed()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


class SilentServer(_Listener):
    """Accepts TCP connections and never answers (reads and discards what it is sent)."""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass


class PausableProxy(_Listener):
    """Forwards every connection to ``host:port`` until paused, then forwards nothing."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__()
        self._target = (host, port)
        self._running = asyncio.Event()
        self._running.set()

    def pause(self) -> None:
        """Stop forwarding, in both directions, on every connection (they stay open)."""
        self._running.clear()

    def resume(self) -> None:
        """Forward again, starting with whatever was held back."""
        self._running.set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        self._writers.append(upstream_writer)
        pumps = [
            asyncio.create_task(self._pump(reader, upstream_writer)),
            asyncio.create_task(self._pump(upstream_reader, writer)),
        ]
        self._tasks.update(pumps)
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for pump in pumps:
            pump.cancel()
        upstream_writer.close()
        writer.close()

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await source.read(65536):
                await self._running.wait()
                sink.write(data)
                await sink.drain()

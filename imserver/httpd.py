"""A small HTTP server on loopback, run on the component's event loop, with a route table.

It serves the component's own pages: ``/metrics`` (Prometheus) and ``/status``
(``imserver status``) to this machine, and ``/invites/<code>.<png|pdf>`` (posters) to
whoever the operator's reverse proxy lets through. A route is a path and an async
handler: an exact path, or a prefix ending in ``/`` that serves every path below it
(the longest prefix wins). Handlers run on the event loop, so they read the component's
in-memory figures without locks and may await the database.

Deliberately small: GET and HEAD only, one request per connection (``Connection:
close``), a request head of at most 16 KiB read within 10 s, no request bodies. It binds
to loopback only: nothing here authenticates, so it must never face a network.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "::1", "localhost")
MAX_HEAD = 16 * 1024
READ_TIMEOUT = 10.0
TEXT = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class Request:
    """A GET or HEAD request: its path and query parameters."""

    method: str
    path: str
    query: Mapping[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Response:
    """What a handler answers."""

    body: bytes = b""
    status: int = 200
    content_type: str = TEXT
    headers: tuple[tuple[str, str], ...] = ()


Handler = Callable[[Request], Awaitable[Response]]


class LoopbackServer:
    """An HTTP server on ``host:port`` (loopback) that answers from its route table."""

    def __init__(self, host: str, port: int) -> None:
        if host not in LOOPBACK:
            raise ValueError(f"{host}: this server has no authentication; loopback only")
        self.host = host
        self.port = port  # 0: any free port, known after start()
        self.routes: dict[str, Handler] = {}
        self._server: asyncio.Server | None = None

    def route(self, path: str, handler: Handler) -> None:
        """Serve ``handler`` at ``path``, or below it when ``path`` ends in ``/``; a path
        is served by one handler."""
        if not path.startswith("/"):
            raise ValueError(f"{path!r}: a route is an absolute path")
        if path in self.routes:
            raise ValueError(f"{path} has a handler already")
        self.routes[path] = handler

    def handler_of(self, path: str) -> Handler | None:
        """The handler of ``path``: its exact route, else its longest prefix route."""
        exact = self.routes.get(path)
        if exact is not None:
            return exact
        prefixes = [p for p in self.routes if p.endswith("/") and path.startswith(p)]
        return self.routes[max(prefixes, key=len)] if prefixes else None

    async def start(self) -> None:
        """Listen (raises OSError when the address is taken)."""
        self._server = await asyncio.start_server(self._serve, self.host, self.port, limit=MAX_HEAD)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("serving %s on http://%s:%d", " ".join(sorted(self.routes)), self.host, self.port)

    async def stop(self) -> None:
        """Stop listening and close open connections."""
        if self._server is not None:
            self._server.close()
            # Python 3.11's wait_closed may wait for idle keep-alive peers: bound it.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            response, head_only = await self._answer(reader)
            await self._write(writer, response, head_only)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass  # the client went away or said nothing: nobody to answer
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[Response, bool]:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
        except asyncio.LimitOverrunError:  # longer than MAX_HEAD, the stream's limit
            return _error(
                HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large"
            ), False
        try:
            method, target, _version = head.split(b"\r\n", 1)[0].decode("ascii").split(" ")
        except (UnicodeDecodeError, ValueError):
            return _error(HTTPStatus.BAD_REQUEST, "malformed request line"), False
        if method not in ("GET", "HEAD"):
            return _error(HTTPStatus.METHOD_NOT_ALLOWED, "only GET and HEAD"), False
        url = urlsplit(target)
        handler = self.handler_of(url.path)
        if handler is None:
            known = ", ".join(sorted(self.routes))
            return _error(HTTPStatus.NOT_FOUND, f"no page {url.path}; try {known}"), False
        request = Request(method, url.path, parse_qs(url.query))
        try:
            return await handler(request), method == "HEAD"
        except Exception:
            log.exception("the handler of %s failed", url.path)
            return _error(HTTPStatus.INTERNAL_SERVER_ERROR, "the page failed; see the log"), False

    @staticmethod
    async def _write(writer: asyncio.StreamWriter, response: Response, head_only: bool) -> None:
        status = HTTPStatus(response.status)
        lines = [
            f"HTTP/1.1 {status.value} {status.phrase}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(response.body)}",
            "Connection: close",
            *(f"{k}: {v}" for k, v in response.headers),
        ]
        if status == HTTPStatus.METHOD_NOT_ALLOWED:
            lines.append("Allow: GET, HEAD")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if not head_only:
            writer.write(response.body)
        await writer.drain()


def _error(status: HTTPStatus, text: str) -> Response:
    return Response(f"{status.value} {status.phrase}: {text}\n".encode(), status.value)

"""A fake XMPP server side of XEP-0114, to feed the component raw bytes that no real
server would pass on (hostile-input tests only; everything else uses a real Prosody).

It listens on loopback, accepts the component's connection, performs the handshake
(checking the secret) and then lets a test write raw bytes and read the stanzas the
component answers. When the component closes the stream (as it must on XML that is not
well-formed), it reconnects; the next connection is a fresh ``Link``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
from xml.etree import ElementTree as ET

STREAM_NS = "http://etherx.jabber.org/streams"
COMPONENT_NS = "jabber:component:accept"


class Link:
    """One accepted connection from the component, after a successful handshake."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = ET.XMLPullParser(("start", "end"))
        self.depth = 0
        self.stanzas: asyncio.Queue[ET.Element] = asyncio.Queue()
        self.closed = asyncio.Event()
        self.stream_error: ET.Element | None = None
        self._reader_task: asyncio.Task[None] | None = None

    def start_reading(self) -> None:
        self._reader_task = asyncio.create_task(self._read_loop())

    async def _read_loop(self) -> None:
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    break
                self.parser.feed(data)
                for event, elem in self.parser.read_events():
                    if event == "start":
                        self.depth += 1
                    else:
                        self.depth -= 1
                        if self.depth == 1:
                            if elem.tag == f"{{{STREAM_NS}}}error":
                                self.stream_error = elem
                            self.stanzas.put_nowait(elem)
                        elif self.depth == 0:
                            return
        except (ConnectionError, ET.ParseError):
            pass
        finally:
            self.closed.set()
            with contextlib.suppress(Exception):
                self.writer.close()

    async def send(self, data: bytes | str) -> None:
        """Write raw bytes to the component."""
        self.writer.write(data.encode() if isinstance(data, str) else data)
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()

    async def next_stanza(self, timeout: float = 10.0) -> ET.Element:
        """The next stanza the component sent (raises TimeoutError)."""
        return await asyncio.wait_for(self.stanzas.get(), timeout)

    async def wait_closed(self, timeout: float = 10.0) -> None:
        """Until the component has closed the stream or the connection."""
        await asyncio.wait_for(self.closed.wait(), timeout)

    async def close(self) -> None:
        """Close our side."""
        with contextlib.suppress(Exception):
            self.writer.close()
        if self._reader_task:
            self._reader_task.cancel()


class FakeServer:
    """Accepts the component (XEP-0114) on a loopback port; ``links`` yields connections."""

    def __init__(self, component: str, secret: str) -> None:
        self.component = component
        self.secret = secret
        self.links: asyncio.Queue[Link] = asyncio.Queue()
        self.connections = 0
        # Bytes to put before our stream header on the next connection (then reset).
        self.next_header_prefix = b""
        self._ids = itertools.count(1)
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server:
            self._server.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        link = Link(reader, writer)
        prefix, self.next_header_prefix = self.next_header_prefix, b""
        sid = f"s{next(self._ids)}"
        try:
            # Their stream header.
            await self._read_until(reader, link, lambda: link.depth >= 1)
            header = (
                f"<?xml version='1.0'?><stream:stream xmlns='{COMPONENT_NS}' "
                f"xmlns:stream='{STREAM_NS}' from='{self.component}' id='{sid}'>"
            ).encode()
            if prefix:
                # A hostile header: e.g. a DOCTYPE with entity declarations before the root.
                header = prefix + header[header.index(b"<stream:stream") :]
            writer.write(header)
            await writer.drain()
            if prefix:
                link.start_reading()
                self.links.put_nowait(link)
                return
            handshake = await self._next(reader, link)
            expected = hashlib.sha1(f"{sid}{self.secret}".encode()).hexdigest()
            if handshake.tag != f"{{{COMPONENT_NS}}}handshake" or handshake.text != expected:
                writer.write(b"<stream:error><not-authorized/></stream:error></stream:stream>")
                writer.close()
                return
            writer.write(b"<handshake/>")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        link.start_reading()
        self.links.put_nowait(link)

    @staticmethod
    async def _read_until(reader: asyncio.StreamReader, link: Link, done: object) -> None:
        assert callable(done)
        while not done():
            data = await reader.read(4096)
            if not data:
                raise ConnectionError("closed during the handshake")
            link.parser.feed(data)
            for event, _elem in link.parser.read_events():
                link.depth += 1 if event == "start" else -1

    @staticmethod
    async def _next(reader: asyncio.StreamReader, link: Link) -> ET.Element:
        while True:
            data = await reader.read(4096)
            if not data:
                raise ConnectionError("closed during the handshake")
            link.parser.feed(data)
            for event, elem in link.parser.read_events():
                if event == "start":
                    link.depth += 1
                else:
                    link.depth -= 1
                    if link.depth == 1:
                        return elem

    async def next_link(self, timeout: float = 15.0) -> Link:
        """The next connection of the component, handshake done."""
        return await asyncio.wait_for(self.links.get(), timeout)

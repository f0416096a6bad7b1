"""Plain HTTP on the engine's own socket, where aiodocker cannot do what the driver needs.

Attach: a container's stdin, stdout and stderr over one hijacked connection to the attach endpoint.
aiodocker's attach stream can only close the whole connection, so a container fed on stdin would lose its
output the moment it is told the input ended. Speaking the attach protocol on our own socket lets us
half-close it (`write_eof`): the engine closes the container's stdin, the container sees end of input,
and its output keeps coming back on the same connection until it exits. See
docs/decisions/0091-docker-attach-over-a-raw-connection.md.

Logs: the container's whole output from its start, multiplexed the same way, as a plain HTTP/1.0 body
(so there is no chunked encoding to undo) that ends when the container has exited.

Ping: the engine's API version from `/_ping`'s header. aiodocker would ask `/version`, which podman
takes more than a second to answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import struct
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

from contracts.logs import LogFd

FRAME_HEADER = struct.Struct(">BxxxI")
STREAM_FDS: dict[int, LogFd] = {1: "stdout", 2: "stderr"}
HEADER_LIMIT = 64 * 1024


class AttachFailed(Exception):
    """The engine refused to attach (no such container, engine error) or could not be reached."""


class ContainerStreams:
    """A connection carrying a container's multiplexed output, and for attach optionally its stdin."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stdin: bool) -> None:
        self._reader = reader
        self._writer = writer
        self._stdin_open = stdin

    @property
    def stdin_open(self) -> bool:
        return self._stdin_open

    async def frames(self, max_bytes: int) -> AsyncIterator[tuple[LogFd, bytes]]:
        """Output in the order the engine sent it, each piece at most `max_bytes`; ends when the container
        closed its output (it exited) or the connection broke."""
        while True:
            try:
                header = await self._reader.readexactly(FRAME_HEADER.size)
                kind, remaining = FRAME_HEADER.unpack(header)
                while remaining:
                    piece = await self._reader.readexactly(min(remaining, max_bytes))
                    remaining -= len(piece)
                    fd = STREAM_FDS.get(kind)
                    if fd is not None:
                        yield fd, piece
            except (asyncio.IncompleteReadError, ConnectionError):
                return

    async def write_stdin(self, data: bytes) -> bool:
        """Send bytes to the container's stdin; False once the container no longer reads it (it exited or
        closed its stdin), like a broken pipe."""
        if not self._stdin_open:
            return False
        try:
            self._writer.write(data)
            await self._writer.drain()
        except ConnectionError:
            self._stdin_open = False
            return False
        return True

    async def close_stdin(self) -> None:
        """End of input: half-close the connection so the container reads EOF and its output still flows."""
        if not self._stdin_open:
            return
        self._stdin_open = False
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.drain()
            self._writer.write_eof()

    async def close(self) -> None:
        self._stdin_open = False
        self._writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.wait_closed()


async def attach(engine_url: str, api_prefix: str, container_id: str, *, stdin: bool) -> ContainerStreams:
    """Attach to a created or running container; for a created one, attach before starting it so no
    output is missed."""
    query = f"stream=1&stdout=1&stderr=1&stdin={int(stdin)}"
    request = (
        f"POST {api_prefix}/containers/{container_id}/attach?{query} HTTP/1.1\r\nHost: docker\r\n"
        "Connection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 0\r\n\r\n"
    )
    return await _open(engine_url, request, stdin=stdin, what="attach")


async def follow_logs(engine_url: str, api_prefix: str, container_id: str) -> ContainerStreams:
    """Everything the container wrote since it started, then what it writes until it exits."""
    query = "follow=1&stdout=1&stderr=1"
    request = f"GET {api_prefix}/containers/{container_id}/logs?{query} HTTP/1.0\r\nHost: docker\r\n\r\n"
    return await _open(engine_url, request, stdin=False, what="read the logs")


async def _open(engine_url: str, request: str, *, stdin: bool, what: str) -> ContainerStreams:
    try:
        reader, writer = await _connect(engine_url)
    except OSError as exc:
        raise AttachFailed(f"cannot reach the engine at {engine_url}: {exc}") from None
    try:
        writer.write(request.encode())
        await writer.drain()
        status, headers = await _response_head(reader)
        if status not in (101, 200):
            body = await _body(reader, headers)
            raise AttachFailed(f"the engine refused to {what} ({status}): {_message(body)}")
    except BaseException:
        writer.close()
        raise
    return ContainerStreams(reader, writer, stdin)


async def api_version(engine_url: str) -> str | None:
    """The engine's API version (`1.41`), None when it does not say; raises OSError if unreachable."""
    reader, writer = await _connect(engine_url)
    try:
        writer.write(b"GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n")
        await writer.drain()
        status, headers = await _response_head(reader)
    except AttachFailed as exc:
        raise OSError(str(exc)) from None
    finally:
        writer.close()
    if status != 200:
        raise OSError(f"the engine answered /_ping with status {status}")
    return headers.get("api-version") or None


async def _connect(engine_url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if engine_url.startswith("unix://"):
        return await asyncio.open_unix_connection(engine_url.removeprefix("unix://"))
    parts = urlsplit(engine_url)
    if parts.scheme not in ("tcp", "http", "https") or parts.hostname is None:
        raise OSError(f"unsupported engine URL {engine_url!r} (use unix://, tcp://, http:// or https://)")
    secure = parts.scheme == "https"
    port = parts.port or (2376 if secure else 2375)
    context = ssl.create_default_context() if secure else None
    return await asyncio.open_connection(parts.hostname, port, ssl=context)


async def _response_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        raise AttachFailed(f"the engine sent no valid response to attach: {exc}") from None
    if len(head) > HEADER_LIMIT:
        raise AttachFailed("the engine's attach response headers are too large")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(status_line.split(" ", 2)[1])
    except (IndexError, ValueError):
        raise AttachFailed(f"the engine sent an invalid status line {status_line!r}") from None
    headers = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return status, headers


async def _body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    length = headers.get("content-length")
    with contextlib.suppress(asyncio.IncompleteReadError, ValueError, ConnectionError):
        if length is not None:
            return await reader.readexactly(min(int(length), HEADER_LIMIT))
        return await asyncio.wait_for(reader.read(HEADER_LIMIT), 1.0)
    return b""


def _message(body: bytes) -> str:
    text = body.decode("utf-8", "replace").strip()
    with contextlib.suppress(ValueError, AttributeError):
        return str(json.loads(text).get("message", text))
    return text or "no message"

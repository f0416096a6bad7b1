"""Reading a run's log straight from the live JetStream stream, by byte offset.

No index is kept: chunk offsets grow with the stream sequence within a run's subject, so a binary search
over sequences with "next message of this subject at or after sequence N" requests finds the chunk
holding an offset in about log2(stream length) requests; a reader that continues where it stopped (the
next page, the archiver filling a gap) resumes from a remembered sequence instead. Republished chunks
can sit out of order in the stream; a gap met while scanning is closed by looking for the chunk that
covers it, ahead first and then from the run's first message, so every byte comes out at its offset.
See docs/decisions/0062-reading-live-logs-without-an-index.md.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from contracts.logs import LOG_END, LOG_OFFSET
from contracts.subjects import logs_stream_name, logs_subject

LOOKAHEAD = 64
RESUME_POINTS = 1024


@dataclass(frozen=True)
class LiveChunk:
    seq: int
    offset: int
    data: bytes
    end: bool

    @property
    def stop(self) -> int:
        return self.offset + len(self.data)


@dataclass(frozen=True)
class LivePage:
    data: bytes
    next_offset: int
    total: int | None
    """The log's size when its end marker was seen, else None."""


class LiveLog:
    def __init__(self, js: JetStreamContext, prefix: str) -> None:
        self._js = js
        self._prefix = prefix
        self._stream = logs_stream_name(prefix)
        self._resume: OrderedDict[tuple[str, int], int] = OrderedDict()

    async def read(
        self, run_id: str, offset: int, limit: int, *, known_end: int | None = None
    ) -> LivePage | None:
        """Up to `limit` bytes from `offset`; None when the stream holds no message of the run at or
        before `offset` (the run printed nothing yet, or its early chunks were already discarded).

        `known_end` tells that the log has at least that many bytes (a later chunk was seen), so a
        missing chunk is searched for instead of taken for the live tail.
        """
        subject = logs_subject(self._prefix, run_id)
        seq = self._resume.pop((run_id, offset), None)
        resumed = seq is not None
        if seq is None:
            seq = await self._locate(subject, offset)
            if seq is None:
                return None
        data = bytearray()
        cursor = offset
        total: int | None = None
        # Invariant: no message before `seq` holds a byte at or after `cursor` that is still needed.
        while len(data) < limit:
            chunk = await self._next(subject, seq)
            if chunk is not None and (chunk.end or chunk.stop <= cursor):
                if chunk.end:
                    total = chunk.offset
                    if cursor >= total:
                        break
                seq = chunk.seq + 1
                continue
            if chunk is None or chunk.offset > cursor:
                expected = max(total or 0, known_end or 0)
                if chunk is None and cursor >= expected:
                    break
                source = await self._covering(subject, seq, cursor)
                if source is None:
                    break
            else:
                source = chunk
            piece = memoryview(source.data)[cursor - source.offset :][: limit - len(data)]
            data += piece
            cursor += len(piece)
            if source is chunk and cursor >= chunk.stop:
                seq = chunk.seq + 1
        if total is None and len(data) >= limit:
            following = await self._next(subject, seq)
            if following is not None and following.end and following.offset == cursor:
                total = following.offset
        if resumed and not data and total is None and await self._next(subject, 1) is None:
            # The stream dropped the run's messages since this reader stopped here: not live any more.
            return None
        self._remember(run_id, cursor, seq)
        return LivePage(bytes(data), cursor, total)

    async def _locate(self, subject: str, offset: int) -> int | None:
        """The sequence of the last message of `subject` whose offset is at most `offset`."""
        first = await self._next(subject, 1)
        if first is None or first.offset > offset:
            return None
        last = await self._last(subject)
        best = first.seq
        low, high = first.seq + 1, last.seq if last is not None else first.seq
        while low <= high:
            middle = (low + high) // 2
            probe = await self._next(subject, middle)
            if probe is None or probe.seq > high:
                high = middle - 1
            elif probe.offset <= offset:
                best = probe.seq
                low = probe.seq + 1
            else:
                high = middle - 1
        return best

    async def _covering(self, subject: str, after: int, cursor: int) -> LiveChunk | None:
        """The chunk holding byte `cursor`, looked for from `after` on, then from the run's first message.

        Only republished chunks stored out of order need this, so it is allowed to be slow."""
        seq = after
        for _ in range(LOOKAHEAD):
            chunk = await self._next(subject, seq)
            if chunk is None:
                break
            if not chunk.end and chunk.offset <= cursor < chunk.stop:
                return chunk
            seq = chunk.seq + 1
        seq = 1
        while seq < after:
            chunk = await self._next(subject, seq)
            if chunk is None or chunk.seq >= after:
                return None
            if not chunk.end and chunk.offset <= cursor < chunk.stop:
                return chunk
            seq = chunk.seq + 1
        return None

    async def _next(self, subject: str, seq: int) -> LiveChunk | None:
        """The first well-formed message of `subject` at or after sequence `seq`."""
        while True:
            try:
                message = await self._js.get_msg(self._stream, seq=seq, subject=subject, next=True)
            except NotFoundError:
                return None
            chunk = _chunk(message.seq, message.headers, message.data)
            if chunk is not None:
                return chunk
            assert message.seq is not None
            seq = message.seq + 1

    async def _last(self, subject: str) -> LiveChunk | None:
        try:
            message = await self._js.get_msg(self._stream, subject=subject)
        except NotFoundError:
            return None
        return _chunk(message.seq, message.headers, message.data)

    def _remember(self, run_id: str, offset: int, seq: int) -> None:
        self._resume[(run_id, offset)] = seq
        while len(self._resume) > RESUME_POINTS:
            self._resume.popitem(last=False)


def _chunk(seq: int | None, headers: dict[str, str] | None, data: bytes | None) -> LiveChunk | None:
    if seq is None or not headers or LOG_OFFSET not in headers:
        return None
    try:
        offset = int(headers[LOG_OFFSET])
    except ValueError:
        return None
    return LiveChunk(seq, offset, data or b"", LOG_END in headers)

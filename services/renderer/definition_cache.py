"""Executions and dimensions as last read, reused only while the store's own commit notifications prove
them current (decision 0177).

A run's definitions must be those committed before its `RunRequested`. PostgreSQL delivers a session's
notifications in commit order, and positions are assigned in commit order (the append lock), so once
this connection has been notified of a commit at position P or later, it has been notified of every
commit before P, and so of every redefinition that could matter to a request at P. A definition stream
touched by a notification is dropped; a notification naming only its head (a batch too big to announce)
drops everything. A read that a change overtook is not kept (the `changes` count), nor one made before
the connection listened; a lost connection drops everything. When the notifications are behind the
request, the renderer reads the store, as without the cache: the cache only ever saves a read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, TypeAlias

import asyncpg

from contracts import streams
from shared.bus.cancellation import raise_if_cancelling
from shared.eventstore.store import EVENTS_CHANNEL, announced_events

if TYPE_CHECKING:
    from contracts.specs import DimensionSpec
    from services.renderer.definitions import ExecutionDefinition

log = logging.getLogger(__name__)

Folded: TypeAlias = "ExecutionDefinition | DimensionSpec | None"
DEFINITION_STREAMS = (streams.EXECUTION, streams.DIMENSION)
MAX_ENTRIES = 10_000
"""Past this many definition streams the cache starts afresh, which bounds its memory."""


class DefinitionCache:
    def __init__(self, dsn: str, *, retry_s: float = 1.0) -> None:
        self.dsn = dsn
        self.retry_s = retry_s
        self.seen = 0
        """The highest position a notification on the current connection announced."""
        self.listening = False
        self.changes = 0
        """Counts every drop, so a read that a change overtook is not kept."""
        self._entries: dict[str, Folded] = {}

    def fresh_for(self, position: int) -> bool:
        """Whether every commit before `position` has been notified here, so cached entries hold it."""
        return self.listening and self.seen >= position

    def get(self, stream_ids: list[str]) -> dict[str, Folded] | None:
        if not all(stream_id in self._entries for stream_id in stream_ids):
            return None
        return {stream_id: self._entries[stream_id] for stream_id in stream_ids}

    def keep(self, changes: int, folded: dict[str, Folded]) -> None:
        """Keep what a read found, unless something changed since `changes` was taken before it."""
        if not self.listening or changes != self.changes:
            return
        if len(self._entries) + len(folded) > MAX_ENTRIES:
            self._entries.clear()
        self._entries.update(folded)

    async def run(self) -> None:
        """Listen for commits until cancelled, reconnecting after a lost connection."""
        while True:
            raise_if_cancelling()
            try:
                await self._listen()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("definition cache: cannot listen (%s); reading the store meanwhile", exc)
            await asyncio.sleep(self.retry_s)

    async def _listen(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        closed = asyncio.Event()
        conn.add_termination_listener(lambda _conn: closed.set())
        try:
            await conn.add_listener(EVENTS_CHANNEL, self._notified)
            self._drop_all()
            self.listening = True
            await closed.wait()
            log.warning("definition cache: lost its database connection; reading the store meanwhile")
        finally:
            self.listening = False
            self._drop_all()
            with contextlib.suppress(Exception):
                await conn.close()

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            announced = announced_events(payload)
            head = max(event.position for event in announced) if announced else int(payload)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("definition cache: unreadable commit notification, dropping everything: %s", exc)
            self._drop_all()
            return
        if not announced:
            self._drop_all()
        else:
            touched = [e.stream_id for e in announced if e.stream_type in DEFINITION_STREAMS]
            if touched:
                self.changes += 1
                for stream_id in touched:
                    self._entries.pop(stream_id, None)
        self.seen = max(self.seen, head)

    def _drop_all(self) -> None:
        self.changes += 1
        self._entries.clear()

"""Follow the event store by global position, for the events every dispatcher replica must see.

The scheduler's job index, retries and queued runs are decided by every replica alike (the store's
optimistic concurrency keeps one of each decision), so each replica reads the store itself rather than
sharing a durable consumer that hands an event to one replica only. The store's tail is gap-safe: a
position is visible only once every earlier one is committed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from contracts.envelope import RecordedEvent
from shared.eventstore.store import EventStore

log = logging.getLogger(__name__)

PAGE = 1000


class StoreTail:
    def __init__(
        self,
        store: EventStore,
        types: Sequence[str],
        handler: Callable[[RecordedEvent], Awaitable[None]],
        *,
        poll_s: float,
    ) -> None:
        self.store = store
        self.types = list(types)
        self.handler = handler
        self.poll_s = poll_s
        self.position = 0

    async def catch_up(self) -> None:
        """Handle everything recorded so far."""
        while await self._page() == PAGE:
            pass

    async def follow(self) -> None:
        while True:
            try:
                if await self._page() == PAGE:
                    continue
            except Exception:
                log.exception("following the store failed at position %d; retrying", self.position)
            await asyncio.sleep(self.poll_s)

    async def _page(self) -> int:
        events = await self.store.read_all(after=self.position, types=self.types, limit=PAGE)
        for event in events:
            # A failure leaves the position before the event, so the next poll tries it again.
            await self.handler(event)
            self.position = event.position
        return len(events)

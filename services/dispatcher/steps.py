"""Recording a pipeline's step events in the run's stream while the run goes on.

Steps end on their own schedule, but their events must be committed in the order they happened and
before the run's terminal event. A single task appends whatever has queued up, as one batch at the
version it read, re-reading on a concurrency error (a stop request landing meanwhile), so the order is
kept and a busy pipeline costs one append per burst, not per step.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from contracts.base import Event
from contracts.envelope import EventMeta
from shared.bus.cancellation import raise_if_cancelling
from shared.domain.run_lifecycle import refusal, run_state
from shared.eventstore.errors import ConcurrencyError
from shared.eventstore.store import EventStore

log = logging.getLogger(__name__)

RETRY_S = 0.5


class StepRecorder:
    def __init__(self, store: EventStore, stream_id: str, meta: EventMeta) -> None:
        self.store = store
        self.stream_id = stream_id
        self.meta = meta
        self._pending: list[Event] = []
        self._task: asyncio.Task[None] | None = None

    def add(self, event: Event) -> None:
        self._pending.append(event)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._append_pending())

    async def flush(self) -> None:
        """Wait until every step event so far is recorded (or refused because the run ended)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def _append_pending(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            await self._append(batch)

    async def _append(self, batch: list[Event]) -> None:
        while True:
            try:
                state = run_state(await self.store.read_stream(self.stream_id))
                events = [event for event in batch if refusal(state, event) is None]
                if len(events) < len(batch):
                    log.info(
                        "%d step events of %s not recorded: the run is not running",
                        len(batch) - len(events),
                        self.stream_id,
                    )
                if events:
                    await self.store.append(
                        self.stream_id, events, expected_version=state.version, meta=self.meta
                    )
                return
            except ConcurrencyError:
                continue
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                raise_if_cancelling()
                log.warning("recording step events of %s failed (%s); retrying", self.stream_id, exc)
            await asyncio.sleep(RETRY_S)

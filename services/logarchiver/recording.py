"""Recording `RunLogArchived` exactly once per run, however many end markers or replicas there are."""

from __future__ import annotations

import uuid

from contracts.envelope import EventMeta
from contracts.events import RunLogArchived
from contracts.streams import RUN, stream_id
from shared.archive import ArchivedLog
from shared.eventstore import ConcurrencyError, EventStore

ACTOR = "logarchiver"


async def record_archived(store: EventStore, sealed: ArchivedLog) -> bool:
    """Append `RunLogArchived` unless the run's stream already has one; True when this call appended.

    The append expects the version just read, so of two replicas racing past the check only one
    commits; the other meets a ConcurrencyError, reads again and finds the event there. Other events
    (the run's terminal event) may land in between; that too is a ConcurrencyError and a re-read.
    """
    stream = stream_id(RUN, sealed.run_id)
    event = RunLogArchived(
        run_id=uuid.UUID(sealed.run_id), bytes=sealed.bytes, sha256=sealed.sha256, location=sealed.location
    )
    while True:
        history = await store.read_stream(stream)
        if any(recorded.type == "RunLogArchived" for recorded in history):
            return False
        version = history[-1].stream_version if history else 0
        correlation = history[-1].correlation_id if history else f"run-log-{sealed.run_id}"
        meta = EventMeta(actor=ACTOR, correlation_id=correlation)
        try:
            await store.append(stream, [event], expected_version=version, meta=meta)
        except ConcurrencyError:
            continue
        return True

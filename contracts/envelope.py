"""The envelope every stored event carries, and its CloudEvents 1.0 form on the bus."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import Field

import contracts.events  # noqa: F401  (registers every event type for parse_event)
from contracts.base import Contract, Event, JsonObject, parse_event
from contracts.streams import stream_type_of


class EventMeta(Contract):
    """Who or what caused an event, and which request or tick it belongs to."""

    actor: str = Field(min_length=1, max_length=200)
    correlation_id: str = Field(min_length=1, max_length=200)
    causation_id: str | None = None


class RecordedEvent(Contract):
    """An event as the store committed it: the payload plus everything needed to audit and replay it."""

    id: uuid.UUID
    stream_id: str
    stream_version: int = Field(ge=1)
    position: int = Field(ge=1)
    type: str
    schema_version: int = Field(ge=1)
    time: datetime
    actor: str
    correlation_id: str
    causation_id: str | None
    data: JsonObject

    def payload(self) -> Event:
        return parse_event(self.type, self.data)

    @property
    def stream_type(self) -> str:
        return stream_type_of(self.stream_id)


class CloudEvent(Contract):
    """Structured-mode CloudEvents 1.0 JSON, the body of every message on `<prefix>.events.>`.

    Extension attributes carry the store's envelope; `prevposition` is the global position of the event
    the relay published just before this one, so an ordered consumer can tell a gap from a duplicate
    even though the store's positions may have holes left by rolled-back transactions.
    """

    specversion: Literal["1.0"] = "1.0"
    id: uuid.UUID
    source: str
    type: str
    subject: str
    time: datetime
    datacontenttype: Literal["application/json"] = "application/json"
    data: JsonObject
    streamversion: int
    position: int
    prevposition: int
    schemaversion: int
    actor: str
    correlationid: str
    causationid: str | None = None

    @classmethod
    def from_recorded(cls, event: RecordedEvent, source: str, prev_position: int) -> CloudEvent:
        return cls(
            id=event.id,
            source=source,
            type=event.type,
            subject=event.stream_id,
            time=event.time,
            data=event.data,
            streamversion=event.stream_version,
            position=event.position,
            prevposition=prev_position,
            schemaversion=event.schema_version,
            actor=event.actor,
            correlationid=event.correlation_id,
            causationid=event.causation_id,
        )

    def to_recorded(self) -> RecordedEvent:
        return RecordedEvent(
            id=self.id,
            stream_id=self.subject,
            stream_version=self.streamversion,
            position=self.position,
            type=self.type,
            schema_version=self.schemaversion,
            time=self.time,
            actor=self.actor,
            correlation_id=self.correlationid,
            causation_id=self.causationid,
            data=self.data,
        )

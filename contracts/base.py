"""Base classes that give every event and command the same guarantees.

Events are immutable facts, so their models are frozen and refuse unknown fields: a typo in a producer
fails loudly instead of silently dropping data that replay would later miss.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

JsonObject = dict[str, Any]

EVENT_TYPES: dict[str, type[Event]] = {}


class Contract(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Event(Contract):
    """A fact that happened to one stream; the class name is the event type."""

    stream_type: ClassVar[str]
    schema_version: ClassVar[int] = 1

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "stream_type" in cls.__dict__:
            EVENT_TYPES[cls.__name__] = cls

    @classmethod
    def event_type(cls) -> str:
        return cls.__name__


class Command(Contract):
    """An intent a client asks for; it may be refused, so it is named in the imperative."""


class UnknownEventType(LookupError):
    pass


def event_class(event_type: str) -> type[Event]:
    try:
        return EVENT_TYPES[event_type]
    except KeyError:
        raise UnknownEventType(event_type) from None


def parse_event(event_type: str, data: JsonObject) -> Event:
    return event_class(event_type).model_validate(data)

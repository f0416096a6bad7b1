"""Which announced events the relay publishes without reading the store (shared/bus/relay.py): only
those that continue its position without a hole; everything else sends it to the store."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any, cast

from shared.bus import relay as relay_module
from shared.bus.relay import Relay


def relay_at(position: int) -> Relay:
    relay = Relay(cast(Any, None), cast(Any, None), "dsn", "by", "batchyard/test")
    relay.position = position
    return relay


def announcement(*positions: int) -> str:
    return json.dumps(
        [
            {
                "position": position,
                "event_id": str(uuid.uuid4()),
                "stream_id": f"job-{uuid.uuid4()}",
                "stream_version": 1,
                "type": "JobPaused",
                "schema_version": 1,
                "data": {"job_id": str(uuid.uuid4()), "reason": None},
                "actor": "tester",
                "correlation_id": "corr",
                "causation_id": None,
                "recorded_at": datetime.now(UTC).isoformat(),
            }
            for position in positions
        ]
    )


def notify(relay: Relay, payload: str) -> None:
    relay._notified(None, 1, "batchyard_events", payload)


def test_announced_events_that_continue_the_position_are_taken_in_order() -> None:
    relay = relay_at(10)
    notify(relay, announcement(13))
    notify(relay, announcement(11, 12))
    assert [event.position for event in relay._next_announced()] == [11, 12, 13]
    assert relay._next_announced() == []


def test_an_announcement_after_a_hole_sends_the_relay_to_the_store_and_is_forgotten() -> None:
    relay = relay_at(10)
    notify(relay, announcement(12, 13))
    assert relay._next_announced() == []
    relay.position = 13
    notify(relay, announcement(14))
    assert [event.position for event in relay._next_announced()] == [14]


def test_events_the_relay_already_passed_are_dropped() -> None:
    relay = relay_at(10)
    notify(relay, announcement(9, 10, 11))
    assert [event.position for event in relay._next_announced()] == [11]


def test_a_head_only_or_unreadable_notification_announces_nothing_but_still_wakes_the_relay() -> None:
    relay = relay_at(10)
    for payload in ("11", "[{]", '[{"position": 11}]'):
        relay._wakeup.clear()
        notify(relay, payload)
        assert relay._wakeup.is_set() and relay._next_announced() == []


def test_announcements_piling_up_past_the_limit_are_dropped_for_a_read(monkeypatch: Any) -> None:
    monkeypatch.setattr(relay_module, "MAX_ANNOUNCED", 3)
    relay = relay_at(10)
    notify(relay, announcement(11, 12))
    notify(relay, announcement(13, 14))
    assert relay._next_announced() == []

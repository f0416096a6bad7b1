"""The definition cache's rules, fed the notification payloads `events_append` sends (schema.sql)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from contracts.specs import DimensionSpec, DimensionValue
from services.renderer.definition_cache import DefinitionCache

ACME = DimensionSpec(priority=1, values={"acme": DimensionValue(params={"region": "eu"})})


def announcement(*rows: tuple[int, str]) -> str:
    """A commit notification carrying its rows, as `events_append` builds it."""
    return json.dumps(
        [
            {
                "position": position,
                "event_id": str(uuid.uuid4()),
                "stream_id": stream_id,
                "stream_version": 1,
                "type": "Anything",
                "schema_version": 1,
                "data": {},
                "actor": "tester",
                "correlation_id": "c",
                "causation_id": None,
                "recorded_at": datetime.now(UTC).isoformat(),
            }
            for position, stream_id in rows
        ]
    )


def listening_cache() -> DefinitionCache:
    cache = DefinitionCache("postgresql://unused")
    cache.listening = True
    return cache


def notify(cache: DefinitionCache, payload: str) -> None:
    cache._notified(None, 0, "batchyard_events", payload)


def test_entries_serve_only_requests_whose_position_has_been_notified() -> None:
    cache = listening_cache()
    cache.keep(cache.changes, {"dimension-customer": ACME})
    notify(cache, announcement((7, "run-a")))
    assert cache.fresh_for(7) and not cache.fresh_for(8)
    assert cache.get(["dimension-customer"]) == {"dimension-customer": ACME}


def test_nothing_is_fresh_while_not_listening() -> None:
    cache = listening_cache()
    notify(cache, announcement((7, "run-a")))
    cache.listening = False
    assert not cache.fresh_for(1)


def test_a_notified_change_to_a_definition_stream_drops_that_stream_only() -> None:
    cache = listening_cache()
    cache.keep(cache.changes, {"dimension-customer": ACME, "dimension-env": None})
    notify(cache, announcement((3, "run-a"), (4, "dimension-env")))
    assert cache.get(["dimension-env"]) is None
    assert cache.get(["dimension-customer"]) == {"dimension-customer": ACME}
    assert cache.seen == 4


def test_a_read_overtaken_by_a_change_is_not_kept() -> None:
    cache = listening_cache()
    before_read = cache.changes
    notify(cache, announcement((5, "execution-hello")))
    cache.keep(before_read, {"execution-hello": None})
    assert cache.get(["execution-hello"]) is None


def test_commits_to_other_streams_keep_reads_in_flight() -> None:
    cache = listening_cache()
    before_read = cache.changes
    notify(cache, announcement((5, "run-a"), (6, "job-b")))
    cache.keep(before_read, {"execution-hello": None})
    assert cache.get(["execution-hello"]) == {"execution-hello": None}


def test_a_notification_naming_only_its_head_drops_everything_and_advances() -> None:
    cache = listening_cache()
    cache.keep(cache.changes, {"dimension-customer": ACME})
    notify(cache, "42")
    assert cache.get(["dimension-customer"]) is None
    assert cache.fresh_for(42)


def test_an_unreadable_notification_drops_everything_without_advancing() -> None:
    cache = listening_cache()
    notify(cache, announcement((3, "run-a")))
    cache.keep(cache.changes, {"dimension-customer": ACME})
    notify(cache, "[{not json")
    assert cache.get(["dimension-customer"]) is None
    assert cache.seen == 3


def test_a_read_is_not_kept_while_not_listening() -> None:
    cache = DefinitionCache("postgresql://unused")
    cache.keep(cache.changes, {"dimension-customer": ACME})
    assert cache.get(["dimension-customer"]) is None

"""The renderer's definitions with the cache, against real PostgreSQL: a run is never rendered with a
definition older than its request, and an unchanged definition is not read again."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Sequence

import asyncpg

from contracts.envelope import RecordedEvent
from contracts.events import ExecutionRedefined
from services.renderer.definition_cache import DefinitionCache
from services.renderer.definitions import Definitions
from shared.eventstore import EventStore
from shared.settings import Settings
from tests.integration.test_renderer import ADMIN, HELLO, define_execution, request_run
from tests.polling import eventually


@contextlib.asynccontextmanager
async def listening(settings: Settings) -> AsyncIterator[DefinitionCache]:
    cache = DefinitionCache(settings.pg_dsn, retry_s=0.05)
    task = asyncio.create_task(cache.run())
    try:
        await eventually(lambda: asyncio.sleep(0, cache.listening))
        yield cache
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class CountingStore(EventStore):
    """The real store, counting the reads of definition streams."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool)
        self.reads = 0

    async def read_streams(self, stream_ids: Sequence[str]) -> dict[str, list[RecordedEvent]]:
        self.reads += 1
        return await super().read_streams(stream_ids)


async def redefine(store: EventStore, version: int, greeting: str) -> None:
    spec = HELLO.model_copy(update={"default_params": {**HELLO.default_params, "greeting": greeting}})
    await store.append(
        "execution-hello",
        [ExecutionRedefined(name="hello", spec=spec, changed=["default_params"])],
        expected_version=version,
        meta=ADMIN,
    )


async def notified_of(cache: DefinitionCache, request: RecordedEvent) -> bool:
    return cache.fresh_for(request.position)


async def greeting_for(definitions: Definitions, request: RecordedEvent) -> object:
    execution, _ = await definitions.load("hello", [], position=request.position)
    assert execution is not None
    return execution.spec.default_params["greeting"]


async def warmed(store: EventStore, cache: DefinitionCache) -> tuple[Definitions, RecordedEvent]:
    """Definitions with `hello` read once and cached, for a request the cache was notified of."""
    definitions = Definitions(store, cache)
    await define_execution(store, "hello", HELLO)
    request = await request_run(store, "hello")
    await eventually(functools.partial(notified_of, cache, request))
    assert await greeting_for(definitions, request) == "hello"
    assert cache.get(["execution-hello"]) is not None
    return definitions, request


async def test_an_unchanged_definition_is_read_once_for_requests_the_cache_was_notified_of(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    store = CountingStore(pool)
    async with listening(settings) as cache:
        definitions, _ = await warmed(store, cache)
        for _ in range(3):
            request = await request_run(store, "hello")
            await eventually(functools.partial(notified_of, cache, request))
            assert await greeting_for(definitions, request) == "hello"
        assert store.reads == 1


async def test_a_request_the_cache_was_not_yet_notified_of_reads_the_store(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    store = CountingStore(pool)
    async with listening(settings) as cache:
        definitions, request = await warmed(store, cache)
        unseen = request.model_copy(update={"position": request.position + 1_000})
        assert await greeting_for(definitions, unseen) == "hello"
        assert store.reads == 2


async def test_a_run_requested_right_after_a_redefinition_gets_the_new_one(
    settings: Settings, store: EventStore
) -> None:
    async with listening(settings) as cache:
        definitions = Definitions(store, cache)
        await define_execution(store, "hello", HELLO)
        for version in range(1, 21):
            await greeting_for(definitions, await request_run(store, "hello"))
            await redefine(store, version, f"greeting {version}")
            request = await request_run(store, "hello")
            assert await greeting_for(definitions, request) == f"greeting {version}"


async def test_a_lost_connection_forgets_every_entry_and_listens_again(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    store = CountingStore(pool)
    async with listening(settings) as cache:
        definitions, request = await warmed(store, cache)
        before = cache.changes
        async with pool.acquire() as conn:
            terminated = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
            )
        assert terminated == 1
        # Dropped once when the connection is lost and once when listening again.
        await eventually(lambda: asyncio.sleep(0, cache.listening and cache.changes >= before + 2))
        assert cache.get(["execution-hello"]) is None
        assert await greeting_for(definitions, request) == "hello"
        assert store.reads == 2

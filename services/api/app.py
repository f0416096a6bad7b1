"""The API's aiohttp application factory: the one place where the API is wired together."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from services.api.context import CONTEXT, ApiContext, EventFeed
from services.api.openapi import ALL_ENDPOINTS
from services.api.problems import problem_middleware
from services.api.readmodels.projection import ReadModelProjection
from services.api.readmodels.schema import LIVE_SCHEMA, TRACKING_NAME, create_tables
from services.api.routes import artifacts
from services.api.secrets import SecretDoor
from shared.archive.factory import open_archive
from shared.archive.reader import LogReader
from shared.bus.projector import ProjectionWatcher, Projector
from shared.service import open_runtime
from shared.settings import Settings


def create_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[problem_middleware])

    async def runtime_ctx(app: web.Application) -> AsyncIterator[None]:
        door = SecretDoor.from_settings(settings)
        async with open_runtime(settings, "api") as runtime, await open_archive(settings) as archive:
            async with runtime.pool.acquire() as conn:
                await create_tables(conn, LIVE_SCHEMA)
            projection = ReadModelProjection(LIVE_SCHEMA, TRACKING_NAME)
            projector = runtime.spawn(
                Projector(runtime.store, runtime.js, settings.pg_dsn, settings.bus_prefix, projection).run(),
                "projector",
            )
            watcher = ProjectionWatcher(settings.pg_dsn, TRACKING_NAME)
            feed = EventFeed(settings.pg_dsn)
            await watcher.start()
            await feed.start()
            logs = LogReader(archive, runtime.js, settings.bus_prefix)
            app[CONTEXT] = ApiContext(runtime, watcher, feed, projector, settings.command_wait_s, logs, door)
            try:
                yield
            finally:
                await feed.stop()
                await watcher.stop()

    app.cleanup_ctx.append(runtime_ctx)
    app.cleanup_ctx.append(artifacts.archive_ctx(settings))
    for endpoint in ALL_ENDPOINTS:
        app.router.add_route(endpoint.method, endpoint.path, endpoint.handler)
    return app

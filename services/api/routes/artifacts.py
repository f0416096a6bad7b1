"""A run's artifacts: the files its steps wrote to `$BATCHYARD_ARTIFACTS`, kept in the archive with its
log by the dispatcher before the run's end was recorded (docs/decisions/0171-artifacts-and-run-state.md).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiohttp import web
from pydantic import BaseModel

from services.api.context import context
from services.api.problems import ProblemError
from services.api.readmodels import queries
from services.api.requests import json_response, path_uuid
from services.api.routes.endpoint import Endpoint
from shared.archive.base import Archive, check_file_name
from shared.archive.factory import open_archive
from shared.settings import Settings

ARCHIVE = web.AppKey("archive", Archive)


class ArtifactView(BaseModel):
    name: str
    bytes: int


class ArtifactList(BaseModel):
    items: list[ArtifactView]


def archive_ctx(settings: Settings) -> Callable[[web.Application], AsyncIterator[None]]:
    """The archive the API reads artifacts from, open for the application's lifetime."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        archive = await open_archive(settings)
        app[ARCHIVE] = archive
        try:
            yield
        finally:
            await archive.close()

    return ctx


async def _known_run(request: web.Request) -> str:
    run_id = path_uuid(request, "run_id")
    async with context(request).pool.acquire() as conn:
        if await queries.get_run(conn, run_id) is None:
            raise ProblemError(404, "Not Found", f"no run {run_id}", "not-found")
    return str(run_id)


async def list_artifacts(request: web.Request) -> web.Response:
    run_id = await _known_run(request)
    stored = await request.app[ARCHIVE].list_files(run_id)
    return json_response(ArtifactList(items=[ArtifactView(name=f.name, bytes=f.bytes) for f in stored]))


async def download_artifact(request: web.Request) -> web.StreamResponse:
    run_id = await _known_run(request)
    name = request.match_info["name"]
    try:
        check_file_name(name)
    except ValueError as exc:
        raise ProblemError(404, "Not Found", f"no artifact {name!r}: {exc}", "not-found") from None
    folder = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="batchyard-artifact-"))
    target = folder / "file"
    try:
        try:
            await request.app[ARCHIVE].get_file(run_id, name, target)
        except FileNotFoundError:
            raise ProblemError(
                404, "Not Found", f"run {run_id} has no artifact {name!r}", "not-found"
            ) from None
        response = web.StreamResponse(
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Disposition": f'attachment; filename="{Path(name).name}"',
                "Content-Length": str(target.stat().st_size),
            }
        )
        await response.prepare(request)
        with target.open("rb") as source:
            while chunk := await asyncio.to_thread(source.read, 256 * 1024):
                await response.write(chunk)
        await response.write_eof()
        return response
    finally:
        await asyncio.to_thread(shutil.rmtree, folder, True)


ENDPOINTS = [
    Endpoint(
        "GET",
        "/runs/{run_id}/artifacts",
        list_artifacts,
        "The files a run's steps wrote to `$BATCHYARD_ARTIFACTS`, listed once the run has ended.",
        response=ArtifactList,
        errors=(404,),
        tag="runs",
    ),
    Endpoint(
        "GET",
        "/runs/{run_id}/artifacts/{name:.+}",
        download_artifact,
        "Download one artifact (its name may contain `/`).",
        errors=(404,),
        media_type="application/octet-stream",
        tag="runs",
    ),
]

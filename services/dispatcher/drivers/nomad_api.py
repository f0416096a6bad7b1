"""A small asynchronous client for the parts of Nomad's HTTP API that running batch work needs.

Only what the driver uses, spelled as Nomad documents it: register, validate, dispatch, read and
deregister jobs, blocking queries on a job's allocations and on job lists (`index`, `wait`,
`X-Nomad-Index`), evaluations, signals, periodic force, and the framed log stream of `fs/logs`. Errors
keep Nomad's own words (its error bodies are plain text), because they end up as a run's failure reason.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

import aiohttp

from contracts.base import JsonObject

DEFAULT_WAIT_S = 10.0
REQUEST_TIMEOUT_S = 30.0
ERROR_TEXT_LIMIT = 500

LogType = Literal["stdout", "stderr"]


class NomadError(Exception):
    """Nomad answered, and the answer was not a success: `status` and Nomad's own message."""

    def __init__(self, status: int, method: str, path: str, text: str) -> None:
        message = " ".join(text.split())[:ERROR_TEXT_LIMIT] or "(empty response)"
        super().__init__(f"Nomad answered {status} to {method} {path}: {message}")
        self.status = status
        self.text = text


class NomadUnreachable(Exception):
    """No answer at all: connection refused, reset, timed out, or a body that is not Nomad's JSON."""


@dataclass(frozen=True)
class NomadConnection:
    """Where a Nomad cluster is and how to talk to it; the token never leaves this process."""

    address: str
    token: str | None = field(default=None, repr=False)
    namespace: str | None = None
    region: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> NomadConnection | None:
        """Nomad's own CLI variables, so a dispatcher beside a Nomad agent needs no extra setting."""
        env = os.environ if environ is None else environ
        address = env.get("NOMAD_ADDR")
        if not address:
            return None
        return cls(
            address=address.rstrip("/"),
            token=env.get("NOMAD_TOKEN") or None,
            namespace=env.get("NOMAD_NAMESPACE") or None,
            region=env.get("NOMAD_REGION") or None,
        )


@dataclass(frozen=True)
class LogFrame:
    """One frame of `fs/logs`: decoded bytes, or a file event ("file truncated", "file deleted")."""

    data: bytes
    file: str
    offset: int
    event: str


def new_session() -> aiohttp.ClientSession:
    """No cap on connections: every followed run holds a blocking query and a log stream per task and
    stream open for as long as it runs, and under aiohttp's default cap of 100 those would starve the
    short calls (a deregister for a stop) queued behind them."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))


def _duration(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


class NomadClient:
    """One Nomad address with its token, namespace and region applied to every request."""

    def __init__(self, connection: NomadConnection, session: aiohttp.ClientSession | None = None) -> None:
        self.connection = connection
        self._session = session
        self._owns_session = session is None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = new_session()
            self._owns_session = True
        return self._session

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()

    def _url(self, path: str) -> str:
        return f"{self.connection.address}/v1{path}"

    def _headers(self) -> dict[str, str]:
        return {"X-Nomad-Token": self.connection.token} if self.connection.token else {}

    def _params(self, params: Mapping[str, str | int | None] | None, namespace: str | None) -> dict[str, str]:
        merged: dict[str, str] = {}
        ns = namespace or self.connection.namespace
        if ns:
            merged["namespace"] = ns
        if self.connection.region:
            merged["region"] = self.connection.region
        for key, value in (params or {}).items():
            if value is not None:
                merged[key] = str(value)
        return merged

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int | None] | None = None,
        body: JsonObject | None = None,
        namespace: str | None = None,
        timeout_s: float = REQUEST_TIMEOUT_S,
    ) -> tuple[Any, int | None]:
        """One JSON call; returns the decoded body and the `X-Nomad-Index` header when there is one."""
        try:
            async with self.session.request(
                method,
                self._url(path),
                params=self._params(params, namespace),
                json=body,
                headers=self._headers(),
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as response:
                text = await response.text()
                if response.status >= 400:
                    raise NomadError(response.status, method, path, text)
                index = response.headers.get("X-Nomad-Index")
                try:
                    decoded = json.loads(text) if text else None
                except ValueError:
                    raise NomadUnreachable(
                        f"{method} {path} at {self.connection.address} did not answer JSON: {text[:200]!r}"
                    ) from None
                return decoded, int(index) if index and index.isdigit() else None
        except (aiohttp.ClientError, TimeoutError) as exc:
            detail = str(exc) or type(exc).__name__
            raise NomadUnreachable(f"cannot reach Nomad at {self.connection.address}: {detail}") from None

    async def blocking(
        self,
        path: str,
        index: int,
        wait_s: float,
        params: Mapping[str, str | int | None] | None = None,
        *,
        namespace: str | None = None,
    ) -> tuple[Any, int]:
        """A blocking query: returns once the result changes past `index`, or after about `wait_s`."""
        query: dict[str, str | int | None] = dict(params or {})
        if index > 0:
            query["index"] = index
            query["wait"] = _duration(wait_s)
        body, new_index = await self.request(
            "GET", path, params=query, namespace=namespace, timeout_s=wait_s + wait_s / 16 + REQUEST_TIMEOUT_S
        )
        return body, new_index if new_index is not None else index

    async def validate_job(self, job: JsonObject) -> list[str]:
        """Nomad's own checks of a job without registering it: the errors it found, empty when valid."""
        body, _ = await self.request(
            "POST", "/validate/job", body={"Job": job}, namespace=job.get("Namespace")
        )
        errors = [str(e) for e in (body or {}).get("ValidationErrors") or []]
        if not errors and (body or {}).get("Error"):
            errors = [str(body["Error"])]
        return errors

    async def register_job(self, job: JsonObject, *, only_if_new: bool) -> JsonObject:
        """`POST /v1/jobs`; with `only_if_new` Nomad refuses when the ID exists (EnforceIndex, index 0)."""
        request: JsonObject = {"Job": job}
        if only_if_new:
            request.update({"EnforceIndex": True, "JobModifyIndex": 0})
        body, _ = await self.request("POST", "/jobs", body=request, namespace=job.get("Namespace"))
        return dict(body or {})

    async def dispatch_job(
        self,
        job_id: str,
        *,
        payload: bytes | None,
        meta: Mapping[str, str],
        id_prefix: str,
        idempotency_token: str,
        namespace: str | None,
    ) -> JsonObject:
        request: JsonObject = {"Meta": dict(meta), "IdPrefixTemplate": id_prefix}
        if payload is not None:
            request["Payload"] = base64.b64encode(payload).decode("ascii")
        body, _ = await self.request(
            "POST",
            f"/job/{quote(job_id, safe='')}/dispatch",
            params={"idempotency_token": idempotency_token},
            body=request,
            namespace=namespace,
        )
        return dict(body or {})

    async def read_job(self, job_id: str, namespace: str | None = None) -> JsonObject | None:
        """The job, or None when Nomad does not know it (never registered, or purged)."""
        try:
            body, _ = await self.request("GET", f"/job/{quote(job_id, safe='')}", namespace=namespace)
        except NomadError as exc:
            if exc.status == 404:
                return None
            raise
        return dict(body)

    async def deregister_job(self, job_id: str, *, purge: bool = False, namespace: str | None = None) -> bool:
        """Stop the job; False when Nomad did not know it."""
        try:
            await self.request(
                "DELETE",
                f"/job/{quote(job_id, safe='')}",
                params={"purge": "true" if purge else None},
                namespace=namespace,
            )
        except NomadError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def job_allocations(
        self, job_id: str, index: int, wait_s: float = DEFAULT_WAIT_S, namespace: str | None = None
    ) -> tuple[list[JsonObject], int]:
        """The job's allocations, including those of an earlier job registered under the same ID; an
        unknown job has none."""
        try:
            body, new_index = await self.blocking(
                f"/job/{quote(job_id, safe='')}/allocations",
                index,
                wait_s,
                {"all": "true"},
                namespace=namespace,
            )
        except NomadError as exc:
            if exc.status == 404:
                return [], index
            raise
        return list(body or []), new_index

    async def list_jobs(
        self, prefix: str, index: int = 0, wait_s: float = DEFAULT_WAIT_S, namespace: str | None = None
    ) -> tuple[list[JsonObject], int]:
        body, new_index = await self.blocking("/jobs", index, wait_s, {"prefix": prefix}, namespace=namespace)
        return list(body or []), new_index

    async def read_evaluation(self, eval_id: str, namespace: str | None = None) -> JsonObject:
        body, _ = await self.request("GET", f"/evaluation/{eval_id}", namespace=namespace)
        return dict(body or {})

    async def signal_task(self, alloc_id: str, task: str, signal: str, namespace: str | None = None) -> None:
        await self.request(
            "POST",
            f"/client/allocation/{alloc_id}/signal",
            body={"Signal": signal, "Task": task},
            namespace=namespace,
        )

    async def force_periodic(self, job_id: str, namespace: str | None = None) -> JsonObject:
        body, _ = await self.request(
            "POST", f"/job/{quote(job_id, safe='')}/periodic/force", namespace=namespace
        )
        return dict(body or {})

    @asynccontextmanager
    async def log_frames(
        self,
        alloc_id: str,
        task: str,
        log_type: LogType,
        *,
        offset: int,
        follow: bool,
        namespace: str | None = None,
    ) -> AsyncIterator[FrameReader]:
        """Open `fs/logs` in its framed form (frames carry file events; `plain` would hide them)."""
        params: dict[str, str | int | None] = {
            "task": task,
            "type": log_type,
            "offset": offset,
            "origin": "start",
            "follow": "true" if follow else "false",
            "plain": "false",
        }
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=REQUEST_TIMEOUT_S)
        try:
            async with self.session.get(
                self._url(f"/client/fs/logs/{alloc_id}"),
                params=self._params(params, namespace),
                headers=self._headers(),
                timeout=timeout,
            ) as response:
                if response.status >= 400:
                    raise NomadError(
                        response.status, "GET", f"/client/fs/logs/{alloc_id}", await response.text()
                    )
                yield FrameReader(response.content)
        except (aiohttp.ClientError, TimeoutError) as exc:
            detail = str(exc) or type(exc).__name__
            raise NomadUnreachable(f"log stream from {self.connection.address} broke: {detail}") from None


class FrameReader:
    """Frames are JSON objects one after another (heartbeats are `{}`); read them as bytes arrive."""

    def __init__(self, content: aiohttp.StreamReader) -> None:
        self._content = content
        self._buffer = ""
        self._decoder = json.JSONDecoder()
        self._pending = b""

    async def next_frames(self) -> list[LogFrame] | None:
        """The frames completed by the next bytes read; None at the end of the stream."""
        while True:
            chunk = await self._content.readany()
            if not chunk:
                return None
            frames = self._feed(chunk)
            if frames:
                return frames

    def _feed(self, chunk: bytes) -> list[LogFrame]:
        raw = self._pending + chunk
        try:
            self._buffer += raw.decode("utf-8")
            self._pending = b""
        except UnicodeDecodeError as exc:
            self._buffer += raw[: exc.start].decode("utf-8")
            self._pending = raw[exc.start :]
        frames: list[LogFrame] = []
        position = 0
        text = self._buffer
        while True:
            while position < len(text) and text[position] in " \t\r\n":
                position += 1
            if position >= len(text):
                break
            try:
                value, end = self._decoder.raw_decode(text, position)
            except ValueError:
                break
            position = end
            if isinstance(value, dict) and (value.get("Data") or value.get("FileEvent")):
                frames.append(
                    LogFrame(
                        data=base64.b64decode(value.get("Data") or ""),
                        file=str(value.get("File") or ""),
                        offset=int(value.get("Offset") or 0),
                        event=str(value.get("FileEvent") or ""),
                    )
                )
        self._buffer = text[position:]
        return frames

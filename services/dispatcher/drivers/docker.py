"""Runs as containers on a Docker Engine API (Docker itself, or podman serving the same API).

`prepare` pulls the image by the payload's policy, creates the container without starting it and attaches
to it, so the handle `RunStarted` records names a real container and not a byte of output can be missed;
`launch` starts it. Every container carries labels naming its run and the dispatcher instance, because
the engine keeps a container running when the dispatcher dies: a restarted dispatcher `reattach`es to it
and records how it ends instead of losing the run (docs/decisions/0092-docker-reattach.md). Once a run has
ended and its output is read, its container is removed unless the payload asked to `keep` it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import re
import secrets
from typing import Any

import aiodocker
import aiohttp

from contracts.base import JsonObject
from contracts.logs import LogFd
from contracts.payloads import DockerPayload, EncryptedSecret, PayloadError, Text, validate_payload
from services.dispatcher.drivers.base import Execution, ExitStatus, Limits, LogSink, StartFailed
from services.dispatcher.drivers.docker_images import ensure_image
from services.dispatcher.drivers.docker_wire import (
    AttachFailed,
    ContainerStreams,
    api_version,
    attach,
    follow_logs,
)

log = logging.getLogger(__name__)

CHUNK_BYTES = 64 * 1024
LABEL_RUN = "batchyard.run_id"
LABEL_INSTANCE = "batchyard.instance"
LABEL_STEP = "batchyard.step"
LABEL_KEEP = "batchyard.keep"
NOT_ENDED = frozenset({"created", "configured", "initialized", "running", "paused", "restarting"})
ENGINE_FAILURE_EXIT = 125
STATE_POLL_DELAYS_S = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
API_TIMEOUT = aiohttp.ClientTimeout(total=300, sock_connect=10)
NEVER_STARTED = "0001-01-01T00:00:00Z"


def parse_payload(payload: JsonObject) -> DockerPayload:
    try:
        checked = validate_payload("docker", payload)
    except PayloadError as exc:
        raise StartFailed(f"invalid {exc}") from None
    return DockerPayload.model_validate(checked)


def _plain(value: Text, where: str) -> str:
    """The dispatcher hands over payloads with their secrets opened; one still sealed cannot be used."""
    if isinstance(value, EncryptedSecret):
        raise StartFailed(f"{where} holds a secret that was not decrypted")
    return value


def container_name(run_id: str, step: str | None) -> str:
    """Unique per attempt: a retried prepare after a crash must not collide with the leftover."""
    middle = f"-{re.sub(r'[^A-Za-z0-9_.-]', '_', step)}" if step else ""
    return f"batchyard-{run_id}{middle}-{secrets.token_hex(3)}"


def container_config(
    run_id: str, spec: DockerPayload, instance: str, *, stdin: bool, step: str | None
) -> JsonObject:
    env = {name: _plain(value, f"env.{name}") for name, value in spec.env.items()}
    env["BATCHYARD_RUN_ID"] = run_id
    labels = {LABEL_RUN: run_id, LABEL_INSTANCE: instance, LABEL_KEEP: str(spec.keep).lower()}
    if step is not None:
        labels[LABEL_STEP] = step
    host: JsonObject = {
        "Mounts": [
            {"Type": "bind", "Source": m.source, "Target": m.target, "ReadOnly": m.read_only}
            for m in spec.mounts
        ],
    }
    if spec.cpu_limit is not None:
        host["NanoCpus"] = round(spec.cpu_limit * 1e9)
    if spec.memory_limit_mb is not None:
        host["Memory"] = spec.memory_limit_mb * 1024 * 1024
    if spec.network_mode is not None:
        host["NetworkMode"] = spec.network_mode
    config: JsonObject = {
        "Image": spec.image,
        "Env": [f"{name}={value}" for name, value in env.items()],
        "Labels": labels,
        "Tty": False,
        "AttachStdin": stdin,
        "OpenStdin": stdin,
        "StdinOnce": stdin,
        "AttachStdout": True,
        "AttachStderr": True,
        "HostConfig": host,
    }
    if spec.command is not None:
        config["Cmd"] = (
            ["/bin/sh", "-c", spec.command]
            if isinstance(spec.command, str)
            else [_plain(arg, "command") for arg in spec.command]
        )
    if spec.entrypoint is not None:
        config["Entrypoint"] = [_plain(arg, "entrypoint") for arg in spec.entrypoint]
    if spec.working_dir is not None:
        config["WorkingDir"] = spec.working_dir
    return config


class DockerDriver:
    """One client per dispatcher; `instance` names the dispatcher in every container's labels."""

    name = "docker"

    def __init__(self, url: str, instance: str, chunk_bytes: int = CHUNK_BYTES) -> None:
        self.url = url
        self.instance = instance
        self.chunk_bytes = chunk_bytes
        self._docker: aiodocker.Docker | None = None

    async def close(self) -> None:
        if self._docker is not None:
            await self._docker.close()
            self._docker = None

    async def client(self) -> aiodocker.Docker:
        """The engine client, created on first use; the engine's API version is settled then too."""
        if self._docker is None:
            try:
                version = await api_version(self.url)
            except OSError as exc:
                raise StartFailed(f"the Docker engine at {self.url} is not reachable: {exc}") from None
            self._docker = aiodocker.Docker(
                url=self.url, timeout=API_TIMEOUT, api_version=f"v{version}" if version else "auto"
            )
        return self._docker

    async def prepare(
        self,
        run_id: str,
        payload: JsonObject,
        logs: LogSink,
        *,
        stdin: bool = False,
        step: str | None = None,
    ) -> DockerExecution:
        """`stdin` opens the container's stdin for a pipeline to feed through `write_stdin` and end
        with `close_stdin`; without it the container reads an empty stdin."""
        spec = parse_payload(payload)
        config = container_config(run_id, spec, self.instance, stdin=stdin, step=step)
        docker = await self.client()
        name = container_name(run_id, step)
        try:
            await ensure_image(docker, spec.image, spec.pull_policy)
            container = await docker.containers.create(config, name=name)
        except aiodocker.DockerError as exc:
            raise StartFailed(f"the engine could not create the container: {exc.message}") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise StartFailed(f"the Docker engine at {self.url} failed: {exc}") from None
        try:
            streams = await attach(self.url, _api_prefix(docker), container.id, stdin=stdin)
        except (AttachFailed, OSError) as exc:
            await _remove(docker, container.id)
            raise StartFailed(f"could not attach to the container: {exc}") from None
        handle: JsonObject = {
            "container_id": container.id,
            "container_name": name,
            "image": spec.image,
            "engine": self.url,
            "run_id": run_id,
            "stdin": stdin,
            "keep": spec.keep,
            "timeout_s": spec.timeout_s,
            "stop_grace_s": spec.stop_grace_s,
        }
        limits = Limits(spec.timeout_s, spec.stop_grace_s)
        execution = DockerExecution(handle, limits, docker, container.id, spec.keep, started=False)
        execution.follow(streams, logs, self.chunk_bytes)
        return execution

    async def reattach(
        self, run_id: str, handle: JsonObject, logs: LogSink, *, resume_from: int | None = None
    ) -> DockerExecution | None:
        """Take over a run whose dispatcher died and learn how it ends. None when there is nothing to
        follow: the container is gone, belongs to another run, or was created to be fed on stdin by a
        pipeline that no longer exists. A container never started (the dispatcher died between recording
        `RunStarted` and starting it) is started by the returned execution's `launch`.

        With `resume_from` (how many bytes of the run's log are already recorded) the engine's log of
        the container is replayed from its start and those first bytes skipped, so output written while
        no dispatcher listened is not lost, even when the container has ended meanwhile. Without it the
        output is followed from now on."""
        docker = await self.client()
        info = await _inspect(docker, handle, run_id)
        if info is None:
            return None
        container_id = str(info["Id"])
        keep = bool(handle.get("keep", False))
        status = str(info["State"]["Status"])
        started = status != "created"
        if not started and handle.get("stdin"):
            await _remove(docker, container_id)
            return None
        limits = _remaining_limits(handle, info["State"])
        execution = DockerExecution(handle, limits, docker, container_id, keep, started=started)
        prefix = _api_prefix(docker)
        try:
            if started and resume_from is not None:
                streams = await follow_logs(self.url, prefix, container_id)
                execution.follow(streams, logs, self.chunk_bytes, skip=resume_from)
            elif status in NOT_ENDED:
                streams = await attach(self.url, prefix, container_id, stdin=False)
                execution.follow(streams, logs, self.chunk_bytes)
        except (AttachFailed, OSError) as exc:
            raise StartFailed(f"could not follow the container's output: {exc}") from None
        return execution

    async def end_orphan(self, handle: JsonObject) -> None:
        """The run is being recorded as lost: kill its container and remove it unless it is kept."""
        docker = await self.client()
        run_id = handle.get("run_id")
        info = await _inspect(docker, handle, str(run_id))
        if info is None:
            return
        with contextlib.suppress(aiodocker.DockerError):
            await docker.containers.container(info["Id"]).kill(signal="SIGKILL")
        if not handle.get("keep", False):
            await _remove(docker, str(info["Id"]))


async def _inspect(docker: aiodocker.Docker, handle: JsonObject, run_id: str) -> dict[str, Any] | None:
    container_id = handle.get("container_id")
    if not isinstance(container_id, str) or not container_id:
        return None
    try:
        info: dict[str, Any] = await docker.containers.container(container_id).show()
    except aiodocker.DockerError as exc:
        if exc.status == 404:
            return None
        raise
    if (info.get("Config", {}).get("Labels") or {}).get(LABEL_RUN) != run_id:
        return None
    return info


def _remaining_limits(handle: JsonObject, state: dict[str, Any]) -> Limits:
    """The timeout still counts from when the container started, not from the re-attach."""
    grace = float(handle.get("stop_grace_s") or 0.0)
    timeout = handle.get("timeout_s")
    if not isinstance(timeout, int | float):
        return Limits(None, grace)
    started_at = _engine_time(str(state.get("StartedAt") or NEVER_STARTED))
    if started_at is None:
        return Limits(float(timeout), grace)
    elapsed = (datetime.datetime.now(datetime.UTC) - started_at).total_seconds()
    return Limits(max(float(timeout) - elapsed, 0.001), grace)


def _engine_time(text: str) -> datetime.datetime | None:
    """Engines report nanoseconds (`...:10.820971545Z`); Python parses at most microseconds."""
    if text.startswith("0001-"):
        return None
    trimmed = re.sub(r"(\.\d{6})\d+", r"\1", text).replace("Z", "+00:00")
    with contextlib.suppress(ValueError):
        return datetime.datetime.fromisoformat(trimmed)
    return None


def _api_prefix(docker: aiodocker.Docker) -> str:
    return "" if docker.api_version == "auto" else f"/{docker.api_version}"


async def _remove(docker: aiodocker.Docker, container_id: str) -> None:
    try:
        await docker.containers.container(container_id).delete(force=True, v=True)
    except aiodocker.DockerError as exc:
        if exc.status != 404:
            log.warning("could not remove container %s: %s", container_id, exc.message)


class DockerExecution(Execution):
    def __init__(
        self,
        handle: JsonObject,
        limits: Limits,
        docker: aiodocker.Docker,
        container_id: str,
        keep: bool,
        *,
        started: bool,
    ) -> None:
        super().__init__(handle, limits)
        self.docker = docker
        self.container_id = container_id
        self.keep = keep
        self._started = started
        self._streams: ContainerStreams | None = None
        self._pump: asyncio.Task[None] | None = None
        self._logs: LogSink | None = None
        self._status: asyncio.Future[ExitStatus] | None = None
        self._copied: dict[LogFd, int] = {"stdout": 0, "stderr": 0}
        self._input_refused = False

    @property
    def container(self) -> aiodocker.containers.DockerContainer:
        return self.docker.containers.container(self.container_id)

    def follow(self, streams: ContainerStreams, logs: LogSink, chunk_bytes: int, skip: int = 0) -> None:
        """Copy the container's output to the log, leaving out its first `skip` bytes."""
        self._streams = streams
        self._logs = logs
        self._pump = asyncio.create_task(self._copy_output(streams, logs, chunk_bytes, skip))

    async def _copy_output(
        self, streams: ContainerStreams, logs: LogSink, chunk_bytes: int, skip: int
    ) -> None:
        async for fd, data in streams.frames(chunk_bytes):
            if skip >= len(data):
                skip -= len(data)
                continue
            await logs.write(fd, data[skip:])
            self._copied[fd] += len(data) - skip
            skip = 0

    async def write_stdin(self, data: bytes) -> bool:
        """Feed the container's stdin (after `launch`); False once it no longer reads, like EPIPE."""
        accepted = self._streams is not None and await self._streams.write_stdin(data)
        self._input_refused = self._input_refused or not accepted
        return accepted

    async def close_stdin(self) -> None:
        """End of input: the container reads EOF while its output keeps flowing."""
        if self._streams is not None:
            await self._streams.close_stdin()

    async def detach(self) -> None:
        """Stop following the container and leave it running: what a dispatcher that goes away on
        purpose does, so that its successor re-attaches instead of the run being stopped. The watch
        is cancelled too: left alone it would wait for the exit and remove the container."""
        if self._status is not None:
            self._status.cancel()
        if self._pump is not None:
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)
        await self._close_streams()

    async def _release(self) -> None:
        if self._started:
            return
        try:
            await self.container.start()
        except (aiodocker.DockerError, aiohttp.ClientError) as exc:
            message = exc.message if isinstance(exc, aiodocker.DockerError) else str(exc)
            await self._note(f"the engine could not start the container: {message}")
            await self._close_streams()
            return
        self._started = True

    async def _abort(self) -> None:
        await self._close_streams()
        if self._pump is not None:
            await asyncio.gather(self._pump, return_exceptions=True)
        await _remove(self.docker, self.container_id)

    async def _terminate(self) -> None:
        await self._signal("SIGTERM")

    async def _kill(self) -> None:
        await self._signal("SIGKILL")

    async def _signal(self, name: str) -> None:
        if not self._started:
            return
        try:
            await self.container.kill(signal=name)
        except (aiodocker.DockerError, aiohttp.ClientError) as exc:
            log.info("%s to container %s was not delivered: %s", name, self.container_id, exc)

    async def _exited(self) -> ExitStatus:
        if self._status is None:
            self._status = asyncio.ensure_future(self._watch())
        return await asyncio.shield(self._status)

    async def _watch(self) -> ExitStatus:
        """The attach stream ends when the container's output closes, that is when it exits; the
        engine's state then says how. Only if the stream broke early does this block on the engine's
        wait endpoint: one long request per run would exhaust the client's connection pool."""
        copied: BaseException | None = None
        if self._pump is not None:
            copied = (await asyncio.gather(self._pump, return_exceptions=True))[0]
        state = await self._ended_state()
        await self._close_streams()
        if self._input_refused and self._started and self._logs is not None:
            await self._recover_output(self._logs)
        if state.get("OOMKilled"):
            await self._note("the container was killed: it ran out of memory (OOMKilled)")
        if not self.keep:
            await _remove(self.docker, self.container_id)
        if isinstance(copied, Exception):
            raise copied
        if not self._started:
            return ExitStatus(exit_code=int(state.get("ExitCode") or ENGINE_FAILURE_EXIT))
        return ExitStatus(exit_code=int(state.get("ExitCode", 0)))

    async def _recover_output(self, logs: LogSink) -> None:
        """An engine whose container stopped reading its stdin may drop the attach connection before the
        last output went through it (podman does, under load, and sends its own error on stderr instead);
        the engine's own log of the container still holds every byte, so what the attach stream missed of
        each channel is copied from there."""
        engine = str(self.handle.get("engine") or "")
        try:
            streams = await follow_logs(engine, _api_prefix(self.docker), self.container_id)
        except (AttachFailed, OSError) as exc:
            log.info("could not check container %s's log for missed output: %s", self.container_id, exc)
            return
        skip = dict(self._copied)
        try:
            async for fd, data in streams.frames(CHUNK_BYTES):
                seen = min(skip[fd], len(data))
                skip[fd] -= seen
                if seen < len(data):
                    await logs.write(fd, data[seen:])
        finally:
            await streams.close()

    async def _ended_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {}
        for delay in STATE_POLL_DELAYS_S:
            await asyncio.sleep(delay)
            state = await self._state()
            if not self._started or state.get("Status") not in NOT_ENDED:
                return state
        await self.container.wait()
        return await self._state()

    async def _state(self) -> dict[str, Any]:
        try:
            info = await self.container.show()
        except aiodocker.DockerError as exc:
            if exc.status != 404:
                raise
            await self._note("the container was removed by someone else before its exit code was read")
            return {"Status": "removed", "ExitCode": ENGINE_FAILURE_EXIT}
        state: dict[str, Any] = info["State"]
        return state

    async def _note(self, message: str) -> None:
        """Tell whoever reads the run's log what the engine did, since it printed nothing itself."""
        if self._logs is not None:
            await self._logs.write("stderr", f"batchyard: {message}\n".encode())

    async def _close_streams(self) -> None:
        if self._streams is not None:
            await self._streams.close()

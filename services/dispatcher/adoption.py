"""Taking over runs whose dispatcher went away, on orchestrators that keep the work alive without it.

Docker and Nomad keep containers and jobs running when the dispatcher that launched them dies, so a
sweeping dispatcher follows them to their end instead of recording them lost (decisions 0092, 0103,
0150). Two things make the log continue where the dead dispatcher left it: how many bytes it published
(the next offset), and how many of them came from stdout and from stderr (Nomad resumes each stream
separately). Both come from the run's chunks on JetStream, read with headers only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from contracts.base import JsonObject
from contracts.logs import LOG_END, LOG_FD, LOG_OFFSET, LogFd
from contracts.subjects import logs_stream_name, logs_subject
from services.dispatcher.drivers.base import Driver, Execution, LogSink, StartFailed
from services.dispatcher.drivers.docker import DockerDriver
from services.dispatcher.drivers.docker_pipeline import DockerPipelineDriver
from services.dispatcher.drivers.nomad import NomadDriver
from services.dispatcher.logs import LogPublisher
from services.dispatcher.secrets import MaskingLogPublisher

SCAN_IDLE_S = 5.0
MSG_SIZE = "Nats-Msg-Size"


@dataclass(frozen=True)
class PublishedLog:
    """What a run's log on JetStream already holds: its size (the next offset), bytes per stream, and
    whether its end marker is stored."""

    size: int = 0
    by_fd: dict[LogFd, int] = field(default_factory=dict)
    ended: bool = False


async def published_log(js: JetStreamContext, prefix: str, run_id: str) -> PublishedLog:
    """Scan the run's chunks, headers only (`Nats-Msg-Size` gives each chunk's length without its bytes).
    A chunk republished after a lost acknowledgement may be stored twice or out of order, so chunks are
    counted once per offset and the size is the furthest end reached."""
    stream = logs_stream_name(prefix)
    subject = logs_subject(prefix, run_id)
    try:
        last = await js.get_last_msg(stream, subject)
    except NotFoundError:
        return PublishedLog()
    chunks: dict[int, tuple[str | None, int]] = {}
    ended = False
    subscription = await js.subscribe(
        subject,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.ALL,
        config=ConsumerConfig(headers_only=True),
    )
    try:
        while True:
            message = await subscription.next_msg(timeout=SCAN_IDLE_S)
            headers = message.headers or {}
            offset = int(headers.get(LOG_OFFSET, "0"))
            if LOG_END in headers:
                ended = True
            else:
                chunks[offset] = (headers.get(LOG_FD), int(headers.get(MSG_SIZE, len(message.data))))
            if message.metadata.sequence.stream >= (last.seq or 0):
                break
    finally:
        await subscription.unsubscribe()
    by_fd: dict[LogFd, int] = {"stdout": 0, "stderr": 0}
    size = 0
    for offset, (fd, length) in chunks.items():
        if fd == "stdout":
            by_fd["stdout"] += length
        elif fd == "stderr":
            by_fd["stderr"] += length
        size = max(size, offset + length)
    return PublishedLog(size, by_fd, ended)


class _SkipPublished(LogPublisher):
    """Drops the first `skip[fd]` bytes written to each stream: what the previous owner published."""

    skip: dict[LogFd, int]

    async def write(self, fd: LogFd, data: bytes, step: str | None = None) -> None:
        left = self.skip.get(fd, 0)
        if left:
            self.skip[fd] = max(left - len(data), 0)
            data = data[left:]
        await super().write(fd, data, step)


class ResumedMaskingLogPublisher(MaskingLogPublisher, _SkipPublished):
    """The log of an adopted run that holds secrets. Published offsets count masked bytes, which say
    nothing about how far into the orchestrator's raw output the previous owner got; so the driver
    replays the output from its start, it is masked again (masking a stream is deterministic, so the
    masked replay starts with exactly what was published), and the first published bytes of each
    stream are dropped after masking."""


Reattach = Callable[[str, JsonObject, LogSink, PublishedLog, float], Awaitable[Execution | None]]


def reattacher(driver: Driver) -> Reattach | None:
    """How to follow a driver's work again, or None for a driver whose work dies with its dispatcher
    (local processes). The returned execution is launched: the caller only supervises it."""
    if isinstance(driver, DockerDriver | DockerPipelineDriver):
        docker = driver.docker if isinstance(driver, DockerPipelineDriver) else driver

        async def follow_container(
            run_id: str, handle: JsonObject, logs: LogSink, published: PublishedLog, elapsed_s: float
        ) -> Execution | None:
            if "steps" in handle:
                raise StartFailed("a Docker pipeline's steps were fed by the dispatcher that died")
            execution = await docker.reattach(run_id, handle, logs, resume_from=published.size)
            if execution is not None:
                await execution.launch()
            return execution

        return follow_container
    if isinstance(driver, NomadDriver):
        nomad = driver

        async def follow_job(
            run_id: str, handle: JsonObject, logs: LogSink, published: PublishedLog, elapsed_s: float
        ) -> Execution | None:
            return await nomad.reattach(handle, logs, elapsed_s=elapsed_s, log_offsets=published.by_fd)

        return follow_job
    return None


async def detach(execution: Execution) -> bool:
    """Stop following without touching the work; False for work that cannot be left running."""
    leave = getattr(execution, "detach", None)
    if leave is None:
        return False
    await leave()
    return True

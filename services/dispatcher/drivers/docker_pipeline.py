"""Docker pipelines: one container per step, each fed the previous step's output through its stdin.

Every container is created (and attached) at `prepare`, so nothing runs before `RunStarted`; `launch`
starts them last step first, so a consumer is running before its producer prints. The dispatcher copies
each chunk of a handed-on channel to the log and into the next container (`write_stdin`), and closes
that stdin once the producer ended and its output is drained. See docs/decisions/0170.

`DockerPipelineDriver` wraps the Docker driver under the same name: a payload with `steps` becomes a
pipeline, any other payload goes to the wrapped driver unchanged.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime

from contracts.base import JsonObject
from contracts.events.runs import RunStepEnded, RunStepStarted
from contracts.logs import LogFd
from contracts.payloads import DockerPipelinePayload, PayloadError, validate_payload
from services.dispatcher.drivers.base import Execution, ExitStatus, Limits, LogSink, Outcome, StartFailed
from services.dispatcher.drivers.docker import DockerDriver, DockerExecution
from services.dispatcher.drivers.pipeline import StepReporting, step_writer


class DockerPipelineDriver:
    name = "docker"

    def __init__(self, docker: DockerDriver) -> None:
        self.docker = docker

    async def prepare(self, run_id: str, payload: JsonObject, logs: LogSink) -> Execution:
        if "steps" not in payload:
            return await self.docker.prepare(run_id, payload, logs)
        try:
            spec = DockerPipelinePayload.model_validate(validate_payload("docker", payload))
        except PayloadError as exc:
            raise StartFailed(f"invalid {exc}") from None
        execution = DockerPipelineExecution(run_id, Limits(spec.timeout_s, spec.stop_grace_s))
        try:
            for index, step in enumerate(spec.steps):
                shared = spec.model_dump(exclude={"steps", "env", "timeout_s"})
                step_payload: JsonObject = {
                    **shared,
                    "image": step.image,
                    "command": step.model_dump(mode="json")["command"],
                    "env": {**spec.model_dump(mode="json")["env"], **step.model_dump(mode="json")["env"]},
                }
                sink = _StepSink(execution, index, step.name, step.output, logs)
                try:
                    container = await self.docker.prepare(
                        run_id, step_payload, sink, stdin=index > 0, step=step.name
                    )
                except StartFailed as exc:
                    raise StartFailed(f"step '{step.name}': {exc.reason}") from None
                execution.add(step.name, container)
        except BaseException:
            await execution.discard()
            raise
        return execution

    async def end_orphan(self, handle: JsonObject) -> None:
        steps = handle.get("steps")
        for step in steps if isinstance(steps, list) else [handle]:
            if isinstance(step, dict):
                await self.docker.end_orphan(step)


class _StepSink:
    """A step's output: to the log, and its handed-on channel into the next container's stdin."""

    def __init__(
        self, pipeline: DockerPipelineExecution, index: int, name: str, handed: LogFd, logs: LogSink
    ) -> None:
        self.pipeline = pipeline
        self.index = index
        self.handed = handed
        self.write_log = step_writer(logs, name)

    async def write(self, fd: LogFd, data: bytes) -> None:
        await self.write_log(fd, data)
        following = self.pipeline.container(self.index + 1)
        if fd == self.handed and following is not None:
            await following.write_stdin(data)


@dataclasses.dataclass
class _Step:
    index: int
    name: str
    container: DockerExecution
    started_at: datetime | None = None
    outcome: Outcome | None = None


class DockerPipelineExecution(StepReporting, Execution):
    def __init__(self, run_id: str, limits: Limits) -> None:
        Execution.__init__(self, {"run_id": run_id, "steps": []}, limits)
        StepReporting.__init__(self, run_id)
        self.steps: list[_Step] = []
        self._failed: _Step | None = None
        self._ending = False
        self._control: asyncio.Future[ExitStatus] | None = None

    def add(self, name: str, container: DockerExecution) -> None:
        self.steps.append(_Step(len(self.steps), name, container))
        self.handle = {**self.handle, "steps": [{**s.container.handle, "step": s.name} for s in self.steps]}

    def container(self, index: int) -> DockerExecution | None:
        return self.steps[index].container if index < len(self.steps) else None

    async def _release(self) -> None:
        for step in reversed(self.steps):
            step.started_at = datetime.now(UTC)
            await step.container.launch()
        for step in self.steps:
            assert step.started_at is not None
            self.emit(
                RunStepStarted(
                    run_id=self.run_id, step=step.name, index=step.index, started_at=step.started_at
                )
            )
        self._control = asyncio.ensure_future(self._run())

    async def _abort(self) -> None:
        await asyncio.gather(*(step.container.discard() for step in self.steps), return_exceptions=True)

    async def _terminate(self) -> None:
        self._ending = True
        grace = self.limits.stop_grace_s
        for step in self.steps:
            step.container.request_stop("pipeline", "the pipeline is ending", grace)

    async def _kill(self) -> None:
        self._ending = True
        for step in self.steps:
            if step.outcome is None:
                await step.container.force_end()

    async def _exited(self) -> ExitStatus:
        if self._control is None:
            self._control = asyncio.ensure_future(self._run())
        return await asyncio.shield(self._control)

    async def _run(self) -> ExitStatus:
        waiting = {asyncio.ensure_future(step.container.outcome()): step for step in self.steps}
        while waiting:
            done, _ = await asyncio.wait(waiting, return_when="FIRST_COMPLETED")
            for future in done:
                step = waiting.pop(future)
                await self._settle(step, future.result())
        failed = self._failed or self.steps[-1]
        assert failed.outcome is not None
        return failed.outcome.exit

    async def _settle(self, step: _Step, outcome: Outcome) -> None:
        step.outcome = outcome
        following = self.container(step.index + 1)
        if following is not None:
            await following.close_stdin()
        if self._ending:
            kind = "stopped"
        elif outcome.kind == "succeeded":
            kind = "succeeded"
        else:
            kind = "failed"
            self._failed = step
            self._ending = True
            for other in self.steps:
                if other.outcome is None:
                    other.container.request_stop("pipeline", f"step '{step.name}' failed", 0)
        self.emit(
            RunStepEnded(
                run_id=self.run_id,
                step=step.name,
                index=step.index,
                outcome=kind,
                exit_code=outcome.exit.exit_code,
                signal=outcome.exit.signal,
                started_at=step.started_at,
                ended_at=datetime.now(UTC),
            )
        )

    async def outcome(self) -> Outcome:
        result = await super().outcome()
        failed = self._failed
        if result.kind == "failed" and failed is not None:
            return dataclasses.replace(result, reason=f"step '{failed.name}' {result.reason}")
        return result

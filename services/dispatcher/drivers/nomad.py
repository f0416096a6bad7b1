"""Runs as Nomad batch jobs (or dispatched instances of a parameterized job), over Nomad's HTTP API.

The two-phase start maps onto Nomad like this: `prepare` derives the job ID from the run id and has
Nomad validate the job (`/v1/validate/job`), which creates nothing, so a run that loses the append race
leaves no trace; `launch` registers it with `EnforceIndex` at index 0, so a repeated launch can never
register the job twice. The driver then follows the job's allocations with blocking queries, streams
each started task's stdout and stderr from `fs/logs`, and judges the end from the final allocations.
Nomad keeps the work alive on its own, so a restarted dispatcher re-attaches by job ID with `reattach`.
See docs/decisions/0100-0105 and docs/nomad.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
from collections.abc import Mapping
from typing import Any

import aiohttp

from contracts.base import JsonObject
from contracts.logs import LogFd
from contracts.payloads import NomadPayload, PayloadError, validate_payload
from services.dispatcher.drivers.base import Execution, ExitStatus, Limits, LogSink, Outcome, StartFailed
from services.dispatcher.drivers.nomad_allocs import (
    Verdict,
    in_start_order,
    is_terminal,
    judge,
    task_over,
    task_started,
    task_states,
)
from services.dispatcher.drivers.nomad_api import (
    NomadClient,
    NomadConnection,
    NomadError,
    NomadUnreachable,
    new_session,
)
from services.dispatcher.drivers.nomad_logs import TaskLogFollower

log = logging.getLogger(__name__)

RUN_ID_META = "batchyard_run_id"
DEFAULT_KILL_TIMEOUT_S = 5.0
REPORT_MARGIN_S = 5.0
KILL_CONFIRM_S = 30.0
SETTLE_WAIT_S = 0.25
RETRY_FIRST_S = 0.1
RETRY_MAX_S = 5.0
LAUNCH_ATTEMPTS = 3
LOG_TYPES: tuple[LogFd, ...] = ("stdout", "stderr")
NEVER_REACHED = "the run was recorded as started but never reached Nomad"
ID_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def run_job_id(run_id: str, template_id: str | None) -> str:
    """The job's ID in Nomad: readable (the template's ID or Name first) and fixed by the run id, so a
    repeated launch or a re-attach always names the same job."""
    base = ID_UNSAFE.sub("-", template_id or "").strip("-.")[:60] or "batchyard"
    return f"{base}-{run_id}"


DISPATCH_SUFFIX = "/dispatch-"


def kill_timeout_s(job: Mapping[str, Any]) -> float:
    """The longest `KillTimeout` among the job's tasks: Nomad's own grace between its kill signal and
    SIGKILL, which is the grace a batchyard stop gets."""
    longest = 0.0
    for group in job.get("TaskGroups") or []:
        for task in group.get("Tasks") or []:
            value = task.get("KillTimeout")
            seconds = value / 1e9 if isinstance(value, int | float) and value > 0 else DEFAULT_KILL_TIMEOUT_S
            longest = max(longest, seconds)
    return longest or DEFAULT_KILL_TIMEOUT_S


def parse_payload(payload: JsonObject) -> NomadPayload:
    try:
        return NomadPayload.model_validate(validate_payload("nomad", payload))
    except PayloadError as exc:
        raise StartFailed(f"invalid {exc}") from None


_JOB_FIELDS = {name for name in NomadPayload.model_fields if name[:1].isupper()}


def build_job(spec: NomadPayload, run_id: str, namespace: str | None) -> JsonObject:
    job: JsonObject = spec.model_dump(mode="json", exclude=set(NomadPayload.model_fields) - _JOB_FIELDS)
    job["ID"] = run_job_id(run_id, spec.ID or spec.Name)
    job["Name"] = job.get("Name") or job["ID"]
    job["Type"] = job.get("Type") or "batch"
    job["Meta"] = {**(spec.Meta or {}), RUN_ID_META: run_id}
    if namespace and not job.get("Namespace"):
        job["Namespace"] = namespace
    return job


class NomadDriver:
    """Nomad clusters as the dispatcher sees them; `name` is the `driver` of `RunRendered`.

    `default` is the cluster used when a payload names none (typically from `NOMAD_ADDR`). `tokens` maps
    further addresses to their ACL tokens: a token is only ever sent to the address it was configured
    for, never to an address a template chose.
    """

    name = "nomad"

    def __init__(
        self,
        default: NomadConnection | None = None,
        *,
        tokens: Mapping[str, str] | None = None,
        wait_s: float = 10.0,
    ) -> None:
        self.default = default
        self.tokens = {address.rstrip("/"): token for address, token in (tokens or {}).items()}
        if default is not None and default.token:
            self.tokens.setdefault(default.address, default.token)
        self.wait_s = wait_s
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> NomadDriver:
        """The driver a dispatcher runs with: its default cluster from Nomad's own variables
        (`NOMAD_ADDR`, `NOMAD_TOKEN`, `NOMAD_NAMESPACE`, `NOMAD_REGION`), or none, in which case only
        payloads naming a `nomad_url` can run."""
        return cls(NomadConnection.from_env(environ))

    def _client(
        self, address: str | None, namespace: str | None = None, region: str | None = None
    ) -> NomadClient:
        if address is None:
            if self.default is None:
                raise StartFailed(
                    "no Nomad address: set the execution's driver_config.nomad_url, the payload's "
                    "nomad_url, or NOMAD_ADDR for the dispatcher"
                )
            address = self.default.address
        address = address.rstrip("/")
        same = self.default is not None and self.default.address == address
        connection = NomadConnection(
            address=address,
            token=self.tokens.get(address),
            namespace=namespace or (self.default.namespace if same and self.default else None),
            region=region or (self.default.region if same and self.default else None),
        )
        if self._session is None or self._session.closed:
            self._session = new_session()
        return NomadClient(connection, self._session)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def client_for(self, spec: NomadPayload) -> NomadClient:
        """The cluster and namespace a payload names, or the default cluster's; StartFailed when it
        names no cluster and the dispatcher has no default."""
        wanted = (
            spec.dispatch.namespace if spec.dispatch else _text((spec.model_extra or {}).get("Namespace"))
        )
        return self._client(spec.nomad_url, wanted)

    def client_at(self, address: str, namespace: str | None) -> NomadClient:
        """A cluster by address (with its configured token, if any), for work recorded earlier."""
        return self._client(address, namespace)

    async def prepare(self, run_id: str, payload: JsonObject, logs: LogSink) -> NomadExecution:
        spec = parse_payload(payload)
        client = self.client_for(spec)
        namespace = client.connection.namespace
        handle: JsonObject = {
            "nomad_url": client.connection.address,
            "namespace": namespace,
            "region": client.connection.region,
            "run_id": run_id,
            "timeout_s": spec.timeout_s,
            "purge": spec.purge,
        }
        try:
            if spec.dispatch is not None:
                parent = await client.read_job(spec.dispatch.job_id, namespace)
                if parent is None:
                    raise StartFailed(f"Nomad has no job {spec.dispatch.job_id!r} to dispatch")
                if not parent.get("ParameterizedJob"):
                    raise StartFailed(f"the Nomad job {spec.dispatch.job_id!r} is not a parameterized job")
                handle["parameterized_job_id"] = spec.dispatch.job_id
                handle["job_id"] = None
                job: JsonObject | None = None
                grace = kill_timeout_s(parent)
            else:
                job = build_job(spec, run_id, namespace)
                errors = await client.validate_job(job)
                if errors:
                    raise StartFailed(f"Nomad refused the job: {'; '.join(errors)}")
                handle["job_id"] = job["ID"]
                grace = kill_timeout_s(job)
        except (NomadError, NomadUnreachable) as exc:
            raise StartFailed(str(exc)) from None
        handle["kill_timeout_s"] = grace
        limits = Limits(spec.timeout_s, grace + REPORT_MARGIN_S)
        return NomadExecution(handle, limits, client, logs, job=job, spec=spec, wait_s=self.wait_s)

    async def reattach(
        self,
        handle: JsonObject,
        logs: LogSink,
        *,
        elapsed_s: float = 0.0,
        log_offsets: Mapping[LogFd, int] | None = None,
    ) -> NomadExecution:
        """Follow a run another dispatcher launched, from the handle its `RunStarted` recorded.

        `elapsed_s` is how long the run has been going, so a timeout still counts from its start, and
        `log_offsets` how many bytes of each stream the run's log already has, so they are not repeated
        (exact for a job with one task; see docs/decisions/0103-nomad-reattach.md)."""
        client = self._client(
            _text(handle.get("nomad_url")), _text(handle.get("namespace")), _text(handle.get("region"))
        )
        timeout = handle.get("timeout_s")
        remaining = max(float(timeout) - elapsed_s, 0.001) if isinstance(timeout, int | float) else None
        grace = handle.get("kill_timeout_s")
        grace_s = float(grace) if isinstance(grace, int | float) else DEFAULT_KILL_TIMEOUT_S
        execution = NomadExecution(
            handle,
            Limits(remaining, grace_s + REPORT_MARGIN_S),
            client,
            logs,
            job=None,
            spec=None,
            wait_s=self.wait_s,
            log_offsets=log_offsets,
        )
        execution.follow()
        return execution

    async def end_orphan(self, handle: JsonObject) -> None:
        """A run recorded as lost must not keep running in Nomad: deregister its job."""
        client = self._client(
            _text(handle.get("nomad_url")), _text(handle.get("namespace")), _text(handle.get("region"))
        )
        with contextlib.suppress(NomadError, NomadUnreachable):
            job_id = await _resolve_job_id(client, handle)
            if job_id is not None:
                await client.deregister_job(job_id, namespace=client.connection.namespace)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


async def _resolve_job_id(client: NomadClient, handle: JsonObject) -> str | None:
    """The job's ID: recorded for a registered job; for a dispatched one, the child of the parameterized
    job whose ID holds the run id (launch passes it as `IdPrefixTemplate`, Nomad 1.4.3 and later)."""
    job_id = _text(handle.get("job_id"))
    if job_id is not None:
        return job_id
    parent = _text(handle.get("parameterized_job_id"))
    run_id = _text(handle.get("run_id"))
    if parent is None or run_id is None:
        return None
    jobs, _ = await client.list_jobs(parent + DISPATCH_SUFFIX, namespace=client.connection.namespace)
    ids = sorted(str(job.get("ID")) for job in jobs if run_id in str(job.get("ID")))
    return ids[0] if ids else None


class _GaveUp(Exception):
    """Nomad did not confirm the end of a killed job in time."""


class NomadExecution(Execution):
    def __init__(
        self,
        handle: JsonObject,
        limits: Limits,
        client: NomadClient,
        logs: LogSink,
        *,
        job: JsonObject | None,
        spec: NomadPayload | None,
        wait_s: float,
        log_offsets: Mapping[LogFd, int] | None = None,
    ) -> None:
        super().__init__(handle, limits)
        self.client = client
        self.logs = logs
        self.job = job
        self.spec = spec
        self.wait_s = wait_s
        self.namespace = client.connection.namespace
        self.job_id: str | None = _text(handle.get("job_id"))
        self.eval_id: str | None = None
        self.allocs: list[JsonObject] = []
        self._launch_error: str | None = None
        self._launched = False
        self._deregistered = False
        self._verdict: Verdict | None = None
        self._followers: dict[tuple[str, str, str], TaskLogFollower] = {}
        self._resume: dict[LogFd, int] = dict(log_offsets or {})
        self._give_up = asyncio.Event()
        self._watch: asyncio.Task[ExitStatus] | None = None

    def follow(self) -> None:
        if self._watch is None:
            self._watch = asyncio.create_task(self._watch_job(), name=f"nomad-{self.handle.get('run_id')}")

    async def detach(self) -> None:
        """Stop following without touching the job, which Nomad keeps running: for a dispatcher that
        hands its runs over (another one re-attaches from the recorded handle) instead of stopping them."""
        for task in [self._watch, *(f.runner for f in self._followers.values())]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._watch = None

    async def _release(self) -> None:
        """Register (or dispatch) the job; a refusal becomes the run's failure, never an exception, since
        `RunStarted` is already recorded and the run must still reach an end."""
        try:
            await self._launch()
            self._launched = True
        except (NomadError, NomadUnreachable) as exc:
            self._launch_error = f"Nomad did not take the job: {exc}"
        self.follow()

    async def _launch(self) -> None:
        for attempt in range(LAUNCH_ATTEMPTS):
            try:
                if self.job is not None:
                    await self._register(self.job)
                else:
                    await self._dispatch()
                return
            except NomadUnreachable:
                if attempt == LAUNCH_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(RETRY_FIRST_S * 4**attempt)

    async def _register(self, job: JsonObject) -> None:
        try:
            answer = await self.client.register_job(job, only_if_new=True)
        except NomadError:
            existing = await self.client.read_job(str(job["ID"]), self.namespace)
            if existing is None or (existing.get("Meta") or {}).get(RUN_ID_META) != job["Meta"][RUN_ID_META]:
                raise
            log.info("Nomad job %s was already registered for this run", job["ID"])
            return
        self.eval_id = _text(answer.get("EvalID"))

    async def _dispatch(self) -> None:
        assert self.spec is not None and self.spec.dispatch is not None
        dispatch = self.spec.dispatch
        run_id = str(self.handle["run_id"])
        answer = await self.client.dispatch_job(
            dispatch.job_id,
            payload=dispatch.payload.encode() if dispatch.payload is not None else None,
            meta=dispatch.meta,
            id_prefix=run_id,
            idempotency_token=run_id,
            namespace=self.namespace,
        )
        self.job_id = _text(answer.get("DispatchedJobID"))
        self.eval_id = _text(answer.get("EvalID"))

    async def _abort(self) -> None:
        """Nothing was created in Nomad before launch, so there is nothing to remove."""

    async def _terminate(self) -> None:
        self._deregistered = True
        job_id = self.job_id or await self._resolved_job_id()
        if job_id is None:
            return
        try:
            await self.client.deregister_job(job_id, namespace=self.namespace)
        except (NomadError, NomadUnreachable) as exc:
            log.warning("deregistering Nomad job %s failed: %s", job_id, exc)

    async def _kill(self) -> None:
        """Nomad already sends SIGKILL once `KillTimeout` has passed; signal whatever still runs anyway
        (a stop may ask for a shorter grace), then wait a bounded time for Nomad to confirm."""
        for alloc in self.allocs:
            if is_terminal(alloc):
                continue
            for task, state in task_states(alloc).items():
                if state.get("State") == "running":
                    with contextlib.suppress(NomadError, NomadUnreachable):
                        await self.client.signal_task(str(alloc["ID"]), task, "SIGKILL", self.namespace)
        asyncio.get_running_loop().call_later(KILL_CONFIRM_S, self._give_up.set)

    async def _exited(self) -> ExitStatus:
        self.follow()
        assert self._watch is not None
        return await asyncio.shield(self._watch)

    async def outcome(self) -> Outcome:
        """The base class decides stop and timeout; a natural end takes Nomad's verdict, which can also
        be `lost` (a node went down) or a stop made outside batchyard."""
        result = await super().outcome()
        verdict = self._verdict
        if verdict is None or result.kind in ("stopped", "timed_out"):
            return result
        return Outcome(verdict.kind, verdict.exit, verdict.reason, stopped_by=verdict.stopped_by)

    async def _resolved_job_id(self) -> str | None:
        if self.job_id is None:
            with contextlib.suppress(NomadError, NomadUnreachable):
                self.job_id = await _resolve_job_id(self.client, self.handle)
        return self.job_id

    async def _watch_job(self) -> ExitStatus:
        try:
            verdict = await self._follow_allocations()
        except _GaveUp:
            verdict = Verdict("failed", ExitStatus(), f"Nomad did not confirm the end of job {self.job_id}")
        except NomadError as exc:
            verdict = Verdict("failed", ExitStatus(), f"following the Nomad job {self.job_id} failed: {exc}")
        finally:
            await self._finish_logs()
        self._verdict = verdict
        if self.handle.get("purge") and self.job_id is not None:
            with contextlib.suppress(NomadError, NomadUnreachable):
                await self.client.deregister_job(self.job_id, purge=True, namespace=self.namespace)
        return verdict.exit

    async def _follow_allocations(self) -> Verdict:
        if self._launch_error is not None:
            return Verdict("failed", ExitStatus(), self._launch_error)
        if self.job_id is None:
            self.job_id = await self._retrying(functools.partial(_resolve_job_id, self.client, self.handle))
        job_id = self.job_id
        if job_id is None:
            return Verdict("lost", ExitStatus(), NEVER_REACHED)
        index = 0
        told_waiting = False
        wait_s = self.wait_s
        while True:
            allocs, index = await self._retrying(
                functools.partial(self.client.job_allocations, job_id, index, wait_s, self.namespace)
            )
            wait_s = self.wait_s
            self.allocs = allocs
            self._follow_logs(allocs)
            if all(is_terminal(alloc) for alloc in allocs):
                job = await self._retrying(lambda: self.client.read_job(job_id, self.namespace))
                if job is None and not allocs and not self._launched:
                    return Verdict("lost", ExitStatus(), NEVER_REACHED)
                if job is None or job.get("Status") == "dead":
                    return judge(job_id, allocs, job, self._deregistered)
                if allocs:
                    wait_s = SETTLE_WAIT_S
                elif not told_waiting:
                    told_waiting = await self._explain_waiting(job_id)

    async def _explain_waiting(self, job_id: str) -> bool:
        """Say once, in the dispatcher's log, why Nomad has not placed the job yet."""
        if self.eval_id is None:
            return False
        with contextlib.suppress(NomadError, NomadUnreachable):
            evaluation = await self.client.read_evaluation(self.eval_id, self.namespace)
            failed = evaluation.get("FailedTGAllocs") or {}
            if failed:
                log.warning("Nomad job %s is waiting for resources in task groups %s", job_id, sorted(failed))
                return True
        return False

    async def _retrying(self, call: Any) -> Any:
        """Ride out a Nomad that is briefly unreachable or electing a leader; give up only when told."""
        delay = RETRY_FIRST_S
        while True:
            attempt = asyncio.ensure_future(call())
            give_up = asyncio.ensure_future(self._give_up.wait())
            try:
                await asyncio.wait({attempt, give_up}, return_when=asyncio.FIRST_COMPLETED)
            except BaseException:
                attempt.cancel()
                raise
            finally:
                give_up.cancel()
            if not attempt.done():
                attempt.cancel()
                raise _GaveUp
            try:
                return attempt.result()
            except NomadUnreachable as exc:
                log.warning("Nomad unreachable while following %s: %s", self.job_id, exc)
            except NomadError as exc:
                if exc.status < 500:
                    raise
                log.warning("Nomad error while following %s: %s", self.job_id, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)

    def _follow_logs(self, allocs: list[JsonObject]) -> None:
        for alloc in in_start_order(allocs):
            alloc_id = str(alloc.get("ID"))
            for task, state in sorted(task_states(alloc).items()):
                if not task_started(state):
                    continue
                for log_type in LOG_TYPES:
                    key = (alloc_id, task, log_type)
                    follower = self._followers.get(key)
                    if follower is None:
                        follower = TaskLogFollower(
                            self.client,
                            alloc_id,
                            task,
                            log_type,
                            self.logs,
                            offset=self._resume.pop(log_type, 0),
                            namespace=self.namespace,
                        )
                        self._followers[key] = follower
                        follower.start()
                    if task_over(alloc, state):
                        follower.task_over()

    async def _finish_logs(self) -> None:
        for follower in self._followers.values():
            follower.task_over()
        for follower in self._followers.values():
            try:
                await follower.finished()
            except asyncio.CancelledError:
                if follower.runner is not None:
                    follower.runner.cancel()
                raise
            except Exception:
                log.exception("following a Nomad log failed")

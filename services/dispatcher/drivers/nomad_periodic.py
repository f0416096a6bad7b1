"""Handing a job's cron schedule to Nomad's native `periodic` block, and finding the runs Nomad starts.

Nomad launches each tick of a periodic parent job as a child job named `<parent>/periodic-<unix time>`.
The parent is registered once per batchyard job (its ID is fixed by the job id, so a schedule edit
re-registers the same parent); a `PeriodicWatcher` lists the children with a blocking query on the
prefix and reports each one once, with the handle that `NomadDriver.reattach` follows like any other
run. What Nomad's block cannot express is refused rather than approximated: overlap policies other than
allow/forbid, jitter and catch-up of missed ticks stay with batchyard's own scheduler.
See docs/decisions/0104-nomad-periodic.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from contracts.base import JsonObject
from contracts.payloads import NomadPayload, PayloadError, validate_payload
from contracts.schedules import OverlapPolicy
from services.dispatcher.drivers.nomad import kill_timeout_s, run_job_id
from services.dispatcher.drivers.nomad_api import NomadClient
from shared.domain.nomad_schedule import NotExpressible

PERIODIC_SUFFIX = "/periodic-"
JOB_ID_META = "batchyard_job_id"


def prohibit_overlap(policy: OverlapPolicy) -> bool:
    """`forbid` is Nomad's `ProhibitOverlap`; `allow` is its default; the others have no equivalent."""
    if policy == "allow":
        return False
    if policy == "forbid":
        return True
    raise NotExpressible(f"overlap policy {policy!r} cannot be handed to Nomad's periodic block")


def periodic_parent(
    payload: JsonObject,
    *,
    batchyard_job_id: str,
    cron: str,
    timezone: str = "UTC",
    prohibit_overlap: bool = True,
) -> JsonObject:
    """The parent job to register: the rendered job with a `Periodic` block and batchyard's job id in
    its meta (children inherit the meta, so each launch names the job it belongs to)."""
    try:
        spec = NomadPayload.model_validate(validate_payload("nomad", payload))
    except PayloadError as exc:
        raise NotExpressible(f"invalid {exc}") from None
    if spec.dispatch is not None:
        raise NotExpressible("a dispatch payload cannot be scheduled by Nomad; schedule a job spec")
    fields = {name for name in NomadPayload.model_fields if name[:1].isupper()}
    job: JsonObject = spec.model_dump(mode="json", exclude=set(NomadPayload.model_fields) - fields)
    job["ID"] = run_job_id(batchyard_job_id, spec.ID or spec.Name)
    job["Name"] = job.get("Name") or job["ID"]
    job["Type"] = job.get("Type") or "batch"
    job["Meta"] = {**(spec.Meta or {}), JOB_ID_META: batchyard_job_id}
    job["Periodic"] = {
        "Enabled": True,
        "Spec": cron,
        "SpecType": "cron",
        "TimeZone": timezone,
        "ProhibitOverlap": prohibit_overlap,
    }
    return job


async def register_periodic(client: NomadClient, parent: JsonObject) -> JsonObject:
    """Register or update the parent; Nomad starts launching children on its schedule at once."""
    return await client.register_job(parent, only_if_new=False)


@dataclass(frozen=True)
class PeriodicLaunch:
    """One run Nomad started on a periodic parent's schedule."""

    job_id: str
    parent_id: str
    launched_at: datetime
    status: str

    def handle(
        self,
        client: NomadClient,
        run_id: str,
        parent: JsonObject,
        timeout_s: float | None,
        *,
        purge: bool = False,
    ) -> JsonObject:
        """What `RunStarted` records for this launch, in the shape `NomadDriver.reattach` follows."""
        return {
            "nomad_url": client.connection.address,
            "namespace": client.connection.namespace,
            "region": client.connection.region,
            "run_id": run_id,
            "job_id": self.job_id,
            "periodic_parent_id": self.parent_id,
            "timeout_s": timeout_s,
            "kill_timeout_s": kill_timeout_s(parent),
            "purge": purge,
        }


def launched_at(child_id: str) -> datetime | None:
    _, _, stamp = child_id.rpartition(PERIODIC_SUFFIX)
    return datetime.fromtimestamp(int(stamp), UTC) if stamp.isdigit() else None


class PeriodicWatcher:
    """Reports the children of one periodic parent, each once. `seen` are the child job IDs already
    recorded as runs (from their `RunStarted` handles), so a restarted dispatcher does not report them
    again; Nomad keeps children until its garbage collector removes dead ones."""

    def __init__(
        self, client: NomadClient, parent_id: str, *, namespace: str | None = None, seen: Iterable[str] = ()
    ) -> None:
        self.client = client
        self.parent_id = parent_id
        self.namespace = namespace
        self.seen = set(seen)
        self._index = 0

    async def next_launches(self, wait_s: float = 10.0) -> list[PeriodicLaunch]:
        """New launches, oldest first; waits up to `wait_s` (a blocking query) when there are none."""
        jobs, self._index = await self.client.list_jobs(
            self.parent_id + PERIODIC_SUFFIX, self._index, wait_s, namespace=self.namespace
        )
        launches = []
        for job in jobs:
            job_id = str(job.get("ID"))
            when = launched_at(job_id)
            if job_id in self.seen or when is None or job.get("ParentID") not in (self.parent_id, None):
                continue
            self.seen.add(job_id)
            launches.append(PeriodicLaunch(job_id, self.parent_id, when, str(job.get("Status") or "")))
        return sorted(launches, key=lambda launch: (launch.launched_at, launch.job_id))

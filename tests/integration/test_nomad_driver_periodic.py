"""A cron schedule handed to Nomad's `periodic` block, and the runs Nomad launches from it.

These tests run against a stub server (tests/nomad_stub.py) that replays the request and response shapes
of Nomad's documented HTTP API, because no Nomad binary can be installed here; with `NOMAD_ADDR` set they
run against that real Nomad (docs/nomad.md). Launches are made with `periodic/force`, which a real
cluster also offers, so no test waits for a cron tick.
"""

from __future__ import annotations

import uuid

import pytest

from services.dispatcher.drivers.nomad import NomadDriver
from services.dispatcher.drivers.nomad_api import NomadClient
from services.dispatcher.drivers.nomad_periodic import (
    PeriodicWatcher,
    periodic_parent,
    prohibit_overlap,
    register_periodic,
)
from shared.domain.nomad_schedule import NotExpressible
from tests.nomad_stub import CollectedLog, NomadTarget, shell_job
from tests.nomad_stub import client as client
from tests.nomad_stub import nomad as nomad


async def test_a_schedule_is_registered_as_a_periodic_parent_with_nomads_block(client: NomadClient) -> None:
    """Runs against the stub replaying Nomad's documented API (or a real Nomad with NOMAD_ADDR)."""
    job_id = str(uuid.uuid4())
    parent = periodic_parent(
        shell_job("echo tick"),
        batchyard_job_id=job_id,
        cron="*/15 * * * *",
        timezone="Europe/Stockholm",
        prohibit_overlap=prohibit_overlap("forbid"),
    )
    await register_periodic(client, parent)
    registered = await client.read_job(f"test-{job_id}")
    assert registered is not None
    assert {key: registered["Periodic"][key] for key in ("Enabled", "Spec", "SpecType", "TimeZone")} == {
        "Enabled": True,
        "Spec": "*/15 * * * *",
        "SpecType": "cron",
        "TimeZone": "Europe/Stockholm",
    }
    assert registered["Periodic"]["ProhibitOverlap"] is True
    assert registered["Meta"]["batchyard_job_id"] == job_id and registered["Type"] == "batch"
    allocs, _ = await client.job_allocations(f"test-{job_id}", 0)
    assert allocs == []
    await client.deregister_job(f"test-{job_id}", purge=True)


async def test_the_watcher_reports_each_launch_once_and_reattach_follows_it_to_its_end(
    nomad: NomadTarget, client: NomadClient
) -> None:
    """Runs against the stub replaying Nomad's documented API (or a real Nomad with NOMAD_ADDR)."""
    job_id = str(uuid.uuid4())
    parent = periodic_parent(
        shell_job('echo "launched as $NOMAD_JOB_ID"'), batchyard_job_id=job_id, cron="0 3 * * *"
    )
    await register_periodic(client, parent)
    parent_id = str(parent["ID"])
    watcher = PeriodicWatcher(client, parent_id)
    assert await watcher.next_launches(wait_s=0.2) == []
    await client.force_periodic(parent_id)
    (launch,) = await watcher.next_launches(wait_s=5)
    assert launch.parent_id == parent_id and launch.job_id.startswith(f"{parent_id}/periodic-")
    assert int(launch.launched_at.timestamp()) == int(launch.job_id.rpartition("-")[2])
    assert await watcher.next_launches(wait_s=0.2) == []

    driver = NomadDriver(nomad.connection, wait_s=2.0)
    try:
        log = CollectedLog()
        run = await driver.reattach(launch.handle(client, str(uuid.uuid4()), parent, None), log)
        outcome = await run.outcome()
    finally:
        await driver.close()
    assert outcome.kind == "succeeded"
    assert log.text("stdout") == f"launched as {launch.job_id}\n"

    restarted = PeriodicWatcher(client, parent_id, seen=[launch.job_id])
    assert await restarted.next_launches(wait_s=0.2) == []
    await client.deregister_job(parent_id, purge=True)


async def test_launches_the_cluster_makes_on_schedule_are_reported_oldest_first(
    nomad: NomadTarget, client: NomadClient
) -> None:
    """Runs against the stub replaying Nomad's documented API: the stub fires the parent's schedule twice,
    as Nomad's periodic dispatcher does on its cron ticks."""
    stub = nomad.require_stub("cron ticks on demand")
    parent = periodic_parent(shell_job("echo tick"), batchyard_job_id=str(uuid.uuid4()), cron="0 3 * * *")
    await register_periodic(client, parent)
    first = await stub.launch_periodic(str(parent["ID"]))
    second = await stub.launch_periodic(str(parent["ID"]))
    launches = await PeriodicWatcher(client, str(parent["ID"])).next_launches(wait_s=1)
    assert [launch.job_id for launch in launches] == [first, second]


def test_overlap_policies_nomad_cannot_express_are_refused_not_approximated() -> None:
    """No server needed: the mapping of batchyard's overlap policies onto `ProhibitOverlap`."""
    assert (prohibit_overlap("allow"), prohibit_overlap("forbid")) == (False, True)
    for policy in ("replace", "queue"):
        with pytest.raises(NotExpressible, match=f"overlap policy '{policy}' cannot be handed to Nomad"):
            prohibit_overlap(policy)
    with pytest.raises(NotExpressible, match="a dispatch payload cannot be scheduled by Nomad"):
        periodic_parent({"dispatch": {"job_id": "p"}}, batchyard_job_id="j", cron="* * * * *")

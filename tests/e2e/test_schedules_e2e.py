"""Schedules through `batchyard up`, as a user meets them: a job on a one-second cron runs on its own,
every tick once, a failing job is retried, and the job view shows the next fire times and the state."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import ClientSession

from shared.embedded import free_port
from tests.e2e.up_process import no_leftovers, running_up
from tests.polling import eventually


async def test_a_scheduled_job_runs_every_tick_once_and_a_failing_one_is_retried(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    port = free_port()
    with no_leftovers(data_dir), running_up(data_dir, port) as up:
        up.wait_until_ready()
        async with ClientSession(f"http://127.0.0.1:{port}") as http:
            execution = {
                "driver": "local",
                "payload_template": "{command: ['sh', '-c', 'exit ' + params.code]}",
                "default_params": {"code": "0"},
            }
            assert (await http.put("/executions/tick", json=execution)).status < 300
            created = await http.post(
                "/jobs",
                json={"name": "every second", "execution": "tick", "schedule": {"cron": "* * * * * *"}},
            )
            assert created.status == 201, await created.text()
            job = await created.json()
            assert len(job["next_runs"]) == 5

            async def succeeded_runs() -> list[dict[str, Any]] | None:
                page = await (await http.get("/runs", params={"job_id": job["id"], "limit": "100"})).json()
                done = [r for r in page["items"] if r["status"] == "succeeded"]
                return page["items"] if len(done) >= 3 else None

            runs = await eventually(succeeded_runs, timeout_s=30, interval_s=0.2)
            ticks = sorted(datetime.fromisoformat(r["scheduled_at"]) for r in runs if r["scheduled_at"])
            assert len(ticks) == len(set(ticks)) and all(r["trigger"] == "schedule" for r in runs)
            assert (await http.post(f"/jobs/{job['id']}/pause")).status == 200

            retry = {"max_attempts": 2, "initial_delay_s": 0.2, "jitter": 0}
            failing = await (
                await http.post(
                    "/jobs",
                    json={"name": "fails", "execution": "tick", "params": {"code": "3"}, "retry": retry},
                )
            ).json()
            first = await (await http.post(f"/jobs/{failing['id']}/runs")).json()

            async def retried() -> list[dict[str, Any]] | None:
                page = await (await http.get("/runs", params={"job_id": failing["id"]})).json()
                ended = [r for r in page["items"] if r["status"] == "failed"]
                return page["items"] if len(ended) == 2 else None

            retries = await eventually(retried, timeout_s=30, interval_s=0.2)
            attempts = sorted(retries, key=lambda r: r["attempt"])
            assert [r["attempt"] for r in attempts] == [1, 2]
            assert attempts[1]["first_run_id"] == first["id"] and attempts[1]["trigger"] == "retry"
            assert attempts[0]["next_run_id"] == attempts[1]["id"]
            view = await (await http.get(f"/jobs/{failing['id']}")).json()
            assert view["state"] == "failed"

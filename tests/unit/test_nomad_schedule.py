"""What of a job's schedule can be handed to Nomad's periodic block, and the cron Nomad is given.

The equivalence tests read the written expression with the stub Nomad's cron reader (tests/nomad_stub.py),
which follows the documented rules of Nomad's `cronexpr` (seven fields, a day field restricted unless it is
a bare `*` or `?`), not batchyard's evaluator, so a translation that only batchyard would understand fails.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from itertools import islice
from zoneinfo import ZoneInfo

import pytest

from contracts.specs import JobSpec
from shared.domain.nomad_schedule import NotExpressible, native_schedule_problems, nomad_cron, periodic_run_id
from shared.domain.schedule import CronSchedule, fire_times_after
from tests.nomad_stub import StubCron

UTC_ZONE = ZoneInfo("UTC")
START = datetime(2027, 1, 30, 22, 59, 58, tzinfo=UTC)


def nomad_fire_times(expression: str, count: int) -> list[datetime]:
    cron = StubCron.parse(expression)
    times: list[datetime] = []
    now = START.timestamp()
    while len(times) < count:
        launch = cron.next_after(now, UTC_ZONE)
        assert launch is not None
        times.append(datetime.fromtimestamp(launch, UTC))
        now = launch
    return times


def test_batchyards_seconds_form_is_written_as_nomads_seven_fields_not_passed_through() -> None:
    # Passed through, Nomad would read six fields as minute to year: every minute instead of every second.
    assert nomad_cron("* * * * * *") == "* * * * * * *"
    assert nomad_cron("*/10 * * * * *") == "0,10,20,30,40,50 * * * * * *"
    assert nomad_cron("*/15 * * * *") == "0 0,15,30,45 * * * * *"
    assert nomad_cron("@daily") == "0 0 0 * * * *"


@pytest.mark.parametrize(
    "cron",
    [
        "* * * * * *",
        "*/7 * * * * *",
        "*/15 * * * *",
        "0 9 * * MON-FRI",
        "30 2 1,15 * *",
        "0 0 L * *",
        "0 12 * * 5L",
        "0 12 * * 1#2",
        "0 6 1,15 * MON",
        "0 0 13 * FRI",
        "0 0 ? * 7",
        "0 0 */2 * *",
        "0 0 1 */3 *",
        "@hourly",
        "@weekly",
    ],
)
def test_nomad_fires_the_written_expression_exactly_when_batchyard_fires_the_schedule(cron: str) -> None:
    count = 40
    expected = list(islice(fire_times_after(CronSchedule.parse(cron), START), count))
    assert nomad_fire_times(nomad_cron(cron), count) == expected


def test_both_day_fields_limited_with_a_star_step_is_refused_since_nomad_would_match_either() -> None:
    # Batchyard (Vixie cron) runs on odd days that are Mondays; Nomad would run on odd days or Mondays.
    with pytest.raises(NotExpressible, match="Nomad's cron runs when either matches"):
        nomad_cron("0 0 */2 * MON")


def job(schedule: dict[str, object] | None = None, **fields: object) -> JobSpec:
    """A job handing its schedule to Nomad, with `schedule` fields and other fields changed."""
    wanted = {"cron": "0 3 * * *", "fired_by": "nomad", **(schedule or {})}
    return JobSpec.model_validate({"name": "n", "execution": "x", "schedule": wanted, **fields})


def test_a_job_that_nomad_can_fire_has_no_problems_and_one_fired_by_batchyard_is_not_checked() -> None:
    assert native_schedule_problems(job(), "nomad") == []
    assert native_schedule_problems(job(overlap={"policy": "allow"}), "nomad") == []
    assert native_schedule_problems(job(overlap={"policy": "forbid", "concurrency_limit": 1}), "nomad") == []
    batchyard = job(schedule={"fired_by": "batchyard", "jitter_s": 5}, overlap={"policy": "queue"})
    assert native_schedule_problems(batchyard, "local") == []


def test_each_part_nomad_cannot_honour_is_named_by_its_field() -> None:
    spec = job(
        schedule={"cron": "0 0 */2 * MON", "jitter_s": 5, "missed": {"policy": "skip"}},
        overlap={"policy": "queue"},
    )
    problems = dict(native_schedule_problems(spec, "docker"))
    assert sorted(problems) == [
        "overlap.policy",
        "schedule.cron",
        "schedule.fired_by",
        "schedule.jitter_s",
        "schedule.missed.policy",
    ]
    assert problems["schedule.fired_by"].startswith("execution 'x' uses the docker driver")
    assert "'queue' cannot be handed to Nomad" in problems["overlap.policy"]
    assert "'skip' cannot be handed to Nomad" in problems["schedule.missed.policy"]


@pytest.mark.parametrize(("policy", "limit"), [("allow", 1), ("forbid", 2)])
def test_a_concurrency_limit_beyond_one_run_or_no_limit_is_refused(policy: str, limit: int) -> None:
    problems = dict(
        native_schedule_problems(job(overlap={"policy": policy, "concurrency_limit": limit}), "nomad")
    )
    assert list(problems) == ["overlap.concurrency_limit"]


def test_an_unknown_execution_leaves_the_driver_check_to_the_reference_check() -> None:
    assert native_schedule_problems(job(), None) == []


def test_the_run_of_a_launch_has_one_id_per_job_and_child() -> None:
    job_id, other = uuid.uuid4(), uuid.uuid4()
    child = "nightly-1/periodic-1700000000"
    assert periodic_run_id(job_id, child) == periodic_run_id(job_id, child)
    assert periodic_run_id(job_id, child) != periodic_run_id(job_id, "nightly-1/periodic-1700000060")
    assert periodic_run_id(job_id, child) != periodic_run_id(other, child)


def test_the_stub_reads_six_fields_as_nomad_does_minute_to_year() -> None:
    """Guards the equivalence tests above: the reader they use is Nomad's, not batchyard's."""
    after = datetime(2027, 1, 1, tzinfo=UTC).timestamp()
    launch = StubCron.parse("* * * * * *").next_after(after, UTC_ZONE)
    assert launch is not None and datetime.fromtimestamp(launch, UTC) - datetime.fromtimestamp(
        after, UTC
    ) == timedelta(minutes=1)

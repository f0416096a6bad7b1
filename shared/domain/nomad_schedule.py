"""What of a job's schedule Nomad's `periodic` block can fire, and in which words Nomad reads it.

The API refuses a job that opts into Nomad's block (`schedule.fired_by: nomad`) with something the block
cannot honour, naming the field, and the dispatcher registers the parent with the expression this
module writes; both ask the same questions here, so what the door accepts is what Nomad is given.

Nomad parses cron with its fork of `cronexpr`: seven fields (second, minute, hour, day of month, month,
day of week, year), where a six-field expression means *minute to year*, not batchyard's *second to day
of week*. Passing the user's text through would silently turn `* * * * * *` (every second here) into
every minute there, so the expression Nomad gets is written out from batchyard's parse of it, field by
field. Both read a day as matching when either day field matches if both are restricted; they differ on
what "restricted" means (Vixie cron's rule, used here, calls a field starting with `*` unrestricted;
cronexpr calls only a bare `*` or `?` unrestricted), so the day fields are written so that both agree,
and the one combination that cannot be written (both day fields limited, but one of them by a `*/n` step,
which batchyard ANDs) is refused. See docs/decisions/0173-nomad-periodic-wiring.md.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from contracts.specs import JobSpec
from shared.domain.cron import CronExpression, parse_cron

NOMAD_DRIVER = "nomad"
_DAYS_OF_MONTH = frozenset(range(1, 32))
_DAYS_OF_WEEK = frozenset(range(7))


class NotExpressible(ValueError):
    """The schedule asks for something Nomad's periodic block cannot do."""


def _spans(values: Iterable[int]) -> str:
    """`1,2,3,7` as `1-3,7`: a list cronexpr reads as restricted, whatever it holds."""
    ordered = sorted(set(values))
    parts: list[str] = []
    start = previous = ordered[0]
    for value in [*ordered[1:], None]:
        if value is not None and value == previous + 1:
            previous = value
            continue
        parts.append(str(start) if start == previous else f"{start}-{previous}")
        if value is not None:
            start = previous = value
    return ",".join(parts)


def _field(values: tuple[int, ...], low: int, high: int) -> str:
    return "*" if set(values) == set(range(low, high + 1)) else _spans(values)


def _day_items(expression: CronExpression) -> tuple[list[str], list[str]]:
    month_days = [_spans(expression.days_of_month)] if expression.days_of_month else []
    if expression.last_day_of_month:
        month_days.append("L")
    week_days = [_spans(expression.days_of_week)] if expression.days_of_week else []
    week_days += [f"{day}L" for day in sorted(expression.last_weekdays)]
    week_days += [f"{day}#{nth}" for day, nth in sorted(expression.nth_weekdays)]
    return month_days, week_days


def _day_fields(expression: CronExpression) -> tuple[str, str]:
    month_days, week_days = _day_items(expression)
    if expression.day_of_month_restricted and expression.day_of_week_restricted:
        # Either field matches, in both readers, as long as neither is written as a bare `*`.
        return ",".join(month_days), ",".join(week_days)
    every_month_day = expression.days_of_month == _DAYS_OF_MONTH
    every_week_day = (
        expression.days_of_week == _DAYS_OF_WEEK
        and not expression.last_weekdays
        and not expression.nth_weekdays
    )
    # Batchyard ANDs the two fields here; cronexpr reads only the restricted one, which is the same
    # whenever the other field holds every day.
    if every_month_day:
        return "*", "*" if every_week_day else ",".join(week_days)
    if every_week_day:
        return ",".join(month_days), "*"
    raise NotExpressible(
        f"{expression.source!r} limits both the day of month and the day of week and needs both to "
        "match (a day field starting with '*' counts as unrestricted); Nomad's cron runs when either "
        "matches. Write the day of week as '*' or the day of month as '*', or keep batchyard's scheduler"
    )


def nomad_cron(cron: str) -> str:
    """The seven-field expression Nomad's periodic block fires exactly when batchyard would."""
    expression = parse_cron(cron)
    day_of_month, day_of_week = _day_fields(expression)
    return " ".join(
        (
            _field(expression.seconds, 0, 59),
            _field(expression.minutes, 0, 59),
            _field(expression.hours, 0, 23),
            day_of_month,
            _field(expression.months, 1, 12),
            day_of_week,
            "*",
        )
    )


def native_schedule_problems(spec: JobSpec, driver: str | None) -> list[tuple[str, str]]:
    """(field, reason) for each part of a job opting into Nomad's periodic block that the block cannot
    honour; empty when the job does not opt in. `driver` is its execution's driver (None: unknown, which
    the reference check reports)."""
    schedule = spec.schedule
    if schedule is None or schedule.fired_by != NOMAD_DRIVER:
        return []
    problems: list[tuple[str, str]] = []
    if driver is not None and driver != NOMAD_DRIVER:
        problems.append(
            (
                "schedule.fired_by",
                f"execution {spec.execution!r} uses the {driver} driver; only the schedule of a job whose "
                "execution uses the nomad driver can be handed to Nomad's periodic block",
            )
        )
    overlap = spec.overlap
    if overlap.policy not in ("allow", "forbid"):
        problems.append(
            (
                "overlap.policy",
                f"overlap policy {overlap.policy!r} cannot be handed to Nomad's periodic block, which can "
                "only allow overlapping runs or forbid them (ProhibitOverlap)",
            )
        )
    elif overlap.concurrency_limit is not None and (
        overlap.policy == "allow" or overlap.concurrency_limit != 1
    ):
        problems.append(
            (
                "overlap.concurrency_limit",
                f"Nomad's periodic block runs either any number of runs at once or one (policy 'forbid'); "
                f"a limit of {overlap.concurrency_limit} under {overlap.policy!r} cannot be handed to it",
            )
        )
    if schedule.jitter_s:
        problems.append(
            ("schedule.jitter_s", "Nomad's periodic block launches every tick on time: no jitter")
        )
    if schedule.missed.policy != "latest":
        problems.append(
            (
                "schedule.missed.policy",
                f"missed-ticks policy {schedule.missed.policy!r} cannot be handed to Nomad, which launches "
                "the latest missed tick once after a leader election ('latest') and nothing else",
            )
        )
    try:
        nomad_cron(schedule.cron)
    except NotExpressible as exc:
        problems.append(("schedule.cron", str(exc)))
    return problems


def periodic_run_id(job_id: uuid.UUID, child_job_id: str) -> uuid.UUID:
    """The run of a job that Nomad launched as `child_job_id`: the same id in every dispatcher, so a
    launch is recorded once however often it is seen (the store refuses a second first event)."""
    return uuid.uuid5(job_id, f"nomad-periodic:{child_job_id}")

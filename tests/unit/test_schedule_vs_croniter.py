"""Differential specification: in UTC, where no daylight-saving rule applies, batchyard's evaluator
agrees with croniter on random expressions, except where batchyard deliberately follows Vixie cron."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from croniter import croniter

from shared.domain.schedule import CronSchedule, next_fire_times


def random_field(rng: random.Random, low: int, high: int, *, day_field: bool) -> str:
    """Values, ranges, steps and lists. Two shapes are left out: `a-a` ranges, which croniter 7.0
    misreads, and `*/n` in a day field, where croniter and Vixie cron disagree (tested below)."""
    choice = rng.random()
    if choice < 0.25:
        return "*"
    if choice < 0.4 and not day_field:
        return f"*/{rng.randint(1, max(1, (high - low + 1) // 2))}"
    if choice < 0.6:
        start = rng.randint(low, high - 1)
        end = rng.randint(start + 1, high)
        return f"{start}-{end}" + (f"/{rng.randint(1, 3)}" if rng.random() < 0.3 else "")
    if choice < 0.8:
        return ",".join(str(value) for value in sorted(rng.sample(range(low, high + 1), rng.randint(1, 3))))
    return str(rng.randint(low, high))


def random_expression(rng: random.Random) -> tuple[str, bool]:
    with_seconds = rng.random() < 0.3
    fields = [
        random_field(rng, 0, 59, day_field=False),
        random_field(rng, 0, 23, day_field=False),
        random_field(rng, 1, 31, day_field=True),
        random_field(rng, 1, 12, day_field=False),
        random_field(rng, 0, 6, day_field=True),
    ]
    if with_seconds:
        fields.insert(0, random_field(rng, 0, 59, day_field=False))
    return " ".join(fields), with_seconds


def test_random_expressions_fire_at_the_same_utc_times_as_croniter() -> None:
    rng = random.Random(20261123)
    compared = 0
    while compared < 150:
        expression, with_seconds = random_expression(rng)
        try:
            schedule = CronSchedule.parse(expression)
        except ValueError:
            continue  # e.g. 31 in a month list of 30-day months; refused by design
        start = datetime(2026, rng.randint(1, 12), rng.randint(1, 28), rng.randint(0, 23), tzinfo=UTC)
        reference = croniter(expression, start, second_at_beginning=with_seconds)
        expected = [reference.get_next(datetime) for _ in range(20)]
        assert next_fire_times(schedule, start, 20) == expected, expression
        compared += 1


def test_a_star_step_in_a_day_field_ands_the_day_fields_like_vixie_cron_not_croniter() -> None:
    expression = "0 0 */2 * MON"
    start = datetime(2026, 11, 1, tzinfo=UTC)
    ours = next_fire_times(CronSchedule.parse(expression), start, 2)
    reference = croniter(expression, start)
    theirs = [reference.get_next(datetime) for _ in range(2)]
    assert ours == [datetime(2026, 11, 9, tzinfo=UTC), datetime(2026, 11, 23, tzinfo=UTC)]  # odd Mondays
    assert theirs == [
        datetime(2026, 11, 2, tzinfo=UTC),
        datetime(2026, 11, 3, tzinfo=UTC),
    ]  # any Monday or odd day

"""Parsing and date matching of cron expressions.

We evaluate cron ourselves instead of through croniter because croniter moves a wall-clock time skipped
by a spring-forward gap to the next hour and fires a repeated one twice (decision 0070); the parser is
separate from the evaluation so that `contracts/` can validate input without pulling in time-zone logic.

Supported: 5 fields (minute hour day-of-month month day-of-week) or 6 with seconds first; `*`, `?` (a
synonym of `*` in the day fields), numbers, ranges `a-b`, steps `*/n`, `a/n`, `a-b/n`, lists; month and
weekday names (JAN..DEC, SUN..SAT); weekday 7 is Sunday; `L` (last day of the month) in day-of-month,
`<weekday>L` (last such weekday of the month) and `<weekday>#<n>` (n-th such weekday) in day-of-week;
the macros below. When both day fields are restricted a day matches if either matches (Vixie cron); a
day field that starts with `*` or `?` counts as unrestricted, as in Vixie cron, so `*/2` is ANDed.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

MONTH_NAMES = {name.upper(): number for number, name in enumerate(calendar.month_abbr) if name}
WEEKDAY_NAMES = {"SUN": 0, "MON": 1, "TUE": 2, "WED": 3, "THU": 4, "FRI": 5, "SAT": 6}


class CronSyntaxError(ValueError):
    """Names the field so the API can answer 422 pointing at what to fix."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field} field: {reason}" if field != "expression" else reason)
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class _FieldSpec:
    name: str
    low: int
    high: int
    names: dict[str, int]


_SECOND = _FieldSpec("second", 0, 59, {})
_MINUTE = _FieldSpec("minute", 0, 59, {})
_HOUR = _FieldSpec("hour", 0, 23, {})
_DAY_OF_MONTH = _FieldSpec("day-of-month", 1, 31, {})
_MONTH = _FieldSpec("month", 1, 12, MONTH_NAMES)
# 7 is accepted as Sunday and folded to 0 after parsing.
_DAY_OF_WEEK = _FieldSpec("day-of-week", 0, 7, WEEKDAY_NAMES)


@dataclass(frozen=True)
class CronExpression:
    """A parsed expression; the time sets are sorted tuples because evaluation walks them in order."""

    source: str
    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days_of_month: frozenset[int]
    last_day_of_month: bool
    months: tuple[int, ...]
    days_of_week: frozenset[int]
    last_weekdays: frozenset[int]
    nth_weekdays: frozenset[tuple[int, int]]
    day_of_month_restricted: bool
    day_of_week_restricted: bool

    def matches_date(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        last = calendar.monthrange(day.year, day.month)[1]
        return self._matches_day(day.day, (day.weekday() + 1) % 7, last)

    def _matches_day(self, day: int, weekday: int, last: int) -> bool:
        """`weekday` counts from Sunday = 0; `last` is the length of the month."""
        dom = day in self.days_of_month or (self.last_day_of_month and day == last)
        dow = (
            weekday in self.days_of_week
            or (weekday in self.last_weekdays and day + 7 > last)
            or (weekday, (day - 1) // 7 + 1) in self.nth_weekdays
        )
        if self.day_of_month_restricted and self.day_of_week_restricted:
            return dom or dow
        return dom and dow

    def matches_some_day(self) -> bool:
        """Whether any date matches at all: every month starts on every weekday sooner or later (and
        February does so in leap and common years), so trying each month length and first weekday is
        exhaustive, in a few thousand steps instead of a walk through a 400-year calendar cycle."""
        lengths = {2: (28, 29), 4: (30,), 6: (30,), 9: (30,), 11: (30,)}
        return any(
            self._matches_day(day, (first_weekday + day - 1) % 7, length)
            for month in self.months
            for length in lengths.get(month, (31,))
            for first_weekday in range(7)
            for day in range(1, length + 1)
        )

    def dates_from(self, start: date) -> Iterator[date]:
        """Matching dates on or after `start`, ascending; ends only at the end of the calendar."""
        year, month, first_day = start.year, start.month, start.day
        while year <= date.max.year:
            if month in self.months:
                last = calendar.monthrange(year, month)[1]
                for day_number in range(first_day, last + 1):
                    day = date(year, month, day_number)
                    if self.matches_date(day):
                        yield day
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
            first_day = 1

    def dates_until(self, end: date) -> Iterator[date]:
        """Matching dates on or before `end`, descending; ends only at the start of the calendar."""
        year, month, last_day = end.year, end.month, end.day
        while year >= date.min.year:
            if month in self.months:
                for day_number in range(last_day, 0, -1):
                    day = date(year, month, day_number)
                    if self.matches_date(day):
                        yield day
            year, month = (year - 1, 12) if month == 1 else (year, month - 1)
            if year >= date.min.year:
                last_day = calendar.monthrange(year, month)[1]


def parse_cron(expression: str) -> CronExpression:
    """Parse a 5- or 6-field expression or a macro; raise `CronSyntaxError` naming the bad field."""
    source = expression.strip()
    text = source
    if text.startswith("@"):
        macro = text.lower()
        if macro not in MACROS:
            raise CronSyntaxError(
                "expression", f"unknown macro {text!r}; supported: {', '.join(sorted(MACROS))}"
            )
        text = MACROS[macro]
    parts = text.split()
    if len(parts) not in (5, 6):
        raise CronSyntaxError(
            "expression",
            f"expected 5 fields (minute hour day-of-month month day-of-week) or 6 with seconds first, "
            f"got {len(parts)}",
        )
    if len(parts) == 5:
        parts = ["0", *parts]
    second, minute, hour, day_of_month, month, day_of_week = parts
    dom_values, last_day = _parse_day_of_month(day_of_month)
    dow_values, last_weekdays, nth_weekdays = _parse_day_of_week(day_of_week)
    parsed = CronExpression(
        source=source,
        seconds=tuple(sorted(_parse_field(second, _SECOND))),
        minutes=tuple(sorted(_parse_field(minute, _MINUTE))),
        hours=tuple(sorted(_parse_field(hour, _HOUR))),
        days_of_month=frozenset(dom_values),
        last_day_of_month=last_day,
        months=tuple(sorted(_parse_field(month, _MONTH))),
        days_of_week=frozenset(dow_values),
        last_weekdays=frozenset(last_weekdays),
        nth_weekdays=frozenset(nth_weekdays),
        day_of_month_restricted=not day_of_month.startswith(("*", "?")),
        day_of_week_restricted=not day_of_week.startswith(("*", "?")),
    )
    _require_a_matching_day(parsed)
    return parsed


def _parse_field(text: str, spec: _FieldSpec) -> set[int]:
    values: set[int] = set()
    for item in text.split(","):
        values |= _parse_item(item, spec)
    return values


def _parse_item(item: str, spec: _FieldSpec) -> set[int]:
    if not item:
        raise CronSyntaxError(spec.name, "empty list item")
    body, _, step_text = item.partition("/")
    step = 1
    if step_text or item.endswith("/"):
        step = _number(step_text, spec, "step")
        span = spec.high - spec.low + 1
        if not 1 <= step <= span:
            raise CronSyntaxError(spec.name, f"step {step} is out of range 1-{span}")
    if body in ("*", "?"):
        if body == "?" and spec not in (_DAY_OF_MONTH, _DAY_OF_WEEK):
            raise CronSyntaxError(spec.name, "'?' is only allowed in the day-of-month and day-of-week fields")
        low, high = spec.low, _open_end(spec)
    elif "-" in body:
        start_text, _, end_text = body.partition("-")
        low, high = _value(start_text, spec), _value(end_text, spec)
        if low > high:
            raise CronSyntaxError(spec.name, f"range {body}: start is after end")
    else:
        low = _value(body, spec)
        high = _open_end(spec) if step_text else low
    values = set(range(low, high + 1, step))
    if spec is _DAY_OF_WEEK and 7 in values:
        values = (values - {7}) | {0}
    return values


def _open_end(spec: _FieldSpec) -> int:
    """`*` and `a/n` in day-of-week stop at Saturday, so 7 never doubles Sunday into a step sequence."""
    return 6 if spec is _DAY_OF_WEEK else spec.high


def _value(text: str, spec: _FieldSpec) -> int:
    upper = text.upper()
    if upper in spec.names:
        return spec.names[upper]
    value = _number(text, spec, "value")
    if not spec.low <= value <= spec.high:
        raise CronSyntaxError(spec.name, f"{value} is out of range {spec.low}-{spec.high}")
    return value


def _number(text: str, spec: _FieldSpec, what: str) -> int:
    if not text.isdigit() or not text.isascii():
        names = f" or a name ({', '.join(spec.names)})" if spec.names and what == "value" else ""
        raise CronSyntaxError(spec.name, f"{text!r} is not a number{names}")
    return int(text)


def _parse_day_of_month(text: str) -> tuple[set[int], bool]:
    values: set[int] = set()
    last_day = False
    for item in text.split(","):
        if item.upper() == "L":
            last_day = True
        else:
            values |= _parse_item(item, _DAY_OF_MONTH)
    return values, last_day


def _parse_day_of_week(text: str) -> tuple[set[int], set[int], set[tuple[int, int]]]:
    values: set[int] = set()
    last: set[int] = set()
    nth: set[tuple[int, int]] = set()
    for item in text.split(","):
        upper = item.upper()
        if upper.endswith("L") and len(upper) > 1 and "/" not in upper and "-" not in upper:
            last.add(_value(item[:-1], _DAY_OF_WEEK) % 7)
        elif "#" in item:
            weekday_text, _, nth_text = item.partition("#")
            weekday = _value(weekday_text, _DAY_OF_WEEK) % 7
            occurrence = _number(nth_text, _DAY_OF_WEEK, "occurrence")
            if not 1 <= occurrence <= 5:
                raise CronSyntaxError("day-of-week", f"occurrence #{occurrence} is out of range 1-5")
            nth.add((weekday, occurrence))
        else:
            values |= _parse_item(item, _DAY_OF_WEEK)
    return values, last, nth


def _require_a_matching_day(expression: CronExpression) -> None:
    """Refuse expressions like `0 0 30 2 *` that would make the evaluator search forever."""
    if not expression.matches_some_day():
        raise CronSyntaxError(
            "day-of-month", f"{expression.source!r} never matches: no month has such a day (check month)"
        )

"""工作日历 The working-day calendar of the approvals process: China's official holidays and adjusted working days
(调休上班) from an editable file (routes/calendar/cn-holidays.toml), and the statutory time-limit arithmetic.

Rules (《行政许可法》 time limits are in working days; 期间开始之日不计算在内):

- a day is a working day when it is listed under ``workdays`` (a weekend day worked in exchange), or when it is a
  Monday–Friday not listed under ``holidays``;
- a case's clock starts on its start day, which does not count: its time limit of N working days ends on the N-th
  counted day after it;
- a pause (中止 suspension, 补正 supplement) from day A to day B stops the clock on the days after A up to and
  including B: those days do not count (an open pause stops every day after A);
- a day outside the years in the file counts by weekdays only (``covers`` says whether a day's year is in it).
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

__all__ = ["Calendar", "CalendarError", "Pause", "load_calendar"]

#: (since, until): the clock stopped on the days after ``since`` up to and including ``until`` (None: still stopped).
Pause = tuple[date, date | None]
ONE = timedelta(days=1)
#: How far the arithmetic walks before it gives up (a deadline more than ten years away is a mistake in the input).
MAX_DAYS = 3660


class CalendarError(ValueError):
    """The calendar file cannot be used (the message names the file and what to correct)."""


@dataclass(frozen=True)
class Calendar:
    holidays: frozenset[date] = frozenset()
    workdays: frozenset[date] = frozenset()
    #: year → (status, source): "official" or "provisional" (e.g. a year whose notice is not published yet)
    years: dict[int, tuple[str, str]] = field(default_factory=dict)

    def covers(self, day: date) -> bool:
        return day.year in self.years

    def is_working(self, day: date) -> bool:
        if day in self.workdays:
            return True
        if day in self.holidays:
            return False
        return day.weekday() < 5

    @staticmethod
    def _paused(day: date, pauses: Sequence[Pause]) -> bool:
        return any(since < day and (until is None or day <= until) for since, until in pauses)

    def counts(self, day: date, pauses: Sequence[Pause] = ()) -> bool:
        """Whether ``day`` counts towards a time limit: a working day on which the clock runs."""
        return self.is_working(day) and not self._paused(day, pauses)

    def count(self, after: date, upto: date, pauses: Sequence[Pause] = ()) -> int:
        """The counted days after ``after`` up to and including ``upto`` (0 when ``upto`` <= ``after``)."""
        n, day = 0, after + ONE
        while day <= upto:
            if self.counts(day, pauses):
                n += 1
            day += ONE
        return n

    def add(self, start: date, days: int, pauses: Sequence[Pause] = ()) -> date | None:
        """The day a limit of ``days`` working days from ``start`` ends (the ``days``-th counted day after it);
        ``start`` itself for 0; None while an open pause stops the clock before the limit is reached."""
        if days <= 0:
            return start
        open_since = min((s for s, u in pauses if u is None), default=None)
        n, day = 0, start
        for _ in range(MAX_DAYS):
            day += ONE
            if open_since is not None and day > open_since:
                return None
            if self.counts(day, pauses):
                n += 1
                if n == days:
                    return day
        raise CalendarError(f"a limit of {days} working days from {start} ends more than {MAX_DAYS} days later")

    def back(self, deadline: date, days: int) -> date:
        """The working day ``days`` working days back from ``deadline``, counting ``deadline`` itself when it is a
        working day as the first (the day from which only ``days`` working days remain)."""
        n, day = 0, deadline
        for _ in range(MAX_DAYS):
            if self.is_working(day):
                n += 1
                if n >= days:
                    return day
            day -= ONE
        return day

    def problems(self) -> list[str]:
        """What an editor of the file should look at (Chinese first)."""
        out = []
        for d in sorted(self.holidays & self.workdays):
            out.append(f"{d} 同时列为放假日和调休上班日 listed both as a holiday and as a working day")
        for d in sorted(self.workdays):
            if d.weekday() < 5:
                out.append(f"{d} 是周一至周五，无需列为调休上班日 is a weekday already: not an adjusted working day")
        for year, (status, _source) in sorted(self.years.items()):
            if status != "official":
                out.append(
                    f"{year} 年安排为暂定（{status}），须按国务院办公厅通知核对 the {year} dates are {status}: check "
                    "them against the State Council's notice"
                )
        return out


def _dates(values: object, year: int, what: str, path: Path) -> list[date]:
    if not isinstance(values, list):
        raise CalendarError(f'{path}: [{year}] {what} 应为日期列表 must be a list of "YYYY-MM-DD" strings')
    out = []
    for v in values:
        try:
            d = date.fromisoformat(str(v))
        except ValueError:
            raise CalendarError(f"{path}: [{year}] {what}: {v!r} 不是日期 is not a date (YYYY-MM-DD)") from None
        if d.year != year:
            raise CalendarError(f"{path}: [{year}] {what}: {d} 不属于 {year} 年 is not in {year}")
        out.append(d)
    return out


def load_calendar(path: Path | str) -> Calendar:
    """Read the calendar file; a file that cannot be used raises CalendarError saying what to correct."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8-sig"))  # a byte-order mark is not an error
    except FileNotFoundError:
        raise CalendarError(f"{path}: 节假日日历文件不存在 the holiday calendar file does not exist") from None
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CalendarError(f"{path}: 节假日日历文件格式错误 the calendar file is not valid TOML: {exc}") from None
    holidays: list[date] = []
    workdays: list[date] = []
    years: dict[int, tuple[str, str]] = {}
    for key, table in data.items():
        if not (key.isascii() and key.isdigit() and len(key) == 4) or not isinstance(table, dict):
            raise CalendarError(f"{path}: [{key}] 应为年份表 each table is a year, e.g. [2026]")
        year = int(key)
        holidays += _dates(table.get("holidays", []), year, "holidays", path)
        workdays += _dates(table.get("workdays", []), year, "workdays", path)
        years[year] = (str(table.get("status", "official")), str(table.get("source", "")))
    return Calendar(frozenset(holidays), frozenset(workdays), years)


def calendar_of(holidays: Iterable[date] = (), workdays: Iterable[date] = (), years: Iterable[int] = ()) -> Calendar:
    """A calendar built in code (tests)."""
    return Calendar(frozenset(holidays), frozenset(workdays), {y: ("official", "test") for y in years})

"""XSD values as Python's, for values a schema has already admitted: dates and times, integers.

``xs:dateTime`` and ``xs:date`` admit lexical forms that ``datetime.fromisoformat`` refuses or that Python cannot
hold: ``24:00:00`` (the first instant of the next day), a date with a timezone (``2026-12-06+08:00``: what Java's
``XMLGregorianCalendar`` writes for a date), years before 1 or after 9999 (``-0044``, ``12026``) and instants whose
UTC falls outside Python's range (``0001-01-01T00:00:00+14:00``). Read with ``fromisoformat`` alone, each raised
``ValueError`` after the schema had passed — in the hub's examination an ``INTERNAL`` error instead of the sender's
``SCHEMA_VALUE``, in a process or an adapter a message it could not read. These functions take the forms Python can
hold (the usual ones by ``fromisoformat``'s C code first) and raise ``ValueError`` with a sentence for the rest.

Integers likewise: ``xs:int`` admits any number of leading zeros (``000…0001``, 5,000 digits long, is 1), and
``int()`` refuses a string of more than 4,300 digits (``sys.get_int_max_str_digits``) — the leading zeros count.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo

__all__ = ["xsd_date", "xsd_datetime", "xsd_integer"]

_DATETIME = re.compile(r"(-?\d{4,})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})?")
_DATE = re.compile(r"(-?\d{4,})-(\d{2})-(\d{2})(Z|[+-]\d{2}:\d{2})?")


def _zone(text: str | None) -> tzinfo | None:
    if not text:
        return None
    if text == "Z":
        return UTC
    sign = -1 if text[0] == "-" else 1
    return timezone(sign * timedelta(hours=int(text[1:3]), minutes=int(text[4:6])))


def _year(text: str, value: str) -> int:
    year = int(text)
    if not 1 <= year <= 9999:
        raise ValueError(f"{value!r}: the year {text} is outside 0001–9999")
    return year


def _held(t: datetime, value: str) -> datetime:
    """``t`` when its instant in UTC is one Python can hold too (comparisons and arithmetic convert to it)."""
    if t.tzinfo is not None and t.year in (1, 9999):
        try:
            t.astimezone(UTC)
        except OverflowError:
            raise ValueError(f"{value!r}: the instant is outside 0001–9999 in UTC") from None
    return t


def xsd_datetime(text: str) -> datetime:
    """An ``xs:dateTime`` (surrounding whitespace allowed, as the schema collapses it): aware when it has a
    timezone, naive when it has none; ``24:00:00`` is midnight of the next day; digits past microseconds are cut."""
    value = text.strip()
    try:
        fast = datetime.fromisoformat(value)
    except ValueError:
        pass
    else:
        return _held(fast, value)
    m = _DATETIME.fullmatch(value)
    if m is None:
        raise ValueError(f"{value!r} is not a date and time (xs:dateTime)")
    year = _year(m[1], value)
    hour, minute, second = int(m[4]), int(m[5]), int(m[6])
    micro = int((m[7] or "0")[:6].ljust(6, "0"))
    later = timedelta()
    if hour == 24:
        if minute or second or micro:
            raise ValueError(f"{value!r}: 24 is an hour only as 24:00:00")
        hour, later = 0, timedelta(days=1)
    try:
        t = datetime(year, int(m[2]), int(m[3]), hour, minute, second, micro, tzinfo=_zone(m[8])) + later
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"{value!r}: {exc}") from None
    return _held(t, value)


def xsd_date(text: str) -> date:
    """An ``xs:date`` (surrounding whitespace allowed): the date as written, its timezone (if any) dropped."""
    value = text.strip()
    try:
        return date.fromisoformat(value)
    except ValueError:
        pass
    m = _DATE.fullmatch(value)
    if m is None:
        raise ValueError(f"{value!r} is not a date (xs:date)")
    year = _year(m[1], value)
    try:
        return date(year, int(m[2]), int(m[3]))
    except ValueError as exc:
        raise ValueError(f"{value!r}: {exc}") from None


def xsd_integer(text: str) -> int:
    """An ``xs:integer`` or a type derived from it (surrounding whitespace allowed), leading zeros and all."""
    value = text.strip()
    sign = "-" if value.startswith("-") else ""
    digits = value.lstrip("+-").lstrip("0")
    if len(digits) < 4000:  # what the schema's facets leave is short: the zeros were the length
        return int(sign + (digits or "0"))
    raise ValueError(f"an integer of {len(digits)} digits")

"""hub.envelope.xsdvalue: the XSD date and time forms ``fromisoformat`` refuses (24:00:00, a date with its timezone,
years Python cannot hold, instants outside its range in UTC) and the integers ``int()`` refuses (leading zeros past
4,300 digits), and the places that read them — the envelope's Created/Expires and Service version (a SCHEMA_VALUE
for the sender or the value it means, not INTERNAL), the processes and the SDK's messages."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.envelope import parse
from hub.envelope.xsdvalue import xsd_date, xsd_datetime, xsd_integer
from hub.errors import HubError
from hub.settings import PROJECT_ROOT
from hub.validation import SchemaRegistry

CN = dt.timezone(dt.timedelta(hours=8))
SAMPLE = PROJECT_ROOT / "schemas/services/document.official/1/samples/valid/typical-notice.xml"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("2026-12-06T24:00:00+08:00", dt.datetime(2026, 12, 7, tzinfo=CN)),
        ("2026-12-31T24:00:00Z", dt.datetime(2027, 1, 1, tzinfo=dt.UTC)),
        ("2026-12-06T24:00:00", dt.datetime(2026, 12, 7)),
        (" 2026-11-28T09:30:00+08:00 ", dt.datetime(2026, 11, 28, 9, 30, tzinfo=CN)),
        ("2026-11-28T09:30:00.1234567Z", dt.datetime(2026, 11, 28, 9, 30, 0, 123456, tzinfo=dt.UTC)),
        ("0001-01-02T00:00:00+14:00", dt.datetime(1, 1, 2, tzinfo=dt.timezone(dt.timedelta(hours=14)))),
    ],
)
def test_the_forms_python_can_hold(text: str, value: dt.datetime) -> None:
    assert xsd_datetime(text) == value


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("2026-12-06T24:00:01Z", "only as 24:00:00"),
        ("9999-12-31T24:00:00Z", "out of range"),
        ("0001-01-01T00:00:00+14:00", "outside 0001–9999 in UTC"),
        ("9999-12-31T23:59:59-14:00", "outside 0001–9999 in UTC"),
        ("-0044-03-15T12:00:00Z", "the year -0044"),
        ("12026-01-01T00:00:00Z", "the year 12026"),
        ("2026-02-29T00:00:00Z", "day is out of range"),
        ("yesterday", "not a date and time"),
    ],
)
def test_the_others_are_a_sentence(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        xsd_datetime(text)


def test_dates() -> None:
    assert xsd_date("2026-12-06") == xsd_date("2026-12-06+08:00") == xsd_date(" 2026-12-06Z ") == dt.date(2026, 12, 6)
    for bad, says in (("0000-01-01", "the year 0000"), ("-0001-01-01", "the year -0001"), ("2026-13-01", "month")):
        with pytest.raises(ValueError, match=re.escape(says)):
            xsd_date(bad)


@given(
    st.datetimes(min_value=dt.datetime(2, 1, 1), max_value=dt.datetime(9998, 12, 31)),
    st.integers(min_value=-14 * 60, max_value=14 * 60),
)
def test_every_instant_reads_back_as_written(t: dt.datetime, minutes: int) -> None:
    aware = t.replace(tzinfo=dt.timezone(dt.timedelta(minutes=minutes)))
    assert xsd_datetime(aware.isoformat()) == aware
    assert xsd_date(t.date().isoformat()) == t.date()


def _with_created(value: str) -> bytes:
    data = SAMPLE.read_bytes()
    return re.sub(rb"<env:Created>[^<]*</env:Created>", f"<env:Created>{value}</env:Created>".encode(), data, count=1)


def test_the_envelope_reads_24_00_and_refuses_what_it_cannot_hold_as_schema_value(registry: SchemaRegistry) -> None:
    env = registry.validate(parse(_with_created("2026-11-19T24:00:00+08:00")))
    assert env.created == dt.datetime(2026, 11, 20, tzinfo=CN)
    with pytest.raises(HubError) as info:  # was ValueError inside the examination: INTERNAL
        registry.validate(parse(_with_created("9999-12-31T23:59:59-14:00")))
    assert info.value.code == "SCHEMA_VALUE" and "Created" in info.value.detail


def test_the_processes_and_the_sdk_read_them(registry: SchemaRegistry) -> None:
    from adapters.sdk._message import _READ
    from hub.processes import approvals, documents, meetings

    assert documents._ts("2026-12-06T24:00:00+08:00") == dt.datetime(2026, 12, 7, tzinfo=CN)
    assert meetings._ts("2026-12-06T24:00:00+08:00") == approvals._ts("2026-12-06T24:00:00+08:00")
    assert approvals._date("2026-12-06") == dt.date(2026, 12, 6)
    assert _READ["date"]("2026-12-06+08:00") == dt.date(2026, 12, 6)
    assert _READ["datetime"](" 2026-12-06T24:00:00Z ") == dt.datetime(2026, 12, 7, tzinfo=dt.UTC)
    assert _READ["int"]("0" * 5000 + "42") == 42
    # the meetings process reads a booking's DurationMinutes and Start as the schema admits them
    sample = PROJECT_ROOT / "schemas/services/meeting.booking/1/samples/valid/fire-prevention-conference.xml"
    data = re.sub(
        rb"<([\w:]*)DurationMinutes>(\d+)<",
        lambda m: b"<%sDurationMinutes>%s%s<" % (m[1], b"0" * 5000, m[2]),
        sample.read_bytes(),
    )
    data = re.sub(rb"(<[\w:]*Start>[^T<]*T)\d\d:\d\d:\d\d", rb"\g<1>24:00:00", data)
    assert b"0" * 5000 in data and b"T24:00:00" in data
    booking = meetings.parse_booking(registry.validate(parse(data)).body)
    assert 0 < booking.minutes < 1000 and booking.start.time() == dt.time(0, 0)


def test_integers_with_any_number_of_leading_zeros() -> None:
    assert xsd_integer("0" * 5000 + "1") == 1  # int() refuses it: 5,001 digits
    assert (xsd_integer(" -0005 "), xsd_integer("+0"), xsd_integer("-0"), xsd_integer("12")) == (-5, 0, 0, 12)
    with pytest.raises(ValueError, match="an integer of 5000 digits"):
        xsd_integer("1" * 5000)


def test_a_service_version_with_leading_zeros_is_the_version_it_means(registry: SchemaRegistry) -> None:
    data = re.sub(rb'(<env:Service [^>]*version=")1"', rb"\g<1>" + b"0" * 5000 + b'1"', SAMPLE.read_bytes(), count=1)
    assert b"0" * 5000 in data
    assert registry.validate(parse(data)).version == 1  # was ValueError before the XSD: INTERNAL
    assert registry.violations(parse(data)) == []

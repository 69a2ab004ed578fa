"""The adapter SDK says in its log, at each start, when the system's own certificate expires within 30 days or has
expired (adapters/sdk/_trust.py ``warn_if_expiring``): with it the hub refuses what the system signs and the HTTPS
gateway its requests (403 ``CERT_EXPIRED``), so the agency's people hear of it before the exchange stops."""

from __future__ import annotations

import datetime as dt
import logging
from types import SimpleNamespace

import pytest

from adapters.sdk._trust import EXPIRY_WARNING_DAYS, warn_if_expiring

NOW = dt.datetime(2026, 12, 6, 8, 0, tzinfo=dt.UTC)
SYSTEM = "county-220282-oa"


def _cert(days: float) -> SimpleNamespace:
    return SimpleNamespace(not_valid_after_utc=NOW + dt.timedelta(days=days))


def test_a_certificate_expiring_soon_is_said_in_both_languages(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="adapters.sdk"):
        assert warn_if_expiring(SYSTEM, _cert(12.5), now=NOW) == 12
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    text = record.getMessage()
    assert SYSTEM in text and "expires on 2026-12-18 (in 12 days)" in text and "还剩 12 天" in text


def test_an_expired_certificate_is_an_error(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="adapters.sdk"):
        assert warn_if_expiring(SYSTEM, _cert(-3), now=NOW) is not None
    [record] = caplog.records
    assert record.levelno == logging.ERROR and "expired on 2026-12-03" in record.getMessage()
    assert "已于 2026-12-03 过期" in record.getMessage()


def test_a_certificate_with_time_left_is_not_mentioned(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="adapters.sdk"):
        assert warn_if_expiring(SYSTEM, _cert(EXPIRY_WARNING_DAYS + 1), now=NOW) is None
    assert caplog.records == []

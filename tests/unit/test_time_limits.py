"""The suite's own guard (tests/conftest.py ``_test_timeout``): every test runs under an alarm of
``HUB_TEST_TIMEOUT_S``, and a test marked ``time_limit`` under its own, longer one (the demo's test)."""

from __future__ import annotations

import signal

import pytest
from conftest import TEST_TIMEOUT_S


def _remaining() -> int:
    left = signal.alarm(0)  # reading the alarm clears it: set it again at once
    signal.alarm(left)
    return left


def test_a_test_runs_under_the_suites_limit() -> None:
    assert 0 < _remaining() <= TEST_TIMEOUT_S


@pytest.mark.time_limit(TEST_TIMEOUT_S + 600)
def test_a_marked_test_runs_under_its_own_longer_limit() -> None:
    assert TEST_TIMEOUT_S < _remaining() <= TEST_TIMEOUT_S + 600


@pytest.mark.time_limit(5)
def test_a_mark_never_shortens_the_limit() -> None:
    assert _remaining() > 5

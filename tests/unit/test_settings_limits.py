"""The hub's settings refuse, when they are made (``hub run`` and every command read them first), a value below which
the hub could not work, naming the variable and what the value would do: before, HUB_CRL_HOURS=0 started a hub whose
every verification failed closed on a stale CRL, and HUB_PREFETCH=0 let RabbitMQ hand a worker every queued message."""

from __future__ import annotations

import pytest

from hub.errors import ConfigError
from hub.settings import Settings


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("HUB_MAX_MESSAGE_BYTES", "0", "refused as too large"),
        ("HUB_MESSAGE_BUDGET_MS", "0", "over its CPU budget"),
        ("HUB_CLOCK_SKEW_S", "-1", "ahead of the hub's clock"),
        ("HUB_CRL_HOURS", "0", "verification fails closed"),
        ("HUB_WORKERS", "-2", "one worker per core"),
        ("HUB_PREFETCH", "0", "every queued message at once"),
    ],
)
def test_a_value_the_hub_cannot_work_with_is_refused_by_name(variable: str, value: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({variable: value})
    assert caught.value.code == "CONFIG"
    assert str(caught.value).startswith(f"{variable} must be at least") and says in str(caught.value)


def test_the_lowest_working_values_are_taken() -> None:
    s = Settings.from_env(
        {
            "HUB_MAX_MESSAGE_BYTES": "1",
            "HUB_MESSAGE_BUDGET_MS": "1",
            "HUB_CLOCK_SKEW_S": "0",
            "HUB_CRL_HOURS": "1",
            "HUB_WORKERS": "0",
            "HUB_PREFETCH": "1",
        }
    )
    assert (s.max_message_bytes, s.crl_hours, s.workers, s.prefetch) == (1, 1, 0, 1)
    assert Settings().message_budget_ms == 250  # the defaults pass


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("HUB_PREFETCH", "65536", "16 bits"),
        ("HUB_CLOCK_SKEW_S", "99999999999999", "far in the future"),
        ("HUB_CRL_HOURS", "99999999", "a year ahead"),
        ("HUB_POLL_GRACE_S", "99999999999", "thirty days"),
        ("HUB_MESSAGE_BUDGET_MS", "99999999999", "an hour"),
    ],
)
def test_a_value_past_what_the_hub_can_use_is_refused_by_name(variable: str, value: str, says: str) -> None:
    """Above these the hub started and then failed: HUB_PREFETCH=65536 broke every consumer's basic.qos (a 16-bit
    count) and HUB_CLOCK_SKEW_S=99999999999999 overflowed where the processor is made."""
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({variable: value})
    assert str(caught.value).startswith(f"{variable} must be at most") and says in str(caught.value)
    assert Settings.from_env({"HUB_PREFETCH": "65535"}).prefetch == 65535


def test_a_key_value_database_dsn_is_refused_by_name() -> None:
    """libpq's key=value form reached asyncpg's first connection ("invalid DSN: scheme is expected …"), and a backup
    would have passed its password to pg_dump on the command line; the settings now say what form they take."""
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"HUB_PG_DSN": "host=127.0.0.1 user=postgres password=secret dbname=hub"})
    assert str(caught.value).startswith("HUB_PG_DSN must be a URL") and "secret" not in str(caught.value)
    for good in ("postgresql://postgres@127.0.0.1:5432/hub", "postgres://u:p@db/hub?sslmode=require"):
        assert Settings.from_env({"HUB_PG_DSN": good}).pg_dsn == good

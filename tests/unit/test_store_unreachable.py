"""What an operator reads when PostgreSQL cannot be reached: where the hub looked, never the DSN's secrets."""

from __future__ import annotations

import socket

import pytest

from hub.errors import StoreUnavailable
from hub.store.db import connect, create_pool, where


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once it is closed


@pytest.mark.parametrize("open_", [connect, create_pool])
async def test_an_unreachable_database_is_named_without_its_password(open_) -> None:  # type: ignore[no-untyped-def]
    """It said only "cannot connect to PostgreSQL: ConnectionRefusedError": which server, which database?"""
    port = _closed_port()
    dsn = f"postgresql://hub:S3cret@127.0.0.1:{port}/hub_prod?password=S3cret2&sslmode=disable"
    with pytest.raises(StoreUnavailable) as caught:
        await open_(dsn)
    message = str(caught.value)
    assert f"127.0.0.1:{port}/hub_prod" in message and "HUB_PG_DSN" in message
    assert "S3cret" not in message and "hub:" not in message


def test_where_names_host_port_and_database_only() -> None:
    assert where("postgresql://u:p@db.example/hub?sslmode=require") == "db.example:5432/hub"
    assert where("postgres://127.0.0.1:6543/x") == "127.0.0.1:6543/x"

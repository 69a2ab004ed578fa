"""The provincial OA's part of ``make demo`` (and of its own integration test):

1. the simulated provincial OA pushes a notice (吉政发, with an attachment) to the group ``local-bureaus``; the OA's
   push is answered only after the hub's signed receipt; every city bureau's system is a recipient, and the hub's
   deliveries table shows it delivered to ``city-220100-oa`` (its queue is left for the operator);
2. 四平市林业局 (``city-220300-oa``) signs for it (``document.receipt`` 签收): the OA's callback gets it once.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from adapters.provincial_gov.simulator import ProvincialOA, notice, push, wait_for

SYSTEM = "gov-220000-oa"
GOV = "112200000135440012"
CITY = "city-220300-oa"  # not one of the demo scenario's fixed systems (its queue is ours to read)
CITY_AGENCY = "11220300013700183Y"
WATCHED = "city-220100-oa"
CST = timezone(timedelta(hours=8))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config_text(home: Path, oa: ProvincialOA, *, port: int, token: str, **extra: Any) -> str:
    values: dict[str, Any] = {
        "listen_host": "127.0.0.1",
        "listen_port": port,
        "token": token,
        "callback_url": oa.callback_url,
        "callback_token": oa.callback_token,
        "retry_initial": 0.1,
        "max_retry_delay": 1.0,
        "poll_interval": 0.1,
        "send_timeout": 30.0,
        **extra,
    }
    if "cert_file" not in values:
        values["allow_plain_http"] = True
    lines = [f'system = "{SYSTEM}"', f'home = "{home}"', "retry_limit = 100000", "", "[adapter]"]
    for key, value in values.items():
        if isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, str | Path):
            lines.append(f'{key} = "{value}"')
        else:
            lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


async def delivered_to(dsn: str, message_id: str, system: str) -> str | None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT state FROM deliveries WHERE message_id = $1 AND recipient_system = $2",
            uuid.UUID(message_id),
            system,
        )
    finally:
        await conn.close()
    return None if row is None else str(row["state"])


async def demo(hub: Any, work: Path, out: Callable[[str], None]) -> list[str]:
    from adapters.sdk import to
    from adapters.sdk.messages import DocumentReceiptV1
    from adapters.sdk.testing import AdapterProcess

    problems: list[str] = []
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    oa = ProvincialOA()
    await oa.start()
    proc: AdapterProcess | None = None
    try:
        home = await hub.enrol_home(SYSTEM)
        port, token = free_port(), uuid.uuid4().hex
        cfg = work / "provincial_gov.toml"
        cfg.write_text(config_text(home, oa, port=port, token=token), encoding="utf-8")
        city = await hub.client(CITY)
        proc = AdapterProcess("provincial_gov", cfg, env={}, log=work / "provincial_gov.log")
        await proc.start()
        url = f"http://127.0.0.1:{port}"
        doc_id = f"OA-DEMO-{uuid.uuid4().hex[:12]}"
        status, answer = await push(url, token, notice(doc_id))
        if status != 200 or answer.get("outcome") != "accepted":
            problems.append(f"provincial_gov: the OA's push was answered {status} {str(answer)[:200]}")
            return problems
        mid = answer["message_id"]
        cities = sorted({a for a, s, _ in answer["recipients"] if s.startswith("city-")})  # agencies, not systems
        # the deliveries table: delivered to city-220100-oa (not consumed here)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        state = None
        while loop.time() < deadline:
            state = await delivered_to(hub.settings.pg_dsn, mid, WATCHED)
            if state and state != "pending":
                break
            await asyncio.sleep(0.2)
        if len(cities) < 9 or state in (None, "pending", "failed", "blocked"):
            problems.append(
                f"provincial_gov: the notice reached {len(cities)} city bureaus; {WATCHED} delivery state {state}"
            )
        else:
            out(
                f"  ✔ 省政府公文系统推送的通知送达全部 {len(cities)} 个市（州）局 the provincial OA's notice reached "
                f"all {len(cities)} city bureaus ({WATCHED}: {state})"
            )
        # a city signs for it: the OA's callback gets the 签收 receipt once
        got = await wait_for_delivered(hub, CITY, mid)
        if got is None:
            problems.append(f"provincial_gov: {CITY} did not receive the notice within 60 s")
            return problems
        receipt = DocumentReceiptV1(
            document_message_id=mid,
            recipient_agency_code=CITY_AGENCY,
            status="received",
            at=datetime.now(CST).replace(microsecond=0),
            handler="四平市林业局办公室",
        )
        r = await city.send(receipt, to=to(GOV, SYSTEM), ref_to=mid)
        try:
            await wait_for(lambda: r.message_id in oa.received, 60, "the 签收 receipt at the OA's callback")
            out(
                "  ✔ 四平市林业局的签收回执已送达省政府公文系统回调地址 Siping's 签收 receipt reached the "
                "provincial OA's callback"
            )
        except TimeoutError as exc:
            problems.append(f"provincial_gov: not within 60 s: {exc}")
    except Exception as exc:
        problems.append(f"provincial_gov: {type(exc).__name__}: {str(exc)[:300]}")
    finally:
        if proc is not None:
            code = await proc.stop()
            if code != 0 and not problems:
                problems.append(f"provincial_gov: the adapter exited {code} on SIGTERM")
        await oa.stop()
    return problems


async def wait_for_delivered(hub: Any, system: str, mid: str, timeout: float = 60.0) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        for d in hub.delivered(system):
            if d.context.message_id == mid:
                return d
        await asyncio.sleep(0.05)
    return None

"""The county bureau's part of ``make demo`` (and of its own integration test):

敦化市林业局 (``county-222403-oa``, a ``hub.client``) raises a forest-fire alert (the schema's sample
``forest-fire.xml``) to 汪清县林业局 (``county-222424-oa``, this adapter): it reaches the duty desk's webhook once; the
desk's acknowledgement (its POST back to the adapter) goes to 敦化 as ``emergency.ack`` referring to the alert.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lxml import etree

from adapters.local_bureau.simulator import CountyBureau, wait_for

SYSTEM = "county-222424-oa"
AGENCY = "11222424014107528Y"
SENDER = "county-222403-oa"  # 敦化市林业局: not one of the demo scenario's fixed systems
SENDER_AGENCY = "11222403014102856B"
SAMPLE = Path(__file__).resolve().parents[2] / "schemas/services/emergency.alert/1/samples/valid/forest-fire.xml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config_text(home: Path, bureau: CountyBureau, *, port: int, token: str, desk_token: str, **extra: Any) -> str:
    values: dict[str, Any] = {
        "listen_host": "127.0.0.1",
        "listen_port": port,
        "token": token,
        "desk_token": desk_token,
        "inbox_url": bureau.inbox_url,
        "inbox_token": bureau.inbox_token,
        "desk_webhook_url": bureau.desk_url,
        "desk_webhook_token": bureau.desk_token,
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


def sample_alert(title: str | None = None) -> etree._Element:
    """The body (EmergencyAlert element) of the schema's forest-fire sample."""
    env = etree.parse(str(SAMPLE)).getroot()
    body = env.find("{urn:forestry-hub:envelope:1}Body")
    assert body is not None
    alert = body[0]
    if title is not None:
        t = alert.find("{urn:forestry-hub:emergency.alert:1}Title")
        assert t is not None
        t.text = title
    return alert


async def demo(hub: Any, work: Path, out: Callable[[str], None]) -> list[str]:
    from adapters.sdk import to
    from adapters.sdk.testing import AdapterProcess

    problems: list[str] = []
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    bureau = CountyBureau()
    await bureau.start()
    proc: AdapterProcess | None = None
    try:
        home = await hub.enrol_home(SYSTEM)
        port, token, desk_token = free_port(), uuid.uuid4().hex, uuid.uuid4().hex
        bureau.auto_ack, bureau.adapter_desk_token = f"http://127.0.0.1:{port}", desk_token
        cfg = work / "local_bureau.toml"
        cfg.write_text(config_text(home, bureau, port=port, token=token, desk_token=desk_token), encoding="utf-8")
        county = await hub.client(SENDER)
        proc = AdapterProcess("local_bureau", cfg, env={}, log=work / "local_bureau.log")
        await proc.start()
        r = await county.send(
            sample_alert(),
            service="emergency.alert",
            version=1,
            to=to(AGENCY, SYSTEM),
            urgency="特急",
            business_ref="SLHZ-222403-2026-0007",
        )
        if r.outcome != "accepted":
            problems.append(f"local_bureau: the hub answered the fire alert {r.outcome}")
            return problems
        try:
            await wait_for(lambda: r.message_id in bureau.desk, 60, "the fire alert at the duty desk's webhook")
        except TimeoutError as exc:
            problems.append(f"local_bureau: not within 60 s: {exc}")
            return problems
        alert = bureau.desk[r.message_id]
        out(
            f"  ✔ 敦化市林业局的森林火情预警送达汪清县林业局值班台 Dunhua's fire alert reached Wangqing's duty desk "
            f"webhook ({alert.get('incident_number')}, level {alert.get('level')})"
        )
        loop = asyncio.get_running_loop()
        deadline, ack = loop.time() + 60, None
        while ack is None and loop.time() < deadline:
            for d in hub.delivered(SENDER):
                if d.context.service == "emergency.ack" and d.context.ref_to == r.message_id:
                    ack = d
            await asyncio.sleep(0.05)
        if ack is None:
            problems.append(f"local_bureau: no emergency.ack reached {SENDER} within 60 s")
        elif bureau.desk_duplicates:
            problems.append(f"local_bureau: the desk got the alert {1 + bureau.desk_duplicates} times")
        else:
            out(
                "  ✔ 值班台签收后 emergency.ack 回到敦化市林业局 the desk's acknowledgement went back to Dunhua as "
                "emergency.ack"
            )
    except Exception as exc:
        problems.append(f"local_bureau: {type(exc).__name__}: {str(exc)[:300]}")
    finally:
        if proc is not None:
            code = await proc.stop()
            if code != 0 and not problems:
                problems.append(f"local_bureau: the adapter exited {code} on SIGTERM")
        await bureau.stop()
    return problems

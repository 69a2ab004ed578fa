"""What one message can cost, through the real hub (issue 17 acceptance): a burst of the costliest messages the
intake admits (``tests/hostile/costly.py``) on the normal lane, then a 特急 forest-fire alert on the emergency lane:
the alert reaches its recipient in under a second, and every hostile message is answered with its code.

``hub run --workers 1`` (a separate process, as in production; one worker, so nothing but the in-process priority
of the emergency lane can save the alert from waiting behind the burst), real RabbitMQ and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path

import pytest
from harness import Hub, document, hours, now

from hub.envelope import Envelope, Recipient, parse
from tests.hostile import costly

pytestmark = pytest.mark.integration

#: The costly messages a county system can send with its own key (the others come from the data system).
BURST = (
    "namespaces_nested",
    "elements_flat",
    "elements_in_body",
    "certificates",
    "character_references",
    "long_namespace_uri",
    "attributes_long_names",
    "markings",
)
COPIES = 16


def _decisions(log: Path) -> list[dict]:
    out = []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and "decision" in entry:
            out.append(entry)
    return out


class _Insider(costly.Kit):
    """The builders of ``costly`` with the harness's enrolled keys (no in-memory processor needed)."""


async def test_an_emergency_alert_overtakes_a_burst_of_the_costliest_messages(fresh_settings, tmp_path: Path) -> None:
    hub = Hub(fresh_settings)
    await hub.setup()
    proc = None
    try:
        kit = _Insider(None, hub.signers, hub.registry, None, fresh_settings.state_dir / "pki")  # type: ignore[arg-type]
        burst = [costly.CASES[name][1](kit, fresh_settings.max_message_bytes) for name in BURST] * COPIES
        proc = hub.run_hub(workers=1)
        # The worker is up when it answers a first message.
        warm = await hub.send("county-220122-oa", document("county-220122-oa", [Recipient.to("11220100013544550M")]))
        await hub.reply("county-220122-oa", warm.message_id, timeout=60)
        await hub.drain("city-220100-oa", expect=1, timeout=10)

        await hub.publish([(None, data) for data in burst], lane="normal")
        await asyncio.sleep(0.3)  # the worker is now deep in the burst (about 40 ms a message, several seconds)
        alert = hub.sign(
            "county-220122-oa",
            document(
                "county-220122-oa",
                [Recipient.to("11220000013544357T", "prov-220000-oa")],
                service="emergency.alert",
                urgency="特急",
                expires=now() + hours(2),
            ),
        )
        env = Envelope.from_tree(parse(alert))
        sent = time.monotonic()
        await hub.publish([(env, alert)], lane="emergency")
        got = await hub.drain("prov-220000-oa", expect=1, timeout=10)
        took = time.monotonic() - sent
        if not got:
            reply = await hub.reply("county-220122-oa", env.message_id, timeout=60)
            raise AssertionError(f"the alert was not delivered: {reply}")
        assert [e.message_id for _, e in got] == [env.message_id]
        assert took < 1.0, f"the alert took {took:.2f} s behind the burst"
        # Every message of the burst is decided in the end (refused with its code, or quarantined), and the hub's
        # decision lines show that the alert was decided while the burst was still being worked off.
        deadline = time.monotonic() + 180
        decisions: list[dict] = []
        while time.monotonic() < deadline:
            decisions = _decisions(hub.log_path)
            if sum(d.get("lane") == "normal" for d in decisions) >= len(burst) + 1:
                break
            await asyncio.sleep(0.5)
        normal = [i for i, d in enumerate(decisions) if d.get("lane") == "normal"]
        assert len(normal) == len(burst) + 1, f"{len(normal)} normal-lane decisions"
        at = next(i for i, d in enumerate(decisions) if d.get("message_id") == env.message_id)
        after = sum(i > at for i in normal)
        assert after > 0, "the burst was over before the alert arrived: the test proved nothing"
        codes = Counter(d.get("code") or d.get("decision") for d in decisions if d.get("lane") == "normal")
        # The warm-up; the markings message (its copies share one message id: the first is quarantined, the others
        # answered as duplicates); every other one refused with a specific code.
        assert (codes["accepted"], codes["quarantined"], codes["duplicate"]) == (1, 1, COPIES - 1), codes
        assert codes["INTERNAL"] == 0 and sum(codes.values()) == len(burst) + 1
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        await hub.close()

"""The national reporting adapter (``adapters/national_forestry``) in its own process (``hub adapter run``) against
the real RabbitMQ and hub, with the simulated national reporting system on the other side of its folders:

- the demo part returns no problems;
- SIGKILL mid-stream with 500 outbox files and 500 reports for the nation in flight, then a restart: every file
  is sent and delivered once, every report is in the inbox once;
- the share down for a while, then back: nothing lost, nothing twice;
- bad files (not XML, not the format, an unknown kind, a field too long, an unknown recipient, a route that does
  not allow it) go to ``failed/`` with a reason file and never reach anyone; temporary names are left alone.

The pure parts (file format, codes, ids, settings, atomic write, the inbox ledger, one pass through the in-memory
hub) are tested at the end, without services: one file, because ``tests/unit`` and ``tests/integration`` share
module basenames (no ``__init__.py``), so a second ``test_adapter_national_forestry.py`` would break collection.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from adapters.national_forestry import mapping as m
from adapters.national_forestry.demo import (
    CST,
    NATION,
    PROVINCE,
    PROVINCE_OA,
    SYSTEM,
    config_text,
    demo,
    report_up,
    statistics_file,
)
from adapters.national_forestry.folders import Folders, write_atomic
from adapters.national_forestry.mapping import message_id_for, statistics_report, submission_xml
from adapters.national_forestry.simulator import NationalSystem
from adapters.sdk import ConfigurationError, to
from adapters.sdk.testing import AdapterProcess, TestHub

integration = pytest.mark.integration

N = 500


async def until(predicate: Callable[[], Any], timeout: float, what: str, proc: AdapterProcess | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if got:
            return got
        if proc is not None and not proc.alive:
            raise AssertionError(f"the adapter exited while waiting for {what}: {proc.log.read_text()[-2000:]}")
        assert time.monotonic() < deadline, f"not within {timeout:g} s: {what}"
        await asyncio.sleep(0.02)


def _body(xml: str) -> Any:
    return etree.fromstring(xml.encode("utf-8"))


async def _setup(hub: TestHub, tmp_path: Path, **extra: Any) -> tuple[NationalSystem, AdapterProcess]:
    sim = NationalSystem(tmp_path / "share")
    home = await hub.enrol_home(SYSTEM)
    config = tmp_path / "settings.toml"
    config.write_text(config_text(home, sim, **extra), encoding="utf-8")
    return sim, AdapterProcess("national_forestry", config, env={}, log=tmp_path / "adapter.log")


def _ids(hub: TestHub) -> list[str]:
    return [d.context.message_id for d in hub.delivered(PROVINCE_OA) if d.context.sender.system == SYSTEM]


@integration
async def test_demo_part_has_no_problems(tmp_path: Path) -> None:
    async with TestHub(real=True) as hub:
        lines: list[str] = []
        assert await demo(hub, tmp_path, lines.append) == []
        assert len(lines) == 2 and all(line.lstrip().startswith("✔") for line in lines)
    # the files stay for the operator to look at: two sent with their receipts, one report in the inbox
    share = NationalSystem(tmp_path / "share")
    assert len(share.sent_files()) == 2 and [i.service for i in share.peek().values()] == ["info.report"]


@integration
async def test_sigkill_mid_stream_both_directions_every_message_exactly_once(tmp_path: Path) -> None:
    async with TestHub(real=True) as hub:
        sim, proc = await _setup(hub, tmp_path, send_concurrency=32)
        province = await hub.client(PROVINCE_OA)
        now = datetime.now(CST).replace(microsecond=0)
        files = {f"统计-{i:04d}.xml": statistics_file(now, i) for i in range(N)}
        expected_out = {message_id_for(SYSTEM, n, d) for n, d in files.items()}
        for name, data in files.items():
            sim.submit(name, data)
        sent_up: list[str] = []
        killed = False

        async def report(first: int, last: int, paced: bool = False) -> None:  # the province reports up meanwhile
            for batch, start in enumerate(range(first, last, 100)):
                # paced: after the first, each batch waits for the outbox to get ahead (a tenth per batch), so that the
                # inbound side cannot be done before the kill (once it imported all 500 while only 55 files had gone
                # out) and is still under way at it (the first batch goes at once: 200 reports wait from the start)
                while paced and not killed and len(sim.sent_files()) < batch * N // 10:
                    await asyncio.sleep(0.02)
                receipts = await asyncio.gather(
                    *(
                        province.send(_body(report_up(now, i)), service="info.report", version=1, to=to(NATION, SYSTEM))
                        for i in range(start, start + 100)
                    )
                )
                sent_up.extend(r.message_id for r in receipts if r.outcome == "accepted")

        await report(N - 100, N)  # some waiting before the adapter starts, the rest while it runs
        await proc.start()
        reporting = asyncio.create_task(report(0, N - 100, paced=True))
        try:
            # the national system imports its inbox all along, as it would
            def progress() -> int:
                sim.collect()
                return len(sim.sent_files()) + len(sim.imported)

            await until(
                lambda: progress() and len(sim.sent_files()) >= N // 10 and len(sim.imported) >= N // 10,
                60,
                "a tenth of each direction",
                proc,
            )
            proc.kill()
            killed = True
            at_kill = (len(sim.sent_files()), len(sim.imported))
            assert at_kill[0] < N and at_kill[1] < N, f"one side was done before the kill: {at_kill}"
            await reporting
            assert len(sent_up) == N
            await proc.start()
            await until(
                lambda: progress() >= 2 * N and not sim.waiting(), 90, "every file sent and every report imported", proc
            )
            await until(lambda: len(set(_ids(hub)) & expected_out) == N, 30, "every statistics file delivered")
            # anything handed over twice would show up now
            deadline = time.monotonic() + 0.5
            while time.monotonic() < deadline:
                sim.collect()
                await asyncio.sleep(0.05)
        finally:
            reporting.cancel()
            code = await proc.stop()
        assert code == 0  # SIGTERM: a graceful stop
        # outbox → hub → province: every file once
        assert set(sim.sent_files()) == set(files) and not sim.waiting() and not sim.failed_files()
        delivered = _ids(hub)
        assert set(delivered) == expected_out and len(delivered) == N
        outcomes = [sim.receipt_outcome(n) for n in files]
        assert set(outcomes) <= {"accepted", "duplicate"}
        # hub → nation's inbox: every report once (the contract's dedup by message id counts what came twice)
        assert set(sim.imported) == set(sent_up) and len(sim.imported) == N
        assert all(i.name == f"info.report_{i.message_id}.xml" for i in sim.imported.values())
        assert not [n for n in os.listdir(sim.inbox) if n.startswith(".")], "a temporary file was left behind"
        published = Counter(
            json.loads(line).get("message_id")
            for line in proc.log.read_text(encoding="utf-8").splitlines()
            if line.startswith("{") and '"msg": "sent info.report/1"' in line
        )
        resent = sum(1 for mid, n in published.items() if mid in expected_out and n > 1)
        print(
            f"\nkilled at sent={at_kill[0]} imported={at_kill[1]}; files published again after the restart "
            f"(one delivery each): {resent}; receipts saying duplicate: {outcomes.count('duplicate')}; "
            f"inbox files written again after the crash (the contract's dedup by message id): "
            f"{sum(sim.duplicates.values())}"
        )
        # the inbox ledger commits each file's id right after its rename: a kill can only fall between the two
        assert sum(sim.duplicates.values()) <= 1


@integration
async def test_share_down_for_a_while_then_back_nothing_lost(tmp_path: Path) -> None:
    async with TestHub(real=True) as hub:
        sim, proc = await _setup(hub, tmp_path, max_retry_delay=1.0)
        province = await hub.client(PROVINCE_OA)
        now = datetime.now(CST).replace(microsecond=0)
        await proc.start()
        try:
            sim.down()
            receipts = await asyncio.gather(
                *(
                    province.send(_body(report_up(now, i)), service="info.report", version=1, to=to(NATION, SYSTEM))
                    for i in range(40)
                )
            )
            files = {f"down-{i:02d}.xml": statistics_file(now, i) for i in range(20)}
            for name, data in files.items():
                sim.submit(name, data)  # the national system keeps them until its share is back
            log = proc.log

            def both_noticed() -> bool:
                text = log.read_text(encoding="utf-8")
                return "outbox unavailable" in text and "the inbox cannot be written" in text

            await until(both_noticed, 20, "the adapter noticed the share is down", proc)
            assert sim.imported == {}
            sim.up()
            await until(
                lambda: (sim.collect() or True) and len(sim.imported) == 40 and len(sim.sent_files()) == 20,
                30,
                "everything after the share came back",
                proc,
            )
            expected = {message_id_for(SYSTEM, n, d) for n, d in files.items()}
            await until(lambda: expected <= set(_ids(hub)), 20, "the files delivered")
        finally:
            assert await proc.stop() == 0
        assert set(sim.imported) == {r.message_id for r in receipts}
        assert sum(sim.duplicates.values()) == 0
        assert len(_ids(hub)) == 20 and not sim.failed_files()
        assert await hub.dead_letters() == []


def _long_title() -> str:
    body = statistics_report(
        title="统" * 501, paragraphs=["超长标题"], issue="林草统计〔2026〕99号", reported_at=datetime.now(CST)
    )
    return body


@integration
async def test_bad_files_fail_with_a_reason_and_nothing_leaves(tmp_path: Path) -> None:
    async with TestHub(real=True) as hub:
        # a share that is not there: the adapter refuses to start, with a clear message and a stable code
        missing = await _setup(hub, tmp_path / "missing", inbox=str(tmp_path / "not-mounted"))
        with pytest.raises(ConfigurationError, match=r"NF_CONFIG.*not-mounted.*不存在"):
            await missing[1].start()
        sim, proc = await _setup(hub, tmp_path, settle_seconds=0.3)
        await hub.client(PROVINCE_OA)  # records what reaches the province
        now = datetime.now(CST).replace(microsecond=0)
        stats = statistics_report(title="统计", paragraphs=["正文"], issue="林草统计〔2026〕1号", reported_at=now)
        county_oa = ("11222403014102856B", "county-222403-oa")
        bad = {
            "not-xml.xml": (b"\xef\xbb\xbf\xe7\xbb\x9f\xe8\xae\xa1,2026,7100\n", "NF_NOT_XML"),
            "truncated.xml": (statistics_file(now)[:300], "NF_NOT_XML"),
            "wrong-root.xml": (b"<Report><Title>x</Title></Report>", "NF_BAD_FORMAT"),
            "entity.xml": (
                b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "e">]><Submission/>',
                "NF_BAD_FORMAT",
            ),
            "no-recipient.xml": (submission_xml(stats), "NF_BAD_FORMAT"),
            "unknown-kind.xml": (
                submission_xml(
                    '<q:DataQuery xmlns:q="urn:forestry-hub:data.query:1"/>', to=((PROVINCE, "prov-220000-data"),)
                ),
                "NF_UNKNOWN_KIND",
            ),
            "title-too-long.xml": (submission_xml(_long_title(), to=((PROVINCE, PROVINCE_OA),)), "NF_SCHEMA"),
            "unknown-system.xml": (
                submission_xml(stats, to=((PROVINCE, "prov-220000-nosuch"),)),
                "NF_UNKNOWN_RECIPIENT",
            ),
            "skips-a-level.xml": (submission_xml(stats, to=(county_oa,)), "NF_NOT_ALLOWED"),
        }
        for name, (data, _) in bad.items():
            if name in ("not-xml.xml", "truncated.xml"):
                sim.write_raw(name, data)  # written in place: a writer that ignored the rename rule
            else:
                sim.submit(name, data)
        # temporary names the adapter must leave alone, and one good file
        (sim.outbox / ".statistics.xml.tmp").write_bytes(statistics_file(now)[:200])
        (sim.outbox / "half.xml.tmp").write_bytes(statistics_file(now)[:200])
        good = statistics_file(now)
        sim.submit("good.xml", good)
        await proc.start()
        try:
            await until(lambda: len(sim.failed_files()) == len(bad) and sim.sent_files(), 30, "every file judged", proc)
            await until(lambda: _ids(hub), 10, "the good file delivered")
        finally:
            assert await proc.stop() == 0
        failed = sim.failed_files()
        assert {n: f.get("code") for n, f in failed.items()} == {n: code for n, (_, code) in bad.items()}
        for name, fields in failed.items():
            assert fields["原因"] and fields["reason"] and fields["sha256"], name
            assert (sim.failed / name).read_bytes() == bad[name][0]  # kept as it was written
        assert failed["title-too-long.xml"]["detail_code"].startswith("SCHEMA_")
        assert failed["unknown-system.xml"]["detail_code"] == "ROUTE_UNKNOWN_RECIPIENT"
        assert failed["skips-a-level.xml"]["detail_code"] == "ROUTE_NOT_ALLOWED"
        assert sim.sent_files() == ["good.xml"]
        assert _ids(hub) == [message_id_for(SYSTEM, "good.xml", good)]  # nothing of the bad files reached anyone
        assert sorted(os.listdir(sim.outbox)) == [".statistics.xml.tmp", "failed", "half.xml.tmp", "sent"]


# ---------------------------------------------------------------------------------------------- pure parts (no services)


NOW = datetime(2026, 12, 4, 9, 30, tzinfo=CST)
STATS = m.statistics_report(title="2026年营造林统计", paragraphs=["截至11月底完成造林7100万亩。"], issue="林草统计〔2026〕12号",
                            reported_at=NOW)  # fmt: skip


def test_a_statistics_file_reads_as_an_info_report_to_the_province() -> None:
    sub = m.parse_submission(statistics_file(NOW), max_bytes=1 << 20)
    assert (sub.service, sub.version, sub.to, sub.urgency, sub.classification) == (
        "info.report",
        1,
        ((PROVINCE, PROVINCE_OA),),
        "平件",
        "公开",
    )
    assert etree.QName(sub.body).localname == "InfoReport" and sub.body.getparent() is None
    assert sub.title == "2026年全国营造林进度统计（截至11月30日）"


def test_header_fields_and_groups() -> None:
    doc = (
        '<d:OfficialDocument xmlns:d="urn:forestry-hub:document.official:1"><d:Kind>通知</d:Kind></d:OfficialDocument>'
    )
    data = m.submission_xml(
        doc, to=((PROVINCE, None),), groups=("city-bureaus",), urgency="加急", business_ref="林办发〔2026〕3号",
        reply_to="43adc5e3-a0d8-5b7c-9d64-9c696019909a",
    )  # fmt: skip
    sub = m.parse_submission(data, max_bytes=1 << 20)
    assert sub.service == "document.official" and sub.to == ((PROVINCE, None),) and sub.groups == ("city-bureaus",)
    assert (sub.urgency, sub.business_ref, sub.reply_to) == (
        "加急",
        "林办发〔2026〕3号",
        "43adc5e3-a0d8-5b7c-9d64-9c696019909a",
    )


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "NF_NOT_XML"),
        (b"statistics,2026\n", "NF_NOT_XML"),
        (b"<Submission xmlns='urn:forestry-hub:national-forestry:1'>", "NF_NOT_XML"),
        (b"<Other/>", "NF_BAD_FORMAT"),
        (b'<!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>', "NF_BAD_FORMAT"),
        (m.submission_xml(STATS), "NF_BAD_FORMAT"),  # no recipient
        (m.submission_xml(STATS, to=((PROVINCE, None),), urgency="很急"), "NF_BAD_FORMAT"),
        (m.submission_xml(STATS, to=((PROVINCE, None),), classification="秘密"), "NF_BAD_FORMAT"),
        (m.submission_xml(STATS, to=((PROVINCE, None),)).replace(b"</Body>", b"<x/></Body>"), "NF_BAD_FORMAT"),
        (m.submission_xml(STATS, to=((PROVINCE, None),)).replace(b"<Urgency>", b"<Note>x</Note><Urgency>"),
         "NF_BAD_FORMAT"),
        (m.submission_xml("<a:Alert xmlns:a='urn:forestry-hub:emergency.alert:1'/>", to=((PROVINCE, None),)),
         "NF_UNKNOWN_KIND"),
        (m.submission_xml("<a xmlns='urn:example:other'/>", to=((PROVINCE, None),)), "NF_UNKNOWN_KIND"),
        (m.submission_xml(STATS.replace("statistics", "work-progress"), to=((PROVINCE, None),)), "NF_UNKNOWN_KIND"),
    ],
)  # fmt: skip
def test_bad_files_are_refused_with_a_stable_code(data: bytes, code: str) -> None:
    with pytest.raises(m.FileRefused) as info:
        m.parse_submission(data, max_bytes=1 << 20)
    assert info.value.code == code and info.value.title == m.CODES[code] and info.value.reason


def test_too_large() -> None:
    with pytest.raises(m.FileRefused) as info:
        m.parse_submission(b"<x/>" * 1000, max_bytes=1024)
    assert info.value.code == "NF_TOO_LARGE"


def test_hub_refusals_map_to_folder_codes() -> None:
    assert m.hub_refusal("ROUTE_UNKNOWN_RECIPIENT", "收件机构或群组不存在", "x").code == "NF_UNKNOWN_RECIPIENT"
    assert m.hub_refusal("ROUTE_NOT_ALLOWED", "路由不允许", "y").code == "NF_NOT_ALLOWED"
    other = m.hub_refusal("RATE_LIMITED", "超过速率", "z")
    assert (other.code, other.detail_code) == ("NF_HUB_REFUSED", "RATE_LIMITED") and "超过速率" in other.title
    assert m.invalid("SCHEMA_VALUE", "Title too long").code == "NF_SCHEMA"


def test_reason_file_round_trips() -> None:
    r = m.hub_refusal("ROUTE_UNKNOWN_RECIPIENT", "收件机构或群组不存在", "no system prov-x")
    text = m.reason_text(r, file="a.xml", sha256="ab" * 32, message_id="mid", at=NOW)
    assert text.splitlines()[0] == "code: NF_UNKNOWN_RECIPIENT"
    fields = m.parse_reason(text)
    assert fields["原因"] == m.CODES["NF_UNKNOWN_RECIPIENT"] and fields["detail_code"] == "ROUTE_UNKNOWN_RECIPIENT"
    assert (fields["file"], fields["message_id"], fields["at"]) == ("a.xml", "mid", "2026-12-04T09:30:00+08:00")


def test_message_ids_follow_name_and_content() -> None:
    a = m.message_id_for(SYSTEM, "a.xml", b"1")
    assert a == m.message_id_for(SYSTEM, "a.xml", b"1")
    assert len({a, m.message_id_for(SYSTEM, "b.xml", b"1"), m.message_id_for(SYSTEM, "a.xml", b"2")}) == 3


def test_candidates_and_inbox_names() -> None:
    assert m.is_candidate("统计-01.xml")
    for name in (".x.xml", "x.xml.tmp", "x.tmp", "~x.xml", "x.part.xml", "x.tmp.xml", "x.txt"):
        assert not m.is_candidate(name), name
    mid = "43adc5e3-a0d8-5b7c-9d64-9c696019909a"
    assert m.inbox_name("info.report", mid) == f"info.report_{mid}.xml"
    odd = m.inbox_name("info.report", "../../etc/passwd")
    assert "/" not in odd and odd.startswith("info.report_")


def test_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="outbox"):
        Folders.from_extra({"inbox": str(tmp_path)})
    with pytest.raises(ConfigurationError, match="unknown"):
        Folders.from_extra({"outbox": "o", "inbox": "i", "outbx": "x"})
    with pytest.raises(ConfigurationError, match="poll_interval"):
        Folders.from_extra({"outbox": "o", "inbox": "i", "poll_interval": "soon"})
    f = Folders.from_extra({"outbox": str(tmp_path / "out"), "inbox": str(tmp_path / "in")})
    assert f.sent == tmp_path / "out" / "sent" and f.failed == tmp_path / "out" / "failed"
    with pytest.raises(ConfigurationError, match="不存在"):
        f.check()
    (tmp_path / "out").mkdir()
    (tmp_path / "in").mkdir()
    f.check()
    assert f.sent.is_dir() and f.failed.is_dir()


def test_write_atomic_replaces_and_never_makes_the_folder(tmp_path: Path) -> None:
    write_atomic(tmp_path, "a.xml", b"one")
    write_atomic(tmp_path, "a.xml", b"two")
    assert [p.name for p in tmp_path.iterdir()] == ["a.xml"] and (tmp_path / "a.xml").read_bytes() == b"two"
    with pytest.raises(FileNotFoundError):
        write_atomic(tmp_path / "gone", "a.xml", b"x")


def test_through_the_in_memory_hub(tmp_path: Path) -> None:
    """The adapter object itself (its start-up hook, watcher and inbox handler) on the in-memory hub: a statistics
    file reaches the province, a report for the nation lands in the inbox, an over-long field fails."""
    from adapters.national_forestry import adapter as nf
    from adapters.national_forestry.demo import NATION, report_up
    from adapters.national_forestry.simulator import NationalSystem
    from adapters.sdk import AdapterSettings, to
    from adapters.sdk.testing import TestHub

    async def run() -> None:
        sim = NationalSystem(tmp_path / "share")
        nf.adapter.settings = AdapterSettings(
            system=SYSTEM, home=tmp_path, extra={**sim.config(), "poll_interval": 0.02}
        )
        nf._state.clear()
        async with TestHub(nf.adapter, real=False) as hub:
            province = await hub.client(PROVINCE_OA)
            sim.submit("s.xml", statistics_file(NOW))
            long = m.statistics_report(title="长" * 501, paragraphs=["x"], issue="1", reported_at=NOW)
            sim.submit("long.xml", m.submission_xml(long, to=((PROVINCE, PROVINCE_OA),)))
            [got] = await hub.received(PROVINCE_OA, 1, timeout=10)
            assert got.context.message_id == m.message_id_for(SYSTEM, "s.xml", statistics_file(NOW))
            r = await province.send(
                etree.fromstring(report_up(NOW).encode()), service="info.report", version=1, to=to(NATION, SYSTEM)
            )
            await hub.wait_until(lambda: sim.collect() or r.message_id in sim.imported, 10, "the inbox file")
            await hub.wait_until(lambda: "long.xml" in sim.failed_files(), 10, "the failed file")
            assert sim.failed_files()["long.xml"]["code"] == "NF_SCHEMA"
            assert sim.sent_files() == ["s.xml"] and sim.receipt_outcome("s.xml") == "accepted"
        nf.adapter.settings = None
        nf._state.clear()

    asyncio.run(run())


def test_the_example_settings_load() -> None:
    from adapters.sdk import AdapterSettings

    path = Path(__file__).parents[2] / "adapters/national_forestry/settings.example.toml"
    s = AdapterSettings.from_file(path)
    f = Folders.from_extra(dict(s.extra))
    assert s.system == SYSTEM and s.retry_limit >= 10_000 and f.inbox.is_absolute()


def test_transient_hub_refusals_keep_the_file() -> None:
    for code in ("DELIVERY_STORE", "DELIVERY_BROKER", "CERT_REVOKED", "SIG_VALUE", "MSG_FUTURE", "INTERNAL"):
        assert m.hub_transient(code), code
    for code in (
        "ROUTE_UNKNOWN_RECIPIENT",
        "ROUTE_NOT_ALLOWED",
        "GATE_CLASSIFICATION",
        "SCHEMA_VALUE",
        "MSG_COST_EXCEEDED",
    ):
        assert not m.hub_transient(code), code


def test_the_inbox_ledger_keeps_a_redelivery_from_being_written_again(tmp_path: Path) -> None:
    from adapters.national_forestry.folders import InboxLedger, deliver_to_inbox

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    ledger = InboxLedger(tmp_path / "ledger.sqlite3")
    assert deliver_to_inbox(inbox, "a.xml", b"1", "mid-a", ledger)
    (inbox / "a.xml").unlink()  # the national system imported it
    assert not deliver_to_inbox(inbox, "a.xml", b"1", "mid-a", ledger)  # redelivered after a crash
    assert list(inbox.iterdir()) == []
    ledger.close()
    again = InboxLedger(tmp_path / "ledger.sqlite3")  # survives a restart
    assert again.written("mid-a") and not again.written("mid-b")
    again.close()


def test_the_demo_notice_is_a_statistics_notice_any_day_of_the_year() -> None:
    from adapters.national_forestry.demo import notice_file

    for day in (datetime(2027, 1, 5, tzinfo=CST), datetime(2026, 12, 31, tzinfo=CST)):
        sub = m.parse_submission(notice_file(day), max_bytes=1 << 20)
        assert sub.service == "document.official" and sub.urgency == "加急"
        assert sub.business_ref and "〔0" not in sub.business_ref and "〕0" not in sub.business_ref


async def test_a_late_hub_refusal_lands_in_the_inbox_and_late_receipts_do_not(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from adapters.national_forestry import adapter as nf
    from adapters.sdk import AdapterSettings, HubRefused

    sim = NationalSystem(tmp_path / "share")
    nf.adapter.settings = AdapterSettings(system=SYSTEM, home=tmp_path, extra=sim.config())
    nf._state.clear()
    try:
        mid = "5f0c6f1e-2b7a-4c1d-9e3f-0a1b2c3d4e5f"
        error = SimpleNamespace(data=b"<signed hub.error/>", envelope=SimpleNamespace(message_id=mid))
        refusal = HubRefused(code="GATE_REJECTED", title="隔离报文经审核驳回", reason="r", message_id="x", error=error)
        assert nf.adapter.on_answer is nf.late_answer
        await nf.late_answer(refusal)
        await nf.late_answer(refusal)  # the same answer again: written once
        assert [i.name for i in sim.collect()] == [f"hub.error_{mid}.xml"]
        await nf.late_answer(SimpleNamespace(outcome="accepted"))  # type: ignore[arg-type]  # a late receipt: ignored
        assert sim.collect() == []
    finally:
        nf.adapter.settings = None
        nf._state.clear()


async def test_a_late_hub_refusal_on_a_hanging_share_does_not_stop_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A share that hangs (a hard NFS mount, CIFS retrying for minutes) while a late refusal is written: the write
    waits in a thread and the event loop goes on (broker heartbeats, the other deliveries); the SDK acknowledges
    the answer once it is written."""
    import threading
    from types import SimpleNamespace

    from adapters.national_forestry import adapter as nf
    from adapters.sdk import AdapterSettings, HubRefused

    sim = NationalSystem(tmp_path / "share")
    nf.adapter.settings = AdapterSettings(system=SYSTEM, home=tmp_path, extra=sim.config())
    nf._state.clear()
    share_back = threading.Event()
    write = nf.deliver_to_inbox

    def hanging(*args: Any, **kwargs: Any) -> Any:
        assert share_back.wait(20), "the share never came back"
        return write(*args, **kwargs)

    monkeypatch.setattr(nf, "deliver_to_inbox", hanging)
    try:
        mid = "7b2e8a3f-4d9c-4e3f-9a51-2c3d4e5f6071"
        error = SimpleNamespace(data=b"<signed hub.error/>", envelope=SimpleNamespace(message_id=mid))
        refusal = HubRefused(code="GATE_REJECTED", title="隔离报文经审核驳回", reason="r", message_id="x", error=error)
        answering = asyncio.ensure_future(nf.late_answer(refusal))
        ticks = 0
        for _ in range(20):  # the loop runs on while the share hangs
            await asyncio.sleep(0.01)
            ticks += 1
        assert ticks == 20 and not answering.done()
        share_back.set()
        await asyncio.wait_for(answering, 20)
        assert [i.name for i in sim.collect()] == [f"hub.error_{mid}.xml"]
    finally:
        share_back.set()
        led = nf._state.get("ledger")
        if led is not None:
            led.close()
        nf.adapter.settings = None
        nf._state.clear()


async def test_a_late_hub_refusal_while_the_share_is_down_is_kept_and_written_when_it_is_back(tmp_path: Path) -> None:
    """The SDK acknowledges a hub.error whatever its hook does: a refusal the inbox cannot take at that moment is
    kept in the inbox ledger (across a restart) and written by a later pass, once."""
    from types import SimpleNamespace

    from adapters.national_forestry import adapter as nf
    from adapters.sdk import AdapterSettings, HubRefused

    sim = NationalSystem(tmp_path / "share")
    nf.adapter.settings = AdapterSettings(system=SYSTEM, home=tmp_path, extra=sim.config())
    nf._state.clear()
    try:
        mid = "6a1d7f2e-3c8b-4d2e-8f40-1b2c3d4e5f60"
        error = SimpleNamespace(data=b"<signed hub.error/>", envelope=SimpleNamespace(message_id=mid))
        refusal = HubRefused(code="GATE_REJECTED", title="隔离报文经审核驳回", reason="r", message_id="x", error=error)
        sim.down()
        await nf.late_answer(refusal)  # returns normally: the SDK acknowledges the hub.error now
        with pytest.raises(OSError):
            nf.flush_late_refusals()  # still down: kept
        nf._state.pop("ledger").close()  # the adapter restarts meanwhile
        sim.up()
        assert sim.collect() == []
        assert nf.flush_late_refusals() == 1
        assert [i.name for i in sim.collect()] == [f"hub.error_{mid}.xml"]
        assert nf.flush_late_refusals() == 0  # written once
        assert sim.collect() == []
    finally:
        led = nf._state.get("ledger")
        if led is not None:
            led.close()
        nf.adapter.settings = None
        nf._state.clear()


def test_an_oversized_outbox_file_fails_by_its_size_without_being_read(tmp_path: Path) -> None:
    """200 MiB (sparse) against a limit of 1 MiB: NF_TOO_LARGE, its sha256 in the reason file, never in memory."""
    import hashlib
    import tracemalloc

    from adapters.national_forestry.folders import OutboxWatcher
    from adapters.sdk import Adapter

    (tmp_path / "out").mkdir()
    (tmp_path / "in").mkdir()
    f = Folders.from_extra({"outbox": str(tmp_path / "out"), "inbox": str(tmp_path / "in"), "max_file_bytes": 1 << 20})
    f.check()
    with open(tmp_path / "out" / "huge.xml", "wb") as fh:
        fh.truncate(200 << 20)
    w = OutboxWatcher(Adapter(SYSTEM), f)
    tracemalloc.start()
    try:
        asyncio.run(w._take("huge.xml"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"peak {peak >> 20} MiB for a file refused as larger than 1 MiB"
    assert sorted(p.name for p in f.failed.iterdir()) == ["huge.xml", "huge.xml.reason.txt"]
    reason = (f.failed / "huge.xml.reason.txt").read_text(encoding="utf-8")
    zeros = hashlib.sha256()
    for _ in range(200):
        zeros.update(bytes(1 << 20))
    assert reason.startswith("code: NF_TOO_LARGE") and f"sha256: {zeros.hexdigest()}" in reason, reason


def test_the_hubs_notices_land_in_the_inbox(tmp_path: Path) -> None:
    """hub.notice (the emergencies process's forwards and resends, reminders) is written to the inbox, not only
    logged and acknowledged."""
    from types import SimpleNamespace

    from adapters.national_forestry import adapter as nf
    from adapters.sdk import AdapterSettings

    assert ("hub.notice", 1) in nf.adapter._handlers
    sim = NationalSystem(tmp_path / "share")
    nf.adapter.settings = AdapterSettings(system=SYSTEM, home=tmp_path, extra=sim.config())
    nf._state.clear()
    try:
        mid = "7b2e8f3a-4d9c-4e3f-9a51-2c3d4e5f6071"
        ctx = SimpleNamespace(service="hub.notice", message_id=mid, raw=b"<signed hub.notice/>", attempt=0)
        asyncio.run(nf.adapter._handlers[("hub.notice", 1)].fn(None, ctx))
        [got] = sim.collect()
        assert got.name == f"hub.notice_{mid}.xml"
    finally:
        led = nf._state.get("ledger")
        if led is not None:
            led.close()
        nf.adapter.settings = None
        nf._state.clear()


def test_a_reason_file_stays_one_line_per_field() -> None:
    r = m.refused("NF_NOT_XML", "line one\nline two")
    fields = m.parse_reason(m.reason_text(r, file="a\nb.xml", sha256="0", message_id=None, at=NOW))
    assert fields["reason"] == "line one line two" and fields["file"] == "a b.xml"


def test_the_route_info_statistics_down_reaches_the_province_only() -> None:
    from hub.directory import load_directory
    from hub.envelope import Envelope, Party, Recipient, build
    from hub.errors import NotAllowed
    from hub.routing import Router, load_routes, route_files
    from hub.settings import PROJECT_ROOT

    routes = PROJECT_ROOT / "routes"
    directory = load_directory(routes / "directory.xml")
    router = Router(directory, load_routes(route_files(routes), directory))

    def decide(to_: Recipient) -> list[tuple[str, str]]:
        body = etree.fromstring(STATS.encode("utf-8"))
        root = build(service="info.report", sender=Party(NATION, SYSTEM), recipients=[to_], body=body,
                     created=NOW, expires=NOW + timedelta(days=7))  # fmt: skip
        return [(t.system, t.route) for t in router.decide(Envelope.from_tree(root)).targets]

    assert decide(Recipient.to(PROVINCE, PROVINCE_OA)) == [(PROVINCE_OA, "info-statistics-down")]
    with pytest.raises(NotAllowed):  # not past the province: it forwards down itself
        decide(Recipient.to("11222403014102856B", "county-222403-oa"))


def test_the_same_name_sent_again_keeps_both_files_and_receipts(tmp_path: Path) -> None:
    from adapters.national_forestry.folders import OutboxWatcher, _Read

    sim = NationalSystem(tmp_path / "share")
    f = Folders.from_extra(sim.config())
    f.check()
    w = OutboxWatcher(None, f)  # type: ignore[arg-type]  # only its file moves here
    names = []
    for data in (b"<a/>", b"<a/>", b"<b/>"):
        write_atomic(sim.outbox, "s.xml", data)
        names.append(w._move(_Read("s.xml", data, (sim.outbox / "s.xml").stat()), f.sent, b"receipt", "receipt.xml"))
    h_a, h_b = m.content_hash(b"<a/>")[:12], m.content_hash(b"<b/>")[:12]
    assert names == ["s.xml", f"s.{h_a}.xml", f"s.{h_b}.xml"]
    assert sorted(sim.sent_files()) == sorted(names) and not sim.waiting()
    assert all((f.sent / f"{n}.receipt.xml").exists() for n in names)

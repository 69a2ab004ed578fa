"""The national reporting adapter's pure parts: the outbox file format, message ids, reason files, inbox names,
its settings, and the atomic write — plus one pass through the in-memory hub (the real pipeline, no broker)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from lxml import etree

from adapters.national_forestry import mapping as m
from adapters.national_forestry.demo import PROVINCE, PROVINCE_OA, SYSTEM, statistics_file
from adapters.national_forestry.folders import Folders, write_atomic
from adapters.sdk import ConfigurationError

CST = timezone(timedelta(hours=8))
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

"""The national reporting adapter's part of ``make demo`` (and of its own integration test):

1. 国家林草局 puts a statistics report (统计报表, info.report of category statistics) and a statistics notice
   (统计通知, document.official 通知) into its outbox folder; the adapter sends them and they reach the provincial
   department's OA (``prov-220000-oa``); the files move to ``sent/`` beside the hub's signed receipts;
2. the provincial department reports up (info.report) to the nation; the report lands in the nation's inbox
   folder as ``info.report_<message id>.xml``, the signed delivery as received.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from adapters.national_forestry.mapping import message_id_for, statistics_notice, statistics_report, submission_xml
from adapters.national_forestry.simulator import NationalSystem

SYSTEM = "nation-100000-oa"
NATION = "11100000000019136N"
PROVINCE = "11220000013544357T"
PROVINCE_OA = "prov-220000-oa"
CST = timezone(timedelta(hours=8))


def config_text(home: Path, sim: NationalSystem, **extra: Any) -> str:
    """The adapter's TOML for a test or the demo (folders of ``sim``; quick polling)."""
    values: dict[str, Any] = {**sim.config(), "poll_interval": 0.1, "settle_seconds": 1.0, **extra}
    lines = [
        f'system = "{SYSTEM}"',
        f'home = "{home}"',
        "retry_limit = 100000",
        "",
        "[adapter]",
    ]
    for key, value in values.items():
        lines.append(f'{key} = "{value}"' if isinstance(value, str | Path) else f"{key} = {value}")
    return "\n".join(lines) + "\n"


def report_up(now: datetime, n: int = 0) -> str:
    """An info.report the provincial department sends up to the nation."""
    return (
        '<i:InfoReport xmlns:i="urn:forestry-hub:info.report:1">'
        "<i:Category>work-progress</i:Category>"
        f"<i:IssueNumber>2026年第{31 + n}期</i:IssueNumber>"
        "<i:Title>吉林省扎实推进2026年冬季森林草原防火工作</i:Title>"
        "<i:Content><i:Paragraph>全省已落实冬季防火责任人1.3万名，设置检查站420处，"
        "重点林区实行24小时值守。</i:Paragraph></i:Content>"
        f"<i:ReportingUnit><i:Name>吉林省林业和草原局</i:Name><i:AgencyCode>{PROVINCE}</i:AgencyCode></i:ReportingUnit>"
        "<i:Contact><i:Name>刘洋</i:Name><i:Phone>0431-88626000</i:Phone></i:Contact>"
        f"<i:ReportedAt>{now.isoformat(timespec='seconds')}</i:ReportedAt>"
        "</i:InfoReport>"
    )


def statistics_file(now: datetime, n: int = 0) -> bytes:
    """A statistics report file (统计报表) from the nation to the provincial department's OA."""
    body = statistics_report(
        title="2026年全国营造林进度统计（截至11月30日）",
        paragraphs=[
            "截至11月30日，全国完成造林面积7100万亩，完成年度计划的98.6%；其中吉林省完成秋季造林86万亩。",
            f"请各省级林业和草原主管部门于12月10日前报送年度营造林统计年报。（批次 {n}）",
        ],
        issue=f"林草统计〔2026〕{12 + n}号",
        reported_at=now,
    )
    return submission_xml(body, to=((PROVINCE, PROVINCE_OA),), urgency="平件")


def notice_file(now: datetime) -> bytes:
    """A statistics notice (统计通知, document.official 通知) from the nation to the provincial department's OA."""
    number = f"林规发〔{now:%Y}〕{int(now.strftime('%m%d'))}号"  # 〔年〕序号：no leading zero
    body = statistics_notice(
        number=number,
        title="国家林业和草原局关于做好2026年度林草统计年报工作的通知",
        paragraphs=[
            "各省、自治区、直辖市林业和草原主管部门：",
            "请按《林草统计调查制度》做好2026年度统计年报，于2027年1月15日前经报送系统报送。",
        ],
        dated=now,
    )
    return submission_xml(body, to=((PROVINCE, PROVINCE_OA),), urgency="加急", business_ref=number)


async def _until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    import asyncio

    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if got:
            return got
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.05)


async def demo(hub: Any, work: Path, out: Callable[[str], None]) -> list[str]:
    from adapters.sdk import to
    from adapters.sdk.testing import AdapterProcess

    problems: list[str] = []
    work = Path(work)
    sim = NationalSystem(work / "share")
    home = await hub.enrol_home(SYSTEM)
    config = work / "settings.toml"
    config.write_text(config_text(home, sim), encoding="utf-8")
    province = await hub.client(PROVINCE_OA)
    proc = AdapterProcess("national_forestry", config, env={}, log=work / "adapter.log")
    try:
        await proc.start()
        now = datetime.now(CST).replace(microsecond=0)
        # 1. statistics files leave through the national outbox: a report (统计报表) and a notice (统计通知)
        stamp = f"{now:%Y%m%d%H%M%S}-{uuid.uuid4().hex[:6]}"  # a new file each run of the demo
        files = {f"林草统计报表-{stamp}.xml": statistics_file(now), f"林草统计通知-{stamp}.xml": notice_file(now)}
        ids = {message_id_for(SYSTEM, n, d): n for n, d in files.items()}
        for name, data in files.items():
            sim.submit(name, data)
        try:
            await _until(lambda: set(files) <= set(sim.sent_files()), 60, "both statistics files in sent/")
            got = await _until(
                lambda: (
                    (d := {x.context.message_id: x for x in hub.delivered(PROVINCE_OA) if x.context.message_id in ids})
                    and len(d) == len(ids)
                    and d
                ),
                60,
                "both statistics files at the provincial OA",
            )
            services = sorted(x.context.service for x in got.values())
            ok = services == ["document.official", "info.report"] and all(
                x.context.sender.system == SYSTEM for x in got.values()
            )
            if not ok:
                problems.append(f"national_forestry: the provincial OA received {services}, not the two files")
            outcomes = {n: sim.receipt_outcome(n) for n in files}
            if set(outcomes.values()) != {"accepted"}:
                problems.append(f"national_forestry: the hub's receipts for the statistics files say {outcomes}")
            if ok and set(outcomes.values()) == {"accepted"}:
                out(
                    "  ✔ 国家林草局发件目录中的统计报表和统计通知经枢纽送达省林草局办公系统，文件移入 sent/ 并附"
                    "枢纽签名回执 the national outbox's statistics report and notice reached the provincial OA; "
                    "moved to sent/ with the hub's receipts"
                )
        except TimeoutError as exc:
            problems.append(f"national_forestry: not within 60 s: {exc} (failed: {sim.failed_files()})")
        # 2. a report for the nation lands in its inbox folder
        receipt = await province.send(_element(report_up(now)), service="info.report", version=1, to=to(NATION, SYSTEM))
        try:
            found = await _until(lambda: sim.peek().get(receipt.message_id), 60, "the report in the inbox")
            item = found  # left in the inbox for the operator
            if item.name != f"info.report_{receipt.message_id}.xml" or b"<ds:Signature" not in item.data:
                problems.append(f"national_forestry: the inbox file is {item.name}, not the signed delivery")
            else:
                out(
                    "  ✔ 省林草局上报的信息经枢纽写入国家林草局收件目录（按报文标识命名，原子写入） "
                    "the province's report for the nation landed in its inbox folder (named by message id, atomic)"
                )
        except TimeoutError as exc:
            problems.append(f"national_forestry: not within 60 s: {exc}")
    except Exception as exc:
        problems.append(f"national_forestry: {type(exc).__name__}: {str(exc)[:300]}")
    finally:
        code = await proc.stop()
        if code != 0 and not problems:
            problems.append(f"national_forestry: the adapter exited {code} on SIGTERM")
    return problems


def _element(xml: str) -> Any:
    from lxml import etree

    return etree.fromstring(xml.encode("utf-8"))

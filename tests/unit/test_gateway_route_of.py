"""The gateway reads a submission's message id and lane with a bounded search instead of a parse
(``hub.gateway.app._route_of``): for every valid sample and every demo message it reads what the parsed envelope
says; for the hub's own canonical answers it reads the outcome or code the parsed answer gives."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.envelope import Envelope, parse
from hub.gateway.app import _answer_of, _route_of
from hub.gateway.mailbox import Answer
from hub.settings import PROJECT_ROOT
from hub.transport.names import lane_for, priority_for

MESSAGES = sorted(
    [
        *(PROJECT_ROOT / "schemas" / "services").glob("*/*/samples/valid/*.xml"),
        *(PROJECT_ROOT / "hub" / "demo_scenario").glob("*.xml"),
    ]
)


@pytest.mark.parametrize("path", MESSAGES, ids=lambda p: f"{p.parent.parent.parent.name}/{p.name}")
def test_the_search_reads_what_the_parse_reads(path: Path) -> None:
    data = path.read_bytes()
    env = Envelope.from_tree(parse(data))
    assert _route_of(data) == (
        env.message_id,
        lane_for(env.service, env.urgency),
        priority_for(env.urgency),
    )


def test_a_body_without_a_readable_id_gets_a_fresh_one_on_the_normal_lane() -> None:
    mid, lane, priority = _route_of(b"<env:Envelope><env:MessageId>not-a-uuid</env:MessageId>")
    assert mid != "not-a-uuid" and len(mid) == 36 and (lane, priority) == ("normal", 0)


def test_the_hub_answers_outcome_or_code_is_read_from_its_canonical_form(tmp_path: Path) -> None:
    """The answers the hub's own processor writes (what the gateway gets back) are read by the search, without the
    parse, and say what the parse says; an answer in another form (the samples, with prefixes) falls back to it."""
    from hub.errors import HubError
    from hub.gateway.app import _ERROR_CODE, _RECEIPT_OUTCOME
    from hub.pipeline.client import read_reply
    from tests.hostile import costly

    kit = costly.make_kit(tmp_path)
    env = Envelope.from_tree(parse(kit.typical()))
    p = kit.processor
    answers = [
        ("receipt", p.receipt_for(env, "ab" * 32, p.now(), [], o)[1]) for o in ("accepted", "duplicate", "quarantined")
    ]
    answers.append(("error", p.error(HubError("not allowed", code="ROUTE_NOT_ALLOWED"), env, env.sender, "ab" * 32)[1]))
    for kind, data in answers:
        assert (_RECEIPT_OUTCOME if kind == "receipt" else _ERROR_CODE).search(data) is not None  # no parse needed
        reply = read_reply(Envelope.from_tree(parse(data)))
        assert reply is not None
        assert _answer_of(Answer(kind, data, None), len(data) + 1) == (reply.kind, reply.outcome)
    samples = PROJECT_ROOT / "schemas" / "services"
    for sample in sorted(
        [*samples.glob("hub.receipt/1/samples/valid/*.xml"), *samples.glob("hub.error/1/samples/valid/*.xml")]
    ):
        data = sample.read_bytes()
        reply = read_reply(Envelope.from_tree(parse(data)))
        assert reply is not None and _answer_of(Answer(reply.kind, data, None), len(data) + 1) == (
            reply.kind,
            reply.outcome,
        )


def test_where_the_search_could_be_misled_the_hubs_parse_reads_the_id() -> None:
    """An id in CDATA, a comment longer than the search before the header, another id in a comment before it: each
    read as the hub's parse reads it (the gateway waits for the answer under that id)."""
    import uuid

    sample = PROJECT_ROOT / "schemas/services/document.official/1/samples/valid/typical-notice.xml"
    data = sample.read_bytes()
    env = Envelope.from_tree(parse(data))
    root_end = data.index(b">", data.index(b"Envelope")) + 1
    start = data.index(env.message_id.encode())
    variants = [
        data[:start] + b"<![CDATA[" + env.message_id.encode() + b"]]>" + data[start + 36 :],
        data[:root_end] + b"<!--" + b"x" * 5000 + b"-->" + data[root_end:],
        data[:root_end] + f"<!-- <env:MessageId>{uuid.uuid4()}</env:MessageId> -->".encode() + data[root_end:],
    ]
    for variant in variants:
        assert Envelope.from_tree(parse(variant)).message_id == env.message_id
        assert _route_of(variant) == (env.message_id, lane_for(env.service, env.urgency), priority_for(env.urgency))


async def test_a_large_body_the_search_cannot_read_is_parsed_off_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The hub's parse of a 4 MB body takes about 18 ms: in a thread, not on the loop every client's TLS runs on."""
    import threading

    import hub.gateway.app as app

    sample = PROJECT_ROOT / "schemas/services/document.official/1/samples/valid/typical-notice.xml"
    data = sample.read_bytes()
    env = Envelope.from_tree(parse(data))
    root_end = data.index(b">", data.index(b"Envelope")) + 1
    threads: list[int] = []
    real = app._route_by_parse

    def parsed(body: bytes) -> tuple[str, str, int] | None:
        threads.append(threading.get_ident())
        return real(body)

    monkeypatch.setattr(app, "_route_by_parse", parsed)
    small = data[:root_end] + b"<!-- a note -->" + data[root_end:]
    large = data[:root_end] + b"<!--" + b"x" * (4 * 1024 * 1024) + b"-->" + data[root_end:]
    assert (await app._route(data))[0] == env.message_id and threads == []  # the search alone
    assert (await app._route(small))[0] == env.message_id and threads == [threading.get_ident()]
    assert (await app._route(large))[0] == env.message_id and threads[-1] != threading.get_ident()

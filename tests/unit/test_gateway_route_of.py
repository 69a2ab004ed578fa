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
    assert _route_of(data, len(data) + 1) == (
        env.message_id,
        lane_for(env.service, env.urgency),
        priority_for(env.urgency),
    )


def test_a_body_without_a_readable_id_gets_a_fresh_one_on_the_normal_lane() -> None:
    mid, lane, priority = _route_of(b"<env:Envelope><env:MessageId>not-a-uuid</env:MessageId>", 1000)
    assert mid != "not-a-uuid" and len(mid) == 36 and (lane, priority) == ("normal", 0)


@pytest.mark.parametrize(
    "path",
    sorted((PROJECT_ROOT / "schemas" / "services").glob("hub.*/1/samples/valid/*.xml")),
    ids=lambda p: p.name,
)
def test_the_hub_answers_outcome_or_code_is_read_as_the_parse_reads_it(path: Path) -> None:
    from hub.pipeline.client import read_reply

    data = path.read_bytes()
    reply = read_reply(Envelope.from_tree(parse(data)))
    assert reply is not None
    assert _answer_of(Answer(reply.kind, data, None), len(data) + 1) == (reply.kind, reply.outcome)

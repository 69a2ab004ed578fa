"""The evidence chain's canonical hashing and its verifier: pure, no database."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import itertools
from datetime import UTC, datetime, timedelta, timezone

import pytest

from hub.store.evidence import (
    GENESIS,
    ChainRow,
    canonical_detail,
    chain,
    checkpoint_payload,
    entry_hash,
    format_at,
    verify_rows,
)
from hub.store.records import EvidenceEntry

AT = datetime(2025, 3, 1, 8, 30, 0, 123456, tzinfo=UTC)
MID = "6f9619ff-8b86-d011-b42d-00c04fc964ff"


def test_the_encoding_is_pinned():
    """Old chains must stay verifiable: this is the exact byte string hashed for one record."""
    detail = canonical_detail({"to": ["city-2201-oa"], "service": "document.official/1", "密级": 1})
    assert detail == '{"service":"document.official/1","to":["city-2201-oa"],"密级":1}'
    expected = (
        "forestry-hub/evidence/1\n"
        '[1,"2025-03-01T08:30:00.123456Z","received","6f9619ff-8b86-d011-b42d-00c04fc964ff",'
        '"11220000MB0000000X/prov-oa","{\\"service\\":\\"document.official/1\\",\\"to\\":[\\"city-2201-oa\\"],'
        '\\"密级\\":1}","' + "00" * 32 + '"]'
    )
    digest = entry_hash(1, AT, "received", MID.upper(), "11220000MB0000000X/prov-oa", detail, GENESIS)
    assert digest == hashlib.sha256(expected.encode("utf-8")).digest()
    assert digest.hex() == "38ceae56cd798a4c899b5e89c645b5d75cb339bf75eb59063698da5b77934b52"


def test_timestamps_are_utc_microseconds_and_must_be_aware():
    east8 = timezone(timedelta(hours=8))
    assert format_at(datetime(2025, 3, 1, 16, 30, 0, 123456, tzinfo=east8)) == "2025-03-01T08:30:00.123456Z"
    assert format_at(datetime(2025, 3, 1, 8, 30, tzinfo=UTC)) == "2025-03-01T08:30:00.000000Z"
    with pytest.raises(ValueError):
        format_at(datetime(2025, 3, 1, 8, 30))


def test_canonical_detail_is_order_independent_and_strict():
    assert canonical_detail({"b": 1, "a": [2, "x"]}) == canonical_detail({"a": [2, "x"], "b": 1})
    with pytest.raises(ValueError):
        canonical_detail({"x": float("nan")})


def test_every_field_changes_the_hash():
    base = (3, AT, "received", MID, "a/b", "{}", GENESIS)
    h = entry_hash(*base)
    variants = [
        (4, *base[1:]),
        (3, AT + timedelta(microseconds=1), *base[2:]),
        (3, AT, "rejected", *base[3:]),
        (3, AT, "received", None, *base[4:]),
        (3, AT, "received", MID, "a/c", "{}", GENESIS),
        (3, AT, "received", MID, "a/b", '{"x":1}', GENESIS),
        (3, AT, "received", MID, "a/b", "{}", b"\x01" * 32),
    ]
    assert len({h, *(entry_hash(*v) for v in variants)}) == len(variants) + 1


def _entries(n: int) -> list[EvidenceEntry]:
    return [EvidenceEntry("received", f"agency/sys-{i}", MID if i % 2 else None, {"i": i}) for i in range(n)]


def test_chain_links_each_record_to_the_previous_and_continues_from_a_head():
    rows = chain(_entries(5), head_seq=0, head_hash=GENESIS, at=AT)
    assert [r.seq for r in rows] == [1, 2, 3, 4, 5]
    assert rows[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(rows))
    assert all(r.computed_hash() == r.hash for r in rows)
    more = chain(_entries(2), head_seq=rows[-1].seq, head_hash=rows[-1].hash, at=AT)
    assert [r.seq for r in more] == [6, 7] and more[0].prev_hash == rows[-1].hash
    assert verify_rows([*rows, *more], head=(7, more[-1].hash)) == []


@pytest.fixture
def rows() -> list[ChainRow]:
    return chain(_entries(10), head_seq=0, head_hash=GENESIS, at=AT)


def _kinds(problems):
    return [(p.kind, p.seq) for p in problems]


def test_an_edited_record_is_altered(rows):
    rows[3] = dataclasses.replace(rows[3], detail='{"i":999}')
    assert _kinds(verify_rows(rows, head=(10, rows[-1].hash))) == [("altered", 4)]


def test_an_edit_with_a_recomputed_hash_is_caught_by_the_next_link(rows):
    forged = dataclasses.replace(rows[3], actor="someone/else")
    rows[3] = dataclasses.replace(forged, hash=forged.computed_hash())
    assert _kinds(verify_rows(rows)) == [("altered", 4)]


def test_a_removed_record_is_reported(rows):
    del rows[4]
    assert _kinds(verify_rows(rows, head=(10, rows[-1].hash))) == [("removed", 5)]
    assert "record 5 is missing" in str(verify_rows(rows)[0])


def test_removed_records_at_the_end_are_caught_by_the_head(rows):
    head = (10, rows[-1].hash)
    assert _kinds(verify_rows(rows[:8], head=head)) == [("removed", 9)]
    assert _kinds(verify_rows(rows, head=(10, b"\x02" * 32))) == [("head", None)]


def test_two_swapped_records_are_reordered(rows):
    a, b = rows[2], rows[6]
    rows[2] = dataclasses.replace(b, seq=3)
    rows[6] = dataclasses.replace(a, seq=7)
    assert _kinds(verify_rows(rows, head=(10, rows[-1].hash))) == [("reordered", 3), ("reordered", 7)]
    adjacent = chain(_entries(6), head_seq=0, head_hash=GENESIS, at=AT)
    adjacent[2], adjacent[3] = dataclasses.replace(adjacent[3], seq=3), dataclasses.replace(adjacent[2], seq=4)
    assert _kinds(verify_rows(adjacent)) == [("reordered", 3), ("reordered", 4)]


def test_an_intact_chain_with_checkpoints_verifies():
    rows = chain(_entries(3), head_seq=0, head_hash=GENESIS, at=AT)
    sig = b"signed:" + checkpoint_payload(3, rows[-1].hash)
    detail = {"covers": 3, "head": rows[-1].hash.hex(), "signer": "fp1", "signature": base64.b64encode(sig).decode()}
    rows += chain([EvidenceEntry("checkpoint", "hub", None, detail)], head_seq=3, head_hash=rows[-1].hash, at=AT)

    def good(payload: bytes, signature: bytes, signer: str) -> bool:
        return signer == "fp1" and signature == b"signed:" + payload

    def bad(payload: bytes, signature: bytes, signer: str) -> bool:
        return False

    def broken(payload: bytes, signature: bytes, signer: str) -> bool:
        raise RuntimeError("no such certificate")

    assert verify_rows(rows, verify_signature=good) == []
    assert verify_rows(rows) == []  # without a verifier: hashes and sealing still checked
    assert _kinds(verify_rows(rows, verify_signature=bad)) == [("checkpoint", 4)]
    assert _kinds(verify_rows(rows, verify_signature=broken)) == [("checkpoint", 4)]


def test_a_checkpoint_that_seals_something_else_is_reported():
    rows = chain(_entries(3), head_seq=0, head_hash=GENESIS, at=AT)
    detail = {"covers": 2, "head": rows[1].hash.hex(), "signer": "fp", "signature": ""}
    rows += chain([EvidenceEntry("checkpoint", "hub", None, detail)], head_seq=3, head_hash=rows[-1].hash, at=AT)
    assert _kinds(verify_rows(rows)) == [("checkpoint", 4)]


def test_payloads_name_seq_and_hash():
    assert checkpoint_payload(7, b"\xab" * 32) == b"forestry-hub/evidence-checkpoint/1\n7\n" + b"ab" * 32 + b"\n"

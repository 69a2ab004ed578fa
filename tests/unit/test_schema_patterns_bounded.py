"""Every pattern of the message schemas (the envelope and each service) has a bounded repetition: libxml2 runs a
pattern over the whole value even when ``maxLength`` has already failed, so an open-ended ``+`` over a 4 MB value
cost a worker 220 ms of CPU in the examination — before the signature check, so anyone who can publish could do it
(the attachment ``FileName``'s ``[^/\\:*?"<>|\\p{Cc}\\p{Cf}]+``; ``bench/hostile.py``'s ``long_file_name``). With
``{1,N}`` (N the type's ``maxLength``; the same language under that facet) the automaton stops at N+1 characters."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from lxml import etree

from hub.settings import PROJECT_ROOT

XS = "http://www.w3.org/2001/XMLSchema"
SCHEMAS = [
    *sorted((PROJECT_ROOT / "schemas" / "services").glob("*/*/schema.xsd")),
    PROJECT_ROOT / "schemas" / "envelope" / "1" / "envelope.xsd",
]
#: An open-ended repetition: ``+``, ``*`` or ``{n,}`` not escaped and not inside a character class.
_OPEN = re.compile(r"(?<!\\)(?:[+*]|\{\d+,\})")


def _open_ended(pattern: str) -> bool:
    outside = re.sub(r"\[(?:\\.|[^\]\\])*\]", "C", pattern)  # character classes as one symbol
    return _OPEN.search(outside.replace("\\+", "").replace("\\*", "")) is not None


@pytest.mark.parametrize("path", SCHEMAS, ids=lambda p: str(Path(p).relative_to(PROJECT_ROOT / "schemas")))
def test_every_pattern_repeats_a_bounded_number_of_times(path: Path) -> None:
    tree = etree.parse(str(path))
    open_ended = [
        f"{path.name}:{p.sourceline}: {p.get('value')}"
        for p in tree.iter(f"{{{XS}}}pattern")
        if _open_ended(p.get("value") or "")
    ]
    assert open_ended == []


def test_the_check_sees_an_open_ended_pattern() -> None:
    assert _open_ended(r'[^/\\:*?"<>|\p{Cc}\p{Cf}]+') and _open_ended(r"[a-z]+(\.[a-z]+){1,3}")
    assert _open_ended("[0-9]{2,}") and _open_ended("(ab)*")
    assert not _open_ended(r'[^/\\:*?"<>|\p{Cc}\p{Cf}]{1,200}') and not _open_ended(r"\+?[0-9][0-9\-]{1,30}")

"""Heavy hostile inputs, parsed one per child process so that each one's memory can be measured honestly.

lxml allocates in C, where ``tracemalloc`` cannot see it, so the figure that matters is the growth of the
process's peak resident set (VmHWM) over its resident set just before the parse. Each input is generated
inside the child without large temporaries (bytes repetition, a growing ``bytearray``), so generation does not
hide or inflate the parse's own peak.

Run as ``python tests/hostile/heavy.py CASE MAX_BYTES BYPASS``; prints one JSON line:
``{"code", "detail", "elapsed", "rss_extra", "py_peak"}``. ``BYPASS=1`` disables the byte gate, to show what
the hardened parser alone does with the same bytes.
"""

from __future__ import annotations

import json
import resource
import string
import sys
import time
import tracemalloc
from collections.abc import Callable

MiB = 1024 * 1024


def _lol() -> bytes:
    """Billion laughs: ten levels of ten references, 10^9 copies of "lol" if expanded."""
    decls = b'<!ENTITY lol0 "lol">' + b"".join(
        b'<!ENTITY lol%d "%s">' % (i, b"&lol%d;" % (i - 1) * 10) for i in range(1, 10)
    )
    return b'<?xml version="1.0"?><!DOCTYPE r [' + decls + b"]>"


def bomb_exponential() -> bytes:
    return _lol() + b"<r>&lol9;</r>"


def bomb_attribute() -> bytes:
    return _lol() + b'<r a="&lol9;"/>'


def bomb_quadratic() -> bytes:
    """One 100 KB entity referenced 30,000 times: 3 GB if expanded, from a 190 KB message."""
    return b'<!DOCTYPE r [<!ENTITY a "' + b"x" * 100_000 + b'">]><r>' + b"&a;" * 30_000 + b"</r>"


def bomb_recursive() -> bytes:
    return b'<!DOCTYPE r [<!ENTITY a "&b;"><!ENTITY b "&c;"><!ENTITY c "&a;">]><r>&a;</r>'


def bomb_parameter() -> bytes:
    """Parameter entities that expand to ever larger parameter entities inside the DTD."""
    decls = b'<!ENTITY % p0 "xxxxxxxxxx">' + b"".join(
        b'<!ENTITY %% p%d "%s">' % (i, b"%%p%d;" % (i - 1) * 10) for i in range(1, 10)
    )
    return b"<!DOCTYPE r [" + decls + b'<!ENTITY e "%p9;">]><r>&e;</r>'


def over_cap() -> bytes:
    """A well-formed message one byte over the default cap (4 MiB)."""
    size = 4 * MiB + 1
    head, tail = b"<r>", b"</r>"
    return head + b"x" * (size - len(head) - len(tail)) + tail


def text_10mb() -> bytes:
    return b"<r>" + b"x" * (10 * MiB + 1) + b"</r>"


def attribute_10mb() -> bytes:
    return b'<r a="' + b"x" * (10 * MiB + 1) + b'"/>'


def attributes_100k() -> bytes:
    out = bytearray(b"<r")
    for i in range(100_000):
        out += b' a%x=""' % i
    out += b"/>"
    return bytes(out)


def nested_30k() -> bytes:
    return b"<a>" * 30_000 + b"</a>" * 30_000


def unclosed_30k() -> bytes:
    return b"<a>" * 30_000


def elements_1m() -> bytes:
    """A million empty elements in 4 MiB (a 120 MB tree if parsed)."""
    return b"<r>" + b"<a/>" * ((4 * MiB - 7) // 4) + b"</r>"


def attribute_flood() -> bytes:
    """4 MiB of 52 one-letter attributes per element: 800,000 attributes (a 190 MB tree if parsed)."""
    chunk = b"<a " + b" ".join(b'%s=""' % c.encode() for c in string.ascii_letters) + b"/>"
    n = (4 * MiB - 7) // len(chunk)
    return b"<r>" + chunk * n + b"</r>"


def namespace_flood() -> bytes:
    out = bytearray(b"<r")
    while len(out) < 4 * MiB - 32:
        out += b' xmlns:p%x="u"' % len(out)
    out += b"/>"
    return bytes(out)


def name_11mb() -> bytes:
    return b"<" + b"a" * (11 * MiB) + b"/>"


CASES: dict[str, Callable[[], bytes]] = {
    f.__name__.replace("_", "-"): f
    for f in (
        bomb_exponential,
        bomb_attribute,
        bomb_quadratic,
        bomb_recursive,
        bomb_parameter,
        over_cap,
        text_10mb,
        attribute_10mb,
        attributes_100k,
        nested_30k,
        unclosed_30k,
        elements_1m,
        attribute_flood,
        namespace_flood,
        name_11mb,
    )
}


def _hwm() -> int:
    """This process's peak resident set (VmHWM). Not ``ru_maxrss``: on Linux that also counts the resident set of
    the process that forked this one before it exec'ed (the whole pytest process, late in a full run)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def main(argv: list[str]) -> None:
    case, max_bytes, bypass = argv[0], int(argv[1]), argv[2] == "1"
    from hub.envelope import intake
    from hub.errors import UnsafeXml

    data = CASES[case]()
    if bypass:
        intake._byte_gate = lambda *args: (False, -1)  # type: ignore[assignment]
    before = _rss()
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        intake.parse(data, max_bytes=max_bytes)
        code, detail = "ACCEPTED", ""
    except UnsafeXml as exc:
        code, detail = exc.code, exc.detail
    elapsed = time.perf_counter() - t0
    py_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    peak = _hwm()
    print(
        json.dumps(
            {
                "code": code,
                "detail": detail,
                "elapsed": elapsed,
                "rss_extra": peak - before,
                "py_peak": py_peak,
                "size": len(data),
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1:])

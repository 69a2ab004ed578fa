"""Intake benchmark: the hub's full intake beside a bare ``lxml.etree.fromstring`` on the same bytes.

The hub is measured as it runs on the message path: ``hub.envelope.parse`` (byte gate, one hardened parse,
tree checks) plus ``SchemaRegistry.validate`` (XSD of envelope and body, the ``Envelope`` model, agency-code
check characters). The baseline is ``lxml.etree.fromstring(data)`` with lxml's default parser. Both run
interleaved, several rounds; the figures are medians of the per-round means, in CPU time of this process
(``time.process_time``), so messages/s are per core. On an idle machine CPU time equals wall time; on a shared
one it is the steadier of the two. The breakdown times each piece alone on an already parsed tree; "rest" is
the full figure minus the pieces (the Service lookup, freeing the tree, and cache effects of running them
one after the other).

Documents:

* about 2 KB: the ``document.official`` sample ``typical-notice.xml`` (a typical small message), or, without
  that schema, the ``document.receipt`` sample with a Chinese ``Feedback`` text;
* about 1 MB: a ``document.official`` envelope with a ~1 MB base64 attachment when that schema exists,
  otherwise the ``document.receipt`` sample padded with white space between header elements (legal: the
  envelope's element-only content ignores it). The output says which one ran.

The last line is the figure the issue asks for, for the 2 KB document::

    intake_ratio=<hub time per message / bare time per message> hub_per_s=<n> bare_per_s=<n>

Usage: ``python bench/intake.py [--rounds N] [--quick]``.
"""

from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from lxml import etree

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hub.envelope import intake, parse  # noqa: E402
from hub.envelope.model import Envelope  # noqa: E402
from hub.validation import SchemaRegistry  # noqa: E402
from hub.validation import registry as registry_module  # noqa: E402

XS = "{http://www.w3.org/2001/XMLSchema}"


def typical_2k(registry: SchemaRegistry) -> tuple[bytes, str]:
    """The document.official sample named typical (about 2 KB), else a receipt padded with Feedback text."""
    versions = registry.services.get("document.official")
    if versions:
        svc = versions[max(versions)]
        for sample in svc.samples("valid"):
            if sample.stem.startswith("typical"):
                data = sample.read_bytes()
                registry.validate(parse(data))
                return data, f"document.official/{svc.version} sample {sample.name}"
    return receipt_2k(registry)


def receipt_2k(registry: SchemaRegistry, target: int = 2048) -> tuple[bytes, str]:
    """The document.receipt sample without Feedback, given a Chinese Feedback text up to ``target`` bytes."""
    svc = registry.service("document.receipt", 1)
    sample = next(p.read_bytes() for p in svc.samples("valid") if b"Feedback" not in p.read_bytes())
    closing = sample.index(b"</r:DocumentReceipt>")
    sentence = "林业有害生物防治工作已按要求完成，请审阅。"
    text = ""
    while len(sample) + len(b"  <r:Feedback></r:Feedback>\n    ") + len(text.encode()) < target:
        text += sentence[len(text) % len(sentence)]
    feedback = f"  <r:Feedback>{text}</r:Feedback>\n    ".encode()
    data = sample[:closing] + feedback + sample[closing:]
    registry.validate(parse(data))
    return data, f"document.receipt/1 sample + {len(text)}-character Feedback"


def _base64_elements(schema_path: Path) -> set[str]:
    """Local names of elements the service XSD declares as xs:base64Binary (directly or by restriction)."""
    tree = parse(schema_path.read_bytes()).getroottree()
    b64_types = {"base64Binary"}
    for st in tree.iter(f"{XS}simpleType"):
        r = st.find(f"{XS}restriction")
        if st.get("name") and r is not None and (r.get("base") or "").split(":")[-1] == "base64Binary":
            b64_types.add(st.get("name") or "")
    names = set()
    for el in tree.iter(f"{XS}element"):
        t = (el.get("type") or "").split(":")[-1]
        inline = el.find(f"{XS}simpleType/{XS}restriction")
        if t in b64_types or (inline is not None and (inline.get("base") or "").split(":")[-1] in b64_types):
            if el.get("name"):
                names.add(el.get("name") or "")
    return names


def official_1m(registry: SchemaRegistry, size: int = 1_000_000) -> tuple[bytes, str] | None:
    """A document.official envelope whose (first) attachment carries ``size`` bytes of base64, if possible."""
    versions = registry.services.get("document.official")
    if not versions:
        return None
    svc = versions[max(versions)]
    b64_names = _base64_elements(svc.path)
    raw = os.urandom(size * 3 // 4)
    content = base64.b64encode(raw).decode()
    for sample in svc.samples("valid"):
        root = parse(sample.read_bytes())
        root = copy.deepcopy(root)
        target = next((el for el in root.iter() if etree.QName(el).localname in b64_names), None)
        if target is None:
            continue
        target.text = content
        # Keep declared size and digest consistent if the attachment carries them as siblings or attributes.
        holder = target.getparent()
        for el in holder.iter() if holder is not None else ():
            local = etree.QName(el).localname.lower()
            if local in ("size", "length", "bytes") and (el.text or "").strip().isdigit():
                el.text = str(len(raw))
            elif "sha256" in local or local in ("digest", "hash"):
                el.text = hashlib.sha256(raw).hexdigest()
        for el in [holder, target] if holder is not None else [target]:
            for name in list(el.attrib):
                low = name.lower()
                if low in ("size", "length", "bytes") and el.get(name, "").isdigit():
                    el.set(name, str(len(raw)))
                elif "sha256" in low or low in ("digest", "hash"):
                    el.set(name, hashlib.sha256(raw).hexdigest())
        data = etree.tostring(root, encoding="UTF-8", xml_declaration=True)
        try:
            registry.validate(parse(data))
        except Exception as exc:
            print(f"# document.official 1 MB candidate from {sample.name} does not validate: {exc}", file=sys.stderr)
            continue
        return (
            data,
            f"document.official/{svc.version} sample {sample.name} with a {len(content)}-byte base64 attachment",
        )
    return None


def receipt_padded_1m(registry: SchemaRegistry, size: int = 1_000_000) -> tuple[bytes, str]:
    data, _ = receipt_2k(registry)
    pad = b"\n" + b" " * 1022 + b"\n"
    anchor = b"<env:Urgency>"
    n = max(0, (size - len(data)) // len(pad))
    data = data.replace(anchor, pad * n + anchor, 1)
    registry.validate(parse(data))
    return data, "fallback: document.receipt/1 sample padded with white space (no document.official schema yet)"


def per_message(fn: Callable[[], object], n: int) -> float:
    """CPU seconds per call (process time: other helpers sharing the cores do not inflate it as much)."""
    t0 = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - t0) / n


def measure(pairs: dict[str, Callable[[], object]], n: int, rounds: int) -> dict[str, list[float]]:
    """Per-message time of each function in every round; the functions run interleaved, in rotating order."""
    samples: dict[str, list[float]] = {k: [] for k in pairs}
    for fn in pairs.values():  # warm-up
        per_message(fn, max(1, n // 10))
    names = list(pairs)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:  # rotate: no function always goes first
            samples[name].append(per_message(pairs[name], n))
    return samples


def fmt_us(seconds: float) -> str:
    return f"{seconds * 1e6:9.1f} µs"


def run(label: str, data: bytes, registry: SchemaRegistry, n: int, rounds: int) -> tuple[float, float]:
    """Bare vs hub (medians), then the hub's path in cumulative stages, each on a freshly parsed tree."""
    env = registry.validate(parse(data))
    svc = registry.service(env.service, env.version)
    schema, from_tree, agency = svc.schema, Envelope.from_tree, registry_module._agency_codes_valid
    p = intake.parser()

    def gate() -> None:
        intake._byte_gate(data, intake.DEFAULT_MAX_BYTES, intake.MAX_MARKUP, intake.MAX_ATTRIBUTES)

    def stage_xsd() -> None:
        schema.validate(parse(data))

    def stage_model() -> None:
        root = parse(data)
        schema.validate(root)
        from_tree(root)

    def stage_agency() -> None:
        root = parse(data)
        schema.validate(root)
        agency(from_tree(root), svc)

    samples = measure(
        {
            "bare": lambda: etree.fromstring(data),
            "hub": lambda: registry.validate(parse(data)),
            "gate": gate,
            "hardened": lambda: etree.fromstring(data, p),
            "parse": lambda: parse(data),
            "xsd": stage_xsd,
            "model": stage_model,
            "agency": stage_agency,
        },
        n,
        rounds,
    )
    median = {k: statistics.median(v) for k, v in samples.items()}
    best = {k: min(v) for k, v in samples.items()}  # least-disturbed rounds: steadier differences between stages
    bare, hub = median["bare"], median["hub"]
    print(f"\n== {label}: {len(data)} bytes, {n} messages x {rounds} rounds (medians, CPU time)")
    print(f"   bare lxml.etree.fromstring          {fmt_us(bare)}  {1 / bare:10.0f} msg/s")
    print(f"   hub parse + validate                {fmt_us(hub)}  {1 / hub:10.0f} msg/s   ratio {hub / bare:.2f}")
    b = best["bare"]
    print(
        f"   breakdown from the best rounds (hub {fmt_us(best['hub']).strip()}, bare {fmt_us(b).strip()}, "
        f"ratio {best['hub'] / b:.2f}); stages on freshly parsed trees:"
    )
    pieces = [
        ("byte gate", best["gate"]),
        ("hardened parse", best["hardened"]),
        ("tree checks (DOCTYPE), call overhead", best["parse"] - best["gate"] - best["hardened"]),
        ("XSD validation (service schema)", best["xsd"] - best["parse"]),
        ("model (Envelope.from_tree)", best["model"] - best["xsd"]),
        ("agency-code check characters", best["agency"] - best["model"]),
        ("registry glue (Service lookup, body check)", best["hub"] - best["agency"]),
    ]
    for name, t in pieces:
        print(f"     {name:42} {fmt_us(t)}  {t / best['hub'] * 100:5.1f} %  {t / b:5.2f} x bare")
    validate = best["hub"] - best["parse"]
    print(f"     {'= hub.envelope.parse':42} {fmt_us(best['parse'])}  {best['parse'] / b:15.2f} x bare")
    print(f"     {'= SchemaRegistry.validate':42} {fmt_us(validate)}  {validate / b:15.2f} x bare")
    return hub, bare


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--quick", action="store_true", help="fewer messages per round (a smoke run)")
    args = ap.parse_args()
    registry = SchemaRegistry(ROOT / "schemas")
    small, small_desc = typical_2k(registry)
    big_pair = official_1m(registry) or receipt_padded_1m(registry)
    big, big_desc = big_pair
    print(
        f"lxml {'.'.join(map(str, etree.LXML_VERSION))}, libxml2 {'.'.join(map(str, etree.LIBXML_VERSION))}, "
        f"Python {sys.version.split()[0]}"
    )
    print(f"2 KB document: {small_desc}")
    print(f"1 MB document: {big_desc}")
    hub_small, bare_small = run("2 KB", small, registry, 100 if args.quick else 1000, args.rounds)
    run("1 MB", big, registry, 2 if args.quick else 10, args.rounds)
    print()
    print(f"intake_ratio={hub_small / bare_small:.2f} hub_per_s={1 / hub_small:.0f} bare_per_s={1 / bare_small:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The costliest messages the hub's cost model admits, one per dimension, and a ``Processor`` built in memory to
examine them (a throw-away CA in a temporary directory, the demo directory and routes; no broker, no database).

Each builder fills its dimension up to the bound the intake enforces (``hub.envelope.intake``: size, markup items,
attributes, namespace declarations) and stays just under it, so that the message is the worst the hub must still
*process* rather than one the byte gate refuses for free. Some are signed by a real system (an insider with its
own key: the message must go all the way through the gate), the others carry a genuine signature with hostile
content added where the XSD admits foreign elements (``ds:KeyInfo`` takes ``##other`` content, processed lax) or
where it does not (the Body), so they cost parse and validation and are refused later.

Used by ``bench/hostile.py`` (times ``Processor.examine`` on each) and by the tests (the same messages through the
real hub, then an emergency alert).
"""

from __future__ import annotations

import copy
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import NamedTuple

from lxml import etree

from hub.directory import Directory, load_directory
from hub.envelope import Party, Recipient, build, intake, parse, to_bytes
from hub.pipeline.context import Context
from hub.pipeline.processor import Processor
from hub.pipeline.worker import Worker
from hub.routing import Router, gate, load_routes, route_files
from hub.settings import PROJECT_ROOT, Settings
from hub.store.memory import MemoryStore
from hub.transport.memory import MemoryBroker, MemoryTransport
from hub.transport.names import Names
from hub.trust import Signer, TrustStore, Verifier, keys, pki
from hub.validation import SchemaRegistry

PASSPHRASE = "costly-pass"
SAMPLES = PROJECT_ROOT / "schemas" / "services"
SENDER = ("county-220122-oa", "11220122013550216R")  # 农安县林业局 OA
RECIPIENT = ("city-220100-oa", "11220100013544550M")  # 长春市林业局 OA
DATA_SENDER = ("prov-220000-data", "11220000013544357T")  # the province's shared-database system
MAX_BYTES = intake.DEFAULT_MAX_BYTES
#: Room left under each bound for the envelope itself (its own tags, attributes, declarations and signature).
_HEADROOM_MARKUP = 200
_HEADROOM_ATTRS = 64
_HEADROOM_BYTES = 16 * 1024


@dataclass
class Kit:
    """An in-memory hub (its ``Processor``) and the signing keys of the systems the messages come from."""

    processor: Processor
    signers: dict[str, Signer]
    registry: SchemaRegistry
    directory: Directory
    pki_dir: Path

    def envelope(
        self,
        *,
        service: str = "document.official",
        sender: tuple[str, str] = SENDER,
        body: etree._Element | None = None,
        urgency: str = "平件",
        to: tuple[str, str] = RECIPIENT,
        ttl: timedelta = timedelta(days=1),
    ) -> etree._Element:
        body = body if body is not None else sample_body(service)
        if service == "document.official":
            ns = etree.QName(body).namespace
            for el in body.iter(f"{{{ns}}}Urgency"):
                el.text = urgency
        return build(
            service=service,
            sender=Party(sender[1], sender[0]),
            recipients=[Recipient.to(to[1], to[0])],
            body=body,
            urgency=urgency,
            ttl=ttl,
        )

    def signed(self, root: etree._Element, system: str = SENDER[0]) -> bytes:
        self.signers[system].sign(root)
        return to_bytes(root)

    def typical(self) -> bytes:
        """The typical 2 KB notice (document.official sample ``typical-notice.xml``), signed."""
        return self.signed(self.envelope())

    def memory_worker(self, prefix: str, transport: type[MemoryTransport] = MemoryTransport) -> MemoryHub:
        """``hub run``'s worker with this kit's processor on the in-memory twins (``transport`` — a subclass where
        the caller settles what it hands the worker itself — and ``MemoryStore``), in a namespace of its own named
        ``<prefix>-<random>``; not started."""
        settings = Settings.from_env(namespace=f"{prefix}-{uuid.uuid4().hex[:6]}", state_dir=self.pki_dir.parent)
        p = self.processor
        context = Context(settings, self.registry, self.directory, p.router, p.verifier.store, p.verifier, p.signer)
        names, broker, store = Names(settings.namespace), MemoryBroker(), MemoryStore()
        worker = Worker(
            settings,
            0,
            context=context,
            transport=transport(names, broker),
            urgent_transport=transport(names, broker),
            store=store,
        )
        return MemoryHub(worker, names, broker, store)


class MemoryHub(NamedTuple):
    """What ``Kit.memory_worker`` made: the worker, its names, the broker twin and the store twin."""

    worker: Worker
    names: Names
    broker: MemoryBroker
    store: MemoryStore


def sample_body(service: str, name: str | None = None) -> etree._Element:
    folder = SAMPLES / service / "1" / "samples" / "valid"
    if name is None and service == "document.official":
        name = "typical-notice.xml"
    path = folder / name if name else sorted(folder.glob("*.xml"))[0]
    return copy.deepcopy(parse(path.read_bytes())[1][0])


def make_kit(base: Path | None = None) -> Kit:
    """A hub in memory: a fresh CA under ``base`` (a temporary directory by default), enrolled senders, the demo
    directory and routes, and the processor ``hub run`` uses."""
    base = Path(base) if base is not None else Path(tempfile.mkdtemp(prefix="hub-costly-"))
    created = pki.init_ca(base / "pki", PASSPHRASE)
    issuing = pki.load_ca(created.paths.root, PASSPHRASE)
    signers = {}
    for system, agency in (SENDER, DATA_SENDER):
        key = keys.generate_private_key()
        issued = pki.issue_from_csr(created.paths.root, PASSPHRASE, pki.make_csr(key, agency, system), ca=issuing)
        signers[system] = Signer(key, [issued.certificate, issuing[0]])
    directory = load_directory(PROJECT_ROOT / "routes" / "directory.xml")
    router = Router(directory, load_routes(route_files(PROJECT_ROOT / "routes"), directory))
    registry = SchemaRegistry(PROJECT_ROOT / "schemas")
    processor = Processor(
        registry=registry,
        verifier=Verifier(TrustStore.load(created.paths.root)),
        signer=Signer.load(created.paths.hub_key, created.paths.hub_cert, passphrase=PASSPHRASE.encode()),
        directory=directory,
        router=router,
        gate=gate,
        hub_ceiling=directory.hub_ceiling,
        max_bytes=MAX_BYTES,
    )
    return Kit(processor, signers, registry, directory, created.paths.root)


# ----------------------------------------------------------------------------------------------- helpers


def _in_key_info(data: bytes, fragment: bytes) -> bytes:
    """``fragment`` after ds:X509Data: the XSD admits ##other content there (lax), the profile refuses it."""
    at = data.index(b"</ds:X509Data>") + len(b"</ds:X509Data>")
    return data[:at] + fragment + data[at:]


def _in_body(data: bytes, fragment: bytes) -> bytes:
    at = data.index(b"</env:Body>")
    return data[:at] + fragment + data[at:]


def _on_root(data: bytes, attributes: bytes) -> bytes:
    at = data.index(b"<env:Envelope") + len(b"<env:Envelope")
    return data[:at] + attributes + data[at:]


def _budget(base: bytes, max_bytes: int) -> int:
    return max_bytes - len(base) - _HEADROOM_BYTES


def _repeat(unit: bytes, count: int, byte_budget: int) -> bytes:
    return unit * max(0, min(count, byte_budget // len(unit)))


def _markup_left(base: bytes) -> int:
    return intake.MAX_MARKUP - base.count(b"<") - _HEADROOM_MARKUP


def _namespaces_left(base: bytes) -> int:
    return intake.MAX_NAMESPACES - base.count(b"xmlns") - 4


def _foreign(inner: bytes) -> bytes:
    """A wrapper element of a foreign namespace (one declaration) around ``inner``."""
    return b'<f:w xmlns:f="urn:x-costly">' + inner + b"</f:w>"


# ----------------------------------------------------------------------------------------------- the cases


def namespaces_on_root(kit: Kit, max_bytes: int) -> bytes:
    """Signed, then as many unused namespace declarations on the root as the bound admits: exclusive C14N leaves
    them out of what was signed, so the signature still verifies; every one is in scope of ds:SignedInfo."""
    base = kit.typical()
    n = _namespaces_left(base)
    return _on_root(base, b"".join(b' xmlns:n%d="urn:x-costly:%d"' % (i, i) for i in range(n)))


def namespaces_60k(kit: Kit, max_bytes: int) -> bytes:
    """The report's attack: 60,000 unused declarations on the root of a signed message (8 s before the bound)."""
    base = kit.typical()
    return _on_root(base, b"".join(b' xmlns:n%d="urn:x-costly:%d"' % (i, i) for i in range(60_000)))


def namespaces_nested(kit: Kit, max_bytes: int) -> bytes:
    """The declaration budget spread along a chain of nested elements (all in scope at its deepest element),
    under a markup-budget's worth of elements in that scope."""
    base = kit.typical()
    n = _namespaces_left(base) - 1
    depth = min(n, intake.MAX_DEPTH - 20)
    per = max(1, n // depth)
    opens = b"".join(
        b"<f:d" + b"".join(b' xmlns:p%d_%d="urn:x-costly:%d"' % (d, i, i) for i in range(per)) + b">"
        for d in range(depth)
    )
    fill = _repeat(b"<f:a/>", _markup_left(base) - 2 * depth, _budget(base, max_bytes) - len(opens) * 2)
    return _in_key_info(base, _foreign(opens + fill + b"</f:d>" * depth))


def attributes_one_element(kit: Kit, max_bytes: int) -> bytes:
    """The attribute budget on one element (libxml2 checks each name against the others)."""
    base = kit.typical()
    n = intake.MAX_ATTRIBUTES - _HEADROOM_ATTRS
    return _in_key_info(base, _foreign(b"<f:a" + b"".join(b' a%x=""' % i for i in range(n)) + b"/>"))


def attributes_long_names(kit: Kit, max_bytes: int) -> bytes:
    """The byte budget as attributes with long distinct names on a few elements."""
    base = kit.typical()
    budget = _budget(base, max_bytes)
    name_len = 200
    n = min(intake.MAX_ATTRIBUTES - _HEADROOM_ATTRS, budget // (name_len + 5))
    attrs = [b" a%s%07d=''" % (b"x" * name_len, i) for i in range(n)]
    per = 1000
    elements = b"".join(b"<f:a" + b"".join(attrs[i : i + per]) + b"/>" for i in range(0, n, per))
    return _in_key_info(base, _foreign(elements))


def elements_flat(kit: Kit, max_bytes: int) -> bytes:
    """The markup budget as empty foreign elements inside ds:KeyInfo: valid for the XSD (lax), so validation
    walks every one before the profile refuses the signature."""
    base = kit.typical()
    return _in_key_info(base, _foreign(_repeat(b"<f:a/>", _markup_left(base), _budget(base, max_bytes))))


def elements_in_body(kit: Kit, max_bytes: int) -> bytes:
    """The markup budget as unexpected elements in the Body: validation errors instead of lax content."""
    base = kit.typical()
    return _in_body(base, _repeat(b"<x/>", _markup_left(base), _budget(base, max_bytes)))


def elements_nested(kit: Kit, max_bytes: int) -> bytes:
    """The markup budget as chains nested to just under the depth limit."""
    base = kit.typical()
    depth = intake.MAX_DEPTH - 20
    chain = b"<f:a>" * depth + b"</f:a>" * depth
    return _in_key_info(base, _foreign(_repeat(chain, _markup_left(base) // (2 * depth), _budget(base, max_bytes))))


def comments(kit: Kit, max_bytes: int) -> bytes:
    """The markup budget as comments (dropped at parse, but each is lexed)."""
    base = kit.typical()
    return _in_key_info(base, _foreign(_repeat(b"<!---->", _markup_left(base), _budget(base, max_bytes))))


def certificates(kit: Kit, max_bytes: int) -> bytes:
    """The markup budget as ds:X509Certificate elements: each is base64Binary for the XSD."""
    base = kit.typical()
    unit = b"<ds:X509Certificate>AAAA</ds:X509Certificate>"
    filler = _repeat(unit, _markup_left(base) // 2, _budget(base, max_bytes))
    return base.replace(b"</ds:X509Data>", filler + b"</ds:X509Data>", 1)


def duplicate_ids(kit: Kit, max_bytes: int) -> bytes:
    """An invalid message full of Id attributes (the full report then looks for repeated identifiers)."""
    base = kit.typical()
    n = min(_markup_left(base), intake.MAX_ATTRIBUTES - _HEADROOM_ATTRS)
    return _in_body(base, b"".join(b'<x Id="i%d"/>' % (i % 1000) for i in range(n)))


def character_references(kit: Kit, max_bytes: int) -> bytes:
    """The byte budget as character references to 密 (each decoded by the parser)."""
    base = kit.typical()
    return _in_key_info(
        base, _foreign(b"<f:t>" + _repeat(b"&#x5BC6;", max_bytes, _budget(base, max_bytes)) + b"</f:t>")
    )


def long_names(kit: Kit, max_bytes: int) -> bytes:
    """Element names at libxml2's length limit (50,000 characters), as many as fit."""
    base = kit.typical()
    name = b"f:" + b"n" * 49_990
    return _in_key_info(base, _foreign(_repeat(b"<" + name + b"/>", 10_000, _budget(base, max_bytes))))


def long_namespace_uri(kit: Kit, max_bytes: int) -> bytes:
    """A namespace name of half the byte budget, used by as many elements as the rest admits (every Clark name
    the hub builds for them would copy it)."""
    base = kit.typical()
    uri = b"urn:x-costly:" + b"u" * (_budget(base, max_bytes) // 2)
    fill = _repeat(b"<q:a/>", _markup_left(base), _budget(base, max_bytes) - len(uri))
    return _in_body(base, b'<q:w xmlns:q="' + uri + b'">' + fill + b"</q:w>")


def schema_errors(kit: Kit, max_bytes: int) -> bytes:
    """A data.response whose every cell carries an attribute the XSD does not allow: one validation error per
    element, each a line in the full report."""
    body = sample_body("data.response")
    ns = etree.QName(body).namespace
    rows = body.find(f"{{{ns}}}Rows")
    assert rows is not None
    for r in list(rows):
        rows.remove(r)
    cells = intake.MAX_ATTRIBUTES - _HEADROOM_ATTRS
    for _ in range(cells // 50):
        row = etree.SubElement(rows, f"{{{ns}}}Row")
        for _ in range(50):
            etree.SubElement(row, f"{{{ns}}}Cell", bad="1").text = "1"
    return kit.signed(kit.envelope(service="data.response", sender=DATA_SENDER, body=body), DATA_SENDER[0])


def largest_data_response(kit: Kit, max_bytes: int) -> bytes:
    """Signed by its system and valid: a full page (500 rows × 50 cells), the largest body any schema admits."""
    body = sample_body("data.response")
    ns = etree.QName(body).namespace
    columns = body.find(f"{{{ns}}}Columns")
    rows = body.find(f"{{{ns}}}Rows")
    assert columns is not None and rows is not None
    template = columns[0]
    for c in list(columns):
        columns.remove(c)
    for i in range(50):
        col = copy.deepcopy(template)
        col[0].text = f"c{i:02d}"
        columns.append(col)
    for r in list(rows):
        rows.remove(r)
    for i in range(500):
        row = etree.SubElement(rows, f"{{{ns}}}Row")
        for j in range(50):
            etree.SubElement(row, f"{{{ns}}}Cell").text = f"220183-{i:03d}-{j:03d}-林地"
    envelope = kit.envelope(service="data.response", sender=DATA_SENDER, body=body, ttl=timedelta(hours=1))
    return kit.signed(envelope, DATA_SENDER[0])


def _notice_of_paragraphs(kit: Kit, text: str, max_bytes: int) -> bytes:
    """A signed notice whose paragraphs are all ``text``, as many as the size limit (and the XSD's 2,000) admit."""
    body = sample_body("document.official")
    ns = etree.QName(body).namespace
    paragraphs = list(body.iter(f"{{{ns}}}Paragraph"))
    parent = paragraphs[0].getparent()
    assert parent is not None
    for p in paragraphs:
        parent.remove(p)
    count = min(2000, _budget(to_bytes(kit.envelope(body=body)), max_bytes) // (len(text.encode()) + 40))
    for _ in range(count):
        etree.SubElement(parent, f"{{{ns}}}Paragraph").text = text
    return kit.signed(kit.envelope(body=body))


def markings(kit: Kit, max_bytes: int) -> bytes:
    """Signed and valid: a notice whose paragraphs are dense with 密级 markings and heading-like lines (the gate
    normalises and scans every one; the message is quarantined)."""
    line = "秘密★10年 机密 绝密★长期 【秘密】 " * 20
    return _notice_of_paragraphs(kit, "\n".join([line] * 12), max_bytes)


def secret_prose(kit: Kit, max_bytes: int) -> bytes:
    """Signed and valid: paragraphs dense with 密 in running text that is no marking (保守国家秘密). The gate reads
    the first ``MAX_SCAN_CHARS`` of it (normalised, every line matched: nothing found), then quarantines the message
    for a person, since it cannot review the rest automatically."""
    return _notice_of_paragraphs(
        kit, "\n".join(["各单位要保守国家秘密和商业秘密，涉密事项按规定办理。"] * 300), max_bytes
    )


def attachment(kit: Kit, max_bytes: int) -> bytes:
    """Signed and valid: a notice with the largest attachment the size limit leaves room for (text-heavy)."""
    body = sample_body("document.official", "report-with-attachment.xml")
    ns = etree.QName(body).namespace
    content = next(body.iter(f"{{{ns}}}Content"))
    base = to_bytes(kit.envelope(body=body))
    room = max_bytes - len(base) - _HEADROOM_BYTES
    limit = 2_359_296  # the XSD's maxLength of an attachment's base64 content
    content.text = "QUJD" * (min(room, limit) // 4)
    return kit.signed(kit.envelope(body=body))


def long_file_name(kit: Kit, max_bytes: int) -> bytes:
    """Signed: an attachment's FileName as long as the size limit leaves room for (its type allows 200 characters).
    libxml2 ran the type's pattern over the whole value after maxLength had failed: 220 ms of CPU before the schema
    refused it (SCHEMA_VALUE), and as much unsigned; the patterns now repeat at most maxLength times."""
    body = sample_body("document.official", "report-with-attachment.xml")
    ns = etree.QName(body).namespace
    name = next(body.iter(f"{{{ns}}}FileName"))
    base = to_bytes(kit.envelope(body=body))
    name.text = "A" * (max_bytes - len(base) - _HEADROOM_BYTES)
    return kit.signed(kit.envelope(body=body))


def garbage_signature(kit: Kit, max_bytes: int) -> bytes:
    """No key needed: the declaration budget on the root and a SignatureValue that cannot verify (the hub
    canonicalises SignedInfo before it can know)."""
    data = namespaces_on_root(kit, max_bytes)
    start = data.index(b"<ds:SignatureValue>") + len(b"<ds:SignatureValue>")
    end = data.index(b"</ds:SignatureValue>")
    return data[:start] + b"A" * (end - start - 4) + b"AA==" + data[end:]


#: name → (what it stresses, builder). Every builder stays within the intake's bounds except ``namespaces_60k``,
#: which shows that the report's attack is now refused for the price of a byte count.
CASES: dict[str, tuple[str, Callable[[Kit, int], bytes]]] = {
    "namespaces_on_root": ("256 namespaces in scope of SignedInfo, signed (accepted)", namespaces_on_root),
    "namespaces_60k": ("the report's 60,000 unused declarations (refused)", namespaces_60k),
    "namespaces_nested": ("declarations in scope of every element, markup budget", namespaces_nested),
    "attributes_one_element": ("attribute budget on one element", attributes_one_element),
    "attributes_long_names": ("byte budget as long distinct attribute names", attributes_long_names),
    "elements_flat": ("markup budget, lax content in KeyInfo", elements_flat),
    "elements_in_body": ("markup budget, unexpected elements in the Body", elements_in_body),
    "elements_nested": ("markup budget as chains 236 deep", elements_nested),
    "comments": ("markup budget as comments", comments),
    "certificates": ("markup budget as ds:X509Certificate elements", certificates),
    "duplicate_ids": ("Id attributes, invalid message (full report)", duplicate_ids),
    "character_references": ("byte budget as &#x5BC6; references", character_references),
    "long_names": ("element names at libxml2's 50,000-character limit", long_names),
    "long_namespace_uri": ("a 1.2 MB namespace name on every element", long_namespace_uri),
    "schema_errors": ("an XSD error per attribute of the budget (signed data.response)", schema_errors),
    "largest_data_response": ("valid: 500 rows × 50 cells, signed (accepted)", largest_data_response),
    "markings": ("valid: paragraphs dense with 密级 markings (quarantined)", markings),
    "secret_prose": ("valid: 4 MB of 密 in running text (past what the gate reads: quarantined)", secret_prose),
    "attachment": ("valid: the largest attachment (accepted)", attachment),
    "long_file_name": ("a 4 MB attachment FileName (its pattern over the whole value; refused)", long_file_name),
    "garbage_signature": ("no key: 256 namespaces, a SignatureValue that cannot verify", garbage_signature),
}


def build_all(kit: Kit, max_bytes: int = MAX_BYTES) -> dict[str, bytes]:
    out = {}
    for name, (_, make) in CASES.items():
        data = make(kit, max_bytes)
        assert len(data) <= max_bytes, f"{name}: {len(data)} bytes over the limit"
        out[name] = data
    return out

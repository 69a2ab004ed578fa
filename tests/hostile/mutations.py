"""Mutations of valid signed envelopes, for the property-based hostile tests (tests/hostile/test_mutations.py) and
bench/hostile_burst.py.

Each mutation is a pure function of the original bytes and a few parameters; it returns the mutant bytes, or
``None`` when it does not apply (the property test then skips that draw). The test gives each drawn mutation a
kind: ``signed`` when by construction it changes what the signature covers (the canonical envelope without its
signature, or ``ds:SignedInfo``) or the signature value itself, ``profile`` when the hub's signature profile forbids
it; an accepted mutant of either kind is a hub bug whatever the canonical forms say.

The oracle for an accepted mutant (``equivalence_problems``) is independent of the mutation: the hub must have
acted on exactly the original's canonical signed content, under the original's ``ds:SignedInfo`` and signature
value, signed by the original's key.
"""

from __future__ import annotations

import base64
import copy
from dataclasses import dataclass, field

from lxml import etree

DS = "http://www.w3.org/2000/09/xmldsig#"
ENV = "urn:forestry-hub:envelope:1"
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)

#: Algorithm URIs outside (or beside) the hub's profile, for SignatureMethod / DigestMethod / Transform /
#: CanonicalizationMethod swaps.
HOSTILE_ALGORITHMS = (
    "http://www.w3.org/2000/09/xmldsig#rsa-sha1",
    "http://www.w3.org/2000/09/xmldsig#dsa-sha1",
    "http://www.w3.org/2000/09/xmldsig#hmac-sha1",
    "http://www.w3.org/2001/04/xmldsig-more#hmac-sha256",
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384",
    "http://www.w3.org/2000/09/xmldsig#sha1",
    "http://www.w3.org/2001/04/xmlenc#sha512",
    "http://www.w3.org/2001/10/xml-exc-c14n#WithComments",
    "http://www.w3.org/TR/2001/REC-xml-c14n-20010315",
    "http://www.w3.org/2006/12/xml-c14n11",
    "http://www.w3.org/TR/1999/REC-xslt-19991116",
    "http://www.w3.org/TR/1999/REC-xpath-19991116",
    "http://www.w3.org/2002/06/xmldsig-filter2",
    "http://www.w3.org/2000/09/xmldsig#base64",
    "",
    "urn:nonsense",
)
HOSTILE_URIS = ("#", "#x", "#xpointer(/)", "http://127.0.0.1:9/x", "file:///etc/passwd", " ", "#Envelope")


def c14n(el: etree._Element) -> bytes:
    return etree.tostring(el, method="c14n", exclusive=True, with_comments=False)


def _tree(data: bytes) -> etree._Element:
    return etree.fromstring(data, _PARSER)


def _out(root: etree._Element, original: bytes) -> bytes:
    head = b"<?xml version='1.0' encoding='UTF-8'?>\n" if original.startswith(b"<?xml") else b""
    return head + etree.tostring(root, encoding="UTF-8")


def _elements(root: etree._Element) -> list[etree._Element]:
    return [el for el in root.iter() if isinstance(el.tag, str)]


def _signature(root: etree._Element) -> etree._Element | None:
    return root.find(f"{{{DS}}}Signature")


def _signed_elements(root: etree._Element) -> list[etree._Element]:
    """Every element the reference covers (not the Signature subtree), the root included."""
    sig = _signature(root)
    out = []
    for el in _elements(root):
        if sig is not None and (el is sig or any(a is sig for a in el.iterancestors())):
            continue
        out.append(el)
    return out


def _sig_elements(root: etree._Element, local: str) -> list[etree._Element]:
    sig = _signature(root)
    return [] if sig is None else list(sig.iter(f"{{{DS}}}{local}"))


# ----------------------------------------------------------------------------------------------- bytes


def flip(data: bytes, pos: int, bit: int) -> bytes:
    i = pos % len(data)
    return data[:i] + bytes([data[i] ^ (1 << (bit % 8))]) + data[i + 1 :]


def insert(data: bytes, pos: int, chunk: bytes) -> bytes:
    i = pos % (len(data) + 1)
    return data[:i] + chunk + data[i:]


def delete(data: bytes, pos: int, length: int) -> bytes:
    i = pos % len(data)
    return data[:i] + data[i + max(1, length) :]


def truncate(data: bytes, length: int) -> bytes:
    return data[: length % len(data)]


# ----------------------------------------------------------------------------------------------- elements


def _pick(items: list, index: int):  # type: ignore[no-untyped-def]
    return items[index % len(items)] if items else None


def drop_element(data: bytes, index: int, signed_only: bool) -> bytes | None:
    root = _tree(data)
    el = _pick((_signed_elements(root) if signed_only else _elements(root))[1:], index)
    if el is None:
        return None
    parent = el.getparent()
    tail = el.tail
    prev = el.getprevious()
    parent.remove(el)
    if tail:  # keep the surrounding text as it was (only the element goes)
        if prev is not None:
            prev.tail = (prev.tail or "") + tail
        else:
            parent.text = (parent.text or "") + tail
    return _out(root, data)


def duplicate_element(data: bytes, index: int, signed_only: bool) -> bytes | None:
    root = _tree(data)
    el = _pick((_signed_elements(root) if signed_only else _elements(root))[1:], index)
    if el is None:
        return None
    el.addnext(copy.deepcopy(el))
    return _out(root, data)


def reorder_element(data: bytes, index: int, shift: int) -> bytes | None:
    """Move an element (signature parts included) to another position among its siblings."""
    root = _tree(data)
    el = _pick(_elements(root)[1:], index)
    if el is None:
        return None
    parent = el.getparent()
    siblings = [c for c in parent if isinstance(c.tag, str)]
    if len(siblings) < 2:
        return None
    i = siblings.index(el)
    j = (i + 1 + shift % (len(siblings) - 1)) % len(siblings)
    if siblings[j].tag == el.tag:  # swapping two equal-named siblings may leave the content unchanged
        if c14n(siblings[j]) == c14n(el):
            return None
    parent.remove(el)
    pos = list(parent).index(siblings[j]) if siblings[j] in parent else len(parent)
    parent.insert(pos + (1 if j > i else 0), el)
    return _out(root, data)


def rename_element(data: bytes, index: int, local: str) -> bytes | None:
    root = _tree(data)
    el = _pick(_elements(root), index)
    if el is None:
        return None
    q = etree.QName(el)
    if q.localname == local:
        return None
    el.tag = etree.QName(q.namespace, local).text if q.namespace else local
    return _out(root, data)


def move_signature(data: bytes, where: str) -> bytes | None:
    """Relocate ds:Signature: first child of the root, into the Header, into the Body, or wrapped in a new root."""
    root = _tree(data)
    sig = _signature(root)
    if sig is None:
        return None
    if where == "first":
        root.insert(0, sig)
        return _out(root, data)
    if where == "wrap":
        outer = etree.Element(f"{{{ENV}}}Envelope", nsmap={"env": ENV})
        outer.append(copy.deepcopy(root))
        outer.append(copy.deepcopy(sig))
        return _out(outer, data)
    target = root[0] if where == "header" else root[1]
    target.append(sig)
    return _out(root, data)


def add_signature(data: bytes) -> bytes | None:
    """A second ds:Signature beside the first (copy)."""
    root = _tree(data)
    sig = _signature(root)
    if sig is None:
        return None
    sig.addnext(copy.deepcopy(sig))
    return _out(root, data)


# ----------------------------------------------------------------------------------------------- attributes


def set_attribute(data: bytes, index: int, name: str, value: str, signed_only: bool) -> bytes | None:
    root = _tree(data)
    el = _pick(_signed_elements(root) if signed_only else _elements(root), index)
    if el is None or el.get(name) == value:
        return None
    el.set(name, value)
    return _out(root, data)


def change_attribute(data: bytes, index: int, value: str) -> bytes | None:
    root = _tree(data)
    pairs = [(el, k) for el in _elements(root) for k in el.attrib]
    pair = _pick(pairs, index)
    if pair is None or pair[0].get(pair[1]) == value:
        return None
    pair[0].set(pair[1], value)
    return _out(root, data)


def drop_attribute(data: bytes, index: int) -> bytes | None:
    root = _tree(data)
    pair = _pick([(el, k) for el in _elements(root) for k in el.attrib], index)
    if pair is None:
        return None
    del pair[0].attrib[pair[1]]
    return _out(root, data)


def swap_attribute_order(data: bytes) -> bytes | None:
    """Reverse the attribute order of every element (C14N sorts attributes: the canonical form is unchanged)."""
    root = _tree(data)
    changed = False
    for el in _elements(root):
        items = list(el.attrib.items())
        if len(items) > 1:
            el.attrib.clear()
            for k, v in reversed(items):
                el.set(k, v)
            changed = True
    return _out(root, data) if changed else None


# ----------------------------------------------------------------------------------------------- namespaces


def change_namespace_uri(data: bytes, which: int, uri: str) -> bytes | None:
    """Replace one namespace URI of the document everywhere it is declared (bytes level: the declaration only)."""
    uris = sorted({ns for el in _elements(_tree(data)) for ns in el.nsmap.values()})
    old = _pick(uris, which)
    if old is None or old == uri:
        return None
    return data.replace(f'"{old}"'.encode(), f'"{uri}"'.encode())


def change_prefix(data: bytes, which: int, new: str) -> bytes | None:
    """Rename one prefix everywhere (an equal infoset, but exclusive C14N keeps prefixes: the digest changes)."""
    prefixes = sorted({p for el in _elements(_tree(data)) for p in el.nsmap if p})
    old = _pick(prefixes, which)
    if old is None or old == new or new in prefixes:
        return None
    out = data.replace(f"<{old}:".encode(), f"<{new}:".encode()).replace(f"</{old}:".encode(), f"</{new}:".encode())
    return out.replace(f"xmlns:{old}=".encode(), f"xmlns:{new}=".encode())


def add_namespace_declaration(data: bytes, index: int, prefix: str | None, uri: str) -> bytes | None:
    """Declare an extra namespace (default or prefixed) on some element, bytes level. Exclusive C14N renders only
    visibly used namespaces, so an unused declaration is C14N-equivalent."""
    root = _tree(data)
    tags = sorted({etree.QName(el).localname for el in _elements(root)})
    local = _pick(tags, index)
    if local is None:
        return None
    decl = f' xmlns="{uri}"' if prefix is None else f' xmlns:{prefix}="{uri}"'
    for opener in (b"<env:", b"<d:", b"<ds:", b"<"):
        needle = opener + local.encode()
        at = data.find(needle + b" ")
        if at < 0:
            at = data.find(needle + b">")
        if at < 0:
            at = data.find(needle + b"/>")
        if at >= 0:
            end = at + len(needle)
            return data[:end] + decl.encode() + data[end:]
    return None


# ----------------------------------------------------------------------------------------------- signature parts


def _b64_tweak(text: str, pos: int) -> str:
    raw = bytearray(base64.b64decode("".join(text.split())))
    if not raw:
        return "AAAA"
    raw[pos % len(raw)] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


def tweak_value(data: bytes, local: str, pos: int) -> bytes | None:
    """Change one bit of DigestValue / SignatureValue / an X509Certificate (re-encoded as valid base64)."""
    root = _tree(data)
    el = _pick(_sig_elements(root, local), pos)
    if el is None or not el.text:
        return None
    el.text = _b64_tweak(el.text, pos)
    return _out(root, data)


def set_algorithm(data: bytes, local: str, uri: str) -> bytes | None:
    root = _tree(data)
    els = _sig_elements(root, local)
    if not els or els[-1].get("Algorithm") == uri:
        return None
    els[-1].set("Algorithm", uri)
    return _out(root, data)


def set_reference_uri(data: bytes, uri: str) -> bytes | None:
    root = _tree(data)
    ref = _pick(_sig_elements(root, "Reference"), 0)
    if ref is None:
        return None
    ref.set("URI", uri)
    return _out(root, data)


def drop_reference_uri(data: bytes) -> bytes | None:
    root = _tree(data)
    ref = _pick(_sig_elements(root, "Reference"), 0)
    if ref is None:
        return None
    del ref.attrib["URI"]
    return _out(root, data)


def add_transform(data: bytes, uri: str, first: bool) -> bytes | None:
    root = _tree(data)
    transforms = _pick(_sig_elements(root, "Transforms"), 0)
    if transforms is None:
        return None
    t = etree.Element(f"{{{DS}}}Transform", Algorithm=uri)
    transforms.insert(0 if first else len(transforms), t)
    return _out(root, data)


def drop_transform(data: bytes, index: int) -> bytes | None:
    root = _tree(data)
    t = _pick(_sig_elements(root, "Transform"), index)
    if t is None:
        return None
    t.getparent().remove(t)
    return _out(root, data)


def add_reference(data: bytes) -> bytes | None:
    root = _tree(data)
    ref = _pick(_sig_elements(root, "Reference"), 0)
    if ref is None:
        return None
    ref.addnext(copy.deepcopy(ref))
    return _out(root, data)


def key_info(data: bytes, op: str) -> bytes | None:
    """KeyInfo / certificate chain: drop the chain, keep only the issuer, reverse it, duplicate the leaf, add a
    RetrievalMethod, a KeyName, a bogus KeyValue, or foreign content. KeyInfo is not covered by the signature: a
    mutant may be accepted only if the hub still verified it with the original key (the oracle checks that)."""
    root = _tree(data)
    ki = _pick(_sig_elements(root, "KeyInfo"), 0)
    xd = _pick(_sig_elements(root, "X509Data"), 0)
    if ki is None or xd is None:
        return None
    certs = list(xd.iter(f"{{{DS}}}X509Certificate"))
    if op == "drop-keyinfo":
        ki.getparent().remove(ki)
    elif op == "drop-leaf":
        xd.remove(certs[0])
        if len(certs) == 1:
            return None
    elif op == "drop-chain":
        for c in certs[1:]:
            xd.remove(c)
        if len(certs) == 1:
            return None
    elif op == "reverse-chain":
        if len(certs) < 2:
            return None
        for c in certs:
            xd.remove(c)
        for c in reversed(certs):
            xd.append(c)
    elif op == "duplicate-leaf":
        certs[0].addnext(copy.deepcopy(certs[0]))
    elif op == "empty-x509data":
        for c in certs:
            xd.remove(c)
    elif op == "retrieval-method":
        etree.SubElement(ki, f"{{{DS}}}RetrievalMethod", URI="http://127.0.0.1:9/cert")
    elif op == "key-name":
        ki.insert(0, etree.Element(f"{{{DS}}}KeyName"))
        ki[0].text = "county-220122-oa"
    elif op == "key-value":
        kv = etree.SubElement(ki, f"{{{DS}}}KeyValue")
        rsa = etree.SubElement(kv, f"{{{DS}}}RSAKeyValue")
        etree.SubElement(rsa, f"{{{DS}}}Modulus").text = base64.b64encode(b"\x01" * 256).decode()
        etree.SubElement(rsa, f"{{{DS}}}Exponent").text = "AQAB"
    elif op == "foreign":
        etree.SubElement(ki, "{urn:evil}Extra").text = "x"
    elif op == "garbage-cert":
        certs[0].text = base64.b64encode(b"\x30\x03\x02\x01\x00").decode()
    else:
        raise ValueError(op)
    return _out(root, data)


def add_object(data: bytes) -> bytes | None:
    """ds:Object smuggling: a copy of the Body inside the signature."""
    root = _tree(data)
    sig = _signature(root)
    if sig is None:
        return None
    obj = etree.SubElement(sig, f"{{{DS}}}Object")
    obj.append(copy.deepcopy(root[1]))
    return _out(root, data)


def change_text(data: bytes, index: int, text: str) -> bytes | None:
    """Change the text of a signed leaf element (a field value)."""
    root = _tree(data)
    leaves = [el for el in _signed_elements(root) if len(el) == 0]
    el = _pick(leaves, index)
    if el is None or (el.text or "") == text:
        return None
    el.text = text
    return _out(root, data)


def insert_comment_or_pi(data: bytes, index: int, pi: bool) -> bytes | None:
    root = _tree(data)
    el = _pick(_elements(root), index)
    if el is None:
        return None
    node = etree.ProcessingInstruction("x", "y") if pi else etree.Comment("c")
    el.insert(0, node)
    return _out(root, data)


# ----------------------------------------------------------------------------------------------- whitespace


def outer_whitespace(data: bytes, where: str, ws: bytes) -> bytes | None:
    """Whitespace outside the root element (after the declaration, or after the end tag): outside what is signed
    and C14N-equivalent, the one byte-level change a hub may accept unchanged."""
    if where == "after":
        return data + ws
    end = data.find(b"?>")
    if end < 0 or not data.startswith(b"<?xml"):
        return ws + data if where == "before" else None
    return data[: end + 2] + ws + data[end + 2 :]


# ----------------------------------------------------------------------------------------------- the oracle


@dataclass(frozen=True)
class Baseline:
    """What the hub accepted for the unmutated message."""

    service: str
    data: bytes = field(repr=False)
    canonical: bytes = field(repr=False)
    digest: str = field(repr=False)
    signed_info: bytes = field(repr=False)
    signature_value: bytes = field(repr=False)
    signer_fingerprint: str = field(repr=False)
    message_id: str = field(repr=False)


def signature_parts(signature_c14n: bytes) -> tuple[bytes, bytes]:
    """(exclusive C14N of ds:SignedInfo, the decoded SignatureValue) of a ds:Signature serialisation."""
    sig = _tree(signature_c14n)
    si = sig.find(f"{{{DS}}}SignedInfo")
    sv = sig.find(f"{{{DS}}}SignatureValue")
    return (
        c14n(si) if si is not None else b"",
        base64.b64decode("".join((sv.text or "").split())) if sv is not None else b"",
    )


def equivalence_problems(base: Baseline, accepted) -> list[str]:  # type: ignore[no-untyped-def]
    """Why an accepted mutant is not the original message (empty: it is)."""
    problems = []
    if accepted.canonical != base.canonical:
        problems.append("the canonical signed content differs from the original's")
    if accepted.digest != base.digest:
        problems.append(f"digest {accepted.digest} != original {base.digest}")
    if accepted.signer_fingerprint != base.signer_fingerprint:
        problems.append("verified with another key than the original's")
    if accepted.envelope.message_id != base.message_id:
        problems.append(f"message id {accepted.envelope.message_id} != {base.message_id}")
    if c14n(accepted.signed_root) != base.canonical:
        problems.append("the signed tree the hub acts on is not the original's canonical content")
    si, sv = signature_parts(accepted.signature)
    if si != base.signed_info:
        problems.append("ds:SignedInfo differs from the original's")
    if sv != base.signature_value:
        problems.append("SignatureValue differs from the original's")
    return problems

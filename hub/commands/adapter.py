"""``hub adapter new|enrol|approve|run``: an agency's adapter from scaffold to enrolment to running (issue 19).

``new``
    scaffolds a package (``adapter.py``, ``settings.toml``, ``samples/``, ``tests/``) for one system of the
    directory: it handles a service the routes let another system send it and sends a sample the routes allow it
    to send (``plan_scaffold``, pure: directory + routes + samples). Templates: ``adapter_templates/*.tmpl``
    (``string.Template``).
``enrol`` (agency side)
    makes the system's key and CSR in its enrolment directory; ``enrol --accept BUNDLE`` checks the operator's
    bundle against that key and the hub root in it and lays the directory out (``adapters.sdk._home.write_home``).
``approve`` (operator side)
    issues the certificate with the hub CA (``trust_admin.issue``, as ``hub pki issue``), provisions the system's
    RabbitMQ user (``hub.transport.users``) and writes one bundle file (JSON, 0600).
``run``
    imports an adapter module and runs its ``adapter`` with JSON logs until SIGTERM.

Refusals print ``hub: CODE: 标题 — reason`` on standard error: exit 1 when the input was refused (key mismatch,
system not in the directory, untrusted chain), 2 for usage and configuration problems (as hub.cli).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import functools
import importlib
import itertools
import json
import re
import string
import sys
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hub.settings import Settings

__all__ = ["BUNDLE_FORMAT", "AdapterCommandError", "ScaffoldPlan", "plan_scaffold", "register", "render_scaffold"]

TEMPLATES = Path(__file__).resolve().parent / "adapter_templates"
BUNDLE_FORMAT = "forestry-hub-enrolment/1"
ENV_NS = "urn:forestry-hub:envelope:1"
_ENV = f"{{{ENV_NS}}}"

#: The stable codes of these commands, with their Chinese titles (the detail after them is English).
CODES: dict[str, str] = {
    "ADAPTER_NAME": "适配器名称不是合法的 Python 包名",
    "ADAPTER_EXISTS": "目标已存在，不覆盖",
    "ADAPTER_NOT_IN_DIRECTORY": "系统不在枢纽目录中",
    "ADAPTER_AGENCY_MISMATCH": "证书请求的机构与目录登记不符",
    "ADAPTER_NO_SERVICE": "按目录与路由，该系统没有可收发的样例报文",
    "ADAPTER_NOT_ENROLLED": "入网目录中没有本系统的私钥",
    "ADAPTER_BUNDLE_INVALID": "入网文件无法读取或格式不符",
    "ADAPTER_KEY_MISMATCH": "证书与本地私钥不匹配",
    "ADAPTER_CHAIN_UNTRUSTED": "证书链不能验证到入网文件中的枢纽根证书",
    "ADAPTER_MODULE": "无法导入适配器模块",
    "ADAPTER_SETTINGS": "适配器设置有误",
    "ADAPTER_TRACKING": "发文跟踪查询失败",
}


class AdapterCommandError(Exception):
    """A refusal of one of these commands: ``code`` (stable, in ``CODES``), an English ``detail``; ``exit`` 1 when
    the input was refused, 2 for configuration."""

    def __init__(self, code: str, detail: str, *, exit: int = 2) -> None:
        if code not in CODES:
            raise ValueError(f"unregistered adapter command code {code!r}")
        super().__init__(detail)
        self.code, self.detail, self.exit = code, detail, exit

    def describe(self) -> str:
        return f"{self.code}: {CODES[self.code]} — {self.detail}"


Handler = Callable[[argparse.Namespace, Settings], int]


def _refusals(fn: Handler) -> Handler:
    """Print an ``AdapterCommandError`` as the CLI prints a HubError (hub.cli handles those)."""

    @functools.wraps(fn)
    def run(args: argparse.Namespace, settings: Settings) -> int:
        try:
            return fn(args, settings)
        except AdapterCommandError as exc:
            print(f"hub: {exc.describe()}", file=sys.stderr)
            return exc.exit

    return run


# ================================================================================================ scaffold plan


@dataclass(frozen=True, slots=True)
class ScaffoldPlan:
    """What ``hub adapter new`` generates for one system: the service it handles and from whom, the sample it
    sends and to whom, and whether its handler replies (``document.official`` → ``document.receipt``)."""

    system: str
    agency: str
    system_name: str
    system_name_en: str
    handled: str
    peer: str
    peer_agency: str
    sent: str
    target: str
    target_agency: str
    #: The sample it sends (sender: this system, recipient: ``target``) and, when it handles another service, the
    #: sample ``peer`` sends it; file name → bytes.
    samples: dict[str, bytes]
    outgoing_sample: str
    incoming_sample: str
    reply: str | None
    #: Whether the handled message's body has a Title (the handler records it).
    has_title: bool


def class_name(service: str) -> str:
    """``document.official`` → ``DocumentOfficial`` (the typed message class, ``adapters.sdk.messages``)."""
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[.\-_]", service) if part)


#: Services never scaffolded: the hub's own answers and the SDK's refusals.
_NOT_SCAFFOLDED = ("hub.", "delivery.refusal")


def plan_scaffold(
    system: str,
    *,
    directory_file: Path,
    routes_dir: Path,
    schemas_dir: Path,
) -> ScaffoldPlan:
    """Pick, from the directory, the routes and the valid samples, what a first adapter of ``system`` does:
    a province-level system handles ``info.report``, the others ``document.official`` (else the first service it
    accepts that some system may send it), and sends a sample of that service (else of the first service it may
    send). Every choice is checked against the routes and the recipients' ``accepts``, and the samples against the
    schemas."""
    directory, routes, registry, samples = _world(Path(directory_file), Path(routes_dir), Path(schemas_dir))
    if not directory.has_system(system) or system == directory.hub_system:
        raise AdapterCommandError(
            "ADAPTER_NOT_IN_DIRECTORY", f"system {system!r} is not an agency system of {directory_file}", exit=1
        )
    me = directory.system(system)
    my_agency = directory.agency(me.agency)

    def may_send(sender: Any, target: Any, service: str) -> bool:
        if sender.id == target.id or directory.hub_system in (sender.id, target.id):
            return False
        if not directory.accepts(target, service) or min(sender.ceiling, target.ceiling) < samples[service][1]:
            return False
        return any(
            r.admits_sender(directory, sender) and r.admits_recipient(directory, sender, target)
            for r in routes.for_service(service, 1)
        )

    def closeness(other: Any) -> int:
        agency = directory.agency(other.agency)
        if agency.code == my_agency.parent:
            return 0
        if agency.parent == my_agency.code:
            return 1
        if agency.parent == my_agency.parent:
            return 2
        return 3

    others = sorted((s for s in directory.systems() if s.id not in (system, directory.hub_system)), key=closeness)
    preferred = "info.report" if my_agency.level == "province" else "document.official"
    order = [preferred] + [s for s in sorted(samples) if s != preferred and not s.startswith(_NOT_SCAFFOLDED)]
    order = [s for s in order if s in samples]

    handled = peer = None
    for service in order:
        if not directory.accepts(me, service):
            continue
        peer = next((o for o in others if may_send(o, me, service)), None)
        if peer is not None:
            handled = service
            break
    if handled is None or peer is None:
        raise AdapterCommandError(
            "ADAPTER_NO_SERVICE", f"no service with a valid sample that some system may send to {system}", exit=1
        )
    sent = target = None
    for service in [handled] + [s for s in order if s != handled]:
        target = next((o for o in others if may_send(me, o, service)), None)
        if target is not None:
            sent = service
            break
    if sent is None or target is None:
        raise AdapterCommandError(
            "ADAPTER_NO_SERVICE", f"no service with a valid sample that {system} may send to another system", exit=1
        )
    outgoing_name = f"{sent}.xml"
    files = {outgoing_name: _readdressed(samples[sent][0], registry, me, target)}
    incoming_name = outgoing_name
    if handled != sent:
        incoming_name = f"incoming-{handled}.xml"
        files[incoming_name] = _readdressed(samples[handled][0], registry, peer, me)
    reply = None
    if handled == "document.official" and may_send(me, peer, "document.receipt"):
        reply = "document.receipt"
    body = _body(samples[handled][0])
    has_title = any(
        isinstance(child.tag, str) and child.tag.endswith("}Title") for child in (body if body is not None else [])
    )
    return ScaffoldPlan(
        system=system,
        agency=me.agency,
        system_name=me.name,
        system_name_en=me.name_en or me.name,
        handled=handled,
        peer=peer.id,
        peer_agency=peer.agency,
        sent=sent,
        target=target.id,
        target_agency=target.agency,
        samples=files,
        outgoing_sample=outgoing_name,
        incoming_sample=incoming_name,
        reply=reply,
        has_title=has_title,
    )


@functools.lru_cache(maxsize=4)
def _world(
    directory_file: Path, routes_dir: Path, schemas_dir: Path
) -> tuple[Any, Any, Any, dict[str, tuple[bytes, int]]]:
    """The directory, the route table, the schema registry and the samples (loaded once per process)."""
    from hub.directory import load_directory
    from hub.routing import load_routes, route_files
    from hub.validation import SchemaRegistry

    directory = load_directory(directory_file)
    return (
        directory,
        load_routes(route_files(routes_dir), directory),
        SchemaRegistry(schemas_dir),
        _samples(schemas_dir),
    )


def _samples(schemas_dir: Path) -> dict[str, tuple[bytes, int]]:
    """service → (the bytes of its valid version-1 sample with the lowest 密级, that level); among equals the first
    by file name."""
    from hub.envelope import parse
    from hub.envelope.model import CLASSIFICATIONS

    out: dict[str, tuple[bytes, int]] = {}
    for folder in sorted((schemas_dir / "services").glob("*/1/samples/valid")):
        service = folder.parent.parent.parent.name
        for path in sorted(folder.glob("*.xml")):
            data = path.read_bytes()
            label = parse(data).findtext(f"{_ENV}Header/{_ENV}Classification")
            level = CLASSIFICATIONS.index(label) if label in CLASSIFICATIONS else len(CLASSIFICATIONS)
            if service not in out or level < out[service][1]:
                out[service] = (data, level)
    return out


def _body(data: bytes) -> Any:
    from hub.envelope import parse

    body = parse(data).find(f"{_ENV}Body")
    return body[0] if body is not None and len(body) else None


def _readdressed(data: bytes, registry: Any, sender: Any, target: Any) -> bytes:
    """A sample envelope sent by ``sender`` to ``target`` (主送) with a fresh message id, checked by the schemas."""
    from lxml import etree

    from hub.envelope import parse

    root = parse(data)
    header = root.find(f"{_ENV}Header")
    assert header is not None
    mid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"sample:{sender.id}:{target.id}:{data.hex()[:64]}"))
    for tag in ("MessageId", "ConversationId"):
        el = header.find(_ENV + tag)
        if el is not None:
            el.text = mid
    snd = header.find(f"{_ENV}Sender")
    assert snd is not None
    snd.set("agency", sender.agency)
    snd.set("system", sender.id)
    recipients = header.find(f"{_ENV}Recipients")
    assert recipients is not None
    for child in list(recipients):
        recipients.remove(child)
    recipients.text = "\n      "
    agency = etree.SubElement(recipients, f"{_ENV}Agency")
    agency.set("role", "to")
    agency.set("code", target.agency)
    agency.set("system", target.id)
    agency.tail = "\n    "
    out: bytes = etree.tostring(root, xml_declaration=True, encoding="UTF-8") + b"\n"
    registry.validate(parse(out))
    return out


# ================================================================================================ rendering


def _template(name: str) -> string.Template:
    return string.Template((TEMPLATES / name).read_text(encoding="utf-8"))


def render_scaffold(name: str, plan: ScaffoldPlan) -> dict[str, bytes]:
    """The files of the package ``name`` (relative path → bytes)."""
    handled_cls, sent_cls = class_name(plan.handled), class_name(plan.sent)
    classes = {handled_cls, sent_cls}
    reply_cls = class_name(plan.reply) if plan.reply else None
    if reply_cls:
        classes.add(reply_cls)
    handler_name = plan.handled.split(".")[-1].replace("-", "_")
    summary = "msg.title" if plan.has_title else "ctx.business_ref or ctx.service_id"
    values = {
        "name": name,
        "system": plan.system,
        "agency": plan.agency,
        "system_name": plan.system_name,
        "system_name_en": plan.system_name_en,
        "handled": plan.handled,
        "handled_class": handled_cls,
        "sent_class": sent_cls,
        "handler_name": handler_name,
        "summary": summary,
        "peer": plan.peer,
        "peer_agency": plan.peer_agency,
        "target": plan.target,
        "target_agency": plan.target_agency,
        "incoming_sample": plan.incoming_sample,
        "outgoing_sample": plan.outgoing_sample,
    }
    if reply_cls:
        values |= {
            "reply_zh": f"，并回复签收回执（{plan.reply}）",
            "reply_en": f",\nand answers each with a {plan.reply} (received)",
            "stdlib_imports": "from datetime import datetime, timedelta, timezone",
            "constants": "\n#: 中国标准时间 · China Standard Time\nCST = timezone(timedelta(hours=8))\n",
            "return_type": reply_cls,
            "reply_block": (
                "    # 返回的报文即为回复：经枢纽送回发送方，以 RefToMessageId 与 RequestHash 绑定本报文。\n"
                "    # The message returned is the reply: sent back to the sender through the hub, bound to this one.\n"
                f"    return {reply_cls}(\n"
                "        document_message_id=ctx.message_id,\n"
                "        recipient_agency_code=AGENCY,\n"
                '        status="received",\n'
                "        at=datetime.now(CST),\n"
                "    )\n"
            ),
        }
    else:
        values |= {
            "reply_zh": "",
            "reply_en": "",
            "stdlib_imports": "",
            "constants": "",
            "return_type": "None",
            "reply_block": "",
        }
    values["message_imports"] = ", ".join(sorted(classes | {"Message"}))
    values["adapter_imports"] = ", ".join(sorted({handled_cls} | ({reply_cls} if reply_cls else set())))
    values["reply_assertions"] = (
        (
            f"        [reply] = await hub.received(PEER)  # the handler's {plan.reply}, bound to the message\n"
            "        assert reply.context.ref_to == receipt.message_id\n"
            "        assert reply.context.sender.system == SYSTEM\n"
            f'        assert isinstance(reply.message, {reply_cls}) and reply.message.status == "received"\n'
        )
        if reply_cls
        else ""
    )
    adapter_py = _tidy(_template("adapter.py.tmpl").substitute(values))
    test_py = _tidy(_template("test_adapter.py.tmpl").substitute(values))
    files: dict[str, bytes] = {
        "__init__.py": _template("package_init.py.tmpl").substitute(values).encode(),
        "adapter.py": adapter_py.encode(),
        "settings.toml": _template("settings.toml.tmpl").substitute(values).encode(),
        "tests/__init__.py": _template("tests_init.py.tmpl").substitute(values).encode(),
        "tests/test_adapter.py": test_py.encode(),
        # The adapter's home holds its private key and broker password, the enrolment file its certificate bundle:
        # `git add adapters/NAME` must not take them along.
        ".gitignore": (
            "# 私钥、代理密码、入网文件不入版本库 · keys, broker password and enrolment files stay out of git\n"
            "home/\n*.enrolment.json\nrequest.csr\n*.key\n"
        ).encode(),
    }
    for sample_name, data in plan.samples.items():
        files[f"samples/{sample_name}"] = data
    return files


def _tidy(text: str) -> str:
    """Drop the blank lines an empty substitution leaves (at most two in a row, one at the end)."""
    text = re.sub(r"\n{4,}", "\n\n\n", text)
    text = re.sub(r"(import [^\n]*\n)\n(from pathlib)", r"\1\2", text)  # an empty stdlib import slot
    text = re.sub(r"^(import sqlite3)\n\n(from pathlib)", r"\1\n\2", text, flags=re.M)
    return text.rstrip("\n") + "\n"


def _valid_name(name: str) -> str:
    import keyword

    if not name.isidentifier() or keyword.iskeyword(name) or not name.isascii() or name == "sdk":
        raise AdapterCommandError(
            "ADAPTER_NAME", f"{name!r}: use lower-case letters, digits and _ (e.g. yushu_oa); 'sdk' is taken"
        )
    return name


@_refusals
def cmd_new(args: argparse.Namespace, settings: Settings) -> int:
    name = _valid_name(args.name)
    base = Path(args.dir) if args.dir else Path("adapters")
    target = base / name
    if target.exists():
        raise AdapterCommandError("ADAPTER_EXISTS", f"{target} exists; choose another name or --dir")
    plan = plan_scaffold(
        args.system,
        directory_file=Path(args.directory) if args.directory else settings.routes_dir / "directory.xml",
        routes_dir=settings.routes_dir,
        schemas_dir=settings.schemas_dir,
    )
    files = render_scaffold(name, plan)
    for rel, data in files.items():
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    print(f"适配器已生成 adapter {name} for {plan.system} in {target}/")
    print(f"  handles  {plan.handled}/1 (e.g. from {plan.peer})" + (f", replies {plan.reply}/1" if plan.reply else ""))
    print(f"  sends    samples/{plan.outgoing_sample}: {plan.sent}/1 to {plan.target}")
    print(f"  test     python -m pytest -q {target}/tests        (HUB_TEST_REAL=1: against the real hub)")
    print(f"  enrol    hub adapter enrol --system {plan.system} --agency {plan.agency} --home {target}/home")
    print(f"  run      hub adapter run {name} --config {target}/settings.toml")
    return 0


# ================================================================================================ enrolment


@_refusals
def cmd_enrol(args: argparse.Namespace, settings: Settings) -> int:
    home = Path(args.home)
    if args.accept:
        return _accept(Path(args.accept), home)
    if not args.system or not args.agency:
        raise AdapterCommandError("ADAPTER_SETTINGS", "give --system ID and --agency CODE (or --accept BUNDLE.json)")
    from cryptography.hazmat.primitives import serialization

    from hub.errors import ConfigError
    from hub.trust import keys, pki

    key_path, csr_path = home / "key.pem", home / "request.csr"
    if key_path.exists():
        raise AdapterCommandError(
            "ADAPTER_EXISTS", f"{key_path} exists; a private key is never overwritten (use another --home)"
        )
    key = keys.generate_private_key(args.algorithm)
    try:
        csr = pki.make_csr(key, args.agency, args.system, args.name)
    except (ConfigError, ValueError) as exc:
        raise AdapterCommandError("ADAPTER_SETTINGS", str(getattr(exc, "detail", exc))) from None
    home.mkdir(parents=True, exist_ok=True)
    keys.write_private_file(key_path, keys.private_key_pem(key, None))
    keys.write_public_file(csr_path, csr.public_bytes(serialization.Encoding.PEM))
    print(f"私钥已生成，留在本机 · private key ({args.algorithm}, mode 0600, never sent): {key_path}")
    print(f"证书请求 · certificate request for {args.agency}/{args.system}: {csr_path}")
    print("请将证书请求（仅此文件）交给枢纽运维人员 · send only the request to the hub's operator, who runs:")
    print(f"  hub adapter approve {csr_path} --out {args.system}.enrolment.json")
    print("收到入网文件后 · when the enrolment file comes back:")
    print(f"  hub adapter enrol --accept {args.system}.enrolment.json --home {home}")
    return 0


def _bundle_field(bundle: dict[str, Any], key: str) -> Any:
    value = bundle.get(key)
    if not value:
        raise AdapterCommandError("ADAPTER_BUNDLE_INVALID", f"the enrolment file has no {key!r}", exit=1)
    return value


def _accept(bundle_path: Path, home: Path) -> int:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature

    from adapters.sdk._home import write_home
    from hub.errors import HubError
    from hub.trust import keys, pki

    key_path = home / "key.pem"
    if not key_path.is_file():
        raise AdapterCommandError(
            "ADAPTER_NOT_ENROLLED", f"no private key at {key_path}: run hub adapter enrol --system … --home {home}"
        )
    try:
        bundle = json.loads(bundle_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AdapterCommandError("ADAPTER_BUNDLE_INVALID", f"{bundle_path}: {exc}", exit=1) from None
    if not isinstance(bundle, dict) or bundle.get("format") != BUNDLE_FORMAT:
        raise AdapterCommandError("ADAPTER_BUNDLE_INVALID", f"{bundle_path} is not a {BUNDLE_FORMAT} file", exit=1)
    chain_pem = str(_bundle_field(bundle, "certificate_chain")).encode()
    root_pem = str(_bundle_field(bundle, "hub_root")).encode()
    broker = _bundle_field(bundle, "broker")
    try:
        chain = x509.load_pem_x509_certificates(chain_pem)
        [root] = x509.load_pem_x509_certificates(root_pem)
        crls = {Path(str(n)).name: base64.b64decode(str(d), validate=True) for n, d in bundle.get("crls", {}).items()}
        url, namespace = str(broker["url"]), str(broker["namespace"])
    except (ValueError, KeyError, TypeError) as exc:
        raise AdapterCommandError("ADAPTER_BUNDLE_INVALID", f"{bundle_path}: {exc}", exit=1) from None
    try:
        key = keys.load_private_key(key_path)
    except HubError as exc:
        raise AdapterCommandError("ADAPTER_NOT_ENROLLED", f"{key_path}: {exc.detail}") from None
    leaf = chain[0]
    if keys.spki(leaf.public_key()) != keys.spki(key.public_key()):
        raise AdapterCommandError(
            "ADAPTER_KEY_MISMATCH",
            f"the certificate in {bundle_path} ({pki.serial_hex(leaf.serial_number)}) is not for the key in "
            f"{key_path}: was the request made in another directory?",
            exit=1,
        )
    path = chain if chain[-1] == root else [*chain, root]
    try:
        root.verify_directly_issued_by(root)  # the anchor is a self-signed root
        for cert, issuer in itertools.pairwise(path):
            cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        raise AdapterCommandError(
            "ADAPTER_CHAIN_UNTRUSTED",
            f"the certificate chain in {bundle_path} does not lead to the hub root in it "
            f"(sha256 {pki.fingerprint(root)[:16]}…)",
            exit=1,
        ) from None
    agency, system = pki.agency_and_system(leaf.subject)
    write_home(
        home,
        key_pem=None,
        cert_pem=pki.certificate_pem(*chain),
        root_pem=root_pem,
        crls=crls,
        amqp_url=url,
        namespace=namespace,
    )
    print(f"入网完成 · enrolled {agency}/{system} in {home}")
    print(
        f"  certificate {pki.serial_hex(leaf.serial_number)}, valid until {leaf.not_valid_after_utc:%Y-%m-%d}; "
        f"hub root sha256 {pki.fingerprint(root)[:16]}…; {len(crls)} CRL(s); namespace {namespace}"
    )
    # settings.toml reads ``home`` relative to its own folder: a path relative to here would point elsewhere.
    print(
        f'  settings: system = "{system}", home = "{home.resolve()}" (or relative to the settings file\'s folder); '
        "then hub adapter run NAME --config settings.toml"
    )
    return 0


@_refusals
def cmd_approve(args: argparse.Namespace, settings: Settings) -> int:
    from hub.trust import pki

    csr_path = Path(args.csr)
    try:
        csr_bytes = csr_path.read_bytes()
    except OSError as exc:
        raise AdapterCommandError("ADAPTER_SETTINGS", f"cannot read {csr_path}: {exc.strerror}") from None
    agency, system, _ = pki.validate_csr(pki.load_csr(csr_bytes))
    pki_dir = Path(args.pki) if args.pki else Path(settings.state_dir) / "pki"
    bundle = asyncio.run(approve(settings, pki_dir, csr_bytes, days=args.days, amqp_url=args.amqp_url))
    from adapters.sdk._home import write_private

    out = Path(args.out)
    write_private(out, json.dumps(bundle, ensure_ascii=False, indent=2).encode() + b"\n")
    print(f"已签发 · issued {bundle['serial']} for {agency}/{system}, valid until {bundle['not_after'][:10]}")
    from cryptography import x509

    from hub.commands.pki import registration_hint

    issued = pki.fingerprint(x509.load_pem_x509_certificates(bundle["certificate_chain"].encode())[0])
    print(f"  sha256 {issued}")
    registration_hint(settings, system, issued)
    print(f"  RabbitMQ user {bundle['broker']['user']} (namespace {bundle['broker']['namespace']}) provisioned")
    print(f"入网文件 · enrolment file (mode 0600, holds the system's broker password): {out}")
    print(f"  send it to the agency over a protected channel; they run: hub adapter enrol --accept {out.name} --home …")
    return 0


async def approve(
    settings: Settings, pki_dir: Path, csr: bytes, *, days: int | None = None, amqp_url: str | None = None
) -> dict[str, Any]:
    """The operator's side of enrolment: issue (``trust_admin.issue``), provision the system's RabbitMQ user,
    declare its queue, and return the bundle (a JSON-able dict)."""
    from yarl import URL

    from hub.commands import trust_admin as admin
    from hub.directory.model import Directory
    from hub.errors import ConfigError
    from hub.store.db import connection
    from hub.store.directory import DirectoryRepository
    from hub.transport import Transport
    from hub.transport.names import Names
    from hub.transport.users import amqp_url_for, provision
    from hub.trust import pki

    agency, system, _ = pki.validate_csr(pki.load_csr(csr))
    async with connection(settings.pg_dsn) as conn:
        try:
            directory: Directory = await DirectoryRepository(conn).load()
        except ConfigError as exc:
            raise AdapterCommandError("ADAPTER_NOT_IN_DIRECTORY", exc.detail, exit=1) from None
    if not directory.has_system(system) or system == directory.hub_system:
        raise AdapterCommandError(
            "ADAPTER_NOT_IN_DIRECTORY",
            f"system {system!r} is not in the loaded directory: add it to the directory file and run "
            "hub directory load first",
            exit=1,
        )
    registered = directory.system(system).agency
    if registered != agency:
        raise AdapterCommandError(
            "ADAPTER_AGENCY_MISMATCH",
            f"the request names agency {agency} for {system}, the directory {registered}",
            exit=1,
        )
    issued = await admin.issue(settings, pki_dir, csr, days=days or pki.LEAF_DAYS)
    await provision(settings, [(system, None)])
    transport = await Transport.connect(settings, client_name="hub-adapter-approve")
    try:
        await transport.declare_topology([system])
    finally:
        await transport.close()
    url = amqp_url_for(settings, system)
    if amqp_url:
        enrolled = URL(url)
        url = str(URL(amqp_url).with_user(enrolled.user).with_password(enrolled.password))
    paths = pki.PkiPaths(pki_dir)
    hub_agency, _ = pki.agency_and_system(pki.load_certificates(paths.hub_cert)[0].subject)
    chain = [issued.certificate] + ([issued.issuer] if issued.issuer is not None else [])
    return {
        "format": BUNDLE_FORMAT,
        "system": system,
        "agency": agency,
        "serial": issued.serial,
        "not_after": issued.certificate.not_valid_after_utc.isoformat(),
        "certificate_chain": pki.certificate_pem(*chain).decode(),
        "hub_root": paths.root_cert.read_text(encoding="ascii"),
        "crls": {p.name: base64.b64encode(p.read_bytes()).decode() for p in sorted(paths.crl_dir.glob("*.crl"))},
        "broker": {"url": url, "namespace": settings.namespace, "user": Names(settings.namespace).user(system)},
        "hub_agency": hub_agency,
    }


# ================================================================================================ run


def load_adapter(name: str, search: Iterable[Path] = ()) -> Any:
    """The ``adapter`` object of ``name``: a package under ``adapters/`` (``adapters.NAME.adapter``), or an
    importable module path (``pkg.adapter``, or ``pkg`` whose ``adapter`` submodule holds it)."""
    from adapters.sdk import Adapter

    # The working directory, and its adapters/ folder when that is not a package (an agency's own checkout, where
    # ``hub adapter new`` put NAME/ into ./adapters and ``adapters`` is the installed SDK's package).
    folders = [Path.cwd(), *search]
    if (Path.cwd() / "adapters").is_dir() and not (Path.cwd() / "adapters" / "__init__.py").exists():
        folders.append(Path.cwd() / "adapters")
    for folder in folders:
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    candidates = [name] if "." in name else [f"adapters.{name}.adapter", f"{name}.adapter", name]
    missing: list[str] = []
    for module_name in candidates:
        for attempt in (module_name, module_name + ".adapter"):
            try:
                module = importlib.import_module(attempt)
            except ModuleNotFoundError as exc:
                if exc.name and (attempt == exc.name or attempt.startswith(exc.name + ".")):
                    missing.append(attempt)
                    continue
                raise AdapterCommandError("ADAPTER_MODULE", f"importing {attempt}: {exc}") from None
            except Exception as exc:  # the adapter's own import-time error: say which, without a traceback
                raise AdapterCommandError(
                    "ADAPTER_MODULE", f"importing {attempt}: {type(exc).__name__}: {exc}"
                ) from None
            found = getattr(module, "adapter", None)
            if isinstance(found, Adapter):
                return found
    raise AdapterCommandError(
        "ADAPTER_MODULE",
        f"no Adapter named 'adapter' in {', '.join(dict.fromkeys(candidates))} (is {name} on the path?)",
    )


@_refusals
def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from adapters.sdk import AdapterSettings, SdkError
    from hub import logs

    logs.setup(args.log_level)
    try:
        adapter_settings = AdapterSettings.from_file(args.config)
    except SdkError as exc:
        raise AdapterCommandError("ADAPTER_SETTINGS", str(exc)) from None
    adapter = load_adapter(args.name)
    if adapter_settings.system != adapter.system:
        raise AdapterCommandError(
            "ADAPTER_SETTINGS",
            f"{args.config} is for system {adapter_settings.system!r}, the adapter {adapter.system!r}",
        )
    adapter.settings = adapter_settings
    try:
        asyncio.run(adapter.run())
    except SdkError as exc:
        print(f"hub: {exc}", file=sys.stderr)
        return 2
    return 0


@_refusals
def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    """The adapter's self-check: each step's finding, one line each; exit 1 when one failed (warnings pass)."""
    from adapters.sdk import AdapterSettings, SdkError
    from adapters.sdk._check import check

    try:
        adapter_settings = AdapterSettings.from_file(args.config)
    except SdkError as exc:
        raise AdapterCommandError("ADAPTER_SETTINGS", str(exc)) from None
    findings = asyncio.run(check(adapter_settings))
    for finding in findings:
        print(finding.line())
    failed = [f for f in findings if not f.ok]
    print(
        f"✘ {len(failed)} 项未通过 {len(failed)} step(s) failed" if failed else "✔ 自检通过 every step passed",
        file=sys.stderr if failed else sys.stdout,
    )
    return 1 if failed else 0


@_refusals
def cmd_sent(args: argparse.Namespace, settings: Settings) -> int:
    """发文跟踪 at the agency: what the system sent and where each recipient's copy stands, read from the hub's
    gateway with the adapter's enrolment (``adapters.sdk.Tracking``; the adapter itself need not run here)."""
    import datetime as dt

    from adapters.sdk import AdapterSettings, ConfigurationError, SdkError
    from adapters.sdk._tracking import NOT_SIGNED_FOR, Tracking

    try:
        adapter_settings = AdapterSettings.from_file(args.config)
    except SdkError as exc:
        raise AdapterCommandError("ADAPTER_SETTINGS", str(exc)) from None
    adapter_settings = dataclasses.replace(adapter_settings, request_timeout=float(args.timeout))
    if args.since is not None and args.days is not None:
        raise AdapterCommandError("ADAPTER_TRACKING", "--days and --since exclude each other: give one", exit=1)
    # Without --until the window is left open, so the hub's clock ends it (this machine's may be behind the hub's)
    now = dt.datetime.now(dt.UTC)
    try:
        since = args.since or (args.until or now) - dt.timedelta(days=args.days or 1)
    except OverflowError:
        raise AdapterCommandError("ADAPTER_TRACKING", "--until lies too close to the year 1", exit=1) from None

    async def read() -> int:
        async with Tracking.open(adapter_settings) as tracking:
            if args.id:
                if not args.id.strip():
                    raise AdapterCommandError(
                        "ADAPTER_TRACKING", "--id is the id of a message this system sent", exit=1
                    )
                found = await tracking.message_state(args.id)
                if found is None:
                    print(f"没有本系统发出的报文 {args.id} — {adapter_settings.system} sent no such message")
                    return 1
                print(_sent_lines(found, answers=True))
                return 0
            try:  # the arguments (the window, the services) are checked here, before anything is read
                listing = tracking.sent_messages(
                    since=since,
                    until=args.until,
                    delivery=NOT_SIGNED_FOR if args.pending else None,
                    service=args.service,
                    page=200,
                )
            except ValueError as exc:  # e.g. a window outside the years 2 to 9998
                raise AdapterCommandError("ADAPTER_TRACKING", str(exc), exit=1) from None
            print(
                f"发文跟踪 sent by {adapter_settings.system}: {_cn(since)} — "
                + (_cn(args.until) if args.until else "至今 now")
                + "（北京时间 UTC+8）"
                + ("，只列尚有收件方未签收的 only those some recipient has not yet signed for" if args.pending else "")
            )
            total = waiting = 0
            async for sent in listing:
                total += 1
                waiting += bool(sent.not_signed_for)
                print(_sent_lines(sent, answers=False))
            print(
                f"共 {total} 件，其中 {waiting} 件尚有收件方未签收 — {total} message(s), {waiting} with a copy not "
                "yet signed for"
            )
            return 0

    try:
        return asyncio.run(read())
    except SdkError as exc:  # the settings, the enrolment, the certificate or the proxy: 2; the gateway's refusal: 1
        configuration = isinstance(exc, ConfigurationError)
        raise AdapterCommandError("ADAPTER_TRACKING", str(exc), exit=2 if configuration else 1) from None


def _cn(at: Any) -> str:
    from hub.processes.engine import CN_TZ

    return str(at.astimezone(CN_TZ).strftime("%Y-%m-%d %H:%M:%S"))


def _sent_lines(sent: Any, *, answers: bool) -> str:
    """A sent message as an agency's administrator reads it: one line, then one per recipient (and the answers)."""
    from hub.store.records import DELIVERY_ROLE_ZH, MESSAGE_STATE_ZH

    lines = [
        f"{_cn(sent.received_at)}  {sent.service}  {sent.urgency} {sent.classification}  "
        f"{MESSAGE_STATE_ZH.get(sent.state, sent.state)}{f' [{sent.error_code}]' if sent.error_code else ''}  "
        f"{sent.message_id}"
    ]
    for d in sent.deliveries:
        when = d.times.get(d.state)
        lines.append(
            f"    {DELIVERY_ROLE_ZH.get(d.role, d.role)}  {d.system} ({d.agency})  {d.label}"
            + (f"  {_cn(when)}" if when else "")
            + (f" [{d.error_code}]" if d.error_code else "")
        )
    for a in (sent.answers or ()) if answers else ():
        kind = "回执 receipt" if a.kind == "hub.receipt" else "错误 error"
        to = f" to {a.system}" if a.system else ""
        lines.append(f"    枢纽{kind}{to}  {_cn(a.at)}{f' [{a.code}]' if a.code else ''}  {a.receipt_id}")
    return "\n".join(lines)


# ================================================================================================ wiring


def _instant(raw: str) -> Any:
    from hub.envelope.xsdvalue import xsd_datetime

    try:
        at = xsd_datetime(raw)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{raw!r}: {exc}") from None
    if at.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{raw!r} has no offset: e.g. 2026-12-06T08:00:00+08:00")
    return at


def _days(raw: str) -> int:
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= 3660:
        raise argparse.ArgumentTypeError(f"{raw!r}: a whole number of days from 1 to 3660")
    return int(raw)


def _seconds(raw: str) -> int:
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= 600:
        raise argparse.ArgumentTypeError(f"{raw!r}: a whole number of seconds from 1 to 600")
    return int(raw)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from hub.trust.keys import ALGORITHMS

    a = sub.add_parser("adapter", help="the adapter SDK: scaffold, enrol, approve, run (适配器)")
    asub = a.add_subparsers(dest="adapter_command", metavar="ACTION", required=True)

    p = asub.add_parser("new", help="scaffold an adapter package for one system of the directory")
    p.add_argument("name", metavar="NAME", help="the package name (a Python identifier, e.g. yushu_oa)")
    p.add_argument("--system", required=True, metavar="ID", help="the system id, e.g. county-220182-oa")
    p.add_argument("--dir", metavar="DIR", help="where to create NAME/ (default ./adapters)")
    p.add_argument("--directory", metavar="FILE", help="the directory file (default routes/directory.xml)")
    p.set_defaults(handler=cmd_new)

    p = asub.add_parser("enrol", help="agency side: key + CSR into --home; --accept BUNDLE lays the home out")
    p.add_argument("--system", metavar="ID", help="the system id (with --agency; not with --accept)")
    p.add_argument("--agency", metavar="CODE", help="the agency's unified social credit code")
    p.add_argument("--name", metavar="TEXT", help="the agency's name (the certificate subject's O)")
    p.add_argument("--algorithm", choices=ALGORITHMS, default=ALGORITHMS[0], help="key algorithm (default ec-p256)")
    p.add_argument("--accept", metavar="BUNDLE", help="the enrolment file from hub adapter approve")
    p.add_argument("--home", required=True, metavar="DIR", help="the adapter's enrolment directory")
    p.set_defaults(handler=cmd_enrol)

    p = asub.add_parser("approve", help="operator side: issue, provision the broker user, write the enrolment file")
    p.add_argument("csr", metavar="CSR_FILE", help="the request.csr made by hub adapter enrol")
    p.add_argument("--out", required=True, metavar="BUNDLE", help="the enrolment file to write (JSON, mode 0600)")
    p.add_argument("--days", type=int, default=None, help="validity in days (default: as hub pki issue)")
    p.add_argument("--amqp-url", metavar="URL", help="the broker address the agency connects to (default HUB_AMQP_URL)")
    p.add_argument("--pki", metavar="DIR", help="the PKI directory (default: $HUB_STATE_DIR/pki)")
    p.set_defaults(handler=cmd_approve)

    p = asub.add_parser(
        "check",
        help="self-check: the enrolment files, the certificate and CRLs, the way to the hub (gateway, through the "
        "proxy, or broker) and the store; nothing is sent (自检)",
    )
    p.add_argument("--config", required=True, metavar="FILE", help="the adapter's settings.toml")
    p.set_defaults(handler=cmd_check)

    p = asub.add_parser(
        "sent",
        help="发文跟踪: what the system sent and where each recipient's copy stands (签收, 办结 …), read from the "
        "hub's gateway (gateway_url, or tracking_url for an adapter on RabbitMQ)",
    )
    p.add_argument("--config", required=True, metavar="FILE", help="the adapter's settings.toml")
    p.add_argument("--since", type=_instant, metavar="TIME", help="from (with its offset; default --days before)")
    p.add_argument("--until", type=_instant, metavar="TIME", help="to (with its offset; default now)")
    p.add_argument("--days", type=_days, metavar="N", help="days before --until or now (default 1; not with --since)")
    p.add_argument("--pending", action="store_true", help="only messages some recipient has not yet signed for")
    p.add_argument(
        "--service",
        action="append",
        metavar="NAME",
        help="only messages of this service, e.g. document.official (again for more)",
    )
    p.add_argument("--id", metavar="MESSAGE_ID", help="one message, with the hub's answers about it")
    p.add_argument(
        "--timeout",
        type=_seconds,
        default=10,
        metavar="SECONDS",
        help="how long to keep asking a gateway that is unavailable or busy before giving up (default 10; the "
        "settings' request_timeout is for the adapter's own requests)",
    )
    p.set_defaults(handler=cmd_sent)

    p = asub.add_parser("run", help="run an adapter until SIGTERM (JSON logs on standard error)")
    p.add_argument("name", metavar="NAME", help="a package under adapters/ or an importable module path")
    p.add_argument("--config", required=True, metavar="FILE", help="the adapter's settings.toml")
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    p.set_defaults(handler=cmd_run)

"""``check(settings)``: the adapter's self-check (``hub adapter check --config settings.toml``) — what the agency's
administrator runs after enrolment, and what the hub's people on duty ask for first when a bureau says 发不进来.

Each step says what it found, with a stable code and what to do, in both languages: the enrolment directory's files
(the key readable by its owner only), the system's certificate (this system's, issued by the hub CA, its dates, not
revoked in the CRLs at hand, fresh CRLs), every CRL in ``crl/`` (stale, or stale within ``STALE_SOON``: 12 h), the
way to the hub (over HTTPS: the gateway reached — through the agency's proxy when set — and taking the certificate;
over RabbitMQ: the broker taking broker.json's login and the system's queue there, and the gateway of
``tracking_url`` when set; with a gateway, its ``GET /v1/crl`` answering CRLs that verify, from which the running
adapter refreshes ``crl/``) and the handled store. Nothing is sent, nothing is taken from the queue, nothing is
written. One attempt each: the check says what is wrong now, it does not wait for it to pass.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import stat
from dataclasses import dataclass, replace

from adapters.sdk._errors import ConfigurationError
from adapters.sdk._settings import AdapterSettings
from adapters.sdk._trust import EXPIRY_WARNING_DAYS

__all__ = ["Finding", "check"]

_CERTIFICATE = "证书 certificate"
_CRLS = "吊销列表 CRLs"


@dataclass(frozen=True)
class Finding:
    """One step's result: ``ok`` (True), a warning (``ok`` True with ``warning``), or a failure (``ok`` False)."""

    step: str
    ok: bool
    text: str
    code: str = ""
    warning: bool = False

    def line(self) -> str:
        mark = "✘" if not self.ok else "!" if self.warning else "✔"
        return f"{mark} {self.step}: {self.text}" + (f" [{self.code}]" if self.code else "")


async def check(settings: AdapterSettings, *, now: dt.datetime | None = None) -> list[Finding]:
    """Every step's finding, in order; a step that needs one that failed is left out."""
    now = now or dt.datetime.now(dt.UTC)
    found = _files(settings)
    if not all(f.ok for f in found):
        return found
    certificate = _certificate(settings, now)
    found += certificate
    # A missing or stale CRL fails its step but does not end the check: the gateway's GET /v1/crl is the remedy.
    if not all(f.ok or f.code == "CERT_CRL_UNAVAILABLE" for f in certificate):
        return found
    crls, summary = _crl_files(settings, now)
    if summary:
        found = [replace(f, text=f"{f.text}; {summary}") if f.step == _CERTIFICATE and f.ok else f for f in found]
    found += crls
    found.append(await _link(settings))
    if settings.tracking_url:
        found.append(await _tracking(settings))
    if (settings.gateway_url or settings.tracking_url) and found[-1].ok:
        note, more = await _crl_endpoint(settings, now)
        found[-1] = replace(found[-1], text=found[-1].text + note)
        found += more
    found.append(await _store(settings))
    return found


def _files(s: AdapterSettings) -> list[Finding]:
    step = "入网目录 enrolment directory"
    missing = [p.name for p in (s.key_path, s.cert_path, s.root_cert_path) if not p.is_file()]
    if not s.gateway_url and not s.broker_path.is_file():
        missing.append(s.broker_path.name)
    if missing:
        return [
            Finding(
                step,
                False,
                f"{s.home} lacks {', '.join(missing)}: enrol the system first (hub adapter enrol, then --accept the "
                "bundle the hub's operators send) — 尚未完成入网",
                "SDK_NOT_ENROLLED",
            )
        ]
    mode = stat.S_IMODE(s.key_path.stat().st_mode)
    if mode & 0o077:
        return [
            Finding(
                step,
                True,
                f"{s.key_path} can be read by others (mode {mode:o}): chmod 600 it — 私钥文件其他用户可读",
                "SDK_KEY_PERMISSIONS",
                warning=True,
            )
        ]
    return [Finding(step, True, f"{s.home}: key, certificate and the hub root in place")]


def _certificate(s: AdapterSettings, now: dt.datetime) -> list[Finding]:
    from adapters.sdk._trust import load_signer
    from hub.errors import HubError
    from hub.trust import TrustStore

    step = _CERTIFICATE
    try:
        signer = load_signer(s.key_path, s.cert_path)
    except ConfigurationError as exc:
        return [Finding(step, False, exc.detail, exc.code)]
    cert = signer.certificates[0]
    if signer.identity.system != s.system:
        return [
            Finding(
                step,
                False,
                f"cert.pem is system {signer.identity.system!r}'s, these settings are {s.system!r}'s "
                "— 证书不是本系统的",
                "SDK_CONFIG",
            )
        ]
    try:
        store = TrustStore.from_files(s.root_cert_path, s.crl_dir)
    except HubError as exc:
        return [Finding(step, False, f"the hub root or its CRLs: {exc.detail}", exc.code)]
    from cryptography import x509

    from hub.trust.crl import RevocationProblem, check_revocation
    from hub.trust.pki import issued_by

    root = x509.load_pem_x509_certificate(s.root_cert_path.read_bytes())
    # the issuing CA comes with the certificate (cert.pem: the certificate, then its CA); it must be the root's
    issuer = next(
        (ca for ca in (*signer.certificates[1:], *store.issuing) if issued_by(cert, ca) and issued_by(ca, root)),
        None,
    )
    if issuer is None:
        return [
            Finding(
                step,
                False,
                "cert.pem was not issued by the hub CA of hub-root.pem: enrol again — 证书不是枢纽 CA 签发的",
                "CERT_UNTRUSTED",
            )
        ]
    end = cert.not_valid_after_utc
    if not cert.not_valid_before_utc <= now <= end:
        return [
            Finding(
                step,
                False,
                f"valid {cert.not_valid_before_utc:%Y-%m-%d} – {end:%Y-%m-%d}, not now: ask the hub's operators for a "
                "new one — 证书已过期或尚未生效",
                "CERT_EXPIRED",
            )
        ]
    found = []
    # what the verifier asks of every delivery's chain (hub.trust.crl.check_revocation): the issuing CA against the
    # root's CRL, then this certificate against the issuing CA's
    status = check_revocation(store.crl_for, ((issuer, root), (cert, issuer)), now)
    if isinstance(status, RevocationProblem) and status.code == "CERT_CRL_UNAVAILABLE":
        from adapters.sdk._crl import refresh_hint

        whose = "root's" if status.issuer == root else "issuing CA's"
        found.append(
            Finding(
                _CRLS,
                False,
                f"the hub {whose} CRL in {s.crl_dir} is "
                + ("missing" if status.crl is None else f"stale since {status.crl.next_update:%Y-%m-%d %H:%M} UTC")
                + ": deliveries cannot be verified until a fresh one is there — 吊销列表缺失或已过期; "
                + refresh_hint(s),
                "CERT_CRL_UNAVAILABLE",
            )
        )
    elif isinstance(status, RevocationProblem):
        when = f"{status.when:%Y-%m-%d}" if status.when else "?"
        found.append(
            Finding(
                step,
                False,
                f"revoked on {when} ({status.reason}): ask the hub's operators for a new one — 证书已被吊销"
                if status.subject == cert
                else f"the hub issuing CA that issued it was revoked on {when} ({status.reason}): ask the hub's "
                "operators for a certificate from the current CA — 签发本证书的枢纽 CA 已被吊销",
                "CERT_REVOKED",
            )
        )
        return found
    days = (end - now).days
    soon = days <= EXPIRY_WARNING_DAYS  # as the adapter's start warns (warn_if_expiring)
    found.insert(
        0,
        Finding(
            step,
            True,
            f"{s.system}'s, issued by the hub CA, valid until {end:%Y-%m-%d} ({days} days)"
            + ("; ask the hub's operators for a new one now — 证书即将到期" if soon else ""),
            "CERT_EXPIRING" if soon else "",
            warning=soon,
        ),
    )
    return found


def _crl_files(s: AdapterSettings, now: dt.datetime) -> tuple[list[Finding], str]:
    """Every CRL in ``crl/``, the newest of each CA: stale (a warning for a CA other than this certificate's root and
    issuing CA — those ``_certificate`` reports as failures —, whose deliveries the adapter refuses all the same),
    stale within ``STALE_SOON`` (a warning), a file that is no CRL (a warning). The findings (none when all is well)
    and, then, one clause for the certificate step's line."""
    from cryptography import x509

    from adapters.sdk._crl import STALE_SOON, refresh_hint
    from hub.trust.crl import read_crls
    from hub.trust.pki import load_certificates

    read = read_crls(s.crl_dir)
    unreadable = sorted({p.name for p in s.crl_dir.glob("*.crl")} - {p.name for _, p in read})
    newest: dict[x509.Name, tuple[x509.CertificateRevocationList, str]] = {}
    for crl, path in read:
        held = newest.get(crl.issuer)
        if held is None or crl.last_update_utc > held[0].last_update_utc:
            newest[crl.issuer] = (crl, path.name)
    try:
        own = {load_certificates(s.cert_path)[0].issuer, load_certificates(s.root_cert_path)[0].subject}
    except Exception:  # _certificate said what is wrong with them
        own = set()
    found: list[Finding] = []
    if unreadable:
        found.append(
            Finding(
                _CRLS,
                True,
                f"{', '.join(unreadable)} in {s.crl_dir} cannot be read as a CRL with a nextUpdate: ignored — "
                "无法读取的吊销列表文件",
                "SDK_CRL_UNREADABLE",
                warning=True,
            )
        )
    hint = refresh_hint(s)
    for issuer, (crl, name) in sorted(newest.items(), key=lambda kv: kv[1][1]):
        ends = crl.next_update_utc
        assert ends is not None  # read_crls dropped the others
        cn = _common_name(issuer)
        if ends <= now:
            if issuer in own:
                continue  # a failure of the certificate step already
            found.append(
                Finding(
                    _CRLS,
                    True,
                    f"{name} ({cn}) went stale at {ends:%Y-%m-%d %H:%M} UTC: deliveries whose signer's certificate "
                    f"{cn} issued are refused (CERT_CRL_UNAVAILABLE) until a fresh one is there (if the hub retired "
                    f"that CA, the file can go); {hint} — 吊销列表已过期",
                    "CERT_CRL_UNAVAILABLE",
                    warning=True,
                )
            )
        elif ends - now <= STALE_SOON:
            hours = (ends - now).total_seconds() / 3600
            found.append(
                Finding(
                    _CRLS,
                    True,
                    f"{name} ({cn}) goes stale at {ends:%Y-%m-%d %H:%M} UTC, in {hours:.1f} h: after that deliveries "
                    f"are refused (CERT_CRL_UNAVAILABLE) until a fresh one is there; {hint} — 吊销列表即将过期",
                    "SDK_CRL_STALE_SOON",
                    warning=True,
                )
            )
    fresh = [c.next_update_utc for c, _ in newest.values() if c.next_update_utc and c.next_update_utc > now]
    if found or not fresh:
        return found, ""
    return found, f"{len(newest)} CRL(s) in crl/, fresh until {min(fresh):%Y-%m-%d %H:%M} UTC at least"


def _common_name(name: object) -> str:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    assert isinstance(name, x509.Name)
    cns = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else name.rfc4514_string()


async def _crl_endpoint(s: AdapterSettings, now: dt.datetime) -> tuple[str, list[Finding]]:
    """The gateway's ``GET /v1/crl``, which the running adapter refreshes ``crl/`` from: answering, with CRLs that
    verify against hub-root.pem (nothing is written here). A clause for the gateway step's line, and the findings
    when something is wrong."""
    from adapters.sdk._crl import CRL_PATH, REFRESH_CODE, CrlFetchFailed, accept_crls, fetch_crls, held_until
    from hub.trust.pki import load_certificates

    base = s.gateway_url or s.tracking_url
    until = held_until(s.crl_dir)
    lasts = "those in crl/ are stale"
    if until is not None and until > now:
        lasts = f"those in crl/ last until {until:%Y-%m-%d %H:%M} UTC"
    try:
        async with asyncio.timeout(min(s.request_timeout, 30.0)):
            answer = await fetch_crls(s, base)
        update = accept_crls(answer, load_certificates(s.root_cert_path)[0], s.crl_dir, now=now, write=False)
    except (CrlFetchFailed, ValueError, TimeoutError, ConfigurationError) as exc:
        if isinstance(exc, CrlFetchFailed) and exc.status == 404:
            return "", [
                Finding(
                    _CRLS,
                    True,
                    f"{base} does not serve GET {CRL_PATH} (a hub older than it): the adapter cannot refresh its "
                    f"CRLs; ask the hub's operators for pki/crl/*.crl; {lasts} — 网关不提供吊销列表，请向枢纽运维索取",
                    REFRESH_CODE,
                    warning=True,
                )
            ]
        why = getattr(exc, "detail", None) or str(exc) or f"no answer within {min(s.request_timeout, 30.0):g} s"
        return "", [
            Finding(
                _CRLS,
                False,
                f"GET {CRL_PATH} of {base} gave no CRLs ({why}): the adapter cannot refresh its CRLs; {lasts} — "
                "无法从网关获取吊销列表",
                REFRESH_CODE,
            )
        ]
    if update.refused:
        names = ", ".join(f"{n} ({why})" for n, why in update.refused)
        return "", [
            Finding(
                _CRLS,
                False,
                f"the gateway's {names} did not verify against hub-root.pem: the adapter does not take them — "
                "网关提供的吊销列表验证失败",
                REFRESH_CODE,
            )
        ]
    count = len(update.written) + len(update.unchanged)
    newer = (
        f", {len(update.written)} newer than crl/'s (the running adapter takes them within {s.crl_refresh_s} s)"
        if update.written
        else ""
    )
    return f"; GET {CRL_PATH} answers {count} CRL(s) that verify against hub-root.pem{newer}", []


async def _link(s: AdapterSettings) -> Finding:
    if s.gateway_url:
        from adapters.sdk._gateway import probe_gateway

        step = "HTTPS 网关 gateway"
        try:
            status, text = await probe_gateway(s, s.system)
        except ConfigurationError as exc:
            return Finding(step, False, exc.detail, exc.code)
        via = " through the proxy" if s.gateway_proxy else ""
        if status is None:
            return Finding(
                step, False, f"{s.gateway_url} not reached{via}: {text} — 网关不通", "SDK_GATEWAY_UNREACHABLE"
            )
        return Finding(step, True, f"{s.gateway_url} reached{via}; it takes {s.system}'s certificate")
    return await _broker(s)


async def _tracking(s: AdapterSettings) -> Finding:
    """An adapter on RabbitMQ that reads its 发文跟踪 from the gateway (``tracking_url``): reached, and taking the
    certificate."""
    from adapters.sdk._gateway import probe_gateway

    step = "发文跟踪 tracking"
    try:
        status, text = await probe_gateway(s, s.system, base=s.tracking_url)
    except ConfigurationError as exc:
        return Finding(step, False, exc.detail, exc.code)
    if status is None:
        return Finding(
            step, False, f"{s.tracking_url} not reached: {text} — 网关不通，无法查询发文跟踪", "SDK_GATEWAY_UNREACHABLE"
        )
    return Finding(step, True, f"{s.tracking_url} reached; it takes {s.system}'s certificate")


async def _broker(s: AdapterSettings) -> Finding:
    from hub.errors import HubError
    from hub.settings import Settings
    from hub.transport import Transport

    step = "消息中间件 broker"
    try:
        url, namespace = s.broker()
        transport = await Transport.connect(Settings(amqp_url=url, namespace=namespace), url=url, client_name="check")
    except ConfigurationError as exc:
        return Finding(step, False, exc.detail, exc.code)
    except HubError as exc:
        return Finding(step, False, f"{exc.detail} — 消息中间件不通或拒绝登录", exc.code)
    try:
        queue = transport.names.system_queues(s.system)[0]
        depth = await transport.queue_depth(queue)
    except HubError as exc:
        return Finding(step, False, f"its queue: {exc.detail} — 找不到本系统的队列", exc.code)
    finally:
        await transport.close()
    return Finding(step, True, f"reached with broker.json's login; {queue} holds {depth} message(s) for {s.system}")


async def _store(s: AdapterSettings) -> Finding:
    from adapters.sdk._store import open_store

    step = "已处理记录 store"
    kind, target = s.store_target()
    store = open_store(kind, target)
    try:
        await store.open()
    except Exception as exc:  # the store's own error says what (a path not writable, a database not reached)
        return Finding(step, False, f"{kind} {target}: {exc} — 无法打开已处理记录库", "SDK_STORE")
    finally:
        try:
            await store.close()
        except Exception:  # noqa: S110 - closing what did not open
            pass
    return Finding(step, True, f"{kind} {target} opens")

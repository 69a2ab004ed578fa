"""The certificates page (``/certificates``): the hub CA's register, CRL status, revocation and CSR approval.

- The register (``hub.store.certificates``): every certificate the CA issued with its kind, agency/system, serial
  and not-after; expiring within ``EXPIRING_DAYS`` days is highlighted, expired and revoked ones are marked.
- CRL status per CA (root and each issuing CA): the latest published CRL's number, this/next update; a CRL past
  its nextUpdate is *stale* (the verifiers fail closed) and one past half its lifetime is *due*.
- Revoke (``cert.revoke``, the security officer): ``hub.commands.trust_admin.revoke`` — what ``hub pki revoke``
  runs — records the revocation and publishes the issuing CA's new CRL, which the workers pick up within seconds,
  so the next message signed with that certificate is refused (CERT_REVOKED).
- CSRs to approve (``csr.approve``, the security officer): the requests waiting as files in
  ``<state>/pki/requests/*.csr`` (where an agency's ``request.csr`` is put), or one uploaded with the form.
  Approving runs ``hub.commands.adapter.approve`` — what ``hub adapter approve`` runs: the CA issues the
  certificate, the system's RabbitMQ user is provisioned and its queue declared — and writes the enrolment bundle
  (JSON, mode 0600, holds the system's broker password) to ``<state>/pki/enrolments/<system>-<serial>.enrolment.json``
  on the server; it is never served over the web. The request file moves to ``requests/approved/``.

Every action is recorded with ``act`` (``cert.revoke``, ``csr.approve``), with outcome ``refused`` when the CA
refused it (unknown serial, root, a CSR for a system not in the directory …).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from hub import clock
from hub.errors import HubError, title_of
from hub.store.audit import Actor
from monitoring.app import POOL, SETTINGS
from monitoring.auth import act, form_with_csrf, operator_of, render, require
from monitoring.views import form_reason, notice

__all__ = ["EXPIRING_DAYS", "approved_dir", "enrolment_dir", "requests_dir", "setup"]

log = logging.getLogger(__name__)

EXPIRING_DAYS = 30
MAX_CSR_BYTES = 64 * 1024
_CSR_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,120}\.csr")

NOTICES: dict[str, tuple[str, str]] = {
    "OPS_BAD_REASON_CODE": ("未知的吊销原因", "unknown revocation reason"),
    "OPS_CSR_MISSING": ("没有该证书请求文件", "no such certificate request file"),
    "OPS_CSR_TOO_LARGE": ("证书请求文件过大", "the certificate request file is too large"),
    "OPS_BUNDLE_NOT_WRITTEN": (
        "证书已签发、账号已开通，但入网包未能写入服务器（原因见日志）",
        "the certificate was issued and the broker user provisioned, but the enrolment bundle could not be written"
        " (the log says why)",
    ),
    "OPS_REVOKE_KIND": (
        "网页上只能吊销机构系统、TLS 和网关证书；CA 与枢纽证书请用命令行 hub pki revoke / rotate",
        "only system, TLS and gateway certificates are revoked here; CA and hub certificates: hub pki revoke / rotate",
    ),
}
#: Certificate kinds the page revokes (the CAs and the hub's own: on the command line, deliberately).
REVOCABLE_KINDS = frozenset({"agency", "tls", "server"})
#: The revocation reasons of ``hub.trust.pki.REASONS`` with their labels.
REASON_LABELS: dict[str, tuple[str, str]] = {
    "key-compromise": ("密钥泄露", "key compromise"),
    "affiliation-changed": ("隶属关系变更", "affiliation changed"),
    "superseded": ("已被取代", "superseded"),
    "cessation-of-operation": ("停止运行", "cessation of operation"),
    "privilege-withdrawn": ("权限撤销", "privilege withdrawn"),
    "ca-compromise": ("CA 泄露", "CA compromise"),
    "unspecified": ("未指明", "unspecified"),
}
DONE: dict[str, tuple[str, str]] = {
    "revoked": (
        "证书已吊销，新的吊销列表已发布；工作进程数秒内生效",
        "revoked; the new CRL is published and the workers apply it within seconds",
    ),
    "approved": (
        "已签发证书、开通消息中间件账户，入网文件已写入服务器",
        "certificate issued, broker user provisioned, enrolment file written on the server",
    ),
}


def requests_dir(settings: Any) -> Path:
    return Path(settings.state_dir) / "pki" / "requests"


def approved_dir(settings: Any) -> Path:
    return requests_dir(settings) / "approved"


def enrolment_dir(settings: Any) -> Path:
    return Path(settings.state_dir) / "pki" / "enrolments"


def _notice(code: str, detail: str = "") -> dict[str, str]:
    return notice(code, detail, NOTICES)


@dataclass(frozen=True)
class PendingCsr:
    name: str
    agency: str | None
    system: str | None
    key: str
    received: dt.datetime
    problem: str | None


def _read_requests(settings: Any) -> list[PendingCsr]:
    """The CSR files waiting in the requests folder, each checked (signature, key policy, subject)."""
    from hub.trust import keys, pki

    folder = requests_dir(settings)
    out: list[PendingCsr] = []
    if not folder.is_dir():
        return out
    for path in sorted(folder.glob("*.csr")):
        if not path.is_file() or not _CSR_NAME.fullmatch(path.name):
            continue
        received = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC)
        agency = system = None
        key = ""
        problem = None
        try:
            data = path.read_bytes()[: MAX_CSR_BYTES + 1]
            if len(data) > MAX_CSR_BYTES:
                raise HubError("the certificate request file is too large", code="CONFIG")
            csr = pki.load_csr(data)
            key = keys.describe_key(csr.public_key())
            agency, system, _ = pki.validate_csr(csr)
        except HubError as exc:
            problem = f"{exc.code}: {exc.title} — {exc.detail}"
        except (OSError, ValueError, TypeError) as exc:
            problem = f"CONFIG: {title_of('CONFIG')} — {type(exc).__name__}"
        out.append(PendingCsr(path.name, agency, system, key, received, problem))
    return out


async def _page(request: web.Request, *, notice: dict[str, str] | None = None, status: int = 200) -> web.Response:
    from hub.store.certificates import CertificateRepository
    from hub.trust import pki

    settings = request.app[SETTINGS]
    repo = CertificateRepository(request.app[POOL])
    now = clock.now()
    rows = await repo.certificates()
    certs = []
    for row in rows:
        state = row.state(now)
        days = row.days_left(now)
        certs.append(
            {
                "row": row,
                "state": state,
                "days": days,
                "expiring": state == "valid" and days <= EXPIRING_DAYS,
                "revocable": row.kind in REVOCABLE_KINDS and state != "revoked",
            }
        )
    crls = []
    for row in rows:
        if row.kind not in ("root", "issuing"):
            continue
        crl = await repo.latest_crl(row.serial)
        stale = crl is None or now >= crl.next_update
        due = crl is not None and not stale and now >= crl.this_update + (crl.next_update - crl.this_update) / 2
        crls.append({"ca": row, "crl": crl, "stale": stale, "due": due})
    done = request.query.get("done", "")
    target, file = request.query.get("target", ""), request.query.get("file", "")
    registration = await _registration(request, rows, target) if done == "approved" else None
    return render(
        request,
        "certificates.html",
        {
            "certs": certs,
            "crls": crls,
            "requests": _read_requests(settings),
            "requests_dir": str(requests_dir(settings)),
            "enrolment_dir": str(enrolment_dir(settings)),
            "reasons": [(r, REASON_LABELS.get(r, (r, r))) for r in REASON_LABELS if r in pki.REASONS],
            "expiring_days": EXPIRING_DAYS,
            "notice": notice,
            "done": DONE.get(done),
            # what the redirect after an action names, shown only in the shape it has (a link cannot inject text)
            "done_target": target if done in DONE and re.fullmatch(r"[0-9a-f]{1,40}", target) else "",
            "done_file": file if done == "approved" and re.fullmatch(r"[A-Za-z0-9._-]{1,200}", file) else "",
            "registration": registration,
        },
        status=status,
    )


async def _registration(request: web.Request, rows: Any, serial: str) -> dict[str, Any] | None:
    """The certificate just issued (``serial``): its fingerprint, and whether the directory registers its system's
    certificates (cert-sha256) without it — it would be refused (CERT_NOT_REGISTERED) until added."""
    row = next((r for r in rows if r.serial == serial), None)
    if row is None or not row.system:
        return None
    pins: tuple[str, ...] = ()
    try:
        found = await request.app[POOL].fetchval("SELECT cert_sha256 FROM directory_systems WHERE id = $1", row.system)
        pins = tuple(found or ())
    except Exception:  # no directory tables or no answer: the fingerprint alone
        pins = ()
    from hub.commands.trust_admin import registration_attribute

    listed = registration_attribute(row.fingerprint, pins)
    return {"fingerprint": row.fingerprint, "system": row.system, "missing": listed is not None, "attribute": listed}


@require("view")
async def certificates_page(request: web.Request) -> web.StreamResponse:
    return await _page(request)


@require("cert.revoke")
async def certificate_revoke(request: web.Request) -> web.StreamResponse:
    form = await form_with_csrf(request)
    from hub.commands import trust_admin as admin
    from hub.trust import pki

    settings = request.app[SETTINGS]
    serial = str(form.get("serial", "")).strip()
    code = str(form.get("reason_code", "")).strip()
    reason, bad_reason = form_reason(form)
    for refusal in (bad_reason, "OPS_BAD_REASON_CODE" if code not in pki.REASONS else None):
        if refusal is not None:
            await act(
                request,
                "cert.revoke",
                reason=reason,
                target=serial[:64],
                outcome="refused",
                detail={"code": refusal, "reason_code": code[:32]},
            )
            return await _page(request, notice=_notice(refusal), status=400)
    from hub.store.certificates import CertificateRepository

    try:
        found = await CertificateRepository(request.app[POOL]).get(pki.serial_hex(pki.parse_serial(serial)))
        if found is not None and found.kind not in REVOCABLE_KINDS:
            await act(
                request,
                "cert.revoke",
                reason=reason,
                target=found.serial,
                outcome="refused",
                detail={"code": "OPS_REVOKE_KIND", "kind": found.kind},
            )
            return await _page(request, notice=_notice("OPS_REVOKE_KIND"), status=409)
        op = operator_of(request)
        actor = Actor(op.name, op.role, "web")  # recorded in the revocation's transaction
        row, crl, _ = await admin.revoke(
            settings, admin.default_pki_dir(settings), serial, code, actor=actor, note=reason
        )
    except HubError as exc:
        await act(
            request,
            "cert.revoke",
            reason=reason,
            target=serial[:64],
            outcome="refused",
            detail={"code": exc.code, "reason_code": code},
        )
        return await _page(request, notice=_notice(exc.code, exc.detail), status=409)
    log.info("certificate %s revoked; CRL %s of %s published", row.serial, crl.number, crl.issuer_serial)
    raise web.HTTPSeeOther(f"/certificates?done=revoked&target={row.serial}")


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


async def _refuse_csr(request: web.Request, reason: str, target: str, code: str, status: int) -> web.Response:
    await act(request, "csr.approve", reason=reason, target=target, outcome="refused", detail={"code": code})
    return await _page(request, notice=_notice(code), status=status)


@require("csr.approve")
async def csr_approve(request: web.Request) -> web.StreamResponse:
    form = await form_with_csrf(request)
    from hub.commands.adapter import AdapterCommandError, approve

    settings = request.app[SETTINGS]
    reason, bad_reason = form_reason(form)
    name = str(form.get("name", "")).strip()
    upload = form.get("csr_file")
    source: Path | None = None
    if upload is not None and hasattr(upload, "file"):
        data = upload.file.read(MAX_CSR_BYTES + 1)
        # Only recorded, but as the record can hold it (a multipart file name may carry a path or a NUL).
        given = Path(str(getattr(upload, "filename", "") or "")).name
        target = given if _CSR_NAME.fullmatch(given) else "upload.csr"
        if len(data) > MAX_CSR_BYTES:
            return await _refuse_csr(request, reason, target, "OPS_CSR_TOO_LARGE", 400)
    else:
        if not _CSR_NAME.fullmatch(name) or not (requests_dir(settings) / name).is_file():
            return await _refuse_csr(request, reason, name[:128], "OPS_CSR_MISSING", 404)
        source = requests_dir(settings) / name
        data = source.read_bytes()[: MAX_CSR_BYTES + 1]
        target = name
    if bad_reason is not None:
        return await _refuse_csr(request, reason, target, bad_reason, 400)
    from hub.commands import trust_admin as admin

    try:
        bundle = await approve(settings, admin.default_pki_dir(settings), data)
    except (HubError, AdapterCommandError) as exc:
        code = getattr(exc, "code", "CONFIG")
        detail = str(getattr(exc, "detail", exc))
        await act(request, "csr.approve", reason=reason, target=target[:128], outcome="refused", detail={"code": code})
        if isinstance(exc, AdapterCommandError):
            from hub.commands.adapter import CODES

            return await _page(request, notice={"code": code, "zh": CODES.get(code, code), "en": detail}, status=409)
        return await _page(request, notice=_notice(code, detail), status=409)
    # The CA has issued the certificate and the system's broker user exists: that is the action, recorded before
    # anything else can fail (a bundle that cannot be written must not leave an unrecorded certificate behind).
    out = enrolment_dir(settings) / f"{bundle['system']}-{bundle['serial']}.enrolment.json"
    await act(
        request,
        "csr.approve",
        reason=reason,
        target=f"{bundle['agency']}/{bundle['system']}",
        detail={"serial": bundle["serial"], "request": target[:128], "bundle": out.name},
    )
    log.info("CSR approved on the ops page: %s/%s serial %s", bundle["agency"], bundle["system"], bundle["serial"])
    try:
        _write_private(out, json.dumps(bundle, ensure_ascii=False, indent=2).encode() + b"\n")
        if source is not None:
            approved_dir(settings).mkdir(parents=True, exist_ok=True)
            source.replace(approved_dir(settings) / source.name)
    except OSError as exc:
        log.error("CSR approved but its enrolment bundle %s was not written: %s", out, type(exc).__name__)
        await act(
            request,
            "csr.approve",
            reason=reason,
            target=f"{bundle['agency']}/{bundle['system']}",
            outcome="failed",
            detail={"code": "OPS_BUNDLE_NOT_WRITTEN", "serial": bundle["serial"], "bundle": out.name},
        )
        return await _page(request, notice=_notice("OPS_BUNDLE_NOT_WRITTEN"), status=500)
    raise web.HTTPSeeOther(f"/certificates?done=approved&target={bundle['serial']}&file={out.name}")


def setup(app: web.Application) -> None:
    app.router.add_get("/certificates", certificates_page)
    app.router.add_post("/certificates/revoke", certificate_revoke)
    app.router.add_post("/certificates/approve", csr_approve)

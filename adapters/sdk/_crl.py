"""Fresh CRLs for an agency's adapter, from the hub's HTTPS gateway (``GET /v1/crl``; docs/gateway.md).

Every delivery is opened against the hub CA's CRLs in ``home/crl/`` (``adapters.sdk._trust``), and a CRL past its
nextUpdate counts as missing: the delivery is refused with ``CERT_CRL_UNAVAILABLE`` (fail closed). The hub publishes
CRLs valid for ``crl_hours`` (a day by default); enrolment writes those of its moment. So an adapter that names the
gateway — ``gateway_url``, or ``tracking_url`` for an adapter on RabbitMQ — fetches ``GET /v1/crl`` at start (before
its first delivery) and then every ``crl_refresh_s`` (``CrlRefresher``), on a connection set up as the SDK's gateway
link (mutual TLS with its key and certificate, the hub root the only trust anchor, through ``gateway_proxy`` when
set). What comes back is checked here, not taken on the gateway's word (``accept_crls``):

- each CRL's signature must verify with the hub root (``hub-root.pem``), or with an issuing CA certificate that the
  root issued and that is a CA valid now (the answer carries it: after ``hub pki rollover-issuing`` the adapter has
  not seen the new issuing CA yet) — ``hub.trust.crl.crl_of``, the verifier's own rule; anything else is never
  written;
- it must not be older (thisUpdate) than the newest CRL of the same CA already in ``crl/``;
- it is written atomically (a temporary file, then ``os.replace``) under the hub's own file name (``root-ca.crl``,
  ``issuing-ca.crl``, ``issuing-ca-<serial>.crl``: the names enrolment wrote), in PEM, and the adapter's trust store
  re-reads the folder at once (``TrustStore.refresh``).

A fetch that fails — the gateway unreachable, its CRLs stale too (503 ``CERT_CRL_UNAVAILABLE``), an answer that does
not verify — logs one WARNING ``SDK_CRL_REFRESH`` saying until when the CRLs at hand last, and is tried again at the
next period: it never stops the adapter. Without a gateway URL nothing is fetched: the hub's operators send
``pki/crl/*.crl`` and the agency copies them into ``crl/`` (daily, and after every issuing-CA rollover).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime as dt
import json
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters.sdk._trust import AgencyTrust

if TYPE_CHECKING:
    from cryptography import x509

    from adapters.sdk._settings import AdapterSettings
    from adapters.sdk._trust import Opened
    from hub.trust import TrustStore
    from hub.trust.crl import LoadedCrl

__all__ = [
    "CRL_PATH",
    "REFRESH_CODE",
    "STALE_SOON",
    "CrlFetchFailed",
    "CrlRefresher",
    "CrlUpdate",
    "HintedTrust",
    "accept_crls",
    "fetch_crls",
    "held_until",
    "hint_for",
    "refresh_hint",
]

log = logging.getLogger("adapters.sdk")

#: The gateway's endpoint.
CRL_PATH = "/v1/crl"
#: The stable code of a failed refresh (the WARNING's, and ``hub adapter check``'s).
REFRESH_CODE = "SDK_CRL_REFRESH"
#: ``hub adapter check`` warns about a CRL that goes stale within this.
STALE_SOON = dt.timedelta(hours=12)
#: A file name the adapter writes: the hub's own names, nothing with a path in it.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,120}\.crl")
#: The most of an answer read (a CRL of many thousand revocations is well under a megabyte).
MAX_ANSWER_BYTES = 16 * 1024 * 1024
#: A CERT_CRL_UNAVAILABLE delivery asks for a fetch now, but not more often than this.
_KICK_EVERY_S = 60.0


class CrlFetchFailed(RuntimeError):
    """``GET /v1/crl`` gave no answer to check: one sentence, and the HTTP status when the gateway answered."""

    def __init__(self, why: str, status: int | None = None) -> None:
        super().__init__(why)
        self.status = status


class _Untrusted(ValueError):
    """A CRL of the answer that is not written: why, in one sentence."""


class _Expired(ValueError):
    """A CRL of an issuing CA whose own certificate has expired (a CA the hub retired): nothing it signed verifies
    any more, so its CRL is of no use — left alone, without a warning."""


@dataclass(frozen=True, slots=True)
class CrlUpdate:
    """What one answer of ``GET /v1/crl`` did to ``crl/``: the file names written (with ``write=False``: that would
    be), those left as they are (the same CRL, one at least as new already there, or one of an issuing CA whose
    certificate has expired), and those refused (name, why) — not verified, so never written."""

    written: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    refused: tuple[tuple[str, str], ...] = ()
    #: The soonest nextUpdate of the CRLs the answer carried (verified ones), for the log.
    fresh_until: dt.datetime | None = None


def accept_crls(
    answer: Any, root: x509.Certificate, crl_dir: Path, *, now: dt.datetime | None = None, write: bool = True
) -> CrlUpdate:
    """Check ``GET /v1/crl``'s JSON ``answer`` against the hub ``root`` and write into ``crl_dir`` every CRL that
    verifies and is not older than the one of its CA there (``write=False``: only say what would be written).
    A ``ValueError`` when the answer is not a list of CRLs at all."""
    from cryptography.hazmat.primitives import serialization

    from hub.trust.crl import crl_of, read_crls

    now = now or dt.datetime.now(dt.UTC)
    crls = answer.get("crls") if isinstance(answer, dict) else None
    if not isinstance(crls, list):
        raise ValueError('the gateway\'s answer is not {"crls": [...]}')
    on_disk = read_crls(crl_dir)
    written: list[str] = []
    unchanged: list[str] = []
    refused: list[tuple[str, str]] = []
    fresh_until: dt.datetime | None = None
    for item in crls:
        name = str(item.get("name")) if isinstance(item, dict) else "?"
        try:
            crl, loaded, ca = _verified(item, root, now)
        except _Untrusted as exc:
            refused.append((name[:130], str(exc)))
            continue
        except _Expired:
            unchanged.append(name)
            continue
        if fresh_until is None or loaded.next_update < fresh_until:
            fresh_until = loaded.next_update
        der = crl.public_bytes(serialization.Encoding.DER)
        held = crl_of(on_disk, ca)  # the newest one of the same CA the adapter has (its signature checked too)
        if held is not None and loaded.this_update < held.this_update:
            unchanged.append(name)  # an older one than the adapter has: the newer stays
            continue
        # The file is named by the CA that signed the CRL, never by the answer: a name from the answer could put
        # one CA's CRL over another's file (its only CRL gone, so an older one of that CA then passed the check
        # above: a revocation undone). The CA's own file where the adapter has one, else root-ca.crl or
        # issuing-ca-<serial>.crl.
        target = _file_for(on_disk, ca, root, crl_dir, name)
        name = target.name
        if any(path == target and c.public_bytes(serialization.Encoding.DER) == der for c, path in on_disk):
            unchanged.append(name)
            continue
        if write:
            _write(target, crl.public_bytes(serialization.Encoding.PEM))
        written.append(name)
    return CrlUpdate(tuple(written), tuple(unchanged), tuple(refused), fresh_until)


def _file_for(
    on_disk: list[tuple[x509.CertificateRevocationList, Path]],
    ca: x509.Certificate,
    root: x509.Certificate,
    crl_dir: Path,
    name: str,
) -> Path:
    """Where the CRL of ``ca`` goes: the file of ``crl_dir`` that holds one of its CRLs (the newest); else ``name``
    (the hub's file name, from the answer) when no file has it; else a name of its own. Never a file that holds
    another CA's CRL."""
    from hub.trust.crl import crl_of
    from hub.trust.pki import serial_hex

    held = crl_of(on_disk, ca)
    if held is not None and held.path is not None:
        return held.path
    taken = {path.name for _, path in on_disk}
    if name not in taken and not (crl_dir / name).exists():
        return crl_dir / name
    own = "root-ca.crl" if ca.subject == root.subject else f"issuing-ca-{serial_hex(ca.serial_number)}.crl"
    if own not in taken and not (crl_dir / own).exists():
        return crl_dir / own
    return crl_dir / f"ca-{serial_hex(ca.serial_number)}.crl"


def _verified(
    item: Any, root: x509.Certificate, now: dt.datetime
) -> tuple[x509.CertificateRevocationList, LoadedCrl, x509.Certificate]:
    """The CRL of one answer item, its ``LoadedCrl`` and the CA that signed it, once its signature verified with the
    root or with an issuing CA the root issued (``_Untrusted`` otherwise)."""
    from cryptography import x509

    from hub.trust.crl import crl_of
    from hub.trust.pki import issued_by

    if not isinstance(item, dict):
        raise _Untrusted("not a CRL entry")
    name = item.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise _Untrusted("not a CRL file name (letters, digits, '.', '_', '-', ending .crl)")
    try:
        crl = x509.load_der_x509_crl(base64.b64decode(str(item.get("der_base64") or ""), validate=True))
        next_update = crl.next_update_utc
    except (ValueError, binascii.Error):
        raise _Untrusted("der_base64 is not a CRL") from None
    if next_update is None:
        raise _Untrusted("the CRL has no nextUpdate")
    if crl.issuer == root.subject:
        ca = root
    else:
        try:
            ca = x509.load_der_x509_certificate(
                base64.b64decode(str(item.get("issuer_der_base64") or ""), validate=True)
            )
            constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
        except (ValueError, binascii.Error, x509.ExtensionNotFound):
            raise _Untrusted("its issuer certificate (issuer_der_base64) is missing or not a CA certificate") from None
        if not constraints.ca or not issued_by(ca, root):
            raise _Untrusted("its issuer certificate was not issued by the hub root of hub-root.pem")
    loaded = crl_of([(crl, Path(name))], ca)
    if loaded is None:
        raise _Untrusted(f"its signature does not verify with {_cn(ca)} (not signed by the hub CA)")
    if not ca.not_valid_before_utc <= now <= ca.not_valid_after_utc:
        raise _Expired(name)
    return crl, loaded, ca


def _write(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically: a reader (the trust store) sees the old CRL or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # not *.crl: the trust store never reads it
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _cn(cert: x509.Certificate) -> str:
    from cryptography.x509.oid import NameOID

    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else cert.subject.rfc4514_string()


def held_until(crl_dir: Path) -> dt.datetime | None:
    """Until when the CRLs in ``crl_dir`` last: the soonest nextUpdate among the newest CRL of each CA (None: none
    there). For what the log and the self-check say, not for trust (signatures are the verifier's business)."""
    from hub.trust.crl import read_crls

    newest: dict[Any, Any] = {}
    for crl, _ in read_crls(crl_dir):
        held = newest.get(crl.issuer)
        if held is None or crl.last_update_utc > held.last_update_utc:
            newest[crl.issuer] = crl
    ends = [c.next_update_utc for c in newest.values() if c.next_update_utc is not None]
    return min(ends) if ends else None


def refresh_hint(settings: AdapterSettings) -> str:
    """What the agency does about a missing or stale CRL of its adapter (both languages)."""
    if settings.gateway_url or settings.tracking_url:
        return (
            f"the adapter fetches fresh ones from the hub's gateway (GET {CRL_PATH}) at start and every "
            f"{settings.crl_refresh_s} s; if that keeps failing, its {REFRESH_CODE} warnings and hub adapter check "
            "say why — 适配器自动从枢纽网关更新吊销列表"
        )
    return (
        f"ask the hub's operators for the current CRLs (pki/crl/*.crl) and copy them into {settings.crl_dir}, or set "
        "gateway_url / tracking_url so that the adapter fetches them itself — 请向枢纽运维索取最新吊销列表"
    )


async def fetch_crls(settings: AdapterSettings, base: str | None = None) -> Any:
    """``GET /v1/crl`` once, on a connection of its own set up as the SDK's gateway link; the JSON answer. A
    ``CrlFetchFailed`` (one sentence) when it did not come: not reached, refused, not JSON."""
    import aiohttp

    from adapters.sdk._gateway import _describe, _detail, _session, client_ssl_context

    base = (base or settings.gateway_url or settings.tracking_url).rstrip("/")
    via = " through the proxy" if settings.gateway_proxy else ""
    async with _session(settings, client_ssl_context(settings)) as session:
        try:
            async with session.get(f"{base}{CRL_PATH}") as resp:
                body = bytearray()
                async for chunk in resp.content.iter_chunked(65536):
                    body += chunk
                    if len(body) > MAX_ANSWER_BYTES:
                        raise CrlFetchFailed(f"the gateway's answer to {CRL_PATH} is over {MAX_ANSWER_BYTES} bytes")
                status, code = resp.status, resp.headers.get("X-Hub-Code") or f"HTTP_{resp.status}"
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise CrlFetchFailed(f"the gateway at {base} was not reached{via} ({_describe(exc)})") from None
    if status != 200:
        raise CrlFetchFailed(f"the gateway at {base} answered {status} {code}: {_detail(bytes(body))}", status)
    try:
        return json.loads(bytes(body))
    except ValueError:
        raise CrlFetchFailed(f"the gateway's answer to {CRL_PATH} is not JSON", status) from None


class CrlRefresher:
    """Keeps an adapter's ``crl/`` fresh from the gateway: ``refresh()`` once (at start), ``start()`` every
    ``crl_refresh_s`` afterwards, ``stop()``. ``of(settings)`` is None without a gateway URL."""

    def __init__(self, settings: AdapterSettings, base_url: str, *, store: TrustStore | None = None) -> None:
        self.settings = settings
        self.base_url = base_url.rstrip("/")
        #: The adapter's trust store, re-read as soon as a CRL was written (None: it re-reads within seconds anyway).
        self.store = store
        self.every_s = float(settings.crl_refresh_s)
        #: One fetch's bound (a gateway that never answers must not hold the adapter's start).
        self.timeout_s = min(float(settings.request_timeout), 30.0)
        self._task: asyncio.Task[None] | None = None
        self._loop_of: asyncio.AbstractEventLoop | None = None
        self._now = asyncio.Event()
        self._kicked = -_KICK_EVERY_S

    @classmethod
    def of(cls, settings: AdapterSettings | None, trust: AgencyTrust | None = None) -> CrlRefresher | None:
        url = (settings.gateway_url or settings.tracking_url) if settings is not None else ""
        if settings is None or not url:
            return None
        verifier = getattr(trust, "verifier", None)
        return cls(settings, url, store=getattr(verifier, "store", None))

    async def refresh(self) -> CrlUpdate | None:
        """One fetch, checked and written (``accept_crls``); None when it failed, said in one WARNING. Never raises
        (but a cancellation)."""
        from hub.trust.pki import load_certificates

        s = self.settings
        try:
            async with asyncio.timeout(self.timeout_s):
                answer = await fetch_crls(s, self.base_url)
            update = accept_crls(answer, load_certificates(s.root_cert_path)[0], s.crl_dir)
        except TimeoutError:
            self._failed(f"the gateway at {self.base_url} did not answer {CRL_PATH} within {self.timeout_s:g} s")
            return None
        except Exception as exc:  # whatever it was: the adapter goes on with the CRLs it has
            self._failed(getattr(exc, "detail", None) or str(exc) or type(exc).__name__)
            return None
        for name, why in update.refused:
            log.warning(
                "吊销列表未采用 CRL not taken [%s]: %s from %s: %s; it was not written",
                REFRESH_CODE,
                name,
                self.base_url,
                why,
                extra={"system": s.system, "code": REFRESH_CODE},
            )
        if update.written:
            if self.store is not None:
                self.store.refresh()
            log.info(
                "吊销列表已更新 CRLs refreshed from the gateway: %s",
                ", ".join(update.written),
                extra={"system": s.system},
            )
        return update

    def _failed(self, why: str) -> None:
        s = self.settings
        until = held_until(s.crl_dir)
        now = dt.datetime.now(dt.UTC)
        if until is None:
            keeps = "the adapter has no CRL: deliveries are refused (CERT_CRL_UNAVAILABLE) until a fetch succeeds"
            zh = "适配器没有可用的吊销列表，报文将被拒收"
        elif until <= now:
            keeps = (
                f"the CRLs the adapter has went stale at {until:%Y-%m-%d %H:%M} UTC: deliveries are refused "
                "(CERT_CRL_UNAVAILABLE) until a fetch succeeds"
            )
            zh = f"现有吊销列表已于 {until:%Y-%m-%d %H:%M} UTC 失效，报文将被拒收"
        else:
            keeps = f"the adapter keeps the CRLs it has until {until:%Y-%m-%d %H:%M} UTC"
            zh = f"适配器继续使用现有吊销列表，至 {until:%Y-%m-%d %H:%M} UTC 失效"
        log.warning(
            "吊销列表更新失败 CRL refresh failed [%s]: %s; %s; next attempt in %g s — %s",
            REFRESH_CODE,
            why,
            keeps,
            self.every_s,
            zh,
            extra={"system": s.system, "code": REFRESH_CODE},
        )

    def start(self, *, now: bool = False) -> None:
        """Fetch every ``crl_refresh_s`` from now on (the first fetch is ``refresh()`` at the adapter's start, or
        with ``now`` the first of these, at once)."""
        if self._task is None:
            self._loop_of = asyncio.get_running_loop()
            if now:
                self._now.set()
            self._task = self._loop_of.create_task(self._loop(), name="adapter CRL refresh")

    def fresh_for(self, seconds: float) -> bool:
        """Every CRL the adapter has is good for ``seconds`` more (``held_until``): the first fetch need not hold the
        adapter's start (a gateway that does not answer held it for ``timeout_s``, 30 s)."""
        until = held_until(self.settings.crl_dir)
        return until is not None and until > dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)

    def kick(self) -> None:
        """A delivery was refused for a stale CRL: fetch now rather than at the next period (at most once a
        minute). Safe from any thread (a delivery may be opened off the event loop)."""
        loop, now = self._loop_of, time.monotonic()
        if self._task is None or loop is None or now - self._kicked < _KICK_EVERY_S:
            return
        self._kicked = now
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: the adapter stopped
            loop.call_soon_threadsafe(self._now.set)

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.every_s):
                    await self._now.wait()
            self._now.clear()
            await self.refresh()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def hinted(self, trust: AgencyTrust) -> AgencyTrust:
        """``trust`` whose ``CERT_CRL_UNAVAILABLE`` says what the agency does (``HintedTrust``) and asks for a
        fetch now."""
        return HintedTrust.around(trust, refresh_hint(self.settings), self.kick)


class HintedTrust(AgencyTrust):
    """An ``AgencyTrust`` whose ``CERT_CRL_UNAVAILABLE`` speaks to the agency: the verifier's sentence (the hub's,
    shared with the hub's own verification, which names the hub's command ``hub pki crl``) without that command, and
    what the agency does instead (``refresh_hint``). Every other outcome is the wrapped trust's."""

    def __init__(self, inner: AgencyTrust, hint: str, on_stale: Callable[[], None] | None = None) -> None:
        # The wrapped object's verifier, limits and registry (no second registry compiled).
        self.verifier = inner.verifier
        self.max_bytes = inner.max_bytes
        self.registry = inner.registry
        self.inner = inner
        self.hint = hint
        self.on_stale = on_stale

    @classmethod
    def around(cls, trust: AgencyTrust, hint: str, on_stale: Callable[[], None] | None = None) -> HintedTrust:
        inner = trust.inner if isinstance(trust, HintedTrust) else trust  # never wrapped twice (a restart)
        return cls(inner, hint, on_stale)

    def open(self, data: bytes) -> Opened:
        from hub.errors import HubError

        try:
            return self.inner.open(data)
        except HubError as exc:
            if exc.code != "CERT_CRL_UNAVAILABLE":
                raise
            if self.on_stale is not None:
                self.on_stale()
            said = re.sub(r"\s*\(hub pki crl\)", "", exc.detail).rstrip(". ")
            raise type(exc)(f"{said} (this adapter's crl/): {self.hint}", code=exc.code) from None


def hint_for(settings: AdapterSettings | None, trust: AgencyTrust) -> AgencyTrust:
    """``trust`` with the agency's wording of ``CERT_CRL_UNAVAILABLE`` for an adapter without a gateway URL."""
    if settings is None:
        return trust
    return HintedTrust.around(trust, refresh_hint(settings))

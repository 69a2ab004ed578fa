"""``hub pki …`` (the CA), ``hub keygen`` (agency side), ``hub sign`` and ``hub verify``. See USAGE.md.

Exit codes follow hub.cli: 0 success, 1 the input was rejected (``CODE: 标题 — reason``), 2 usage, configuration
or an unavailable database (``DELIVERY_STORE``).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys
from pathlib import Path

from hub.errors import ConfigError, EnvelopeError, TrustError
from hub.settings import Settings

__all__ = ["register"]


def _pki_dir(args: argparse.Namespace, settings: Settings) -> Path:
    return Path(args.pki) if getattr(args, "pki", None) else Path(settings.state_dir) / "pki"


def _passphrase_from_env(name: str | None) -> bytes | None:
    if not name:
        return None
    value = os.environ.get(name)
    if not value:
        raise ConfigError(f"environment variable {name} (the key passphrase) is not set")
    return value.encode()


def _read(name: str) -> bytes:
    if name == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(name).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {name}: {exc.strerror or type(exc).__name__}") from None


def _write_out(target: str | None, data: bytes) -> None:
    if target is None or target == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        from hub.trust.keys import write_public_file

        write_public_file(Path(target), data)


# ================================================================================================ hub pki


def cmd_pki_init(args: argparse.Namespace, settings: Settings) -> int:
    from hub.commands import trust_admin as admin

    pki_dir = _pki_dir(args, settings)
    created = asyncio.run(admin.init(settings, pki_dir, agency=args.agency))
    print(f"hub CA created in {pki_dir}")
    print(f"  root       {created.root.serial}  sha256 {created.root.fingerprint}")
    print(f"  issuing CA {created.issuing.serial}")
    print(f"  hub        {created.hub.serial}  {created.hub.agency}/{created.hub.system}  ({created.paths.hub_cert})")
    print(f"distribute {created.paths.root_cert} to the agencies (their trust anchor)")
    return 0


def cmd_pki_issue(args: argparse.Namespace, settings: Settings) -> int:
    from hub.commands import trust_admin as admin
    from hub.trust import pki

    pki_dir = _pki_dir(args, settings)
    issued = asyncio.run(admin.issue(settings, pki_dir, _read(args.csr), days=args.days, tls=args.tls))
    assert issued.issuer is not None
    _write_out(args.out, pki.certificate_pem(issued.certificate, issued.issuer))
    if _to_file(args.out):
        what = "TLS client certificate (gateway only, cannot sign messages) " if args.tls else ""
        print(
            f"issued {what}{issued.serial} for {issued.agency}/{issued.system}, valid until "
            f"{issued.certificate.not_valid_after_utc:%Y-%m-%d}: {args.out}"
        )
        print(f"  sha256 {issued.fingerprint}")
    registration_hint(settings, issued.system, issued.fingerprint, printed=_to_file(args.out))
    return 0


def _to_file(out: str | None) -> bool:
    """``--out`` names a file (absent or ``-``: the PEM goes to stdout, so nothing else may)."""
    return bool(out) and out != "-"


def registration_hint(settings: Settings, system: str | None, fingerprint: str, *, printed: bool = True) -> None:
    """The new certificate's fingerprint on stderr unless ``printed`` (stdout carries the PEM then), and there too
    when the directory registers the system's certificates (cert-sha256) and not this one."""
    from hub.commands import trust_admin as admin

    if not printed:
        print(f"sha256 {fingerprint}", file=sys.stderr)
    hint = admin.registration_hint(system, fingerprint, asyncio.run(admin.registered_certificates(settings, system)))
    if hint:
        print(hint, file=sys.stderr)


def cmd_pki_issue_server(args: argparse.Namespace, settings: Settings) -> int:
    from hub.commands import trust_admin as admin
    from hub.trust import pki

    pki_dir = _pki_dir(args, settings)
    out_dir = Path(args.out_dir) if args.out_dir else pki.PkiPaths(pki_dir).gateway_dir
    issued = asyncio.run(admin.issue_server(settings, pki_dir, args.host, days=args.days, out_dir=out_dir))
    print(
        f"issued the gateway's server certificate {issued.serial} for {', '.join(args.host)}, valid until "
        f"{issued.certificate.not_valid_after_utc:%Y-%m-%d}"
    )
    print(f"  {out_dir / 'server.pem'} (certificate + issuing CA), {out_dir / 'server.key'} (0600)")
    print(f"  clients trust {pki.PkiPaths(pki_dir).root_cert} (curl --cacert, a Java truststore)")
    print(
        "  运行中的网关在 HUB_GATEWAY_CERT_CHECK_S（30 秒）内改用它，无需重启 · running gateways present it to new "
        "connections within HUB_GATEWAY_CERT_CHECK_S (30 s; systemctl reload: at once), no restart"
    )
    return 0


def cmd_pki_renew(args: argparse.Namespace, settings: Settings) -> int:
    from hub.commands import trust_admin as admin
    from hub.trust import pki

    issued = asyncio.run(admin.renew(settings, _pki_dir(args, settings), args.serial, days=args.days))
    assert issued.issuer is not None
    _write_out(args.out, pki.certificate_pem(issued.certificate, issued.issuer))
    if _to_file(args.out):
        print(f"renewed as {issued.serial}, valid until {issued.certificate.not_valid_after_utc:%Y-%m-%d}: {args.out}")
        print(f"  sha256 {issued.fingerprint}")
    registration_hint(settings, issued.system, issued.fingerprint, printed=_to_file(args.out))
    return 0


def cmd_pki_revoke(args: argparse.Namespace, settings: Settings) -> int:
    from hub.commands import trust_admin as admin

    row, crl, new = asyncio.run(admin.revoke(settings, _pki_dir(args, settings), args.serial, args.reason))
    who = f"{row.agency}/{row.system}" if row.agency else row.subject
    if new:
        print(f"revoked {row.serial} ({who}) on {row.revoked_at:%Y-%m-%d %H:%M} UTC, reason {row.revocation_reason}")
    else:
        print(
            f"已吊销，未作改动 — {row.serial} ({who}) was revoked already, on {row.revoked_at:%Y-%m-%d %H:%M} UTC, "
            f"reason {row.revocation_reason}: that record stands (not {args.reason})"
        )
    print(
        f"published CRL #{crl.number} of the {crl.ca} CA ({crl.revoked} revoked), next update "
        f"{crl.next_update:%Y-%m-%d %H:%M} UTC: {crl.path}"
    )
    return 0


def cmd_pki_crl(args: argparse.Namespace, settings: Settings) -> int:
    from hub.commands import trust_admin as admin

    for crl in asyncio.run(admin.publish_crls(settings, _pki_dir(args, settings), hours=args.hours)):
        print(
            f"{crl.ca:8} CRL #{crl.number}: {crl.revoked} revoked, next update {crl.next_update:%Y-%m-%d %H:%M} "
            f"UTC: {crl.path}"
        )
    return 0


def cmd_pki_rotate(args: argparse.Namespace, settings: Settings) -> int:
    from hub.commands import trust_admin as admin
    from hub.trust import pki

    done = asyncio.run(admin.rotate_hub(settings, _pki_dir(args, settings), days=args.days))
    print(
        f"hub key rotated: certificate {done.new.serial} (valid until "
        f"{done.new.certificate.not_valid_after_utc:%Y-%m-%d}) replaces {pki.serial_hex(done.old.serial_number)}"
    )
    print(
        "  running hub workers switch to the new key within seconds; the previous certificate is kept in "
        "pki/hub/archive/ and the register, and stays valid until it expires"
    )
    return 0


def cmd_pki_rollover(args: argparse.Namespace, settings: Settings) -> int:
    from hub.commands import trust_admin as admin
    from hub.trust import pki

    done = asyncio.run(admin.rollover_issuing(settings, _pki_dir(args, settings)))
    old = pki.serial_hex(done.old.serial_number)
    print(
        f"new issuing CA {done.new.serial} (valid until {done.new.certificate.not_valid_after_utc:%Y-%m-%d}) under "
        f"the same root; new certificates come from it"
    )
    print(
        f"  the previous issuing CA {old} stays trusted: its certificates are valid until they expire and its CRL "
        "is published until then"
    )
    print("  next: `hub pki rotate` gives the hub a certificate from the new CA")
    return 0


def cmd_pki_expiry(args: argparse.Namespace, settings: Settings) -> int:
    from hub.trust import lifecycle, pki

    pki_dir = _pki_dir(args, settings)
    if not pki.PkiPaths(pki_dir).root_cert.is_file():
        # Nothing to look at is not "ok": a wrong HUB_STATE_DIR or --pki would hide every expiry from cron.
        raise ConfigError(
            f"no CA in {pki_dir} (no root-ca.pem): check HUB_STATE_DIR or --pki (a new installation only: "
            "`hub pki init`)"
        )
    found = lifecycle.expiry_warnings(pki_dir, days=args.days)
    for w in found:
        print(w.text())
    if not found:
        print(f"ok: no hub, issuing, root or gateway server certificate expires within {args.days} days")
    return 1 if found else 0


def cmd_pki_list(args: argparse.Namespace, settings: Settings) -> int:
    from hub.commands import trust_admin as admin
    from hub.trust import pki

    pki_dir = _pki_dir(args, settings)
    rows = asyncio.run(admin.list_certificates(settings, agency=args.agency, pki_dir=pki_dir))
    now = dt.datetime.now(dt.UTC)
    # The hub's certificate and the issuing CA in use are marked "current"; earlier ones of theirs, still valid,
    # "superseded" (they verify what they signed until they expire).
    paths = pki.PkiPaths(pki_dir)
    current = {
        pki.serial_hex(pki.load_certificates(f)[0].serial_number)
        for f in (paths.hub_cert, paths.issuing_cert, paths.gateway_cert)
        if f.is_file()
    }
    sha = bool(getattr(args, "sha256", False))
    lines = []
    for r in rows:
        who = f"{r.agency}/{r.system}" if r.agency else r.subject.split(",")[0]
        state = r.state(now) + (f" ({r.revocation_reason})" if r.revocation_reason else "")
        if state == "valid" and r.kind in ("hub", "issuing", "server"):  # the gateway serves one server certificate
            state = "current" if r.serial in current else "superseded"
        lines.append((r, who[:44], state))
    # Columns as wide as their widest value: a revocation reason or a long serial is shown whole, not cut.
    sw = max([40, *(len(r.serial) for r, _, _ in lines)])
    tw = max([13, *(len(state) for _, _, state in lines)])
    print(
        f"{'SERIAL':{sw}}  {'KIND':7}  {'AGENCY/SYSTEM':44}  {'KEY':8}  {'STATE':{tw}}  {'NOT AFTER':10}  "
        + (f"{'DAYS':>6}  SHA256" if sha else "DAYS")
    )
    for r, who, state in lines:
        print(
            f"{r.serial:{sw}}  {r.kind:7}  {who:44}  {r.key_algorithm:8}  {state:{tw}}  "
            f"{r.not_after:%Y-%m-%d}  " + (f"{r.days_left(now):>6}  {r.fingerprint}" if sha else f"{r.days_left(now)}")
        )
    return 0


# ================================================================================================ agency side


def cmd_keygen(args: argparse.Namespace, settings: Settings) -> int:
    from hub.trust import keys, pki

    out = Path(args.out)
    key_path, csr_path = out / f"{args.system}.key", out / f"{args.system}.csr"
    if key_path.exists():
        raise ConfigError(f"{key_path} exists; refusing to overwrite a private key")
    key = keys.generate_private_key(args.algorithm)
    csr = pki.make_csr(key, args.agency, args.system, args.name)  # validates agency code and system id
    keys.write_private_file(key_path, keys.private_key_pem(key, _passphrase_from_env(args.passphrase_env)))
    from cryptography.hazmat.primitives import serialization

    keys.write_public_file(csr_path, csr.public_bytes(serialization.Encoding.PEM))
    print(f"private key ({args.algorithm}, keep it here, mode 0600): {key_path}")
    print(f"certificate request for {args.agency}/{args.system}: {csr_path}")
    print(f"send only the .csr to the hub operator: hub pki issue --csr {csr_path.name} --out {args.system}.pem")
    return 0


# ================================================================================================ sign / verify


def cmd_sign(args: argparse.Namespace, settings: Settings) -> int:
    from hub.envelope import parse, to_bytes
    from hub.trust import Signer
    from hub.validation import SchemaRegistry

    signer = Signer.load(Path(args.key), Path(args.cert), passphrase=_passphrase_from_env(args.passphrase_env))
    label = "<stdin>" if args.input == "-" else args.input
    try:
        root = parse(_read(args.input), max_bytes=settings.max_message_bytes)
        SchemaRegistry(settings.schemas_dir).validate(root)
        signer.sign(root)
    except (EnvelopeError, TrustError) as exc:
        print(f"{label}:{exc.line or 0}: {exc.describe()}")
        return 1
    _write_out(args.output, to_bytes(root))
    return 0


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    from hub.envelope import Envelope, parse
    from hub.trust import TrustStore, Verifier, check_signer_binding
    from hub.validation import SchemaRegistry

    store = TrustStore.load(_pki_dir(args, settings))
    as_of: dt.datetime | None = None
    try:
        root = parse(_read(args.file), max_bytes=settings.max_message_bytes)
        SchemaRegistry(settings.schemas_dir).validate(root)
        if args.at:
            as_of = _as_of(args.at, Envelope.from_tree(root).created)
        now = (lambda: as_of) if as_of is not None else None
        if args.engine == "signxml":
            from hub.trust.reference import SignxmlVerifier

            verifier: Verifier = SignxmlVerifier(store, now=now)
        else:
            verifier = Verifier(store, now=now, complete_chain=True)  # what the hub's intake asks
        # The hub is recognised by its own certificates (current and earlier ones, pki/hub/), never by a name.
        from hub.trust.lifecycle import hub_certificates
        from hub.trust.pki import fingerprint

        hub_fps = {fingerprint(c) for c in hub_certificates(_pki_dir(args, settings))}
        if len(root.findall("{http://www.w3.org/2000/09/xmldsig#}Signature")) == 2:
            # A delivery: the hub's signature and the originating system's (hub.trust.delivery), both checked with
            # the narrow verifier whatever the engine.
            from hub.trust.delivery import verify_delivery

            opened = verify_delivery(root, verifier, is_hub=lambda who: who.fingerprint in hub_fps)
            assert opened.originator is not None
            o, h = opened.originator, opened.hub
            when = f", verified as of {as_of:%Y-%m-%d %H:%M} UTC" if as_of is not None else ""
            print(
                f"ok: signed by {o.agency}/{o.system} (certificate {o.serial_hex}, valid until {o.not_after:%Y-%m-%d}) "
                f"and delivered by the hub {h.agency}/{h.system} (certificate {h.serial_hex}, 枢纽转发), "
                f"digest sha256:{opened.digest}{when}"
            )
            return 0
        verified = verifier.verify(root)
        envelope = Envelope.from_tree(verified.root)
        # A delivery made before deliveries carried the originator's signature: re-signed by the hub on behalf of
        # its sender (the hub verified the sender's signature and keeps it as evidence), so a hub signature stands
        # for any sender here. The hub's own intake never allows it.
        relayed = verified.signer.fingerprint in hub_fps and envelope.sender.system != verified.signer.system
        if not relayed:
            check_signer_binding(verified, envelope)
    except (EnvelopeError, TrustError) as exc:
        print(exc.describe())
        return 1
    s = verified.signer
    by = f"{s.agency}/{s.system}"
    if relayed:
        by += f", delivered by the hub on behalf of {envelope.sender.agency}/{envelope.sender.system} (枢纽转发)"
    when = f", verified as of {as_of:%Y-%m-%d %H:%M} UTC" if as_of is not None else ""
    print(
        f"ok: signed by {by} (certificate {s.serial_hex}, valid until {s.not_after:%Y-%m-%d}), "
        f"digest sha256:{verified.digest}{when}"
    )
    return 0


def _as_of(text: str, created: dt.datetime) -> dt.datetime:
    """``--at signed``: the envelope's signed Created time (an archived document whose certificate has expired since
    is checked as of when it was signed); else an ISO 8601 time."""
    if text == "signed":
        return created.astimezone(dt.UTC)
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"--at takes 'signed' or an ISO 8601 time such as 2026-03-01T08:00+08:00, not {text!r}"
        ) from None
    return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).astimezone(dt.UTC)


# ================================================================================================ wiring


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from hub.trust.keys import ALGORITHMS
    from hub.trust.pki import DEFAULT_HUB_AGENCY, LEAF_DAYS, REASONS

    pki_opts = argparse.ArgumentParser(add_help=False)
    pki_opts.add_argument("--pki", metavar="DIR", help="the PKI directory (default: $HUB_STATE_DIR/pki)")

    pki = sub.add_parser(
        "pki", help="the hub CA: certificates (signing, gateway TLS client and server), revocation, CRLs (证书管理)"
    )
    ps = pki.add_subparsers(dest="pki_command", metavar="ACTION", required=True)

    p = ps.add_parser("init", parents=[pki_opts], help="create the root CA, the issuing CA and the hub's certificate")
    p.add_argument(
        "--agency",
        default=DEFAULT_HUB_AGENCY,
        metavar="CODE",
        help=f"agency code of the hub's own signing identity (default {DEFAULT_HUB_AGENCY})",
    )
    p.set_defaults(handler=cmd_pki_init)

    p = ps.add_parser(
        "issue",
        parents=[pki_opts],
        help="issue an agency system's certificate from a CSR (signs messages, and is its gateway client certificate)",
    )
    p.add_argument("--csr", required=True, metavar="FILE", help="the CSR made by `hub keygen` (PEM or DER)")
    p.add_argument("--out", metavar="FILE", help="write the certificate chain here (default: standard output)")
    p.add_argument("--days", type=int, default=LEAF_DAYS, help=f"validity in days (default {LEAF_DAYS})")
    p.add_argument(
        "--tls",
        action="store_true",
        help="a TLS-only client certificate for the HTTPS gateway (clientAuth; it cannot sign messages), kind tls",
    )
    p.set_defaults(handler=cmd_pki_issue)

    p = ps.add_parser(
        "issue-server", parents=[pki_opts], help="the HTTPS gateway's TLS server certificate (new key, kind server)"
    )
    p.add_argument(
        "--host",
        required=True,
        action="append",
        metavar="HOST",
        help="a DNS name or IP address clients connect to (repeat: --host gateway.example.gov.cn --host 10.0.0.5)",
    )
    p.add_argument(
        "--out-dir",
        metavar="DIR",
        help="write server.pem (certificate + issuing CA) and server.key (0600) here (default: PKI/gateway)",
    )
    p.add_argument("--days", type=int, default=LEAF_DAYS, help=f"validity in days (default {LEAF_DAYS})")
    p.set_defaults(handler=cmd_pki_issue_server)

    p = ps.add_parser(
        "renew",
        parents=[pki_opts],
        help="re-certify the same key with a new validity period (an agency or tls certificate; current profile)",
    )
    p.add_argument("serial", metavar="SERIAL", help="serial number as printed by `hub pki list`")
    p.add_argument("--out", metavar="FILE", help="write the certificate chain here (default: standard output)")
    p.add_argument("--days", type=int, default=LEAF_DAYS, help=f"validity in days (default {LEAF_DAYS})")
    p.set_defaults(handler=cmd_pki_renew)

    p = ps.add_parser(
        "revoke", parents=[pki_opts], help="revoke a certificate (any kind but the root) and publish a new CRL"
    )
    p.add_argument("serial", metavar="SERIAL", help="serial number as printed by `hub pki list`")
    p.add_argument("--reason", required=True, choices=sorted(REASONS), help="revocation reason")
    p.set_defaults(handler=cmd_pki_revoke)

    p = ps.add_parser("crl", parents=[pki_opts], help="publish fresh CRLs (run at least every HUB_CRL_HOURS / 2)")
    p.add_argument("--hours", type=int, default=None, help="hours until nextUpdate (default: HUB_CRL_HOURS, 24)")
    p.set_defaults(handler=cmd_pki_crl)

    p = ps.add_parser("rotate", parents=[pki_opts], help="a new hub key and certificate; the old one is kept")
    p.add_argument("--days", type=int, default=LEAF_DAYS, help=f"validity in days (default {LEAF_DAYS})")
    p.set_defaults(handler=cmd_pki_rotate)

    p = ps.add_parser("rollover-issuing", parents=[pki_opts], help="a new issuing CA under the same root")
    p.set_defaults(handler=cmd_pki_rollover)

    p = ps.add_parser(
        "expiry", parents=[pki_opts], help="exit 1 when a hub, issuing, root or gateway server certificate expires soon"
    )
    p.add_argument("--days", type=int, default=30, help="warn this many days ahead (default 30)")
    p.set_defaults(handler=cmd_pki_expiry)

    p = ps.add_parser(
        "list",
        parents=[pki_opts],
        help="list certificates (kinds root, issuing, hub, agency, tls, server) with their state and days to expiry",
    )
    p.add_argument("--agency", metavar="CODE", help="only this agency's certificates")
    p.add_argument(
        "--sha256", action="store_true", help="add each certificate's SHA-256 fingerprint (the directory's cert-sha256)"
    )
    p.set_defaults(handler=cmd_pki_list)

    p = sub.add_parser("keygen", help="agency side: a new signing key and a CSR (生成密钥和证书请求)")
    p.add_argument("--system", required=True, metavar="ID", help="the system id, e.g. county-220104-approval")
    p.add_argument("--agency", required=True, metavar="CODE", help="the agency's unified social credit code")
    p.add_argument("--name", metavar="TEXT", help="the agency's name (goes into the subject's O)")
    p.add_argument("--out", default=".", metavar="DIR", help="where to write ID.key and ID.csr (default .)")
    p.add_argument("--algorithm", choices=ALGORITHMS, default=ALGORITHMS[0], help="key algorithm (default ec-p256)")
    p.add_argument("--passphrase-env", metavar="VAR", help="encrypt the key with the passphrase in this variable")
    p.set_defaults(handler=cmd_keygen)

    p = sub.add_parser("sign", help="sign an envelope with a key and certificate (签名)")
    p.add_argument("--key", required=True, metavar="K", help="the private key (PEM)")
    p.add_argument("--cert", required=True, metavar="C", help="the certificate chain (PEM: leaf, then its CA)")
    p.add_argument("--passphrase-env", metavar="VAR", help="the key's passphrase is in this environment variable")
    p.add_argument("input", metavar="IN", help="the unsigned envelope; - reads standard input")
    p.add_argument("output", metavar="OUT", nargs="?", help="where to write the signed envelope (default stdout)")
    p.set_defaults(handler=cmd_sign)

    p = sub.add_parser("verify", parents=[pki_opts], help="verify a signed envelope against the hub CA (验签)")
    p.add_argument("file", metavar="FILE", help="the signed envelope; - reads standard input")
    p.add_argument(
        "--engine",
        choices=("narrow", "signxml"),
        default="narrow",
        help="narrow (default, the hub's own) or signxml (the reference implementation)",
    )
    p.add_argument(
        "--at",
        metavar="WHEN",
        help="verify as of a time: 'signed' (the envelope's Created: an archived receipt or delivery whose "
        "certificate has expired or been superseded since) or an ISO 8601 time; default: now",
    )
    p.set_defaults(handler=cmd_verify)

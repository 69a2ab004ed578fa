"""The verifier's view of the hub PKI: the root (the only trust anchor), the issuing CA certificates (offered
as intermediates when a sender sends only its leaf), and the current CRLs.

Loaded once per process from the PKI directory (``TrustStore.load``: the hub, and tools on the hub's machine), or
on an agency's side from the root certificate and a folder of CRLs alone (``TrustStore.from_files``: no PKI
directory; the issuing CA certificates come from the signatures' ``X509Data`` chains, which carry leaf and issuing
CA). ``refresh()`` compares the modification times and sizes of the CRL and CA files with what was loaded (a few
``stat`` calls) and reloads only when they changed; each reload bumps ``generation`` so that verifiers drop the
certificate chains they cached.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.x509.verification import Store

from hub.errors import ConfigError
from hub.trust.crl import LoadedCrl, crl_of, load_crls, read_crls
from hub.trust.pki import PkiPaths, fingerprint, load_certificates

__all__ = ["TrustStore"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Snapshot:
    issuing: tuple[x509.Certificate, ...]
    crls: dict[str, LoadedCrl]
    stamp: tuple[tuple[str, int, int], ...]
    #: ``from_files``: the CRLs read from the folder, matched to an issuing CA when a validated chain brings its
    #: certificate (``crl_for``); the matches are kept in ``crls``.
    unmatched: tuple[tuple[x509.CertificateRevocationList, Path], ...] = ()


class TrustStore:
    """Hub root + issuing CAs + CRLs. Thread-safe: a refresh swaps one immutable snapshot."""

    def __init__(
        self,
        paths: PkiPaths | None,
        root: x509.Certificate,
        *,
        refresh_interval: float = 5.0,
        crl_dir: Path | None = None,
    ) -> None:
        #: The PKI directory, or None for a store made ``from_files`` (the agency side).
        self.paths = paths
        if paths is None and crl_dir is None:
            raise ValueError("a TrustStore needs a PKI directory or a CRL folder")
        self.crl_dir = crl_dir if crl_dir is not None else paths.crl_dir  # type: ignore[union-attr]
        self._issuing_file = paths.issuing_cert if paths is not None else None
        self.root = root
        self.root_fingerprint = fingerprint(root)
        self.anchor = Store([root])
        self.generation = 0
        self.refresh_interval = refresh_interval
        self._lock = threading.Lock()
        self._next_check = 0.0
        self._snap = self._load()

    @classmethod
    def load(cls, pki_dir: Path, *, refresh_interval: float = 5.0) -> TrustStore:
        """Load the PKI directory; a missing or unreadable root is a ``ConfigError``.

        Missing or stale CRLs are *not* an error here: verification fails closed with ``CERT_CRL_UNAVAILABLE``
        until a fresh CRL is published, and ``refresh()`` picks it up.
        """
        paths = PkiPaths(Path(pki_dir))
        if not paths.root_cert.is_file():
            raise ConfigError(f"no hub root certificate at {paths.root_cert}; run `hub pki init` first")
        roots = load_certificates(paths.root_cert)
        if len(roots) != 1:
            raise ConfigError(f"{paths.root_cert} must hold exactly one certificate (the hub root)")
        return cls(paths, roots[0], refresh_interval=refresh_interval)

    @classmethod
    def from_files(cls, root_cert: Path, crl_dir: Path, *, refresh_interval: float = 5.0) -> TrustStore:
        """An agency's trust store: only the hub root in ``root_cert`` is trusted, the CRLs found in ``crl_dir``
        (``*.crl``, PEM or DER; re-read when they change, as ``load`` does) give revocation, and each issuing CA
        certificate is taken from the ``X509Data`` chain of the signature being verified (the chain must lead to
        the root; the CA's CRL must be in ``crl_dir``, signed by it, and fresh, or verification fails closed with
        ``CERT_CRL_UNAVAILABLE``). No PKI directory, no issuing-CA file."""
        root_cert, crl_dir = Path(root_cert), Path(crl_dir)
        if not root_cert.is_file():
            raise ConfigError(f"no hub root certificate at {root_cert}")
        roots = load_certificates(root_cert)
        if len(roots) != 1:
            raise ConfigError(f"{root_cert} must hold exactly one certificate (the hub root)")
        if not crl_dir.is_dir():
            raise ConfigError(f"no CRL folder at {crl_dir} (copy the hub's published CRLs there)")
        return cls(None, roots[0], refresh_interval=refresh_interval, crl_dir=crl_dir)

    # -------------------------------------------------------------------------------------------- snapshot

    def _stamp(self) -> tuple[tuple[str, int, int], ...]:
        entries: list[tuple[str, int, int]] = []
        candidates = [self._issuing_file] if self._issuing_file is not None else []
        try:
            candidates += sorted(p for p in self.crl_dir.iterdir() if p.suffix == ".crl")
        except OSError:
            pass
        for p in candidates:
            try:
                st = os.stat(p)
            except OSError:
                continue
            entries.append((str(p), st.st_mtime_ns, st.st_size))
        return tuple(entries)

    def _load(self) -> _Snapshot:
        stamp = self._stamp()
        issuing: list[x509.Certificate] = []
        if self._issuing_file is None:  # from_files: the root's CRL now, the issuing CAs' when a chain brings them
            unmatched = tuple(read_crls(self.crl_dir))
            root_crl = crl_of(list(unmatched), self.root)
            crls = {root_crl.issuer_fingerprint: root_crl} if root_crl is not None else {}
            return _Snapshot((), crls, stamp, unmatched)
        if self._issuing_file.is_file():
            try:
                issuing = load_certificates(self._issuing_file)
            except ConfigError as exc:
                log.warning("ignoring issuing CA file: %s", exc.detail)
        crls = load_crls(self.crl_dir, [self.root, *issuing])
        return _Snapshot(tuple(issuing), crls, stamp)

    def refresh(self) -> bool:
        """Reload CRLs (and issuing CA certificates) when their files changed; True when something was reloaded."""
        stamp = self._stamp()
        if stamp == self._snap.stamp:
            return False
        with self._lock:
            if stamp == self._snap.stamp:
                return False
            self._snap = self._load()
            self.generation += 1
            log.info("trust store reloaded: %d CRL(s), %d issuing CA(s)", len(self._snap.crls), len(self._snap.issuing))
            return True

    def refresh_if_due(self) -> bool:
        """``refresh()`` at most once per ``refresh_interval`` seconds (what verifiers call per message)."""
        now = time.monotonic()
        if now < self._next_check:
            return False
        self._next_check = now + self.refresh_interval
        return self.refresh()

    # -------------------------------------------------------------------------------------------- lookups

    @property
    def issuing(self) -> tuple[x509.Certificate, ...]:
        return self._snap.issuing

    def crl_for(self, issuer: x509.Certificate) -> LoadedCrl | None:
        """The CRL ``issuer`` signed. The verifier asks only for CAs of a chain it validated to the root, so a store
        made ``from_files`` may authenticate a CRL with a CA certificate that came in a signature."""
        snap = self._snap
        fp = fingerprint(issuer)
        found = snap.crls.get(fp)
        if found is None and snap.unmatched:
            found = crl_of(list(snap.unmatched), issuer)
            if found is not None:
                snap.crls[fp] = found  # the snapshot's own dict: a reload replaces it
        return found

    @property
    def crls(self) -> dict[str, LoadedCrl]:
        return dict(self._snap.crls)

"""The verifier's view of the hub PKI: the root (the only trust anchor), the issuing CA certificates (offered
as intermediates when a sender sends only its leaf), and the current CRLs.

Loaded once per process from the PKI directory. ``refresh()`` compares the modification times and sizes of
the CRL and CA files with what was loaded (a few ``stat`` calls) and reloads only when they changed; each
reload bumps ``generation`` so that verifiers drop the certificate chains they cached.
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
from hub.trust.crl import LoadedCrl, load_crls
from hub.trust.pki import PkiPaths, fingerprint, load_certificates

__all__ = ["TrustStore"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Snapshot:
    issuing: tuple[x509.Certificate, ...]
    crls: dict[str, LoadedCrl]
    stamp: tuple[tuple[str, int, int], ...]


class TrustStore:
    """Hub root + issuing CAs + CRLs. Thread-safe: a refresh swaps one immutable snapshot."""

    def __init__(self, paths: PkiPaths, root: x509.Certificate, *, refresh_interval: float = 5.0) -> None:
        self.paths = paths
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

    # -------------------------------------------------------------------------------------------- snapshot

    def _stamp(self) -> tuple[tuple[str, int, int], ...]:
        entries: list[tuple[str, int, int]] = []
        candidates = [self.paths.issuing_cert]
        try:
            candidates += sorted(p for p in self.paths.crl_dir.iterdir() if p.suffix == ".crl")
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
        if self.paths.issuing_cert.is_file():
            try:
                issuing = load_certificates(self.paths.issuing_cert)
            except ConfigError as exc:
                log.warning("ignoring issuing CA file: %s", exc.detail)
        crls = load_crls(self.paths.crl_dir, [self.root, *issuing])
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
        return self._snap.crls.get(fingerprint(issuer))

    @property
    def crls(self) -> dict[str, LoadedCrl]:
        return dict(self._snap.crls)

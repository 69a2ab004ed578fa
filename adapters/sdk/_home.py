"""The adapter's enrolment directory (``AdapterSettings.home``), written on the agency's side.

``write_home`` lays out what the hub's operator sent back (the certificate chain, the hub root, the CRLs and
the broker credentials) beside the key the agency made itself; ``hub adapter enrol --accept`` and the test hub
use it. Files holding secrets are 0600 from their first byte.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["write_home", "write_private"]


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable by the owner only (replacing an older file atomically; a device or FIFO
    such as ``/dev/null`` is written into, never replaced)."""
    from hub.trust.keys import write_into_special

    if write_into_special(Path(path), data):
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_home(
    home: Path,
    *,
    key_pem: bytes | None,
    cert_pem: bytes,
    root_pem: bytes,
    crls: Mapping[str, bytes],
    amqp_url: str,
    namespace: str,
) -> Path:
    """Lay out an adapter's home. ``key_pem`` None keeps the key already there (made by ``hub adapter enrol``)."""
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    if key_pem is not None:
        write_private(home / "key.pem", key_pem)
    (home / "cert.pem").write_bytes(cert_pem)
    (home / "hub-root.pem").write_bytes(root_pem)
    crl_dir = home / "crl"
    crl_dir.mkdir(exist_ok=True)
    for name, data in crls.items():
        tmp = crl_dir / (Path(name).name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, crl_dir / Path(name).name)
    write_private(home / "broker.json", json.dumps({"url": amqp_url, "namespace": namespace}).encode())
    return home

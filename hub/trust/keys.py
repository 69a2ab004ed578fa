"""Keys: the key policy, key generation, and private files.

Key policy (XML-SECURITY.md §4), enforced when the CA issues a certificate, when a ``Signer`` loads a key and
when a signature is verified: ECDSA on P-256 or P-384, or RSA with a modulus of at least 3072 bits. Everything
else (P-192, P-224, P-521, RSA-2048, DSA, Ed25519, …) is refused with ``SIG_KEY_POLICY``: cryptography's chain
verifier accepts such leaf keys, so the hub must check them itself.

Each allowed key type signs with exactly one XML-DSig method (``signature_method_for``); a verifier accepts a
method only when it fits the certificate's key (``method_fits_key``). ECDSA signatures in XML-DSig are the raw
``r || s`` concatenation (RFC 4050/6931), not DER; ``raw_to_der`` and ``der_to_raw`` convert.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path
from typing import Literal

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa, utils
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes

from hub.errors import ConfigError, SignatureInvalid

__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "PrivateKey",
    "PublicKey",
    "check_key_policy",
    "der_to_raw",
    "describe_key",
    "ecdsa_for_method",
    "ecdsa_size",
    "generate_private_key",
    "hash_for_method",
    "load_private_key",
    "method_fits_key",
    "private_key_pem",
    "raw_to_der",
    "signature_method_for",
    "spki",
    "write_private_file",
    "write_public_file",
]

Algorithm = Literal["ec-p256", "ec-p384", "rsa-3072"]
#: The key algorithms the hub generates (``hub keygen --algorithm``); the default is first.
ALGORITHMS: tuple[Algorithm, ...] = ("ec-p256", "ec-p384", "rsa-3072")

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey

ECDSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"
ECDSA_SHA384 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384"
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"

_CURVES = {"secp256r1": 32, "secp384r1": 48}
MIN_RSA_BITS = 3072
MAX_RSA_BITS = 8192  # larger moduli only cost verification time; no partner needs them


def describe_key(key: PublicKeyTypes | PrivateKeyTypes) -> str:
    """A short name for a key, e.g. ``ec-p256``, ``rsa-2048``, ``ec-secp192r1``, ``dsa-2048``, ``ed25519``."""
    if isinstance(key, (ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey)):
        return {"secp256r1": "ec-p256", "secp384r1": "ec-p384"}.get(key.curve.name, f"ec-{key.curve.name}")
    if isinstance(key, (rsa.RSAPublicKey, rsa.RSAPrivateKey)):
        return f"rsa-{key.key_size}"
    name = type(key).__name__.lower().lstrip("_")
    for prefix in ("dsa", "ed25519", "ed448", "x25519", "x448", "dh"):
        if name.startswith(prefix):
            size = getattr(key, "key_size", None)
            return f"{prefix}-{size}" if prefix in ("dsa", "dh") and size else prefix
    return name


def check_key_policy(key: PublicKeyTypes | PrivateKeyTypes) -> PublicKey:
    """Return the public key when it satisfies the hub's key policy; raise ``SIG_KEY_POLICY`` otherwise."""
    public = key.public_key() if isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)) else key
    if isinstance(public, ec.EllipticCurvePublicKey):
        if public.curve.name in _CURVES:
            return public
    elif isinstance(public, rsa.RSAPublicKey):
        if MIN_RSA_BITS <= public.key_size <= MAX_RSA_BITS and public.public_numbers().e == 65537:
            return public
    raise SignatureInvalid(
        f"key {describe_key(key)} is not allowed; use ECDSA P-256 or P-384, or RSA with 3072 to "
        f"{MAX_RSA_BITS} bits and exponent 65537",
        code="SIG_KEY_POLICY",
    )


def signature_method_for(key: PublicKeyTypes | PrivateKeyTypes) -> str:
    """The one XML-DSig SignatureMethod the hub signs with for a key that passed the policy."""
    public = check_key_policy(key)
    if isinstance(public, ec.EllipticCurvePublicKey):
        return ECDSA_SHA384 if public.curve.name == "secp384r1" else ECDSA_SHA256
    return RSA_SHA256


def method_fits_key(method: str, key: PublicKey) -> bool:
    """Whether an (allow-listed) SignatureMethod can have been made with this key type."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        return method in (ECDSA_SHA256, ECDSA_SHA384)
    return method == RSA_SHA256


def hash_for_method(method: str) -> hashes.HashAlgorithm:
    return hashes.SHA384() if method == ECDSA_SHA384 else hashes.SHA256()


_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
_ECDSA_SHA384 = ec.ECDSA(hashes.SHA384())


def ecdsa_for_method(method: str) -> ec.ECDSA:
    """The ``ec.ECDSA`` signature algorithm of an ECDSA method URI (made once: every message signs and verifies)."""
    return _ECDSA_SHA384 if method == ECDSA_SHA384 else _ECDSA_SHA256


def ecdsa_size(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> int:
    """Bytes of each of ``r`` and ``s`` in an XML-DSig ECDSA value for this key's curve."""
    return (key.curve.key_size + 7) // 8


def raw_to_der(raw: bytes, key: ec.EllipticCurvePublicKey, size: int | None = None) -> bytes:
    """XML-DSig ECDSA ``r || s`` (each exactly the curve's size) → the DER that cryptography verifies.

    A value of any other length is refused (signxml refuses it too). ``size`` is ``ecdsa_size(key)`` when the
    caller has it (it asks the key's curve otherwise)."""
    size = size or ecdsa_size(key)
    if len(raw) != 2 * size:
        raise SignatureInvalid(
            f"the ECDSA SignatureValue has {len(raw)} bytes; {describe_key(key)} needs {2 * size}", code="SIG_VALUE"
        )
    return utils.encode_dss_signature(int.from_bytes(raw[:size], "big"), int.from_bytes(raw[size:], "big"))


def der_to_raw(
    der: bytes, key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey, size: int | None = None
) -> bytes:
    """cryptography's DER ECDSA signature → XML-DSig ``r || s``; ``size`` is ``ecdsa_size(key)`` when the caller
    has it."""
    size = size or ecdsa_size(key)
    r, s = utils.decode_dss_signature(der)
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def generate_private_key(algorithm: str = "ec-p256") -> PrivateKey:
    """A new private key of one of ``ALGORITHMS``."""
    if algorithm == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if algorithm == "rsa-3072":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    raise ConfigError(f"unknown key algorithm {algorithm!r}; choose one of {', '.join(ALGORITHMS)}")


def private_key_pem(key: PrivateKey, passphrase: bytes | None) -> bytes:
    """PKCS#8 PEM, encrypted with ``passphrase`` when given (the CA keys always are)."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def load_private_key(path: Path, passphrase: bytes | None = None) -> PrivateKey:
    """Load a PEM private key; a wrong passphrase or a malformed file is a ``ConfigError`` (never echoing it)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the private key {path}: {exc.strerror or type(exc).__name__}") from None
    encrypted = b"ENCRYPTED" in data
    try:
        key = serialization.load_pem_private_key(data, password=passphrase if encrypted else None)
    except (ValueError, TypeError) as exc:
        if encrypted and not passphrase:
            raise ConfigError(f"the private key {path} is encrypted; a passphrase is required") from None
        reason = "wrong passphrase or damaged file" if encrypted else type(exc).__name__
        raise ConfigError(f"cannot load the private key {path}: {reason}") from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise SignatureInvalid(f"key {describe_key(key)} in {path} is not allowed", code="SIG_KEY_POLICY")
    return key


def is_special(path: Path) -> bool:
    """Whether ``path`` exists and is neither a regular file nor a directory (a device, a FIFO): a writer must write
    into it, never rename over it."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    return not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode))


def write_into_special(path: Path, data: bytes) -> bool:
    """Write ``data`` into ``path`` when it ``is_special``; False (nothing written) for anything else."""
    if not is_special(path):
        return False
    with open(path, "wb") as fh:
        fh.write(data)
    return True


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write through a temporary file in the same directory and rename: readers never see half a file. A path that
    is there and is not a regular file (``/dev/null``, ``/dev/stdout``, a FIFO) is written into, never replaced: as
    root, ``--out /dev/null`` replaced the machine's /dev/null with a regular file."""
    path = Path(path)
    if write_into_special(path, data):
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def spki(key: PublicKeyTypes) -> bytes:
    """The DER SubjectPublicKeyInfo of a public key: what a certificate and a private key are matched by."""
    return bytes(key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))


def write_private_file(path: Path, data: bytes) -> None:
    """A secret file: mode 0600 from the moment it exists."""
    _write_atomic(path, data, 0o600)


def write_public_file(path: Path, data: bytes) -> None:
    """A certificate, CRL or CSR: 0644."""
    _write_atomic(path, data, 0o644)


def verify_raw(key: PublicKeyTypes, data: bytes, signature: bytes) -> bool:
    """Verify a detached XML-DSig-style signature (ECDSA raw r||s, or RSA PKCS#1 v1.5 with SHA-256) over ``data``
    with ``key``; False instead of an exception when it does not verify."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric import padding

    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            algorithm = hashes.SHA384() if key.curve.name == "secp384r1" else hashes.SHA256()
            key.verify(raw_to_der(signature, key), data, ec.ECDSA(algorithm))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        else:
            return False
    except (InvalidSignature, ValueError):
        return False
    return True

"""Trust benchmark: signing and verifying a typical ~2 KB envelope, beside the bare ``cryptography`` primitive.

For each supported key algorithm (ECDSA P-256, ECDSA P-384, RSA-3072):

* hub sign    ``Signer.sign(root)``: exclusive C14N of the envelope, SHA-256, the signature template, C14N of
               SignedInfo, one private-key operation, base64.
* hub verify  ``Verifier.verify(root)`` on an already parsed tree, as the pipeline calls it: the profile check,
               the (cached) certificate path, key policy and CRL freshness, ``SignatureValue`` over SignedInfo,
               the envelope's digest, and the signed tree handed back.
* signxml     the reference: the same checks with signxml doing the cryptography (``SignxmlVerifier``), and
               signxml alone with the leaf pinned ("as it comes").
* floor       the bare primitive on the same bytes: ``public_key.verify(signature, signed_info_c14n)`` and
               ``private_key.sign(signed_info_c14n)``.

Rounds are interleaved and the figures are medians of per-round means (the machine is shared). The last line
is for the hub's default algorithm (ECDSA P-256)::

    verify_per_s=<n> sign_per_s=<n> floor_ratio=<hub verify time / primitive verify time>

Run: ``.venv/bin/python bench/trust.py`` (about 30 s; ``--quick`` for a smoke run).
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from lxml import etree
from signxml import DigestAlgorithm, SignatureConfiguration, SignatureMethod, XMLVerifier

from hub.envelope import parse, to_bytes
from hub.settings import PROJECT_ROOT
from hub.trust import Signer, TrustStore, Verifier, keys, pki
from hub.trust.reference import SignxmlVerifier
from hub.trust.signature import c14n

SAMPLES = (
    PROJECT_ROOT / "schemas/services/document.official/1/samples/valid/typical-notice.xml",
    PROJECT_ROOT / "schemas/services/document.receipt/1/samples/valid/handled.xml",
)
AGENCY = "11220100013544550M"
SYSTEM = "city-220100-oa"
DS = "{http://www.w3.org/2000/09/xmldsig#}"


def per_call(fn: Callable[[], object], n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n


def bench_algorithm(
    algorithm: str,
    pki_dir: Path,
    ca: tuple,
    store: TrustStore,
    sample: Path,
    rounds: int,
    n: int,  # type: ignore[type-arg]
) -> dict[str, float]:
    """Median seconds per call of: hub sign, floor sign, hub verify, floor verify, signxml reference, signxml alone."""
    key = keys.generate_private_key(algorithm)
    issued = pki.issue_from_csr(pki_dir, "bench", pki.make_csr(key, AGENCY, SYSTEM), ca=ca)
    signer = Signer(key, [issued.certificate, ca[0]])
    unsigned = parse(sample.read_bytes())
    sender = unsigned.find("{urn:forestry-hub:envelope:1}Header/{urn:forestry-hub:envelope:1}Sender")
    assert sender is not None
    sender.set("agency", AGENCY)
    sender.set("system", SYSTEM)
    signed_bytes = to_bytes(signer.sign(unsigned))
    unsigned.remove(unsigned[-1])

    # the same bytes the primitive works on: SignedInfo as signed, and its signature value
    signed_tree = parse(signed_bytes)
    signed_info = c14n(signed_tree.find(f"{DS}Signature/{DS}SignedInfo"))  # type: ignore[arg-type]
    # Each branch binds its own key type: the closures below would not see the isinstance narrowing of ``key``.
    if isinstance(key, ec.EllipticCurvePrivateKey):
        ec_key, alg = key, ec.ECDSA(hashes.SHA384() if algorithm == "ec-p384" else hashes.SHA256())
        ec_public = ec_key.public_key()
        der = ec_key.sign(signed_info, alg)

        def floor_verify() -> None:
            ec_public.verify(der, signed_info, alg)

        def floor_sign() -> None:
            ec_key.sign(signed_info, alg)
    else:
        rsa_key = cast(rsa.RSAPrivateKey, key)
        rsa_public = rsa_key.public_key()
        sig = rsa_key.sign(signed_info, padding.PKCS1v15(), hashes.SHA256())

        def floor_verify() -> None:
            rsa_public.verify(sig, signed_info, padding.PKCS1v15(), hashes.SHA256())

        def floor_sign() -> None:
            rsa_key.sign(signed_info, padding.PKCS1v15(), hashes.SHA256())

    def hub_sign() -> None:
        signer.sign(unsigned)
        unsigned.remove(unsigned[-1])

    verifier = Verifier(store)
    reference = SignxmlVerifier(store)
    verifier.verify(parse(signed_bytes))  # warm the chain cache, as a running hub has it
    reference.verify(parse(signed_bytes))
    config = SignatureConfiguration(
        location="./",
        signature_methods=frozenset(
            {SignatureMethod.ECDSA_SHA256, SignatureMethod.ECDSA_SHA384, SignatureMethod.RSA_SHA256}
        ),
        digest_algorithms=frozenset({DigestAlgorithm.SHA256}),
    )

    def timed_verify(v: Callable[[etree._Element], object], count: int) -> float:
        trees = [parse(signed_bytes) for _ in range(count)]  # verify takes a parsed tree (and consumes it)
        it = iter(trees)
        return per_call(lambda: v(next(it)), count)

    def signxml_alone(root: etree._Element) -> object:
        return XMLVerifier().verify(root, x509_cert=issued.certificate, expect_config=config)

    samples: dict[str, list[float]] = {k: [] for k in ("sign", "fsign", "verify", "fverify", "ref", "raw")}
    for _ in range(rounds):
        samples["sign"].append(per_call(hub_sign, n))
        samples["fsign"].append(per_call(floor_sign, n))
        samples["verify"].append(timed_verify(verifier.verify, n))
        samples["fverify"].append(per_call(floor_verify, n))
        samples["ref"].append(timed_verify(reference.verify, max(n // 4, 10)))
        samples["raw"].append(timed_verify(signxml_alone, max(n // 4, 10)))
    return {k: statistics.median(v) for k, v in samples.items()}


def main() -> None:
    quick = "--quick" in sys.argv
    rounds, n = (2, 50) if quick else (5, 300)
    sample = next(p for p in SAMPLES if p.exists())
    tmp = Path(tempfile.mkdtemp(prefix="hub-bench-trust-"))
    created = pki.init_ca(tmp / "pki", "bench")
    ca = pki.load_ca(created.paths.root, "bench")
    store = TrustStore.load(created.paths.root, refresh_interval=3600)
    print(f"envelope: {sample.relative_to(PROJECT_ROOT)} ({sample.stat().st_size} bytes unsigned)")
    print(
        f"{'algorithm':10} {'hub sign/s':>11} {'floor sign/s':>13} {'hub verify/s':>13} {'floor verify/s':>15} "
        f"{'ratio':>6} {'signxml ref/s':>14} {'ratio':>6} {'signxml alone/s':>16} {'ratio':>6}"
    )
    default: tuple[float, float, float] | None = None
    for algorithm in keys.ALGORITHMS:
        m = bench_algorithm(algorithm, created.paths.root, ca, store, sample, rounds, n)
        print(
            f"{algorithm:10} {1 / m['sign']:11.0f} {1 / m['fsign']:13.0f} {1 / m['verify']:13.0f} "
            f"{1 / m['fverify']:15.0f} {m['verify'] / m['fverify']:6.2f} {1 / m['ref']:14.0f} "
            f"{m['ref'] / m['fverify']:6.2f} {1 / m['raw']:16.0f} {m['raw'] / m['fverify']:6.2f}"
        )
        if algorithm == "ec-p256":
            default = (1 / m["verify"], 1 / m["sign"], m["verify"] / m["fverify"])
    shutil.rmtree(tmp, ignore_errors=True)
    assert default is not None
    print(f"verify_per_s={default[0]:.0f} sign_per_s={default[1]:.0f} floor_ratio={default[2]:.2f}")


if __name__ == "__main__":
    main()

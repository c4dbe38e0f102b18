#!/usr/bin/env python3
"""What a revocation check costs: a cold OCSP check against ``openssl ocsp`` on loopback,
a warm one answered from the disk cache, and a CRL check, beside openssl's own client.

    .venv/bin/python benchmarks/bench_revocation.py [--repeats N] [--crl-entries N] [--json FILE]

Measured, each over N repeats (median and best, milliseconds):

* cold OCSP: a fresh ``check_chain`` for [end entity, issuing CA] with no cache: build the
  request (SHA-256 CertID, nonce), POST it over loopback, verify the delegated responder's
  certificate and the response signature, check nonce and times;
* warm OCSP: the same with a populated cache directory (no network);
* ``openssl ocsp -issuer .. -cert .. -url ..`` (the reference client, process start included;
  ``openssl version`` is timed too so the start-up share can be read off);
* cold CRL: fetch over loopback HTTP and check a CRL of ``--crl-entries`` revoked serials;
* warm CRL: the same CRL read back from the cache (parse and signature check again).

Figures only; nothing is asserted about wall-clock time.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent.parent / "tests" / "revocation"))

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes  # noqa: E402
from revpki import (  # noqa: E402
    DAY,
    NOW,
    CrlServer,
    OpensslResponder,
    RevPKI,
    der,
    free_port,
)

from smimekit.validation.revocation import (  # noqa: E402
    RevocationOptions,
    RevocationPolicy,
    check_chain,
)


def timed(fn: Callable[[], object], repeats: int) -> dict[str, float]:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return {"median_ms": statistics.median(samples), "best_ms": min(samples)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--crl-entries", type=int, default=10_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if shutil.which("openssl") is None:
        sys.exit("openssl is needed for the responder")

    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        crls = CrlServer()
        port = free_port()
        pki = RevPKI(http_base=crls.base, ocsp_url=f"http://127.0.0.1:{port}/")
        alice = pki.person("alice", crl=False)
        carol = pki.person("carol", ocsp_url=False)
        responder = OpensslResponder(work / "ocsp", port, pki.ca, pki.responder,
                                     [(alice.cert, "V", None, None)])
        try:
            chain = [alice.cert, pki.ca.cert]
            hard = RevocationPolicy.HARD

            def cold() -> None:
                report = check_chain(chain, options=RevocationOptions(policy=hard))
                assert report.ok, report.reasons

            results["ocsp cold (smimekit)"] = timed(cold, args.repeats)

            cache = work / "cache"
            warm_options = RevocationOptions(policy=hard, cache_dir=cache)
            check_chain(chain, options=warm_options)

            def warm() -> None:
                report = check_chain(chain, options=warm_options)
                assert report.ok and report.statuses[0].source == "cache"

            results["ocsp warm, cached (smimekit)"] = timed(warm, args.repeats)

            (work / "alice.pem").write_bytes(alice.pem_cert())
            (work / "ca.pem").write_bytes(pki.ca.pem_cert())

            def openssl_client() -> None:
                subprocess.run(
                    ["openssl", "ocsp", "-issuer", "ca.pem", "-cert", "alice.pem",
                     "-url", pki.ocsp_url, "-VAfile", "ca.pem", "-no_cert_verify",
                     "-noverify"],
                    cwd=work, check=True, capture_output=True)

            results["ocsp (openssl ocsp client)"] = timed(openssl_client, args.repeats)
            results["openssl version (start-up)"] = timed(
                lambda: subprocess.run(["openssl", "version"], check=True, capture_output=True),
                args.repeats)

            revoked = [(pki.person(f"r{i}", ocsp_url=False).cert, NOW - DAY, None)
                       for i in range(min(args.crl_entries, 50))]
            big = pki.crl(revoked)
            # Pad with synthetic serials: issuing thousands of certificates would dominate.
            builder = (x509.CertificateRevocationListBuilder().issuer_name(big.issuer)
                       .last_update(big.last_update_utc).next_update(NOW + DAY)
                       .add_extension(x509.CRLNumber(2), False))
            for entry in big:
                builder = builder.add_revoked_certificate(entry)
            for serial in range(1, max(args.crl_entries - len(revoked), 0) + 1):
                builder = builder.add_revoked_certificate(
                    x509.RevokedCertificateBuilder().serial_number(serial)
                    .revocation_date(NOW - DAY).build())
            crls.files["ca.crl"] = der(builder.sign(pki.ca.key, hashes.SHA256()))
            crl_size = len(crls.files["ca.crl"])
            crl_chain = [carol.cert, pki.ca.cert]

            def crl_cold() -> None:
                report = check_chain(crl_chain, options=RevocationOptions(policy=hard))
                assert report.ok, report.reasons

            results[f"crl cold, {args.crl_entries} entries, {crl_size} bytes"] = timed(
                crl_cold, max(args.repeats // 5, 3))
            crl_cache = RevocationOptions(policy=hard, cache_dir=work / "crl-cache")
            check_chain(crl_chain, options=crl_cache)
            results[f"crl warm, cached, {args.crl_entries} entries"] = timed(
                lambda: check_chain(crl_chain, options=crl_cache), max(args.repeats // 5, 3))
        finally:
            responder.stop()
            crls.stop()

    openssl = subprocess.run(["openssl", "version"], capture_output=True, text=True).stdout
    print(f"revocation checks, {platform.python_implementation()} {platform.python_version()},"
          f" {openssl.strip()}")
    width = max(len(k) for k in results)
    for name, figures in results.items():
        print(f"  {name:<{width}}  median {figures['median_ms']:8.2f} ms"
              f"   best {figures['best_ms']:8.2f} ms")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Verify throughput with revocation: smimekit in-process beside ``openssl cms -verify``.

    .venv/bin/python benchmarks/bench_verify.py [--seconds S] [--crl-entries N]
        [--key rsa2048|p256] [--openssl-runs N] [--no-ocsp] [--profile FILE] [--json FILE]

The same run makes a PKI with ``cryptography`` (root -> issuing CA -> signer, every
certificate naming a CRL distribution point), one CRL per CA (the issuing CA's padded to
``--crl-entries`` revoked serials), and a 10 KB message signed with ``smimekit.sign`` (the
issuing CA included). It then measures, on those same files:

* ``smimekit.verify`` in-process, messages/s over ``--seconds`` after a warm-up, in one
  process and in two (one per core, started together; the figure is their sum):
  - ``none``: ``revocation=None``;
  - ``cache``: policy HARD, the CRLs answered from a warm ``cache_dir`` (a fetcher that
    fails on any call makes sure the network is never asked);
  - ``local``: policy OFFLINE, the two CRLs supplied as bytes (``RevocationOptions.crls``);
* ``openssl cms -verify -crl_check_all -CAfile root+crls.pem -certfile ca.pem`` (OpenSSL 3.0's
  ``cms`` takes neither ``-CRLfile`` nor ``-untrusted``: the CRLs go in the CA file), and
  ``-crl_check``, and no CRL check (``-CAfile root.pem``): the median per-process time, and
  messages/s running ``--openssl-runs`` processes back to back, one at a time and two at a time;
* the cost of a cold OCSP check: a verify whose signer names an ``openssl ocsp`` responder
  on loopback (no cache; the issuing CA's status from the root CRL supplied locally), and
  ``check_certificate`` alone for that signer, each beside ``revocation=None``.

Figures only: the target (>= 2,000 messages/s in-process, warm cache, 2 cores) is reported
as met or missed, never asserted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import email.utils
import json
import multiprocessing
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

HERE = Path(__file__).resolve()
TARGET = 2000.0
BASE = "http://crl.invalid"  # never fetched: the cache or the caller answers
FROM = "Alice Sender <sender@example.org>"


# -- the PKI -------------------------------------------------------------------------------


def _key(kind: str) -> Any:
    if kind == "rsa2048":
        return rsa.generate_private_key(65537, 2048)
    if kind == "p256":
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(kind)


def _pem(obj: Any) -> bytes:
    return obj.public_bytes(serialization.Encoding.PEM)  # type: ignore[no-any-return]


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cdp(url: str) -> x509.CRLDistributionPoints:
    return x509.CRLDistributionPoints(
        [x509.DistributionPoint([x509.UniformResourceIdentifier(url)], None, None, None)]
    )


def _cert(
    subject: str, key: Any, issuer: tuple[x509.Name, Any] | None, *, ca: bool,
    crl_url: str | None, email: str | None = None, ocsp_url: str | None = None,
    eku: x509.ObjectIdentifier | None = None,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    issuer_name, issuer_key = issuer if issuer is not None else (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject)).issuer_name(issuer_name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            issuer_key.public_key()), critical=False)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True)
    else:
        builder = builder.add_extension(
            x509.KeyUsage(True, True, False, False, False, False, False, False, False),
            critical=True)
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([eku or ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
    if email:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False)
    if crl_url:
        builder = builder.add_extension(_cdp(crl_url), critical=False)
    if ocsp_url:
        builder = builder.add_extension(x509.AuthorityInformationAccess([
            x509.AccessDescription(AuthorityInformationAccessOID.OCSP,
                                   x509.UniformResourceIdentifier(ocsp_url))]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _crl(issuer: x509.Certificate, key: Any, entries: int) -> x509.CertificateRevocationList:
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
    builder = (
        x509.CertificateRevocationListBuilder().issuer_name(issuer.subject)
        .last_update(now).next_update(now + dt.timedelta(days=7))
        .add_extension(x509.CRLNumber(1), False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()),
                       False)
    )
    for serial in range(1, entries + 1):  # synthetic serials: never the signer's (random)
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial)
            .revocation_date(now - dt.timedelta(days=1)).build())
    return builder.sign(key, hashes.SHA256())


def _message(size: int) -> bytes:
    headers = (
        f"From: {FROM}\r\nTo: Bob <bob@example.org>\r\nSubject: verify throughput\r\n"
        f"Date: {email.utils.formatdate(usegmt=True)}\r\nMessage-ID: <bench@example.org>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
    ).encode()
    line = b"The quick brown fox jumps over the lazy dog; smimekit verify benchmark.\r\n"
    body = line * (size // len(line) + 1)
    return headers + body[: size - len(headers)]


def make_pki(d: Path, kind: str, crl_entries: int, ocsp_url: str | None) -> None:
    import smimekit

    root_key, ca_key, signer_key = _key("rsa2048"), _key("rsa2048"), _key(kind)
    root = _cert("bench root", root_key, None, ca=True, crl_url=None)
    ca = _cert("bench issuing CA", ca_key, (root.subject, root_key), ca=True,
               crl_url=f"{BASE}/root.crl")
    signer = _cert("Alice Sender", signer_key, (ca.subject, ca_key), ca=False,
                   crl_url=f"{BASE}/ca.crl", email="sender@example.org")
    root_crl = _crl(root, root_key, 1)
    ca_crl = _crl(ca, ca_key, crl_entries)
    for stem, obj in (("root", root), ("ca", ca), ("signer", signer)):
        (d / f"{stem}.pem").write_bytes(_pem(obj))
    (d / "root.crl").write_bytes(root_crl.public_bytes(serialization.Encoding.DER))
    (d / "ca.crl").write_bytes(ca_crl.public_bytes(serialization.Encoding.DER))
    (d / "root+crls.pem").write_bytes(_pem(root) + _pem(root_crl) + _pem(ca_crl))
    (d / "signed.eml").write_bytes(smimekit.sign(_message(10 * 1024), signer_key, signer,
                                                 chain=[ca]))
    if ocsp_url:
        # A second signer whose status comes from OCSP, and the responder's certificate.
        key = _key(kind)
        ocsp_signer = _cert("Olga Sender", key, (ca.subject, ca_key), ca=False, crl_url=None,
                            email="sender@example.org", ocsp_url=ocsp_url)
        rkey = ec.generate_private_key(ec.SECP256R1())
        responder = _cert("bench OCSP responder", rkey, (ca.subject, ca_key), ca=False,
                          crl_url=None, eku=ExtendedKeyUsageOID.OCSP_SIGNING)
        (d / "ocsp-signer.pem").write_bytes(_pem(ocsp_signer))
        (d / "ocsp-signed.eml").write_bytes(
            smimekit.sign(_message(10 * 1024), key, ocsp_signer, chain=[ca]))
        (d / "rsigner.pem").write_bytes(_pem(responder))
        (d / "rkey.pem").write_bytes(rkey.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        (d / "ca.key").write_bytes(ca_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))


# -- smimekit in-process -------------------------------------------------------------------


def _verifier(d: Path, mode: str) -> Callable[[], object]:
    """A zero-argument verify of the signed message under ``mode``; checked once here."""
    import smimekit
    from smimekit.validation.fetchers import MemoryFetcher
    from smimekit.validation.revocation import RevocationOptions, RevocationPolicy

    message = (d / "signed.eml").read_bytes()
    root = x509.load_pem_x509_certificate((d / "root.pem").read_bytes())
    crls = {f"{BASE}/root.crl": (d / "root.crl").read_bytes(),
            f"{BASE}/ca.crl": (d / "ca.crl").read_bytes()}
    nowhere = MemoryFetcher()  # any call fails like a closed port (and is recorded)
    options: RevocationOptions | None
    if mode == "none":
        options = None
    elif mode == "cache":
        cache = d / f"cache-{os.getpid()}"
        if not cache.exists():  # populate it once, through an in-memory "network"
            smimekit.verify(message, trust=[root], revocation=RevocationOptions(
                policy=RevocationPolicy.HARD, cache_dir=cache, fetcher=MemoryFetcher(crls)))
        options = RevocationOptions(policy=RevocationPolicy.HARD, cache_dir=cache,
                                    fetcher=nowhere)
    elif mode == "local":
        options = RevocationOptions(policy=RevocationPolicy.OFFLINE, crls=list(crls.values()))
    else:
        raise ValueError(mode)

    def run() -> object:
        return smimekit.verify(message, trust=[root], revocation=options)

    verdict = smimekit.verify(message, trust=[root], revocation=options).verdict
    assert verdict.valid and not verdict.warnings, (verdict.all_reasons(), verdict.warnings)
    if options is not None:
        statuses = [s for signer in verdict.signers for s in signer.revocation]
        assert len(statuses) == 2 and all(s.status == "good" for s in statuses), statuses
        want = "cache" if mode == "cache" else "crl"
        assert all(s.source == want for s in statuses), statuses
    assert not nowhere.calls, nowhere.calls
    return run


def _rate(run: Callable[[], object], seconds: float) -> tuple[int, float]:
    for _ in range(20):  # warm-up
        run()
    count, started = 0, time.perf_counter()
    deadline = started + seconds
    while True:
        for _ in range(20):
            run()
        count += 20
        now = time.perf_counter()
        if now >= deadline:
            return count, now - started


def _worker(d: str, mode: str, seconds: float, barrier: Any, out: Any) -> None:
    run = _verifier(Path(d), mode)
    for _ in range(20):
        run()
    barrier.wait()
    out.put(_rate(run, seconds))


def throughput(d: Path, mode: str, seconds: float, processes: int) -> float:
    """Messages/s of ``processes`` processes started together (each its own warm-up)."""
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(processes), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(str(d), mode, seconds, barrier, out))
             for _ in range(processes)]
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
        if p.exitcode:
            raise RuntimeError(f"worker failed ({mode})")
    return sum(count / elapsed for count, elapsed in results)


def first_call_ms(d: Path, mode: str) -> float:
    """The first verify of a fresh process (imports done): what a one-shot caller pays."""
    code = (
        "import sys, time; sys.path.insert(0, sys.argv[1]); import bench_verify as b;"
        "from pathlib import Path; import smimekit;"
        "t = time.perf_counter(); b._verifier(Path(sys.argv[2]), sys.argv[3])\n"
        "print((time.perf_counter() - t) * 1000)"
    )
    done = subprocess.run([sys.executable, "-c", code, str(HERE.parent), str(d), mode],
                          check=True, capture_output=True, text=True)
    return float(done.stdout.split()[-1])


# -- openssl -------------------------------------------------------------------------------


def openssl_args(check: str) -> list[str]:
    """OpenSSL 3.0's ``cms`` has no ``-CRLfile`` nor ``-untrusted``: the CRLs go in the
    ``-CAfile`` with the root (``root+crls.pem``), the issuing CA in ``-certfile``."""
    args = ["openssl", "cms", "-verify", "-in", "signed.eml", "-certfile", "ca.pem",
            "-out", os.devnull]
    if check:
        return [*args, check, "-CAfile", "root+crls.pem"]
    return [*args, "-CAfile", "root.pem"]


def openssl_figures(d: Path, check: str, runs: int) -> dict[str, float]:
    args = openssl_args(check)
    subprocess.run(args, cwd=d, check=True, capture_output=True)  # it verifies at all
    if check:  # and the CRLs are really consulted: without them it fails
        without = [a if a != "root+crls.pem" else "root.pem" for a in args]
        assert subprocess.run(without, cwd=d, capture_output=True).returncode != 0

    def one() -> float:
        started = time.perf_counter()
        subprocess.run(args, cwd=d, check=True, capture_output=True)
        return time.perf_counter() - started

    samples = [one() for _ in range(min(runs, 50))]
    started = time.perf_counter()
    for _ in range(runs):
        subprocess.run(args, cwd=d, check=True, capture_output=True)
    serial = runs / (time.perf_counter() - started)

    def half() -> None:
        for _ in range(runs // 2):
            subprocess.run(args, cwd=d, check=True, capture_output=True)

    threads = [threading.Thread(target=half) for _ in range(2)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    parallel = 2 * (runs // 2) / (time.perf_counter() - started)
    return {"per_process_ms": statistics.median(samples) * 1000, "serial_per_s": serial,
            "parallel2_per_s": parallel}


# -- a cold OCSP check ---------------------------------------------------------------------


def ocsp_figures(d: Path, port: int, repeats: int) -> dict[str, float]:
    sys.path.insert(0, str(HERE.parent.parent / "tests" / "revocation"))
    from revpki import OpensslResponder, Party

    import smimekit
    from smimekit.validation.revocation import (
        RevocationOptions,
        RevocationPolicy,
        check_certificate,
    )

    def load(stem: str) -> x509.Certificate:
        return x509.load_pem_x509_certificate((d / f"{stem}.pem").read_bytes())

    root, ca, signer = load("root"), load("ca"), load("ocsp-signer")
    ca_party = Party(serialization.load_pem_private_key((d / "ca.key").read_bytes(), None), ca)
    responder_party = Party(
        serialization.load_pem_private_key((d / "rkey.pem").read_bytes(), None), load("rsigner"))
    responder = OpensslResponder(d / "ocsp", port, ca_party, responder_party,  # type: ignore[arg-type]
                                 [(signer, "V", None, None)])
    message = (d / "ocsp-signed.eml").read_bytes()
    options = RevocationOptions(policy=RevocationPolicy.HARD,
                                crls=[(d / "root.crl").read_bytes()])
    hard = RevocationOptions(policy=RevocationPolicy.HARD)

    def median_ms(fn: Callable[[], object]) -> float:
        fn()
        samples = []
        for _ in range(repeats):
            started = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - started)
        return statistics.median(samples) * 1000

    try:
        verdict = smimekit.verify(message, trust=[root], revocation=options).verdict
        statuses = [s for v in verdict.signers for s in v.revocation]
        assert verdict.valid and statuses[0].protocol == "ocsp", statuses
        assert check_certificate(signer, ca, options=hard).status == "good"
        return {
            "verify_cold_ocsp_ms": median_ms(
                lambda: smimekit.verify(message, trust=[root], revocation=options)),
            "verify_no_revocation_ms": median_ms(
                lambda: smimekit.verify(message, trust=[root], revocation=None)),
            "check_certificate_cold_ocsp_ms": median_ms(
                lambda: check_certificate(signer, ca, options=hard)),
        }
    finally:
        responder.stop()


# -- main ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per in-process figure")
    parser.add_argument("--crl-entries", type=int, default=1000,
                        help="revoked serials on the issuing CA's CRL")
    parser.add_argument("--key", choices=("rsa2048", "p256"), default="rsa2048")
    parser.add_argument("--openssl-runs", type=int, default=200)
    parser.add_argument("--no-ocsp", action="store_true", help="skip the cold OCSP figures")
    parser.add_argument("--profile", type=Path,
                        help="write a cProfile of warm-cache verifies to this file")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it")
    args = parser.parse_args()
    if shutil.which("openssl") is None:
        sys.exit("openssl is needed on the PATH")

    tmp = None
    if args.keep:
        d = args.keep
        d.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory()
        d = Path(tmp.name)
    port = 0
    if not args.no_ocsp:
        sys.path.insert(0, str(HERE.parent.parent / "tests" / "revocation"))
        from revpki import free_port

        port = free_port()
    make_pki(d, args.key, args.crl_entries, None if args.no_ocsp else f"http://127.0.0.1:{port}/")
    crl_size = (d / "ca.crl").stat().st_size
    results: dict[str, Any] = {"crl_entries": args.crl_entries, "crl_bytes": crl_size,
                               "key": args.key}

    if args.profile:
        import cProfile

        run = _verifier(d, "cache")
        for _ in range(50):
            run()
        cProfile.runctx("for _ in range(2000): run()", globals(), {"run": run},
                        str(args.profile))

    smimekit_rows = []
    for mode, label in (("none", "no revocation"),
                        ("cache", "HARD, CRLs from a warm cache_dir"),
                        ("local", "OFFLINE, CRLs supplied (bytes)")):
        one = throughput(d, mode, args.seconds, 1)
        two = throughput(d, mode, args.seconds, 2)
        first = first_call_ms(d, mode)
        results[f"smimekit {mode}"] = {"per_s_1": one, "per_s_2": two, "first_call_ms": first}
        smimekit_rows.append((label, one, two, first))

    openssl_rows = []
    for check, label in (("-crl_check_all", "-crl_check_all (EE + CA)"),
                         ("-crl_check", "-crl_check (EE only)"), ("", "no CRL check")):
        figures = openssl_figures(d, check, args.openssl_runs)
        results[f"openssl {check or 'none'}"] = figures
        openssl_rows.append((label, figures))
    started = time.perf_counter()
    for _ in range(50):
        subprocess.run(["openssl", "version"], check=True, capture_output=True)
    results["openssl version ms"] = (time.perf_counter() - started) / 50 * 1000

    if not args.no_ocsp:
        results["ocsp"] = ocsp_figures(d, port, 30)

    version = subprocess.run(["openssl", "version"], capture_output=True, text=True).stdout
    print(f"verify throughput: 10 KB signed, chain of 3 (RSA-2048 CAs, {args.key} signer),"
          f" issuing CA CRL {args.crl_entries} entries / {crl_size} bytes;"
          f" {platform.python_implementation()} {platform.python_version()},"
          f" {version.strip()}, {os.cpu_count()} cores")
    print()
    print("| smimekit.verify (in-process) | 1 process msg/s | 2 processes msg/s |"
          " first call ms |")
    print("|---|---|---|---|")
    for label, one, two, first in smimekit_rows:
        print(f"| {label} | {one:,.0f} | {two:,.0f} | {first:.1f} |")
    print()
    print("| openssl cms -verify | per process ms | back to back msg/s | 2 at a time msg/s |")
    print("|---|---|---|---|")
    for label, figures in openssl_rows:
        print(f"| {label} | {figures['per_process_ms']:.2f} | {figures['serial_per_s']:,.0f} |"
              f" {figures['parallel2_per_s']:,.0f} |")
    print(f"\n(openssl version: {results['openssl version ms']:.2f} ms per process)")
    cache, local = results["smimekit cache"], results["smimekit local"]
    ossl = results["openssl -crl_check_all"]
    print()
    ratios = (cache["per_s_1"] / ossl["serial_per_s"], cache["per_s_2"] / ossl["parallel2_per_s"],
              local["per_s_1"] / ossl["serial_per_s"], local["per_s_2"] / ossl["parallel2_per_s"])
    results["ratios"] = ratios
    print("ratio, warm cache vs openssl -crl_check_all: 1 process {:.1f}x, 2 processes {:.1f}x"
          " (local CRLs: {:.1f}x, {:.1f}x)".format(*ratios))
    met = "met" if cache["per_s_2"] >= TARGET else "missed"
    print(f"target >= {TARGET:,.0f} msg/s, warm cache, {os.cpu_count()} cores:"
          f" {cache['per_s_2']:,.0f} msg/s, {met}")
    if "ocsp" in results:
        o = results["ocsp"]
        print()
        print(f"cold OCSP (openssl ocsp responder on loopback, median of 30):"
              f" verify {o['verify_cold_ocsp_ms']:.2f} ms"
              f" vs {o['verify_no_revocation_ms']:.2f} ms without revocation;"
              f" check_certificate alone {o['check_certificate_cold_ocsp_ms']:.2f} ms")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()

"""Several processes running the real CLI at once against one store, SQLite and PostgreSQL
(issue 9): ``ca revoke``, ``ca crl`` and ``ca issue --email same@`` together, then the store
is checked. Bounded: 15 processes, each with a 120-second deadline."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from backends import Backend
from cryptography import x509
from sqlalchemy import select

from smimekit.ca.home import CAHome
from smimekit.ca.issuance import CertificateAuthority, SubscriberKeyType
from smimekit.cli.main import main
from smimekit.store import Store, schema

PASS = "correct horse battery staple"
FAST = {"sign_key": SubscriberKeyType.P256, "encrypt_key": SubscriberKeyType.P256,
        "lint": False}
REVOKERS, PUBLISHERS, ISSUERS = 6, 5, 4


def _spawn(backend: Backend, tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "smimekit.cli.main", *backend.cli_args(), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        env={**os.environ, "SMIMEKIT_PASSPHRASE": PASS})


@pytest.mark.slow
def test_concurrent_revoke_crl_and_issue_keep_the_store_consistent(
        backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMIMEKIT_PASSPHRASE", PASS)
    assert main([*backend.cli_args(), "ca", "init", "--org", "Example Ltd", "--base-url",
                 "http://pki.example.com", "--key-type", "p256", "--country", "GB"]) == 0
    home = CAHome(backend.data_dir)
    with Store.open(backend.url, backend.data_dir, create=False) as store:
        cax = CertificateAuthority(home.unlock(PASS.encode()), store)
        serials = [cax.issue_generated(f"r{n}@example.com", purpose="sign", **FAST)
                   .items[0].record.serial for n in range(REVOKERS)]
        issuer = cax.issuer_fingerprint
    secret = tmp_path / "p12.pass"
    secret.write_text("p12 passphrase for the test\n")

    procs: list[tuple[str, subprocess.Popen[str]]] = []
    for n in range(max(REVOKERS, PUBLISHERS, ISSUERS)):
        if n < ISSUERS:
            procs.append(("issue", _spawn(
                backend, tmp_path, "ca", "issue", "--email", "same@example.com", "--purpose",
                "sign", "--key-type", "p256", "--out", str(tmp_path / f"out{n}"),
                "--p12-passphrase-file", str(secret))))
        if n < REVOKERS:
            procs.append(("revoke", _spawn(backend, tmp_path, "ca", "revoke", serials[n])))
        if n < PUBLISHERS:
            procs.append(("crl", _spawn(backend, tmp_path, "ca", "crl")))
    results = []
    try:
        for kind, proc in procs:
            out, err = proc.communicate(timeout=120)
            results.append((kind, proc.returncode, out, err))
    finally:
        for _, proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    for kind, rc, _out, err in results:
        if kind in ("revoke", "crl"):
            assert rc == 0, (kind, err)
    with Store.open(backend.url, backend.data_dir, create=False) as store:
        c = schema.crl_publications
        with store.transaction() as conn:
            numbers = [int(n) for n in conn.execute(
                select(c.c.crl_number).where(c.c.issuer_fingerprint == issuer)
                .order_by(c.c.id)).scalars()]
        # ca init's, one per revoke, one per ca crl: unique and strictly increasing
        assert numbers == list(range(1, 2 + REVOKERS + PUBLISHERS))
        latest = store.latest_crl(issuer)
        assert latest is not None and latest.der is not None
        crl = x509.load_der_x509_crl(latest.der)
        assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number \
            == numbers[-1]
        listed = {format(entry.serial_number, "x") for entry in crl}
        revoked = {r.serial for r in store.revocations(issuer)}
        assert revoked == set(serials) and listed == revoked
        live = Counter((r.email, p) for r in store.issued_records()
                       for p in (("sign", "encrypt") if r.purpose == "both" else (r.purpose,)))
        assert max(live.values()) == 1
        assert live[("same@example.com", "sign")] == 1
    issues = [(rc, out, err) for kind, rc, out, err in results if kind == "issue"]
    assert sorted(rc for rc, _, _ in issues) == [0] + [1] * (ISSUERS - 1), issues
    for rc, out, err in issues:
        if rc == 1:
            lines = err.strip().splitlines()
            assert len(lines) == 1 and "already holds a live" in lines[0], err
            assert "--replace" in lines[0] and out == ""
    # only the one that succeeded wrote files; the refused ones left no folder behind
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("out")]) == 1


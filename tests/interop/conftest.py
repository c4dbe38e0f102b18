"""Fixtures for the interop matrix: one PKI made by OpenSSL, a gpgsm home, an NSS database.

All three are session-scoped: the PKI takes about a second to make (RSA-3072 key generation),
the gpgsm home needs a gpg-agent, and neither changes during the run.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from checks import Loaded
from peers import Gpgsm, NssDb, Pki, make_pki, missing_binaries


def _require(peer: str) -> None:
    missing = missing_binaries(peer)
    if missing:
        pytest.skip(f"interop peer {peer!r} not installed (missing: {', '.join(missing)})")


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Root CA -> intermediate -> alice (RSA-2048), bob (P-256), carol (RSA-3072),
    dave (P-384), erin (P-521); PEM keys, PKCS#12 (AES and -legacy) with peers.PASSWORD."""
    _require("openssl")
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def gpgsm(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gpgsm]:
    """A GNUPGHOME trusting the root, holding alice's key (from her -legacy PKCS#12)."""
    _require("gpgsm")
    home = Gpgsm(tmp_path_factory.mktemp("gnupg") / "home")
    try:
        home.trust_root(pki.root_cert)
        home.import_certs(pki.inter_cert, *(u.cert for u in pki.users.values()))
        home.import_p12(pki["alice"].p12_legacy)
        yield home
    finally:
        home.close()


@pytest.fixture(scope="session")
def nss(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> NssDb:
    """An NSS database trusting the root (CT,C,C) with every end entity's PKCS#12 imported."""
    _require("nss")
    db = NssDb(tmp_path_factory.mktemp("nssdb"))
    db.add_cert("root", pki.root_cert, "CT,C,C")
    db.add_cert("inter", pki.inter_cert)
    for user in pki.users.values():
        db.import_p12(user.p12)
    return db


@pytest.fixture(scope="session")
def ids(pki: Pki) -> Loaded:
    """Every PEM key and certificate of the OpenSSL-made PKI, loaded through smimekit."""
    smimekit = pytest.importorskip("smimekit")
    keys = {n: smimekit.load_private_key(u.key) for n, u in pki.users.items()}
    certs = {n: smimekit.load_certificates(u.cert)[0] for n, u in pki.users.items()}
    return Loaded(smimekit.load_certificates(pki.root_cert)[0],
                  smimekit.load_certificates(pki.inter_cert)[0], keys, certs)

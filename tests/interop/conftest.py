"""Fixtures for the interop matrix: one PKI made by OpenSSL, a gpgsm home, an NSS database.

All three are session-scoped: the PKI takes about a second to make (RSA-3072 key generation),
the gpgsm home needs a gpg-agent, and neither changes during the run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from checks import Loaded
from peers import PASSWORD, Gpgsm, NssDb, Pki, make_pki, missing_binaries


def _require(peer: str) -> None:
    missing = missing_binaries(peer)
    if missing:
        pytest.skip(f"interop peer {peer!r} not installed (missing: {', '.join(missing)})")


def _gpgsm_kdf_check() -> Callable[[bytes], bool] | None:
    """smimekit's check that gpgsm derives a -legacy file's 3DES key right (about 1 salt in
    128 it gets wrong; see peers.make_pki). None when smimekit is not importable: the
    harness runs without it, with that flake back."""
    try:
        from smimekit.ca.export import pkcs12_gpgsm_kdf_safe
    except ImportError:
        return None
    return lambda der: pkcs12_gpgsm_kdf_safe(der, PASSWORD.encode())


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Root CA -> intermediate -> alice (RSA-2048), bob (P-256), carol (RSA-3072),
    dave (P-384), erin (P-521); PEM keys, PKCS#12 (AES and -legacy) with peers.PASSWORD.
    Every -legacy file has salts gpgsm 2.2.40 derives right (re-exported until it does)."""
    _require("openssl")
    return make_pki(tmp_path_factory.mktemp("pki"), legacy_ok=_gpgsm_kdf_check())


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

"""docs/ca.md's table of PKCS#12 forms against the files each form really writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from asn1crypto import pkcs12 as asn1_pkcs12
from pki import PKI, Identity

from smimekit.ca.export import ITERATIONS, RANDOM_PASSPHRASE_ITERATIONS, pkcs12_bytes
from smimekit.keys.protect import protect_key

DOC = Path(__file__).parents[2] / "docs" / "ca.md"
PASS = b"correct horse battery"
_CIPHERS = {"aes256_cbc": "AES-256-CBC"}
_PRFS = {"sha256": "PBKDF2-HMAC-SHA256"}
_PBES1 = {"pkcs12_sha1_tripledes_3key": "pbeWithSHAAnd3-KeyTripleDES-CBC"}
_MACS = {"sha256": "HMAC-SHA256", "sha1": "HMAC-SHA1"}


def _documented() -> dict[str, tuple[str, str, str]]:
    """form -> (key bag, certificate bag, MAC) from the table in docs/ca.md."""
    text = DOC.read_text()
    table = text[text.index("| form | key bag | certificate bag | MAC |"):]
    rows: dict[str, tuple[str, str, str]] = {}
    for line in table.splitlines()[2:]:
        if not line.startswith("|"):
            break
        form, key, certs, mac = (cell.strip() for cell in line.strip("|").split("|"))
        rows[form] = (key, certs, mac)
    return rows


def _iterations(n: int) -> str:
    return f"{n:,} iterations"


def _describe(alg: Any) -> str:
    """An encryption algorithm identifier in the docs' words."""
    name = alg["algorithm"].native
    if name == "pbes2":
        params = alg["parameters"]
        kdf = params["key_derivation_func"]
        assert kdf["algorithm"].native == "pbkdf2"
        cipher = _CIPHERS[params["encryption_scheme"]["algorithm"].native]
        prf = _PRFS[kdf["parameters"]["prf"]["algorithm"].native]
        return f"PBES2: {cipher}, {prf}, {_iterations(kdf['parameters']['iteration_count'].native)}"
    return f"{_PBES1[name]}, {_iterations(alg['parameters']['iterations'].native)}"


def _written(p12: bytes) -> tuple[str, str, str]:
    """(key bag, certificate bag, MAC) as the file really has them."""
    pfx = asn1_pkcs12.Pfx.load(p12)
    keys: set[str] = set()
    certs: set[str] = set()
    for info in pfx.authenticated_safe:
        if info["content_type"].native == "encrypted_data":
            # cryptography puts the certificate bags, and only those, in encryptedData
            certs.add(_describe(info["content"]["encrypted_content_info"]
                                ["content_encryption_algorithm"]))
            continue
        for bag in asn1_pkcs12.SafeContents.load(info["content"].native):
            assert bag["bag_id"].native == "pkcs8_shrouded_key_bag"  # never a plain key
            keys.add(_describe(bag["bag_value"]["encryption_algorithm"]))
    mac = pfx["mac_data"]
    assert len(keys) == 1 and len(certs) <= 1, (keys, certs)
    return (keys.pop(), certs.pop() if certs else "none",
            f"{_MACS[mac['mac']['digest_algorithm']['algorithm'].native]},"
            f" {_iterations(mac['iterations'].native)}")


@pytest.fixture(scope="module")
def alice(pki: PKI) -> Identity:
    return pki.person("alice", "p256")


def test_docs_list_every_form_we_write() -> None:
    assert set(_documented()) == {"keys at rest", "your passphrase", "generated passphrase",
                                  "legacy"}


@pytest.mark.parametrize("form", ["keys at rest", "your passphrase", "generated passphrase",
                                  "legacy"])
def test_each_pkcs12_form_is_what_the_docs_say(form: str, pki: PKI, alice: Identity) -> None:
    chain = [pki.inter, pki.root]
    if form == "keys at rest":
        p12 = protect_key(alice.key, PASS)
    elif form == "legacy":
        p12 = pkcs12_bytes(alice.key, alice.cert, chain, PASS, friendly_name="a", legacy=True)
    else:
        rounds = ITERATIONS if form == "your passphrase" else RANDOM_PASSPHRASE_ITERATIONS
        p12 = pkcs12_bytes(alice.key, alice.cert, chain, PASS, friendly_name="a",
                           iterations=rounds)
    assert _written(p12) == _documented()[form]



def test_the_cli_writes_the_documented_forms(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """What a user gets: the CA's key files, `ca issue` with and without a passphrase file,
    and `--legacy-p12`, each read back from disk."""
    from smimekit.cli.main import main

    monkeypatch.setenv("SMIMEKIT_PASSPHRASE", "correct horse battery staple")
    data = ["--data-dir", str(tmp_path / "data")]
    assert main([*data, "ca", "init", "--org", "Example Ltd", "--base-url",
                 "http://pki.example.com", "--key-type", "p256"]) == 0
    (tmp_path / "p12.pass").write_text("chosen by a person\n")
    for out, extra in (("mine", ["--p12-passphrase-file", str(tmp_path / "p12.pass")]),
                       ("random", []), ("legacy", ["--legacy-p12"])):
        assert main([*data, "ca", "issue", "--email", f"{out}@example.com", "--purpose",
                     "sign", "--key-type", "p256", "--out", str(tmp_path / out),
                     *extra]) == 0
    docs = _documented()
    for name in ("root", "issuing", "ocsp", "vault"):
        p12 = (tmp_path / "data" / "ca" / f"{name}.p12").read_bytes()
        assert _written(p12) == docs["keys at rest"], name
    for out, form in (("mine", "your passphrase"), ("random", "generated passphrase"),
                      ("legacy", "legacy")):
        p12 = (tmp_path / out / f"{out}@example.com.sign.p12").read_bytes()
        assert _written(p12) == docs[form], form

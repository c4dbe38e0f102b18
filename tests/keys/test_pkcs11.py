"""CA keys in a PKCS#11 token: a throwaway SoftHSM2 token per test module.

SoftHSM reads SOFTHSM2_CONF when the module is initialised (once per process), so the
tokens are made before the first load and every test uses its own key labels.
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import NameOID
from softhsm import tokens_in_process

pkcs11 = pytest.importorskip("pkcs11")

from smimekit.errors import CAError, PassphraseError  # noqa: E402
from smimekit.keys.pkcs11 import (  # noqa: E402
    KEY_TYPES,
    Pkcs11Signer,
    generate_ca_key,
    open_signer,
)
from smimekit.keys.signer import Signer, hash_for, sign_builder  # noqa: E402

PIN = "user-pin-4711"
SO_PIN = "so-pin-0815"
TOKEN = "smimekit-ca"
SPARE = "smimekit-spare"  # nobody stays logged in here: the token itself checks PINs
NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


@pytest.fixture(scope="module")
def module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The SoftHSM2 module, with tokens TOKEN and SPARE in a temporary token directory."""
    with tokens_in_process(tmp_path_factory.mktemp("softhsm"), [TOKEN, SPARE], pin=PIN,
                           so_pin=SO_PIN) as path:
        yield path


def _label(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module", params=[
    pytest.param("rsa3072", marks=pytest.mark.slow),
    pytest.param("rsa4096", marks=pytest.mark.slow),
    "p256",
    "p384",
    "ed25519",
])
def ca_key(request: pytest.FixtureRequest, module: str) -> Iterator[Pkcs11Signer]:
    """One generated CA key per key type, shared by the tests of this module."""
    kind = request.param
    try:
        signer = generate_ca_key(module, TOKEN, _label(kind), PIN, kind)
    except CAError as exc:
        if kind == "ed25519" and "ed25519" in str(exc).lower():
            pytest.skip(f"this SoftHSM cannot do Ed25519: {exc}")
        raise
    with signer:
        yield signer


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _root(signer: Signer) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name("Token Root"))
        .issuer_name(_name("Token Root"))
        .public_key(signer.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW)
        .not_valid_after(NOW + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )
    cert = sign_builder(builder, signer)
    assert isinstance(cert, x509.Certificate)
    return cert


def _verify(public: object, signature: bytes, data: bytes) -> None:
    if isinstance(public, rsa.RSAPublicKey):
        public.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
    elif isinstance(public, ec.EllipticCurvePublicKey):
        digest = hashes.SHA384() if public.curve.key_size == 384 else hashes.SHA256()
        public.verify(signature, data, ec.ECDSA(digest))
    else:
        assert isinstance(public, ed25519.Ed25519PublicKey)
        public.verify(signature, data)


def test_token_certificate_verifies_with_cryptography(ca_key: Pkcs11Signer) -> None:
    cert = _root(ca_key)
    cert.verify_directly_issued_by(cert)
    assert cert.public_key() == ca_key.public_key()
    expected = hash_for(ca_key.public_key())
    assert type(cert.signature_hash_algorithm) is type(expected)


def test_token_crl_verifies_with_cryptography(ca_key: Pkcs11Signer) -> None:
    revoked = (x509.RevokedCertificateBuilder().serial_number(42)
               .revocation_date(NOW).build())
    builder = (x509.CertificateRevocationListBuilder()
               .issuer_name(_name("Token Root"))
               .last_update(NOW)
               .next_update(NOW + datetime.timedelta(days=7))
               .add_revoked_certificate(revoked))
    crl = sign_builder(builder, ca_key)
    assert isinstance(crl, x509.CertificateRevocationList)
    assert crl.is_signature_valid(ca_key.public_key())
    assert crl.get_revoked_certificate_by_serial_number(42) is not None


def test_generated_key_is_sensitive_and_never_extractable(
        module: str, ca_key: Pkcs11Signer) -> None:
    token = pkcs11.lib(os.path.realpath(module)).get_token(token_label=TOKEN)
    # No PIN: the session shares the signer's login, and closing it does not log out.
    with token.open() as session:
        private = session.get_key(object_class=pkcs11.ObjectClass.PRIVATE_KEY,
                                  label=ca_key.key_label)
        A = pkcs11.Attribute
        assert private[A.SENSITIVE] is True
        assert private[A.EXTRACTABLE] is False
        assert private[A.ALWAYS_SENSITIVE] is True
        assert private[A.NEVER_EXTRACTABLE] is True
        assert private[A.TOKEN] is True
        assert private[A.PRIVATE] is True
        secret = A.PRIVATE_EXPONENT if ca_key.key_type.startswith("rsa") else A.VALUE
        with pytest.raises(pkcs11.exceptions.AttributeSensitive):
            private[secret]
    assert ca_key.sign(b"still logged in")


def test_key_type_is_reported(ca_key: Pkcs11Signer) -> None:
    assert ca_key.key_type in KEY_TYPES
    assert ca_key.key_label in repr(ca_key)


def test_reopening_by_label_in_another_process_uses_the_same_key(
        module: str, ca_key: Pkcs11Signer) -> None:
    script = (
        "import sys\n"
        "from smimekit.keys.pkcs11 import open_signer\n"
        "module, token, label, pin = sys.argv[1:5]\n"
        "with open_signer(module, token, label, pin) as s:\n"
        "    print(s.key_type, s.sign(b'from another process').hex())\n"
    )
    done = subprocess.run([sys.executable, "-c", script, module, TOKEN, ca_key.key_label, PIN],
                          capture_output=True, text=True, timeout=60, env=os.environ.copy())
    assert done.returncode == 0, done.stderr[-2000:]
    key_type, signature = done.stdout.split()
    assert key_type == ca_key.key_type
    _verify(ca_key.public_key(), bytes.fromhex(signature), b"from another process")


def test_reopening_in_this_process_shares_the_login(module: str) -> None:
    label = _label("p256")
    first = generate_ca_key(module, TOKEN, label, PIN, "p256")
    second = open_signer(module, TOKEN, label, PIN)
    assert second.public_key() == first.public_key()
    first.close()  # must not log the second signer out
    _verify(second.public_key(), second.sign(b"after close"), b"after close")
    second.close()
    with open_signer(module, TOKEN, label, PIN) as third:
        assert third.public_key() == first.public_key()


def test_duplicate_label_is_refused_and_the_key_kept(module: str) -> None:
    label = _label("p256")
    with generate_ca_key(module, TOKEN, label, PIN, "p256") as original:
        with pytest.raises(CAError, match="already holds an object labelled"):
            generate_ca_key(module, TOKEN, label, PIN, "p384")
        with open_signer(module, TOKEN, label, PIN) as again:
            assert again.public_key() == original.public_key()


def test_wrong_pin_is_a_passphrase_error_checked_by_the_token(module: str) -> None:
    label = _label("p256")
    generate_ca_key(module, SPARE, label, PIN, "p256").close()  # logs out again
    with pytest.raises(PassphraseError, match="wrong user PIN for token 'smimekit-spare'") as info:
        open_signer(module, SPARE, label, "not-the-pin")
    assert "not-the-pin" not in str(info.value)
    with open_signer(module, SPARE, label, PIN) as signer:  # the right PIN still works
        assert signer.sign(b"x")


def test_wrong_pin_is_refused_while_the_token_is_logged_in(module: str) -> None:
    with generate_ca_key(module, TOKEN, _label("p256"), PIN, "p256") as signer:
        with pytest.raises(PassphraseError, match="wrong user PIN") as info:
            open_signer(module, TOKEN, signer.key_label, "not-the-pin")
        assert "not-the-pin" not in str(info.value)
        assert signer.sign(b"unaffected")


def test_missing_module_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "libnothing.so"
    with pytest.raises(CAError, match=r"PKCS#11 module .*libnothing\.so not found"):
        open_signer(missing, TOKEN, "k", PIN)


def test_unknown_token_is_a_clear_error(module: str) -> None:
    with pytest.raises(CAError, match="no token labelled 'no-such-token'"):
        open_signer(module, "no-such-token", "k", PIN)


def test_unknown_key_is_a_clear_error(module: str) -> None:
    with pytest.raises(CAError, match="no private key labelled 'no-such-key'"):
        open_signer(module, TOKEN, "no-such-key", PIN)


def test_unknown_key_type_is_refused(module: str) -> None:
    with pytest.raises(CAError, match="unsupported CA key type 'rsa1024'"):
        generate_ca_key(module, TOKEN, _label("rsa1024"), PIN, "rsa1024")


def test_pin_never_appears_in_repr(module: str) -> None:
    with generate_ca_key(module, TOKEN, _label("p256"), PIN, "p256") as signer:
        assert PIN not in repr(signer)
        assert PIN not in str(vars(signer))
    assert "closed" in repr(signer)


def test_closed_signer_refuses_to_sign(module: str) -> None:
    signer = generate_ca_key(module, TOKEN, _label("p256"), PIN, "p256")
    signer.close()
    signer.close()  # idempotent
    assert signer.closed
    with pytest.raises(CAError, match="is closed"):
        signer.sign(b"x")


def test_one_signer_signs_from_many_threads(module: str) -> None:
    with generate_ca_key(module, TOKEN, _label("p256"), PIN, "p256") as signer:
        results: list[tuple[bytes, bytes]] = []
        errors: list[BaseException] = []

        def work(n: int) -> None:
            try:
                for i in range(10):
                    data = f"{n}-{i}".encode()
                    results.append((data, signer.sign(data)))
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert len(results) == 80
        for data, signature in results:
            _verify(signer.public_key(), signature, data)


def test_signer_satisfies_the_protocol(module: str) -> None:
    with generate_ca_key(module, TOKEN, _label("p256"), PIN, "p256") as signer:
        assert isinstance(signer, Signer)


THREADS_SCRIPT = """
import sys, threading
from pkcs11 import Attribute, ObjectClass
from smimekit.keys.pkcs11 import find_objects, load_module, open_signer
module, token_label, key_label, pin, rounds = sys.argv[1:6]
signers = [open_signer(module, token_label, key_label, pin) for _ in range(4)]
token = load_module(module).get_token(token_label=token_label)
start = threading.Barrier(4, timeout=30)
failed = []

def work(signer):
    try:
        start.wait()
        for _ in range(int(rounds)):
            signer.sign(b"one of many")
            with token.open() as session:
                find_objects(session, {Attribute.CLASS: ObjectClass.PRIVATE_KEY})
    except BaseException as exc:
        failed.append(repr(exc))

threads = [threading.Thread(target=work, args=(s,)) for s in signers]
for t in threads:
    t.start()
for t in threads:
    t.join(60)
for s in signers:
    s.close()
print("failed:", failed) if failed else print("ok")
"""


def test_signers_and_searches_in_several_threads_at_once(module: str) -> None:
    """python-pkcs11 initialises a module as if no two threads called it at once, and
    SoftHSM2 then keeps no locks: four threads signing and opening sessions crashed the
    process (SIGSEGV) in most runs. smimekit initialises every module again with OS locking.
    Run in a child process, three times, so that a crash is a failure and not a lost worker."""
    label = _label("p256")
    generate_ca_key(module, TOKEN, label, PIN, "p256").close()
    for _ in range(3):
        done = subprocess.run(
            [sys.executable, "-c", THREADS_SCRIPT, module, TOKEN, label, PIN, "600"],
            capture_output=True, text=True, timeout=120, env=os.environ.copy())
        assert (done.returncode, done.stdout.strip()) == (0, "ok"), done.stderr[-2000:]

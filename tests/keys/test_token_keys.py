"""keys/token_keys.py against SoftHSM2: keys stored as non-extractable objects, and every
operation the CMS layer asks of them run in the token, checked against software keys."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from softhsm import tokens_in_process

pkcs11 = pytest.importorskip("pkcs11")

from smimekit.errors import KeyLoadError, PassphraseError  # noqa: E402
from smimekit.keys.token_keys import TokenECKey, TokenKeyring, TokenRSAKey  # noqa: E402

PIN = "token-keys-pin-2024"
TOKEN = "smimekit-token-keys"


@pytest.fixture(scope="module")
def module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with tokens_in_process(tmp_path_factory.mktemp("softhsm-token-keys"), [TOKEN], pin=PIN,
                           so_pin="so-pin-2718") as path:
        yield path


@pytest.fixture
def ring(module: str) -> Iterator[TokenKeyring]:
    keyring = TokenKeyring(module, TOKEN, PIN)
    yield keyring
    keyring.close()


def _id() -> bytes:
    return uuid.uuid4().bytes


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 2048)


def test_rsa_decrypts_every_padding_and_refuses_bad_ones_as_software_does(
        ring: TokenKeyring, rsa_key: rsa.RSAPrivateKey) -> None:
    key_id = _id()
    assert ring.store(rsa_key, key_id, "rsa", sign=True, decrypt=True)
    assert not ring.store(rsa_key, key_id, "rsa", sign=True, decrypt=True)  # held already
    token = ring.key(key_id, rsa_key.public_key())
    assert isinstance(token, TokenRSAKey) and isinstance(token, rsa.RSAPrivateKey)
    public = rsa_key.public_key()
    cek = os.urandom(32)
    paddings: list[padding.AsymmetricPadding] = [padding.PKCS1v15()]
    for h in (hashes.SHA1(), hashes.SHA256(), hashes.SHA384()):
        # SHA-1: CKM_RSA_PKCS_OAEP in the token; SHA-2: SoftHSM refuses the parameters, so
        # raw RSA and the OAEP decoding of token_keys.py
        paddings.append(padding.OAEP(padding.MGF1(h), h, None))
    for how in paddings:
        assert token.decrypt(public.encrypt(cek, how), how) == cek
    oaep = padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)
    for how in (padding.PKCS1v15(), oaep):
        for bad in (b"\x00" * 255 + b"\x07", os.urandom(255) + b"\x01"):
            with pytest.raises(ValueError):
                token.decrypt(bad, how)
        with pytest.raises(ValueError):
            token.decrypt(b"\x01" * 17, how)  # not the key's length
    # a token without raw RSA: CKM_RSA_PKCS, whose refusal is the same ValueError
    ring.mechanisms = ring.mechanisms - {pkcs11.Mechanism.RSA_X_509}
    assert token.decrypt(public.encrypt(cek, padding.PKCS1v15()), padding.PKCS1v15()) == cek
    with pytest.raises(ValueError):
        token.decrypt(os.urandom(255) + b"\x01", padding.PKCS1v15())
    assert not ring.failed


def test_rsa_signatures_verify_with_the_public_key(
        ring: TokenKeyring, rsa_key: rsa.RSAPrivateKey) -> None:
    key_id = _id()
    ring.store(rsa_key, key_id, "rsa-sign", sign=True, decrypt=False)
    token = ring.key(key_id, rsa_key.public_key())
    public = rsa_key.public_key()
    for h in (hashes.SHA256(), hashes.SHA384(), hashes.SHA512()):
        signature = token.sign(b"data", padding.PKCS1v15(), h)
        public.verify(signature, b"data", padding.PKCS1v15(), h)
        pss = padding.PSS(padding.MGF1(h), h.digest_size)
        public.verify(token.sign(b"data", pss, h), b"data", pss, h)
    # not allowed to decrypt: refused as the key's trouble (not as a bad padding)
    with pytest.raises(KeyLoadError, match="not allowed to decrypt"):
        token.decrypt(public.encrypt(b"k" * 16, padding.PKCS1v15()), padding.PKCS1v15())


@pytest.mark.parametrize("curve", [ec.SECP256R1(), ec.SECP384R1(), ec.SECP521R1()])
def test_ec_agrees_and_signs_in_the_token(ring: TokenKeyring, curve: ec.EllipticCurve) -> None:
    key = ec.generate_private_key(curve)
    key_id = _id()
    ring.store(key, key_id, "ec", sign=True, decrypt=True)
    token = ring.key(key_id, key.public_key())
    assert isinstance(token, TokenECKey) and token.curve.name == curve.name
    peer = ec.generate_private_key(curve)
    assert token.exchange(ec.ECDH(), peer.public_key()) == \
        peer.exchange(ec.ECDH(), key.public_key())
    signature = token.sign(b"data", ec.ECDSA(hashes.SHA256()))
    key.public_key().verify(signature, b"data", ec.ECDSA(hashes.SHA256()))
    with pytest.raises(ValueError, match="another curve"):
        token.exchange(ec.ECDH(), ec.generate_private_key(
            ec.SECP256K1()).public_key())


def test_keys_never_leave_and_a_mismatch_or_a_missing_object_is_refused(
        ring: TokenKeyring, rsa_key: rsa.RSAPrivateKey) -> None:
    key_id = _id()
    ring.store(rsa_key, key_id, "rsa-x", sign=True, decrypt=True)
    token = ring.key(key_id, rsa_key.public_key())
    for call in (token.private_numbers, lambda: token.private_bytes(
            None, None, None)):  # type: ignore[arg-type]
        with pytest.raises(KeyLoadError, match="never leaves"):
            call()
    [obj] = ring._find(key_id)
    assert obj[pkcs11.Attribute.SENSITIVE] and not obj[pkcs11.Attribute.EXTRACTABLE]
    other = rsa.generate_private_key(65537, 2048)
    with pytest.raises(KeyLoadError, match="not the private half"):
        ring.key(key_id, other.public_key())
    with pytest.raises(KeyLoadError, match="not the private half"):
        ring.store(other, key_id, "rsa-x", sign=True, decrypt=True)  # its ID is taken
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ec_id = _id()
    ring.store(ec_key, ec_id, "ec-x", sign=False, decrypt=True)
    with pytest.raises(KeyLoadError, match="not the private half"):
        ring.key(ec_id, ec.generate_private_key(ec.SECP256R1()).public_key())
    with pytest.raises(KeyLoadError, match="cannot be kept in the token"):
        ring.store(ed25519.Ed25519PrivateKey.generate(), _id(), "ed", sign=True,
                   decrypt=False)
    assert ring.delete(key_id) == 1
    with pytest.raises(KeyLoadError, match="holds no private key with ID"):
        ring.key(key_id, rsa_key.public_key())
    with pytest.raises(KeyLoadError, match="could not decrypt"):
        token.decrypt(rsa_key.public_key().encrypt(b"k" * 16, padding.PKCS1v15()),
                      padding.PKCS1v15())
    assert ring.failed  # the owner opens a new keyring


def test_wrong_pin_and_missing_token(module: str, ring: TokenKeyring) -> None:
    # logged in already (the fixture's keyring): the PIN is compared with the one that
    # worked, never kept
    with pytest.raises(PassphraseError, match="wrong user PIN"):
        TokenKeyring(module, TOKEN, "not-the-pin")
    with pytest.raises(KeyLoadError, match="no token labelled 'nope'"):
        TokenKeyring(module, "nope", PIN)
    assert PIN not in repr(ring)


def test_wrong_pin_checked_by_the_token(module: str) -> None:
    with pytest.raises(PassphraseError, match="wrong user PIN"):
        TokenKeyring(module, TOKEN, "not-the-pin")


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_a_search_on_a_lost_session_raises_once_and_prints_nothing(
        module: str, capfd: pytest.CaptureFixture[str]) -> None:
    """python-pkcs11's search iterator fails a second time in its finaliser when the session
    is gone, and prints that traceback to stderr; find_objects keeps it quiet and raises
    the first error (what a CLI user would otherwise see under the one-line error)."""
    import sys

    from pkcs11 import Attribute, ObjectClass

    from smimekit.keys.pkcs11 import find_objects

    lib = pkcs11.lib(os.path.realpath(module))
    session = lib.get_token(token_label=TOKEN).open(user_pin=PIN)
    assert isinstance(find_objects(session, {Attribute.CLASS: ObjectClass.PRIVATE_KEY}), list)
    session.close()
    with pytest.raises(pkcs11.exceptions.SessionHandleInvalid):
        find_objects(session, {Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.ID: b"x"})
    print("someone else's line", file=sys.stderr)  # stderr itself still works
    assert capfd.readouterr().err == "someone else's line\n"


def test_searches_in_several_threads_leave_stderr_and_the_hooks_alone(
        module: str, capfd: pytest.CaptureFixture[str]) -> None:
    """The gateway's processing threads search their tokens at once: whatever find_objects
    does to keep python-pkcs11's finaliser quiet must not leave another thread's stand-in
    for stderr or for a hook in place (putting back "the previous one" per search did)."""
    import sys
    import threading

    from pkcs11 import Attribute, ObjectClass

    from smimekit.keys.pkcs11 import find_objects

    lib = pkcs11.lib(os.path.realpath(module))
    token = lib.get_token(token_label=TOKEN)
    login = token.open(user_pin=PIN)  # the login is the application's: every session has it
    stderr = sys.stderr
    start = threading.Barrier(4)
    failures: list[BaseException] = []

    def search() -> None:
        try:
            with token.open() as session:
                start.wait(timeout=10)
                for _ in range(300):
                    find_objects(session, {Attribute.CLASS: ObjectClass.PRIVATE_KEY})
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=search) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures, failures
    assert sys.stderr is stderr
    print("a line after the searches", file=sys.stderr)
    assert capfd.readouterr().err == "a line after the searches\n"
    # an unraisable error of anybody else's still reaches the hook that was in place
    seen: list[BaseException | None] = []
    before = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: seen.append(unraisable.exc_value)
    try:
        find_objects(login, {Attribute.CLASS: ObjectClass.PRIVATE_KEY})

        class Finaliser:
            def __del__(self) -> None:
                raise ValueError("someone else's")

        Finaliser()
    finally:
        sys.unraisablehook = before
        login.close()
    assert [str(exc) for exc in seen] == ["someone else's"]

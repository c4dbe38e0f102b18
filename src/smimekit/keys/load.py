"""Load private keys and certificates from the files people actually have.

Private keys: PEM (PKCS#8, traditional, encrypted), DER (PKCS#8, encrypted PKCS#8), PKCS#12.
Certificates: PEM (one or many), DER, PKCS#7 certs-only (PEM or DER), PKCS#12.

ML-DSA and ML-KEM private keys (RFC 9881, RFC 9935) come in three PKCS#8 forms: the seed,
the expanded key, or both. cryptography loads the seed form; the "both" form is loaded here
from its seed after checking that the expanded key belongs to it (both RFCs require the
check); the expanded-only form cannot be loaded (cryptography derives keys only from a
seed) and says so. ML-KEM-512, HashML-DSA and SLH-DSA keys get a clear "unsupported" error
naming the algorithm.

:func:`load_pkcs12` takes one key, as cryptography does; :func:`load_pkcs12_identities` reads
every key of a PKCS#12 file (a key history: our CA writes the current key and the older ones
into one file) with its own parser over cryptography's primitives, in
:mod:`smimekit.keys.pkcs12` and re-exported here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12

from smimekit.errors import KeyLoadError, PassphraseError
from smimekit.keys.kinds import (
    accept_input,
    pq_algorithm_name,
    unsupported_pq_algorithm,
)

Source = bytes | str | os.PathLike[str]
Passphrase = bytes | str | None

_PEM_KEY = re.compile(
    rb"-----BEGIN ((?:ENCRYPTED |RSA |EC |DSA )?PRIVATE KEY)-----.*?-----END \1-----", re.S
)


def read_source(source: Source, what: str) -> tuple[bytes, str]:
    """The bytes of ``source`` (a path or the data itself) and a label for messages."""
    if isinstance(source, bytes):
        return source, what
    if isinstance(source, str) and source.lstrip().startswith("-----BEGIN"):
        return source.encode(), what
    path = Path(source)
    try:
        return path.read_bytes(), f"{what} {path}"
    except OSError as exc:
        raise KeyLoadError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def _secret(passphrase: Passphrase) -> bytes | None:
    if passphrase is None:
        return None
    return passphrase.encode() if isinstance(passphrase, str) else passphrase


@accept_input
def load_private_key(source: Source, passphrase: Passphrase = None) -> PrivateKeyTypes:
    """Load a private key from PEM, DER, (encrypted) PKCS#8 or PKCS#12.

    Raises:
        PassphraseError: the key is encrypted and the passphrase is missing or wrong.
        KeyLoadError: the file cannot be read or holds no private key.
    """
    data, label = read_source(source, "key")
    secret = _secret(passphrase)
    if b"-----BEGIN" in data:
        match = _PEM_KEY.search(data)
        if match is None:
            raise KeyLoadError(f"{label}: no private key in this PEM file")
        block = match.group(0)
        encrypted = match.group(1).startswith(b"ENCRYPTED") or b"Proc-Type: 4,ENCRYPTED" in block
        if match.group(1) == b"PRIVATE KEY":
            pq_key = pq_private_key(_pem_body(block), label)
            if pq_key is not None:
                return pq_key
        pkcs8 = _pem_body(block) if match.group(1) == b"ENCRYPTED PRIVATE KEY" else None
        return _load(
            lambda pw: serialization.load_pem_private_key(block, pw), secret, encrypted, label,
            pkcs8,
        )
    pq_key = pq_private_key(data, label)
    if pq_key is not None:
        return pq_key
    try:
        return serialization.load_der_private_key(data, None)
    except TypeError:
        return _load(
            lambda pw: serialization.load_der_private_key(data, pw), secret, True, label, data
        )
    except (ValueError, UnsupportedAlgorithm):
        pass
    try:  # encrypted PKCS#8 in DER
        return _load(
            lambda pw: serialization.load_der_private_key(data, pw), secret, True, label, data
        )
    except KeyLoadError as first:
        try:
            key, _cert, _extra = load_pkcs12(data, passphrase, label=label)
        except PassphraseError:
            raise
        except KeyLoadError:
            if isinstance(first, PassphraseError):
                raise first from None
            raise KeyLoadError(
                f"{label}: not a private key (PEM, DER, PKCS#8 or PKCS#12)"
            ) from None
        if key is None:
            raise KeyLoadError(f"{label}: the PKCS#12 file holds no private key") from None
        return key


def _pem_body(block: bytes) -> bytes:
    lines = block.splitlines()[1:-1]
    try:
        return base64.b64decode(b"".join(lines), validate=True)
    except (binascii.Error, ValueError):
        return b""


# ML-KEM's decapsulation key holds the encapsulation key at 384*k (FIPS 203 algorithm 16);
# ML-DSA's private key starts with rho (the public key's first 32 bytes) and holds
# tr = SHAKE256(public key, 64) at byte 64 (FIPS 204 algorithms 22 and 24).
_ML_KEM_K = {"ML-KEM-768": 3, "ML-KEM-1024": 4}


def pq_private_key(der: bytes, label: str) -> PrivateKeyTypes | None:
    """An ML-DSA/ML-KEM key in PKCS#8 that cryptography does not load itself; None when
    ``der`` is not a post-quantum PKCS#8 key or is one cryptography loads (the seed form).
    For readers of other containers too (a PKCS#12 key bag).

    Raises:
        KeyLoadError: an algorithm cryptography lacks, the expanded-only form, or a "both"
            form whose halves disagree.
    """
    from asn1crypto import core

    try:
        info = core.Sequence.load(der, strict=True)
        algorithm, private = info[1], info[2]
        if not isinstance(algorithm, core.Sequence) or not isinstance(private, core.OctetString):
            return None
        oid = algorithm[0]
        if not isinstance(oid, core.ObjectIdentifier):
            return None
        oid, private = oid.dotted, private.native
    except (ValueError, TypeError, KeyError, IndexError):
        return None
    name = pq_algorithm_name(oid)
    if name is None:
        return None
    missing = unsupported_pq_algorithm(oid)
    if missing is not None:
        raise KeyLoadError(
            f"{label}: {missing} private keys are not supported "
            "(the cryptography library has no implementation)"
        )
    form = private[:1]
    if form == b"\x80":  # seed [0] IMPLICIT: cryptography's own loader handles it
        return None
    if form == b"\x04":
        raise KeyLoadError(
            f"{label}: {name} private key holds only the expanded key; a key can only be "
            "loaded from its seed (export the seed or the seed-and-expanded form)"
        )
    try:
        both = core.Sequence.load(private, strict=True)
        seed, expanded = both[0], both[1]
        if not isinstance(seed, core.OctetString) or not isinstance(expanded, core.OctetString):
            raise ValueError("not two octet strings")
        seed, expanded = seed.native, expanded.native
    except (ValueError, TypeError, KeyError, IndexError):
        raise KeyLoadError(f"{label}: malformed {name} private key") from None
    return _from_seed(name, seed, expanded, label)


def _from_seed(name: str, seed: bytes, expanded: bytes, label: str) -> PrivateKeyTypes:
    from cryptography.hazmat.primitives.asymmetric import mldsa, mlkem

    classes: dict[str, type[PrivateKeyTypes]] = {
        "ML-DSA-44": mldsa.MLDSA44PrivateKey,
        "ML-DSA-65": mldsa.MLDSA65PrivateKey,
        "ML-DSA-87": mldsa.MLDSA87PrivateKey,
        "ML-KEM-768": mlkem.MLKEM768PrivateKey,
        "ML-KEM-1024": mlkem.MLKEM1024PrivateKey,
    }
    try:
        key = classes[name].from_seed_bytes(seed)  # type: ignore[union-attr]
    except (ValueError, TypeError):
        raise KeyLoadError(f"{label}: malformed {name} private key (bad seed)") from None
    public = key.public_key().public_bytes_raw()
    if name in _ML_KEM_K:
        start = 384 * _ML_KEM_K[name]
        consistent = expanded[start : start + len(public)] == public
    else:
        tr = hashlib.shake_256(public).digest(64)
        consistent = expanded[:32] == public[:32] and expanded[64:128] == tr
    if not consistent:
        raise KeyLoadError(f"{label}: {name} private key: the seed and the expanded key differ")
    return key


def _load(
    loader: Callable[[bytes | None], PrivateKeyTypes],
    secret: bytes | None,
    encrypted: bool,
    label: str,
    pkcs8: bytes | None = None,
) -> PrivateKeyTypes:
    """``loader``'s key; ``pkcs8`` (an EncryptedPrivateKeyInfo) is opened here when the
    loader cannot read what it holds (an ML-DSA/ML-KEM key in another form than the seed)."""
    if encrypted and secret is None:
        raise PassphraseError(f"{label} is encrypted: a passphrase is required")
    try:
        return loader(secret if encrypted else None)
    except TypeError:
        if secret is None:
            raise PassphraseError(f"{label} is encrypted: a passphrase is required") from None
        return loader(secret)
    except ValueError as exc:
        pq_key = _pq_encrypted(pkcs8, secret, label) if encrypted else None
        if pq_key is not None:
            return pq_key
        if encrypted or "password" in str(exc).lower() or "decrypt" in str(exc).lower():
            raise PassphraseError(f"{label}: wrong passphrase or damaged key") from None
        raise KeyLoadError(f"{label}: not a valid private key") from None
    except Exception as exc:  # cryptography raises UnsupportedAlgorithm for odd keys
        pq_key = _pq_encrypted(pkcs8, secret, label) if encrypted else None
        if pq_key is not None:
            return pq_key
        raise KeyLoadError(f"{label}: unsupported key ({type(exc).__name__})") from None


_MAX_PBKDF2_ITERATIONS = 10_000_000  # as the PKCS#12 reader: a hostile file cannot stall us
_AES_CBC = {16: "aes128_cbc", 24: "aes192_cbc", 32: "aes256_cbc"}


def _pq_encrypted(pkcs8: bytes | None, secret: bytes | None, label: str) -> PrivateKeyTypes | None:
    """The post-quantum key inside a PBES2 (PBKDF2, AES-CBC) EncryptedPrivateKeyInfo, as
    OpenSSL 3.5 writes them, or None when it is not one (the caller's error then stands).

    cryptography decrypts such a file itself but then loads only the seed form; its inner
    PrivateKeyInfo is not available from it, so the decryption is done again here with its
    primitives (PBKDF2-HMAC, AES-CBC).
    """
    if pkcs8 is None or secret is None:
        return None
    from asn1crypto import keys as asn1_keys
    from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

    from smimekit.cms.algorithms import CONTENT_CIPHERS, cbc_decrypt, hash_algorithm
    from smimekit.errors import DecryptionError

    try:
        info = asn1_keys.EncryptedPrivateKeyInfo.load(pkcs8, strict=True)
        alg = info["encryption_algorithm"]
        if alg.kdf != "pbkdf2" or alg.encryption_cipher != "aes" or alg.encryption_mode != "cbc":
            return None
        iterations = alg.kdf_iterations
        if not 1 <= iterations <= _MAX_PBKDF2_ITERATIONS:
            return None
        spec = CONTENT_CIPHERS[_AES_CBC[alg.key_length]]
        key = PBKDF2HMAC(hash_algorithm(alg.kdf_hmac), alg.key_length, alg.kdf_salt,
                         iterations).derive(secret)
        inner = cbc_decrypt(spec, key, alg.encryption_iv, info["encrypted_data"].native)
    except (ValueError, TypeError, KeyError, DecryptionError):
        return None
    return pq_private_key(inner, label)


@accept_input
def load_pkcs12(
    source: Source, passphrase: Passphrase = None, *, label: str | None = None
) -> tuple[PrivateKeyTypes | None, x509.Certificate | None, list[x509.Certificate]]:
    """Open a PKCS#12 file: (private key, its certificate, the other certificates).

    Raises:
        PassphraseError: wrong or missing passphrase.
        KeyLoadError: not a PKCS#12 file.
    """
    data, default_label = read_source(source, "PKCS#12")
    label = label or default_label
    secret = _secret(passphrase)
    try:
        key, cert, extra = pkcs12.load_key_and_certificates(data, secret)
    except ValueError as exc:
        text = str(exc).lower()
        if "password" in text:
            if secret is None:
                raise PassphraseError(f"{label} is protected: a passphrase is required") from None
            raise PassphraseError(f"{label}: wrong passphrase") from None
        raise KeyLoadError(f"{label}: not a PKCS#12 file") from None
    except Exception as exc:
        raise KeyLoadError(f"{label}: unsupported PKCS#12 content ({type(exc).__name__})") from None
    return key, cert, list(extra)


def _pkcs7_certificates(data: bytes, *, pem: bool) -> list[x509.Certificate]:
    # cryptography's pkcs7 module imports the email package (for its signing builder): only
    # a PKCS#7 bundle pays for that at start-up.
    from cryptography.hazmat.primitives.serialization import pkcs7

    if pem:
        return list(pkcs7.load_pem_pkcs7_certificates(data))
    return list(pkcs7.load_der_pkcs7_certificates(data))


@accept_input
def load_certificates(source: Source, passphrase: Passphrase = None) -> list[x509.Certificate]:
    """Every certificate in a PEM, DER, PKCS#7 certs-only or PKCS#12 file.

    Raises:
        KeyLoadError: no certificate could be read.
    """
    data, label = read_source(source, "certificate file")
    try:
        if b"-----BEGIN PKCS7-----" in data or b"-----BEGIN CMS-----" in data:
            return _pkcs7_certificates(data, pem=True)
        if b"-----BEGIN" in data:
            if b"-----BEGIN CERTIFICATE-----" not in data:
                raise ValueError("no certificate")
            return list(x509.load_pem_x509_certificates(data))
    except ValueError:
        raise KeyLoadError(f"{label}: no readable certificate in this PEM file") from None
    try:
        return [x509.load_der_x509_certificate(data)]
    except ValueError:
        pass
    try:
        return _pkcs7_certificates(data, pem=False)
    except ValueError:
        pass
    try:
        _key, cert, extra = load_pkcs12(data, passphrase, label=label)
    except PassphraseError:
        raise
    except KeyLoadError:
        raise KeyLoadError(f"{label}: not a certificate (PEM, DER, PKCS#7 or PKCS#12)") from None
    return ([cert] if cert is not None else []) + extra


def load_certificate(source: Source, passphrase: Passphrase = None) -> x509.Certificate:
    """The first certificate of :func:`load_certificates`."""
    certs = load_certificates(source, passphrase)
    if not certs:
        raise KeyLoadError("no certificate found")
    return certs[0]


def key_matches(key: PrivateKeyTypes, cert: x509.Certificate) -> bool:
    """Whether ``cert`` certifies the public half of ``key`` (False for unreadable keys)."""
    try:
        return bool(key.public_key() == cert.public_key())
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return False

"""PKCS#12 with every key (RFC 7292): a key history in one file.

:func:`load_pkcs12_identities` reads every key of a PKCS#12 file (our CA writes the current key
and the older ones into one file) with its own parser over cryptography's primitives;
:func:`pkcs12_kdf` is the RFC 7292 appendix B KDF. :mod:`smimekit.keys.load` re-exports both.

:func:`write_pkcs12` writes a PKCS#12 file itself, for the keys ``cryptography``'s writer
refuses (ML-DSA and ML-KEM): the same shape and algorithms as our default form (PBES2 with
PBKDF2-HMAC-SHA256 and AES-256-CBC for the key bags and the certificates, HMAC-SHA256 MAC).
"""

from __future__ import annotations

import hashlib
import hmac as std_hmac
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from asn1crypto import algos, core
from asn1crypto import cms as asn1_cms
from asn1crypto import keys as asn1_keys
from asn1crypto import pkcs12 as asn1_pkcs12
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.decrepit.ciphers.algorithms import ARC4
from cryptography.hazmat.primitives import hashes, hmac, serialization
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from cryptography.hazmat.primitives.serialization import pkcs12

from smimekit.cms.algorithms import CONTENT_CIPHERS, ContentCipher, cbc_decrypt
from smimekit.cms.asn1 import PARSE_ERRORS, load, reason
from smimekit.errors import ASN1Error, DecryptionError, KeyLoadError, PassphraseError
from smimekit.keys.kinds import accepted_input
from smimekit.keys.load import Passphrase, Source, _secret, key_matches, read_source

KeyPair = tuple[PrivateKeyTypes, x509.Certificate | None]


class PKCS12Identities(NamedTuple):
    """What :func:`load_pkcs12_identities` read from a PKCS#12 file.

    ``identities``: every private key, in file order (our CA writes the current key first),
    each with its certificate or None. ``certificates``: the certificates no key claimed (the
    CA chain), in file order.
    """

    identities: list[KeyPair]
    certificates: list[x509.Certificate]


# Limits for hostile files. A PKCS#12 file is a few kilobytes per key; 64 bags hold a 30-key
# history with its chain. Every derivation is charged against one budget before it runs:
# our CA writes (2 x keys + 1) derivations of 600,000 rounds, so 64,000,000 leaves room for a
# 50-key history, and a hostile file costs seconds, not hours.
_MAX_PKCS12_BYTES = 16 * 1024 * 1024
_MAX_BAGS = 64
_MAX_DEPTH = 4  # safeContentsBag inside safeContentsBag
_MAX_ITERATIONS = 10_000_000
_MAX_WORK = 64_000_000

_PBMAC1 = "1.2.840.113549.1.5.14"  # RFC 9579
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1, "sha224": hashes.SHA224, "sha256": hashes.SHA256,
    "sha384": hashes.SHA384, "sha512": hashes.SHA512,
    "sha512_224": hashes.SHA512_224, "sha512_256": hashes.SHA512_256,
}
# The RFC 7292 appendix B KDF runs here, over hashlib (cryptography does not expose it).
_KDF_HASHES: dict[str, Callable[..., Any]] = {
    "sha1": hashlib.sha1, "sha224": hashlib.sha224, "sha256": hashlib.sha256,
    "sha384": hashlib.sha384, "sha512": hashlib.sha512,
}
# PBES2 encryption schemes (RFC 8018 B.2), by asn1crypto name.
_PBES2_CIPHERS = ("aes128_cbc", "aes192_cbc", "aes256_cbc", "tripledes_3key")
# RFC 7292 appendix C: (cipher, key bytes); every one derives with SHA-1.
_PKCS12_PBES: dict[str, tuple[str, int]] = {
    "pkcs12_sha1_tripledes_3key": ("tripledes_3key", 24),
    "pkcs12_sha1_tripledes_2key": ("tripledes_3key", 16),
    "pkcs12_sha1_rc2_128": ("rc2", 16),
    "pkcs12_sha1_rc4_128": ("rc4", 16),
    "pkcs12_sha1_rc4_40": ("rc4", 5),
}
# cryptography's RC2 takes 128-bit keys only; OpenSSL's -legacy (and older Windows) encrypt
# certificates with RC2-40, which cryptography's own PKCS#12 loader reads.
_FOREIGN_PBES = ("pkcs12_sha1_rc2_40",)


class _Pbmac1Params(core.Sequence):
    """RFC 9579 / RFC 8018 A.5: PBMAC1-params."""

    _fields = [  # noqa: RUF012
        ("key_derivation_func", algos.KdfAlgorithm),
        ("message_auth_scheme", algos.HmacAlgorithm),
    ]


def pkcs12_kdf(digest: Callable[..., Any], password: bytes, salt: bytes, iterations: int,
               purpose: int, length: int) -> bytes:
    """RFC 7292 B.2; ``password`` is already a BMPString, ``purpose`` the ID byte (1 key,
    2 IV, 3 MAC). ``digest`` is a hashlib constructor."""
    v = digest().block_size
    d = bytes([purpose]) * v
    i = bytearray(_fill(salt, v) + _fill(password, v))
    out = b""
    while True:
        a = digest(d + i).digest()
        for _ in range(iterations - 1):
            a = digest(a).digest()
        out += a
        if len(out) >= length:
            return out[:length]
        b = int.from_bytes(_fill(a, v), "big") + 1
        for j in range(0, len(i), v):
            block = (int.from_bytes(i[j:j + v], "big") + b) % (1 << (8 * v))
            i[j:j + v] = block.to_bytes(v, "big")


def _fill(data: bytes, v: int) -> bytes:
    """Copies of ``data`` to the next multiple of ``v`` bytes (RFC 7292 B.2 steps 2-3)."""
    if not data:
        return b""
    n = v * -(-len(data) // v)
    return (data * (n // len(data) + 1))[:n]


def _password_forms(secret: bytes | None) -> list[tuple[bytes, bytes]]:
    """(octets for PBKDF2, BMPString for the RFC 7292 KDF) to try, most likely first.

    RFC 7292 B.1: the BMPString with a two-byte terminator. OpenSSL writes an empty
    passphrase as the bare terminator and a missing one as nothing, so both are tried. A
    passphrase that is not UTF-8 is widened byte by byte, as OpenSSL's asc2uni does.
    """
    if not secret:
        return [(b"", b"\x00\x00"), (b"", b"")]
    try:
        bmp = secret.decode("utf-8").encode("utf-16-be")
    except UnicodeDecodeError:
        bmp = bytes(x for byte in secret for x in (0, byte))
    return [(secret, bmp + b"\x00\x00")]


@dataclass(frozen=True)
class _Pbe:
    """A password-based encryption, read and checked before anything is derived."""

    what: str
    kdf: str  # "pbkdf2", "pkcs12", or "foreign" (left to cryptography's loaders)
    hash_name: str
    salt: bytes
    iterations: int
    cipher: str  # a CONTENT_CIPHERS name, or "rc4"
    key_size: int
    iv: bytes = b""

    @property
    def cost(self) -> int:
        """Iterations run: the RFC 7292 block ciphers derive the key and the IV apart."""
        return self.iterations * (2 if self.kdf == "pkcs12" and self.cipher != "rc4" else 1)


@dataclass(frozen=True)
class _Mac:
    pbmac1: bool
    hash_name: str  # the HMAC's hash
    kdf_hash: str  # the hash of PBKDF2 (PBMAC1) or of the RFC 7292 KDF
    salt: bytes
    iterations: int
    key_size: int
    digest: bytes


@dataclass
class _Bag:
    kind: str
    value: Any
    local_key_id: bytes | None
    what: str


class _Reader:
    """One PKCS#12 file: parse, check the MAC, decrypt, pair keys with certificates."""

    def __init__(self, label: str, secret: bytes | None) -> None:
        self.label = label
        self.secret = secret
        self.forms = _password_forms(secret)
        self.raw, self.bmp = self.forms[0]
        self.has_mac = False
        self.work = 0
        self.bag_count = 0

    def fail(self, text: str) -> KeyLoadError:
        return KeyLoadError(f"{self.label}: {text}")

    # -- structure -------------------------------------------------------------------------

    def read(self, data: bytes) -> PKCS12Identities:
        if len(data) > _MAX_PKCS12_BYTES:
            raise self.fail("larger than 16 MiB: not a PKCS#12 file")
        pfx = load(asn1_pkcs12.Pfx, data, "PKCS#12 file")
        if pfx["version"].native != "v3":
            raise self.fail("not a PKCS#12 file (version 3 expected)")
        auth = pfx["auth_safe"]
        kind = auth["content_type"].native
        if kind != "data":
            raise self.fail(f"PKCS#12 with public-key integrity ({kind}) is not supported")
        content = auth["content"]
        if not isinstance(content, core.OctetString) or content.native is None:
            raise self.fail("the PKCS#12 authenticated safe is empty")
        auth_safe = bytes(content)
        infos = load(asn1_pkcs12.AuthenticatedSafe, auth_safe, "PKCS#12 authenticated safe")
        if len(infos) > _MAX_BAGS:
            raise self.fail(f"more than {_MAX_BAGS} safes in one PKCS#12 file")

        bags: list[_Bag] = []
        encrypted: list[tuple[_Pbe, bytes]] = []
        for n, info in enumerate(infos, 1):
            kind = info["content_type"].native
            if kind == "data":
                bags.extend(self.safe(bytes(info["content"]), f"safe {n}"))
            elif kind == "encrypted_data":
                eci = info["content"]["encrypted_content_info"]
                ciphertext = eci["encrypted_content"]
                if eci["content_type"].native != "data" or ciphertext.native is None:
                    raise self.fail(f"encrypted safe {n} holds no data")
                what = f"encrypted safe {n}"
                encrypted.append((self.pbe(eci["content_encryption_algorithm"], what),
                                  bytes(ciphertext)))
            elif kind == "enveloped_data":
                raise self.fail("PKCS#12 with public-key privacy (envelopedData) is not "
                                "supported")
            else:
                raise self.fail(f"safe {n} has the unexpected content type {kind}")

        # Every cost visible without decrypting is checked before the first derivation.
        mac = self.mac_params(pfx)
        shrouded = [self.pbe(b.value["encryption_algorithm"], b.what)
                    for b in bags if b.kind == "pkcs8_shrouded_key_bag"]
        planned = [p.cost for p, _ in encrypted] + [p.cost for p in shrouded]
        if mac is not None:
            planned += [mac.iterations] * (1 if mac.pbmac1 else len(self.forms))
        if sum(planned) > _MAX_WORK:
            raise self.fail("the PKCS#12 key derivations would take too long "
                            f"(more than {_MAX_WORK:,} iterations in all)")
        if mac is not None:
            self.verify_mac(mac, auth_safe)

        foreign = False
        for pbe, ciphertext in encrypted:
            if pbe.kdf == "foreign":
                foreign = True
                continue
            bags.extend(self.safe(self.decrypt(pbe, ciphertext), pbe.what))
        keys = [(key, bag.local_key_id) for bag in bags
                if (key := self.private_key(bag)) is not None]
        certs = [(self.certificate(bag), bag.local_key_id) for bag in bags
                 if bag.kind == "cert_bag" and bag.value["cert_id"].native == "x509"]
        if foreign:
            certs += [(cert, None) for cert in self.foreign_certificates(data)]
        return _pair(keys, certs)

    def safe(self, der: bytes, what: str, depth: int = 0) -> list[_Bag]:
        contents = load(asn1_pkcs12.SafeContents, der, f"PKCS#12 {what}")
        out: list[_Bag] = []
        for bag in contents:
            self.bag_count += 1
            if self.bag_count > _MAX_BAGS:
                raise self.fail(f"more than {_MAX_BAGS} bags in one PKCS#12 file")
            kind = bag["bag_id"].native
            value = bag["bag_value"]
            if kind == "safe_contents":
                if depth >= _MAX_DEPTH:
                    raise self.fail("PKCS#12 safe contents nested too deeply")
                out.extend(self.safe(value.untag().dump(), what, depth + 1))
                continue
            out.append(_Bag(kind, value, _local_key_id(bag), f"bag {self.bag_count}"))
        return out

    # -- parameters ------------------------------------------------------------------------

    def iterations(self, value: Any, what: str) -> int:
        count = value.native if value.native is not None else 1
        if not isinstance(count, int) or count < 1:
            raise self.fail(f"{what}: invalid iteration count")
        if count > _MAX_ITERATIONS:
            raise self.fail(f"{what}: {count:,} iterations (more than {_MAX_ITERATIONS:,})")
        return count

    def pbe(self, alg: algos.EncryptionAlgorithm, what: str) -> _Pbe:
        name = alg["algorithm"].native
        if name == "pbes2":
            params = alg["parameters"]
            kdf = params["key_derivation_func"]
            if kdf["algorithm"].native != "pbkdf2":
                raise self.fail(f"{what}: PBES2 with {kdf['algorithm'].native} is not supported")
            p = kdf["parameters"]
            if p["salt"].name != "specified":
                raise self.fail(f"{what}: PBKDF2 with a salt source is not supported")
            prf = p["prf"]["algorithm"].native
            scheme = params["encryption_scheme"]
            cipher = scheme["algorithm"].native
            if prf not in _HASHES or cipher not in _PBES2_CIPHERS:
                raise self.fail(f"{what}: PBES2 with {prf} and {cipher} is not supported")
            size = CONTENT_CIPHERS[cipher].key_size
            if p["key_length"].native not in (None, size):
                raise self.fail(f"{what}: PBKDF2 key length does not fit {cipher}")
            iv = scheme["parameters"].native
            if not isinstance(iv, bytes):
                raise self.fail(f"{what}: {cipher} without an IV")
            return _Pbe(what, "pbkdf2", prf, p["salt"].chosen.native,
                        self.iterations(p["iteration_count"], what), cipher, size, iv)
        if name in _PKCS12_PBES or name in _FOREIGN_PBES:
            params = alg["parameters"]
            cipher, size = _PKCS12_PBES.get(name, ("rc2", 5))
            return _Pbe(what, "foreign" if name in _FOREIGN_PBES else "pkcs12", "sha1",
                        params["salt"].native, self.iterations(params["iterations"], what),
                        cipher, size)
        raise self.fail(f"{what}: unsupported encryption {name}")

    def mac_params(self, pfx: asn1_pkcs12.Pfx) -> _Mac | None:
        mac_data = pfx["mac_data"]
        if mac_data.native is None:
            return None  # RFC 7292 allows it (openssl pkcs12 -nomac)
        info = mac_data["mac"]
        alg = info["digest_algorithm"]
        digest = info["digest"].native
        if alg["algorithm"].dotted == _PBMAC1:
            params = alg["parameters"].parse(_Pbmac1Params)
            kdf = params["key_derivation_func"]
            if kdf["algorithm"].native != "pbkdf2":
                raise self.fail(f"PBMAC1 with {kdf['algorithm'].native} is not supported")
            p = kdf["parameters"]
            prf = p["prf"]["algorithm"].native
            mac_hash = params["message_auth_scheme"]["algorithm"].native
            size = p["key_length"].native  # RFC 9579 section 3: required
            if prf not in _HASHES or mac_hash not in _HASHES:
                raise self.fail(f"PBMAC1 with {prf} and {mac_hash} is not supported")
            if not isinstance(size, int) or not 1 <= size <= 512 or p["salt"].name != "specified":
                raise self.fail("PBMAC1 without a usable key length or salt")
            return _Mac(True, mac_hash, prf, p["salt"].chosen.native,
                        self.iterations(p["iteration_count"], "the PKCS#12 MAC"), size, digest)
        name = alg["algorithm"].native
        if name not in _KDF_HASHES:
            raise self.fail(f"unsupported PKCS#12 MAC algorithm {name}")
        return _Mac(False, name, name, mac_data["mac_salt"].native,
                    self.iterations(mac_data["iterations"], "the PKCS#12 MAC"),
                    _HASHES[name]().digest_size, digest)

    # -- secrets ---------------------------------------------------------------------------

    def charge(self, iterations: int) -> None:
        self.work += iterations
        if self.work > _MAX_WORK:
            raise self.fail("the PKCS#12 key derivations would take too long "
                            f"(more than {_MAX_WORK:,} iterations in all)")

    def verify_mac(self, mac: _Mac, auth_safe: bytes) -> None:
        """RFC 7292 5.1 (HMAC keyed by the appendix B KDF) or RFC 9579 (PBMAC1). Runs before
        any decryption, so a wrong passphrase is told apart from a damaged file."""
        self.has_mac = True
        forms = self.forms[:1] if mac.pbmac1 else self.forms
        for raw, bmp in forms:
            self.charge(mac.iterations)
            if mac.pbmac1:
                key = PBKDF2HMAC(_HASHES[mac.kdf_hash](), mac.key_size, mac.salt,
                                 mac.iterations).derive(raw)
            else:
                key = pkcs12_kdf(_KDF_HASHES[mac.kdf_hash], bmp, mac.salt, mac.iterations, 3,
                                 mac.key_size)
            check = hmac.HMAC(key, _HASHES[mac.hash_name]())
            check.update(auth_safe)
            try:
                check.verify(mac.digest)
            except InvalidSignature:
                continue
            self.raw, self.bmp = raw, bmp
            return
        if self.secret is None:
            raise PassphraseError(f"{self.label} is protected: a passphrase is required")
        raise PassphraseError(f"{self.label}: wrong passphrase (the PKCS#12 integrity check "
                              "failed)")

    def decrypt(self, pbe: _Pbe, ciphertext: bytes) -> bytes:
        self.charge(pbe.cost)
        if pbe.kdf == "pbkdf2":
            key = PBKDF2HMAC(_HASHES[pbe.hash_name](), pbe.key_size, pbe.salt,
                             pbe.iterations).derive(self.raw)
            iv = pbe.iv
        else:
            key = pkcs12_kdf(hashlib.sha1, self.bmp, pbe.salt, pbe.iterations, 1, pbe.key_size)
            if pbe.cipher == "tripledes_3key" and len(key) == 16:
                key += key[:8]  # two-key 3DES is K1 K2 K1
            if pbe.cipher == "rc4":
                decryptor = Cipher(ARC4(key), mode=None).decryptor()
                return decryptor.update(ciphertext) + decryptor.finalize()
            iv = pkcs12_kdf(hashlib.sha1, self.bmp, pbe.salt, pbe.iterations, 2, 8)
        spec: ContentCipher = CONTENT_CIPHERS[pbe.cipher]
        try:
            return cbc_decrypt(spec, key, iv, ciphertext)
        except DecryptionError:
            raise self.undecryptable(pbe.what) from None

    def undecryptable(self, what: str) -> PassphraseError:
        if self.has_mac:  # the MAC covers every byte: the bag has a password of its own
            return PassphraseError(f"{self.label}: the passphrase opens the file but not its "
                                   f"{what} (a second password?)")
        if self.secret is None:
            return PassphraseError(f"{self.label} is protected: a passphrase is required")
        return PassphraseError(f"{self.label}: wrong passphrase or damaged {what}")

    def private_key(self, bag: _Bag) -> PrivateKeyTypes | None:
        if bag.kind == "key_bag":
            der = bag.value.untag().dump()
        elif bag.kind == "pkcs8_shrouded_key_bag":
            pbe = self.pbe(bag.value["encryption_algorithm"], bag.what)
            if pbe.kdf == "foreign":
                return self.foreign_key(bag)
            der = self.decrypt(pbe, bytes(bag.value["encrypted_data"]))
        else:
            return None
        try:
            return serialization.load_der_private_key(der, None)
        except ValueError:
            if bag.kind == "pkcs8_shrouded_key_bag" and not self.has_mac:
                raise self.undecryptable(bag.what) from None
            raise self.fail(f"{bag.what} holds no readable private key") from None
        except UnsupportedAlgorithm:
            raise self.fail(f"{bag.what} holds an unsupported kind of key") from None

    def certificate(self, bag: _Bag) -> x509.Certificate:
        try:
            return x509.load_der_x509_certificate(bytes(bag.value["cert_value"]))
        except ValueError:
            raise self.fail(f"{bag.what} holds a damaged certificate") from None

    # -- RC2-40, through cryptography's loaders (OpenSSL's legacy provider) ----------------

    def foreign_key(self, bag: _Bag) -> PrivateKeyTypes:
        try:
            return serialization.load_der_private_key(bag.value.untag().dump(), self.raw)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise self.undecryptable(bag.what) from None

    def foreign_certificates(self, data: bytes) -> list[x509.Certificate]:
        try:
            with accepted_input():
                loaded = pkcs12.load_pkcs12(data, self.secret)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise self.fail("cannot read its RC2-40 encrypted certificates") from None
        found = [loaded.cert] if loaded.cert is not None else []
        return [c.certificate for c in [*found, *loaded.additional_certs]]


def _local_key_id(bag: asn1_pkcs12.SafeBag) -> bytes | None:
    attrs = bag["bag_attributes"]
    if attrs.native is None:
        return None
    for attr in attrs:
        if attr["type"].native == "local_key_id" and len(attr["values"]):
            value = attr["values"][0].native
            return value if isinstance(value, bytes) else None
    return None


def _pair(keys: list[tuple[PrivateKeyTypes, bytes | None]],
          certs: list[tuple[x509.Certificate, bytes | None]]) -> PKCS12Identities:
    """Each key with the certificate sharing its localKeyId (RFC 7292 4.2) when that
    certificate holds its public key, else the first certificate that does."""
    identities: list[KeyPair] = []
    claimed: set[x509.Certificate] = set()
    for key, key_id in keys:
        fits = [(cert, cert_id) for cert, cert_id in certs if key_matches(key, cert)]
        by_id = [cert for cert, cert_id in fits if key_id is not None and cert_id == key_id]
        cert = by_id[0] if by_id else fits[0][0] if fits else None
        if cert is not None:
            claimed.add(cert)
        identities.append((key, cert))
    others: list[x509.Certificate] = []
    for cert, _ in certs:
        if cert not in claimed and cert not in others:
            others.append(cert)
    return PKCS12Identities(identities, others)


def load_pkcs12_identities(
    source: Source, passphrase: Passphrase = None, *, label: str | None = None
) -> PKCS12Identities:
    """Every private key of a PKCS#12 file, each with its certificate, and the other
    certificates.

    Unlike :func:`load_pkcs12` (one key, as cryptography reads it) this reads every key bag:
    a key history, the current key first as our CA writes it. Keys are paired with
    certificates by localKeyId, checked against the public key, else by public key alone.
    The MAC (HMAC with the RFC 7292 appendix B KDF, or RFC 9579 PBMAC1) is checked before
    anything is decrypted. Bags may be encrypted with PBES2 (PBKDF2, AES-CBC or 3DES) or the
    RFC 7292 PBEs (3DES, RC2-128, RC4); RC2-40 (``openssl pkcs12 -legacy`` certificates) is
    left to cryptography's own loaders, since its RC2 takes 128-bit keys only.

    Raises:
        PassphraseError: the passphrase is missing or wrong (the MAC does not verify), or a
            bag does not decrypt with it.
        KeyLoadError: not a PKCS#12 file; damaged, truncated or oversized; an unsupported
            algorithm or mode; more than 64 bags, or more than 10,000,000 iterations.
    """
    data, default_label = read_source(source, "PKCS#12")
    reader = _Reader(label or default_label, _secret(passphrase))
    try:
        return reader.read(data)
    except (KeyLoadError, PassphraseError):
        raise
    except ASN1Error as exc:
        raise reader.fail(str(exc)) from None
    except UnsupportedAlgorithm as exc:
        raise reader.fail(f"unsupported PKCS#12 content ({exc})") from None
    except PARSE_ERRORS as exc:  # asn1crypto parses lazily: structure errors surface late
        raise reader.fail(f"malformed PKCS#12 file: {reason(exc)}") from None


# -- writing ---------------------------------------------------------------------------------


def _pbes2(passphrase: bytes, iterations: int, data: bytes) -> tuple[dict[str, Any], bytes]:
    """``data`` encrypted with PBES2 (RFC 8018 6.2): PBKDF2-HMAC-SHA256, fresh 16-byte salt,
    AES-256-CBC with a fresh IV; returns (the AlgorithmIdentifier, the ciphertext)."""
    salt, iv = os.urandom(16), os.urandom(16)
    key = PBKDF2HMAC(hashes.SHA256(), 32, salt, iterations).derive(passphrase)
    padder = sym_padding.PKCS7(128).padder()
    padded = padder.update(data) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    algorithm = {
        "algorithm": "pbes2",
        "parameters": {
            "key_derivation_func": {
                "algorithm": "pbkdf2",
                "parameters": {"salt": algos.Pbkdf2Salt(name="specified", value=salt),
                               "iteration_count": iterations,
                               "prf": {"algorithm": "sha256", "parameters": None}},
            },
            "encryption_scheme": {"algorithm": "aes256_cbc", "parameters": iv},
        },
    }
    return algorithm, ciphertext


def _bag_attributes(friendly_name: str | None, local_key_id: bytes | None) -> Any:
    if friendly_name is None and local_key_id is None:
        return None  # no attributes at all (the field is OPTIONAL)
    attrs: list[Any] = []
    if friendly_name is not None:
        attrs.append({"type": "friendly_name", "values": [friendly_name]})
    if local_key_id is not None:
        attrs.append({"type": "local_key_id", "values": [local_key_id]})
    return attrs


def write_pkcs12(
    pairs: Sequence[tuple[str | None, PrivateKeyTypes, x509.Certificate | None]],
    chain: Sequence[x509.Certificate],
    passphrase: bytes,
    *,
    iterations: int,
) -> bytes:
    """A PKCS#12 file (DER) holding each (friendly name, key, certificate) of ``pairs`` and
    the CA certificates of ``chain``, built here rather than by ``cryptography`` (whose
    writer refuses ML-DSA and ML-KEM keys).

    The shape is what OpenSSL 3 writes by default: an encryptedData safe with every
    certificate (PBES2: PBKDF2-HMAC-SHA256 with ``iterations``, AES-256-CBC), then a data
    safe with one pkcs8ShroudedKeyBag per key (each PBES2 the same way, with its own salt
    and IV), and an HMAC-SHA256 MAC keyed by the RFC 7292 appendix B KDF with the same
    ``iterations`` and a 16-byte salt. A key and its certificate share a friendlyName and a
    localKeyId (the certificate's SHA-1 fingerprint), which is how readers pair them; the
    first pair is the one readers that take a single key take. A pair may have no name and
    no certificate (a key kept at rest): its bag then has no attributes, and a file with no
    certificate at all has no certificate safe. The private keys go in as
    ``cryptography``'s PKCS#8 (for ML-DSA and ML-KEM the seed form of RFC 9881 and 9935).

    Raises:
        PassphraseError: the passphrase is empty or not UTF-8 (PKCS#12 passwords are text).
        KeyLoadError: no pairs, an iteration count below 1, or a key that has no PKCS#8
            form.
    """
    if not passphrase:
        raise PassphraseError("a PKCS#12 file needs a non-empty passphrase")
    try:
        text = passphrase.decode("utf-8")
    except UnicodeDecodeError:
        raise PassphraseError("the PKCS#12 passphrase must be UTF-8 text") from None
    if not pairs:
        raise KeyLoadError("a PKCS#12 file needs at least one key")
    if iterations < 1:
        raise KeyLoadError("PKCS#12 key derivation needs at least one iteration")
    cert_bags: list[Any] = []
    key_bags: list[Any] = []
    for name, key, cert in pairs:
        local_key_id = (None if cert is None
                        else cert.fingerprint(hashes.SHA1()))  # noqa: S303  (an identifier)
        try:
            pkcs8 = key.private_bytes(serialization.Encoding.DER,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise KeyLoadError(f"a {type(key).__name__} has no PKCS#8 form") from None
        algorithm, ciphertext = _pbes2(passphrase, iterations, pkcs8)
        key_bags.append({
            "bag_id": "pkcs8_shrouded_key_bag",
            "bag_value": asn1_keys.EncryptedPrivateKeyInfo({
                "encryption_algorithm": algorithm, "encrypted_data": ciphertext}),
            "bag_attributes": _bag_attributes(name, local_key_id),
        })
        if cert is not None:
            cert_bags.append(_cert_bag(cert, name, local_key_id))
    cert_bags.extend(_cert_bag(ca, None, None) for ca in chain)
    safes: list[asn1_cms.ContentInfo] = []
    if cert_bags:
        certs_der = asn1_pkcs12.SafeContents(cert_bags).dump()
        algorithm, ciphertext = _pbes2(passphrase, iterations, certs_der)
        safes.append(asn1_cms.ContentInfo({
            "content_type": "encrypted_data",
            "content": asn1_cms.EncryptedData({
                "version": "v0",
                "encrypted_content_info": {
                    "content_type": "data",
                    "content_encryption_algorithm": algorithm,
                    "encrypted_content": ciphertext,
                },
            }),
        }))
    safes.append(asn1_cms.ContentInfo({
        "content_type": "data",
        "content": asn1_pkcs12.SafeContents(key_bags).dump(),
    }))
    auth_safe = asn1_pkcs12.AuthenticatedSafe(safes).dump()
    salt = os.urandom(16)
    # RFC 7292 B.1: the password as a BMPString with a two-byte terminator
    mac_key = pkcs12_kdf(hashlib.sha256, text.encode("utf-16-be") + b"\x00\x00", salt,
                         iterations, 3, 32)
    return asn1_pkcs12.Pfx({
        "version": "v3",
        "auth_safe": {"content_type": "data", "content": auth_safe},
        "mac_data": {"mac": {"digest_algorithm": {"algorithm": "sha256"},
                             "digest": std_hmac.new(mac_key, auth_safe, "sha256").digest()},
                     "mac_salt": salt, "iterations": iterations},
    }).dump()


def _cert_bag(cert: x509.Certificate, friendly_name: str | None,
              local_key_id: bytes | None) -> dict[str, Any]:
    return {
        "bag_id": "cert_bag",
        "bag_value": asn1_pkcs12.CertBag({
            "cert_id": "x509",
            "cert_value": asn1_x509.Certificate.load(
                cert.public_bytes(serialization.Encoding.DER)),
        }),
        "bag_attributes": _bag_attributes(friendly_name, local_key_id),
    }

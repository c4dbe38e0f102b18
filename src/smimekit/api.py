"""The safe recipes: sign, verify, encrypt, decrypt whole messages.

Defaults follow RFC 8551 and current practice: SHA-256, AES-256-GCM, signed attributes with
ESS signing-certificate-v2, strict validation. Lower-level assembly is in :mod:`smimekit.cms`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from smimekit.cms.algorithms import Cipher, Digest
from smimekit.cms.signed import SignerSpec, sign_data
from smimekit.errors import EncryptionError, MIMEError, NoRecipientError, VerificationError
from smimekit.keys.kinds import is_ml_dsa_key
from smimekit.smime.message import (
    build_multipart_signed,
    build_pkcs7_mime,
    build_pkcs7_mime_stream,
    prepare_chunks,
)
from smimekit.smime.wrap import Layer, unwrap
from smimekit.validation.assess import assess
from smimekit.validation.intermediates import (
    AIA_TIMEOUT,
    IntermediateCache,
    IssuerSource,
    issuer_source,
)
from smimekit.validation.recipients import (
    can_receive_mail,
    check_recipient,
    describe,
    recipient_problems,
)
from smimekit.validation.revocation import RevocationOptions, RevocationPolicy
from smimekit.validation.verdict import Verdict

if TYPE_CHECKING:
    import email.message

# email.message is imported where a Message is handled: bytes in, bytes out never needs it.
MessageInput = Union[bytes, bytearray, memoryview, "email.message.Message"]

SOFT_REVOCATION = RevocationOptions()
"""The default: revoked fails, no answer passes with a warning (RFC 5280 soft-fail)."""
KeyPair = tuple[PrivateKeyTypes, x509.Certificate | None]


@dataclass(frozen=True)
class Decrypted:
    """The result of :func:`decrypt`."""

    content: bytes
    """The complete decrypted message: the outer headers around the decrypted entity."""
    cipher: str
    """Content-encryption algorithm, e.g. ``aes256-gcm``."""
    recipient: str
    """How the content key reached us, e.g. ``ktri-rsaes_oaep``."""
    layers: tuple[Layer, ...]
    partial: bool = False
    """True when the encrypted part sat next to unencrypted siblings (shown alone)."""

    def as_message(self) -> email.message.EmailMessage:
        return _parse(self.content)


@dataclass(frozen=True)
class Verified:
    """The result of :func:`verify` and :func:`decrypt_verify`."""

    content: bytes
    """The message with its S/MIME layers removed (outer headers kept)."""
    verdict: Verdict

    def as_message(self) -> email.message.EmailMessage:
        return _parse(self.content)


def _parse(data: bytes) -> email.message.EmailMessage:
    import email
    import email.message
    import email.policy

    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, email.message.EmailMessage)
    return msg


def _as_bytes(message: MessageInput) -> bytes:
    if isinstance(message, bytes | bytearray | memoryview):
        return bytes(message)
    import email.message

    if isinstance(message, email.message.Message):
        return message.as_bytes(policy=message.policy.clone(linesep="\r\n"))
    raise TypeError("message must be bytes or an email.message.Message")


def sign(
    message: MessageInput,
    key: PrivateKeyTypes,
    cert: x509.Certificate,
    *,
    chain: Sequence[x509.Certificate] = (),
    opaque: bool = False,
    digest: Digest = Digest.SHA256,
    pss: bool = False,
    use_ski: bool = False,
    signing_time: dt.datetime | None = None,
    encryption_cert: x509.Certificate | None = None,
) -> bytes:
    """Sign a message: multipart/signed (default) or opaque application/pkcs7-mime.

    8-bit content is converted to quoted-printable or base64 first, so the signature
    survives any relay. ``chain`` certificates are included for the recipient.

    ``encryption_cert`` is the sender's certificate for receiving mail when it is not the
    signing one (dual keys): it is announced in the SMIMEEncryptionKeyPreference signed
    attribute (RFC 8551 2.5.3) and carried in the message, so recipients can answer
    encrypted, as Outlook does.

    Raises:
        SigningError: the key does not match the certificate, or the options do not fit it.
        MIMEError: the input is not a readable message.
    """
    outer, entity = prepare_chunks(_as_bytes(message))
    der = sign_data(
        entity,
        [
            SignerSpec(
                key, cert, digest, pss=pss, use_ski=use_ski, encryption_cert=encryption_cert
            )
        ],
        detached=not opaque,
        certificates=[*chain, encryption_cert] if encryption_cert is not None else chain,
        signing_time=signing_time,
    )
    if opaque:
        return build_pkcs7_mime(outer, der, "signed_data")
    # Ed25519 (RFC 8419) and ML-DSA (RFC 9882) sign with SHA-512 as the digest algorithm.
    fixed = isinstance(key, ed25519.Ed25519PrivateKey) or is_ml_dsa_key(key)
    micalg = "sha-512" if fixed else digest.micalg
    return build_multipart_signed(outer, entity, der, micalg)


def encrypt(
    message: MessageInput,
    recipients: Sequence[x509.Certificate],
    *,
    cipher: Cipher = Cipher.AES256_GCM,
    oaep: bool = False,
    use_ski: bool = False,
    trust: Sequence[x509.Certificate] | None = None,
    intermediates: Sequence[x509.Certificate] = (),
    check_recipients: bool = True,
    at: dt.datetime | None = None,
    revocation: RevocationOptions | None = SOFT_REVOCATION,
    aia: bool = False,
    intermediate_cache: IntermediateCache | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> bytes:
    """Encrypt a message to every recipient certificate (application/pkcs7-mime).

    AES-GCM and ChaCha20-Poly1305 produce authEnveloped-data, AES-CBC enveloped-data.
    RSA recipients get PKCS#1 v1.5 key transport unless ``oaep``; EC and X25519/X448
    recipients get ECDH key agreement with AES key wrap.

    Each recipient certificate is checked first (unless ``check_recipients`` is False): it
    must be within its validity, allow key encipherment / key agreement and emailProtection,
    and, when ``trust`` anchors are given, chain to one of them. Its chain is completed as
    :func:`verify` completes a signer's: from ``intermediates``, then ``intermediate_cache``
    (which learns the intermediates of every chain that validates) and, with ``aia``, the
    caIssuers URLs of the certificates (never under the ``OFFLINE`` revocation policy).
    ``on_warning`` hears what does not refuse a recipient but should be known, e.g. an
    unknown revocation status under the soft policy (the text verify reports).

    Raises:
        EncryptionError: no recipient, an unfit certificate, or a key that cannot receive mail.
    """
    if check_recipients:
        _check_recipients(
            recipients,
            trust,
            intermediates,
            at,
            revocation,
            _issuer_source(aia, intermediate_cache, revocation) if trust is not None else None,
            on_warning,
        )
    outer, entity = prepare_chunks(_as_bytes(message))
    from smimekit.cms.enveloped import encrypt_enveloped_stream  # not needed to verify
    from smimekit.cms.recipients import RecipientOptions

    stream = encrypt_enveloped_stream(
        entity, recipients, cipher=cipher, options=RecipientOptions(oaep=oaep, use_ski=use_ski)
    )
    return build_pkcs7_mime_stream(
        outer, stream.prefix, stream.ciphertext, stream.suffix, stream.kind
    )


def _check_recipients(
    recipients: Sequence[x509.Certificate],
    trust: Sequence[x509.Certificate] | None,
    intermediates: Sequence[x509.Certificate],
    at: dt.datetime | None,
    revocation: RevocationOptions | None,
    source: IssuerSource | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> None:
    problems = []
    warnings: list[str] = []
    for cert in recipients:
        found = check_recipient(
            cert,
            trust=trust,
            intermediates=intermediates,
            at=at,
            revocation=revocation,
            issuer_source=source,
        )
        if found.problems:
            problems.append(f"{describe(cert)}: {'; '.join(found.problems)}")
        warnings += found.warnings
    if problems:
        raise EncryptionError(
            "refusing to encrypt to an unfit recipient certificate: " + " | ".join(problems)
        )
    if on_warning is not None:
        for warning in dict.fromkeys(warnings):
            on_warning(warning)


def sign_encrypt(
    message: MessageInput,
    key: PrivateKeyTypes,
    cert: x509.Certificate,
    recipients: Sequence[x509.Certificate],
    *,
    chain: Sequence[x509.Certificate] = (),
    opaque: bool = False,
    digest: Digest = Digest.SHA256,
    pss: bool = False,
    use_ski: bool = False,
    cipher: Cipher = Cipher.AES256_GCM,
    oaep: bool = False,
    include_self: bool = True,
    signing_time: dt.datetime | None = None,
    trust: Sequence[x509.Certificate] | None = None,
    intermediates: Sequence[x509.Certificate] = (),
    check_recipients: bool = True,
    revocation: RevocationOptions | None = SOFT_REVOCATION,
    encryption_cert: x509.Certificate | None = None,
    aia: bool = False,
    intermediate_cache: IntermediateCache | None = None,
    on_warning: Callable[[str], None] | None = None,
    self_copy_required: bool = False,
) -> bytes:
    """Sign, then encrypt the signed message (RFC 8551 section 3.7).

    With ``include_self`` the sender is added as a recipient, so the sender can read their
    sent mail: through ``encryption_cert`` when given (a dual-key sender's encryption
    certificate, also announced in the signature as for :func:`sign`), else through the
    signing certificate when it can receive mail. A signing-only certificate without an
    ``encryption_cert`` leaves the sender out, or with ``self_copy_required`` (what the CLI
    does) is refused rather than leaving a sent copy nobody can read. Recipients are checked
    as for :func:`encrypt`.

    Raises:
        EncryptionError: an unfit recipient, an unfit ``encryption_cert``, or (with
            ``include_self`` and ``self_copy_required``) no certificate of the sender that
            can receive mail.
        SigningError: as for :func:`sign`.
    """
    targets = list(recipients)
    if check_recipients:
        _check_recipients(
            targets,
            trust,
            intermediates,
            None,
            revocation,
            _issuer_source(aia, intermediate_cache, revocation) if trust is not None else None,
            on_warning,
        )
    if include_self:
        own = _sent_copy_certificate(cert, encryption_cert, self_copy_required)
        if own is not None and own not in targets:
            targets.append(own)
    signed = sign(
        message,
        key,
        cert,
        chain=chain,
        opaque=opaque,
        digest=digest,
        pss=pss,
        use_ski=use_ski,
        signing_time=signing_time,
        encryption_cert=encryption_cert,
    )
    return encrypt(signed, targets, cipher=cipher, oaep=oaep, check_recipients=False)


def _sent_copy_certificate(
    cert: x509.Certificate, encryption_cert: x509.Certificate | None, required: bool
) -> x509.Certificate | None:
    """The sender's certificate the sent copy is encrypted to (see :func:`sign_encrypt`)."""
    if encryption_cert is not None:
        if not can_receive_mail(encryption_cert):
            unfit = recipient_problems(encryption_cert, trust=None) or [
                "its key cannot receive mail"
            ]
            raise EncryptionError(
                f"the sender's encryption certificate {describe(encryption_cert)} cannot"
                f" take the sent copy: {'; '.join(unfit)}"
            )
        return encryption_cert
    unfit = recipient_problems(cert, trust=None)
    if can_receive_mail(cert):
        return cert
    if not required:
        return None
    # A dual-key sender's signing certificate (digitalSignature only) cannot receive mail.
    raise EncryptionError(
        f"the signing certificate {describe(cert)} cannot receive mail"
        f" ({'; '.join(unfit) or 'its key cannot decrypt'}), so the sent copy would be"
        " unreadable: give the sender's encryption certificate (--self-cert) or leave the"
        " sender out (--no-self)"
    )


def _keypairs(
    key: PrivateKeyTypes | None, cert: x509.Certificate | None, keys: Sequence[KeyPair]
) -> list[KeyPair]:
    pairs: list[KeyPair] = [] if key is None else [(key, cert)]
    pairs.extend(keys)
    return pairs


def decrypt(
    message: MessageInput,
    key: PrivateKeyTypes | None,
    cert: x509.Certificate | None = None,
    *,
    keys: Sequence[KeyPair] = (),
    allow_legacy: bool = False,
) -> Decrypted:
    """Remove the encryption layer(s); signed layers below are left for :func:`verify`.

    ``keys`` may list more (key, certificate) pairs, e.g. a key history: the matching one is
    found from the RecipientInfos. ``key`` may then be None. A certificate may be None: the
    key is then tried on every recipient of its type. Every key of a PKCS#12 file, with its
    certificate, comes from
    ``smimekit.keys.pkcs12.load_pkcs12_identities(path, passphrase).identities``.

    Raises:
        NoRecipientError: the message is not encrypted to any of the keys.
        DecryptionError: wrong key or altered message (deliberately not more precise).
        LegacyAlgorithmError: 3DES/RC2 without ``allow_legacy``.
        MalformedError: the input is not an encrypted S/MIME message.
    """
    pairs = _keypairs(key, cert, keys)
    if not pairs:
        raise NoRecipientError("no private key was given")
    result = unwrap(_as_bytes(message), keys=pairs, allow_legacy=allow_legacy, encryption_only=True)
    if not result.encrypted:
        raise MIMEError("the message is not encrypted (no enveloped-data part)")
    last = [layer for layer in result.layers if layer.kind == "encrypted"][-1]
    cipher, _, recipient = last.detail.partition(", ")
    return Decrypted(
        result.message(), cipher, recipient, result.layers, partial=result.partially_encrypted
    )


def verify(
    message: MessageInput,
    *,
    trust: Sequence[x509.Certificate] = (),
    at: dt.datetime | str | None = None,
    extra_certs: Sequence[x509.Certificate] = (),
    allow_legacy: bool = False,
    raise_for_failure: bool = True,
    revocation: RevocationOptions | None = SOFT_REVOCATION,
    aia: bool = False,
    intermediates: IntermediateCache | None = None,
) -> Verified:
    """Verify a signed message against ``trust`` anchors at ``at`` (default now).

    ``at="signing-time"`` validates each signer at its own signing-time attribute (for
    archives; the verdict warns that this time is self-asserted). ``revocation`` chooses how
    CRLs and OCSP are consulted (default: soft-fail, fetching over HTTP, no disk cache);
    ``None`` skips revocation checking.

    Intermediate CAs the message lacks are looked up in ``intermediates`` (a cache that
    also learns those of every chain that validates) and, with ``aia``, fetched from the
    caIssuers URLs of the certificates (http only, at most four per message, five-second
    timeout; through ``revocation.fetcher`` when one is set). AIA is off by default: the
    URLs are chosen by whoever made the certificate, before anything proves it genuine, so a
    fetch can tell a sender when the message is read. The ``OFFLINE`` revocation policy
    means no network at all, so no AIA either.

    Every signer of every signed layer must verify, chain to an anchor, be fit for signing
    mail and match the From address.

    Raises:
        VerificationError: (unless ``raise_for_failure`` is False) with ``.verdict`` set.
        NoRecipientError: the message is encrypted; use :func:`decrypt_verify`.
        MalformedError: broken MIME or CMS.
    """
    return decrypt_verify(
        message,
        None,
        trust=trust,
        at=at,
        extra_certs=extra_certs,
        allow_legacy=allow_legacy,
        raise_for_failure=raise_for_failure,
        revocation=revocation,
        aia=aia,
        intermediates=intermediates,
    )


def decrypt_verify(
    message: MessageInput,
    key: PrivateKeyTypes | None,
    cert: x509.Certificate | None = None,
    *,
    keys: Sequence[KeyPair] = (),
    trust: Sequence[x509.Certificate] = (),
    at: dt.datetime | str | None = None,
    extra_certs: Sequence[x509.Certificate] = (),
    allow_legacy: bool = False,
    raise_for_failure: bool = True,
    revocation: RevocationOptions | None = SOFT_REVOCATION,
    aia: bool = False,
    intermediates: IntermediateCache | None = None,
) -> Verified:
    """Unwrap every layer (encrypted, signed, triple-wrapped) and judge the whole message.

    The verdict lists the layers seen, outermost first. ``key``, ``cert`` and ``keys`` (more
    pairs, e.g. a key history) as for :func:`decrypt`; ``aia`` and ``intermediates`` as for
    :func:`verify`.

    Raises:
        the errors of :func:`decrypt` and :func:`verify`.
    """
    result = unwrap(
        _as_bytes(message),
        keys=_keypairs(key, cert, keys),
        allow_legacy=allow_legacy,
        extra_certs=extra_certs,
    )
    verdict = assess(
        result,
        trust=trust,
        at=at,
        extra_certs=extra_certs,
        allow_legacy=allow_legacy,
        revocation=revocation,
        issuer_source=_issuer_source(aia, intermediates, revocation),
    )
    if raise_for_failure and not verdict.valid:
        broken = next((layer.error for layer in result.layers if layer.error is not None), None)
        if isinstance(broken, VerificationError):
            # Keep the precise class (digest mismatch, bad attributes...) and add the verdict.
            raise type(broken)(str(broken), verdict=verdict)
        if broken is not None:
            raise broken
        verdict.raise_for_failure()
    return Verified(result.message(), verdict)


def _issuer_source(
    aia: bool, cache: IntermediateCache | None, revocation: RevocationOptions | None
) -> IssuerSource:
    offline = revocation is not None and revocation.policy is RevocationPolicy.OFFLINE
    return issuer_source(
        cache=cache,
        aia=aia and not offline,
        fetcher=revocation.fetcher if revocation is not None else None,
        timeout=min(AIA_TIMEOUT, revocation.timeout) if revocation is not None else AIA_TIMEOUT,
        no_fetch_reason="offline" if aia and offline else "AIA fetching is off",
    )

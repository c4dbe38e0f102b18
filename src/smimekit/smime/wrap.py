"""Unwrap nested S/MIME layers in one pass: signed, encrypted, triple-wrapped.

The result lists every layer seen, outermost first. A signature is only attributed to the
message when it covers the root entity; S/MIME parts buried below an unprotected
multipart are reported as *partial* (signature spoofing, Efail direct exfiltration) and never
merged with their unprotected siblings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from smimekit.cms.signed import SignedDataResult, embedded_content, verify_signed_data
from smimekit.errors import (
    LegacyAlgorithmError,
    MIMEError,
    NoRecipientError,
    SignatureInvalidError,
    SmimeError,
    VerificationError,
)
from smimekit.smime.canonical import (
    CRLF,
    Entity,
    Header,
    join_entity,
    split_multipart,
    to_crlf,
)
from smimekit.smime.hp_read import HeaderProtection, Restored, restore
from smimekit.smime.message import is_multipart_signed, is_pkcs7_mime, pkcs7_der, split_signed

MAX_LAYERS = 8
MAX_WALK_DEPTH = 16
MAX_WALK_PARTS = 1000

KeyPairs = Sequence[tuple[PrivateKeyTypes, x509.Certificate | None]]


def _mail(result: SignedDataResult) -> SignedDataResult:
    """``result``, when what it signs is a MIME entity: S/MIME signs id-data (RFC 8551 3.1).

    A signature over another content type (made for another CMS protocol, or a signed
    receipt) is not a signature over mail, whatever its bytes look like when read as MIME.

    Raises:
        SignatureInvalidError: the signed content type is not id-data.
    """
    if result.content_type != "data":
        raise SignatureInvalidError(
            f"the signature covers a {result.content_type} content, not a MIME entity"
            " (S/MIME signs id-data)")
    return result


@dataclass(frozen=True)
class Layer:
    """One S/MIME layer, outermost first."""

    kind: str
    """``signed`` or ``encrypted``."""
    form: str
    """``multipart/signed`` or ``application/pkcs7-mime``."""
    detail: str
    """E.g. ``aes256-gcm, ktri-rsaes_oaep`` or ``1 signer``."""
    signed: SignedDataResult | None = None
    """For a signed layer whose signatures verified cryptographically."""
    error: VerificationError | LegacyAlgorithmError | None = None
    """For a signed layer whose check failed."""


@dataclass(frozen=True)
class Unwrapped:
    """What :func:`unwrap` found."""

    root: Entity
    """The message as received (headers parsed)."""
    entity: bytes
    """The innermost content entity (CRLF), after every layer was removed."""
    layers: tuple[Layer, ...]
    partially_signed: bool = False
    """A signature exists below an unsigned root: the message as a whole is not signed."""
    partially_encrypted: bool = False
    """An encrypted part sat next to unencrypted siblings; only that part is in ``entity``."""
    inner_headers: tuple[Header, ...] = ()
    """Headers of a wrapped message/rfc822 inside the protection, if any."""
    signed_headers: tuple[Header, ...] = ()
    """The non-content headers (From, To, Subject...) of the innermost entity that a verified
    signature covers, when it carries a From or Sender: a whole message signed as it is
    (``openssl cms -sign -in message.eml``), RFC 9788 header protection, or a signed
    message/rfc822 (RFC 8551 3.1). Empty when no signed entity carries them."""
    restored: Restored | None = None
    """The protected view (RFC 9788, protected-headers="v1" or RFC 8551 wrapping) when the
    Cryptographic Payload declares header protection; :meth:`message` is built from it."""

    @property
    def header_protection(self) -> HeaderProtection | None:
        return self.restored.protection if self.restored is not None else None

    @property
    def signed(self) -> bool:
        return any(layer.kind == "signed" for layer in self.layers)

    @property
    def encrypted(self) -> bool:
        return any(layer.kind == "encrypted" for layer in self.layers)

    def message(self) -> bytes:
        """The outer headers of the received message around the innermost entity."""
        if not self.layers:
            return self.root.raw
        if self.restored is not None:
            return self.restored.message()
        # Header protection (RFC 8551 3.1, RFC 9788): a wrapped message's own headers, or
        # those the protected entity carries, are the signed ones; an outer copy of the same
        # field is unprotected and must not precede them.
        parsed = Entity.parse(self.entity)
        protected = {h.lname for h in self.inner_headers}
        protected |= {h.lname for h in parsed.outer_headers}
        outer = b"".join(h.raw + CRLF for h in self.root.outer_headers if h.lname not in protected)
        # an entity that carries its own MIME-Version (a whole message encrypted as it was,
        # RFC 9788 C.1.4) keeps it: one field, not two
        version = (b"" if any(h.lname == "mime-version" for h in parsed.headers)
                   else b"MIME-Version: 1.0" + CRLF)
        return b"".join([outer, version, self.entity])


def unwrap(
    message: bytes,
    *,
    keys: KeyPairs = (),
    allow_legacy: bool = False,
    extra_certs: Sequence[x509.Certificate] = (),
    encryption_only: bool = False,
) -> Unwrapped:
    """Peel every S/MIME layer off ``message``.

    With ``encryption_only``, unwrapping goes down to the innermost encryption layer and
    stops at the first signature inside it; signatures outside it are checked, and a failed
    one is recorded without stopping (the caller asked to decrypt, not to verify).

    A signed layer whose verification fails is recorded (``Layer.error``) and unwrapping
    stops there: nothing below an unverified signature is released.

    Raises:
        MalformedError: broken MIME or CMS.
        NoRecipientError: encrypted, and none of ``keys`` is a recipient (or none given).
        DecryptionError: a key matched but the content does not decrypt.
        LegacyAlgorithmError: a legacy algorithm without ``allow_legacy``.
    """
    raw = to_crlf(message)
    root = Entity.parse(raw)
    current = root
    layers: list[Layer] = []
    inner_headers: tuple[Header, ...] = ()
    signed_headers: tuple[Header, ...] = ()
    covered = False  # a verified signature covers ``current``
    partial_encrypted = False
    wrapped_inner: Entity | None = None
    for _ in range(MAX_LAYERS):
        if covered and _names_sender(current):
            signed_headers = current.outer_headers
        seen_encryption = any(layer.kind == "encrypted" for layer in layers)
        if is_multipart_signed(current):
            if encryption_only and seen_encryption:
                break  # signatures inside the encryption are left for verify
            detached = split_signed(current)
            try:
                result = _mail(verify_signed_data(
                    detached.signature,
                    detached_content=detached.content,
                    extra_certs=extra_certs,
                    allow_legacy=allow_legacy,
                ))
            except (VerificationError, LegacyAlgorithmError) as exc:
                layers.append(Layer("signed", "multipart/signed", str(exc), error=exc))
                if not encryption_only:
                    break  # nothing below an unverified signature is released
                current = Entity.parse(detached.content)
                continue
            layers.append(Layer("signed", "multipart/signed", _signers(result), signed=result))
            current = Entity.parse(detached.content)
            covered = True
        elif is_pkcs7_mime(current):
            # The enveloped-data stack is imported where opaque CMS is met (start-up time).
            from smimekit.cms.enveloped import ENCRYPTED_TYPES, content_type_of

            der = pkcs7_der(current)
            kind = content_type_of(der)
            if kind == "signed_data":
                if encryption_only and seen_encryption:
                    break
                try:
                    result = _mail(verify_signed_data(
                        der, extra_certs=extra_certs, allow_legacy=allow_legacy
                    ))
                except (VerificationError, LegacyAlgorithmError) as exc:
                    layers.append(Layer("signed", "application/pkcs7-mime", str(exc), error=exc))
                    unverified = embedded_content(der) if encryption_only else None
                    if unverified is None:
                        break
                    # Decrypting only: go on through the failed outer signature; the
                    # failure stays recorded in the layer for the caller to report.
                    current = Entity.parse(to_crlf(unverified))
                    continue
                layers.append(
                    Layer("signed", "application/pkcs7-mime", _signers(result), signed=result)
                )
                current = Entity.parse(to_crlf(result.content))
                covered = True
            elif kind in ENCRYPTED_TYPES:
                current = _decrypt(der, keys, allow_legacy, layers)
            else:
                raise MIMEError(f"application/pkcs7-mime carries an unexpected CMS type {kind}")
        elif current.content_type == "message/rfc822" and layers:
            # A whole message wrapped inside the protection (RFC 8551 3.7, header protection).
            inner = Entity.parse(bytes(current.body_view))
            inner_headers = inner.outer_headers
            current = wrapped_inner = inner
        else:
            break
    else:
        raise MIMEError(f"more than {MAX_LAYERS} nested S/MIME layers")
    if covered and _names_sender(current):
        signed_headers = current.outer_headers

    partially_signed = False
    if (
        not any(layer.kind == "signed" for layer in layers)
        and not is_multipart_signed(current)
        and not is_pkcs7_mime(current)
    ):
        buried = _buried_smime(current)
        partially_signed = any(kind == "signed" for kind, _ in buried)
        encrypted_parts = [part for kind, part in buried if kind == "encrypted"]
        if encrypted_parts and keys and not layers:
            # Efail: decrypt the buried part alone; never splice it into the plain siblings.
            current = _decrypt(pkcs7_der(encrypted_parts[0]), keys, allow_legacy, layers)
            partial_encrypted = True
    restored = None
    if layers and not partial_encrypted and not any(layer.error for layer in layers):
        restored = _restore(root, current, layers, covered, current is wrapped_inner)
    return Unwrapped(
        root=root,
        entity=current.entity(),
        layers=tuple(layers),
        partially_signed=partially_signed,
        partially_encrypted=partial_encrypted,
        inner_headers=inner_headers,
        signed_headers=signed_headers,
        restored=restored,
    )


def _restore(
    root: Entity, current: Entity, layers: list[Layer], covered: bool, wrapped: bool
) -> Restored | None:
    """Header protection of the Cryptographic Payload ``current`` (see smime/hp_read.py).

    Decrypting only stops at a signature inside the encryption: the protected header fields
    are then read from the signed content (not verified here; the encryption covers them),
    and the signed entity is kept whole for verify.
    """
    encrypted = any(layer.kind == "encrypted" for layer in layers)
    try:
        inside = _signed_content(current) if encrypted else None
    except SmimeError:
        inside = None  # a broken signed entity is verify's to report; decrypt still succeeds
    if inside is None:
        return restore(root, current, encrypted=encrypted, signed=covered, wrapped=wrapped)
    payload, wrapped = inside, False
    if payload.content_type == "message/rfc822":
        payload, wrapped = Entity.parse(bytes(payload.body_view)), True
    return restore(root, payload, encrypted=True, signed=False, wrapped=wrapped,
                   keep_entity=join_entity(current.content_headers, current.body))


def _signed_content(entity: Entity) -> Entity | None:
    """The content of a signed entity, unverified; None when ``entity`` is not signed."""
    if is_multipart_signed(entity):
        return Entity.parse(split_signed(entity).content)
    if is_pkcs7_mime(entity):
        from smimekit.cms.enveloped import content_type_of

        der = pkcs7_der(entity)
        if content_type_of(der) == "signed_data":
            content = embedded_content(der)
            return Entity.parse(to_crlf(content)) if content is not None else None
    return None


def _names_sender(entity: Entity) -> bool:
    return any(h.lname in ("from", "sender") for h in entity.headers)


def _signers(result: SignedDataResult) -> str:
    n = len(result.signers)
    return f"{n} signer" + ("" if n == 1 else "s")


def _decrypt(der: bytes, keys: KeyPairs, allow_legacy: bool, layers: list[Layer]) -> Entity:
    if not keys:
        raise NoRecipientError("the message is encrypted: a private key is needed to open it")
    from smimekit.cms.enveloped import decrypt_enveloped

    out = decrypt_enveloped(der, keys, allow_legacy=allow_legacy)
    layers.append(Layer("encrypted", "application/pkcs7-mime", f"{out.cipher}, {out.recipient}"))
    return Entity.parse(to_crlf(out.content))


def _buried_smime(entity: Entity) -> list[tuple[str, Entity]]:
    """S/MIME parts found anywhere below a non-S/MIME root, as (kind, entity)."""
    found: list[tuple[str, Entity]] = []
    budget = [MAX_WALK_PARTS]

    def walk(ent: Entity, depth: int) -> None:
        if depth > MAX_WALK_DEPTH or budget[0] <= 0:
            return
        budget[0] -= 1
        if is_multipart_signed(ent):
            found.append(("signed", ent))
            return
        if is_pkcs7_mime(ent):
            from smimekit.cms.enveloped import content_type_of

            try:
                kind = content_type_of(pkcs7_der(ent))
            except SmimeError:  # a broken buried part must not hide its siblings
                return
            found.append(("signed" if kind == "signed_data" else "encrypted", ent))
            return
        if ent.content_type.startswith("multipart/"):
            if budget[0] <= 0 or depth >= MAX_WALK_DEPTH:
                return  # the parts would not be walked: do not split or parse them either
            try:
                # Split no more parts than the budget can walk (a million empty ones are 7 MB).
                parts = split_multipart(ent.raw, ent.params.get("boundary", ""), ent.body_offset,
                                        max_parts=budget[0])
            except MIMEError:
                return
            for part in parts:
                if budget[0] <= 0:
                    break
                walk(Entity.parse(part), depth + 1)
        elif ent.content_type == "message/rfc822":
            walk(Entity.parse(bytes(ent.body_view)), depth + 1)

    walk(entity, 0)
    return found

"""The Cryptographic Payload as it travels (RFC 9788): under the encryption and the signature.

``smimekit.decrypt`` and ``verify`` show the protected view (smime/hp_read.py: the protected
fields as the header block, HP-Outer records gone, legacy display removed), so tests about
what the *sending* side wrote read the payload here instead: decrypted at the CMS level and
taken out of the signature without looking at header protection at all.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from smimekit.cms.enveloped import content_type_of, decrypt_enveloped
from smimekit.cms.signed import embedded_content
from smimekit.smime.canonical import Entity, to_crlf
from smimekit.smime.message import is_multipart_signed, is_pkcs7_mime, pkcs7_der, split_signed


def wire_payload(message: bytes, key: PrivateKeyTypes | None = None,
                 cert: x509.Certificate | None = None) -> Entity:
    """The innermost entity of ``message``: every encryption (with ``key``) and signature
    (not verified) layer taken off, message/rfc822 wrappings left alone."""
    entity = Entity.parse(to_crlf(message))
    for _ in range(8):
        if is_multipart_signed(entity):
            entity = Entity.parse(split_signed(entity).content)
        elif is_pkcs7_mime(entity):
            der = pkcs7_der(entity)
            if content_type_of(der) == "signed_data":
                content = embedded_content(der)
                assert content is not None, "detached signed-data in application/pkcs7-mime"
                entity = Entity.parse(to_crlf(content))
            else:
                assert key is not None, "encrypted: a key is needed"
                entity = Entity.parse(to_crlf(decrypt_enveloped(der, [(key, cert)]).content))
        else:
            return entity
    raise AssertionError("more than 8 layers")

"""smimekit: sovereign S/MIME for organisations.

The recipes here are hard to misuse: SHA-256, AES-256-GCM and strict validation by default.

    >>> signed = smimekit.sign(message, key, cert)
    >>> sealed = smimekit.encrypt(signed, [recipient_cert])
    >>> opened = smimekit.decrypt_verify(sealed, key2, cert2, trust=[root])
    >>> opened.verdict.valid
    True

Low-level CMS assembly lives in :mod:`smimekit.cms`; errors in :mod:`smimekit.errors`.
"""

from __future__ import annotations

from smimekit import errors
from smimekit.api import (
    Decrypted,
    Verified,
    decrypt,
    decrypt_verify,
    encrypt,
    sign,
    sign_encrypt,
    verify,
)
from smimekit.cms.algorithms import Cipher, Digest
from smimekit.errors import SmimeError
from smimekit.keys.load import (
    load_certificate,
    load_certificates,
    load_pkcs12,
    load_private_key,
)
from smimekit.validation.intermediates import IntermediateCache
from smimekit.validation.revocation import RevocationOptions, RevocationPolicy
from smimekit.validation.verdict import Verdict

__version__ = "0.1.0"

__all__ = [
    "Cipher",
    "Decrypted",
    "Digest",
    "IntermediateCache",
    "RevocationOptions",
    "RevocationPolicy",
    "SmimeError",
    "Verdict",
    "Verified",
    "decrypt",
    "decrypt_verify",
    "encrypt",
    "errors",
    "load_certificate",
    "load_certificates",
    "load_pkcs12",
    "load_private_key",
    "sign",
    "sign_encrypt",
    "verify",
]

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

from typing import TYPE_CHECKING

from smimekit import errors
from smimekit.errors import SmimeError
from smimekit.lazy_exports import lazy_exports

if TYPE_CHECKING:
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
    from smimekit.directory.resolver import LookupResult, lookup
    from smimekit.keys.load import (
        load_certificate,
        load_certificates,
        load_pkcs12,
        load_private_key,
    )
    from smimekit.smime.hp import HeaderConfidentiality
    from smimekit.smime.hp_read import HeaderProtection
    from smimekit.validation.intermediates import IntermediateCache
    from smimekit.validation.revocation import RevocationOptions, RevocationPolicy
    from smimekit.validation.verdict import Verdict

# Imported on first use (PEP 562): ``import smimekit.errors`` or the CLI's start-up must not
# pay for the whole CMS and validation stack.
_LAZY = {
    "Cipher": "smimekit.cms.algorithms",
    "Decrypted": "smimekit.api",
    "Digest": "smimekit.cms.algorithms",
    "HeaderConfidentiality": "smimekit.smime.hp",
    "HeaderProtection": "smimekit.smime.hp_read",
    "IntermediateCache": "smimekit.validation.intermediates",
    "LookupResult": "smimekit.directory.resolver",
    "RevocationOptions": "smimekit.validation.revocation",
    "RevocationPolicy": "smimekit.validation.revocation",
    "Verdict": "smimekit.validation.verdict",
    "Verified": "smimekit.api",
    "decrypt": "smimekit.api",
    "decrypt_verify": "smimekit.api",
    "encrypt": "smimekit.api",
    "load_certificate": "smimekit.keys.load",
    "load_certificates": "smimekit.keys.load",
    "load_pkcs12": "smimekit.keys.load",
    "load_private_key": "smimekit.keys.load",
    "lookup": "smimekit.directory.resolver",
    "sign": "smimekit.api",
    "sign_encrypt": "smimekit.api",
    "verify": "smimekit.api",
}

__version__ = "0.1.0"

__all__ = [
    "Cipher",
    "Decrypted",
    "Digest",
    "HeaderConfidentiality",
    "HeaderProtection",
    "IntermediateCache",
    "LookupResult",
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
    "lookup",
    "sign",
    "sign_encrypt",
    "verify",
]


__getattr__, __dir__ = lazy_exports(globals(), __name__, _LAZY, __all__)

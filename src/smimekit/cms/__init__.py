"""Low-level CMS (RFC 5652): pure functions over DER/BER bytes. Sharp tools live here.

This layer knows nothing of MIME, trust or policy: :func:`verify_signed_data` checks that
the signatures and signed attributes are intact, not that the signer deserves trust. Use the
recipes in :mod:`smimekit` (``sign``, ``verify``, ``encrypt``, ``decrypt``) unless you are
assembling CMS structures yourself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from smimekit.cms import asn1 as _asn1  # noqa: F401  (registers OIDs)
from smimekit.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from smimekit.cms.algorithms import Cipher, Digest
    from smimekit.cms.enveloped import (
        DecryptedContent,
        decrypt_enveloped,
        encrypt_enveloped,
    )
    from smimekit.cms.recipients import RecipientOptions
    from smimekit.cms.signed import (
        SignedDataResult,
        SignerResult,
        SignerSpec,
        sign_data,
        verify_signed_data,
    )

# Imported on first use (PEP 562): verifying needs signed.py, not the enveloped-data stack.
_LAZY = {
    "Cipher": "smimekit.cms.algorithms",
    "DecryptedContent": "smimekit.cms.enveloped",
    "Digest": "smimekit.cms.algorithms",
    "RecipientOptions": "smimekit.cms.recipients",
    "SignedDataResult": "smimekit.cms.signed",
    "SignerResult": "smimekit.cms.signed",
    "SignerSpec": "smimekit.cms.signed",
    "decrypt_enveloped": "smimekit.cms.enveloped",
    "encrypt_enveloped": "smimekit.cms.enveloped",
    "sign_data": "smimekit.cms.signed",
    "verify_signed_data": "smimekit.cms.signed",
}

__all__ = [
    "Cipher",
    "DecryptedContent",
    "Digest",
    "RecipientOptions",
    "SignedDataResult",
    "SignerResult",
    "SignerSpec",
    "decrypt_enveloped",
    "encrypt_enveloped",
    "sign_data",
    "verify_signed_data",
]


__getattr__, __dir__ = lazy_exports(globals(), __name__, _LAZY, __all__)

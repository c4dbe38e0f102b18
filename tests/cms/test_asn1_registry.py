"""smimekit.cms.asn1 adds algorithm names to asn1crypto's OID maps: the names work even when
asn1crypto had already built its name -> OID map before the import (a fresh interpreter,
since the map is built once per class)."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
from asn1crypto import algos
algos.EncryptionAlgorithm({"algorithm": "aes256_cbc"})  # asn1crypto builds its reverse map
algos.SignedDigestAlgorithm({"algorithm": "sha256_rsa"})
import smimekit.cms.asn1  # noqa: F401  then our names are added
print(algos.EncryptionAlgorithm({"algorithm": "chacha20_poly1305"}).dump().hex())
print(algos.SignedDigestAlgorithm({"algorithm": "ml_dsa_65"}).dump().hex())
print(algos.EncryptionAlgorithm({"algorithm": "aes256_cbc"}).dump().hex())
"""


def test_names_registered_after_asn1crypto_built_its_map() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, check=True,
                         text=True).stdout.split()
    assert out == [
        "300d060b2a864886f70d0109100312",  # 1.2.840.113549.1.9.16.3.18 (RFC 8103)
        "300b0609608648016503040312",  # 2.16.840.1.101.3.4.3.18 (ML-DSA-65)
        "300b060960864801650304012a",  # 2.16.840.1.101.3.4.1.42 (AES-256-CBC)
    ]

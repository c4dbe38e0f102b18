"""Keys and certificates: loading (and later generation, protection at rest, PKCS#11)."""

from __future__ import annotations

from smimekit.keys.load import (
    load_certificate,
    load_certificates,
    load_pkcs12,
    load_private_key,
)

__all__ = ["load_certificate", "load_certificates", "load_pkcs12", "load_private_key"]

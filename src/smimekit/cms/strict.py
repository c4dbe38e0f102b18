"""Structural checks on the parts of a CMS message that no signature or tag covers.

asn1crypto parses leniently and lazily, and the fields below are never used for the
cryptography, so a changed byte in them would pass unnoticed: a message would be malleable.
These checks make any such change an error (RFC 5652 section 5.1/6.1 version rules, RFC 5083
section 2.1, DER encoding of the unprotected fields).
"""

from __future__ import annotations

from typing import Any

from asn1crypto import algos, core

from smimekit.cms import kem
from smimekit.errors import ASN1Error

_NULL_PARAMS = (b"", b"\x05\x00")


def _same_encoding(value: Any, what: str) -> None:
    """The field re-encodes to the bytes it was parsed from (no lenient parse hid a change)."""
    if isinstance(value, core.Void):
        return
    original = value.dump()
    # The same bytes parsed as the same type always give the same answer, and most of these
    # fields (versions, algorithm identifiers, our own signer ids) repeat from message to
    # message: remember the answer instead of re-encoding every time.
    key = (type(value), value.explicit, value.implicit, original)
    verdict = _VERDICTS.get(key)
    if verdict is None:
        verdict = _reencode_problem(value, original)
        if len(_VERDICTS) >= _MAX_VERDICTS:
            _VERDICTS.clear()
        _VERDICTS[key] = verdict
    if verdict:
        raise ASN1Error(f"malformed {what}: {verdict}")


_VERDICTS: dict[tuple[Any, ...], str] = {}
_MAX_VERDICTS = 4096


def _reencode_problem(value: Any, original: bytes) -> str:
    """'' when ``value`` re-encodes to ``original``, else what is wrong."""
    try:
        # On a copy: dump(force=True) replaces the cached encoding of the value it runs on.
        again = value.copy().dump(force=True)
    except UnicodeError:
        # asn1crypto cannot re-encode some legacy strings (TeletexString with 8-bit text);
        # such fields are compared byte for byte where they matter (issuer names).
        return ""
    except (ValueError, TypeError):
        return "a field has the wrong type or tag"
    return "" if again == original else "not a valid DER encoding"


def _params_null_or_absent(alg: Any, what: str) -> None:
    params = alg["parameters"]
    raw = b"" if isinstance(params, core.Void) else params.dump()
    if raw not in _NULL_PARAMS:
        raise ASN1Error(f"malformed {what}: parameters must be absent or NULL")


def signed_data(sd: Any) -> None:
    """SignedData fields outside the signatures (RFC 5652 section 5)."""
    _same_encoding(sd["version"], "SignedData version")
    _same_encoding(sd["digest_algorithms"], "SignedData digestAlgorithms")
    declared = set()
    for alg in sd["digest_algorithms"]:
        _params_null_or_absent(alg, "SignedData digest algorithm")
        declared.add(alg["algorithm"].native)
    v3_signer = False
    for si in sd["signer_infos"]:
        for name in ("version", "sid", "digest_algorithm", "signature_algorithm", "signature"):
            _same_encoding(si[name], f"SignerInfo {name.replace('_', ' ')}")
        _params_null_or_absent(si["digest_algorithm"], "SignerInfo digest algorithm")
        if si["signature_algorithm"]["algorithm"].native != "rsassa_pss":
            _params_null_or_absent(si["signature_algorithm"], "SignerInfo signature algorithm")
        by_ski = si["sid"].name == "subject_key_identifier"
        v3_signer |= by_ski
        if si["version"].native != ("v3" if by_ski else "v1"):
            raise ASN1Error("malformed SignerInfo: its version does not fit its signer identifier")
        if si["digest_algorithm"]["algorithm"].native not in declared:
            raise ASN1Error("malformed SignedData: a signer's digest is not in digestAlgorithms")
    econtent_type = sd["encap_content_info"]["content_type"].native
    other_certs = any(c.name != "certificate" for c in (sd["certificates"] or []))
    minimum = "v3" if v3_signer or econtent_type != "data" else "v1"
    # RFC 5652 5.1 gives versions 4/5 for attribute/other certificates and CRLs.
    allowed = {minimum, "v4", "v5"} if other_certs else {minimum}
    if sd["version"].native not in allowed:
        raise ASN1Error(
            f"malformed SignedData: version {sd['version'].native} where {minimum} is required"
        )


def enveloped(body: Any, authenticated: bool) -> None:
    """(Auth)EnvelopedData fields outside the tag (RFC 5652 section 6, RFC 5083)."""
    _same_encoding(body["version"], "EnvelopedData version")
    _same_encoding(body["recipient_infos"], "RecipientInfos")
    for info in body["recipient_infos"]:
        if info.name == "ori":
            continue  # checked below (KEMRecipientInfo) or not ours to read
        for name in ("version", "key_encryption_algorithm"):
            _same_encoding(info.chosen[name], f"RecipientInfo {name.replace('_', ' ')}")
    if authenticated and body["version"].native != "v0":
        raise ASN1Error("malformed AuthEnvelopedData: version must be 0")
    has_ori = any(info.name == "ori" for info in body["recipient_infos"])
    if has_ori and not authenticated and body["version"].native != "v3":
        # RFC 5652 6.1: an OtherRecipientInfo requires version 3.
        raise ASN1Error("malformed EnvelopedData: version must be 3 with an ori recipient")
    for info in body["recipient_infos"]:
        chosen = info.chosen
        if info.name == "ktri":
            for name in ("rid", "encrypted_key"):
                _same_encoding(chosen[name], f"KeyTransRecipientInfo {name.replace('_', ' ')}")
            by_ski = chosen["rid"].name == "subject_key_identifier"
            if chosen["version"].native != ("v2" if by_ski else "v0"):
                raise ASN1Error("malformed KeyTransRecipientInfo: version does not fit its rid")
            alg = chosen["key_encryption_algorithm"]
            if alg["algorithm"].native in ("rsaes_pkcs1v15", "rsa"):
                _params_null_or_absent(alg, "RSA key transport")
            elif alg["algorithm"].native == "rsaes_oaep":
                params = alg["parameters"]
                _params_null_or_absent(params["hash_algorithm"], "OAEP hash")
                _params_null_or_absent(params["mask_gen_algorithm"]["parameters"], "OAEP MGF hash")
        elif kem.is_kem_info(info):
            kemri = kem.parse(info)
            _same_encoding(kemri, "KEMRecipientInfo")
            if kemri["version"].native != 0:
                raise ASN1Error("malformed KEMRecipientInfo: version must be 0")
        elif info.name == "kari":
            if chosen["version"].native != "v3":
                raise ASN1Error("malformed KeyAgreeRecipientInfo: version must be 3")
            for name in ("originator", "ukm", "recipient_encrypted_keys"):
                _same_encoding(chosen[name], f"KeyAgreeRecipientInfo {name.replace('_', ' ')}")
            # The key-wrap algorithm sits in an ANY: parse it to check its encoding too.
            params = chosen["key_encryption_algorithm"]["parameters"]
            if not isinstance(params, core.Void):
                wrap = algos.AlgorithmIdentifier.load(params.dump())
                _same_encoding(wrap, "key-wrap algorithm")
                _params_null_or_absent(wrap, "key-wrap algorithm")
    eci = body["auth_encrypted_content_info" if authenticated else "encrypted_content_info"]
    _same_encoding(eci["content_type"], "EncryptedContentInfo content type")
    _same_encoding(eci["content_encryption_algorithm"], "content-encryption algorithm")
    if authenticated:
        _same_encoding(body["mac"], "AuthEnvelopedData mac")
        no_auth_attrs = isinstance(body["auth_attrs"], core.Void)
        # RFC 5083 section 2.1: authAttrs MUST be present when the content type is not data;
        # without them the content type is unauthenticated and must be data.
        if no_auth_attrs and eci["content_type"].native != "data":
            raise ASN1Error(
                "malformed AuthEnvelopedData: content type is not data and no"
                " authenticated attributes protect it"
            )

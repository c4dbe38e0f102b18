"""Chain building and the S/MIME checks on the end entity."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pki import NOW, PKI, _name, ca_cert, new_key

from smimekit.validation.path import Purpose, usage_problems, validate


def test_chain_through_the_intermediate(pki: PKI) -> None:
    who = pki.person("v-chain", "p256")
    result = validate(who.cert, intermediates=[pki.inter], anchors=[pki.root])
    assert result.ok
    assert result.chain == (who.cert, pki.inter, pki.root)


def test_missing_intermediate_means_no_path(pki: PKI) -> None:
    who = pki.person("v-chain", "p256")
    result = validate(who.cert, anchors=[pki.root])
    assert not result.trusted
    assert "no chain to a trust anchor" in result.reasons[0]


def test_no_anchors_is_never_trusted(pki: PKI) -> None:
    who = pki.person("v-chain", "p256")
    assert validate(who.cert, intermediates=[pki.inter], anchors=[]).reasons == (
        "no trust anchors were given",)


def test_expired_and_not_yet_valid(pki: PKI) -> None:
    who = pki.person("v-dates", "p256")
    later = validate(who.cert, intermediates=[pki.inter], anchors=[pki.root],
                     at=NOW + dt.timedelta(days=400))
    assert any("expired" in r for r in later.reasons)
    earlier = validate(who.cert, intermediates=[pki.inter], anchors=[pki.root],
                       at=NOW - dt.timedelta(days=10))
    assert any("not valid before" in r for r in earlier.reasons)


def test_wrong_eku_fails(pki: PKI) -> None:
    who = pki.person("v-eku", "p256", eku=[ExtendedKeyUsageOID.SERVER_AUTH])
    result = validate(who.cert, intermediates=[pki.inter], anchors=[pki.root])
    assert result.trusted and not result.key_usage_ok
    assert "emailProtection" in result.usage_reasons[0]


def test_no_eku_and_any_eku_are_accepted(pki: PKI) -> None:
    assert not usage_problems(pki.person("v-noeku", "p256", eku=None).cert, Purpose.SIGN)
    anyeku = pki.person("v-anyeku", "p256", eku=[ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE])
    assert not usage_problems(anyeku.cert, Purpose.SIGN)


def test_key_usage_must_fit_the_operation(pki: PKI) -> None:
    enc_only = pki.person("v-enc", "rsa2048", key_usage="encrypt")
    assert usage_problems(enc_only.cert, Purpose.SIGN)
    assert not usage_problems(enc_only.cert, Purpose.ENCRYPT)
    sign_only = pki.person("v-sign", "p256", key_usage="sign")
    assert "keyAgreement" in usage_problems(sign_only.cert, Purpose.ENCRYPT)[0]


def test_short_rsa_keys_are_refused_unless_legacy(pki: PKI) -> None:
    weak = pki.person("v-weak", "rsa1024", fresh_key=True)
    strict = validate(weak.cert, intermediates=[pki.inter], anchors=[pki.root])
    assert any("1024-bit" in r for r in strict.reasons)
    assert validate(weak.cert, intermediates=[pki.inter], anchors=[pki.root],
                    allow_legacy=True).trusted


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl makes the SHA-1 cert")
def test_sha1_signed_certificates_are_refused_unless_legacy(tmp_path) -> None:
    # cryptography refuses to create SHA-1 signatures, so OpenSSL makes the certificate.
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha1",
                    "-keyout", tmp_path / "k.pem", "-out", tmp_path / "c.pem", "-days", "30",
                    "-subj", "/CN=sha1 root", "-addext", "basicConstraints=critical,CA:TRUE"],
                   check=True, capture_output=True)
    cert = x509.load_pem_x509_certificate((tmp_path / "c.pem").read_bytes())
    strict = validate(cert, anchors=[cert], purpose=Purpose.SIGN)
    assert strict.trusted  # an anchor's own signature is not relied upon
    subprocess.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    tmp_path / "ek.pem", "-out", tmp_path / "e.csr", "-subj", "/CN=sha1 ee"],
                   check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-sha1", "-in", tmp_path / "e.csr", "-CA",
                    tmp_path / "c.pem", "-CAkey", tmp_path / "k.pem", "-CAcreateserial",
                    "-out", tmp_path / "e.pem", "-days", "30"], check=True, capture_output=True)
    ee = x509.load_pem_x509_certificate((tmp_path / "e.pem").read_bytes())
    refused = validate(ee, anchors=[cert])
    assert not refused.trusted
    assert validate(ee, anchors=[cert], allow_legacy=True).trusted


def test_end_entity_cannot_act_as_a_ca(pki: PKI) -> None:
    fake_ca = pki.person("v-fakeca", "p256")
    victim = pki.person("v-victim", "p256", issuer=(fake_ca.key, fake_ca.cert))  # type: ignore[arg-type]
    result = validate(victim.cert, intermediates=[fake_ca.cert, pki.inter], anchors=[pki.root])
    assert not result.trusted
    assert any("not one" in r or "keyCertSign" in r for r in result.reasons)


def test_cross_certified_paths_pick_the_valid_candidate(pki: PKI) -> None:
    """Two CAs with the same name and key: one expired cross-certificate, one good."""
    other_root_key = new_key("rsa2048#other-root")
    other_root = ca_cert(other_root_key, _name("Other Root"), other_root_key, _name("Other Root"))
    expired_cross = ca_cert(pki.inter_key, pki.inter.subject, other_root_key, other_root.subject,
                            not_after=NOW - dt.timedelta(days=1))
    who = pki.person("v-cross", "p256")
    result = validate(who.cert, intermediates=[expired_cross, pki.inter],
                      anchors=[other_root, pki.root])
    assert result.ok
    assert result.chain[-1] == pki.root
    only_expired = validate(who.cert, intermediates=[expired_cross], anchors=[other_root])
    assert any("expired" in r for r in only_expired.reasons)


def test_ca_with_eku_excluding_email_breaks_the_chain(pki: PKI) -> None:
    key = new_key("p256#tls-ca")
    tls_ca = ca_cert(key, _name("TLS only CA"), pki.root_key, pki.root.subject,
                     eku=[ExtendedKeyUsageOID.SERVER_AUTH])
    who = pki.person("v-tlsca", "p256", issuer=(key, tls_ca))  # type: ignore[arg-type]
    result = validate(who.cert, intermediates=[tls_ca], anchors=[pki.root])
    assert any("excludes emailProtection" in r for r in result.reasons)


@pytest.mark.parametrize("purpose", list(Purpose))
def test_ed25519_and_x25519_chains(pki: PKI, purpose: Purpose) -> None:
    kind = "ed25519" if purpose is Purpose.SIGN else "x25519"
    who = pki.person(f"v-{kind}", kind)
    assert validate(who.cert, intermediates=[pki.inter], anchors=[pki.root],
                    purpose=purpose).ok


def test_anchor_given_as_the_end_entity_itself(pki: PKI) -> None:
    who = pki.person("v-self", "p256")
    assert validate(who.cert, anchors=[who.cert]).ok
    _ = x509


# -- RFC 5280 section 6.1 beyond the basics --------------------------------------------------

P1 = x509.ObjectIdentifier("1.3.6.1.4.1.55555.1")
P2 = x509.ObjectIdentifier("1.3.6.1.4.1.55555.2")


def _cert(cn: str, key, issuer_key, issuer: x509.Name, *, ca: bool,
          extensions: tuple = (), emails: tuple[str, ...] = (), subject: x509.Name | None = None,
          days: int = 365) -> x509.Certificate:
    """A certificate with exactly the extensions a test needs (plus basicConstraints)."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject if subject is not None else _name(cn))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if emails:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name(e) for e in emails]), False)
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical)
    return builder.sign(issuer_key, hashes.SHA256())


def _constrained_ca(pki: PKI, nc: x509.NameConstraints, cn: str = "Constrained CA"):
    key = new_key(f"p256#{cn}")
    return key, _cert(cn, key, pki.root_key, pki.root.subject, ca=True,
                      extensions=((nc, True),))


def _ee(ca_key, ca: x509.Certificate, cn: str, *emails: str, subject: x509.Name | None = None,
        extensions: tuple = ()) -> x509.Certificate:
    return _cert(cn, new_key(f"p256#{cn}"), ca_key, ca.subject, ca=False, emails=emails,
                 subject=subject, extensions=extensions)


@pytest.mark.parametrize(("constraint", "address", "inside"), [
    ("example.org", "alice@example.org", True),          # host: every mailbox on it
    ("example.org", "alice@mail.example.org", False),    # ... but not below it
    (".example.org", "alice@mail.example.org", True),    # domain: every host below it
    (".example.org", "alice@example.org", False),        # ... but not the domain itself
    ("alice@example.org", "alice@example.org", True),    # one mailbox
    ("alice@example.org", "bob@example.org", False),
    ("alice@example.org", "Alice@example.org", False),   # the local part is case-sensitive
    ("Example.ORG", "alice@example.org", True),          # the host part is not
])
def test_rfc822_permitted_subtree_forms(pki: PKI, constraint: str, address: str,
                                        inside: bool) -> None:
    nc = x509.NameConstraints(permitted_subtrees=[x509.RFC822Name(constraint)],
                              excluded_subtrees=None)
    ca_key, ca = _constrained_ca(pki, nc)
    leaf = _ee(ca_key, ca, "nc-leaf", address)
    result = validate(leaf, intermediates=[ca], anchors=[pki.root])
    assert result.trusted is inside, result.reasons
    if not inside:
        assert "outside the permitted subtrees" in result.reasons[0]


def test_rfc822_excluded_subtree_rejects_one_mailbox(pki: PKI) -> None:
    nc = x509.NameConstraints(permitted_subtrees=None,
                              excluded_subtrees=[x509.RFC822Name("ceo@example.org")])
    ca_key, ca = _constrained_ca(pki, nc, "Excluding CA")
    assert validate(_ee(ca_key, ca, "staff", "staff@example.org"), intermediates=[ca],
                    anchors=[pki.root]).trusted
    result = validate(_ee(ca_key, ca, "ceo", "ceo@example.org"), intermediates=[ca],
                      anchors=[pki.root])
    assert "excluded subtree" in result.reasons[0]


def test_email_address_in_the_subject_dn_is_constrained_too(pki: PKI) -> None:
    """RFC 5280 4.2.1.10: the legacy emailAddress attribute is an rfc822Name."""
    nc = x509.NameConstraints(permitted_subtrees=[x509.RFC822Name("example.org")],
                              excluded_subtrees=None)
    ca_key, ca = _constrained_ca(pki, nc, "DN mail CA")
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dn-mail"),
                         x509.NameAttribute(NameOID.EMAIL_ADDRESS, "someone@elsewhere.net")])
    leaf = _ee(ca_key, ca, "dn-mail", "someone@example.org", subject=subject)
    result = validate(leaf, intermediates=[ca], anchors=[pki.root])
    assert any("someone@elsewhere.net" in r for r in result.reasons)


@pytest.mark.parametrize(("mailbox", "inside"), [("jöran@example.org", True),
                                                ("jöran@elsewhere.net", False)])
def test_smtputf8_mailbox_is_constrained_as_rfc822(pki: PKI, mailbox: str, inside: bool) -> None:
    """RFC 9598 section 6: rfc822Name constraints govern SmtpUTF8Mailbox names too."""
    nc = x509.NameConstraints(permitted_subtrees=[x509.RFC822Name("example.org")],
                              excluded_subtrees=None)
    ca_key, ca = _constrained_ca(pki, nc, "UTF8 mail CA")
    utf8 = mailbox.encode()
    other = x509.OtherName(x509.ObjectIdentifier("1.3.6.1.5.5.7.8.9"),
                           b"\x0c" + bytes([len(utf8)]) + utf8)
    leaf = _ee(ca_key, ca, f"utf8-{inside}",
               extensions=((x509.SubjectAlternativeName([other]), False),))
    assert validate(leaf, intermediates=[ca], anchors=[pki.root]).trusted is inside


def test_directory_name_constraints_apply_to_the_subject(pki: PKI) -> None:
    allowed = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "smimekit tests")])
    nc = x509.NameConstraints(permitted_subtrees=[x509.DirectoryName(allowed)],
                              excluded_subtrees=None)
    ca_key, ca = _constrained_ca(pki, nc, "DN CA")
    inside = _ee(ca_key, ca, "dn-inside", "x@example.org")  # O=smimekit tests, CN=...
    assert validate(inside, intermediates=[ca], anchors=[pki.root]).trusted
    outside = _ee(ca_key, ca, "dn-outside", "x@example.org",
                  subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dn-outside")]))
    assert not validate(outside, intermediates=[ca], anchors=[pki.root]).trusted


def _policy_chain(pki: PKI, leaf_policy: x509.ObjectIdentifier):
    policies = x509.CertificatePolicies([x509.PolicyInformation(P1, None)])
    key = new_key("p256#policy-ca")
    ca = _cert("Policy CA", key, pki.root_key, pki.root.subject, ca=True,
               extensions=((policies, False),))
    leaf = _ee(key, ca, f"policy-leaf-{leaf_policy.dotted_string}", "p@example.org",
               extensions=((x509.CertificatePolicies([x509.PolicyInformation(leaf_policy, None)]),
                            False),))
    return ca, leaf


def test_policies_by_default_any_policy_is_acceptable(pki: PKI) -> None:
    ca, leaf = _policy_chain(pki, P1)
    result = validate(leaf, intermediates=[ca], anchors=[pki.root])
    assert result.trusted and result.policies == (P1.dotted_string,)


def test_explicit_policy_requires_one_of_the_initial_policies(pki: PKI) -> None:
    ca, leaf = _policy_chain(pki, P1)
    wanted = validate(leaf, intermediates=[ca], anchors=[pki.root],
                      initial_policies=[P1], require_explicit_policy=True)
    assert wanted.trusted and wanted.policies == (P1.dotted_string,)
    other = validate(leaf, intermediates=[ca], anchors=[pki.root],
                     initial_policies=[P2.dotted_string], require_explicit_policy=True)
    assert not other.trusted and "explicit policy" in other.reasons[0]
    assert validate(leaf, intermediates=[ca], anchors=[pki.root],
                    initial_policies=[P2]).trusted  # not required: the path stays valid


def test_a_policy_the_ca_does_not_allow_is_dropped(pki: PKI) -> None:
    ca, leaf = _policy_chain(pki, P2)  # the CA asserts P1 only
    result = validate(leaf, intermediates=[ca], anchors=[pki.root])
    assert result.trusted and result.policies == ()
    assert not validate(leaf, intermediates=[ca], anchors=[pki.root],
                        require_explicit_policy=True).trusted


def test_unknown_critical_extension_rejects_the_certificate(pki: PKI) -> None:
    odd = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.99"), b"\x05\x00")
    leaf = _ee(pki.inter_key, pki.inter, "odd-critical", "o@example.org",
               extensions=((odd, True),))
    result = validate(leaf, intermediates=[pki.inter], anchors=[pki.root])
    assert "unrecognised critical extension 1.3.6.1.4.1.55555.99" in result.reasons[0]
    tame = _ee(pki.inter_key, pki.inter, "odd-noncritical", "o@example.org",
               extensions=((odd, False),))
    assert validate(tame, intermediates=[pki.inter], anchors=[pki.root]).trusted


def test_issuer_source_supplies_a_missing_intermediate_once(pki: PKI) -> None:
    who = pki.person("v-aia", "p256")
    asked: list[x509.Certificate] = []

    def fetch(cert: x509.Certificate) -> list[x509.Certificate]:
        asked.append(cert)
        return [pki.inter]

    result = validate(who.cert, anchors=[pki.root], issuer_source=fetch)
    assert result.ok and result.chain == (who.cert, pki.inter, pki.root)
    assert asked == [who.cert]


def test_max_intermediates_caps_the_path(pki: PKI) -> None:
    who = pki.person("v-depth", "p256")
    assert validate(who.cert, intermediates=[pki.inter], anchors=[pki.root],
                    max_intermediates=1).trusted
    capped = validate(who.cert, intermediates=[pki.inter], anchors=[pki.root],
                      max_intermediates=0)
    assert "more than 0" in capped.reasons[0]


def test_cached_chain_results_do_not_leak_dates_or_legacy(pki: PKI) -> None:
    weak = pki.person("v-cache", "rsa1024", fresh_key=True)
    args = {"intermediates": [pki.inter], "anchors": [pki.root]}
    assert not validate(weak.cert, **args).trusted
    assert validate(weak.cert, allow_legacy=True, **args).trusted
    assert not validate(weak.cert, allow_legacy=True, at=NOW + dt.timedelta(days=400),
                        **args).trusted
    assert validate(weak.cert, allow_legacy=True, at=NOW, **args).trusted


def test_pathological_bundle_gives_up_quickly(pki: PKI) -> None:
    """Thirty CAs of one name, each certifying the next, none trusted: every one is a
    candidate issuer of every other, so the search runs on a budget (Go's pathological
    chains, x509-limbo ``pathological::*``)."""
    name = _name("Loop CA")
    keys = [new_key(f"p256#loop{i}") for i in range(30)]
    loop = [_cert("Loop CA", keys[0], keys[0], name, ca=True)]
    for i in range(1, 30):
        loop.append(_cert("Loop CA", keys[i], keys[i - 1], name, ca=True))
    leaf = _ee(keys[-1], loop[-1], "loop-leaf", "l@example.org")
    result = validate(leaf, intermediates=loop, anchors=[pki.root])
    assert not result.trusted
    assert any("gave up" in r for r in result.reasons)


# -- RFC 9216: the LAMPS example CAs are cross-certified --------------------------------------

RFC9216_AT = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
RFC9216_EE = {  # end entity -> (its own root, the other root, the cross certificate needed)
    **{f"{who}.{use}.crt": ("ca.rsa.crt", "ca.25519.crt", "ca.rsa.cross.crt")
       for who in ("alice", "bob") for use in ("sign", "encrypt")},
    **{f"{who}.{use}.crt": ("ca.25519.crt", "ca.rsa.crt", "ca.25519.cross.crt")
       for who in ("carlos", "dana") for use in ("sign", "encrypt")},
}


def _rfc9216(name: str) -> x509.Certificate:
    from corpus.vectors import crypto_cert

    return crypto_cert("rfc9216-smime-example-keys", "pem", name)


@pytest.mark.parametrize("ee", sorted(RFC9216_EE))
def test_rfc9216_end_entity_chains_to_the_other_root_through_the_cross_cert(ee: str) -> None:
    own, other, cross = RFC9216_EE[ee]
    leaf = _rfc9216(ee)
    purpose = Purpose.SIGN if ".sign." in ee else Purpose.ENCRYPT
    direct = validate(leaf, anchors=[_rfc9216(own)], at=RFC9216_AT, purpose=purpose)
    assert direct.ok and direct.chain == (leaf, _rfc9216(own)), direct.reasons
    crossed = validate(leaf, intermediates=[_rfc9216(cross)], anchors=[_rfc9216(other)],
                       at=RFC9216_AT, purpose=purpose)
    assert crossed.ok, crossed.reasons
    assert crossed.chain == (leaf, _rfc9216(cross), _rfc9216(other))
    missing = validate(leaf, anchors=[_rfc9216(other)], at=RFC9216_AT, purpose=purpose)
    assert not missing.trusted and "no chain to a trust anchor" in missing.reasons[0]
    both = validate(leaf, intermediates=[_rfc9216("ca.rsa.cross.crt"),
                                         _rfc9216("ca.25519.cross.crt")],
                    anchors=[_rfc9216("ca.rsa.crt"), _rfc9216("ca.25519.crt")],
                    at=RFC9216_AT, purpose=purpose)
    assert both.ok and both.chain == (leaf, _rfc9216(own))  # the shortest path wins

"""x509-limbo: which testcases apply to S/MIME-style client path validation, and why not.

Every testcase id of both limbo files in ``x509-limbo`` has a row (a test checks it). A row
either runs the case through :func:`smimekit.validation.path.validate` (and, for ``crl::``
cases, :func:`smimekit.validation.revocation.check_chain` with the case's CRLs) and holds it
to limbo's ``expected_result``, or is skipped with the reason it does not apply.

What runs: chain building (cross-signed, cycles, pathological bundles), validity,
basicConstraints and path length, key usage of CAs, name constraints of every form
(rfc822Name, dNSName, iPAddress, directoryName, otherName), unknown critical extensions,
malformed and duplicate extensions, key and signature algorithm strength, revocation.

What does not: a TLS server's peer-name check (SAN/CN against a DNS name or IP), TLS EKU
semantics, CA/Browser Forum *TLS* profile rules, and RFC 5280 section 4 issuance rules
("conforming CAs MUST") that section 6 path validation does not check, where another test
suite (PKITS) or the S/MIME Baseline Requirements take the other side.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Decision:
    skip: str | None = None
    """Why the case does not apply to S/MIME client validation (None: it runs)."""
    check: str = "trusted"
    """``trusted`` (the chain) or ``ok`` (the chain and the end entity's EKU/key usage)."""
    revocation: bool = False
    """Also check the case's CRLs (HARD policy: a certificate needs a usable CRL)."""
    xfail: str | None = None
    """A known gap outside path.py (non-strict: a fix shows up as XPASS)."""


RUN = Decision()
RUN_OK = Decision(check="ok")
REVOCATION = Decision(revocation=True)

PEER_NAME = Decision(
    "server-only: matches the TLS peer name (DNS name or IP) against the SAN/CN; S/MIME binds"
    " the From address instead (assess.py), and a DNS or IP SAN plays no part in it"
)
TLS_EKU = Decision(
    "server-only: TLS EKU semantics (serverAuth expected, CABF TLS EKU rules); for S/MIME the"
    " end entity needs emailProtection or no EKU (tests/validation/test_path.py)"
)
TLS_CHAIN = Decision(
    "a real TLS chain: its issuing CA's EKU (serverAuth/clientAuth) excludes emailProtection,"
    " so under RFC 8550 / CABF S/MIME BR 7.1.2.2 it cannot vouch for mail; SUCCESS is the TLS"
    " verdict"
)
KEY_IDS = Decision(
    "CA-profile rule (RFC 5280 4.2.1.1/4.2.1.2: conforming CAs MUST include AKI/SKI); key"
    " identifiers only help path building, RFC 5280 section 6 does not require them, and"
    " smimekit builds paths without them"
)
SERIAL = Decision(
    "pedantic serial-number rule: NIST PKITS 4.4.14 and 4.4.16-17 require negative and"
    " 20-octet serial numbers to validate (RFC 5280 4.1.2.2: handle them gracefully)"
)
BC_NONCRITICAL = Decision(
    "criticality is a CA-profile rule: NIST PKITS 4.6.4 (Valid basicConstraints Not Critical)"
    " requires a non-critical basicConstraints to be accepted and processed"
)
NC_NONCRITICAL = Decision(
    "conflicts with webpki::nc::permitted-dns-match-noncritical, which smimekit follows: the"
    " CABF S/MIME BR (7.1.2.2) let nameConstraints be non-critical, and it is processed"
)
PC_NONCRITICAL = Decision(
    "criticality is a CA-profile rule (RFC 5280 4.2.1.11); a non-critical policyConstraints"
    " is processed all the same, which only makes validation stricter"
)
SAN_CRITICAL = Decision(
    "CA-profile rule (RFC 5280 4.2.1.6: SAN critical when the subject is empty); the SAN is"
    " processed either way"
)
DNS_SAN_SYNTAX = Decision(
    "dNSName syntax in the SAN matters to TLS peer-name matching; S/MIME checks a DNS SAN"
    " only against dNSName constraints (where a malformed one fails: nc-permits-invalid-dns-san)"
)
CABF_ROOT_AKI = Decision("CABF TLS profile rule for roots' authorityKeyIdentifier")
RSA_DIV8 = Decision(
    "CABF key-generation rule (modulus divisible by 8); the relying-party check is the size"
    " floor (RSA >= 2048, EC >= 256 bits), which the forbidden-weak-rsa/p192 cases test"
)
CABF_V3 = Decision("CABF TLS rule (certificates MUST be v3); RFC 5280 allows a v1/v2 end entity")
CA_AS_LEAF = Decision(
    "CABF subscriber-profile rule (cA MUST be false); RFC 5280 allows a CA certificate as the"
    " last certificate of a path, as rfc5280::ca-as-leaf (which runs) says"
)

CASES: dict[str, Decision] = {
    "crl::revoked-certificate-with-crl": REVOCATION,
    "crl::crlnumber-missing": REVOCATION,
    "crl::certificate-not-on-crl": REVOCATION,
    "crl::certificate-serial-on-crl-different-issuer": REVOCATION,
    "crl::crlnumber-critical": REVOCATION,
    "crl::issuer-missing-crlsign": REVOCATION,
    "crl::issuer-no-keyusage-extension": REVOCATION,
    "crl::issuer-valid-crlsign-and-keycertsign": REVOCATION,
    "cve::cve-2024-0567": RUN,
    "cve::cve-2025-61727": RUN,
    "cve::cve-2025-61727-nc-permits-variant": RUN,
    "invalid::invalid-issuer-key": RUN,
    "pathlen::ee-with-intermediate-pathlen-0": RUN,
    "pathlen::ee-with-intermediate-pathlen-1": RUN,
    "pathlen::ee-with-intermediate-pathlen-2": RUN,
    "pathlen::validation-ignores-pathlen-in-leaf": RUN,
    "pathlen::intermediate-violates-pathlen-0": RUN,
    "pathlen::intermediate-pathlen-may-increase": RUN,
    "pathlen::intermediate-pathlen-too-long": RUN,
    "pathlen::self-issued-certs-pathlen": RUN,
    "pathlen::max-chain-depth-0": RUN,
    "pathlen::max-chain-depth-0-exhausted": RUN,
    "pathlen::max-chain-depth-1": RUN,
    "pathlen::max-chain-depth-1-exhausted": RUN,
    "pathlen::max-chain-depth-1-self-issued": RUN,
    "pathological::multiple-chains-expired-intermediate": RUN,
    "pathological::intermediate-cycle-distinct-cas": RUN,
    "pathological::intermediate-cycle-distinct-cas-max-depth": RUN,
    "pathological::intermediate-cycle-same-logical-ca": RUN,
    "pathological::nc-dos-1": RUN,
    "pathological::nc-dos-2": RUN,
    "pathological::nc-dos-3": RUN,
    "pathological::pathological-chain-distinct-subject-distinct-key": RUN,
    "pathological::pathological-chain-same-subject-distinct-key": RUN,
    "pathological::pathological-chain-distinct-subject-same-key": RUN,
    "pathological::pathological-chain-same-subject-same-key": RUN,
    "rfc5280::aki::critical-aki": RUN,
    "rfc5280::aki::leaf-missing-aki": KEY_IDS,
    "rfc5280::aki::intermediate-missing-aki": KEY_IDS,
    "rfc5280::aki::self-signed-root-missing-aki": RUN,
    "rfc5280::aki::cross-signed-root-missing-aki": KEY_IDS,
    "rfc5280::eku::ee-wrong-eku": TLS_EKU,
    "rfc5280::eku::ee-without-eku": RUN_OK,
    "rfc5280::eku::ee-eku-empty": RUN_OK,
    "rfc5280::nc::permitted-dns-mismatch": RUN,
    "rfc5280::nc::excluded-dns-match": RUN,
    "rfc5280::nc::permitted-dns-match": RUN,
    "rfc5280::nc::permitted-dns-match-noncritical": NC_NONCRITICAL,
    "rfc5280::nc::permitted-dns-match-more": RUN,
    "rfc5280::nc::excluded-dns-match-second": RUN,
    "rfc5280::nc::permitted-ip-mismatch": RUN,
    "rfc5280::nc::excluded-ipv4-match": RUN,
    "rfc5280::nc::excluded-ipv6-match": RUN,
    "rfc5280::nc::permitted-ipv4-match": RUN,
    "rfc5280::nc::permitted-ipv6-match": RUN,
    "rfc5280::nc::permitted-dn-mismatch": RUN,
    "rfc5280::nc::excluded-dn-match": RUN,
    "rfc5280::nc::permitted-dn-match": RUN,
    "rfc5280::nc::permitted-dn-match-subject-san-mismatch": RUN,
    "rfc5280::nc::excluded-dn-match-sub-mismatch": RUN,
    "rfc5280::nc::permitted-self-issued": RUN,
    "rfc5280::nc::excluded-self-issued-leaf": RUN,
    "rfc5280::nc::excluded-match-permitted-and-excluded": RUN,
    "rfc5280::nc::permitted-different-constraint-type": RUN,
    "rfc5280::nc::excluded-different-constraint-type": RUN,
    "rfc5280::nc::invalid-dnsname-wildcard": RUN,
    "rfc5280::nc::invalid-dnsname-leading-period": RUN,
    "rfc5280::nc::invalid-ipv4-address": RUN,
    "rfc5280::nc::invalid-ipv6-address": RUN,
    "rfc5280::nc::invalid-email-address": RUN,
    "rfc5280::nc::not-allowed-in-ee-noncritical": RUN,
    "rfc5280::nc::not-allowed-in-ee-critical": RUN,
    "rfc5280::nc::intermediate-with-san-rejected-by-intermediate-nc": RUN,
    "rfc5280::nc::intermediate-with-san-rejected-by-root-nc": RUN,
    "rfc5280::nc::restrictive-permits-in-intermediates-narrows": RUN,
    "rfc5280::nc::restrictive-permits-in-intermediates-widens": RUN,
    "rfc5280::nc::nc-permits-invalid-dns-san": RUN,
    "rfc5280::nc::nc-permits-invalid-ip-san": RUN,
    "rfc5280::nc::nc-permits-invalid-email-san": RUN,
    "rfc5280::nc::nc-forbids-alternate-chain-ica": RUN,
    "rfc5280::nc::nc-forbids-same-chain-ica": RUN,
    "rfc5280::nc::nc-permits-email-exact": RUN,
    "rfc5280::nc::nc-permits-email-domain": RUN,
    "rfc5280::nc::nc-permits-email-literal-asterisk-exact-match": RUN,
    "rfc5280::nc::nc-permits-email-literal-asterisk-rejects-user": RUN,
    "rfc5280::nc::nc-permits-email-literal-asterisk-rejects-subdomain": RUN,
    "rfc5280::nc::nc-permits-email-literal-double-asterisk": RUN,
    "rfc5280::nc::nc-permits-email-literal-double-asterisk-rejects-single": RUN,
    "rfc5280::nc::nc-permits-email-literal-mid-asterisk": RUN,
    "rfc5280::nc::nc-forbids-othername": RUN,
    "rfc5280::nc::nc-forbids-othername-noop": RUN,
    "rfc5280::nc::nc-forbids-dnsname-wildcard-san": RUN,
    "rfc5280::pc::ica-noncritical-pc": PC_NONCRITICAL,
    "rfc5280::san::malformed": RUN,
    "rfc5280::san::noncritical-with-empty-subject": SAN_CRITICAL,
    "rfc5280::san::underscore-dns": DNS_SAN_SYNTAX,
    "rfc5280::san::ip-in-dns": DNS_SAN_SYNTAX,
    "rfc5280::serial::too-long": SERIAL,
    "rfc5280::serial::zero": SERIAL,
    "rfc5280::serial::negative": SERIAL,
    "rfc5280::ski::critical-ski": RUN,
    "rfc5280::ski::root-missing-ski": KEY_IDS,
    "rfc5280::ski::intermediate-missing-ski": KEY_IDS,
    "rfc5280::validity::expired-root": RUN,
    "rfc5280::validity::expired-intermediate": RUN,
    "rfc5280::validity::expired-leaf": RUN,
    "rfc5280::validity::notbefore-exact": RUN,
    "rfc5280::validity::notbefore-fractional": RUN,
    "rfc5280::validity::notafter-exact": RUN,
    "rfc5280::validity::notafter-fractional": RUN,
    "rfc5280::validity::expired-1-second": RUN,
    "rfc5280::validity::expired-5-seconds": RUN,
    "rfc5280::validity::not-yet-valid-1-second": RUN,
    "rfc5280::validity::not-yet-valid-5-seconds": RUN,
    "rfc5280::ee-empty-issuer": RUN,
    "rfc5280::ca-empty-subject": RUN,
    "rfc5280::unknown-critical-extension-ee": RUN,
    "rfc5280::unknown-critical-extension-root": RUN,
    "rfc5280::unknown-critical-extension-unrelated-root": RUN,
    "rfc5280::unknown-critical-extension-unrelated-intermediate": RUN,
    "rfc5280::unknown-critical-extension-intermediate": RUN,
    "rfc5280::chain-untrusted-root": RUN,
    "rfc5280::intermediate-ca-without-ca-bit": RUN,
    "rfc5280::intermediate-ca-missing-basic-constraints": RUN,
    "rfc5280::root-missing-basic-constraints": RUN,
    "rfc5280::root-non-critical-basic-constraints": BC_NONCRITICAL,
    "rfc5280::root-inconsistent-ca-extensions": RUN,
    "rfc5280::ica-ku-keycertsign": RUN,
    "rfc5280::leaf-ku-keycertsign": RUN,
    "rfc5280::ee-aia": RUN,
    "rfc5280::ee-critical-aia-invalid": RUN,
    "rfc5280::duplicate-extensions": RUN,
    "rfc5280::no-keyusage": RUN,
    "rfc5280::no-basicconstraints": RUN,
    "rfc5280::mismatching-signature-algorithm": RUN,
    "rfc5280::ca-as-leaf": RUN,
    "rfc5280::ca-as-leaf-wrong-san": PEER_NAME,
    "rfc5280::root-and-intermediate-swapped": RUN,
    "webpki::aki::root-with-aki-missing-keyidentifier": CABF_ROOT_AKI,
    "webpki::aki::root-with-aki-authoritycertissuer": RUN,
    "webpki::aki::root-with-aki-authoritycertserialnumber": RUN,
    "webpki::aki::root-with-aki-all-fields": CABF_ROOT_AKI,
    "webpki::aki::root-with-aki-ski-mismatch": CABF_ROOT_AKI,
    "webpki::cn::ipv4-hex-mismatch": PEER_NAME,
    "webpki::cn::ipv4-leading-zeros-mismatch": PEER_NAME,
    "webpki::cn::ipv6-uppercase-mismatch": PEER_NAME,
    "webpki::cn::ipv6-uncompressed-mismatch": PEER_NAME,
    "webpki::cn::ipv6-non-rfc5952-mismatch": PEER_NAME,
    "webpki::cn::punycode-not-in-san": PEER_NAME,
    "webpki::cn::utf8-vs-punycode-mismatch": PEER_NAME,
    "webpki::cn::not-in-san": PEER_NAME,
    "webpki::cn::case-mismatch": PEER_NAME,
    "webpki::eku::ee-anyeku": TLS_EKU,
    "webpki::eku::ee-critical-eku": TLS_EKU,
    "webpki::eku::ee-without-eku": TLS_EKU,
    "webpki::eku::root-has-eku": TLS_EKU,
    "webpki::nc::permitted-dns-match-noncritical": RUN,
    "webpki::nc::intermediate-permitted-excluded-subtrees-both-null": RUN,
    "webpki::nc::intermediate-permitted-excluded-subtrees-both-empty-sequences": RUN,
    "webpki::nc::nc-permits-dns-san-pattern": RUN,
    "webpki::san::exact-dns-san": PEER_NAME,
    "webpki::san::exact-localhost-ip-san": PEER_NAME,
    "webpki::san::mismatch-domain-san": PEER_NAME,
    "webpki::san::mismatch-subdomain-san": PEER_NAME,
    "webpki::san::mismatch-subdomain-apex-san": PEER_NAME,
    "webpki::san::mismatch-apex-subdomain-san": PEER_NAME,
    "webpki::san::public-suffix-wildcard-san": PEER_NAME,
    "webpki::san::public-suffix-multi-label-wildcard-san": PEER_NAME,
    "webpki::san::public-suffix-private-namespace-wildcard-san": PEER_NAME,
    "webpki::san::leftmost-wildcard-san": PEER_NAME,
    "webpki::san::wildcard-embedded-leftmost-san": PEER_NAME,
    "webpki::san::wildcard-not-in-leftmost-san": PEER_NAME,
    "webpki::san::wildcard-match-across-labels-san": PEER_NAME,
    "webpki::san::wildcard-embedded-ulabel-san": PEER_NAME,
    "webpki::san::unicode-emoji-san": PEER_NAME,
    "webpki::san::no-san": PEER_NAME,
    "webpki::san::san-critical-with-nonempty-subject": PEER_NAME,
    "webpki::san::san-wildcard-only": PEER_NAME,
    "webpki::san::san-wildcard-only-tld": PEER_NAME,
    "webpki::explicit-curve": RUN,
    "webpki::cryptographydotio-chain": TLS_CHAIN,
    "webpki::cryptographydotio-chain-missing-intermediate": RUN,
    "webpki::malformed-aia": RUN,
    "webpki::forbidden-p192-root": RUN,
    "webpki::forbidden-p192-leaf": RUN,
    "webpki::forbidden-dsa-root": RUN,
    "webpki::forbidden-dsa-leaf": RUN,
    "webpki::forbidden-weak-rsa-key-in-root": RUN,
    "webpki::forbidden-weak-rsa-in-leaf": RUN,
    "webpki::forbidden-rsa-not-divisible-by-8-in-root": RSA_DIV8,
    "webpki::forbidden-rsa-key-not-divisible-by-8-in-leaf": RSA_DIV8,
    "webpki::v1-cert": CABF_V3,
    "webpki::ee-basicconstraints-ca": CA_AS_LEAF,
    "webpki::ca-as-leaf": CA_AS_LEAF,
    "online::google.com": TLS_CHAIN,
    "online::aws.amazon.com": TLS_CHAIN,
    "online::fastly.com": TLS_CHAIN,
    "online::apple.com": TLS_CHAIN,
    "online::stackoverflow.com": TLS_CHAIN,
    "online::microsoft.com": TLS_CHAIN,
    "online::cloudflare.com": TLS_CHAIN,
    "online::facebook.com": TLS_CHAIN,
    "online::amazon.com": TLS_CHAIN,
    "online::s3.amazonaws.com": TLS_CHAIN,
    "online::akamai.com": TLS_CHAIN,
    "online::storage.googleapis.com": TLS_CHAIN,
    "online::docs.python.org": TLS_CHAIN,
    "online::bing.com": TLS_CHAIN,
    "rfc5280::nc::invalid-dnsname": RUN,
    "webpki::san::exact-san": PEER_NAME,
    "webpki::forbidden-p192-spki-leaf": RUN,
    "webpki::forbidden-dsa-spki-leaf": RUN,
    "webpki::forbidden-signature-algorithm-in-root": RUN,
    "webpki::forbidden-signature-algorithm-in-leaf": RUN,
}

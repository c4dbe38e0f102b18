"""Missing intermediates: the local cache and AIA caIssuers, over real loopback HTTP."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

import pytest
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7
from loopback import FileServer
from malformed.certs import BROKEN
from pki import NOW, PKI, Identity, _name, ca_cert, message, new_key

import smimekit
from smimekit.cli.main import main
from smimekit.validation.fetchers import MemoryFetcher
from smimekit.validation.intermediates import (
    MAX_CERT_BYTES,
    IntermediateCache,
    IssuerSource,
    ca_issuers_urls,
    fingerprint,
    issuer_source,
    parse_certificates,
)
from smimekit.validation.path import validate
from smimekit.validation.revocation import RevocationOptions, RevocationPolicy

OFF = None  # revocation checking: not what these tests are about


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)




# -- certificates naming their issuer --------------------------------------------------------


def _aia(urls: list[str]) -> x509.AuthorityInformationAccess:
    return x509.AuthorityInformationAccess([
        x509.AccessDescription(x509.oid.AuthorityInformationAccessOID.CA_ISSUERS,
                               x509.UniformResourceIdentifier(u)) for u in urls])


def person(pki: PKI, name: str, urls: list[str], *, issuer: tuple[ec.EllipticCurvePrivateKey,
                                                                   x509.Certificate] | None = None,
           ) -> Identity:
    """An end entity under ``issuer`` (default the issuing CA) naming ``urls`` as caIssuers."""
    key = new_key(f"p256#{name}")
    issuer_key, issuer_cert = issuer or (pki.inter_key, pki.inter)
    email = f"{name}@example.org"
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(issuer_cert.subject)
        .public_key(key.public_key())  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]), False)
        .add_extension(x509.KeyUsage(True, False, False, False, True, False, False, False, False),
                       critical=True)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.EMAIL_PROTECTION]),
                       False)
    )
    if urls:
        builder = builder.add_extension(_aia(urls), False)
    return Identity(key, builder.sign(issuer_key, hashes.SHA256()), email)


def signed_by(who: Identity, chain: list[x509.Certificate] | None = None) -> bytes:
    """A message signed by ``who`` carrying only its own certificate (or ``chain`` too)."""
    return smimekit.sign(message(sender=who.email), who.key, who.cert, chain=chain or [])


def sub_ca(name: str, urls: list[str], issuer: tuple[ec.EllipticCurvePrivateKey,
                                                      x509.Certificate]
           ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A CA under ``issuer`` whose certificate names ``urls`` as caIssuers."""
    key = new_key(f"p256#{name}")
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(issuer[1].subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=30))
        .not_valid_after(NOW + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                       critical=True)
        .add_extension(_aia(urls), False)
    )
    return key, builder.sign(issuer[0], hashes.SHA256())


# -- verify through the API ------------------------------------------------------------------


def test_missing_intermediate_fails_without_aia_and_says_why(pki: PKI, server: FileServer) -> None:
    carol = person(pki, "carol", [server.url("ca.cer")])
    server.files["ca.cer"] = der(pki.inter)
    result = smimekit.verify(signed_by(carol), trust=[pki.root], revocation=OFF,
                             raise_for_failure=False)
    assert not result.verdict.valid
    reasons = result.verdict.signers[0].reasons
    assert "no chain to a trust anchor" in reasons[0]
    assert any(server.url("ca.cer") in r and "AIA fetching is off" in r for r in reasons)
    assert not server.hits


def test_aia_fetch_passes_fills_the_cache_and_the_cache_serves_next_time(
        pki: PKI, server: FileServer, tmp_path: Path) -> None:
    carol = person(pki, "carol", [server.url("ca.cer")])
    server.files["ca.cer"] = der(pki.inter)
    cache = IntermediateCache.in_data_dir(tmp_path)
    msg = signed_by(carol)

    first = smimekit.verify(msg, trust=[pki.root], revocation=OFF, aia=True, intermediates=cache)
    assert first.verdict.valid
    assert [c.subject for c in first.verdict.signers[0].chain] == [
        carol.cert.subject.rfc4514_string(), pki.inter.subject.rfc4514_string(),
        pki.root.subject.rfc4514_string()]
    assert server.hits == {"ca.cer": 1}

    # Stored under its fingerprint, in a private directory, and only the intermediate.
    assert pki.inter in cache and carol.cert not in cache and pki.root not in cache
    entry = tmp_path / "intermediates" / f"{fingerprint(pki.inter)}.pem"
    assert entry.read_bytes() == pem(pki.inter)
    assert stat.S_IMODE((tmp_path / "intermediates").stat().st_mode) == 0o700
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600
    assert [p.name for p in (tmp_path / "intermediates").iterdir()] == [entry.name]

    # A second run without AIA (and a server that would now fail) passes from the cache.
    server.files.clear()
    again = smimekit.verify(msg, trust=[pki.root], revocation=OFF,
                            intermediates=IntermediateCache.in_data_dir(tmp_path))
    assert again.verdict.valid
    assert server.hits == {"ca.cer": 1}


@pytest.mark.parametrize("form", ["der", "pem", "pem-bundle", "pkcs7-der", "pkcs7-pem"])
def test_every_caissuers_format_is_read(pki: PKI, server: FileServer, form: str) -> None:
    body = {
        "der": der(pki.inter),
        "pem": pem(pki.inter),
        "pem-bundle": pem(pki.root) + pem(pki.inter),
        "pkcs7-der": pkcs7.serialize_certificates([pki.root, pki.inter],
                                                  serialization.Encoding.DER),
        "pkcs7-pem": pkcs7.serialize_certificates([pki.inter], serialization.Encoding.PEM),
    }[form]
    server.files["ca.p7c"] = body
    carol = person(pki, "carol", [server.url("ca.p7c")])
    result = smimekit.verify(signed_by(carol), trust=[pki.root], revocation=OFF, aia=True,
                             raise_for_failure=False)
    assert result.verdict.valid, result.verdict.signers[0].reasons


@pytest.mark.parametrize(("served", "expected"), [
    (None, "HTTP 404"),
    (b"<html>maintenance</html>", "not a certificate"),
    (b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "PEM file without"),
    (b"\x30" * (MAX_CERT_BYTES + 1), f"exceeds {MAX_CERT_BYTES}"),
    ("other-ca", "did not issue it"),
    # the issuing CA's certificate, its subject made undecodable (a bad UTF8String)
    ("undecodable", "the certificate served is malformed: its subject cannot be decoded"),
])
def test_a_bad_caissuers_answer_is_a_clear_reason(pki: PKI, server: FileServer,
                                                   served: bytes | str | None,
                                                   expected: str) -> None:
    if served == "other-ca":
        other = ca_cert(new_key("p256#other"), pki.inter.subject,  # type: ignore[arg-type]
                        new_key("p256#other"), pki.inter.subject)  # type: ignore[arg-type]
        server.files["ca.cer"] = der(other)
    elif served == "undecodable":
        server.files["ca.cer"] = BROKEN["bad-utf8-subject"](pki.inter, pki.root_key)
    elif isinstance(served, bytes):
        server.files["ca.cer"] = served
    carol = person(pki, "carol", [server.url("ca.cer")])
    result = smimekit.verify(signed_by(carol), trust=[pki.root], revocation=OFF, aia=True,
                             raise_for_failure=False)
    assert not result.verdict.valid
    reasons = result.verdict.signers[0].reasons
    found = [r for r in reasons if "AIA caIssuers" in r]
    assert len(found) == 1 and server.url("ca.cer") in found[0] and expected in found[0], reasons
    assert server.hits == {"ca.cer": 1}


def test_unreachable_caissuers_is_a_reason(pki: PKI) -> None:
    closed = FileServer(content_type="application/pkix-cert")
    closed.stop()  # the port is now closed
    carol = person(pki, "carol", [closed.url("ca.cer")])
    result = smimekit.verify(signed_by(carol), trust=[pki.root], revocation=OFF, aia=True,
                             raise_for_failure=False)
    assert any("AIA caIssuers" in r and closed.url("ca.cer") in r
               for r in result.verdict.signers[0].reasons)


@pytest.mark.parametrize(("url", "scheme"), [
    ("https://127.0.0.1:1/ca.cer", "https"),
    ("ldap://ldap.example.org/cn=CA?cACertificate", "ldap"),
    ("file:///etc/passwd", "file"),
])
def test_only_http_is_fetched(pki: PKI, url: str, scheme: str) -> None:
    fetcher = MemoryFetcher(crls={url: der(pki.inter)})
    carol = person(pki, "carol", [url])
    result = smimekit.verify(signed_by(carol), trust=[pki.root], aia=True,
                             revocation=RevocationOptions(fetcher=fetcher),
                             raise_for_failure=False)
    assert not result.verdict.valid and fetcher.calls == []
    assert any(f"{scheme} URL skipped, only http is fetched (RFC 5280 4.2.2.1)" in r
               for r in result.verdict.signers[0].reasons)


def test_offline_never_fetches(pki: PKI) -> None:
    url = "http://ca.example.org/ca.cer"
    fetcher = MemoryFetcher(crls={url: der(pki.inter)})
    carol = person(pki, "carol", [url])
    offline = RevocationOptions(policy=RevocationPolicy.OFFLINE, fetcher=fetcher)
    result = smimekit.verify(signed_by(carol), trust=[pki.root], aia=True, revocation=offline,
                             raise_for_failure=False)
    assert not result.verdict.valid
    assert fetcher.calls == []
    assert any("not fetched (offline)" in r for r in result.verdict.signers[0].reasons)
    # The same fetcher, soft policy: AIA goes through it (one GET for the intermediate).
    soft = RevocationOptions(policy=RevocationPolicy.SOFT, fetcher=fetcher)
    assert smimekit.verify(signed_by(carol), trust=[pki.root], aia=True, revocation=soft
                           ).verdict.valid
    assert fetcher.calls[0] == ("crl", url)


def test_decrypt_verify_fetches_too(pki: PKI, bob: Identity) -> None:
    url = "http://ca.example.org/ca.cer"
    fetcher = MemoryFetcher(crls={url: der(pki.inter)})
    carol = person(pki, "carol", [url])
    sealed = smimekit.encrypt(signed_by(carol), [bob.cert], check_recipients=False)
    options = RevocationOptions(policy=RevocationPolicy.SOFT, fetcher=fetcher)
    assert not smimekit.decrypt_verify(sealed, bob.key, bob.cert, trust=[pki.root],
                                       revocation=options, raise_for_failure=False
                                       ).verdict.valid
    assert fetcher.calls == []
    assert smimekit.decrypt_verify(sealed, bob.key, bob.cert, trust=[pki.root], aia=True,
                                   revocation=options).verdict.valid
    assert [kind for kind, _ in fetcher.calls] == ["crl"]


# -- what is followed, what is kept ----------------------------------------------------------


def test_two_levels_fetched_one_after_the_other(pki: PKI, server: FileServer,
                                                tmp_path: Path) -> None:
    mid_key = new_key("p256#mid-ca")
    assert isinstance(mid_key, ec.EllipticCurvePrivateKey)
    mid = ca_cert(mid_key, _name("Test Mid CA"), pki.root_key, pki.root.subject)
    sub_key, sub = sub_ca("Test Sub CA", [server.url("mid.cer")], (mid_key, mid))
    dave = person(pki, "dave", [server.url("sub.cer")], issuer=(sub_key, sub))
    server.files.update({"sub.cer": der(sub), "mid.cer": der(mid)})
    cache = IntermediateCache(tmp_path / "cache")
    result = smimekit.verify(signed_by(dave), trust=[pki.root], revocation=OFF, aia=True,
                             intermediates=cache)
    assert len(result.verdict.signers[0].chain) == 4
    assert server.hits == {"sub.cer": 1, "mid.cer": 1}
    assert {fingerprint(c) for c in cache.certificates()} == {fingerprint(sub), fingerprint(mid)}


def test_urls_of_a_certificate_that_did_not_sign_are_never_followed(pki: PKI,
                                                                    server: FileServer) -> None:
    # The caIssuers URL serves a CA with the right name but another key, whose own AIA points
    # further: it verifies nothing, so its URL must not be asked.
    fake_key = new_key("p256#fake-issuing-ca")
    fake = (x509.CertificateBuilder().subject_name(pki.inter.subject)
            .issuer_name(_name("Elsewhere")).public_key(fake_key.public_key())  # type: ignore[arg-type]
            .serial_number(1).not_valid_before(NOW - dt.timedelta(days=1))
            .not_valid_after(NOW + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_aia([server.url("further.cer")]), False)
            .sign(fake_key, hashes.SHA256()))  # type: ignore[arg-type]
    server.files.update({"ca.cer": der(fake), "further.cer": der(pki.root)})
    carol = person(pki, "carol", [server.url("ca.cer")])
    result = smimekit.verify(signed_by(carol), trust=[pki.root], revocation=OFF, aia=True,
                             raise_for_failure=False)
    assert not result.verdict.valid
    assert server.hits == {"ca.cer": 1}
    assert any("did not issue it" in r for r in result.verdict.signers[0].reasons)


def test_the_cache_learns_from_messages_carrying_their_chain(pki: PKI, tmp_path: Path) -> None:
    carol = person(pki, "carol", [])
    cache = IntermediateCache(tmp_path / "cache")
    assert smimekit.verify(signed_by(carol, [pki.inter]), trust=[pki.root], revocation=OFF,
                           intermediates=cache).verdict.valid
    assert pki.inter in cache
    # ... so that a later message from the same CA without the chain validates offline.
    erin = person(pki, "erin", [])
    offline = RevocationOptions(policy=RevocationPolicy.OFFLINE)
    assert smimekit.verify(signed_by(erin), trust=[pki.root], revocation=offline,
                           intermediates=cache).verdict.valid


def test_the_cache_never_learns_from_an_untrusted_chain(pki: PKI, tmp_path: Path) -> None:
    rogue_key = new_key("p256#rogue-root")
    rogue_root = ca_cert(rogue_key, _name("Rogue Root"), rogue_key, _name("Rogue Root"))  # type: ignore[arg-type]
    rogue_ca_key = new_key("p256#rogue-ca")
    rogue_ca = ca_cert(rogue_ca_key, _name("Rogue CA"), rogue_key,  # type: ignore[arg-type]
                       rogue_root.subject)
    mallory = person(pki, "mallory", [], issuer=(rogue_ca_key, rogue_ca))  # type: ignore[arg-type]
    cache = IntermediateCache(tmp_path / "cache")
    result = smimekit.verify(signed_by(mallory, [rogue_ca, rogue_root]), trust=[pki.root],
                             revocation=OFF, intermediates=cache, raise_for_failure=False)
    assert not result.verdict.valid
    assert not (tmp_path / "cache").exists()
    # A trusted chain that fails for another reason (expired) is not learned either.
    old_key = new_key("p256#old-ca")
    old_ca = ca_cert(old_key, _name("Old CA"), pki.root_key, pki.root.subject,  # type: ignore[arg-type]
                     not_after=NOW - dt.timedelta(days=1))
    frank = person(pki, "frank", [], issuer=(old_key, old_ca))  # type: ignore[arg-type]
    result = smimekit.verify(signed_by(frank, [old_ca]), trust=[pki.root], revocation=OFF,
                             intermediates=cache, raise_for_failure=False)
    assert not result.verdict.valid and result.verdict.signers[0].chain
    assert not (tmp_path / "cache").exists()


def test_an_expired_cached_issuer_does_not_stop_the_fetch_of_its_renewal(
        pki: PKI, tmp_path: Path) -> None:
    url = "http://ca.example.org/ca.cer"
    expired = ca_cert(pki.inter_key, pki.inter.subject, pki.root_key, pki.root.subject,
                      path_length=0, not_after=NOW - dt.timedelta(days=1))
    cache = IntermediateCache(tmp_path)
    assert cache.add([expired]) == [expired]
    carol = person(pki, "carol", [url])
    fetcher = MemoryFetcher(crls={url: der(pki.inter)})  # the same key, renewed
    assert not smimekit.verify(signed_by(carol), trust=[pki.root], revocation=OFF,
                               intermediates=cache, raise_for_failure=False).verdict.valid
    result = smimekit.verify(signed_by(carol), trust=[pki.root], aia=True, intermediates=cache,
                             revocation=RevocationOptions(fetcher=fetcher))
    assert result.verdict.valid and fetcher.calls == [("crl", url)]
    assert pki.inter in cache and expired in cache  # both kept: the old one serves archives


def test_fetch_budget_and_memory_of_urls(pki: PKI) -> None:
    url1, url2 = "http://a.example/ca.cer", "http://b.example/ca.cer"
    fetcher = MemoryFetcher(crls={url1: b"junk"})
    source = IssuerSource(fetcher=fetcher, max_fetches=1)
    first, second = person(pki, "carol", [url1]), person(pki, "dave", [url2])
    assert source(first.cert) == [] and source(first.cert) == []  # asked once, remembered
    assert source(second.cert) == []
    assert fetcher.calls == [("crl", url1)]
    problems = source.take_problems()
    assert any("not a certificate" in p for p in problems)
    assert any(url2 in p and "limit of 1 fetches" in p for p in problems)
    assert source.take_problems() == []


def test_validate_takes_the_source_directly(pki: PKI) -> None:
    url = "http://ca.example.org/ca.cer"
    carol = person(pki, "carol", [url])
    source = issuer_source(aia=True, fetcher=MemoryFetcher(crls={url: pem(pki.inter)}))
    result = validate(carol.cert, anchors=[pki.root], issuer_source=source)
    assert result.ok and result.chain[1] == pki.inter
    assert source.fetched == [(url, pki.inter)]
    assert ca_issuers_urls(carol.cert) == [url]


def test_a_failing_fetcher_does_not_escape(pki: PKI) -> None:
    class Broken(MemoryFetcher):
        def fetch_crl(self, url: str) -> bytes:
            raise RuntimeError("bug in a custom transport")

    carol = person(pki, "carol", ["http://ca.example.org/ca.cer"])
    source = IssuerSource(fetcher=Broken())
    assert source(carol.cert) == []
    assert "bug in a custom transport" in source.take_problems()[0]


# -- the cache on disk -----------------------------------------------------------------------


def test_cache_ignores_what_it_did_not_write(pki: PKI, tmp_path: Path, alice: Identity) -> None:
    cache = IntermediateCache(tmp_path)
    assert cache.add([alice.cert]) == []  # not a CA
    assert cache.add([pki.inter]) == [pki.inter]
    assert cache.add([pki.inter]) == []  # already there
    assert len(cache) == 1
    good = tmp_path / f"{fingerprint(pki.inter)}.pem"
    # Renamed (content does not match the name), garbage, too large, a leaf: all skipped.
    (tmp_path / f"{'0' * 64}.pem").write_bytes(good.read_bytes())
    (tmp_path / f"{'1' * 64}.pem").write_bytes(b"garbage")
    (tmp_path / f"{'2' * 64}.pem").write_bytes(b"x" * 100_000)
    (tmp_path / f"{fingerprint(alice.cert)}.pem").write_bytes(pem(alice.cert))
    assert IntermediateCache(tmp_path).certificates() == [pki.inter]
    assert cache.issuers_of(alice.cert) == []  # alice is issued by the root
    carol = person(pki, "carol", [])
    assert cache.issuers_of(carol.cert) == [pki.inter]


def test_an_unwritable_cache_costs_nothing_but_the_cache(pki: PKI, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    cache = IntermediateCache(blocker / "intermediates")  # cannot be created
    carol = person(pki, "carol", [])
    assert smimekit.verify(signed_by(carol, [pki.inter]), trust=[pki.root], revocation=OFF,
                           intermediates=cache).verdict.valid
    assert cache.certificates() == []


def test_parse_certificates_formats(pki: PKI) -> None:
    assert parse_certificates(der(pki.inter)) == [pki.inter]
    assert parse_certificates(b"\n" + pem(pki.root) + pem(pki.inter)) == [pki.root, pki.inter]
    with pytest.raises(ValueError, match="not a certificate"):
        parse_certificates(b"")
    empty = cms.ContentInfo({"content_type": "signed_data", "content": {
        "version": "v1", "digest_algorithms": [], "encap_content_info": {"content_type": "data"},
        "signer_infos": []}}).dump()
    with pytest.raises(ValueError, match="not a certificate"):
        parse_certificates(empty)


# -- the CLI ---------------------------------------------------------------------------------


def test_cli_fetches_by_default_caches_and_honours_no_aia_and_offline(
        pki: PKI, server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    carol = person(pki, "carol", [server.url("ca.cer")])
    server.files["ca.cer"] = der(pki.inter)
    (tmp_path / "root.pem").write_bytes(pem(pki.root))
    (tmp_path / "signed.eml").write_bytes(signed_by(carol))
    data = tmp_path / "data"

    def verify(*extra: str) -> int:
        return main(["--data-dir", str(data), "verify", "--trust", str(tmp_path / "root.pem"),
                     *extra, str(tmp_path / "signed.eml"), "-o", str(tmp_path / "out.eml")])

    assert verify("--no-aia", "--revocation", "soft") == 1
    assert "AIA fetching is off" in capsys.readouterr().err and not server.hits
    assert verify("--revocation", "offline") == 1  # offline: AIA is off even by default
    assert "not fetched (offline)" in capsys.readouterr().err and not server.hits
    assert verify() == 0
    assert capsys.readouterr().err.startswith("smimekit: VALID")
    assert server.hits == {"ca.cer": 1}
    assert (data / "intermediates" / f"{fingerprint(pki.inter)}.pem").is_file()
    server.files.clear()
    assert verify("--no-aia", "--revocation", "offline") == 0  # from the cache
    assert server.hits == {"ca.cer": 1}


def test_cli_decrypt_verify_has_the_option(pki: PKI, bob: Identity, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    carol = person(pki, "carol", ["http://127.0.0.1:1/ca.cer"])
    (tmp_path / "root.pem").write_bytes(pem(pki.root))
    (tmp_path / "bob.key").write_bytes(bob.pem_key())
    (tmp_path / "bob.pem").write_bytes(bob.pem_cert())
    (tmp_path / "m.eml").write_bytes(
        smimekit.encrypt(signed_by(carol), [bob.cert], check_recipients=False))
    args = ["--data-dir", str(tmp_path / "data"), "decrypt-verify", "--key",
            str(tmp_path / "bob.key"), "--cert", str(tmp_path / "bob.pem"), "--trust",
            str(tmp_path / "root.pem"), str(tmp_path / "m.eml"), "-o", str(tmp_path / "o")]
    assert main([*args, "--no-aia"]) == 1
    assert "AIA fetching is off" in capsys.readouterr().err
    assert main(args) == 1  # port 1: refused, and said so
    err = capsys.readouterr().err
    assert "AIA caIssuers http://127.0.0.1:1/ca.cer" in err and "fetching is off" not in err
    assert not (tmp_path / "data" / "intermediates").exists()

"""SMIMEA (RFC 8162): the zone fragment from a real CA, and lookup through a real validating
resolver (unbound) in front of a real authoritative server (NSD) serving signed, bogus,
expired and unsigned zones (tests/dnsinfra.py)."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.name
import dns.rdatatype
import dns.zonefile
import pytest
from backends import Backend
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from dnsinfra import DnsLab, LyingForwarder, free_port

from smimekit.ca.home import CAConfig, CAHome
from smimekit.ca.issuance import CertificateAuthority, SubscriberKeyType
from smimekit.ca.profiles import Purpose
from smimekit.cli.main import main
from smimekit.config import Config, DirectoryConfig, DnsConfig
from smimekit.directory.dns import (
    SmimeaSource,
    _read_anchors,
    owner_name,
    smimea_records,
    zone_fragment,
)
from smimekit.errors import ConfigError, DirectoryError
from smimekit.store import Store

PASS = b"correct horse battery staple"
FAST = {"sign_key": SubscriberKeyType.P256, "encrypt_key": SubscriberKeyType.P256,
        "lint": False}


def make_ca(data_dir: Path, url: str | None = None) -> tuple[CertificateAuthority, Store]:
    home = CAHome(data_dir)
    home.create(CAConfig(organization="Example Ltd", base_url="http://pki.example.com",
                         key_type="p256", country="GB"), PASS)
    store = Store.open(url, data_dir, create=True)
    return CertificateAuthority(home.unlock(PASS), store, actor="test"), store


def encryption_cert(ca: CertificateAuthority, email: str, purpose: str = "dual"
                    ) -> x509.Certificate:
    issued = ca.issue_generated(email, purpose=purpose, **FAST)  # type: ignore[arg-type]
    item = issued.item(Purpose.ENCRYPT) or issued.item(Purpose.BOTH)
    assert item is not None
    return item.cert


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


# -- the owner name (RFC 8162 section 3) ---------------------------------------------------


def _openssl_label(local: bytes) -> str:
    out = subprocess.run(["openssl", "dgst", "-sha256", "-r"], input=local,
                         capture_output=True, check=True).stdout.decode()
    return out.split()[0][:56]  # 28 octets


@pytest.mark.interop  # openssl dgst
def test_owner_name_is_rfc7929_style_sha256_of_local_part() -> None:
    # RFC 7929 section 3's example (the same hashing as RFC 8162), other label and domain.
    assert owner_name("hugh@example.com").to_text() == (
        "c93f1e400f26708f98cb19d936620da35eec8f72e57f9eec01c1afd6._smimecert.example.com.")
    assert _openssl_label(b"hugh") == "c93f1e400f26708f98cb19d936620da35eec8f72e57f9eec01c1afd6"


@pytest.mark.interop  # openssl dgst
@pytest.mark.parametrize("local", ["alice", "Alice.Smith", "j\u00f6ran", "a+tag"])
def test_owner_name_hashes_the_utf8_local_part_as_given(local: str) -> None:
    owner = owner_name(f"{local}@Example.ORG")
    assert owner.labels[0].decode() == _openssl_label(local.encode("utf-8"))
    assert owner.labels[1:] == (b"_smimecert", b"example", b"org", b"")


def test_owner_name_does_not_fold_case() -> None:
    assert owner_name("Alice@example.org") != owner_name("alice@example.org")


@pytest.mark.parametrize("address", ["alice", "@example.org", "alice@", "alice@exa..mple"])
def test_owner_name_refuses_what_is_not_an_address(address: str) -> None:
    with pytest.raises(DirectoryError):
        owner_name(address)


# -- the zone fragment ---------------------------------------------------------------------


def _parse(fragment: str) -> dict[dns.name.Name, list[object]]:
    records: dict[dns.name.Name, list[object]] = {}
    for rrset in dns.zonefile.read_rrsets(fragment, rdclass=None, origin=dns.name.root):
        assert rrset.rdtype == dns.rdatatype.SMIMEA
        records.setdefault(rrset.name, []).extend(rrset)
    return records


@pytest.mark.slow
def test_fragment_holds_every_live_encryption_certificate_of_the_domain(
        backend: Backend) -> None:
    ca, store = make_ca(backend.data_dir, backend.url)
    try:
        alice = encryption_cert(ca, "alice@example.org")
        both = encryption_cert(ca, "both@example.org", purpose="both")
        ca.issue_generated("signer@example.org", purpose="sign", **FAST)  # type: ignore[arg-type]
        encryption_cert(ca, "gone@example.org")
        ca.revoke(email="gone@example.org", reason="key_compromise")
        encryption_cert(ca, "elsewhere@example.net")
        fragment = zone_fragment(smimea_records(store, "example.org"), "example.org", ttl=600)
    finally:
        store.close()
    records = _parse(fragment)
    assert set(records) == {owner_name("alice@example.org"), owner_name("both@example.org")}
    for address, cert in (("alice@example.org", alice), ("both@example.org", both)):
        (rdata,) = records[owner_name(address)]
        assert (rdata.usage, rdata.selector, rdata.mtype) == (3, 0, 0)  # type: ignore[attr-defined]
        assert rdata.cert == _der(cert)  # type: ignore[attr-defined]
    assert all(rrset.ttl == 600 for rrset in dns.zonefile.read_rrsets(fragment, rdclass=None,
                                                                      origin=dns.name.root))


# -- the DNSSEC world: one CA, one lab for the module --------------------------------------


@dataclass
class World:
    lab: DnsLab
    data_dir: Path
    certs: dict[str, x509.Certificate]

    def source(self, *, anchors: bool = True, port: int | None = None,
               timeout: float = 3.0) -> SmimeaSource:
        return SmimeaSource(("127.0.0.1",), port or self.lab.resolver_port, timeout,
                            _read_anchors(self.lab.anchor_file) if anchors else None)


def _spki_sha256(cert: x509.Certificate) -> str:
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


def _big_certificate(email: str) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, email)])
    now = dt.datetime.now(dt.UTC)
    names = [x509.RFC822Name(email)] + [x509.DNSName(f"host{i:03d}.good.test")
                                        for i in range(120)]
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .sign(key, hashes.SHA256()))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, dns_lab_factory: object) -> Iterator[World]:
    data_dir = tmp_path_factory.mktemp("ca") / "data"
    ca, store = make_ca(data_dir)
    try:
        certs = {email: encryption_cert(ca, email) for email in (
            "alice@good.test", "frank@good.test", "carol@bogus.test", "erin@expired.test",
            "dave@unsigned.test")}
        ca.revoke(email="frank@good.test", reason="superseded")
        records = {f"{zone}.": zone_fragment(smimea_records(store, zone), zone)
                   for zone in ("good.test", "bogus.test", "expired.test", "unsigned.test")}
    finally:
        store.close()
    alice, issuer = certs["alice@good.test"], ca.ca.authority.cert
    certs["big@good.test"] = big = _big_certificate("big@good.test")
    records["good.test."] += "\n".join([
        # what a sender cannot encrypt to: a hash of the key, garbage for a certificate
        f"{owner_name('hashonly@good.test')} 300 IN SMIMEA 3 1 1 {_spki_sha256(alice)}",
        f"{owner_name('garbage@good.test')} 300 IN SMIMEA 3 0 0 3003020100",
        # more than fits the 1232-octet UDP answer: the lookup goes on over TCP
        f"{owner_name('big@good.test')} 300 IN SMIMEA 3 0 0 {_der(big).hex()}",
        # a trust-anchor record next to the end-entity one
        f"{owner_name('chained@good.test')} 300 IN SMIMEA 3 0 0 {_der(alice).hex()}",
        f"{owner_name('chained@good.test')} 300 IN SMIMEA 2 0 0 {_der(issuer).hex()}",
    ]) + "\n"
    lab = dns_lab_factory(records)  # type: ignore[operator]
    yield World(lab, data_dir, {**certs, "issuer": issuer})


@pytest.mark.interop
def test_lookup_finds_the_certificate_the_ca_issued(world: World) -> None:
    found = world.source().find("alice@good.test")
    (candidate,) = found.candidates
    assert candidate.certificate == world.certs["alice@good.test"]
    assert candidate.source == "smimea"
    assert candidate.where == f"{owner_name('alice@good.test')} SMIMEA 3 0 0"


@pytest.mark.interop
def test_lookup_on_the_resolver_ad_bit_alone_finds_it_too(world: World) -> None:
    (candidate,) = world.source(anchors=False).find("alice@good.test").candidates
    assert candidate.certificate == world.certs["alice@good.test"]


@pytest.mark.interop
def test_a_capitalised_local_part_is_asked_again_in_lower_case(world: World) -> None:
    found = world.source().find("Alice@good.test")
    (candidate,) = found.candidates
    assert candidate.certificate == world.certs["alice@good.test"]
    assert candidate.where.startswith(owner_name("alice@good.test").to_text())
    assert found.notes == (f"no SMIMEA record at {owner_name('Alice@good.test')}"
                           " (DNSSEC-validated denial)",)


@pytest.mark.interop
@pytest.mark.parametrize("anchors", [True, False])
def test_a_record_too_big_for_udp_comes_over_tcp(world: World, anchors: bool) -> None:
    assert len(_der(world.certs["big@good.test"])) > 2000
    (candidate,) = world.source(anchors=anchors).find("big@good.test").candidates
    assert candidate.certificate == world.certs["big@good.test"]


@pytest.mark.interop
def test_dig_shows_the_record_validated(world: World) -> None:
    out = world.lab.dig(owner_name("alice@good.test").to_text(), "SMIMEA")
    flags = re.search(r";; flags: ([a-z ]+);", out)
    assert flags is not None and "ad" in flags.group(1).split(), out
    assert "status: NOERROR" in out
    answer = [line.split() for line in out.splitlines()
              if line.startswith(owner_name("alice@good.test").to_text())]
    assert {tuple(fields[3:5]) for fields in answer} == {("SMIMEA", "3"), ("RRSIG", "SMIMEA")}


@pytest.mark.interop
def test_revoked_and_unknown_addresses_are_none_here(world: World) -> None:
    for address in ("frank@good.test", "nobody@good.test"):
        found = world.source().find(address)
        assert found.candidates == []
        assert any("DNSSEC-validated denial" in note for note in found.notes)


@pytest.mark.interop
def test_bogus_signature_is_refused(world: World) -> None:
    with pytest.raises(DirectoryError, match=r"DNSSEC validation failed \(bogus signatures\)"
                       r".*SERVFAIL.*EDE 6 \(dnssec bogus\)") as caught:
        world.source().find("carol@bogus.test")
    assert owner_name("carol@bogus.test").to_text() in str(caught.value)


@pytest.mark.interop
def test_expired_signatures_are_refused(world: World) -> None:
    with pytest.raises(DirectoryError, match=r"SERVFAIL.*EDE 7 \(signature expired\)"):
        world.source().find("erin@expired.test")


@pytest.mark.interop
@pytest.mark.parametrize("anchors", [True, False])
def test_unsigned_zone_is_refused(world: World, anchors: bool) -> None:
    with pytest.raises(DirectoryError, match=r"not DNSSEC-validated \(no AD bit\).*unsigned"):
        world.source(anchors=anchors).find("dave@unsigned.test")


@pytest.mark.interop
def test_a_server_that_does_not_validate_is_refused(world: World) -> None:
    # NSD itself serves the signed records with their RRSIGs, but vouches for nothing.
    with pytest.raises(DirectoryError, match="no AD bit"):
        world.source(port=world.lab.auth_port).find("alice@good.test")


@pytest.mark.interop
def test_our_own_check_refuses_a_wrong_trust_anchor(world: World, tmp_path: Path) -> None:
    # unbound (with the right anchor) vouches for the answer; our check, with another
    # anchor for test., must still refuse it: the AD bit alone does not decide.
    wrong = tmp_path / "wrong.ds"
    wrong.write_text("test. IN DS 12345 13 2 "
                     + hashlib.sha256(b"not the key").hexdigest() + "\n")
    source = SmimeaSource(("127.0.0.1",), world.lab.resolver_port, 3.0, _read_anchors(wrong))
    with pytest.raises(DirectoryError, match=r"our own DNSSEC check failed: no DNSKEY of test\."
                                             r" matches its DS or trust anchor"):
        source.find("alice@good.test")


@pytest.fixture
def liar(world: World) -> Iterator[LyingForwarder]:
    forwarder = LyingForwarder(world.lab.auth_port)
    yield forwarder
    forwarder.stop()


@pytest.mark.interop
def test_our_own_check_refuses_altered_data_behind_a_forged_ad_bit(
        world: World, liar: LyingForwarder) -> None:
    # The tampered record of bogus.test, its stale RRSIG, and AD set by someone on the path.
    source = SmimeaSource(("127.0.0.1",), liar.port, 3.0, _read_anchors(world.lab.anchor_file))
    with pytest.raises(DirectoryError, match=r"our own DNSSEC check failed: .*bogus\.test\."
                                             r" SMIMEA: RRSIG by bogus\.test\. key \d+"):
        source.find("carol@bogus.test")
    # ... while the good zone passes the same check through the same liar
    (candidate,) = source.find("alice@good.test").candidates
    assert candidate.certificate == world.certs["alice@good.test"]
    assert liar.forwarded >= 5  # SMIMEA, DNSKEY and DS of each zone up to test.
    # the DNSKEY sets are trusted now: the next lookup asks for its record only
    before = liar.forwarded
    assert source.find("alice@good.test").candidates[0].certificate == candidate.certificate
    assert liar.forwarded == before + 1


@pytest.mark.interop
def test_the_ad_bit_alone_is_what_a_forger_defeats(world: World, liar: LyingForwarder) -> None:
    # Why a resolver off this host needs a trust anchor (from_config refuses it otherwise):
    # without our own check, the altered certificate would be taken.
    source = SmimeaSource(("127.0.0.1",), liar.port, 3.0, None)
    (candidate,) = source.find("carol@bogus.test").candidates
    assert candidate.certificate != world.certs["carol@bogus.test"]


@pytest.mark.interop
def test_an_anchor_for_another_zone_covers_nothing(world: World, tmp_path: Path) -> None:
    other = tmp_path / "other.ds"
    other.write_text("example. IN DS 12345 13 2 " + "00" * 32 + "\n")
    source = SmimeaSource(("127.0.0.1",), world.lab.resolver_port, 3.0, _read_anchors(other))
    with pytest.raises(DirectoryError, match="no trust anchor"):
        source.find("alice@good.test")


@pytest.mark.interop
def test_records_without_a_certificate_give_no_candidate(world: World) -> None:
    for address, note in (("hashonly@good.test", "SMIMEA 3 1 1 .* a hash or public key"),
                          ("garbage@good.test", "not a DER certificate")):
        found = world.source().find(address)
        assert found.candidates == []
        assert any(re.search(note, n) for n in found.notes), found.notes


@pytest.mark.interop
def test_trust_anchor_record_travels_as_chain(world: World) -> None:
    (candidate,) = world.source().find("chained@good.test").candidates
    assert candidate.certificate == world.certs["alice@good.test"]
    assert candidate.chain == (world.certs["issuer"],)


@pytest.mark.interop
def test_resolver_unreachable_is_a_clear_error(world: World) -> None:
    port = free_port()
    with pytest.raises(DirectoryError, match=rf"no DNS resolver answered for .*SMIMEA:"
                                             rf" 127.0.0.1:{port} (refused|did not answer)"):
        world.source(port=port, timeout=0.5).find("alice@good.test")


@pytest.mark.interop
def test_second_resolver_answers_when_the_first_is_down(world: World) -> None:
    source = SmimeaSource(("127.0.0.2", "127.0.0.1"), world.lab.resolver_port, 0.5,
                          _read_anchors(world.lab.anchor_file))
    (candidate,) = source.find("alice@good.test").candidates
    assert candidate.certificate == world.certs["alice@good.test"]


@pytest.mark.interop
def test_cli_writes_the_fragment_for_one_domain(world: World, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "good.zone"
    assert main(["--data-dir", str(world.data_dir), "directory", "smimea", "--domain",
                 "good.test", "-o", str(out), "--ttl", "900"]) == 0
    assert "1 SMIMEA record(s) for good.test" in capsys.readouterr().err
    records = _parse(out.read_text())
    (rdata,) = records[owner_name("alice@good.test")]
    assert rdata.cert == _der(world.certs["alice@good.test"])  # type: ignore[attr-defined]
    assert set(records) == {owner_name("alice@good.test")}


@pytest.mark.interop
def test_cli_refuses_a_domain_that_is_not_one(world: World,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--data-dir", str(world.data_dir), "directory", "smimea", "--domain",
                 "bad..domain"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("smimekit: error: 'bad..domain' is not a DNS domain name")
    assert "Traceback" not in err


# -- configuration -------------------------------------------------------------------------


def _config(**dns_keys: object) -> Config:
    return Config(directory=DirectoryConfig(dns=DnsConfig(**dns_keys)))  # type: ignore[arg-type]


def test_from_config_without_dns_table_is_none(tmp_path: Path) -> None:
    assert SmimeaSource.from_config(Config(), store=None, data_dir=tmp_path) is None
    assert SmimeaSource.from_config(Config(directory=DirectoryConfig()), store=None,
                                    data_dir=tmp_path) is None


def test_from_config_loopback_resolver(tmp_path: Path) -> None:
    source = SmimeaSource.from_config(_config(port=5353), store=None, data_dir=tmp_path)
    assert source is not None and source.name == "smimea"
    assert (source.resolvers, source.port, source.anchors) == (("127.0.0.1",), 5353, None)


def test_from_config_refuses_a_remote_resolver_without_trust_anchor(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"192\.0\.2\.1 is not on this host.*trust_anchor_file"):
        SmimeaSource.from_config(_config(resolvers=("192.0.2.1",)), store=None,
                                 data_dir=tmp_path)


def test_from_config_remote_resolver_with_trust_anchor(tmp_path: Path) -> None:
    anchor = tmp_path / "root.key"
    anchor.write_text(". IN DS 20326 8 2 "
                      "E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D\n")
    source = SmimeaSource.from_config(
        _config(resolvers=("192.0.2.1",), trust_anchor_file=anchor), store=None,
        data_dir=tmp_path)
    assert source is not None and source.anchors is not None
    assert list(source.anchors) == [dns.name.root]


@pytest.mark.parametrize(("keys", "message"), [
    ({"resolvers": ("resolver.example",)}, "is not an IP address"),
    ({"resolvers": ()}, "is empty"),
    ({"port": 0}, "is not a port number"),
    ({"timeout": 0.0}, "more than 0 seconds"),
    ({"trust_anchor_file": Path("/nonexistent/anchor.ds")}, "cannot read it"),
])
def test_from_config_refuses_bad_settings(tmp_path: Path, keys: dict[str, object],
                                          message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SmimeaSource.from_config(_config(**keys), store=None, data_dir=tmp_path)


@pytest.mark.parametrize("text", ["test. IN A 127.0.0.1\n", "not a zone file at all (\n", ""])
def test_from_config_refuses_a_bad_trust_anchor_file(tmp_path: Path, text: str) -> None:
    anchor = tmp_path / "anchor"
    anchor.write_text(text)
    with pytest.raises(ConfigError, match="trust_anchor_file"):
        SmimeaSource.from_config(_config(trust_anchor_file=anchor), store=None,
                                 data_dir=tmp_path)

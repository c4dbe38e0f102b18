"""LDAP publishing and lookup against a real slapd: the mail clients' own queries run by
ldapsearch and by LdapSource, the CLI's hook on issue/revoke, bad directories and entries,
the LDIF export, and encryption to people found in the directory."""

from __future__ import annotations

import base64
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from ldap_kit import reader, writer
from slapd import Slapd, people

import smimekit
from smimekit.ca.issuance import CertificateAuthority, SubscriberKeyType
from smimekit.cli.main import main
from smimekit.config import EMPTY, Config, DirectoryConfig, LdapConfig, load_config
from smimekit.directory.ldap import (
    LdapSource,
    PublishReport,
    certs_only,
    escape_filter_value,
    publish,
)
from smimekit.errors import ConfigError, DirectoryError

FAST = {"sign_key": SubscriberKeyType.P256, "encrypt_key": SubscriberKeyType.P256}


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def chain_of(cax: CertificateAuthority) -> list[x509.Certificate]:
    return [cax.ca.authority.cert, cax.ca.authority.root]


def publish_all(cax: CertificateAuthority, server: Slapd) -> PublishReport:
    return publish(cax.store, writer(server), issuer_fingerprint=cax.issuer_fingerprint,
                   chain=chain_of(cax))


def ldif_values(text: str, attribute: str) -> dict[str, list[bytes]]:
    """{dn: [values]} of ``attribute`` (case-insensitive, options kept) in unwrapped LDIF."""
    found: dict[str, list[bytes]] = {}
    dn = ""
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name == "dn":
            dn = value.strip()
            found.setdefault(dn, [])
        elif name.lower() == attribute.lower():
            found[dn].append(base64.b64decode(value[1:].strip()) if value.startswith(":")
                             else value.strip().encode())
    return found


def encryption_cert(cax: CertificateAuthority, email: str) -> x509.Certificate:
    issuance = cax.issue_generated(email, name=f"Person {email.split('@')[0]}", **FAST)
    item = next(i for i in issuance.items if i.purpose.value == "encrypt")
    return item.cert


# -- what mail clients ask -----------------------------------------------------------------


def test_thunderbird_query_finds_published_certificates(
        slapd: Slapd, any_cax: CertificateAuthority) -> None:
    cax = any_cax
    slapd.add_people(people(3))
    certs = {p.mail: encryption_cert(cax, p.mail) for p in people(3)}
    report = publish_all(cax, slapd)
    assert (report.people, report.certificates, report.updated, report.created) == (3, 3, 3, 0)

    a, b = "user00000@example.org", "user00002@example.org"
    # Thunderbird's own query, as ldapsearch sends it
    out = slapd.search(f"(|(mail={a})(mail={b}))", "usercertificate;binary")
    values = ldif_values(out, "usercertificate;binary")
    assert sorted(v for vs in values.values() for v in vs) == sorted([der(certs[a]),
                                                                       der(certs[b])])
    # and by our source
    with LdapSource(reader(slapd)) as source:
        for mail in (a, b):
            found = source.find(mail)
            assert [c.certificate for c in found.candidates] == [certs[mail]]
            assert found.candidates[0].where == f"uid={mail.split('@')[0]},{slapd.people}"
            assert found.candidates[0].chain and found.notes == ()


def test_outlook_query_gives_a_signed_data_openssl_reads(
        slapd: Slapd, cax: CertificateAuthority, tmp_path: Path) -> None:
    slapd.add_people(people(1))
    cert = encryption_cert(cax, "user00000@example.org")
    publish_all(cax, slapd)
    out = slapd.search("(mail=user00000@example.org)", "userSMIMECertificate")
    [value] = ldif_values(out, "userSMIMECertificate")[f"uid=user00000,{slapd.people}"]
    (tmp_path / "smime.p7").write_bytes(value)
    printed = subprocess.run(["openssl", "pkcs7", "-inform", "DER", "-print_certs", "-in",
                              str(tmp_path / "smime.p7")], capture_output=True, check=True,
                             text=True).stdout
    read = x509.load_pem_x509_certificates(printed.encode())
    assert sorted(map(der, read)) == sorted(map(der, [cert, *chain_of(cax)]))
    assert value == certs_only([cert, *chain_of(cax)])


def test_address_without_entry_gets_one_and_second_publish_changes_nothing(
        slapd: Slapd, cax: CertificateAuthority) -> None:
    cert = encryption_cert(cax, "new.person@example.org")
    first = publish_all(cax, slapd)
    assert (first.created, first.updated) == (1, 0)
    out = slapd.search("(mail=new.person@example.org)", "objectClass", "cn", "sn",
                       "usercertificate;binary")
    assert "dn: mail=new.person@example.org,ou=people,dc=example,dc=org" in out
    assert "objectClass: inetOrgPerson" in out and "cn: Person new.person" in out
    second = publish_all(cax, slapd)
    assert (second.created, second.updated, second.unchanged) == (0, 0, 1)
    assert "nothing changed" in second.summary()
    with LdapSource(reader(slapd)) as source:
        assert [c.certificate for c in source.find("new.person@example.org").candidates] \
            == [cert]


def test_revoked_renewed_and_foreign_values(slapd: Slapd, any_cax: CertificateAuthority,
                                            pki) -> None:  # type: ignore[no-untyped-def]
    cax = any_cax
    slapd.add_people(people(2))
    old = encryption_cert(cax, "user00000@example.org")
    encryption_cert(cax, "user00001@example.org")
    # a certificate another CA issued, already in the entry: not ours to remove
    foreign = pki.person("other", "p256", issuer=(pki.root_key, pki.root),
                         email="user00000@example.org").cert
    slapd.ldap_tool("ldapmodify", input=(
        f"dn: uid=user00000,{slapd.people}\nchangetype: modify\nadd: userCertificate;binary\n"
        f"userCertificate;binary:: {base64.b64encode(der(foreign)).decode()}\n").encode())
    publish_all(cax, slapd)
    record = next(r for r in cax.store.issued_for("user00000@example.org")
                  if r.fingerprint == old.fingerprint(hashes.SHA256()).hex())
    renewed = cax.renew(record)
    cax.revoke(email="user00001@example.org")
    report = publish_all(cax, slapd)
    assert (report.updated, report.removed) == (2, 2)
    with LdapSource(reader(slapd)) as source:
        held = {der(c.certificate) for c in source.find("user00000@example.org").candidates}
        assert held == {der(renewed.cert), der(foreign)}
        assert source.find("user00001@example.org").candidates == ()


# -- the CLI: publish, export, and the hook on issue and revoke -----------------------------


@pytest.fixture
def cli_ca(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    data = tmp_path / "cli-data"
    monkeypatch.setenv("SMIMEKIT_DATA_DIR", str(data))
    monkeypatch.setenv("SMIMEKIT_PASSPHRASE", "correct horse battery staple")
    monkeypatch.delenv("SMIMEKIT_CONFIG", raising=False)
    assert main(["ca", "init", "--org", "Example Ltd", "--base-url", "http://pki.example.com",
                 "--key-type", "p256", "--country", "GB"]) == 0
    return data


def write_config(path: Path, server: Slapd, *, url: str | None = None,
                 publish: bool = True) -> Path:
    path.write_text(f"""[directory.ldap]
url = "{url or server.url}"
base_dn = "{server.people}"
bind_dn = "{server.root_dn}"
password_file = "{server.password_file}"
timeout = 2
publish = {str(publish).lower()}
""")
    return path


def test_issue_and_revoke_keep_the_directory_current(
        slapd: Slapd, cli_ca: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    slapd.add_people(people(1))
    config = write_config(tmp_path / "smimekit.toml", slapd)
    mail = "user00000@example.org"
    assert main(["--config", str(config), "ca", "issue", "--email", mail, "--key-type", "p256",
                 "--out", str(tmp_path / "out")]) == 0
    assert "directory: published 1 certificates of 1 people" in capsys.readouterr().err
    source = LdapSource(reader(slapd))
    [found] = source.find(mail).candidates
    issued = x509.load_pem_x509_certificate(
        (tmp_path / "out" / f"{mail}.encrypt.pem").read_bytes())
    assert found.certificate == issued

    assert main(["--config", str(config), "ca", "revoke", "--email", mail,
                 "--reason", "affiliation-changed"]) == 0
    assert "1 certificates removed" in capsys.readouterr().err
    assert source.find(mail).candidates == ()
    out = slapd.search(f"(mail={mail})", "userSMIMECertificate", "usercertificate;binary")
    assert "userSMIMECertificate" not in out and "userCertificate" not in out
    source.close()


@pytest.mark.slow
def test_enroll_and_renew_keep_the_directory_current(
        slapd: Slapd, cli_ca: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    staff = people(3)
    slapd.add_people(staff[:2])  # the third has no entry yet
    (tmp_path / "staff.csv").write_text("email,name\n" + "".join(
        f"{p.mail},{p.cn}\n" for p in staff))
    config = write_config(tmp_path / "smimekit.toml", slapd)
    assert main(["--config", str(config), "ca", "enroll", "--csv", str(tmp_path / "staff.csv"),
                 "--key-type", "p256", "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "directory: published 3 certificates of 3 people: 1 entries created, 2 updated" in err
    with LdapSource(reader(slapd)) as source:
        before = {p.mail: source.find(p.mail).candidates[0].certificate for p in staff}
        assert main(["--config", str(config), "ca", "renew", "--due", "1000d",
                     "--out", str(tmp_path / "renewed")]) == 0
        assert "3 certificates removed" in capsys.readouterr().err
        for person in staff:
            [now] = source.find(person.mail).candidates
            assert now.certificate != before[person.mail]
            assert now.certificate == x509.load_pem_x509_certificate(
                (tmp_path / "renewed" / f"{person.mail}.encrypt.pem").read_bytes())


def test_directory_down_at_issue_is_a_warning_and_publish_repairs(
        slapd: Slapd, cli_ca: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = f"ldap://127.0.0.1:{closed.getsockname()[1]}"
    down = write_config(tmp_path / "down.toml", slapd, url=dead)
    mail = "user00000@example.org"
    assert main(["--config", str(down), "ca", "issue", "--email", mail, "--key-type", "p256",
                 "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "warning: the directory was not updated" in err and dead in err
    assert "directory publish" in err and slapd.root_password not in err
    with LdapSource(reader(slapd)) as source:
        assert source.find(mail).candidates == ()
        up = write_config(tmp_path / "up.toml", slapd, publish=False)
        assert main(["--config", str(up), "directory", "publish"]) == 0
        assert "1 entries created" in capsys.readouterr().out
        assert len(source.find(mail).candidates) == 1
        assert main(["--config", str(up), "directory", "publish"]) == 0
        assert "nothing changed" in capsys.readouterr().out


def test_publish_refused_by_the_directory_is_one_line(
        slapd: Slapd, cli_ca: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    slapd.add_people(people(1))
    assert main(["ca", "issue", "--email", "user00000@example.org", "--key-type", "p256",
                 "--out", str(tmp_path / "out")]) == 0
    capsys.readouterr()
    anonymous = tmp_path / "anonymous.toml"  # no bind DN: the directory lets it read only
    anonymous.write_text(f'[directory.ldap]\nurl = "{slapd.url}"\nbase_dn = "{slapd.people}"\n')
    assert main(["--config", str(anonymous), "directory", "publish"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("smimekit: error: the LDAP directory ") and len(err.splitlines()) == 1
    assert "cannot modify uid=user00000" in err and "Traceback" not in err


def test_publish_without_ldap_config_is_a_clear_error(
        cli_ca: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["directory", "publish"]) == 1
    err = capsys.readouterr().err
    assert "needs a [directory.ldap] table" in err and "Traceback" not in err


def test_ldif_export_applied_by_ldapmodify_and_parsed(
        slapd: Slapd, cli_ca: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mails = ["ann@example.org", "o'brien+x@example.org"]  # a DN value that needs escaping
    names = {"ann@example.org": "Ann Smith", "o'brien+x@example.org": "Bob Brien"}
    for mail in mails:
        assert main(["ca", "issue", "--email", mail, "--name", names[mail],
                     "--key-type", "p256", "--out", str(tmp_path / "out")]) == 0
    capsys.readouterr()
    # Active Directory form: bare attribute names, base64 values, modify by template
    assert main(["directory", "export", "--ldif", "--base-dn", "OU=Staff,DC=corp,DC=example",
                 "--dn-template", "CN={cn},{base_dn}", "-o", str(tmp_path / "ad.ldif")]) == 0
    ad = (tmp_path / "ad.ldif").read_text()
    unwrapped = ad.replace("\n ", "")
    assert unwrapped.startswith("version: 1\n")
    assert "dn: CN=Ann Smith,OU=Staff,DC=corp,DC=example\nchangetype: modify\n" \
           "replace: userCertificate\nuserCertificate:: " in unwrapped
    assert all(len(line) <= 76 for line in ad.splitlines())
    certs = ldif_values(unwrapped, "userCertificate")
    smime = ldif_values(unwrapped, "userSMIMECertificate")
    issued = {m: x509.load_pem_x509_certificate(
        (tmp_path / "out" / f"{m.replace(chr(39), '_')}.encrypt.pem").read_bytes())
        for m in mails}
    assert certs["CN=Ann Smith,OU=Staff,DC=corp,DC=example"] == [der(issued[mails[0]])]
    [bundle] = smime["CN=Bob Brien,OU=Staff,DC=corp,DC=example"]
    assert bundle.startswith(b"\x30")

    # OpenLDAP form (;binary), applied by ldapmodify to entries named by the default template
    slapd.add_ldif("".join(
        f"dn: mail={m.replace('+', chr(92) + '+')},{slapd.people}\n"
        f"objectClass: inetOrgPerson\ncn: x\nsn: x\nmail: {m}\n\n" for m in mails))
    config = write_config(tmp_path / "smimekit.toml", slapd, publish=False)
    assert main(["--config", str(config), "directory", "export", "--ldif", "--binary-option",
                 "-o", str(tmp_path / "openldap.ldif")]) == 0
    ldif = (tmp_path / "openldap.ldif").read_text()
    assert "replace: userCertificate;binary\n" in ldif
    slapd.ldap_tool("ldapmodify", input=ldif.encode())
    with LdapSource(reader(slapd)) as source:
        for mail in mails:
            [found] = source.find(mail).candidates
            assert found.certificate == issued[mail]
            assert len(found.chain) == 2


# -- bad directories, bad entries -----------------------------------------------------------


def test_unreachable_directory_is_a_clear_error() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        url = f"ldap://127.0.0.1:{closed.getsockname()[1]}"
    source = LdapSource(LdapConfig(url=url, base_dn="dc=example,dc=org", timeout=2))
    with pytest.raises(DirectoryError) as caught:
        source.find("ann@example.org")
    assert url in str(caught.value) and caught.value.source == "ldap"


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP port that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"ldap://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join(timeout=5)
    for conn in held:
        conn.close()
    listener.close()


def test_silent_directory_times_out(silent_server: str) -> None:
    source = LdapSource(LdapConfig(url=silent_server, base_dn="dc=example,dc=org", timeout=1))
    with pytest.raises(DirectoryError) as caught:
        source.find("ann@example.org")
    assert silent_server in str(caught.value)


def test_wrong_bind_password_refused_without_the_password(
        slapd: Slapd, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-secret-4711\n")
    source = LdapSource(writer(slapd, password_file=wrong))
    with pytest.raises(DirectoryError) as caught:
        source.find("ann@example.org")
    message = str(caught.value)
    assert slapd.url in message and slapd.root_dn in message
    assert "invalidCredentials" in message and "not-the-secret-4711" not in message
    # and the right one is accepted
    with LdapSource(writer(slapd)) as right:
        assert right.find("ann@example.org").candidates == ()


def test_garbage_in_an_entry_is_skipped_with_a_note(
        slapd: Slapd, cax: CertificateAuthority, pki) -> None:  # type: ignore[no-untyped-def]
    slapd.add_people(people(2))
    good = encryption_cert(cax, "user00000@example.org")
    also = encryption_cert(cax, "user00001@example.org")
    publish_all(cax, slapd)
    # a certificate slapd's syntax check lets through but that is no certificate (month 13)
    other = pki.person("garbage", "p256", issuer=(pki.root_key, pki.root)).cert
    not_before = other.not_valid_before_utc.strftime("%y%m%d%H%M%SZ").encode()
    broken = der(other).replace(not_before, b"991399999999Z")
    slapd.ldap_tool("ldapmodify", input=(
        f"dn: uid=user00001,{slapd.people}\nchangetype: modify\n"
        f"add: userCertificate;binary\n"
        f"userCertificate;binary:: {base64.b64encode(broken).decode()}\n-\n"
        # no equality rule for userSMIMECertificate in OpenLDAP: replace, not add
        f"replace: userSMIMECertificate\nuserSMIMECertificate:: "
        f"{base64.b64encode(certs_only([also, *chain_of(cax)])).decode()}\n"
        f"userSMIMECertificate:: {base64.b64encode(b'garbage!').decode()}\n").encode())
    with LdapSource(reader(slapd)) as source:
        found = source.find("user00001@example.org")
        assert [c.certificate for c in found.candidates] == [also]
        assert len(found.notes) == 2
        assert f"garbage in userCertificate of uid=user00001,{slapd.people}" in found.notes[0]
        assert "garbage in userSMIMECertificate" in found.notes[1]
        # the other entries still answer
        assert [c.certificate for c in source.find("user00000@example.org").candidates] \
            == [good]
    # and publishing leaves values it cannot read alone
    assert publish_all(cax, slapd).updated == 0


def test_filter_value_is_escaped(slapd: Slapd, cax: CertificateAuthority) -> None:
    assert escape_filter_value("a*(b)\\c\x00") == "a\\2a\\28b\\29\\5cc\\00"
    slapd.add_people(people(2))
    encryption_cert(cax, "user00000@example.org")
    publish_all(cax, slapd)
    with LdapSource(reader(slapd)) as source:
        assert source.find("*").candidates == ()
        assert source.find("user00000@example.org)(mail=*").candidates == ()


def test_tls_ldaps_and_starttls_with_the_configured_ca(
        slapd: Slapd, cax: CertificateAuthority) -> None:
    slapd.add_people(people(1))
    cert = encryption_cert(cax, "user00000@example.org")
    publish_all(cax, slapd)
    for config in (reader(slapd, url=slapd.ldaps_url, ca_file=slapd.ca_file),
                   reader(slapd, starttls=True, ca_file=slapd.ca_file)):
        with LdapSource(config) as source:
            assert [c.certificate for c in source.find("user00000@example.org").candidates] \
                == [cert]
    # the system's trust does not know the test CA: refused, not silently accepted
    with pytest.raises(DirectoryError):
        LdapSource(reader(slapd, url=slapd.ldaps_url)).find("user00000@example.org")


def test_from_config(tmp_path: Path) -> None:
    assert LdapSource.from_config(EMPTY, store=None, data_dir=tmp_path) is None
    assert LdapSource.from_config(Config(directory=DirectoryConfig()), store=None,
                                  data_dir=tmp_path) is None
    (tmp_path / "c.toml").write_text('[directory.ldap]\nurl = "ldaps://ldap.example.org"\n'
                                     'base_dn = "dc=example,dc=org"\n')
    source = LdapSource.from_config(load_config(tmp_path / "c.toml"), store=None,
                                    data_dir=tmp_path)
    assert source is not None and source.name == "ldap"
    for bad, says in (({"url": "http://x"}, "ldap:// or ldaps://"),
                      ({"bind_dn": "cn=x"}, "password_file"),
                      ({"password_file": tmp_path / "none", "bind_dn": "cn=x"}, "cannot read"),
                      ({"url": "ldaps://x", "starttls": True}, "starttls")):
        settings = {"url": "ldap://x", "base_dn": "dc=x", **bad}
        config = Config(directory=DirectoryConfig(ldap=LdapConfig(**settings)))  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match=says):
            LdapSource.from_config(config, store=None, data_dir=tmp_path)


# -- people found in the directory can be written to ----------------------------------------


@pytest.mark.slow
def test_encrypt_to_people_found_by_ldap_and_each_decrypts(
        slapd: Slapd, cax: CertificateAuthority) -> None:
    staff = people(30)
    slapd.add_people(staff)
    keys = {}
    for person in staff:
        issuance = cax.issue_generated(person.mail, name=person.cn, **FAST)
        item = next(i for i in issuance.items if i.purpose.value == "encrypt")
        keys[person.mail] = (item.key, item.cert)
    assert publish_all(cax, slapd).certificates == 30
    chosen = [staff[i].mail for i in (0, 7, 13, 21, 29)]
    with LdapSource(reader(slapd)) as source:
        found = [source.find(mail).candidates[0] for mail in chosen]
    message = (b"From: boss@example.org\r\nTo: " + b", ".join(m.encode() for m in chosen)
               + b"\r\nSubject: plans\r\n\r\nThe plans.\r\n")
    sealed = smimekit.encrypt(message, [c.certificate for c in found],
                              trust=[cax.ca.authority.root], intermediates=found[0].chain,
                              revocation=None)
    for mail in chosen:
        key, cert = keys[mail]
        assert smimekit.decrypt(sealed, key, cert).content.endswith(b"The plans.\r\n")
    outsider_key, outsider_cert = keys[staff[1].mail]
    with pytest.raises(smimekit.errors.SmimeError):
        smimekit.decrypt(sealed, outsider_key, outsider_cert)


def test_kept_connection_survives_a_directory_restart(
        slapd: Slapd, cax: CertificateAuthority) -> None:
    slapd.add_people(people(1))
    cert = encryption_cert(cax, "user00000@example.org")
    publish_all(cax, slapd)
    with LdapSource(reader(slapd)) as source:
        assert [c.certificate for c in source.find("user00000@example.org").candidates] \
            == [cert]
        slapd.stop()
        slapd.start()  # the kept connection is dead: one retry on a fresh one
        assert [c.certificate for c in source.find("user00000@example.org").candidates] \
            == [cert]
        slapd.stop()  # and a directory that is gone is an error, not a hang
        with pytest.raises(DirectoryError, match=slapd.url):
            source.find("user00000@example.org")

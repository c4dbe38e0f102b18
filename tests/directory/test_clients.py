"""Settings pushed to mail clients (issue 10), each output read back by a parser: plistlib
for the Apple profile (every UUID the Mail payload names is a payload of the profile), JSON
checked against the shape of Thunderbird's policy schema, ``openssl pkcs7 -print_certs``
for the .p7b."""

from __future__ import annotations

import json
import plistlib
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from pki import PKI, Identity

from smimekit.ca.export import RANDOM_PASSPHRASE_ITERATIONS, pkcs12_bytes
from smimekit.config import LdapConfig
from smimekit.directory.clients import (
    THUNDERBIRD_POLICY_PREFIXES,
    MailAccount,
    apple_profile,
    p7b_bytes,
    thunderbird_files,
)
from smimekit.errors import CAError, ConfigError

OPENSSL = shutil.which("openssl")
PASS = b"profile test passphrase"
# Apple's format for the certificate UUID keys (device-management, com.apple.mail.managed)
UUID = re.compile(r"^[0-9A-Za-z]{8}-[0-9A-Za-z]{4}-[0-9A-Za-z]{4}-[0-9A-Za-z]{4}-[0-9A-Za-z]{12}$")
# The keys Apple marks "presence: required" in com.apple.mail.managed
REQUIRED_MAIL_KEYS = {"EmailAccountType", "IncomingMailServerAuthentication",
                      "IncomingMailServerHostName", "OutgoingMailServerAuthentication",
                      "OutgoingMailServerHostName"}


def _p12(who: Identity, pki: PKI, tag: str) -> bytes:
    return pkcs12_bytes(who.key, who.cert, [pki.inter, pki.root], PASS,
                        friendly_name=f"{who.email} ({tag})",
                        iterations=RANDOM_PASSPHRASE_ITERATIONS)


@pytest.fixture(scope="module")
def dual(pki: PKI) -> tuple[bytes, bytes]:
    sign = pki.person("gina", "p256", key_usage="sign")
    enc = pki.person("gina-enc", "rsa2048", email="gina@example.org", key_usage="encrypt")
    return _p12(sign, pki, "sign"), _p12(enc, pki, "encrypt")


ACCOUNT = MailAccount(email="gina@example.org", incoming_host="imap.example.org",
                      outgoing_host="smtp.example.org", incoming_port=993, outgoing_port=465,
                      username="gina", name="Gina Example", encrypt_by_default=True)


def _payloads(profile: bytes) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    plist = plistlib.loads(profile)
    assert plist["PayloadType"] == "Configuration" and plist["PayloadVersion"] == 1
    by_uuid = {p["PayloadUUID"]: p for p in plist["PayloadContent"]}
    assert len(by_uuid) == len(plist["PayloadContent"])  # every UUID unique
    assert plist["PayloadUUID"] not in by_uuid
    return plist, by_uuid


def test_apple_profile_mail_payload_points_at_the_two_identities(
        dual: tuple[bytes, bytes], pki: PKI) -> None:
    sign_p12, enc_p12 = dual
    profile = apple_profile(sign_p12, encryption_p12=enc_p12, account=ACCOUNT,
                            ca_certs=[pki.inter, pki.root], organization="Example Ltd")
    plist, by_uuid = _payloads(profile)
    (mail,) = [p for p in by_uuid.values() if p["PayloadType"] == "com.apple.mail.managed"]
    assert REQUIRED_MAIL_KEYS <= set(mail)
    assert mail["EmailAccountType"] == "EmailTypeIMAP"
    assert (mail["IncomingMailServerHostName"], mail["IncomingMailServerPortNumber"]) \
        == ("imap.example.org", 993)
    assert mail["EmailAddress"] == "gina@example.org" and mail["EmailAccountName"] \
        == "Gina Example"
    assert "IncomingPassword" not in mail and "OutgoingPassword" not in mail
    for key in ("SMIMESigningCertificateUUID", "SMIMEEncryptionCertificateUUID"):
        assert UUID.match(mail[key])
        assert by_uuid[mail[key]]["PayloadType"] == "com.apple.security.pkcs12"
    assert by_uuid[mail["SMIMESigningCertificateUUID"]]["PayloadContent"] == sign_p12
    assert by_uuid[mail["SMIMEEncryptionCertificateUUID"]]["PayloadContent"] == enc_p12
    assert mail["SMIMESigningEnabled"] and mail["SMIMEEncryptionEnabled"]
    assert mail["SMIMEEncryptByDefault"] is True
    kinds = sorted(p["PayloadType"] for p in by_uuid.values())
    assert kinds == ["com.apple.mail.managed", "com.apple.security.pkcs1",
                     "com.apple.security.pkcs12", "com.apple.security.pkcs12",
                     "com.apple.security.root"]
    assert plist["PayloadIdentifier"] == "org.example.smime.gina"
    assert len({p["PayloadIdentifier"] for p in by_uuid.values()}) == len(by_uuid)


def test_apple_profile_with_one_identity_and_without_an_account(
        dual: tuple[bytes, bytes], pki: PKI) -> None:
    single, _ = dual
    _plist, by_uuid = _payloads(apple_profile(single, account=ACCOUNT, ca_certs=[pki.root],
                                              organization="Example Ltd"))
    (mail,) = [p for p in by_uuid.values() if p["PayloadType"] == "com.apple.mail.managed"]
    assert mail["SMIMESigningCertificateUUID"] == mail["SMIMEEncryptionCertificateUUID"]
    _plist, by_uuid = _payloads(apple_profile(single, account=None, ca_certs=[pki.root],
                                              organization="Example Ltd"))
    assert "com.apple.mail.managed" not in {p["PayloadType"] for p in by_uuid.values()}


@pytest.mark.parametrize("change", [
    {"incoming_host": "imap example.org"}, {"outgoing_port": 0}, {"account_type": "exchange"},
    {"email": "not-an-address"}, {"authentication": "kerberos"},
])
def test_apple_profile_refuses_a_bad_account(dual: tuple[bytes, bytes], pki: PKI,
                                             change: dict[str, Any]) -> None:
    account = MailAccount(**{**ACCOUNT.__dict__, **change})
    with pytest.raises(CAError):
        apple_profile(dual[0], account=account, ca_certs=[pki.root], organization="X")


# -- Thunderbird -------------------------------------------------------------------------------


def _check_policies(document: Any) -> None:
    """The shape of Thunderbird's policies-schema.json for the policies we write:
    Certificates {ImportEnterpriseRoots: boolean, Install: [string]}, Preferences
    {name: {Value: number|boolean|string, Status: default|locked|user|clear}}; and the
    Preferences policy's prefix allow-list."""
    assert set(document) == {"policies"}
    policies = document["policies"]
    assert set(policies) <= {"Certificates", "Preferences"}
    certs = policies["Certificates"]
    assert set(certs) <= {"ImportEnterpriseRoots", "Install"}
    assert isinstance(certs.get("ImportEnterpriseRoots", False), bool)
    assert isinstance(certs["Install"], list) and certs["Install"]
    assert all(isinstance(i, str) and i for i in certs["Install"])
    for name, pref in policies.get("Preferences", {}).items():
        assert name.startswith(THUNDERBIRD_POLICY_PREFIXES), name
        assert set(pref) <= {"Value", "Status"}
        assert isinstance(pref["Value"], int | bool | str)
        assert pref.get("Status", "default") in ("default", "locked", "user", "clear")


_PREF = re.compile(r'^defaultPref\(("[^"]+"), (.+)\);$')


def _cfg(data: bytes) -> dict[str, Any]:
    lines = data.decode().splitlines()
    assert lines[0].startswith("//")  # AutoConfig skips the first line
    out = {}
    for line in lines[1:]:
        match = _PREF.match(line)
        assert match, line
        out[json.loads(match.group(1))] = json.loads(match.group(2))
    return out


LDAP = LdapConfig(url="ldaps://ldap.example.org:636", base_dn="ou=People Ltd,dc=example,dc=org",
                  bind_dn="cn=reader,dc=example,dc=org")


def test_thunderbird_policies_install_the_root_and_autoconfig_sets_the_directory(
        pki: PKI) -> None:
    made = thunderbird_files(pki.root, LDAP)
    document = json.loads(made.files["distribution/policies.json"])
    _check_policies(document)
    assert document["policies"]["Certificates"]["Install"] == ["smimekit-root.pem"]
    assert x509.load_pem_x509_certificate(made.files["smimekit-root.pem"]) == pki.root
    prefs = _cfg(made.files["smimekit.cfg"])
    assert prefs == made.preferences
    assert prefs["ldap_2.servers.smimekit.uri"] \
        == "ldaps://ldap.example.org:636/ou=People%20Ltd,dc=example,dc=org??sub?(mail=*)"
    assert prefs["ldap_2.servers.smimekit.auth.dn"] == "cn=reader,dc=example,dc=org"
    assert prefs["ldap_2.autoComplete.useDirectory"] is True
    assert prefs["ldap_2.autoComplete.directoryServer"] == "ldap_2.servers.smimekit"
    identity = document["policies"]["Preferences"]
    assert identity["mail.identity.default.directoryServer"]["Value"] \
        == "ldap_2.servers.smimekit"
    assert not any(name.startswith("ldap_2.") for name in identity)  # policies drop them
    assert b'"general.config.filename", "smimekit.cfg"' \
        in made.files["defaults/pref/autoconfig.js"]
    assert not any(b"password" in data.lower() for data in made.files.values())


def test_thunderbird_without_a_directory_only_installs_the_root(pki: PKI) -> None:
    made = thunderbird_files(pki.root, None, install_path="/etc/ssl/org-root.pem",
                             import_enterprise_roots=True)
    document = json.loads(made.files["distribution/policies.json"])
    _check_policies(document)
    assert document["policies"] == {"Certificates": {"Install": ["/etc/ssl/org-root.pem"],
                                                     "ImportEnterpriseRoots": True}}
    assert set(made.files) == {"distribution/policies.json", "smimekit-root.pem"}
    with pytest.raises(ConfigError, match="ldap://HOST"):
        thunderbird_files(pki.root, LdapConfig(url="http://x", base_dn="dc=x"))


# -- Outlook / Windows -------------------------------------------------------------------------


@pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")
def test_p7b_is_read_by_openssl_pkcs7_print_certs(pki: PKI, tmp_path: Path) -> None:
    data = p7b_bytes([pki.inter, pki.root])
    assert pkcs7.load_der_pkcs7_certificates(data) == [pki.inter, pki.root]
    (tmp_path / "org.p7b").write_bytes(data)
    assert OPENSSL is not None
    done = subprocess.run([OPENSSL, "pkcs7", "-inform", "DER", "-print_certs", "-in",
                           str(tmp_path / "org.p7b")], capture_output=True, timeout=30,
                          check=True)
    out = done.stdout.decode()
    assert out.count("-----BEGIN CERTIFICATE-----") == 2
    assert "CN=Test Issuing CA" in out.replace(" = ", "=") and "Test Root" in out


# -- the commands ------------------------------------------------------------------------------


def test_client_settings_commands_write_what_the_parsers_read(
        dual: tuple[bytes, bytes], pki: PKI, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from smimekit.cli.main import main

    chain = tmp_path / "chain.pem"
    chain.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM)
                               for c in (pki.inter, pki.root)))
    (tmp_path / "sign.p12").write_bytes(dual[0])
    (tmp_path / "enc.p12").write_bytes(dual[1])
    config = tmp_path / "smimekit.toml"
    config.write_text('[directory.ldap]\nurl = "ldap://127.0.0.1:3389"\n'
                      'base_dn = "ou=people,dc=example,dc=org"\n')
    base = ["--data-dir", str(tmp_path / "data"), "--config", str(config),
            "directory", "client-settings"]
    assert main([*base, "apple", "--p12", str(tmp_path / "sign.p12"), "--encryption-p12",
                 str(tmp_path / "enc.p12"), "--email", "gina@example.org", "--incoming-host",
                 "imap.example.org", "--outgoing-host", "smtp.example.org", "--organization",
                 "Example Ltd", "--chain", str(chain), "-o", str(tmp_path / "g.mobileconfig")]
                ) == 0
    _plist, by_uuid = _payloads((tmp_path / "g.mobileconfig").read_bytes())
    (mail,) = [p for p in by_uuid.values() if p["PayloadType"] == "com.apple.mail.managed"]
    assert by_uuid[mail["SMIMEEncryptionCertificateUUID"]]["PayloadContent"] == dual[1]
    out = tmp_path / "tb"
    assert main([*base, "thunderbird", "--chain", str(chain), "-o", str(out)]) == 0
    _check_policies(json.loads((out / "distribution" / "policies.json").read_text()))
    assert _cfg((out / "smimekit.cfg").read_bytes())["ldap_2.servers.smimekit.uri"] \
        .startswith("ldap://127.0.0.1:3389/ou=people,dc=example,dc=org")
    assert x509.load_pem_x509_certificate((out / "smimekit-root.pem").read_bytes()) == pki.root
    capsys.readouterr()
    assert main([*base, "thunderbird", "--chain", str(chain), "-o", str(out)]) == 1
    assert "is not an empty folder" in capsys.readouterr().err
    assert main([*base, "outlook", "--chain", str(chain), "-o", str(tmp_path / "o.p7b")]) == 0
    assert pkcs7.load_der_pkcs7_certificates((tmp_path / "o.p7b").read_bytes()) \
        == [pki.inter, pki.root]
    # outside a CA's data directory, without --chain: one clear line
    assert main([*base, "outlook", "-o", str(tmp_path / "x.p7b")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--chain" in err[0]

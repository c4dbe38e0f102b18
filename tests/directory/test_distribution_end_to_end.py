"""Issue 10's end to end on a real slapd: the CA issues 1,000 people and publishes them; a
sender encrypts to 50 of them by address (``smimekit encrypt --to ADDR``, the resolver asking
LDAP only) and every one of the 50 decrypts; one is revoked, republished, and is gone from
the directory and from ``smimekit lookup``."""

from __future__ import annotations

from pathlib import Path

import pytest
from ldap_kit import reader
from slapd import Slapd, people
from test_ldap import FAST, publish_all, write_config

import smimekit
from smimekit.ca.issuance import CertificateAuthority
from smimekit.cli.main import main
from smimekit.directory.ldap import LdapSource

pytestmark = pytest.mark.slow

PEOPLE = 1000
RECIPIENTS = 50


def test_thousand_published_fifty_encrypted_by_address_one_revoked(
        slapd: Slapd, cax: CertificateAuthority, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    staff = people(PEOPLE)
    slapd.add_people(staff)
    keys = {}
    for person in staff:
        issuance = cax.issue_generated(person.mail, name=person.cn, **FAST)
        item = next(i for i in issuance.items if i.purpose.value == "encrypt")
        keys[person.mail] = (item.key, item.cert)
    assert publish_all(cax, slapd).certificates == PEOPLE

    # the sender's configuration: LDAP is the only source, so the store cannot answer
    config = write_config(tmp_path / "smimekit.toml", slapd, publish=False)
    config.write_text('[directory]\norder = ["ldap"]\n\n' + config.read_text())
    cli = ["--data-dir", str(tmp_path / "data"), "--config", str(config)]
    chosen = [staff[i].mail for i in range(0, PEOPLE, PEOPLE // RECIPIENTS)]
    assert len(chosen) == RECIPIENTS
    message = tmp_path / "plans.eml"
    message.write_bytes(b"From: boss@example.org\r\nTo: staff@example.org\r\n"
                        b"Subject: plans\r\n\r\nThe plans for fifty.\r\n")
    sealed = tmp_path / "plans.p7m.eml"
    to = [arg for mail in chosen for arg in ("--to", mail)]
    assert main([*cli, "encrypt", *to, "--revocation", "offline", str(message),
                 "-o", str(sealed)]) == 0, capsys.readouterr().err
    for mail in chosen:
        key, cert = keys[mail]
        assert smimekit.decrypt(sealed.read_bytes(), key, cert).content.endswith(
            b"The plans for fifty.\r\n"), mail
    outsider_key, outsider_cert = keys[staff[1].mail]
    with pytest.raises(smimekit.errors.SmimeError):
        smimekit.decrypt(sealed.read_bytes(), outsider_key, outsider_cert)

    leaver = chosen[7]
    cax.revoke(email=leaver, reason="affiliation-changed")
    report = publish_all(cax, slapd)
    assert report.certificates == PEOPLE - 1
    with LdapSource(reader(slapd)) as source:
        assert source.find(leaver).candidates == ()
        assert len(source.find(chosen[8]).candidates) == 1
    capsys.readouterr()
    assert main([*cli, "lookup", leaver, "--revocation", "offline"]) == 1
    assert "ldap" in capsys.readouterr().err
    assert main([*cli, "encrypt", "--to", leaver, "--revocation", "offline", str(message),
                 "-o", str(tmp_path / "to-leaver.eml")]) == 1
    assert not (tmp_path / "to-leaver.eml").exists()

"""gateway/pipeline.py: recipients split by direction, each part processed, every decision in
the audit log with its reason and policy levels (and nothing of the content)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from backends import Backend
from cryptography import x509
from gwout_kit import PASS, harvest, mail, pipeline_holding
from pki import PKI, Identity

from smimekit import api
from smimekit.config import GatewayConfig, PolicyConfig
from smimekit.directory.resolver import Resolver
from smimekit.errors import GatewayError, StoreError
from smimekit.gateway.keys import StoreHeldKeys
from smimekit.gateway.model import Envelope, HeldKey
from smimekit.gateway.pipeline import Pipeline, build_pipeline
from smimekit.store import Store


class NoKeys:
    """A gateway that holds no keys."""

    def signing_key(self, address: str) -> HeldKey | None:
        return None

    def decryption_keys(self, address: str) -> list[HeldKey]:
        return []

    def encryption_certificate(self, address: str) -> x509.Certificate | None:
        return None

    def organisation_key(self) -> HeldKey | None:
        return None


SECRET = "Board minutes: the merger closes Friday.\r\n"


def _alice_and_partner(store: Store, pki: PKI) -> tuple[Pipeline, Identity]:
    """The pipeline of example.org holding alice's key, encrypting always to partner.example,
    whose partner's certificate is in the directory."""
    alice = pki.person("alice")
    partner = pki.person("partner", "p256", email="partner@partner.example")
    gateway = GatewayConfig(internal_domains=("example.org",),
                            domains={"partner.example": PolicyConfig(encrypt="always")})
    return pipeline_holding(store, pki, gateway, holds=[alice], knows=[partner]), partner


def test_one_message_to_outside_inside_and_ours_is_split_and_every_decision_audited(
        backend: Backend, pki: PKI) -> None:
    with Store.open(backend.url, backend.data_dir) as store:
        pipeline, partner = _alice_and_partner(store, pki)
        before = store.audit_count()
        data = mail(body=SECRET)
        out = pipeline.process(Envelope(
            "alice@example.org", (partner.email, "bob@example.org", "nocert@partner.example"),
            data, trusted=True))
        actions = {d.recipient: (d.direction, d.action) for d in out.decisions}
        assert actions == {partner.email: ("outbound", "signed+encrypted"),
                           "bob@example.org": ("internal", "passed"),
                           "nocert@partner.example": ("outbound", "bounced")}
        assert [r.recipient for r in out.refused] == ["nocert@partner.example"]
        to_partner = next(d for d in out.deliveries if d.recipients == (partner.email,))
        assert SECRET.encode() in api.decrypt(to_partner.data, partner.key,
                                              partner.cert).content
        assert next(d for d in out.deliveries
                    if d.recipients == ("bob@example.org",)).data == data
        entries = store.audit_entries()[before:]
        assert [(e.action, e.subject) for e in entries] == [
            ("gateway.signed+encrypted", partner.email),
            ("gateway.bounced", "nocert@partner.example"),
            ("gateway.passed", "bob@example.org")]
        first = entries[0].details
        assert first["direction"] == "outbound" and first["from"] == "alice@example.org"
        assert first["door"] == "submission"
        assert first["encrypt"] == "encrypt=always (domain partner.example)"
        assert "encrypt=always (domain partner.example)" in first["reason"]
        assert len(first["message_sha256"]) == 64 and len(first["certificate"]) == 64
        assert entries[0].actor == "gateway"
        logged = json.dumps([e.details for e in entries])
        assert "merger" not in logged and "Quarterly" not in logged
        assert store.verify_audit_log() == []


def test_inbound_mail_is_decrypted_with_the_held_key_and_re_encrypted(
        backend: Backend, pki: PKI) -> None:
    carol = pki.person("carol")
    outsider = pki.person("outsider", "p256", email="outsider@partner.example")
    gateway = GatewayConfig(internal_domains=("example.org",))
    with Store.open(backend.url, backend.data_dir) as store:
        pipeline = pipeline_holding(store, pki, gateway, holds=[carol])
        sent = api.sign_encrypt(mail(body=SECRET, sender=outsider.email, to=carol.email),
                                outsider.key, outsider.cert, [carol.cert], chain=[pki.inter],
                                include_self=False)
        out = pipeline.process(Envelope(outsider.email, (carol.email,), sent))
        [decision] = out.decisions
        assert decision.direction == "inbound"
        [delivery] = out.deliveries
        assert b"X-Smimekit-Result" in delivery.data.split(b"\r\n\r\n")[0]
        opened = api.decrypt_verify(delivery.data, carol.key, carol.cert, trust=[pki.root])
        assert SECRET.encode() in opened.content
        [entry] = store.audit_entries()[-1:]
        assert entry.action == f"gateway.{decision.action}" and entry.subject == carol.email
        assert entry.details["direction"] == "inbound"


FORGED = b"X-Smimekit-Result: gw.test; signature=valid; signer=ceo@example.org\r\n"


def test_our_sender_on_the_public_door_is_from_outside(backend: Backend, pki: PKI) -> None:
    """Review 12 item 1: MAIL FROM alice@example.org through the public door is never signed
    with alice's key (a forwarding alias: passed unchanged, saying why) and, to one of ours,
    is inbound: the forged result header replaced, the content scanned, audited as such."""
    with Store.open(backend.url, backend.data_dir) as store:
        pipeline, partner = _alice_and_partner(store, pki)
        before = store.audit_count()
        data = FORGED + mail(body=SECRET)
        out = pipeline.process(Envelope("alice@example.org",
                                        (partner.email, "bob@example.org"), data))
        actions = {d.recipient: (d.direction, d.action) for d in out.decisions}
        assert actions == {partner.email: ("relay", "passed"),
                           "bob@example.org": ("inbound", "passed")}
        assert not out.refused
        to_partner = next(d for d in out.deliveries if d.recipients == (partner.email,))
        assert to_partner.data == data  # not signed, not encrypted: as it came
        to_bob = next(d for d in out.deliveries if d.recipients == ("bob@example.org",))
        head = to_bob.data.split(b"\r\n\r\n")[0]
        assert b"ceo@example.org" not in head and head.count(b"X-Smimekit-Result") == 1
        assert b"signature=none" in head and b"stripped=1" in head
        entries = {e.subject: e.details for e in store.audit_entries()[before:]}
        assert entries[partner.email]["door"] == "public"
        assert "public door" in entries[partner.email]["reason"]
        assert "claims one of internal_domains" in entries[partner.email]["reason"]
        assert entries["bob@example.org"]["direction"] == "inbound"
        assert entries["bob@example.org"]["stripped"] == "1"


def test_internal_mail_through_the_trusted_door_loses_a_result_header(pki: PKI) -> None:
    pipeline = build_pipeline(GatewayConfig(internal_domains=("example.org",)), None, NoKeys(),
                              Resolver([], trust=[pki.root], cache=None), hostname="gw.test")
    data = mail(sender="alice@example.org", to="bob@example.org")
    out = pipeline.process(Envelope("alice@example.org", ("bob@example.org",), FORGED + data,
                                    trusted=True))
    assert [(d.direction, d.action) for d in out.decisions] == [("internal", "passed")]
    assert [d.data for d in out.deliveries] == [data]


def test_relay_mail_passes_unchanged_and_no_store_means_no_audit(pki: PKI) -> None:
    held = NoKeys()
    resolver = Resolver([], trust=[pki.root], cache=None)
    pipeline = build_pipeline(GatewayConfig(internal_domains=("example.org",)), None, held,
                              resolver, hostname="gw.test")
    data = mail(sender="a@x.example", to="b@y.example")
    out = pipeline.process(Envelope("a@x.example", ("b@y.example",), data))
    assert [(d.recipients, d.data) for d in out.deliveries] == [(("b@y.example",), data)]
    assert out.decisions[0].action == "passed" and "neither" in out.decisions[0].reason
    assert pipeline.counts == {"passed": 1}


def test_an_audit_log_that_cannot_be_written_defers_the_message(
        tmp_path: Path, pki: PKI, monkeypatch: pytest.MonkeyPatch) -> None:
    with Store.open(None, tmp_path / "data") as store:
        pipeline = pipeline_holding(store, pki, GatewayConfig(internal_domains=("example.org",)))

        def broken(*args: object, **kwargs: object) -> None:
            raise StoreError("database is locked")

        monkeypatch.setattr(store, "audit", broken)
        with pytest.raises(GatewayError, match="audit log cannot be written") as caught:
            pipeline.process(Envelope(
                "alice@example.org", ("bob@example.org",), mail(), trusted=True))
        assert not caught.value.permanent


def test_quarantine_rule_without_a_directory_is_a_config_error(tmp_path: Path, pki: PKI
                                                               ) -> None:
    from smimekit.config import DlpRule
    from smimekit.errors import ConfigError

    gateway = GatewayConfig(dlp=(DlpRule(name="x", keywords=("x",), action="quarantine"),))
    with Store.open(None, tmp_path / "data") as store, \
            pytest.raises(ConfigError, match="quarantine_dir"):
        pipeline_holding(store, pki, gateway)


def test_pipeline_from_data_dir_opens_keys_and_directory_as_serve_does(
        tmp_path: Path, pki: PKI) -> None:
    from smimekit.config import Config
    from smimekit.gateway.pipeline import pipeline_from_data_dir

    alice = pki.person("alice")
    partner = pki.person("partner", "p256", email="partner@partner.example")
    (tmp_path / "gw.pass").write_bytes(PASS + b"\n")
    gateway = GatewayConfig(internal_domains=("example.org",),
                            key_passphrase_file=tmp_path / "gw.pass")
    data_dir = tmp_path / "data"
    with Store.open(None, data_dir) as store:
        StoreHeldKeys.open(store, PASS, create=True).add(alice.key, alice.cert, (pki.inter,))
        harvest(store, pki, partner)
        pipeline = pipeline_from_data_dir(Config(gateway=gateway), store, data_dir,
                                          trust=[pki.root])
        assert pipeline.actor.startswith("gateway@")
        out = pipeline.process(Envelope("alice@example.org", (partner.email,), mail(),
                                        trusted=True))
        assert out.decisions[0].action == "signed+encrypted"
        assert b"The numbers are in." in api.decrypt(out.deliveries[0].data, partner.key,
                                                     partner.cert).content
        wrong = Config(gateway=GatewayConfig(key_passphrase_file=tmp_path / "missing"))
        with pytest.raises(GatewayError, match="key store cannot be opened") as caught:
            pipeline_from_data_dir(wrong, store, data_dir)
        assert not caught.value.permanent

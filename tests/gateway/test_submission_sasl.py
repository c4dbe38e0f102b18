"""The gateway's trusted door behind real SASL submission: docs/gateway.md's submission lines
(``smtpd_sasl_auth_enable``, ``permit_sasl_authenticated,reject`` as client and relay
restrictions, ``reject_sender_login_mismatch`` over a ``sender_login`` hash map) run by a
private Postfix (tests/postfix.py, ``sasl_users``) with Cyrus SASL and a sasldb, in front of
``smimekit gateway serve`` with the real pipeline (tests/gwhome.py: the gateway holds the keys of
alice@example.org and her colleague bob@example.org). swaks logs in with AUTH PLAIN after
STARTTLS (``smtpd_tls_security_level=encrypt``, as in production); without STARTTLS the door
offers no AUTH and takes no mail.

Only a logged-in user reaches the trusted door, and only as an address the login owns; the
public door takes the same claim of ours and never signs it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from gwhome import make_home
from gwnodes import PostfixRig, postfix_rig
from pki import PKI
from postfix import require_sasl, swaks

from smimekit import api
from smimekit.store import Store

pytestmark = [pytest.mark.interop, pytest.mark.slow]

PASSWORDS = {"alice@example.org": "alice's submission password",
             "bob@example.org": "bob's submission password"}
PARTNER = "partner@partner.example"


class Rig(PostfixRig):

    def submit(self, sender: str, to: str, *, login: str | None = None,
               password: str | None = None, subject: str = "test", public: bool = False,
               starttls: bool = True) -> subprocess.CompletedProcess[str]:
        """One message with swaks to the submission door (or the public one), logged in as
        ``login`` when given (AUTH PLAIN), after STARTTLS on the submission door unless
        ``starttls`` is false; stdout shows the server's replies."""
        port = self.postfix.smtpd_port if public else self.postfix.submission_port
        tls = [] if public or not starttls else ["--tls"]
        auth = [] if login is None else [
            "--auth", "PLAIN", "--auth-user", login,
            "--auth-password", PASSWORDS[login] if password is None else password]
        return swaks(port, sender=sender, to=[to], subject=subject, extra=tls + auth,
                     transcript=True)

    def arrived(self, count: int) -> None:
        self.postfix.wait(lambda: len(self.sink.received) >= count,
                          f"{count} message(s) at the sink")
        self.postfix.wait(lambda: not self.postfix.queued(), "an empty Postfix queue")

    def gateway_handed(self) -> list[str]:
        """Evidence of each message the gateway was handed (either door): after the queue
        Postfix's log lines of its delivery to a gateway port; before the queue (the proxy
        filter logs no delivery) the node's own log line of each message it answered."""
        if self.node.attach == "before-queue":
            return [line for line in self.node.log.read_text().splitlines()
                    if " message " in line and " recipient(s): " in line]
        doors = (f"127.0.0.1]:{self.node.port},", f"127.0.0.1]:{self.node.submission_port},")
        return [line for line in self.postfix.log().splitlines()
                if any(f"relay=127.0.0.1[{door}" in line for door in doors)]

    def handed_at(self, port: int) -> bool:
        """Whether a message reached the gateway at ``port``: Postfix's log after the queue;
        before it the audit's door (checked by the callers) is the evidence, and this only
        says that the gateway was handed something."""
        handed = self.gateway_handed()
        if self.node.attach == "before-queue":
            return bool(handed)
        return any(f":{port}," in line for line in handed)

    def audit(self) -> dict[str, dict[str, str]]:
        """The gateway's decisions so far: recipient -> action and details."""
        with Store.open(None, self.home.data_dir, create=False) as store:
            return {e.subject: {"action": e.action, **e.details}
                    for e in store.audit_entries() if e.action.startswith("gateway.")}


@pytest.fixture(params=["after-queue", "before-queue"])
def rig(tmp_path: Path, pki: PKI, request: pytest.FixtureRequest) -> Iterator[Rig]:
    """The SASL submission door with the gateway after the queue (content filter) and before
    it (proxy filter)."""
    require_sasl()
    home = make_home(tmp_path / "home", pki)
    with postfix_rig(tmp_path, home, Rig, attach=request.param,
                     sasl_users=dict(PASSWORDS)) as rig:
        yield rig


def _refusal(sent: subprocess.CompletedProcess[str]) -> str:
    """The server's error reply in a swaks transcript (its ``<**`` line, ``<~*`` inside
    TLS)."""
    errors = [line[3:].strip() for line in sent.stdout.splitlines()
              if line.startswith(("<**", "<~*"))]
    assert sent.returncode != 0 and errors, sent.stdout + sent.stderr
    return errors[0]


def _opened(rig: Rig, data: bytes) -> tuple[str, tuple[str, ...]]:
    """A message to the partner, decrypted with the partner's key and verified: its (protected)
    Subject and its signers' addresses."""
    home = rig.home
    opened = api.decrypt_verify(data, home.partner.key, home.partner.cert,
                                trust=[_root(rig)], revocation=None)
    assert opened.verdict.encrypted and opened.verdict.valid
    signers = tuple(address for signer in opened.verdict.signers for address in signer.email)
    return str(opened.as_message()["Subject"]), signers


def _root(rig: Rig) -> object:
    from cryptography import x509

    from smimekit.validation.trust import TrustStore

    [root] = [c for c in TrustStore(rig.home.data_dir).anchors()
              if isinstance(c, x509.Certificate)]
    return root


def _control(rig: Rig) -> None:
    """Alice's legitimate message after a refused one: once it is at the sink, whatever the
    refused one could have become would be there too."""
    sent = rig.submit("alice@example.org", PARTNER, login="alice@example.org",
                      subject="control")
    assert sent.returncode == 0, sent.stdout + sent.stderr
    rig.arrived(1)
    [got] = rig.sink.received
    assert got.mail_from == "alice@example.org"
    assert _opened(rig, got.data) == ("control", ("alice@example.org",))


def test_submission_without_login_is_refused_before_the_gateway(rig: Rig) -> None:
    sent = rig.submit("alice@example.org", PARTNER, subject="no login")
    assert _refusal(sent).startswith("554 5.7.1 ")
    assert "Client host rejected: Access denied" in sent.stdout
    assert rig.postfix.queued() == [] and rig.sink.received == []
    assert rig.gateway_handed() == [] and rig.audit() == {}
    _control(rig)


def test_without_starttls_the_door_offers_no_login_and_takes_no_mail(rig: Rig) -> None:
    """The password never crosses the network in clear: before STARTTLS the submission door
    does not offer AUTH, and refuses MAIL with 530 (Must issue a STARTTLS command first)."""
    sent = rig.submit("alice@example.org", PARTNER, subject="in clear", starttls=False)
    assert "250-STARTTLS" in sent.stdout and "AUTH" not in sent.stdout
    assert _refusal(sent).startswith("530 5.7.0 Must issue a STARTTLS command first")
    assert rig.postfix.queued() == [] and rig.gateway_handed() == [] and rig.audit() == {}
    sent = rig.submit("alice@example.org", PARTNER, login="alice@example.org",
                      subject="in clear", starttls=False)  # swaks will not AUTH unoffered
    assert sent.returncode != 0 and "AUTH" not in sent.stdout.replace("--auth", "")
    assert "sasl_username" not in rig.postfix.log()
    assert rig.postfix.queued() == [] and rig.gateway_handed() == [] and rig.audit() == {}
    _control(rig)


def test_a_wrong_password_gets_535_and_nothing_is_delivered(rig: Rig) -> None:
    sent = rig.submit("alice@example.org", PARTNER, login="alice@example.org",
                      password="not alice's password", subject="wrong password")
    assert _refusal(sent).startswith("535 5.7.8 ")
    assert "sasl_username=alice@example.org" in rig.postfix.log()  # the failure is logged
    assert rig.postfix.queued() == [] and rig.gateway_handed() == [] and rig.audit() == {}
    _control(rig)


def test_alice_logged_in_as_herself_is_signed_and_encrypted(rig: Rig) -> None:
    sent = rig.submit("alice@example.org", PARTNER, login="alice@example.org",
                      subject="signed")
    assert sent.returncode == 0, sent.stdout + sent.stderr
    # swaks marks the replies it read inside TLS with "<~": the login went encrypted
    assert "<~  235 2.7.0 Authentication successful" in sent.stdout
    assert "220 2.0.0 Ready to start TLS" in sent.stdout
    rig.arrived(1)
    [got] = rig.sink.to(PARTNER)
    assert b"Hello from swaks." not in got.data  # encrypted (the home's "if-possible")
    assert _opened(rig, got.data) == ("signed", ("alice@example.org",))
    entry = rig.audit()[PARTNER]
    assert (entry["door"], entry["direction"]) == ("submission", "outbound")
    assert entry["action"] == "gateway.signed+encrypted"
    assert "sasl_method=PLAIN, sasl_username=alice@example.org" in rig.postfix.log()
    assert rig.handed_at(rig.node.submission_port)


def test_alice_logged_in_cannot_send_as_her_colleague(rig: Rig) -> None:
    """reject_sender_login_mismatch: bob@example.org belongs to bob's login, so alice's
    session may not take it as its envelope sender; the gateway, which holds bob's key too,
    never sees the message."""
    sent = rig.submit("bob@example.org", PARTNER, login="alice@example.org",
                      subject="as bob")
    assert "235 2.7.0 Authentication successful" in sent.stdout
    reply = _refusal(sent)
    assert reply.startswith("553 5.7.1 <bob@example.org>: Sender address rejected:")
    assert "not owned by user alice@example.org" in reply
    assert rig.postfix.queued() == [] and rig.gateway_handed() == [] and rig.audit() == {}
    _control(rig)  # only alice's message arrives, signed by alice alone
    assert all(m.mail_from != "bob@example.org" for m in rig.sink.received)


def test_the_same_claim_on_the_public_door_arrives_unsigned(rig: Rig) -> None:
    """MAIL FROM alice on port 25, no login (loopback is in mynetworks, as a relaying host of
    ours would be): Postfix takes it, the gateway's public door passes it as sent, never
    signed with alice's key (tests/gateway/test_postfix_end_to_end.py has the same through a
    forwarding alias, and a forged colleague)."""
    sent = rig.submit("alice@example.org", PARTNER, subject="forged", public=True)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert "AUTH" not in sent.stdout  # the public door offers no login at all
    rig.arrived(1)
    [got] = rig.sink.to(PARTNER)
    head, _, body = got.data.partition(b"\r\n\r\n")
    assert b"pkcs7" not in got.data and b"multipart/signed" not in head
    assert b"Hello from swaks." in body
    assert rig.handed_at(rig.node.port)
    entry = rig.audit()[PARTNER]
    assert (entry["door"], entry["action"]) == ("public", "gateway.passed")
    assert "claims one of internal_domains" in entry["reason"]

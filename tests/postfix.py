"""A real Postfix for the gateway's tests, with its own configuration and queue in a test's
tmp_path and its listeners on loopback ports (Debian's postfix package, as root).

The layout is Postfix's FILTER_README "advanced content filter": the smtpd on
:attr:`Postfix.smtpd_port` (the public door, port 25 in production) queues mail with
``content_filter = scan:[127.0.0.1]:<gateway>`` and ``receive_override_options =
no_address_mappings``; the ``scan`` transport (Postfix's smtp client) hands it to the gateway;
the gateway hands it back to the second smtpd on :attr:`Postfix.reinject_port` (``-o
content_filter=`` and the override options, so it is not filtered twice; address mappings such
as ``virtual_alias_maps`` apply there, after the filter); Postfix then relays everything to
``relayhost = [127.0.0.1]:<sink>``, the test's final destination. With
``attach="before-queue"`` (SMTPD_PROXY_README) the public and submission smtpds have the
gateway's listeners as their ``smtpd_proxy_filter`` instead: one queue pass, behind the same
re-injection smtpd.

The smtpd on :attr:`Postfix.submission_port` is the trusted door (submission, port 587 in
production): its mail goes to the gateway's ``listen_submission`` port when :meth:`start` is
given one (else to the same port as the public door), with address mappings applied before
the filter (so an alias of ours that forwards outside is outbound to the gateway, under its
encryption and DLP policy). By default it takes mail from loopback
without a login: what the gateway trusts is the port it is handed the mail on, which the
deployment (docs/gateway.md) reserves for SASL-authenticated senders. Given ``sasl_users``
(login -> password), it runs docs/gateway.md's submission lines for real: Cyrus SASL with a
sasldb (``saslpasswd2``), ``permit_sasl_authenticated,reject`` as client and relay
restrictions, and ``reject_sender_login_mismatch`` over a ``sender_login`` hash map
(``postmap``) in which each login owns the address it is named for (``sender_login`` to say
otherwise), and TLS as in production: ``smtpd_tls_security_level=encrypt``, so no AUTH
and no mail before STARTTLS, with a throwaway certificate (loopback.tls_files).

Postfix's master opens its lock file in ``data_directory`` by its full path as the
``postfix`` user, which cannot pass pytest's 0700 temporary directories (other pytest runs
make them 0700 again at any time): that one directory is a private ``mkdtemp`` under /tmp,
removed at :meth:`Postfix.stop`. The SASL configuration and sasldb live there too: the
``postfix`` user reads the sasldb at each login. Configuration, queue and log stay in the
test's tmp_path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from loopback import free_port, tls_files, wait_until

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
POSTQUEUE = shutil.which("postqueue") or "/usr/sbin/postqueue"
POSTMAP = shutil.which("postmap") or "/usr/sbin/postmap"
SASLPASSWD2 = shutil.which("saslpasswd2") or "/usr/sbin/saslpasswd2"


def require_postfix() -> None:
    """Skip unless Postfix and swaks are installed and we are root (Postfix starts as root)."""
    if not Path(POSTFIX).exists():
        pytest.skip("Postfix is not installed (make peers)")
    if shutil.which("swaks") is None:
        pytest.skip("swaks is not installed (make peers)")
    if os.geteuid() != 0:
        pytest.skip("a private Postfix instance must be started as root")


def require_sasl() -> None:
    """Skip unless Cyrus SASL's sasldb tool and its PLAIN and sasldb plugins are installed
    (Debian's sasl2-bin and libsasl2-modules), and swaks can STARTTLS."""
    require_postfix()
    if not Path(SASLPASSWD2).exists():
        pytest.skip("saslpasswd2 is not installed (make peers: sasl2-bin)")
    for plugin, package in (("libplain", "libsasl2-modules"), ("libsasldb", "libsasl2-modules-db")):
        if not any(Path("/usr/lib").glob(f"*/sasl2/{plugin}.so*")):
            pytest.skip(f"Cyrus SASL's {plugin} plugin is not installed (make peers: {package})")
    support = subprocess.run(["swaks", "--support"], capture_output=True, text=True,
                             timeout=30, check=False)
    if "=== TLS supported" not in support.stdout + support.stderr:
        pytest.skip("swaks cannot STARTTLS (make peers: libnet-ssleay-perl,"
                    " libio-socket-ssl-perl)")


MASTER_CF = """\
# The smtpd the world (the test) talks to: it queues, the content filter comes later;
# address mappings (virtual aliases) only after the filter (FILTER_README).
127.0.0.1:{smtpd_port} inet n - n - - smtpd
  -o receive_override_options={front_overrides}{front_options}
# The submission door: its own content filter, the gateway's trusted listener; aliases
# expanded before the filter, so the gateway's outbound policy sees where mail really goes.
127.0.0.1:{submission_port} inet n - n - - smtpd
  -o content_filter={submission_filter}{submission_options}{submission_sasl}
# FILTER_README advanced content filter: Postfix's smtp client to the gateway ...
scan      unix  -       -       n       -       {maxproc} smtp
  -o disable_mime_output_conversion=yes
  -o smtp_generic_maps=
  -o smtp_data_done_timeout=1200s
# ... and the smtpd the gateway hands mail back to: not filtered again.
127.0.0.1:{reinject_port} inet n - n - - smtpd
  -o content_filter=
  -o receive_override_options=no_unknown_recipient_checks,no_header_body_checks,no_milters
  -o smtpd_helo_restrictions=
  -o smtpd_client_restrictions=
  -o smtpd_sender_restrictions=
  -o smtpd_relay_restrictions=
  -o smtpd_recipient_restrictions={reinject_recipient_restrictions}
  -o smtpd_data_restrictions=
  -o mynetworks=127.0.0.0/8
  -o smtpd_authorized_xforward_hosts=127.0.0.0/8
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
# TLS on the submission door (with sasl_users): smtpd takes its entropy from tlsmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
"""

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {data}
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.gateway.test
mydomain = gateway.test
myorigin = $myhostname
mydestination =
alias_maps =
alias_database =
local_recipient_maps =
biff = no
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
# Every message goes through the gateway, then to the test's sink.
{content_filter}
relayhost = [127.0.0.1]:{sink_port}
# Forwarding aliases (Postfix.virtual), expanded after the filter; no virtual alias domain.
virtual_alias_maps = texthash:{conf}/virtual
virtual_alias_domains =
# Quick retries for tests (defaults: 300s, 300s, 4000s).
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
smtp_connect_timeout = 5s
message_size_limit = {message_size_limit}
{sasl_config}
"""


ATTACHMENTS = ("after-queue", "before-queue")

# docs/gateway.md's submission lines ("Deployment", step 5), TLS included: a throwaway
# certificate from loopback.tls_files (swaks does not check it). Postfix's default
# smtpd_sasl_type is cyrus and smtpd_sasl_path smtpd: Cyrus reads smtpd.conf from
# cyrus_sasl_config_path, which Debian's Postfix ignores for its own "$config_directory/sasl"
# (debian/patches/07_sasl_config.diff): the harness sets the one and writes the other.
SUBMISSION_SASL = """
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=encrypt
  -o smtpd_tls_cert_file={conf}/tls/server.pem
  -o smtpd_tls_key_file={conf}/tls/server.key
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
  -o smtpd_sender_login_maps=hash:{conf}/sender_login
  -o smtpd_sender_restrictions=reject_sender_login_mismatch
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject"""

SMTPD_CONF = """\
pwcheck_method: auxprop
auxprop_plugin: sasldb
sasldb_path: {sasldb}
mech_list: PLAIN LOGIN
"""


class Postfix:
    """One private Postfix instance: :meth:`start`, :meth:`stop`, its queue and its log.

    ``attach``: how the gateway is attached. ``"after-queue"`` (the default) is FILTER_README's
    advanced content filter (two queue passes); ``"before-queue"`` is SMTPD_PROXY_README's
    proxy filter: each front smtpd hands each message to the gateway during the client's
    session (``smtpd_proxy_filter``, ``smtpd_proxy_options = speed_adjust``), the gateway to the
    re-injection smtpd, which queues it once; the client's reply is the gateway's.
    """

    def __init__(self, root: Path, *, sink_port: int, maxproc: int = 4,
                 message_size_limit: int = 10_240_000,
                 virtual: dict[str, str] | None = None,
                 map_before_filter: bool = False, attach: str = "after-queue",
                 sasl_users: dict[str, str] | None = None,
                 sender_login: dict[str, str] | None = None) -> None:
        """``virtual``: forwarding aliases (``virtual_alias_maps``), address -> target;
        ``map_before_filter``: the public door expands them before the filter (the mistake
        FILTER_README warns about: the gateway sees the alias's target). ``sasl_users``:
        the submission door takes mail only from these logins (login -> password), each
        sending only as the addresses ``sender_login`` gives it (address -> login; by
        default each login's own name)."""
        if attach not in ATTACHMENTS:
            raise ValueError(f"attach must be one of {ATTACHMENTS}, not {attach!r}")
        self.attach = attach
        self.gateway_host = "127.0.0.1"
        self.root = root
        self.conf = root / "conf"
        self.gateway_port: int | None = 0
        self.submission_gateway_port: int | None = None
        self.sink_port = sink_port
        self.smtpd_port, self.reinject_port = free_port(), free_port()
        self.submission_port = free_port()
        self.virtual = dict(virtual or {})
        self.map_before_filter = map_before_filter
        self.maxproc = maxproc
        self._data_parent: Path | None = None
        self.data = Path()
        self.message_size_limit = message_size_limit
        self.sasl_users = dict(sasl_users or {})
        self.sender_login = (dict(sender_login) if sender_login is not None
                             else {login: login for login in self.sasl_users})
        self.defer_file = self.conf / "defer_recipients"
        """A texthash table the re-injection smtpd consults: "addr 450 reason" lines make it
        defer a recipient (change it, then :meth:`reload`)."""

    def _write_config(self) -> None:
        self.conf.mkdir(parents=True, exist_ok=True)
        (self.root / "queue").mkdir(exist_ok=True)
        self._data_parent = Path(tempfile.mkdtemp(prefix="smimekit-postfix-"))
        self._data_parent.chmod(0o711)
        self.data = self._data_parent / "data"
        self.data.mkdir()
        shutil.chown(self.data, "postfix", "postfix")
        self.defer_file.touch()
        (self.conf / "virtual").write_text("".join(f"{a} {t}\n"
                                                   for a, t in self.virtual.items()))
        restrictions = (f"check_recipient_access,texthash:{self.defer_file},"
                        "permit_mynetworks,reject")
        submission = self.submission_gateway_port or self.gateway_port
        before = self.attach == "before-queue"
        (self.conf / "master.cf").write_text(MASTER_CF.format(
            smtpd_port=self.smtpd_port, reinject_port=self.reinject_port,
            submission_port=self.submission_port,
            front_overrides="" if self.map_before_filter else "no_address_mappings",
            front_options=(self.proxy_options(self.gateway_port, self.gateway_host)
                           if before and self.gateway_port else ""),
            submission_filter=(f"scan:[127.0.0.1]:{submission}"
                               if submission and not before else ""),
            submission_options=(self.proxy_options(submission, self.gateway_host)
                                if before and submission else ""),
            submission_sasl=self._write_sasl() if self.sasl_users else "",
            maxproc=self.maxproc, reinject_recipient_restrictions=restrictions))
        if not self.gateway_port:
            content_filter = "# no content filter: Postfix alone"
        elif before:
            content_filter = "# no content filter: the gateway is a before-queue proxy"
        else:
            content_filter = f"content_filter = scan:[127.0.0.1]:{self.gateway_port}"
        (self.conf / "main.cf").write_text(MAIN_CF.format(
            root=self.root, data=self.data, conf=self.conf, content_filter=content_filter,
            sink_port=self.sink_port,
            message_size_limit=self.message_size_limit,
            sasl_config=(f"cyrus_sasl_config_path = {self.conf / 'sasl'}"
                         if self.sasl_users else "")))
        if self.sasl_users:
            self._postmap_sender_login()

    def _write_sasl(self) -> str:
        """The sasldb, Cyrus's smtpd.conf and the sender_login map; the submission
        smtpd's options that use them."""
        assert self._data_parent is not None
        # the sasldb where the postfix user can reach it at each login; smtpd.conf is read
        # as root when smtpd starts
        db_dir = self._data_parent / "sasldb"
        db_dir.mkdir()
        db_dir.chmod(0o755)
        sasldb = db_dir / "sasldb2"
        for login, password in self.sasl_users.items():
            # -p: the password on stdin; -c: create; -f: this sasldb, not /etc/sasldb2. A
            # login with "@" is stored as user and realm, as Cyrus splits it at login.
            user, _, realm = login.rpartition("@") if "@" in login else (login, "", "")
            result = subprocess.run(
                [SASLPASSWD2, "-f", str(sasldb), "-p", "-c",
                 *(["-u", realm] if realm else []), user],
                input=password.encode(), capture_output=True, timeout=30, check=False)
            if result.returncode != 0:
                raise AssertionError(f"saslpasswd2 {login} failed:"
                                     f" {result.stderr.decode(errors='replace')}")
        # smtpd reads it as the postfix user at each login
        shutil.chown(sasldb, "root", "postfix")
        sasldb.chmod(0o640)
        (self.conf / "sasl").mkdir(exist_ok=True)
        (self.conf / "sasl" / "smtpd.conf").write_text(SMTPD_CONF.format(sasldb=sasldb))
        (self.conf / "sender_login").write_text(
            "".join(f"{address} {login}\n" for address, login in self.sender_login.items()))
        tls = self.conf / "tls"
        tls.mkdir(mode=0o700)
        tls_files(tls)  # ca.pem, server.pem, server.key: read by smtpd as root
        return SUBMISSION_SASL.format(conf=self.conf)

    def _postmap_sender_login(self) -> None:
        """``postmap`` the sender_login map (it needs main.cf)."""
        result = subprocess.run([POSTMAP, "-c", str(self.conf),
                                 f"hash:{self.conf / 'sender_login'}"],
                                capture_output=True, timeout=30, check=False)
        if result.returncode != 0:
            raise AssertionError(f"postmap sender_login failed:"
                                 f" {result.stderr.decode(errors='replace')}")

    @staticmethod
    def proxy_options(gateway_port: int, host: str = "127.0.0.1") -> str:
        """master.cf options of a front smtpd with the gateway as its before-queue proxy
        filter (SMTPD_PROXY_README): the message is taken whole from the client first
        (speed_adjust: a slow client does not hold a gateway connection), then handed over;
        the gateway's reply, after the re-injection smtpd queued it, is the client's."""
        return (f"\n  -o smtpd_proxy_filter=[{host}]:{gateway_port}"
                "\n  -o smtpd_proxy_options=speed_adjust"
                "\n  -o smtpd_proxy_timeout=300s")

    def _postfix(self, *args: str) -> None:
        result = subprocess.run([POSTFIX, "-c", str(self.conf), *args], capture_output=True,
                                timeout=60, check=False)
        if result.returncode != 0:
            raise AssertionError(f"postfix {' '.join(args)} failed:"
                                 f" {result.stderr.decode(errors='replace')}\n{self.log()}")

    def start(self, gateway_port: int | None, submission_port: int | None = None) -> None:
        """Start with the content filter at 127.0.0.1:``gateway_port`` (None: Postfix alone,
        the baseline of a benchmark) and the submission door's at ``submission_port`` (the
        gateway's trusted listener; None: the same as the public door's)."""
        self.gateway_port = gateway_port
        self.submission_gateway_port = submission_port
        try:
            self._write_config()
            self._postfix("check")
            self._postfix("start")
            for port in (self.smtpd_port, self.reinject_port, self.submission_port):
                self._wait_listening(port)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        subprocess.run([POSTFIX, "-c", str(self.conf), "stop"], capture_output=True,
                       timeout=60, check=False)
        # the master exits once its children have: wait for its lock to be released
        for _ in range(100):
            pid_file = self.root / "queue" / "pid" / "master.pid"
            if not pid_file.exists() or not _alive(pid_file):
                break
            time.sleep(0.1)
        if self._data_parent is not None:
            shutil.rmtree(self._data_parent, ignore_errors=True)
            self._data_parent = None

    def reload(self) -> None:
        self._postfix("reload")

    def flush(self) -> None:
        """Try every deferred message now (``postqueue -f``)."""
        subprocess.run([POSTQUEUE, "-c", str(self.conf), "-f"], capture_output=True,
                       timeout=30, check=False)

    def queued(self) -> list[str]:
        """The queue ids of the messages Postfix still holds (any queue but the ones
        delivered)."""
        ids = []
        for queue in ("maildrop", "incoming", "active", "deferred", "hold"):
            base = self.root / "queue" / queue
            if base.exists():
                ids += [p.name for p in base.rglob("*") if p.is_file()]
        return ids

    def log(self) -> str:
        path = self.root / "maillog"
        return path.read_text(errors="replace") if path.exists() else ""

    def _wait_listening(self, port: int) -> None:
        import socket

        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"Postfix does not listen on {port}:\n{self.log()}")

    def wait(self, condition: Callable[[], object], what: str, timeout: float = 30.0) -> None:
        """Wait until ``condition()`` is true (Postfix works in its own time)."""
        wait_until(condition, what, timeout, detail=lambda: self.log()[-4000:])


def _alive(pid_file: Path) -> bool:
    try:
        os.kill(int(pid_file.read_text().split()[0]), 0)
    except (ValueError, OSError, IndexError):
        return False
    return True


def swaks(port: int, *, sender: str, to: list[str], subject: str = "test",
          body: str = "Hello from swaks.", extra: list[str] | None = None,
          transcript: bool = False) -> subprocess.CompletedProcess[str]:
    """Send one message with swaks to 127.0.0.1:``port``; ``transcript``: its stdout shows
    the server's replies (``<-`` lines, ``<**`` for errors) instead of nothing."""
    hide = ["--hide-informational", "--hide-send"] if transcript else ["--hide-all"]
    return subprocess.run(
        ["swaks", "--server", "127.0.0.1", "--port", str(port), "--from", sender,
         "--to", ",".join(to), "--helo", "client.test", "--header", f"Subject: {subject}",
         "--body", body, *hide, *(extra or [])],
        capture_output=True, text=True, timeout=60, check=False)

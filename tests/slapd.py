"""A real OpenLDAP ``slapd`` for tests, on a free loopback port, with nothing of the system's.

:class:`Slapd` writes a ``cn=config`` for one test (``slapadd -n0`` from an LDIF: the core,
cosine and inetorgperson schemas of ``/etc/ldap/schema``, an mdb database in the temp folder,
a root DN and password, TLS with a throwaway CA), loads the suffix and ``ou=people`` with
``slapadd -n1``, starts slapd in the foreground as a child process (``-d 0``), waits for its
port and stops it in :meth:`stop`. It listens on ``ldap://`` (StartTLS offered) and
``ldaps://``. People (uid, mail, cn, sn) are added with :meth:`add_people`, for the directory
tests and for ``ca sync`` later.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from loopback import free_port, tls_files

SLAPD = "/usr/sbin/slapd"
SLAPADD = "/usr/sbin/slapadd"
SCHEMAS = ("core", "cosine", "inetorgperson")
SUFFIX = "dc=example,dc=org"
PEOPLE = f"ou=people,{SUFFIX}"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PASSWORD = "slapd-test-secret"


def available() -> bool:
    """slapd and its schemas are installed (Debian: slapd, ldap-utils)."""
    return (Path(SLAPD).exists() and shutil.which("ldapsearch") is not None
            and all(Path(f"/etc/ldap/schema/{s}.ldif").exists() for s in SCHEMAS))


@dataclass(frozen=True)
class Person:
    uid: str
    mail: str
    cn: str
    sn: str


class Slapd:
    """One slapd under ``folder`` (see the module docstring). Use as a context manager or
    call :meth:`start` and :meth:`stop`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.tls_port = free_port()
        self.url = f"ldap://127.0.0.1:{self.port}"
        self.ldaps_url = f"ldaps://127.0.0.1:{self.tls_port}"
        self.suffix = SUFFIX
        self.people = PEOPLE
        self.root_dn = ROOT_DN
        self.root_password = ROOT_PASSWORD
        self.password_file = folder / "root.password"
        self.process: subprocess.Popen[bytes] | None = None
        self.ca_file: Path = folder / "tls" / "ca.pem"

    # -- set-up ----------------------------------------------------------------------------

    def _config_ldif(self, db: Path, tls: tuple[Path, Path, Path]) -> str:
        ca_file, cert_file, key_file = tls
        includes = "\n".join(f"include: file:///etc/ldap/schema/{s}.ldif" for s in SCHEMAS)
        return f"""\
dn: cn=config
objectClass: olcGlobal
cn: config
olcPidFile: {self.folder}/slapd.pid
olcTLSCACertificateFile: {ca_file}
olcTLSCertificateFile: {cert_file}
olcTLSCertificateKeyFile: {key_file}

dn: cn=module{{0}},cn=config
objectClass: olcModuleList
cn: module{{0}}
olcModulePath: /usr/lib/ldap
olcModuleLoad: back_mdb

dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

{includes}

dn: olcDatabase={{-1}}frontend,cn=config
objectClass: olcDatabaseConfig
objectClass: olcFrontendConfig
olcDatabase: {{-1}}frontend
olcSizeLimit: unlimited

dn: olcDatabase={{0}}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {{0}}config
olcAccess: {{0}}to * by * none

dn: olcDatabase={{1}}mdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {{1}}mdb
olcSuffix: {SUFFIX}
olcRootDN: {ROOT_DN}
olcRootPW: {ROOT_PASSWORD}
olcDbDirectory: {db}
olcDbMaxSize: 1073741824
olcDbIndex: objectClass eq
olcDbIndex: mail eq
olcDbIndex: uid eq
olcSizeLimit: unlimited
olcAccess: {{0}}to attrs=userPassword by anonymous auth by * none
olcAccess: {{1}}to * by * read
"""

    def start(self) -> Slapd:
        """Set up (the first time) and start; after :meth:`stop`, start again on the same
        ports with the same data (a restarted directory)."""
        config = self.folder / "slapd.d"
        if not config.exists():
            self._set_up(config)
        log = (self.folder / "slapd.log").open("ab")
        self.process = subprocess.Popen(
            [SLAPD, "-d", "0", "-F", str(config),
             "-h", f"{self.url}/ {self.ldaps_url}/"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + 30
        while not all(_listening(p) for p in (self.port, self.tls_port)):
            if self.process.poll() is not None or time.monotonic() > deadline:
                output = (self.folder / "slapd.log").read_text(errors="replace")
                self.stop()
                raise RuntimeError(f"slapd did not start:\n{output[-2000:]}")
            time.sleep(0.05)
        return self

    def _set_up(self, config: Path) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        db, tls = self.folder / "db", self.folder / "tls"
        for path in (config, db, tls):
            path.mkdir(mode=0o700)
        files = tls_files(tls)
        self.ca_file = files[0]
        (self.folder / "config.ldif").write_text(self._config_ldif(db, files))
        self.password_file.write_text(ROOT_PASSWORD)  # ldap tools take -y FILE whole
        self.password_file.chmod(0o600)
        _run([SLAPADD, "-n0", "-F", str(config), "-l", str(self.folder / "config.ldif")])
        base = (f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\n"
                f"dc: example\no: Example Ltd\n\n"
                f"dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people\n")
        (self.folder / "base.ldif").write_text(base)
        _run([SLAPADD, "-n1", "-F", str(config), "-l", str(self.folder / "base.ldif")])

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def __enter__(self) -> Slapd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- data ------------------------------------------------------------------------------

    def ldap_tool(self, tool: str, *args: str, input: bytes | None = None,
                  check: bool = True) -> subprocess.CompletedProcess[bytes]:
        """Run ``ldapsearch``/``ldapadd``/``ldapmodify`` against this server as the root DN."""
        return subprocess.run(
            [tool, "-x", "-H", self.url, "-D", ROOT_DN, "-y", str(self.password_file),
             *args], input=input, capture_output=True, check=check, timeout=120,
            env={**os.environ, "LDAPTLS_REQCERT": "never"})

    def add_ldif(self, ldif: str | bytes) -> None:
        data = ldif.encode() if isinstance(ldif, str) else ldif
        self.ldap_tool("ldapadd", input=data)

    def add_people(self, people: Iterable[Person]) -> None:
        """Entries ``uid=UID,ou=people,...`` of class inetOrgPerson."""
        chunks = [f"dn: uid={p.uid},{PEOPLE}\nobjectClass: inetOrgPerson\nuid: {p.uid}\n"
                  f"cn: {p.cn}\nsn: {p.sn}\nmail: {p.mail}\n" for p in people]
        if chunks:
            self.add_ldif("\n".join(chunks))

    def search(self, filter_: str, *attributes: str, base: str = SUFFIX) -> str:
        """``ldapsearch -LLL`` output (LDIF), anonymous, as a mail client asks."""
        done = subprocess.run(
            ["ldapsearch", "-x", "-LLL", "-o", "ldif-wrap=no", "-H", self.url, "-b", base,
             filter_, *attributes], capture_output=True, check=True, timeout=60)
        return done.stdout.decode()


def people(count: int, domain: str = "example.org", start: int = 0) -> list[Person]:
    """``count`` people ``user00001@DOMAIN``, ... with uid, cn and sn."""
    return [Person(f"user{i:05d}", f"user{i:05d}@{domain}", f"User {i:05d}", f"{i:05d}")
            for i in range(start, start + count)]


def _run(argv: Sequence[str]) -> None:
    done = subprocess.run(argv, capture_output=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed: {done.stderr.decode(errors='replace')[-2000:]}")


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0

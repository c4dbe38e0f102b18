"""The TOML configuration file: every key declared, unknown or mistyped keys named."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from smimekit.config import EMPTY, load_config
from smimekit.errors import ConfigError


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "smimekit.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_no_file_is_the_empty_configuration() -> None:
    assert load_config(None) is EMPTY
    assert EMPTY.directory is None and EMPTY.sync is None


def test_directory_and_sync_sections_with_relative_paths(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, """
[directory]
order = ["ldap", "store"]
cache_seconds = 60
[directory.ldap]
url = "ldap://127.0.0.1:3890"
base_dn = "ou=people,dc=example,dc=org"
password_file = "secret/ldap.password"
timeout = 3
[directory.dns]
resolvers = ["127.0.0.1", "::1"]
[sync]
max_removals = 10
[sync.ldap]
url = "ldap://127.0.0.1:3891"
base_dn = "dc=example,dc=org"
[sync.ldap.attributes]
id = "employeeNumber"
email = "mail"
name = "displayName"
"""))
    directory = config.directory
    assert directory is not None and directory.ldap is not None and directory.dns is not None
    assert directory.order == ("ldap", "store") and directory.cache_seconds == 60
    assert directory.ldap.password_file == tmp_path / "secret" / "ldap.password"
    assert directory.ldap.timeout == 3.0 and directory.ldap.publish is False
    assert directory.dns.resolvers == ("127.0.0.1", "::1") and directory.dns.port == 53
    assert config.sync is not None and config.sync.max_removals == 10.0
    assert config.sync.ldap is not None
    assert config.sync.ldap.attributes["id"] == "employeeNumber"
    assert config.path == tmp_path / "smimekit.toml"


@pytest.mark.parametrize(("text", "named"), [
    ("[directory]\nordr = []\n", "directory.ordr"),
    ("[directry]\n", "directry"),
    ("[directory.ldap]\nurl = 'ldap://x'\n", "directory.ldap.base_dn"),
    ("[directory]\ncache_seconds = 'soon'\n", "directory.cache_seconds"),
    ("[directory.ldap]\nurl = 'ldap://x'\nbase_dn = 'dc=x'\nstarttls = 1\n",
     "directory.ldap.starttls"),
    ("[directory]\norder = 'ldap'\n", "directory.order"),
    ("directory = 3\n", "directory"),
])
def test_unknown_missing_or_mistyped_keys_are_named(tmp_path: Path, text: str,
                                                    named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_config(_write(tmp_path, text))


def test_not_toml_or_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(_write(tmp_path, "[directory\n"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.toml")
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(tmp_path / "bin.toml")


def test_gateway_section_levels_scan_and_dlp_rules(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, """
[gateway]
internal_domains = ["example.org"]
key_passphrase_file = "gateway.pass"
[gateway.policy]
encrypt = "if-possible"
[gateway.domains."*.partner.example"]
encrypt = "always"
no_certificate = "pdf"
[gateway.users."ceo@example.org"]
webmail = true
[gateway.scan]
socket = "unix:/run/clamav/clamd.ctl"
[[gateway.dlp]]
name = "cards"
patterns = ['\\b(?:\\d[ -]?){13,16}\\b']
action = "require-encryption"
[[gateway.dlp]]
name = "secret"
keywords = ["project x"]
threshold = 2
"""))
    gw = config.gateway
    assert gw is not None
    assert gw.internal_domains == ("example.org",)
    assert gw.key_passphrase_file == tmp_path / "gateway.pass"
    assert gw.policy.encrypt == "if-possible" and gw.policy.sign is None  # None: inherit
    assert gw.domains["*.partner.example"].no_certificate == "pdf"
    assert gw.users["ceo@example.org"].webmail is True
    assert gw.scan is not None and gw.scan.on_failure == "defer"
    assert [(r.name, r.action, r.threshold) for r in gw.dlp] == [
        ("cards", "require-encryption", 1), ("secret", "warn", 2)]


@pytest.mark.parametrize(("text", "named"), [
    ('[gateway.domains."a.example"]\nencrypt = "sometimes"\n',
     "gateway.domains.a.example.encrypt must be one of: always, if-possible, never"),
    ('[gateway.users."u@a.example"]\nwebmial = true\n', "unknown key gateway.users.u@a.example"),
    ("[gateway]\ndlp = {name = 'x'}\n", "gateway.dlp must be a list of tables"),
    ("[[gateway.dlp]]\nkeywords = ['x']\n", "gateway.dlp[0].name is required"),
    ("[[gateway.dlp]]\nname = 'x'\naction = 'shred'\n", "gateway.dlp[0].action must be one of"),
])
def test_gateway_mistakes_are_named(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(ConfigError, match="^" + named.replace(".", r"\.").replace("[", r"\[")
                       .replace("]", r"\]").replace("(", r"\(")):
        load_config(_write(tmp_path, text))



@pytest.mark.parametrize(("text", "named"), [
    ("[gateway]\nmax_message_size = 0\n",
     "gateway.max_message_size must be at least 1 and at most 1073741824 (it is 0)"),
    ("[gateway]\nmax_message_size = 2_000_000_000\n", "gateway.max_message_size must be"),
    ("[gateway]\nmax_recipients = 0\n", "gateway.max_recipients must be at least 1"),
    ("[gateway]\nmax_recipients = -5\n", "gateway.max_recipients must be at least 1"),
    ("[gateway]\ntimeout = 0\n", "gateway.timeout must be above 0 and at most 3600 (it is 0)"),
    ("[gateway]\ntimeout = -1.5\n",
     "gateway.timeout must be above 0 and at most 3600 (it is -1.5)"),
    ("[gateway]\ntimeout = nan\n", "gateway.timeout must be above 0"),
    ("[gateway]\ntimeout = inf\n", "gateway.timeout must be above 0"),
    ("[gateway]\nkey_memo_seconds = -1\n", "gateway.key_memo_seconds must be at least 0"),
    ("[gateway]\nlookup_memo_seconds = -0.5\n", "gateway.lookup_memo_seconds must be at least 0"),
    ("[gateway]\nprocessing_threads = 0\n",
     "gateway.processing_threads must be at least 1 and at most 64 (it is 0)"),
    ("[gateway]\nprocessing_threads = 65\n", "gateway.processing_threads must be at least 1"),
    ("[gateway.scan]\nsocket = 'unix:/x'\ntimeout = 0\n", "gateway.scan.timeout must be above 0"),
    ("[[gateway.dlp]]\nname = 'x'\nthreshold = 0\n", "gateway.dlp[0].threshold must be at least 1"),
])
def test_gateway_numbers_out_of_range_are_refused_at_load(tmp_path: Path, text: str,
                                                           named: str) -> None:
    # review 12 item 10: a zero size or recipient limit, a timeout of 0 or less (or NaN)
    # would start a gateway that refuses everything or never waits; the key is named
    with pytest.raises(ConfigError, match="^" + re.escape(named)):
        load_config(_write(tmp_path, text))

@pytest.mark.parametrize("text", [
    "[gateway]\nmax_message_size = 1\nmax_recipients = 1\ntimeout = 0.1\n"
    "key_memo_seconds = 0\nlookup_memo_seconds = 0\n",
    "[gateway]\nmax_message_size = 1073741824\nmax_recipients = 100000\ntimeout = 3600\n",
])
def test_gateway_numbers_at_their_bounds_load(tmp_path: Path, text: str) -> None:
    assert load_config(_write(tmp_path, text)).gateway is not None


@pytest.mark.parametrize(("text", "threads"), [
    ("[gateway]\n", 2),
    ("[gateway.scan]\ncommand = ['/usr/local/bin/scan-mail']\n", 8),
    ("[gateway]\nprocessing_threads = 3\n[gateway.scan]\ncommand = ['/bin/scan']\n", 3),
    ("[gateway]\nprocessing_threads = 1\n", 1),
])
def test_gateway_processing_threads_default_to_more_with_a_scanner(
        tmp_path: Path, text: str, threads: int) -> None:
    config = tmp_path / "smimekit.toml"
    config.write_text(text)
    gateway = load_config(config).gateway
    assert gateway is not None and gateway.threads == threads

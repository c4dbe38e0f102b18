"""Fixtures of the directory tests: a real CA per test, copied from one made per session; the
DNSSEC world of tests/dnsinfra.py (NSD + unbound on loopback), started on demand and stopped
when the module that asked for it is done."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from dnsinfra import DnsLab, missing_commands, start_dns_lab
from kit import CA, make_ca, make_ca_template

DnsLabFactory = Callable[[Mapping[str, str]], DnsLab]


@pytest.fixture(scope="session")
def ca_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_ca_template(tmp_path_factory.mktemp("directory-ca") / "data")


@pytest.fixture
def ca(tmp_path: Path, ca_template: Path) -> Iterator[CA]:
    yield from make_ca(tmp_path / "data", ca_template)


@pytest.fixture(scope="module")
def dns_lab_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsLabFactory]:
    """``start(records)``: sign the test zones with ``records`` (zone -> zone-file text) and
    start NSD and unbound; every lab started is stopped at the end of the module."""
    missing = missing_commands()
    if missing:
        pytest.skip(f"DNS peers not installed ({', '.join(missing)}; make peers installs"
                    " them)")
    labs: list[DnsLab] = []

    def start(records: Mapping[str, str]) -> DnsLab:
        lab = start_dns_lab(Path(tmp_path_factory.mktemp("dns")), records)
        labs.append(lab)
        return lab

    try:
        yield start
    finally:
        for lab in labs:
            lab.stop()

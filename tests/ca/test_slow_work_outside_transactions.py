"""Key generation, signing and linting run outside the store's write transaction (issue 9):
on SQLite that transaction holds the one write lock, so slow work inside it stalls every
other writer. A spy on the CA's signing records whether a transaction was open."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from smimekit.ca.home import CAConfig, CAHome
from smimekit.ca.issuance import CertificateAuthority, SubscriberKeyType
from smimekit.ca.lifecycle import Row, RowStatus, enroll_rows
from smimekit.store import Store

PASS = b"correct horse battery staple"
FAST = {"sign_key": SubscriberKeyType.P256, "encrypt_key": SubscriberKeyType.P256}


@pytest.fixture
def spied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
          ) -> Iterator[tuple[CertificateAuthority, list[bool]]]:
    home = CAHome(tmp_path)
    home.create(CAConfig(organization="Example Ltd", base_url="http://pki.example.com",
                         key_type="p256", country="GB"), PASS)
    store = Store.open(None, tmp_path)
    cax = CertificateAuthority(home.unlock(PASS), store)
    in_transaction: list[bool] = []
    sign = cax._sign  # signs and lints: the slow part, with key generation just before it

    def spy(*args: Any, **kwargs: Any) -> Any:
        in_transaction.append(store._current.get() is not None)
        return sign(*args, **kwargs)

    monkeypatch.setattr(cax, "_sign", spy)
    yield cax, in_transaction
    store.close()


def test_issue_and_renew_sign_and_lint_outside_the_write_transaction(
        spied: tuple[CertificateAuthority, list[bool]]) -> None:
    cax, in_transaction = spied
    issuance = cax.issue_generated("a@example.com", **FAST)
    cax.renew(issuance.items[1].record)
    assert in_transaction == [False, False, False]


def test_enrolment_signs_and_lints_outside_the_write_transaction(
        spied: tuple[CertificateAuthority, list[bool]]) -> None:
    cax, in_transaction = spied
    rows = [Row(2, "b@example.com"), Row(3, "c@example.com")]
    results = list(enroll_rows(cax, rows, **FAST))
    assert [r.status for r in results] == [RowStatus.OK, RowStatus.OK]
    assert in_transaction == [False] * 4
    again = list(enroll_rows(cax, rows, **FAST))  # held: skipped, nothing signed
    assert [r.status for r in again] == [RowStatus.SKIPPED] * 2 and len(in_transaction) == 4

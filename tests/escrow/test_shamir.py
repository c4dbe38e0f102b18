"""Shamir sharing over GF(2^8): any M of N rebuild the secret, M-1 leave every secret possible,
and combine() refuses what does not add up. Checked against a plain per-byte reference."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smimekit.errors import EscrowError
from smimekit.escrow.shamir import Share, combine, split


def _gf_mul(a: int, b: int) -> int:
    """Textbook GF(2^8) multiplication (AES polynomial), one byte at a time."""
    result = 0
    while b:
        if b & 1:
            result ^= a
        a = (a << 1) ^ (0x11B if a & 0x80 else 0)
        b >>= 1
    return result


def _gf_inv(a: int) -> int:
    return next(b for b in range(1, 256) if _gf_mul(a, b) == 1)


def _reference_combine(shares: list[Share]) -> bytes:
    out = bytearray(len(shares[0].value))
    for j, sj in enumerate(shares):
        num = den = 1
        for m, sm in enumerate(shares):
            if m != j:
                num = _gf_mul(num, sm.index)
                den = _gf_mul(den, sj.index ^ sm.index)
        coefficient = _gf_mul(num, _gf_inv(den))
        for i, byte in enumerate(sj.value):
            out[i] ^= _gf_mul(coefficient, byte)
    return bytes(out)


@st.composite
def sharings(draw: st.DrawFn) -> tuple[bytes, int, int]:
    secret = draw(st.binary(min_size=1, max_size=64))
    n = draw(st.integers(2, 12))
    m = draw(st.integers(2, n))
    return secret, n, m


@settings(max_examples=60, deadline=None)
@given(sharings(), st.randoms(use_true_random=False))
def test_any_threshold_of_the_shares_rebuilds_the_secret(
    case: tuple[bytes, int, int], rnd: object
) -> None:
    secret, n, m = case
    shares = split(secret, n, m)
    assert [s.index for s in shares] == list(range(1, n + 1))
    assert all(len(s.value) == len(secret) and s.threshold == m for s in shares)
    chosen = rnd.sample(shares, m)  # type: ignore[attr-defined]
    assert combine(chosen) == secret
    assert _reference_combine(chosen) == secret
    assert combine(shares) == secret  # extras must fit, and do


def test_every_subset_of_a_small_sharing() -> None:
    secret = bytes(range(48))
    shares = split(secret, 6, 3)
    for subset in itertools.combinations(shares, 3):
        assert combine(list(subset)) == secret


@settings(max_examples=40, deadline=None)
@given(sharings())
def test_fewer_than_threshold_leave_every_secret_possible(case: tuple[bytes, int, int]) -> None:
    # With M-1 real shares, each value of one more (made-up) share gives a different secret,
    # and all 256 values of the first byte occur: the M-1 shares rule nothing out.
    secret, n, m = case
    shares = split(secret, n, m)[: m - 1]
    seen = set()
    for v in range(256):
        fake = Share(255, m, bytes([v]) + b"\0" * (len(secret) - 1))
        seen.add(combine([*shares, fake])[0])
    assert seen == set(range(256))
    with pytest.raises(EscrowError, match=f"{m - 1} shares? given, {m} needed"):
        combine(shares)


def test_shares_look_unrelated_to_the_secret() -> None:
    # a 2-of-2 sharing of zeros: each share alone is uniformly random
    values = {split(b"\0" * 16, 2, 2)[0].value for _ in range(50)}
    assert len(values) == 50 and b"\0" * 16 not in values


def test_duplicate_index_refused() -> None:
    shares = split(b"secret", 3, 2)
    with pytest.raises(EscrowError, match="given twice"):
        combine([shares[0], shares[0]])


def test_mixed_sharings_refused() -> None:
    a, b = split(b"secret", 3, 2), split(b"secret", 3, 3)
    with pytest.raises(EscrowError, match="different sharings"):
        combine([a[0], b[1], b[2]])
    c = split(b"longer secret", 3, 2)
    with pytest.raises(EscrowError, match="different sharings"):
        combine([a[0], c[1]])


def test_an_extra_share_of_another_sharing_refused() -> None:
    a, b = split(b"secret", 3, 2), split(b"secret", 3, 2)
    with pytest.raises(EscrowError, match="share 3 does not fit"):
        combine([a[0], a[1], b[2]])


def test_damaged_share_gives_a_different_secret_not_an_error() -> None:
    # With exactly M shares nothing can tell; the escrow layer checks commitments and the
    # rebuilt key against the vault certificate.
    shares = split(b"secret", 2, 2)
    bad = Share(2, 2, bytes([shares[1].value[0] ^ 1]) + shares[1].value[1:])
    assert combine([shares[0], bad]) != b"secret"


@pytest.mark.parametrize("n,m", [(1, 1), (3, 1), (2, 3), (256, 2), (0, 0)])
def test_bad_parameters_refused(n: int, m: int) -> None:
    with pytest.raises(EscrowError, match="threshold"):
        split(b"secret", n, m)


def test_empty_secret_and_no_shares_refused() -> None:
    with pytest.raises(EscrowError, match="empty"):
        split(b"", 3, 2)
    with pytest.raises(EscrowError, match="no shares"):
        combine([])
    with pytest.raises(EscrowError, match="outside"):
        combine([Share(0, 2, b"x"), Share(1, 2, b"y")])


def test_share_repr_hides_the_value() -> None:
    share = split(b"top secret", 2, 2)[0]
    assert share.value.hex() not in repr(share) and "value" not in repr(share)


def test_the_maximum_sharing() -> None:
    secret = bytes(range(48))
    shares = split(secret, 255, 255)
    assert combine(shares[::-1]) == secret

"""Shamir secret sharing over GF(2^8), byte-wise: any ``threshold`` of ``n`` shares rebuild
the secret, fewer reveal nothing about it.

Why GF(2^8) and not a prime field: a share is exactly as long as the secret (48 bytes for the
P-384 vault scalar), every byte string is a valid secret (no reduction, no bias), and up to
255 shares is far more officers than any organisation has. Every byte of the secret is shared
with its own random polynomial of degree ``threshold - 1``; the x coordinate of a share is its
index (1..255), the secret sits at x = 0.

The field is the AES one (x^8 + x^4 + x^3 + x + 1). Arithmetic on secret data is
"constant-time-ish": all the bytes of a share are packed into one Python integer and
multiplied by a *public* field element (an index or a Lagrange coefficient) with shifts,
masks and XORs only, so no table lookup or branch depends on a secret byte. (Python promises
no constant time at all; this only avoids the obvious leaks.) Indices and Lagrange
coefficients are public, so they may use plain arithmetic.

Randomness comes from :mod:`secrets`. :func:`combine` refuses fewer shares than the
threshold, duplicate indices, mixed thresholds or lengths, and extra shares that do not lie
on the same polynomial as the others.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

from smimekit.errors import EscrowError

__all__ = ["MAX_SHARES", "Share", "combine", "split"]

MAX_SHARES = 255
"""GF(2^8) has 255 non-zero points to hand out."""

_POLY = 0x1B  # x^8 + x^4 + x^3 + x + 1, without the x^8 term


@dataclass(frozen=True)
class Share:
    """One point of the sharing polynomials: ``index`` (x, 1..255) and ``value`` (y, one byte
    per byte of the secret). ``threshold`` travels with the share so that :func:`combine` can
    tell too few shares from a wrong one."""

    index: int
    threshold: int
    value: bytes = field(repr=False)


class _Packed:
    """Byte vectors of one length, packed into an int: GF(2^8) arithmetic on all bytes at once."""

    def __init__(self, length: int) -> None:
        self.length = length
        self.low = int.from_bytes(b"\x01" * length, "big")
        self.high7 = int.from_bytes(b"\xfe" * length, "big")

    def xtime(self, v: int) -> int:
        # every byte times x: shift left within the byte, fold the carried-out bit back in
        return ((v << 1) & self.high7) ^ (((v >> 7) & self.low) * _POLY)

    def scale(self, v: int, c: int) -> int:
        """Every byte of ``v`` times the public field element ``c``."""
        result = 0
        for _ in range(8):
            if c & 1:  # a branch on the public factor only
                result ^= v
            v = self.xtime(v)
            c >>= 1
        return result


def _mul(a: int, b: int) -> int:
    """a * b in GF(2^8), for public values."""
    return _Packed(1).scale(a, b)


def _inv(a: int) -> int:
    """a^-1 = a^254 in GF(2^8) (a != 0), for public values."""
    result, power, e = 1, a, 254
    while e:
        if e & 1:
            result = _mul(result, power)
        power = _mul(power, power)
        e >>= 1
    return result


def split(secret: bytes, shares: int, threshold: int) -> list[Share]:
    """``shares`` shares of ``secret`` (indices 1..shares), any ``threshold`` of which rebuild it.

    Raises:
        EscrowError: empty secret, or not 2 <= threshold <= shares <= 255.
    """
    if not secret:
        raise EscrowError("nothing to share: the secret is empty")
    if not 2 <= threshold <= shares <= MAX_SHARES:
        raise EscrowError(f"a sharing needs 2 <= threshold <= shares <= {MAX_SHARES}"
                          f" (got {threshold} of {shares})")
    packed = _Packed(len(secret))
    coefficients = [int.from_bytes(secret, "big")] + [
        int.from_bytes(secrets.token_bytes(len(secret)), "big") for _ in range(threshold - 1)]
    out: list[Share] = []
    for x in range(1, shares + 1):
        y = coefficients[-1]
        for c in reversed(coefficients[:-1]):  # Horner's rule
            y = packed.scale(y, x) ^ c
        out.append(Share(x, threshold, y.to_bytes(len(secret), "big")))
    return out


def _lagrange_at(xs: Sequence[int], at: int) -> list[int]:
    """The Lagrange basis coefficients l_j(at) for the points ``xs`` (public values)."""
    out = []
    for j, xj in enumerate(xs):
        num, den = 1, 1
        for m, xm in enumerate(xs):
            if m != j:
                num = _mul(num, at ^ xm)
                den = _mul(den, xj ^ xm)
        out.append(_mul(num, _inv(den)))
    return out


def _interpolate(points: Sequence[Share], at: int, packed: _Packed) -> int:
    value = 0
    for coefficient, share in zip(_lagrange_at([s.index for s in points], at), points,
                                  strict=True):
        value ^= packed.scale(int.from_bytes(share.value, "big"), coefficient)
    return value


def combine(shares: Sequence[Share]) -> bytes:
    """The secret from at least ``threshold`` shares.

    The first ``threshold`` shares rebuild it; every further share must lie on the same
    polynomials (a share of another sharing, or a damaged one, is refused, not ignored).

    Raises:
        EscrowError: fewer shares than the threshold, duplicate indices, an index outside
            1..255, mixed thresholds or lengths, or an extra share that does not fit.
    """
    if not shares:
        raise EscrowError("no shares given")
    threshold = shares[0].threshold
    length = len(shares[0].value)
    seen: set[int] = set()
    for share in shares:
        if share.threshold != threshold:
            raise EscrowError("the shares come from different sharings (thresholds differ)")
        if len(share.value) != length or not length:
            raise EscrowError("the shares come from different sharings (lengths differ)")
        if not 1 <= share.index <= MAX_SHARES:
            raise EscrowError(f"share index {share.index} is outside 1..{MAX_SHARES}")
        if share.index in seen:
            raise EscrowError(f"share {share.index} was given twice")
        seen.add(share.index)
    if threshold < 2 or len(shares) < threshold:
        raise EscrowError(f"{len(shares)} share{'s' if len(shares) != 1 else ''} given,"
                          f" {threshold} needed")
    packed = _Packed(length)
    basis = shares[:threshold]
    for extra in shares[threshold:]:
        expected = _interpolate(basis, extra.index, packed).to_bytes(length, "big")
        if not hmac.compare_digest(expected, extra.value):
            raise EscrowError(f"share {extra.index} does not fit the others (another sharing,"
                              " or damaged)")
    return _interpolate(basis, 0, packed).to_bytes(length, "big")

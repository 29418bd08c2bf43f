"""Which lengths the vocabulary's durations can fill exactly (the sampler's look-ahead):
a piece can only be finished if what is left is a sum of plain durations and whole tuplet
groups."""

from __future__ import annotations

import math
from bisect import bisect_right
from fractions import Fraction
from typing import Iterable

import numpy as np

def tuplet_safe(d: Fraction) -> bool:
    """May a note of length d (in L: units) sit inside a tuplet?

    music21 gives a tuplet note a written type, and fails ("Unknown type:
    complex") unless the unscaled length is a plain or dotted note value (up to
    four dots): a power of two times 1, 3/2, 7/4, 15/8 or 31/16.  L: is always a
    power of two, so the rule does not depend on it.
    """
    odd = d.numerator
    while odd % 2 == 0:
        odd //= 2
    return d > 0 and d.denominator & (d.denominator - 1) == 0 and odd in (1, 3, 7, 15, 31)


class _Filler:
    """Which lengths the vocabulary's durations can fill exactly.

    A piece can only be finished if what is left is a sum of plain durations
    and whole tuplet groups.  Lengths are kept as integers on a grid fine
    enough for every duration, inside a tuplet or not (``grid`` steps to a
    unit of L:), so hashing and comparing them is cheap on the sampling path,
    and the fillable set is a bitset: each question is one bit test.
    """

    def __init__(self, durations: Iterable[Fraction], tuplets: Iterable[tuple]):
        durations = sorted(set(durations) | {Fraction(1)})
        self.tuplets = sorted(set(tuplets))
        dens = {d.denominator for d in durations}
        for p, q, _ in self.tuplets:
            for d in durations:          # the denominator of d * q/p
                den = p * d.denominator
                dens.add(den // math.gcd(q * d.numerator, den))
        self.grid = 1
        for x in dens:
            self.grid = self.grid * x // math.gcd(self.grid, x)
        self.durations = [int(d * self.grid) for d in durations]   # grid steps
        self.tuplet_durations = [int(d * self.grid) for d in durations if tuplet_safe(d)]
        self._step = 0                                              # their gcd
        for d in self.durations:
            self._step = math.gcd(self._step, d)
        self._ksums = {0: np.zeros(1, dtype=np.int64)}
        self._ksum_bits = {0: 1}
        items = np.sort(np.concatenate(
            [np.array(self.durations, dtype=np.int64)]
            + [self.ksums(r) * q // p for p, q, r in self.tuplets]))
        items = items[np.concatenate(([True], items[1:] != items[:-1]))]    # unique
        self._items = items.tolist()
        positive = items[items > 0]
        self._least_item = int(positive[0]) if len(positive) else 0
        self._item_gcd = int(np.gcd.reduce(positive)) if len(positive) else 0   # 0: no item
        self._limit = 0
        self._table = b"\x01"           # fillable_steps(n) for n <= _limit, one byte each
        self._saturated, self._gcd = False, 1
        self._cache: dict = {}
        self._scaled: dict = {}

    def to_grid(self, x: Fraction) -> int | None:
        g = x * self.grid
        return g.numerator if g.denominator == 1 else None

    def ksums(self, k: int) -> np.ndarray:
        """Every total of k durations, in grid steps, ascending.

        Built as a bitset over multiples of the durations' gcd (k shifts per
        duration) rather than as a set of all pairwise sums: for the nine
        notes of a ``(9`` with a real vocabulary's forty durations that is
        the difference between a tenth of a second and a millisecond."""
        if k not in self._ksums:
            self.ksums(k - 1)
            prev, bits = self._ksum_bits[k - 1], 0
            for d in self.tuplet_durations:
                bits |= prev << (d // self._step)
            self._ksum_bits[k] = bits
            self._ksums[k] = _bit_positions(bits) * self._step
        return self._ksums[k]

    def _scaled_sums(self, k: int, q: int, p: int) -> tuple[list, np.ndarray]:
        """ksums(k) scaled by q/p (the lengths of k tuplet notes), ascending, as
        a list and as an array."""
        key = (k, q, p)
        hit = self._scaled.get(key)
        if hit is None:
            a = self.ksums(k) * q // p             # exact: the grid makes them whole
            hit = self._scaled[key] = (a.tolist(), a)
        return hit

    def _extend(self, n: int) -> None:
        """Every length up to ``limit`` reachable as a sum of items (unbounded knapsack).

        One item at a time, by doubling shifts: after shifting by it, 2it,
        4it, ... the bitset holds x + k*it for every k up to the limit, so the
        work is items x log(limit) big-integer shifts, not a fixed-point loop
        over the whole range (which took seconds for fine grids).  An item
        that is already a sum of smaller ones is skipped, which leaves a few
        dozen of the tens of thousands of tuplet sums.  The result is also
        kept as one byte per length, as a bit test on a big integer costs as
        much as shifting all of it.
        """
        limit = max(n, 2 * self._limit, 64)
        mask = (1 << (limit + 1)) - 1
        bits = 1
        for it in self._items:  # ascending
            if it > limit:
                break
            if it <= 0:
                continue
            if (bits >> it) & 1:
                continue  # already a sum of smaller items: adds nothing new
            shift = it
            while shift <= limit:
                bits |= (bits << shift) & mask
                shift *= 2
        raw = np.frombuffer(bits.to_bytes(limit // 8 + 1, "little"), dtype=np.uint8)
        table = np.unpackbits(raw, bitorder="little")[:limit + 1]
        self._table = table.tobytes()      # before the limit: a reader never sees a short one
        self._limit = limit
        # Saturated: every multiple of the items' gcd in the last stretch as long
        # as the smallest item is reachable, hence (adding that item again and
        # again) every larger multiple too; no need to grow the bitset further.
        if self._item_gcd:
            g, a = self._item_gcd, self._least_item
            lo = (limit - a) // g * g + g
            self._gcd = g
            self._saturated = lo > 0 and bool(table[lo:limit + 1:g].all())

    def fillable_steps(self, n: int) -> bool:
        if n < 0:
            return False
        if n > self._limit:
            if self._saturated:
                return n % self._gcd == 0
            self._extend(n)
        return self._table[n] == 1

    def fillable(self, x: Fraction) -> bool:
        n = self.to_grid(x)
        return n is not None and self.fillable_steps(n)

    def fillable_many(self, n: np.ndarray) -> np.ndarray:
        """fillable_steps over an array of lengths at once."""
        if not len(n):
            return np.zeros(0, dtype=bool)
        top = int(n.max())
        if top > self._limit and not self._saturated:
            self._extend(top)
        table = np.frombuffer(self._table, dtype=bool)
        if top <= self._limit and n.min() >= 0:
            return table[n]
        ok = np.zeros(len(n), dtype=bool)
        inside = (n >= 0) & (n <= self._limit)
        ok[inside] = table[n[inside]]
        far = n > self._limit                  # only when saturated
        ok[far] = n[far] % self._gcd == 0
        return ok

    def _fillable_after(self, d: int, offsets: tuple[list, np.ndarray]) -> bool:
        """any(fillable_steps(d - x) for x in offsets), offsets ascending and >= 0.

        Most lengths are fillable, so the first few offsets usually answer;
        only a no looks at all of them, as one array operation."""
        seq, arr = offsets
        hi = bisect_right(seq, d)                      # only x <= d can fit
        if any(self.fillable_steps(d - x) for x in seq[:min(hi, 8)]):
            return True
        if hi <= 8:
            return False
        rest = d - arr[8:hi]         # the loop above has grown the table to cover them
        table = np.frombuffer(self._table, dtype=np.uint8)
        if rest[0] <= self._limit:
            return bool(table[rest].any())
        far = rest > self._limit                      # saturated beyond the table
        return bool((rest[far] % self._gcd == 0).any() or table[rest[~far]].any())

    def alive(self, pos: int, k: int, q: int, p: int, targets) -> bool:
        """Can a piece now ``pos`` steps long, with k tuplet notes still due
        at q/p, reach one of ``targets``?  targets: ('free',), ('pickup', M)
        or ('exact', lengths)."""
        key = (pos, k, q, p, targets)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        kind = targets[0]
        if kind == "free":
            ok = True
        elif kind == "pickup":
            ok = pos + int(self.ksums(k)[0]) * q // p <= targets[1]
        elif k == 0:
            ok = any(self.fillable_steps(t - pos) for t in targets[1])
        else:
            sums = self._scaled_sums(k, q, p)
            ok = any(self._fillable_after(t - pos, sums) for t in targets[1])
        if len(self._cache) > 200000:
            self._cache.clear()
        self._cache[key] = ok
        return ok

    def alive_many(self, positions: np.ndarray, k: int, q: int, p: int, targets) -> np.ndarray:
        """alive() at many positions at once (the piece after each duration):
        array operations on the fillable table instead of one call each."""
        kind = targets[0]
        if kind == "free":
            return np.ones(len(positions), dtype=bool)
        if kind == "pickup":
            return positions + int(self.ksums(k)[0]) * q // p <= targets[1]
        if k == 0:
            ok = self.fillable_many(targets[1][0] - positions)
            for t in targets[1][1:]:
                ok = ok | self.fillable_many(t - positions)
            return ok
        return np.array([self.alive(x, k, q, p, targets) for x in positions.tolist()],
                        dtype=bool)

    def alive_any(self, positions: np.ndarray, k: int, q: int, p: int, targets) -> bool:
        """alive_many(...).any(), stopping at the first yes where each is costly."""
        if k and targets[0] == "exact":
            return any(self.alive(x, k, q, p, targets) for x in positions.tolist())
        return bool(self.alive_many(positions, k, q, p, targets).any())


def _bit_positions(bits: int) -> np.ndarray:
    """The positions of the set bits of a non-negative integer, ascending."""
    raw = np.frombuffer(bits.to_bytes(bits.bit_length() // 8 + 1, "little"), dtype=np.uint8)
    return np.flatnonzero(np.unpackbits(raw, bitorder="little")).astype(np.int64)

"""Novelty: how many consecutive bars a tune shares with some training tune.

Bars are compared as text: each non-empty bar of the canonical model text,
without bar lines, spaces, line breaks and field lines
(``tunestats.tune_stats``'s ``bar_texts``).  So a copy in another key or with
another ``L:`` is not caught; a copy with other repeat marks or line breaks is.

The index numbers every distinct training bar and keeps, for every run of
``K`` (= 4) consecutive bars of every training tune, a 64-bit hash with the
tune and position it starts at, sorted, in NumPy arrays; shorter runs (1 to 3
bars) are kept as sets of exact keys.  A query tune's longest shared run:

* 4 or more: every query position whose 4-bar hash is in the index is checked
  bar by bar against each training position with that hash (so a hash
  collision never counts) and extended as far as both tunes agree; a match
  that merely continues the one found at the position before is skipped.
* else the longest n <= 3 whose n-bar key is in the index.

A tune "copies 4 or more bars" when its longest shared run is at least 4; all
such runs lie within a single training tune by construction.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

K = 4
_MUL = np.uint64(0x9E3779B97F4A7C15)


def _hash_runs(ids: np.ndarray, n: int) -> np.ndarray:
    """64-bit hash of each run of n consecutive ids (len(ids) - n + 1 values)."""
    m = len(ids) - n + 1
    if m <= 0:
        return np.zeros(0, np.uint64)
    h = np.zeros(m, np.uint64)
    with np.errstate(over="ignore"):
        for j in range(n):
            h = (h ^ ids[j:j + m].astype(np.uint64)) * _MUL
            h ^= h >> np.uint64(29)
    return h


class BarIndex:
    def __init__(self, tunes_bars: Sequence[Sequence[str]]):
        self.ids: dict[str, int] = {}
        seqs = []
        for bars in tunes_bars:
            seqs.append(np.fromiter((self.ids.setdefault(b, len(self.ids) + 1) for b in bars),
                                    np.int64, len(bars)))
        self.seqs = seqs
        self.short: list[set] = [set(), set(), set()]   # runs of 1, 2, 3 bars
        hashes, tune_of, pos_of = [], [], []
        for t, s in enumerate(seqs):
            lst = s.tolist()
            for n in (1, 2, 3):
                self.short[n - 1].update(tuple(lst[i:i + n]) for i in range(len(lst) - n + 1))
            h = _hash_runs(s, K)
            hashes.append(h)
            tune_of.append(np.full(len(h), t, np.int32))
            pos_of.append(np.arange(len(h), dtype=np.int32))
        h = np.concatenate(hashes) if hashes else np.zeros(0, np.uint64)
        order = np.argsort(h, kind="stable")
        self.hash = h[order]
        self.tune = (np.concatenate(tune_of) if tune_of else np.zeros(0, np.int32))[order]
        self.pos = (np.concatenate(pos_of) if pos_of else np.zeros(0, np.int32))[order]

    def encode(self, bars: Sequence[str]) -> np.ndarray:
        """Ids of a query tune's bars; 0 for a bar no training tune has."""
        return np.fromiter((self.ids.get(b, 0) for b in bars), np.int64, len(bars))

    def longest_run(self, bars: Sequence[str]) -> int:
        """The most consecutive bars of this tune found consecutively in one training tune."""
        q = self.encode(bars)
        best = 0
        h = _hash_runs(q, K)
        if len(h) and len(self.hash):
            lo = np.searchsorted(self.hash, h, "left")
            hi = np.searchsorted(self.hash, h, "right")
            prev: set = set()
            ql = q.tolist()
            for i in range(len(h)):
                cur = set()
                if q[i] == 0 or hi[i] == lo[i]:
                    prev = cur
                    continue
                for j in range(lo[i], hi[i]):
                    t, p = int(self.tune[j]), int(self.pos[j])
                    s = self.seqs[t]
                    if not np.array_equal(s[p:p + K], q[i:i + K]):
                        continue          # a hash collision
                    cur.add((t, p))
                    if (t, p - 1) in prev:
                        continue          # inside a run already measured from its start
                    n = K
                    while i + n < len(ql) and p + n < len(s) and s[p + n] == ql[i + n]:
                        n += 1
                    best = max(best, n)
                prev = cur
        if best >= K:
            return best
        ql = q.tolist()
        for n in (3, 2, 1):
            runs = self.short[n - 1]
            if any(tuple(ql[i:i + n]) in runs for i in range(len(ql) - n + 1)):
                return n
        return 0


def novelty(index: BarIndex, tunes_bars: Sequence[Sequence[str]]) -> dict:
    """Longest shared runs of a tune book: their histogram, mean, max and the copies of 4+ bars."""
    from collections import Counter

    runs = [index.longest_run(b) for b in tunes_bars]
    n = len(runs)
    if not n:
        return {"novelty_tunes": 0}
    return {
        "novelty_tunes": n,
        "longest_shared_run_max": max(runs),
        "longest_shared_run_mean": round(sum(runs) / n, 4),
        "longest_shared_run_median": float(np.median(runs)),
        "copies_4_bars_pct": round(100 * sum(r >= K for r in runs) / n, 3),
        "longest_shared_run_hist": {str(k): v for k, v in sorted(Counter(runs).items())},
        "runs": runs,
    }

"""Repeats: a section played twice in a row, written once between repeat marks.

Repeats.  A MIDI file plays repeats out; after quantizing, a section played
twice in a row is written once between ``|:`` and ``:|`` (``repeats=False``
writes every bar as played).  Two bars are equal when every part sounds the
same pitches at the same places in them, with the same durations and ties,
and the bars have one length and meter.  A section is L >= 2 bars with bars
i..i+L equal to the next L; or, for L >= 4, equal but for the last k <= L/4
bars of each pass, written as first and second endings.  The search is
greedy, left to right: at each bar the section of a usual folk part length
(4, 8 or 16 bars) wins, then the longest, then the one with the fewest
ending bars, and the search goes on after its second pass (so a tune played
through twice, AABB AABB, is written as four repeated parts, not one
32-bar section).  A section may not start where a tie runs in from the bar
before (nor an ending), and may not hold a change of meter or key.  The
pickup stays outside the repeat: it is a short first bar, no other bar
equals it, so the repeat starts at the first full bar and the first
ending holds the notes that lead back to it (``D|:GAB ...|1 G3 G2D:|2 G3 G2d|``).
Bars are compared after quantizing, so the written notes, repeats played
out, are exactly the notes of the unrepeated version.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from .quantize import _Bar


USUAL_PART_BARS = (4, 8, 16)


@dataclass(frozen=True)
class Repeat:
    """Bars ``start .. start+2*length`` play one section twice; the last ``ending`` bars of each pass differ.

    Written: bars ``start .. start+length`` once between ``|:`` and ``:|``,
    the last ``ending`` of them as the first ending, then bars
    ``start+2*length-ending .. start+2*length`` as the second ending.
    """

    start: int
    length: int
    ending: int = 0


def find_repeats(keys: list, cut=frozenset(), breaks=frozenset(), min_length: int = 2) -> list[Repeat]:
    """Sections played twice in a row, from bar signatures (any hashable per bar).

    ``keys[j]`` stands for everything bar j sounds (so equal keys, equal
    bars); ``cut``: bars that a tie runs into (no repeat or ending may start
    there); ``breaks``: bars where the meter or key changes (no section may
    hold one past its first bar).  Greedy, left to right: at each bar the
    candidate sections starting there are ``keys[i:i+L] == keys[i+L:i+2L]``
    for L >= ``min_length``, or, for L >= 4, the same with the last k <= L/4
    bars of each pass different (first and second endings).  Of these, a
    section of a usual folk part length (4, 8 or 16 bars) wins over any
    other, then the longer one, then the one with fewer ending bars; the
    search goes on after the second pass.
    """
    n = len(keys)
    out: list = []
    i = 0
    while i < n:
        best = None
        if i not in cut:
            nb = next((b for b in sorted(breaks) if b > i), n + 1)
            for length in range(min(n - i, nb - i) // 2, min_length - 1, -1):
                rank = (length in USUAL_PART_BARS, length)
                if best is not None and rank <= (best.length in USUAL_PART_BARS, best.length):
                    continue
                k = _ending(keys, i, length, cut)
                if k is not None:
                    best = Repeat(i, length, k)
        if best is None:
            i += 1
        else:
            out.append(best)
            i = best.start + 2 * best.length
    return out


def _ending(keys: list, i: int, length: int, cut) -> int | None:
    """The fewest ending bars that make bars i.. a section of ``length`` played twice; None if none do."""
    same = 0
    while same < length and keys[i + same] == keys[i + length + same]:
        same += 1
    k = length - same
    if k == 0:
        return 0
    if length < 4 or k > length // 4:
        return None
    if i + length - k in cut or i + 2 * length - k in cut:
        return None
    return k


def _repeat_plan(per_bar_parts: list, bars: list[_Bar], t0: Fraction, end: Fraction,
                 key_changes: dict) -> list[Repeat]:
    """The repeats of a tune from its bars, every part the same (see ``find_repeats``)."""
    keys, cut = [], set()
    for j, bar in enumerate(bars):
        lo, hi = max(bar.start, t0), min(bar.end, end)
        key = [bar.ts, bar.length, lo - bar.start, hi - bar.start]
        for per_bar in per_bar_parts:
            pieces = per_bar[j]
            key.append(tuple((x - bar.start, y - bar.start, tuple(p), kind) for x, y, p, _n, kind in pieces))
            if any(x == bar.start and kind in ("stop", "continue") for x, _y, _p, _n, kind in pieces):
                cut.add(j)
        keys.append(tuple(key))
    breaks = {j for j in range(1, len(bars)) if bars[j].ts != bars[j - 1].ts} | set(key_changes)
    plan = find_repeats(keys, frozenset(cut), frozenset(breaks))
    if plan and _plain_bar_lines(len(bars), plan) < 2:
        return []         # music21 reads ABC with fewer than two plain bar lines as one bar, repeats lost
    return plan


def _plain_bar_lines(n: int, plan: list[Repeat]) -> int:
    """How many of the written bar lines are plain ``|`` (or ``|1``): no repeat mark on either side."""
    skip, opens, closes = set(), set(), set()
    for r in plan:
        skip.update(range(r.start + r.length, r.start + 2 * r.length - r.ending))
        opens.add(r.start)
        closes.add(r.start + r.length - 1)
    written = [j for j in range(n) if j not in skip]
    return sum(1 for a, b in zip(written, written[1:]) if a not in closes and b not in opens)


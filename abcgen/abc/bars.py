"""The bar rule (the module doc of grammar.py, rules 1 and 2), shared by the mask and by
``check_bars``, which measures the bars of any tokenizable tune by it."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from math import gcd
from typing import Sequence

from .symbols import (B_DOUBLE, B_END, B_END_ENDING, B_ENDING, B_ENDSTART, B_FINAL, B_LINE_ENDING,
                      B_PLAIN, B_START, B_THICK, PART_START, bar_of, duration_of, fraction_of,
                      letter_octave, meter_value, tuplet_of)
from .tokens import split_tokens

# --------------------------------------------------------------------------
# The bar rule, shared by the mask and by check_bars


# Section bars where a short bar that pairs with a remembered pickup ends the
# bar's music: the end, the final bar, the repeat sign (the repeat comes round to
# the pickup; going on, the next piece must be the pickup, see judge) and the
# mark of a second ending (which follows the bar before the first ending).
_FREE_AFTER = frozenset({B_END, B_END_ENDING, B_FINAL, None})
# Bars that split no bar: a plain one, and a first (or later) ending mark, which
# abc2midi counts as a plain bar.
_NO_SPLIT = frozenset({B_PLAIN, B_ENDING})
# Bars a repeat goes back from, and bars it goes back to (the start of the tune too).
_REPEAT_CLOSE = frozenset({B_END, B_ENDSTART, B_END_ENDING})
_REPEAT_TARGET = frozenset({B_START, B_ENDSTART, B_END})
# Bars that may close a pickup after `:|` (see verdict), and those after which a
# repeat sign no longer reaches back to that `:|` (see lone).
_PICKUP_CLOSE = frozenset({B_PLAIN, B_DOUBLE, B_FINAL, B_THICK})
_LONE_ENDS = frozenset({B_START, B_DOUBLE, B_FINAL, B_THICK})


@dataclass(frozen=True)
class _BarRule:
    """Where a tune stands with respect to rule 1 and 2 of the module doc."""

    M: Fraction | None            # bar length (units of L:, or grid steps), None for M:none
    first: bool = True            # the next piece is a pickup
    a: Fraction = 0               # the current part's pickup
    a0: Fraction = 0              # the tune's opening pickup
    opening: bool = True          # no piece closed yet
    need: Fraction | None = None  # the other half of a split bar
    strict: bool = False          # the next piece must be exactly `need`
    part: bool = True             # the next piece opens a part (its pickup sets `a`)
    fresh: bool = True            # the next piece is the first a repeat goes back to
    rep: Fraction = 0             # the pickup a repeat goes back to (0: none)
    open_end: bool = False        # strict, but the tune may end here (after `:|`)
    replay: bool = True           # track `rep` (Form.replay)
    after_end: bool = False       # the next piece follows `:|` (a pickup there closes at `|`)
    lone: bool = False            # the part opened with a pickup after `:|`: no repeat sign
    ending: int = 0               # 0 none, 1 a first ending, 2 just after its `:|`, 3 a later one
    rep_end: Fraction = 0         # the pickup the first ending's `:|` went back to
    ended: bool = False           # a later ending was met, and no `|:` since
    _targets_cache: dict | None = field(default=None, init=False, repr=False, compare=False)
    _hash: int | None = field(default=None, init=False, repr=False, compare=False)

    def __hash__(self) -> int:
        """The dataclass hash, kept: a rule is part of every memo key, which
        is hashed at each sampled token."""
        h = self._hash
        if h is None:
            h = hash((self.M, self.first, self.a, self.a0, self.opening, self.need, self.strict,
                      self.part, self.fresh, self.rep, self.open_end, self.replay, self.after_end,
                      self.lone, self.ending, self.rep_end, self.ended))
            object.__setattr__(self, "_hash", h)
        return h

    def verdict(self, length, kind, fillable=None, rep_fillable=None) -> str:
        """How a piece of ``length`` closed by a bar of ``kind`` (None: the end
        of the text) stands: 'full', 'pickup', 'half', 'split' (the next piece
        may supply a remembered pickup), 'split-strict' (the next piece must
        be the rest of the bar), 'free' (M:none) or 'wrong'."""
        M = self.M
        if M is None:
            return "free" if length > 0 else "wrong"
        if self.lone and kind in _REPEAT_CLOSE:
            # abc2midi reads the `:|` before this part's pickup as `::` once a repeat
            # sign closes the part, and counts the pickup as a short bar
            return "wrong"
        if self.ended and kind == B_END and self.ending != 3 and (self.strict or length != M):
            # after endings abc2midi takes a bare `:|` only after a full bar (and, see
            # judge, a full bar after it)
            return "wrong"
        if self.strict:
            return "half" if length == self.need else "wrong"
        rf = rep_fillable or fillable
        if kind == B_END and self.ending == 3:
            # `:|` closing a later ending: abc2midi goes back once more and then goes on
            # from the bar before the first ending; it takes a full bar, or one that
            # leaves room for the pickup the first ending's repeat went back to (not
            # for a pickup before `|:`, which the repeat does not play)
            if length == M:
                return "full"
            r = self.rep_end
            return "split" if r and length == M - r and (rf is None or rf(M - r)) else "wrong"
        if self.rep and kind in _REPEAT_CLOSE and (rf is None or rf(M - self.rep)):
            # the repeat plays the pickup again: the closing bar leaves room for it
            if length != M - self.rep:
                return "wrong"
            return "split" if kind in _FREE_AFTER else "split-strict"
        if self.first and 0 < length < M:
            # after `:|` abc2midi takes a pickup closed by no repeat sign or ending
            # (`:|A|:` adds A to the next bar)
            return "pickup" if not self.after_end or kind in _PICKUP_CLOSE else "wrong"
        if length == M:
            return "full"
        if self.need is not None and length == self.need:
            return "half"
        if kind not in _NO_SPLIT and 0 < length < M:
            if M - length in self.anacruses():
                # the pickup must follow (as the repeat comes round to it) except where
                # nothing follows (|], the end) or a second ending starts afresh (:|2);
                # after :| the tune may also end (judge)
                return "split" if kind in _FREE_AFTER else "split-strict"
            if kind not in _REPEAT_CLOSE and (fillable is None or fillable(M - length)):
                return "split-strict"   # (a repeat goes back to a full bar: none there)
        return "wrong"

    def judge(self, length, kind, fillable=None, rep_fillable=None):
        """(verdict, the rule for the next piece)."""
        v = self.verdict(length, kind, fillable, rep_fillable)
        if v == "free":
            return v, self
        target = kind in _REPEAT_TARGET
        rep = 0 if target or kind in _REPEAT_CLOSE else self.rep
        if self.replay and self.fresh and v in ("pickup", "half") and not target:
            rep = length                         # a pickup inside the repeated part
        part = kind in PART_START
        ending, rep_end = self._ending_after(kind)
        base = self._replace(first=False, need=None, strict=False, part=part, opening=False,
                             fresh=target, rep=rep, open_end=False, after_end=False,
                             lone=self.lone and kind not in _LONE_ENDS, ending=ending, rep_end=rep_end,
                             ended=(self.ended or ending == 3) and kind != B_START)
        if kind == B_END and (self.ending == 3 or self.ended):
            # after `:|` closing a later ending abc2midi goes on from the bar before the
            # first ending: a full bar, no pickup, nothing left to pair (the tune may
            # end); after endings it reads a bare `:|` alike
            return v, base._replace(rep=0)
        if self.fresh and not self.first and kind in _REPEAT_CLOSE and v.startswith("split"):
            # a short bar that is all the repeat goes back to (`|:G2A:|`): abc2midi adds
            # the two passes together and counts the next piece as a bar of its own
            return v, base
        if v == "pickup":
            return v, base._replace(a=length, a0=length if self.opening else self.a0,
                                    lone=base.lone or self.after_end)
        if v in ("split", "split-strict"):
            # after :| the music goes on from the pickup the repeat came round to: the next
            # piece must be it, though the tune may also end there
            after_repeat = v == "split" and kind == B_END
            return v, base._replace(need=self.M - length, strict=v == "split-strict" or after_repeat,
                                    open_end=after_repeat)
        nxt = base
        if v == "half" and self.part:
            nxt = nxt._replace(a=length)     # this part's pickup: its end may pair with it
        if v != "wrong" and kind == B_END:
            nxt = nxt._replace(first=True, after_end=True)   # the next part may open with a pickup
        return v, nxt

    def _ending_after(self, kind):
        """(ending, rep_end) after a bar of ``kind``: which ending the music is in (0 none,
        1 a first ending, 2 right after the `:|` that closed it, 3 a later ending), and
        the pickup the first ending's repeat went back to."""
        e = self.ending
        if kind in (B_ENDING, B_LINE_ENDING):          # an ending mark
            return (3 if e in (2, 3) else 1), self.rep_end
        if kind == B_END_ENDING:                        # `:|2`: closes one, opens the next
            return 3, (self.rep if e != 3 else self.rep_end)
        if kind == B_END and e == 1:
            return 2, self.rep
        if kind == B_PLAIN and e in (1, 3):
            return e, self.rep_end
        return 0, 0

    def _replace(self, **changes) -> "_BarRule":
        """``dataclasses.replace`` at a fraction of its cost (a bar rule is judged at
        every bar line the sampler writes): the field values copied and changed, the
        caches (not fields that compare) left empty."""
        new = object.__new__(_BarRule)
        d = self.__dict__.copy()
        d.update(changes)
        d["_targets_cache"] = None
        d["_hash"] = None
        object.__setattr__(new, "__dict__", d)
        return new

    def may_end(self) -> bool:
        """The tune may end here: no half bar waits for its other half (a short bar
        closed by :| that pairs with a remembered pickup does not wait)."""
        return not self.strict or self.open_end

    def anacruses(self) -> set:
        """Pickups a short bar before a section mark may pair with: the tune's
        (the tune comes round again) and the current part's (its repeat)."""
        return {x for x in (self.a, self.a0) if 0 < x < self.M}

    def empty(self, kind) -> "_BarRule":
        """The rule after an empty piece closed by a bar of ``kind``: ``[2`` at a
        line start (see opener) or ``|:`` at a line start after ``:|``.  abc2midi
        counts on through ``:|`` followed by ``|:``, so the leave ``:|`` gives (a
        pickup, or a full bar after a short one) is withdrawn: the next piece is
        a full bar or the other half of the bar before."""
        if kind == B_LINE_ENDING:
            return self.opener()
        if self.M is None:
            return self
        ending, rep_end = self._ending_after(kind)
        lone = self.lone and kind not in _LONE_ENDS
        ended = (self.ended or ending == 3) and kind != B_START
        if self.opening:
            return self._replace(fresh=True, rep=0, ending=ending, rep_end=rep_end, lone=lone, ended=ended)
        return self._replace(first=False, part=True, strict=self.need is not None, fresh=True, rep=0,
                             open_end=False, after_end=False, ending=ending, rep_end=rep_end, lone=lone,
                             ended=ended)

    def opener(self) -> "_BarRule":
        """After an ending mark the music goes on mid-part: no pickup there."""
        ending, rep_end = self._ending_after(B_LINE_ENDING)
        ended = self.ended or ending == 3
        if self.open_end:   # `:|` then `[2`: the second ending follows the bar before the first
            return self._replace(first=False, part=False, need=None, strict=False, open_end=False,
                                 after_end=False, ending=ending, rep_end=rep_end, ended=ended)
        return self._replace(first=False, part=False, after_end=False, ending=ending, rep_end=rep_end,
                             ended=ended)

    def meter(self, M: Fraction | None) -> "_BarRule":
        """A meter change: a pickup may follow; the anacrusis is kept for the
        split rule (used only while it is shorter than a bar)."""
        return _BarRule(M, first=True, a=self.a, a0=self.a0, part=True, opening=False, replay=self.replay,
                        lone=self.lone, ending=self.ending, rep_end=self.rep_end, ended=self.ended)

    def targets(self, section_ok: bool):
        """The lengths the current piece may still end at (see _Filler.alive);
        asked many times a step, so kept on the (immutable) rule."""
        cache = self._targets_cache
        if cache is None:
            cache = {}
            object.__setattr__(self, "_targets_cache", cache)
        hit = cache.get(section_ok)
        if hit is None:
            hit = cache[section_ok] = self._targets(section_ok)
        return hit

    def _targets(self, section_ok: bool):
        if self.M is None:
            return ("free",)
        if self.strict:
            return ("exact", (self.need,))
        if self.first:
            return ("pickup", self.M)
        ts = {self.M}
        if self.need is not None:
            ts.add(self.need)
        if section_ok:
            ts.update(self.M - x for x in self.anacruses())
            if self.ending == 3 and 0 < self.rep_end < self.M:
                ts.add(self.M - self.rep_end)     # a later ending's `:|` (see verdict)
        return ("exact", tuple(sorted(ts)))


# --------------------------------------------------------------------------
# Measuring bars


@lru_cache(maxsize=4096)
def _sums_to(x: Fraction, parts: frozenset) -> bool:
    """x > 0 is a sum of lengths from parts (each as often as needed)."""
    if x <= 0 or not parts:
        return False
    den = 1
    for q in (*parts, x):
        den = den * q.denominator // gcd(den, q.denominator)
    goal = int(x * den)
    coins = sorted({int(q * den) for q in parts if 0 < q * den <= goal})
    if goal > 100000:
        return False  # too fine to work out: lenient, so a tune the mask allows still passes
    can = bytearray(goal + 1)
    can[0] = 1
    for v in range(1, goal + 1):
        can[v] = any(can[v - c] for c in coins if c <= v)
    return bool(can[goal])


def check_bars(model_text: str | Sequence[str], replay: bool = True) -> tuple[int, int]:
    """(complete bars, wrong bars) of a tune by the bar rule of the module doc.

    Complete bars are the pieces that must have the meter's length: pickups,
    the two halves of a split bar that together make a bar, and empty pieces
    are left out.  A wrong bar is a complete bar of another length, a pair of
    halves that does not add up, or a half left open at the end.  Works on
    any tokenizable text (unconstrained samples too); M:none counts nothing.
    ``replay=False`` leaves out the rule for a repeat that goes back to a
    pickup (as ``Form(replay=False)`` does for ``--form``).
    """
    tokens = split_tokens(model_text, "token") if isinstance(model_text, str) else model_text
    meter, unit = None, Fraction(1, 8)
    rule = _BarRule(None, replay=replay)
    complete = wrong = 0
    pos = Fraction(0)
    last_scale = Fraction(1)
    tup_left, tup_scale = 0, Fraction(1)
    in_chord = in_body = nonempty = False

    seen: set = set()                     # the lengths of the sounds met so far

    def fillable(x) -> bool:
        """x can be written with sounds of the lengths met so far: the mask asks the
        same of the vocabulary's durations (a superset), so a tune it allows passes."""
        return _sums_to(x, frozenset(seen))

    def close(kind):
        nonlocal rule, complete, wrong, pos, nonempty
        if nonempty:
            verdict, rule = rule.judge(pos, kind, rep_fillable=fillable)
            if verdict in ("full", "wrong"):
                complete += 1
                wrong += verdict == "wrong"
        pos, nonempty = Fraction(0), False

    for tok in tokens:
        if len(tok) > 2 and tok[1] == ":" and tok[0] in "MLK" and not in_chord:
            if tok[0] == "M":
                m = meter_value(tok[2:])
                meter = None if m == "bad" else m
            elif tok[0] == "L":
                unit = fraction_of(tok[2:]) or unit
            else:
                in_body = True
            if tok[0] in "ML":
                if rule.strict:
                    complete += 1
                    wrong += 1
                M = None if meter is None else meter / unit
                rule = rule.meter(M) if in_body else _BarRule(M, replay=replay)
            continue
        if not in_body or tok in ("\n", " ", "-"):
            continue
        if in_chord:                      # pitches (and stray durations) of a chord
            in_chord = tok != "]"
            continue
        if tok in ("[", "z") or letter_octave(tok) is not None:
            last_scale = tup_scale if tup_left else Fraction(1)
            seen.add(last_scale)
            tup_left = max(tup_left - 1, 0)
            pos += last_scale
            nonempty = True
            in_chord = tok == "["
            continue
        d = duration_of(tok)
        if d is not None:
            pos += last_scale * (d - 1)
            seen.add(last_scale * d)
            continue
        t = tuplet_of(tok) if tok.startswith("(") else None
        if t is not None:
            tup_left, tup_scale = t[2], Fraction(t[1], t[0])
            continue
        b = bar_of(tok)
        if b is not None and b != "bad":
            if not nonempty:
                rule = rule.empty(b[0])
                continue
            close(b[0])
    if nonempty:
        close(None)
    if not rule.may_end():
        complete += 1
        wrong += 1
    return complete, wrong

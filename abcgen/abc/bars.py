"""The bar rule (the module doc of grammar.py, rules 1 and 2), shared by the mask and by
``check_bars``, which measures the bars of any tokenizable tune by it."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Sequence

from .symbols import (B_LINE_ENDING, B_PLAIN, PART_START, bar_of, duration_of, fraction_of,
                      letter_octave, meter_value, tuplet_of)
from .tokens import split_tokens

# --------------------------------------------------------------------------
# The bar rule, shared by the mask and by check_bars


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
    _targets_cache: dict | None = field(default=None, init=False, repr=False, compare=False)
    _hash: int | None = field(default=None, init=False, repr=False, compare=False)

    def __hash__(self) -> int:
        """The dataclass hash, kept: a rule is part of every memo key, which
        is hashed at each sampled token."""
        h = self._hash
        if h is None:
            h = hash((self.M, self.first, self.a, self.a0, self.opening, self.need, self.strict,
                      self.part))
            object.__setattr__(self, "_hash", h)
        return h

    def verdict(self, length, kind, fillable=None) -> str:
        """How a piece of ``length`` closed by a bar of ``kind`` (None: the end
        of the text) stands: 'full', 'pickup', 'half', 'split' (the next piece
        may supply a remembered pickup), 'split-strict' (the next piece must
        be the rest of the bar), 'free' (M:none) or 'wrong'."""
        M = self.M
        if M is None:
            return "free" if length > 0 else "wrong"
        if self.strict:
            return "half" if length == self.need else "wrong"
        if self.first and 0 < length < M:
            return "pickup"
        if length == M:
            return "full"
        if self.need is not None and length == self.need:
            return "half"
        if kind != B_PLAIN and 0 < length < M:
            if M - length in self.anacruses():
                return "split"
            if fillable is None or fillable(M - length):
                return "split-strict"
        return "wrong"

    def judge(self, length, kind, fillable=None):
        """(verdict, the rule for the next piece)."""
        v = self.verdict(length, kind, fillable)
        if v == "free":
            return v, self
        part = kind in PART_START
        if v == "pickup":
            return v, self._replace(first=False, need=None, strict=False, part=part,
                                    opening=False, a=length,
                                    a0=length if self.opening else self.a0)
        if v in ("split", "split-strict"):
            return v, self._replace(first=False, part=part, opening=False, need=self.M - length,
                                    strict=v == "split-strict")
        nxt = self._replace(first=v != "wrong" and part,   # the next part may open with a pickup
                            need=None, strict=False, part=part, opening=False)
        if v == "half" and self.part:
            nxt = nxt._replace(a=length)     # this part's pickup: its end may pair with it
        return v, nxt

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

    def anacruses(self) -> set:
        """Pickups a short bar before a section mark may pair with: the tune's
        (the tune comes round again) and the current part's (its repeat)."""
        return {x for x in (self.a, self.a0) if 0 < x < self.M}

    def opener(self) -> "_BarRule":
        """After an ending mark the music goes on mid-part: no pickup there."""
        return self._replace(first=False, part=False)

    def meter(self, M: Fraction | None) -> "_BarRule":
        """A meter change: a pickup may follow; the anacrusis is kept for the
        split rule (used only while it is shorter than a bar)."""
        return _BarRule(M, first=True, a=self.a, a0=self.a0, part=True, opening=False)

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
        return ("exact", tuple(sorted(ts)))


# --------------------------------------------------------------------------
# Measuring bars


def check_bars(model_text: str | Sequence[str]) -> tuple[int, int]:
    """(complete bars, wrong bars) of a tune by the bar rule of the module doc.

    Complete bars are the pieces that must have the meter's length: pickups,
    the two halves of a split bar that together make a bar, and empty pieces
    are left out.  A wrong bar is a complete bar of another length, a pair of
    halves that does not add up, or a half left open at the end.  Works on
    any tokenizable text (unconstrained samples too); M:none counts nothing.
    """
    tokens = split_tokens(model_text, "token") if isinstance(model_text, str) else model_text
    meter, unit = None, Fraction(1, 8)
    rule = _BarRule(None)
    complete = wrong = 0
    pos = Fraction(0)
    last_scale = Fraction(1)
    tup_left, tup_scale = 0, Fraction(1)
    in_chord = in_body = nonempty = False

    def close(kind):
        nonlocal rule, complete, wrong, pos, nonempty
        if nonempty:
            verdict, rule = rule.judge(pos, kind)
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
                rule = rule.meter(M) if in_body else _BarRule(M)
            continue
        if not in_body or tok in ("\n", " ", "-"):
            continue
        if in_chord:                      # pitches (and stray durations) of a chord
            in_chord = tok != "]"
            continue
        if tok in ("[", "z") or letter_octave(tok) is not None:
            last_scale = tup_scale if tup_left else Fraction(1)
            tup_left = max(tup_left - 1, 0)
            pos += last_scale
            nonempty = True
            in_chord = tok == "["
            continue
        d = duration_of(tok)
        if d is not None:
            pos += last_scale * (d - 1)
            continue
        t = tuplet_of(tok) if tok.startswith("(") else None
        if t is not None:
            tup_left, tup_scale = t[2], Fraction(t[1], t[0])
            continue
        b = bar_of(tok)
        if b is not None and b != "bad":
            if b[0] == B_LINE_ENDING and not nonempty:
                rule = rule.opener()
                continue
            close(b[0])
    if nonempty:
        close(None)
    if rule.strict:
        complete += 1
        wrong += 1
    return complete, wrong

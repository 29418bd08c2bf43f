"""A state machine over model-text tokens that masks what may come next.

The sampler multiplies the model's next-token distribution by ``allowed()`` so
that every tune it finishes is one that music21 and abc2midi read without
errors and whose bars all have the meter's length.  It runs on the sampling
path beside the NumPy step, so it needs nothing but NumPy.

Only token-level vocabularies are supported: a char-level model would need the
machine to run inside symbols, which nothing samples with.

The rules, in the order a tune meets them (each one either keeps a reader from
failing or keeps the text in the canonical form of :mod:`abcgen.abc.writer`):

* Header: ``M:`` line, ``L:`` line, ``K:`` line, each ended by a newline.
  ``reset(meter=, unit=, key=)`` forces a value (only that token is allowed).
  A meter is offered only if some unit lets the vocabulary's durations fill
  its bar, and a unit only if it does so for the chosen meter.  ``M:none``
  is allowed and switches bar lengths off.
* Sounds: a pitch, ``z`` or a chord ``[..]`` (at least one pitch; no rests,
  bars, durations or ties inside; no letter-octave twice).  One duration token
  may follow a sound; one tie ``-`` may follow a note or chord (after its
  duration), under the tie rule of ``AbcConstraint._tie_ok``: the next sound
  repeats the tied pitches (same tokens within a bar, same letter-octave across
  a plain ``|``), and only a plain bar may come between.
* Tuplets ``(p``, ``(p:q`` and ``(p:q:r`` scale the next r sounds by q/p; a
  bare ``(p`` only for p = 2, 3, 4, whose q every reader agrees on.  No bar,
  space or newline until the r sounds are written, and no nesting.
* Spaces only between sounds: after a sound (its duration or tie) and before
  the next sound or tuplet; never inside a tuplet, at a line start or by a
  bar.  Newlines only after a closing bar (``|`` ``||`` ``|]`` ``[|`` ``:|``),
  never after one that opens something (``|:`` ``::`` ``|1`` ``:|2`` ``[2``),
  since the writer starts lines with the opening.  ``M:`` and ``K:`` lines (a
  real change, each at most once) only at a line start; ``L:``, ``V:`` and the
  other fields never appear in the body.  A line never starts with a single
  letter and a colon (``A::B|``), and ``::`` never follows a bare capital
  (``B3C::D4``): music21 reads both as fields and loses the notes.

Bar lengths.  The notes between two bar tokens are a *piece*; its length is
counted exactly (fractions of the ``L:`` unit).  Let M be the bar length.  A
*section* bar is any bar token but the plain ``|``; a *part* starts after
``|:`` ``::`` ``:|`` ``||`` ``|]`` ``[|`` (not after an ending mark, where the
music goes on mid-part).

1. The first piece of the tune, of a part after ``:|`` (when the bar before
   was complete) and after an ``M:`` change may be a pickup: any length up to
   M.  The tune's first pickup and the current part's pickup are remembered.
   (After a full bar and ``||``, ``|:`` or ``::`` there is no pickup: abc2midi
   counts it as a short bar; shorten the bar before instead, rule 2.)
2. Every other piece has length M, except that a piece ending at a section bar
   other than an ending mark ``|1`` may be short (a bar split by the mark):

   * short by a remembered pickup: the tune or part comes round to that pickup
     (``A|:B2c def|..|1A3 A2:|`` in 6/8); the next piece must be that pickup
     (going on after ``:|`` too), except after ``|]``, a second ending
     ``:|2`` or where the tune ends;
   * short by anything else, not before a repeat sign (the repeat would go
     back to a full bar): the next piece must be exactly the rest of the bar
     (``..A4 A2||ab|`` in 4/4 with L:1/16); opening a part, that rest becomes
     the part's pickup.
   * where a repeat goes back to a pickup inside it (``|:A|..``, or a tune
     or a part after ``:|`` that opens with one), the bar before the repeat
     sign must leave room for it: it is exactly M minus that pickup
     (``|:A|d2f edB|A3 A2:|``), as the repeat is played.

   ``:|`` followed by ``|:`` at a line start keeps no leave of ``:|``: the
   next piece is a full bar or the other half of the bar before.

   Where abc2midi plays repeats its own way (each case in test_grammar's
   REPEAT_BARS, played by abc2midi): a pickup after ``:|`` closes at a bar
   that is no repeat sign or ending (abc2midi adds the ``A`` of ``:|A|:`` to
   the next bar), and no repeat sign closes the part it opens until ``|:``,
   ``||``, ``[|`` or ``|]`` (abc2midi would read that ``:|`` as ``::`` and
   the pickup as a short bar).  ``:|`` closing a second (or later) ending
   closes a full bar or one that leaves room for the pickup the first
   ending's repeat went back to, and a full bar follows it (abc2midi goes
   back once more, then on from the bar before the first ending); after
   endings, until the next ``|:``, a bare ``:|`` is taken alike.  A short
   bar that is all a repeat goes back to (``|:E3A FA:|``) is followed by a
   full bar or the end.

3. No token may leave the piece with no way to end: a piece only grows to
   lengths from which some allowed end is still reachable with the
   vocabulary's durations (tuplet groups included), so sampling never
   dead-ends and no note overflows the bar.

The only empty pieces are an opening right after a bar: ``|:`` at a line start
(``:|\n|:``) or at the start of the tune, and an ending mark ``[2`` at a line
start or after ``||``/``|]``/``[|``.

Repeats and endings, as abc2midi takes them: ``|:`` only while no ``|:`` is
open (abc2midi rejects a second one); ``:|`` closes the open ``|:``, the start
of the tune, or (abc2midi repeats from there, with a warning) the last
``:|``; ``::`` and a first ending (``|1``, ``[1``, ``|1,2``) need an open
``|:`` or the untouched start (abc2midi rejects them after a bare ``:|``).  A
first ending runs through plain bars and ends only at ``:|`` (or ``:|2``); the
next ending (``:|2``, or ``[2`` at the next line start) may follow; a later
ending ends at ``||``, ``|]``, ``[|``, ``|:``, ``:|`` or the end of the tune.

End: ``</s>`` only at a line start after a bar, with at least one note (a
tune of rests is no tune to music21), no open ``|:``, no first ending still
open, no pending tie and no split bar waiting for its other half.
``check_bars`` applies the same bar rule to any text, so a tune the mask
allows always has zero wrong bars.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Iterable

import numpy as np

from ..errors import InputError
from .tokens import BOS_ID, EOS_ID, PAD_ID, Vocabulary

__all__ = ["AbcConstraint", "Form", "GrammarError", "check_bars", "engravable", "tonic_of",
           "tuplet_safe"]


# Entries a memo table keeps before it starts afresh (a mask is about 0.6 KB
# with its key; a batch of 64 long tunes meets some 2,000 keys).
_MEMO_LIMIT = 20000


def _remember(memo: dict, key, value, limit: int = _MEMO_LIMIT) -> None:
    """memo[key] = value, the memo starting afresh when it has grown too big."""
    if len(memo) >= limit:
        memo.clear()
    memo[key] = value


# The tables of AbcConstraint that depend on the vocabulary alone (token
# classes, the filler, the memoized masks), by the vocabulary's symbols: the
# sampler builds a constraint per call, and each would otherwise start cold.
# A constraint shares them with its copies and with every constraint built on
# the same symbols; only the attributes below are its own.
_FAMILIES: dict = {}
_FAMILY_LIMIT = 2
_PER_CONSTRAINT = frozenset({"vocab", "_forced", "_forced_key", "_keyed", "_shown", "_s", "_form",
                             "_form_key"})


_new_state = object.__new__
_set_attr = object.__setattr__     # _State is frozen: its fields are set around its __setattr__


class GrammarError(InputError, ValueError):
    """A token the grammar does not allow here (a bad prime, or a sampler bug)."""

from .bars import _BarRule, check_bars
from .lengths import _Filler, tuplet_safe
from .symbols import (B_DOUBLE, B_END, B_END_ENDING, B_ENDING, B_ENDSTART, B_FINAL, B_LINE_ENDING,
                      B_PLAIN, B_START, B_THICK, CLOSING, K_BAR, K_BOS, K_CLOSE, K_DUR, K_EOS,
                      K_FIELD, K_NL, K_OPEN, K_OTHER, K_PAD, K_PITCH, K_REST, K_SPACE, K_TIE,
                      K_TUPLET, PART_START, SECTION_CLOSE, bar_of, duration_of, fraction_of,
                      meter_value, meter_writable, pitch_of, tuplet_of)


@dataclass(frozen=True)
class Form:
    """What a musician expects of a whole tune, on top of the grammar (see
    ``AbcConstraint``); each rule can be switched off.

    * ``changes``: a body ``M:`` or ``K:`` line (a meter or key change) is
      allowed; off by default, as a change is something a user asks for.
    * ``final_last``: ``|]`` only as the tune's last bar (it is allowed only
      where ``</s>`` could follow it), and ``</s>`` only after ``|]`` or ``:|``.
    * ``endings``: a first ending closed by a plain ``:|`` is followed by its
      second ending (``[2`` at the next line start); the tune may not end
      there.  (``:|2`` carries the second ending itself.)
    * ``whole_parts``: a section bar (``:|`` ``||`` ``|:`` ``|1`` ...) only
      after a whole bar or where the bar pairs with the tune's or the part's
      pickup; never one that splits a bar and leaves the rest to the next part
      (``cABG F2G:|F|`` in 2/2 after a two-unit pickup).
    * ``tonic``: ``</s>`` only when the tune's last note (the lowest of a last
      chord; rests after it do not count) is the key's tonic.
    * ``engrave``: no single note a reader writes as two tied notes or a triple
      dot (only lengths 2^k, 3*2^k and 7*2^k of L: units: no 5, 9, 10, 11,
      15/2 ...), none shorter than a quarter unit (``/8``, ``3/8``: a 64th
      note under L:1/8), and only plain tuplets ``(p:q:p`` with q = 2 or
      3 and q != p (``(3``, ``(2``, ``(5:2:5``; not ``(3:2:1`` or ``(6:6:6``).
    * ``replay``: where a repeat goes back to a pickup, the bar before the repeat
      sign leaves room for it (rule 2 of the module doc).  Off for ``--form``,
      whose parts close at a fixed bar and end on the tonic: the two rules
      together may leave no way to close the part (a known limit: such a part's
      closing bar is full, and abc2midi counts it long as the repeat plays the
      pickup again).
    """

    changes: bool = False
    final_last: bool = True
    whole_parts: bool = True
    endings: bool = True
    tonic: bool = True
    engrave: bool = True
    replay: bool = True


def engravable(d: Fraction) -> bool:
    """A single note of d L: units that a reader writes as one plain, dotted or
    double-dotted note: a power of two times 1, 3 or 7."""
    if d <= 0 or d.denominator & (d.denominator - 1):
        return False
    odd = d.numerator
    while odd % 2 == 0:
        odd //= 2
    return odd in (1, 3, 7)


def _tuplet_engravable(t) -> bool:
    p, q, r = t
    return r == p and q in (2, 3) and q != p


def tonic_of(key: str | None):
    """(letter, alteration in semitones) of a K: value's tonic ('F#min' -> ('F', 1)),
    or None for none or an unknown key."""
    if not key or key[0].upper() not in "ABCDEFG":
        return None
    alt = 0
    for ch in key[1:3]:
        if ch == "#":
            alt += 1
        elif ch == "b":
            alt -= 1
        else:
            break
    return key[0].upper(), alt


_ACC_ALT = {"": None, "^": 1, "^^": 2, "_": -1, "__": -2, "=": 0}


def _is_tonic(key: str | None, info) -> bool:
    """Is the pitch (info: ((letter, octave), accidental)) the key's tonic?  In
    canonical ABC a note without an accidental has the key signature's pitch,
    and the signature alters the tonic's letter as the tonic's own name does."""
    t = tonic_of(key)
    if t is None:
        return False
    (letter, _), acc = info
    if letter != t[0]:
        return False
    a = _ACC_ALT.get(acc)
    return a is None or a == t[1]


# --------------------------------------------------------------------------
# The state


@dataclass(frozen=True)
class _State:
    phase: int = 0                 # 0..5 header slots (M, nl, L, nl, K, nl), 6 body
    done: bool = False
    fed: bool = False              # any token seen (a leading <s> is skipped)
    meter: object = None           # Fraction of a whole note, or None
    unit: Fraction | None = None
    key: str | None = None
    rule: _BarRule = _BarRule(None)
    last: str = "nl"               # nl field bar space sound dur tie tuplet chord
    bar_kind: int = -1             # the last bar token's kind
    line_fields: frozenset = frozenset()
    after_field: bool = False      # the line start follows a field line
    pieces: int = 0                # non-empty pieces closed so far
    pos: int = 0                   # length of the current piece so far, in grid steps
    sound: str | None = None       # 'note' 'rest' 'chord' for a duration or tie
    sound_len: int = 0             # the last sound's length as written so far
    sound_q: int = 1               # its tuplet ratio q/p
    sound_p: int = 1
    sound_pitches: frozenset = frozenset()   # (letter-octave, accidental) of the sound
    tup_left: int = 0
    tup_q: int = 1
    tup_p: int = 1
    chord: tuple | None = None     # letter-octaves in the open chord
    tie_req: frozenset | None = None      # the pitches a tie needs the next sound to hold
    tie_crossed: bool = False             # a plain bar came between: any accidental ties
    respelled: bool = False               # the sound took up a tie not note for note
    line_letter: bool = False      # the line so far is one letter: no ':' may follow
    bare_upper: bool = False       # the last token is a bare capital (no '::' after it)
    rep: str = "start"             # start open closed
    ending: tuple | None = None    # ('in', first, last) or ('after', next number)
    has_note: bool = False
    final: bool = False            # a |] has been written (Form.final_last: the tune ends)
    tonic_last: bool = False       # the last note (or chord's lowest) is the key's tonic
    bars: int = 0                  # complete bars so far (full bars and split bars made whole)
    part_start: int = 0            # `bars` when the current part began (after a section bar)

    @property
    def M(self):
        return self.rule.M

    def with_(self, **changes) -> "_State":
        """``dataclasses.replace`` at a tenth of its cost (it runs __init__ over
        all 30 fields); a few of these run for every sampled token.  _State
        has no __post_init__ and no init=False field, so copying the field
        values is all replace does."""
        new = object.__new__(_State)
        d = self.__dict__.copy()
        d.update(changes)
        object.__setattr__(new, "__dict__", d)
        return new

    def mask_key(self):
        """The parts of the state that allowed() and closing_allowed() read, as a
        hashable tuple: equal keys give equal masks, so the masks are memoized
        on it.  Parts that only some situations read are left out elsewhere,
        so that the states of a tune fall on far fewer keys than it has
        tokens: the count of closed pieces (only whether it is 0), the last
        sound's pitches (only a chord's, or an open chord's: a single note
        cannot hold a letter twice, which is all a tie asks of them), its
        length (only right after it, where a duration may follow), the last
        bar kind (only right after it or the newline after it) and the meter,
        unit, key and fields of the line (only at a line start, where fields
        may come).  ``fed`` is never read by the mask.  The header needs only
        its slot and the meter (and the forced values: see AbcConstraint._key).
        The look-ahead of _letter_ok steps from a line start, whose key holds
        all the step reads."""
        if self.done:
            return ("done",)
        if self.phase < 6:
            return ("head", self.phase, self.meter)
        pitches = self.sound_pitches
        sp = pitches if self.chord is not None or len(pitches) > 1 else None
        last = self.last
        if last == "sound":
            sound = (self.sound, self.sound_len, self.sound_q, self.sound_p)
        elif last == "dur":
            sound = self.sound
        else:
            sound = None
        return (last, self.pos, self.rule, self.tup_left, self.tup_q, self.tup_p, self.chord,
                self.tie_req, self.tie_crossed, self.respelled, self.line_letter,
                self.bare_upper, self.rep, self.ending, self.has_note, self.pieces > 0, sp,
                sound,
                self.bar_kind if last == "nl" or last == "bar" else None,
                (self.meter, self.unit, self.key, self.line_fields, self.after_field)
                if last == "nl" else None)


class AbcConstraint:
    """Masks next tokens so every finished tune is valid (rules: module doc).

    Sampler loop::

        c = AbcConstraint(vocab)
        c.reset(meter="6/8", key="Dmix", unit="1/8")   # each optional
        for t in prime_ids: c.advance(t)               # a prime, <s> allowed first
        while not c.done:
            mask = c.allowed() if n < budget else c.closing_allowed()
            t = sample(probs * mask); c.advance(t)

    ``closing_allowed()`` is the part of ``allowed()`` that heads for the end
    (fill the bar, close chords, tuplets, repeats and endings, then ``|]`` or
    the like, newline, ``</s>``); it finishes within a few bars whatever the
    model picks.  ``force_end_tokens()`` gives one deterministic finish.
    """

    def __init__(self, vocab: Vocabulary, form: Form | None = None):
        """form: the whole-tune rules of ``Form`` (None: the grammar alone)."""
        if vocab.level != "token":
            raise ValueError(f"AbcConstraint needs a token-level vocabulary, not {vocab.level!r}: "
                             "the grammar works on whole ABC symbols")
        engrave = form is not None and form.engrave
        family = (tuple(vocab.symbols), engrave)
        tables = _FAMILIES.get(family)
        if tables is None:
            self._build_tables(vocab, engrave)
            tables = {k: v for k, v in self.__dict__.items() if k not in _PER_CONSTRAINT}
            _remember(_FAMILIES, family, tables, _FAMILY_LIMIT)
        else:
            self.__dict__.update(tables)
        self.vocab = vocab
        self._forced: dict = {}
        self._forced_key: tuple = ()
        self._keyed: tuple = (None, None)   # (state, its key): the last key computed
        self._shown: tuple = (None, None)   # (state, its mask): the last mask looked up
        self._s = _State()
        self._form = form
        # The form as a plain tuple in the memo keys: hashed and compared in C (a
        # frozen dataclass hashes in Python), and equal for equal forms of two calls.
        self._form_key = None if form is None else (
            form.changes, form.final_last, form.whole_parts, form.endings, form.tonic,
            form.engrave, form.replay)

    def _build_tables(self, vocab: Vocabulary, engrave: bool = False) -> None:
        """What the vocabulary alone determines: token classes, the filler and
        the (empty) memo tables.  engrave (Form.engrave): durations and tuplets
        a reader engraves badly are no tokens at all (K_OTHER), so the filler
        never counts on them to finish a bar."""
        syms = vocab.symbols
        self._syms = tuple(syms)
        n = len(syms)
        self.size = n
        kind = np.full(n, K_OTHER, dtype=np.int8)
        self._info: list = [None] * n
        lo_codes = np.full(n, -1, dtype=np.int32)
        los: dict = {}
        durs, tups = [], []
        for i, s in enumerate(syms):
            k, info = self._classify(i, s)
            if engrave and ((k == K_DUR and (not engravable(info) or info < Fraction(1, 4)))
                            or (k == K_TUPLET and not _tuplet_engravable(info))):
                k, info = K_OTHER, None
            kind[i] = k
            self._info[i] = info
            if k == K_PITCH:
                lo_codes[i] = los.setdefault(info[0], len(los))
            elif k == K_DUR:
                durs.append(info)
            elif k == K_TUPLET:
                tups.append(info)
        self._kind = kind
        self._kinds = kind.tolist()         # the same as ints, for the per-token code
        # per token: a one-letter note or rest (a line of one letter may read as
        # a field), a one-letter capital note (no '::' after it)
        self._one_letter = [k in (K_PITCH, K_REST) and len(s) == 1
                            for k, s in zip(self._kinds, syms)]
        self._bare_upper = [k == K_PITCH and len(s) == 1 and s.isupper()
                            for k, s in zip(self._kinds, syms)]
        # per pitch token: the sound_pitches of a note of it (one shared frozenset each)
        self._pitch_set = [frozenset({info}) if k == K_PITCH else None
                           for k, info in zip(self._kinds, self._info)]
        self._lo_index = los
        self._pitch_ids = np.flatnonzero(kind == K_PITCH)
        self._all_pitches = np.ones(len(self._pitch_ids), dtype=bool)
        self._all_pitches.flags.writeable = False
        self._p_lo = lo_codes[self._pitch_ids]
        self._ids = {k: np.flatnonzero(kind == k) for k in range(15)}
        self._letter_ids = np.array([i for i in self._pitch_ids if len(syms[i]) == 1],
                                    dtype=np.int64)
        self._filler = _Filler(durs, tups)
        self._grid_dur = {d: self._filler.to_grid(d) for d in durs}
        # the same as arrays, for the whole duration part of a mask at once
        self._dur_idx = np.array([i for i in self._ids[K_DUR]], dtype=np.int64)
        self._dur_steps = np.array([self._grid_dur[self._info[i]] for i in self._dur_idx],
                                   dtype=np.int64)
        self._fill_steps = np.array(self._filler.durations, dtype=np.int64)
        self._tup_fill_steps = np.array(self._filler.tuplet_durations, dtype=np.int64)
        # a sound's length in steps: of one unit, or of each duration (_toward_goal)
        self._sound_steps = np.append(self._dur_steps, self._filler.to_grid(Fraction(1)))
        self._sound_kind = np.isin(kind, [K_PITCH, K_REST, K_SPACE])
        self._dur_tuplet_safe = np.array([tuplet_safe(self._info[i]) for i in self._dur_idx], dtype=bool)
        self._dur_ids = [(int(i), self._info[i]) for i in self._ids[K_DUR]]
        self._tup_ids = [(int(i), self._info[i]) for i in self._ids[K_TUPLET]]
        self._bar_ids = [(int(i), self._info[i]) for i in self._ids[K_BAR]]
        self._field_ids = [(int(i), self._info[i]) for i in self._ids[K_FIELD]]
        self._rest_id = int(self._ids[K_REST][0]) if len(self._ids[K_REST]) else None
        self._open_id = int(self._ids[K_OPEN][0]) if len(self._ids[K_OPEN]) else None
        self._close_id = int(self._ids[K_CLOSE][0]) if len(self._ids[K_CLOSE]) else None
        self._nl_id = int(self._ids[K_NL][0]) if len(self._ids[K_NL]) else None
        self._tie_id = int(self._ids[K_TIE][0]) if len(self._ids[K_TIE]) else None
        self._space_id = int(self._ids[K_SPACE][0]) if len(self._ids[K_SPACE]) else None
        bar_kinds = {info[0] for _, info in self._bar_ids}
        self._has_end = B_END in bar_kinds
        self._units = [info[1] for _, info in self._field_ids if info[0] == "L"]
        self._tup_idx = np.array([i for i, _ in self._tup_ids], dtype=np.int64)
        self._bar_idx = np.array([i for i, _ in self._bar_ids], dtype=np.int64)
        self._field_idx = np.array([i for i, _ in self._field_ids], dtype=np.int64)
        bar_kind = np.array([b[0] for _, b in self._bar_ids], dtype=np.int64)
        self._bar_plain = bar_kind == B_PLAIN
        self._bar_kind = bar_kind
        self._bar_kinds_used = sorted(set(bar_kind.tolist()))
        self._bar_colon = np.isin(bar_kind, [B_END, B_ENDSTART, B_END_ENDING])
        self._bar_endstart = bar_kind == B_ENDSTART
        self._bar_colon_ids = self._bar_idx[self._bar_colon]
        self._bar_endstart_ids = self._bar_idx[self._bar_endstart]
        # Form tables
        self._final_ids = np.array([i for i, b in self._bar_ids if b[0] == B_FINAL], dtype=np.int64)
        self._final_list = self._final_ids.tolist()
        self._line_ending_first = {i: b[1] for i, b in self._bar_ids if b[0] == B_LINE_ENDING}
        self._tonic_memo: dict = {}       # (key, token id) -> _is_tonic
        self._has_tonic_memo: dict = {}   # key -> tonic_of(key) is not None
        self._tonic_pitch_memo: dict = {}  # key -> tonic mask over the pitch ids
        # Memo tables, each keyed on what the part it keeps reads (see _mask).
        self._masks: dict = {}            # mask key -> allowed() (read-only)
        self._cores: dict = {}            # core key -> (_build_core(), formed) (see _core_mask)
        self._closing: dict = {}          # mask key -> closing_allowed() (read-only)
        self._dur_memo: dict = {}         # _durations
        self._start_memo: dict = {}       # _sound_start_ok
        self._tup_masks: dict = {}        # _tuplet_mask
        self._bar_kind_masks: dict = {}   # _sound_end_bars
        self._field_masks: dict = {}      # _line_fields
        self._fits: dict = {}             # _bar_fits
        self._section_cache: dict = {}    # _section_ok
        self._rules: dict = {}            # interned bar rules (_intern)
        self._verdict_rows: dict = {}     # _bar_verdicts

    # ---------------------------------------------------------------- setup

    @staticmethod
    def _classify(i: int, s: str):
        if i == PAD_ID:
            return K_PAD, None
        if i == BOS_ID:
            return K_BOS, None
        if i == EOS_ID:
            return K_EOS, None
        if s == "\n":
            return K_NL, None
        if s == " ":
            return K_SPACE, None
        if s == "z":
            return K_REST, None
        if s == "[":
            return K_OPEN, None
        if s == "]":
            return K_CLOSE, None
        if s == "-":
            return K_TIE, None
        p = pitch_of(s)
        if p is not None:
            return K_PITCH, p
        d = duration_of(s)
        if d is not None:
            return K_DUR, d
        if s.startswith("("):
            t = tuplet_of(s)
            return (K_TUPLET, t) if t else (K_OTHER, None)
        b = bar_of(s)
        if b is not None:
            return (K_OTHER, None) if b == "bad" else (K_BAR, b)
        if len(s) > 2 and s[1] == ":" and s[0] in "MLK" and "\n" not in s:
            value = s[2:]
            if s[0] == "M":
                m = meter_value(value)
                return (K_OTHER, None) if m == "bad" else (K_FIELD, ("M", m, s))
            if s[0] == "L":
                u = fraction_of(value)
                return (K_OTHER, None) if u is None else (K_FIELD, ("L", u, s))
            return K_FIELD, ("K", value, s)
        return K_OTHER, None

    def _field_id(self, letter: str, value) -> int:
        if value is None:
            return -1
        if isinstance(value, Fraction):
            value = f"{value.numerator}/{value.denominator}"
        text = str(value).strip()
        if not text.startswith(letter + ":"):
            text = f"{letter}:{text}"
        if text not in self.vocab:
            raise ValueError(f"{text!r} is not in the vocabulary, so it cannot be forced")
        i = self.vocab.id_of(text)
        if self._kind[i] != K_FIELD:
            raise ValueError(f"{text!r} is not a usable {letter}: field")
        return i

    def reset(self, meter=None, key=None, unit=None) -> None:
        """Start a tune; meter ('6/8' or 'M:6/8'), key ('Dmix') and unit
        ('1/8' or Fraction(1, 8)) force the header tokens.  Raises ValueError
        for a value the vocabulary lacks or a meter its durations cannot fill,
        rather than letting the sampler run into a dead end."""
        forced = {"M": self._field_id("M", meter), "L": self._field_id("L", unit),
                  "K": self._field_id("K", key)}
        self._forced = forced
        self._forced_key = (forced["M"], forced["L"], forced["K"])
        self._s = _State()
        meters = ([self._info[forced["M"]][1]] if forced["M"] >= 0 else
                  [info[1] for _, info in self._field_ids if info[0] == "M"])
        units = [self._info[forced["L"]][1]] if forced["L"] >= 0 else self._units
        if not any(self._bar_fits(m, u) for m in meters for u in units):
            raise ValueError("no meter and unit of the vocabulary (as forced) give a bar its "
                             "durations can fill, so no tune could be finished")

    def _bar_fits(self, meter, unit) -> bool:
        """Can the durations fill a bar of this meter and unit?  Asked for
        every meter of the vocabulary at each line start: memoized."""
        key = (meter, unit)
        hit = self._fits.get(key)
        if hit is None:
            hit = self._fits[key] = meter is None or self._filler.fillable(meter / unit)
        return hit

    # ---------------------------------------------------------------- queries

    @property
    def done(self) -> bool:
        return self._s.done

    def copy(self) -> "AbcConstraint":
        """A constraint in the same state that can go its own way (beam search)."""
        other = object.__new__(AbcConstraint)
        other.__dict__.update(self.__dict__)
        return other

    @property
    def bars(self) -> int:
        """Complete bars written so far (a pickup and the short bar that pairs
        with it count as one)."""
        return self._s.bars

    @property
    def end_refused(self) -> bool:
        """At a line start where the grammar would let the tune end but the Form
        does not (it is off the tonic, after a bar that is no final one, or a
        second ending is due): the model wants to stop, so the sampler closes."""
        s = self._s
        return (s.last == "nl" and self._form is not None and s.phase == 6 and not s.done
                and self._end_ok(s) and not self._form_end_ok(s))

    @property
    def part_bars(self) -> int:
        """Complete bars of the current part so far (a part starts after a section
        bar: ``|:`` ``:|`` ``::`` ``||`` ``|]`` ``[|``)."""
        return self._s.bars - self._s.part_start

    def in_pickup_after_repeat(self) -> bool:
        """The piece under way follows ``:|`` and would close as a pickup: the part it
        opens could then not be closed by a repeat sign (abc2midi would read the
        ``:|`` before it as ``::``; see the bar rule's ``lone``)."""
        s = self._s
        r = s.rule
        return s.phase == 6 and r.first and r.after_end and r.M is not None and 0 < s.pos < r.M

    @property
    def at_bar(self) -> bool:
        """Just after a bar line (or the newline after it)."""
        return self._s.phase == 6 and self._s.last in ("bar", "nl")

    def bar_length(self) -> Fraction | None:
        """The current bar length in units of L: (None before the header or for M:none)."""
        M = self._s.M
        return None if M is None else Fraction(M, self._filler.grid)

    def allowed(self) -> np.ndarray:
        """Boolean mask over the vocabulary: the tokens that may come next."""
        return self._mask(self._s).copy()

    def mask_view(self, closing: bool = False) -> np.ndarray:
        """allowed() (or closing_allowed()) as the shared read-only array, without
        the copy: for the sampler, which only reads it."""
        if not closing:
            return self._mask(self._s)
        return self._closing_mask(self._s)

    def permits(self, token_id: int) -> bool:
        """allowed()[token_id], without building the mask when it is not memoized
        yet (checking a prime)."""
        token_id = int(token_id)
        if not 0 <= token_id < self.size:
            return False
        return self._ok(self._s, token_id)

    def _ok(self, s: _State, i: int) -> bool:
        """_token_ok(s, i), read off the memoized mask where there is one (while
        sampling there always is: the sampler asked for it)."""
        st, m = self._shown
        if st is not s:
            m = self._masks.get(self._key(s))
        if m is not None:
            return bool(m[i])
        return bool(self._token_ok(s, i))

    def advance(self, token_id: int) -> None:
        """Feed one token; a leading <s> is skipped so encode() output can be
        fed as it is.  Raises GrammarError (a ValueError) on a token the mask
        forbids: the state is then unchanged."""
        token_id = int(token_id)
        s = self._s
        if token_id == BOS_ID and not s.fed:
            self._s = s.with_(fed=True)
            return
        if not (0 <= token_id < self.size) or not self._ok(s, token_id):
            sym = self._syms[token_id] if 0 <= token_id < self.size else token_id
            raise GrammarError(f"token {sym!r} is not allowed here ({self._where(s)})")
        self._s = self._step(s, token_id)

    def advance_all(self, token_ids: Iterable[int]) -> None:
        for t in token_ids:
            self.advance(t)

    def _where(self, s: _State) -> str:
        if s.done:
            return "the tune has ended"
        if s.phase < 6:
            slot = ("M:", "newline", "L:", "newline", "K:", "newline")[s.phase]
            return "header, expecting " + slot
        g = self._filler.grid
        bar = None if s.M is None else Fraction(s.M, g)
        return (f"body, after {s.last}, piece length {Fraction(s.pos, g)}, bar length {bar}, "
                f"repeat {s.rep}, ending {s.ending}")

    # ---------------------------------------------------------------- rules

    def _section_ok(self, s: _State) -> bool:
        """Could some section bar end the current piece, the repeat state allowing?"""
        if s.tie_req is not None:
            return False
        key = (s.rep, s.ending)
        hit = self._section_cache.get(key)
        if hit is None:
            hit = any(self._bar_kind_ok(s, b) for _, b in self._bar_ids
                      if b[0] not in (B_PLAIN, B_LINE_ENDING))
            self._section_cache[key] = hit
        return hit

    def _targets(self, s: _State):
        return s.rule.targets(self._section_ok(s))

    def _alive(self, s: _State, pos: int, k: int, q: int, p: int) -> bool:
        return self._filler.alive(pos, k, q, p, self._targets(s))

    def _sound_start_ok(self, s: _State) -> bool:
        """Is there room for one more sound (any duration) in the piece?
        Memoized on what it reads: most masks ask it, from fewer places."""
        return self._start_ok_at(s, s.pos)

    def _start_ok_at(self, s: _State, pos: int) -> bool:
        """_sound_start_ok(s) with the piece ``pos`` steps long."""
        targets = self._targets(s)
        key = (pos, s.tup_left, s.tup_q, s.tup_p, targets)
        hit = self._start_memo.get(key)
        if hit is None:
            if s.tup_left:
                q, p, k = s.tup_q, s.tup_p, s.tup_left - 1
                steps = self._tup_fill_steps
            else:
                q, p, k = 1, 1, 0
                steps = self._fill_steps
            hit = self._filler.alive_any(pos + steps * q // p, k, q, p, targets)
            _remember(self._start_memo, key, hit)
        return hit

    def _durations(self, s: _State) -> np.ndarray:
        """_dur_ok over the duration tokens right after a sound, memoized on
        what it reads (the piece before the sound, its tuplet ratio, the
        tuplet state and the targets)."""
        targets = self._targets(s)
        base = s.pos - s.sound_len
        key = (base, s.sound_q, s.sound_p, s.tup_left, s.tup_q, s.tup_p, targets)
        hit = self._dur_memo.get(key)
        if hit is None:
            lengths = self._dur_steps * s.sound_q // s.sound_p
            hit = self._filler.alive_many(base + lengths, s.tup_left, s.tup_q, s.tup_p, targets)
            if s.sound_q != s.sound_p:
                hit = hit & self._dur_tuplet_safe
            _remember(self._dur_memo, key, hit)
        return hit

    def _dur_open(self, s: _State) -> bool:
        return s.last == "sound"

    def _default_ok(self, s: _State) -> bool:
        """May the sound just written keep the length 1 (no duration token)?"""
        if not self._dur_open(s):
            return True
        return self._alive(s, s.pos, s.tup_left, s.tup_q, s.tup_p)

    def _dur_ok(self, s: _State, d: Fraction) -> bool:
        if not self._dur_open(s) or (s.sound_q != s.sound_p and not tuplet_safe(d)):
            return False
        length = self._grid_dur[d] * s.sound_q // s.sound_p
        return self._alive(s, s.pos - s.sound_len + length, s.tup_left, s.tup_q, s.tup_p)

    def _can_follow_sound_end(self, s: _State) -> bool:
        """The token after a sound's duration phase: bars, spaces, next sound."""
        return s.last in ("sound", "dur", "tie") and self._default_ok(s)

    def _sound_slot(self, s: _State) -> bool:
        """Is a sound start possible here (position, not length)?"""
        if s.chord is not None or s.phase < 6 or s.done:
            return False
        if s.last in ("nl", "bar", "space", "tuplet"):
            return True
        return self._can_follow_sound_end(s)

    def _tuplet_ok(self, s: _State, t: tuple) -> bool:
        if s.tup_left or not self._sound_slot(s) or s.last == "tuplet":
            return False
        p, q, r = t
        return self._alive(s, s.pos, r, q, p)

    def _space_ok(self, s: _State) -> bool:
        if s.tup_left or s.last not in ("sound", "dur", "tie") or not self._default_ok(s):
            return False
        if self._sound_start_ok(s):
            return True
        return any(self._alive(s, s.pos, r, q, p) for _, (p, q, r) in self._tup_ids)

    def _end_ok(self, s: _State) -> bool:
        return (s.phase == 6 and s.last == "nl" and not s.after_field and s.pieces > 0
                and s.has_note and s.rep != "open" and s.tie_req is None
                and s.rule.may_end()
                and (s.ending is None or s.ending[0] == "after" or s.ending[1] >= 2))

    def _bar_ok(self, s: _State, info) -> bool:
        kind, first, last = info
        e = s.ending
        if s.phase != 6:
            return False
        if s.tie_req is not None and kind != B_PLAIN:
            return False
        if s.last in ("nl", "bar"):
            # the empty pieces: an opening right after a bar
            line_start = s.last == "nl"
            if kind == B_START:
                return (line_start and s.rep != "open" and self._has_end
                        and (e is None or e[0] == "after" or e[1] >= 2))
            if kind == B_LINE_ENDING:
                if not (line_start and s.pieces > 0) and not (
                        s.last == "bar" and s.bar_kind in SECTION_CLOSE):
                    return False
                if e is not None and e[0] == "after" and line_start and first == e[1]:
                    return True
                return (e is None and first == 1 and s.rep in ("start", "open"))
            return False
        if s.chord is not None or s.tup_left or not self._can_follow_sound_end(s):
            return False
        if s.line_letter and kind in (B_END, B_ENDSTART, B_END_ENDING):
            return False
        if s.bare_upper and kind == B_ENDSTART:
            return False      # music21 reads 'C::' as a field: 'B3C::D4' gives one note
        if not self._bar_kind_ok(s, info):
            return False
        return s.rule.verdict(s.pos, kind, self._filler.fillable_steps) != "wrong"

    def _bar_kind_ok(self, s: _State, info) -> bool:
        """The repeat and ending rules for a bar that ends a piece."""
        kind, first, last = info
        e = s.ending if s.ending is None or s.ending[0] == "in" else None
        in_first = e is not None and e[1] == 1
        if kind == B_PLAIN:
            return True
        if kind in SECTION_CLOSE:
            return not in_first
        if kind == B_START:
            return s.rep != "open" and not in_first and self._has_end
        if kind == B_END:
            return True     # closes an ending, '|:', the start, or (abc2midi) the last ':|'

        if kind == B_ENDSTART:
            return e is None and s.rep in ("start", "open") and self._has_end
        if kind == B_ENDING:
            return e is None and first == 1 and s.rep in ("start", "open")
        if kind == B_END_ENDING:
            return e is not None and first == e[2] + 1
        return False

    def _nl_ok(self, s: _State) -> bool:
        if s.phase in (1, 3, 5):
            return True
        if s.phase != 6:
            return False
        if s.last == "field":
            return True
        return s.last == "bar" and s.bar_kind in CLOSING

    def _field_ok(self, s: _State, info) -> bool:
        letter, value, text = info
        if letter == "M" and not meter_writable(text):
            return False
        if s.phase < 6:
            slot = {0: "M", 2: "L", 4: "K"}.get(s.phase)
            if slot != letter:
                return False
            forced = self._forced.get(letter, -1)
            if forced >= 0 and self._syms[forced] != text:
                return False
            if letter == "M":
                fu = self._forced.get("L", -1)
                units = [self._info[fu][1]] if fu >= 0 else self._units
                return any(self._bar_fits(value, u) for u in units)
            if letter == "L":
                return self._bar_fits(s.meter, value)
            return True
        if s.last != "nl" or s.pieces == 0 or letter in s.line_fields or letter == "L":
            return False
        if letter == "M":
            return (value != s.meter and not s.rule.strict and s.tup_left == 0
                    and self._bar_fits(value, s.unit))
        return value != s.key

    def _letter_ok(self, s: _State, i: int) -> bool:
        """A line may not read as a field: music21 takes ``A::B|`` for an
        ``A:`` line and abc2midi warns on ``A:|``.  So a one-letter sound
        opening a line is not followed by ``:|``, ``::`` or ``:|2``; it is
        allowed only if something else can follow it (looked ahead; all
        one-letter notes stand alike here, so one look serves them all)."""
        if s.last != "nl" or len(self._syms[i]) != 1:
            return True
        nxt = self._step(s, i)
        return bool(self._mask(nxt).any())

    def _tie_match(self, s: _State, info) -> bool:
        if s.tie_crossed:
            return any(info[0] == lo for lo, _ in s.tie_req)
        return info in s.tie_req

    def _pitch_ok(self, s: _State, info) -> bool:
        """A pitch token's own conditions: chord duplicates and ties (see _tie_ok)."""
        lo, acc = info
        if s.chord is not None and lo in s.chord:
            return False
        if s.tie_req:
            if s.chord is None:
                return len(s.tie_req) == 1 and self._tie_match(s, info)
            if lo[0] in {rlo[0] for rlo, _ in s.tie_req}:
                return self._tie_match(s, info)
        return True

    def _pitch_mask(self, s: _State) -> np.ndarray:
        """_pitch_ok over all pitch tokens at once (read-only where all are allowed)."""
        ids = self._pitch_ids
        if not s.chord and not s.tie_req:
            return self._all_pitches
        ok = np.ones(len(ids), dtype=bool)
        if s.chord:
            ok &= ~np.isin(self._p_lo, [self._lo_index[lo] for lo in s.chord])
        if s.tie_req:
            if s.tie_crossed:
                match = np.isin(self._p_lo, [self._lo_index[lo] for lo, _ in s.tie_req])
            else:
                match = np.array([self._info[i] in s.tie_req for i in ids], dtype=bool)
            if s.chord is None:
                return match if len(s.tie_req) == 1 else np.zeros_like(ok)
            letters = {rlo[0] for rlo, _ in s.tie_req}
            same_letter = np.array([self._info[i][0][0] in letters for i in ids], dtype=bool)
            ok &= ~same_letter | match
        return ok

    def _tie_done(self, s: _State) -> bool:
        """Does the open chord hold everything the tie before it needs?"""
        if s.tie_req is None:
            return True
        if s.tie_crossed:
            return {lo for lo, _ in s.tie_req} <= set(s.chord)
        return s.tie_req <= s.sound_pitches

    def _tie_ok(self, s: _State) -> bool:
        """abc2midi's "Could not find note to be tied" is avoided by a strict rule.

        abc2midi matches a tie within a bar by the sounding pitch, with
        accidentals carried through the bar for the whole letter
        (``^G-=G`` and ``g-[^G,g]`` fail), and across a repeat sign too
        (``_E-::E`` fails), but across a plain bar by letter and octave only
        (``^c-|c`` ties).  So: within the bar the next sound holds the very
        same pitch tokens; across a plain ``|`` the same letter-octaves; no
        other bar may come between; a tied chord has no letter twice; a chord
        that takes up a tie holds no other pitch of a tied letter; and a sound
        that took up a tie other than note for note (in another spelling, or
        a chord taking up fewer pitches) is not tied on, as abc2midi then
        loses the tie (``^^f-|[fg]-[gf]`` and ``_e-[a^d_e]-|[=c=ade]`` fail,
        while ``f-|[fg]-[gf]`` and ``_e-[a^d_e]-|[a^d_e]`` do not).
        """
        if not (s.last in ("sound", "dur") and s.sound in ("note", "chord")
                and self._default_ok(s)) or s.respelled:
            return False
        letters = [lo[0] for lo, _ in s.sound_pitches]
        if len(set(letters)) != len(letters):
            return False
        return self._filler.alive(s.pos, s.tup_left, s.tup_q, s.tup_p, s.rule.targets(False))

    def _token_ok(self, s: _State, i: int) -> bool:
        if s.done:
            return False
        k = self._kinds[i]
        info = self._info[i]
        if k in (K_PAD, K_BOS, K_OTHER):
            return False
        if s.phase < 6:
            if k == K_FIELD:
                return self._field_ok(s, info)
            return k == K_NL and self._nl_ok(s)
        if k == K_EOS:
            return self._end_ok(s)
        if s.chord is not None:
            if k == K_PITCH:
                return self._pitch_ok(s, info)
            if k == K_CLOSE:
                return len(s.chord) > 0 and self._tie_done(s)
            return False
        if k == K_DUR:
            return self._dur_ok(s, info)
        if k == K_PITCH:
            return (self._sound_slot(s) and self._sound_start_ok(s) and self._pitch_ok(s, info)
                    and self._letter_ok(s, i))
        if k == K_REST:
            return (s.tie_req is None and self._sound_slot(s) and self._sound_start_ok(s)
                    and self._letter_ok(s, i))
        if k == K_OPEN:
            return self._sound_slot(s) and self._sound_start_ok(s)
        if k == K_TIE:
            return self._tie_ok(s)
        if k == K_TUPLET:
            return self._tuplet_ok(s, info)
        if k == K_SPACE:
            return self._space_ok(s)
        if k == K_NL:
            return self._nl_ok(s)
        if k == K_BAR:
            return self._bar_ok(s, info)
        if k == K_FIELD:
            return self._field_ok(s, info)
        return False

    # ---------------------------------------------------------------- masks

    def _key(self, s: _State):
        """s.mask_key(), plus the forced header in the header (where the mask
        reads it); the last one is kept, as allowed() and advance() ask for
        the same state's key in turn."""
        st, key = self._keyed
        if st is s:
            return key
        key = s.mask_key()
        if key[0] == "head":
            key += (self._forced_key,)
        elif self._form is not None and key[0] != "done":
            # tonic_last is read only where </s> or |] may come next (and by the
            # closing moves, after a note); of the key, allowed() reads only whether
            # it has a tonic (Form.tonic), and at a line start, where mask_key holds
            # the key itself (the closing moves read the tonic: _closing_key).  The
            # mask key nested, not copied: the grammar's table (_cores) holds the
            # same tuple, and the tables hold tens of thousands of keys.
            tonic = self._has_tonic_memo.get(s.key)
            if tonic is None:
                tonic = self._has_tonic(s.key)
            key = (key, self._form_key, s.final,
                   s.tonic_last if s.last in ("nl", "sound", "dur") else None, tonic)
        self._keyed = (s, key)
        return key

    def _closing_key(self, s: _State):
        """_key(s) plus what closing_allowed() reads beside allowed(): the key's tonic."""
        key = self._key(s)
        if self._form is not None and s.phase == 6 and not s.done:
            key = (key, tonic_of(s.key))
        return key

    def _has_tonic(self, key) -> bool:
        hit = self._has_tonic_memo.get(key)
        if hit is None:
            hit = self._has_tonic_memo[key] = tonic_of(key) is not None
        return hit

    def _mask(self, s: _State) -> np.ndarray:
        """allowed() for state s, memoized on its mask key (read-only: shared).

        The states of a tune fall on a few hundred keys (the same place in
        the bar after the same kind of token), and the mask is the same for
        all states of one key, so it is built once per key instead of once
        per token; the table is shared with copies (all tunes of a batch) and
        with constraints on the same vocabulary (see _FAMILIES)."""
        st, m = self._shown
        if st is s:
            return m
        key = self._key(s)
        m = self._masks.get(key)
        if m is None:
            m = self._build_mask(s)
            m.flags.writeable = False
            _remember(self._masks, key, m)
        self._shown = (s, m)
        return m

    def _build_mask(self, s: _State) -> np.ndarray:
        """allowed() for state s: the grammar's mask (_core_mask), less what the Form
        rules out where they apply."""
        f = self._form
        if f is not None and not f.changes and s.last == "nl" and s.phase == 6 and not s.done:
            # The Form takes the field lines out (no changes), so the costly field
            # part of the mask is needed only where the filter leaves nothing and
            # falls back to the whole mask.
            m, formed = self._build_core(s, fields=False)
            out = self._form_filter(s, m) if formed else m
            if out is not m:
                return out
        m, formed = self._core_mask(s)
        if formed and f is not None:
            out = self._form_filter(s, m)
            # where the Form takes nothing out, the one array serves both tables
            return m if out is not m and not (out ^ m).any() else out
        return m

    def _core_mask(self, s: _State):
        """(_build_core(s), whether the Form applies to it), memoized apart from the
        masks: the grammar alone reads neither the Form's parts of the key (the last
        |], the tonic) nor, outside a line start, the two flags a one-letter sound
        sets, which only take bars out (line_letter the ones with a colon,
        bare_upper ``::``).  So a state that differs from a known one only there
        costs the Form's filter, not a whole mask.  At a line start (the look-ahead
        of _letter_ok reads the whole state) it is built afresh."""
        if s.done or s.phase < 6 or s.last == "nl":
            return self._build_core(s)
        flags = s.line_letter or s.bare_upper
        if flags:
            key = s.with_(line_letter=False, bare_upper=False).mask_key()
        else:                         # the mask key within _key's (one tuple for both tables)
            key = self._key(s)
            if self._form is not None:
                key = key[0]
        hit = self._cores.get(key)
        if hit is None:
            hit = self._build_core(s.with_(line_letter=False, bare_upper=False) if flags else s)
            hit[0].flags.writeable = False
            _remember(self._cores, key, hit)
        m, formed = hit
        if flags:
            m = m.copy()
            if s.line_letter:
                m[self._bar_colon_ids] = False
            if s.bare_upper:
                m[self._bar_endstart_ids] = False
            m.flags.writeable = False
        return m, formed

    def _build_core(self, s: _State, fields: bool = True):
        """The grammar's mask for state s (a fresh array) and whether the Form
        applies to it (not in the header, a chord or a duration that must come);
        without the field lines at a line start where not ``fields``."""
        m = np.zeros(self.size, dtype=bool)
        if s.done:
            return m, False
        if s.phase < 6:
            for i, info in self._field_ids:
                m[i] = self._field_ok(s, info)
            if self._nl_id is not None:
                m[self._nl_id] = self._nl_ok(s)
            return m, False
        pitch_ids = self._pitch_ids
        if s.chord is not None:
            m[pitch_ids] = self._pitch_mask(s)
            if self._close_id is not None:
                m[self._close_id] = self._token_ok(s, self._close_id)
            return m, False
        if self._dur_open(s):
            m[self._dur_idx] = self._durations(s)
            if not self._default_ok(s):
                return m, False
        slot = self._sound_slot(s)
        start = slot and self._sound_start_ok(s)
        if start:
            m[pitch_ids] = self._pitch_mask(s)
            if s.last == "nl":
                letters = self._letter_ids[m[self._letter_ids]]
                if len(letters) and not self._letter_ok(s, int(letters[0])):
                    m[letters] = False
            if self._rest_id is not None:
                m[self._rest_id] = s.tie_req is None and self._letter_ok(s, self._rest_id)
            if self._open_id is not None:
                m[self._open_id] = True
        tuplets = False
        if slot and not s.tup_left and s.last != "tuplet":
            tm = self._tuplet_mask(s)
            m[self._tup_idx] = tm
            tuplets = bool(tm.any())
        sound_end = s.last in ("sound", "dur", "tie")
        if sound_end:
            m[self._bar_idx] = self._sound_end_bars(s, slot)
        elif s.last in ("nl", "bar"):
            for i, b in self._bar_ids:
                m[i] = self._bar_ok(s, b)
        if s.last == "nl":
            if fields:
                m[self._field_idx] = self._line_fields(s)
        # the one-token kinds by their ids (an item, not a fancy index, to set)
        m[EOS_ID] = self._end_ok(s)
        tie = self._tie_ok(s)
        if self._tie_id is not None:
            m[self._tie_id] = tie
        if self._space_id is not None:
            # _space_ok: for a sound end, slot is _default_ok, start _sound_start_ok
            m[self._space_id] = sound_end and not s.tup_left and slot and (start or tuplets)
        if self._nl_id is not None:
            m[self._nl_id] = self._nl_ok(s)
        return m, True

    # ---------------------------------------------------------------- form

    def _is_tonic_id(self, key, i: int) -> bool:
        k = (key, i)
        hit = self._tonic_memo.get(k)
        if hit is None:
            hit = self._tonic_memo[k] = _is_tonic(key, self._info[i])
        return hit

    def _tonic_pitches(self, key) -> np.ndarray:
        """Over self._pitch_ids: is the pitch the key's tonic?"""
        hit = self._tonic_pitch_memo.get(key)
        if hit is None:
            hit = self._tonic_pitch_memo[key] = np.array(
                [self._is_tonic_id(key, int(i)) for i in self._pitch_ids], dtype=bool)
        return hit

    def _form_end_ok(self, s: _State) -> bool:
        """The Form's conditions on ``</s>`` (beside _end_ok's)."""
        f = self._form
        if f.tonic and tonic_of(s.key) is not None and not s.tonic_last:
            return False
        if f.final_last and s.bar_kind not in (B_FINAL, B_END):
            return False
        if f.endings and s.ending == ("after", 2):
            return False
        return True

    def _form_filter(self, s: _State, m: np.ndarray) -> np.ndarray:
        """The body mask m less what the Form rules out; m itself where that
        would leave nothing (never a dead end)."""
        f = self._form
        out = m.copy()
        kinds = self._kind
        if not f.changes:
            out[self._field_idx] = False
        if s.final and f.final_last:
            out &= (kinds == K_NL) | (kinds == K_EOS)
        if f.endings and s.ending == ("after", 2):     # a first ending closed by :|
            keep = kinds == K_NL
            for i, first in self._line_ending_first.items():
                keep[i] = first == s.ending[1]
            out &= keep
        if f.whole_parts and s.last in ("sound", "dur", "tie") and s.rule.M is not None:
            # no section bar that would leave half a bar for the next part
            out[self._half_bar_ids(s)] = False
        if out[EOS_ID] and not self._form_end_ok(s):
            out[EOS_ID] = False
        if f.final_last and self._nl_id is not None:
            for i in self._final_list:
                if out[i]:
                    after = self._step(self._step(s, i), self._nl_id)
                    out[i] = self._end_ok(after) and self._form_end_ok(after)
        return out if out.any() else m

    def _half_bar_ids(self, s: _State) -> np.ndarray:
        """The section bars (not plain) whose verdict here is 'split-strict' (they would
        leave half a bar for the next part), memoized as _bar_verdicts is."""
        key = (s.rule, s.pos, None)
        hit = self._verdict_rows.get(key)
        if hit is None:
            half = ~self._bar_verdicts(s, ("split-strict",))
            hit = self._bar_idx[half & ~self._bar_plain]
            _remember(self._verdict_rows, key, hit)
        return hit

    def _tuplet_mask(self, s: _State) -> np.ndarray:
        """_tuplet_ok over the tuplet tokens where a tuplet may start, memoized
        on the position and the targets (the rest of the state is the same
        for all of them)."""
        targets = self._targets(s)
        key = (s.pos, targets)
        hit = self._tup_masks.get(key)
        if hit is None:
            hit = np.array([self._filler.alive(s.pos, r, q, p, targets)
                            for _, (p, q, r) in self._tup_ids], dtype=bool)
            _remember(self._tup_masks, key, hit)
        return hit

    def _sound_end_bars(self, s: _State, follow: bool) -> np.ndarray:
        """_bar_ok over the bar tokens after a sound (follow:
        _can_follow_sound_end), with the parts that do not depend on the bar
        worked out once: the bar rule's verdict only asks whether the bar is
        plain, and the repeat rules only read the repeat and ending state."""
        if s.chord is not None or s.tup_left or not follow:
            return np.zeros(len(self._bar_ids), dtype=bool)
        key = (s.rep, s.ending)
        ok = self._bar_kind_masks.get(key)
        if ok is None:
            ok = self._bar_kind_masks[key] = np.array(
                [self._bar_kind_ok(s, b) for _, b in self._bar_ids], dtype=bool)
        if s.tie_req is not None:
            ok = ok & self._bar_plain
        if s.line_letter:
            ok = ok & ~self._bar_colon
        if s.bare_upper:
            ok = ok & ~self._bar_endstart
        return ok & self._bar_verdicts(s, ("wrong",))

    def _bar_verdicts(self, s: _State, bad: tuple) -> np.ndarray:
        """_verdicts(s, bad) per bar token (over self._bar_ids; read-only), memoized on what
        _verdicts reads: the bar rule and the piece's length (the rule is interned, its
        hash kept).  Two of these per mask built after a sound, each some ten verdicts."""
        key = (s.rule, s.pos, bad)
        hit = self._verdict_rows.get(key)
        if hit is None:
            hit = self._verdicts(s, bad)[self._bar_kind]
            hit.flags.writeable = False
            _remember(self._verdict_rows, key, hit)
        return hit

    def _verdicts(self, s: _State, bad=("wrong",)) -> np.ndarray:
        """Per bar kind (indexed by kind): the bar rule lets a bar of that kind close the
        piece here (its verdict is not in ``bad``)."""
        fill = self._filler.fillable_steps
        out = np.zeros(max(self._bar_kinds_used, default=0) + 1, dtype=bool)
        for k in self._bar_kinds_used:
            out[k] = s.rule.verdict(s.pos, k, fill) not in bad
        return out

    def _line_fields(self, s: _State) -> np.ndarray:
        """_field_ok over the field tokens at a line start in the body,
        memoized on what it reads (each line start would ask it afresh)."""
        key = (s.meter, s.unit, s.key, s.line_fields, s.pieces > 0, s.rule.strict, s.tup_left)
        hit = self._field_masks.get(key)
        if hit is None:
            hit = np.array([self._field_ok(s, f) for _, f in self._field_ids], dtype=bool)
            _remember(self._field_masks, key, hit)
        return hit

    # ---------------------------------------------------------------- steps

    def _step(self, s: _State, i: int) -> _State:
        """The state after token i (allowed in s).  One copy of the state's fields,
        changed in place and made the new state's: a few of these run for every
        sampled token (the sampler's advance and the masks' look-ahead)."""
        k = self._kinds[i]
        info = self._info[i]
        d = s.__dict__.copy()
        d["fed"] = True
        ending = s.ending
        if ending is not None and ending[0] == "after" and k != K_NL and not (
                k == K_BAR and info[0] == B_LINE_ENDING):
            ending = d["ending"] = None     # the next ending was not taken up
        # a one-letter note or rest opening a line (no ':' may follow); a bare capital
        d["line_letter"] = self._one_letter[i] and s.last == "nl"
        d["bare_upper"] = self._bare_upper[i]
        if k == K_EOS:
            d["done"] = True
        elif s.phase < 6:
            if k == K_NL:
                d["phase"] = s.phase + 1
                d["last"] = "nl"
            else:
                letter, value, text = info
                d["last"] = "field"
                if letter == "M":
                    d["phase"] = 1
                    d["meter"] = value
                elif letter == "L":
                    M = None if s.meter is None else self._filler.to_grid(s.meter / value)
                    d["phase"] = 3
                    d["unit"] = value
                    d["rule"] = self._intern(_BarRule(M, replay=self._form is None or self._form.replay))
                else:
                    d["phase"] = 5
                    d["key"] = value
        elif k == K_NL:
            d["last"] = "nl"
            if s.last == "field":
                d["after_field"] = True
            else:
                d["line_fields"] = frozenset()
                d["after_field"] = False
        elif k == K_FIELD:
            letter, value, text = info
            d["line_fields"] = s.line_fields | {letter}
            d["last"] = "field"
            if letter == "M":
                M = None if value is None else self._filler.to_grid(value / s.unit)
                d["meter"] = value
                d["rule"] = self._intern(s.rule.meter(M))
            else:
                d["key"] = value
        elif k == K_SPACE:
            d["last"] = "space"
        elif k == K_TIE:
            d["last"] = "tie"
            d["tie_req"] = s.sound_pitches
            d["tie_crossed"] = False
        elif k == K_DUR:
            length = self._grid_dur[info] * s.sound_q // s.sound_p
            d["last"] = "dur"
            d["pos"] = s.pos - s.sound_len + length
            d["sound_len"] = length
        elif k == K_TUPLET:
            p, q, r = info
            d["last"] = "tuplet"
            d["tup_left"] = r
            d["tup_q"] = q
            d["tup_p"] = p
        elif s.chord is not None:
            if k == K_PITCH:
                d["chord"] = s.chord + (info[0],)
                d["sound_pitches"] = s.sound_pitches | {info}
            else:   # K_CLOSE
                tonic = s.tonic_last
                if self._form is not None and s.sound_pitches:
                    low = min(s.sound_pitches, key=lambda p: (p[0][1], "CDEFGAB".index(p[0][0])))
                    tonic = _is_tonic(s.key, low)
                d["chord"] = None
                d["last"] = "sound"
                d["sound"] = "chord"
                d["tie_req"] = None
                d["respelled"] = s.tie_req is not None and s.tie_req != s.sound_pitches
                d["tonic_last"] = tonic
        elif k == K_PITCH or k == K_REST or k == K_OPEN:
            if s.tup_left:
                q, p, left = s.tup_q, s.tup_p, s.tup_left - 1
            else:
                q, p, left = 1, 1, 0
            length = self._filler.grid * q // p
            d["pos"] = s.pos + length
            d["sound_len"] = length
            d["sound_q"] = q
            d["sound_p"] = p
            d["tup_left"] = left
            d["tup_q"] = q if left else 1
            d["tup_p"] = p if left else 1
            if k == K_PITCH:
                d["last"] = "sound"
                d["sound"] = "note"
                d["sound_pitches"] = self._pitch_set[i]
                d["tie_req"] = None
                d["has_note"] = True
                d["respelled"] = s.tie_req is not None and info not in s.tie_req
                d["tonic_last"] = self._form is not None and self._is_tonic_id(s.key, i)
            elif k == K_REST:
                d["last"] = "sound"
                d["sound"] = "rest"
                d["sound_pitches"] = frozenset()
            else:
                d["last"] = "chord"
                d["chord"] = ()
                d["sound_pitches"] = frozenset()
                d["has_note"] = True
        elif k == K_BAR:
            self._step_bar(s, info, d, ending)
        else:
            raise AssertionError(f"unhandled token kind {k}")
        new = _new_state(_State)
        _set_attr(new, "__dict__", d)
        return new

    def _intern(self, rule: _BarRule) -> _BarRule:
        """The one rule object of its value, so that memo keys of different tunes
        compare by identity (and share the rule's targets cache)."""
        hit = self._rules.get(rule)
        if hit is None:
            _remember(self._rules, rule, rule)
            hit = rule
        return hit

    def _step_bar(self, s: _State, info, d: dict, e) -> None:
        """_step for a bar token: the changes into d (s's fields; e: its ending
        after _step's own change)."""
        kind, first, last = info
        rep = s.rep
        empty = s.last in ("nl", "bar")
        rule, pieces, bars, part_start = s.rule, s.pieces, s.bars, s.part_start
        if not empty:
            verdict, rule = rule.judge(s.pos, kind, self._filler.fillable_steps)
            rule = self._intern(rule)
            pieces += 1
            bars += verdict in ("full", "half", "free")
            if verdict == "half" and part_start == s.bars:
                part_start = bars    # the other half of the last part's closing bar
        else:
            rule = self._intern(rule.empty(kind))
        # repeats and endings
        if kind == B_START:
            rep, e = "open", None
        elif kind == B_END:
            if e is not None:
                e = ("after", e[2] + 1)
            rep = "closed"
        elif kind == B_ENDSTART:
            rep = "open"
        elif kind in SECTION_CLOSE:
            if e is not None:
                e, rep = None, "closed"
        elif kind in (B_ENDING, B_LINE_ENDING, B_END_ENDING):
            if kind == B_END_ENDING:
                rep = "closed"
            e = ("in", first, last)
        d.update(last="bar", bar_kind=kind, rule=rule, pieces=pieces, pos=0, rep=rep, ending=e,
                 after_field=False, sound=None, tie_crossed=s.tie_req is not None, bars=bars,
                 part_start=bars if kind in PART_START else part_start,
                 final=s.final or kind == B_FINAL)

    # ---------------------------------------------------------------- closing

    def closing_allowed(self) -> np.ndarray:
        """The part of allowed() that heads for a clean end (see class doc).

        Inside a bar only notes, rests and durations (no chords, tuplets,
        spaces or ties) until the bar can close; then only a bar that moves
        towards the end (``:|`` while a repeat or first ending is open, else
        a closing bar), one that leaves a half bar behind only when the bar
        cannot be filled otherwise; then newline, ``</s>``
        Falls back to allowed() where that leaves nothing (a bar only a tuplet
        can fill).  Every step adds length to a bar or closes something, so
        the tune ends within a few bars.
        """
        return self._closing_mask(self._s).copy()

    def _closing_mask(self, s: _State) -> np.ndarray:
        """closing_allowed() for state s, memoized (read-only: shared)."""
        key = self._closing_key(s)
        c = self._closing.get(key)
        if c is None:
            c = self._build_closing(s)
            c.flags.writeable = False
            _remember(self._closing, key, c)
        return c

    def _build_closing(self, s: _State) -> np.ndarray:
        m = self._mask(s)
        if s.done or s.phase < 6:
            return m.copy()
        c = np.zeros_like(m)
        if s.chord is not None:
            if self._close_id is not None and m[self._close_id]:
                c[self._close_id] = True
            else:
                ids = self._pitch_ids
                c[ids] = m[ids]
                if not self._tie_done(s):
                    have = set(s.chord)
                    need = {lo for lo, _ in s.tie_req} - have
                    c[ids] &= np.isin(self._p_lo, [self._lo_index[lo] for lo in need])
        elif s.last == "nl":
            for i in self._ids[K_EOS]:
                c[i] = m[i]
            if not c.any():
                self._closing_sounds(s, m, c)
        elif s.last == "bar":
            if self._nl_id is not None and m[self._nl_id]:
                c[self._nl_id] = True
            else:
                self._closing_sounds(s, m, c)
        else:
            good, halves = self._closing_bars(s, m)
            if good and self._form is not None and self._form.final_last:
                ends = [i for i in good if self._info[i][0] in (B_FINAL, B_END, B_END_ENDING)]
                good = ends or good
            if good:
                c[good] = True
            else:
                for i, _ in self._dur_ids:
                    c[i] = m[i]
                self._closing_sounds(s, m, c)
                if not c.any():
                    c[halves] = True
        if not c.any():
            return m.copy()
        if self._form is not None and self._form.tonic and s.chord is None:
            c = self._closing_tonic(s, m, c)
        if s.chord is None and s.last not in ("nl", "bar"):
            c = self._toward_goal(s, c)
        return c

    def toward_closing_bar(self, row: np.ndarray, tonic: bool = False) -> np.ndarray:
        """row without the sounds and durations that take the piece past the length
        a bar that heads for the end may close it at (for the last bar of a part,
        where the sampler wants its closing bar: after a pickup the repeat plays
        again, a short one); row itself where that leaves nothing.  ``tonic``: the
        bar ends the tune, so its first sound, too, leaves room for a tonic note
        before that length (as the closing mask does for the sounds after it)."""
        s = self._s
        if s.chord is not None or s.phase < 6 or s.tup_left:
            return row
        out = row.copy()
        out[self._tup_idx] = False                 # plain notes and rests: the length is exact
        if self._open_id is not None:
            out[self._open_id] = False
        if not out.any():
            out = row
        if s.last in ("nl", "bar"):
            if tonic and self._form is not None and self._form.tonic:
                out = self._closing_tonic(s, row, out)
            return out
        return self._toward_goal(s, out)

    def _toward_goal(self, s: _State, c: np.ndarray) -> np.ndarray:
        """c without the sounds and durations that take the piece past the length a
        closing bar needs (a repeat that plays a pickup again wants a short closing
        bar); c itself where that leaves nothing."""
        goal = self._closing_goal(s)
        if goal is None:
            return c
        gap = goal - s.pos
        if s.tup_left:
            sound_ok = gap > 0
        else:   # a sound of one unit, or of a duration the vocabulary has, leaves the rest fillable
            lengths = self._sound_steps
            fits = lengths[lengths <= gap]
            sound_ok = bool(len(fits)) and bool(((fits == gap) | self._filler.fillable_many(gap - fits)).any())
        keep = c.copy()
        if not sound_ok:
            keep[self._sound_kind] = False
        # A duration reaches the goal where the piece after it (the length _step gives it:
        # the same integer arithmetic, for all at once) is the goal or short of it by a
        # fillable length, or where a tuplet is open.
        sel = keep[self._dur_idx]
        if sel.any():
            pos = s.pos - s.sound_len + self._dur_steps[sel] * s.sound_q // s.sound_p
            reach = pos <= goal
            if not s.tup_left:
                reach &= (pos == goal) | self._filler.fillable_many(goal - pos)
            keep[self._dur_idx[sel][~reach]] = False
        return keep if keep.any() else c

    def _closing_tonic(self, s: _State, m: np.ndarray, c: np.ndarray) -> np.ndarray:
        """Steer the closing towards a last note on the tonic: after a note (or
        rest) that leaves the tune off the tonic, no bar line but more notes
        (from m, the full mask); a note off the tonic only where a tonic note
        of one unit still fits after it.  c where that leaves nothing."""
        if tonic_of(s.key) is None:
            return c
        unit = self._filler.grid
        goal = self._closing_goal(s)

        def room(st: _State) -> bool:
            return (st.tup_left == 0 and self._alive(st, st.pos + unit, 0, 1, 1)
                    and (goal is None or st.pos + unit <= goal))

        ids = self._pitch_ids
        tonic = self._tonic_pitches(s.key)
        off = (s.last in ("sound", "dur") and s.sound in ("note", "rest") and not s.tonic_last
               and s.tup_left == 0)
        out = c.copy()
        if off:
            out[:] = False
            out[ids] = m[ids]
            if s.last == "sound":
                out[self._dur_idx] = m[self._dur_idx]
                durs, after, pos = self._after_durations(s, out)
                if len(durs):
                    # _sound_start_ok after each (no tuplet open: off): all at once
                    starts = (pos[:, None] + self._fill_steps[None, :]).ravel()
                    ok = self._filler.alive_many(starts, 0, 1, 1, self._targets(after))
                    out[durs[~ok.reshape(len(durs), -1).any(axis=1)]] = False
        other = ids[~tonic & out[ids]]
        if len(other) and not room(self._step(s, int(other[0]))):
            out[other] = False
        if self._rest_id is not None and out[self._rest_id] and not room(self._step(s, self._rest_id)):
            out[self._rest_id] = False         # a rest is off the tonic too
        if s.last == "sound" and s.sound in ("note", "rest") and not s.tonic_last:
            durs, after, pos = self._after_durations(s, out)
            if len(durs):               # room() after each, all at once
                if after.tup_left:
                    out[durs] = False
                else:
                    ok = self._filler.alive_many(pos + unit, 0, 1, 1, self._targets(after))
                    if goal is not None:     # a tonic note still fits before the closing bar
                        ok &= pos + unit <= goal
                    out[durs[~ok]] = False
        return out if out.any() else c

    def _after_durations(self, s: _State, allowed: np.ndarray):
        """(ids, state, positions) of the duration tokens that ``allowed`` allows
        after the sound of s: the state after the first of them and the piece
        length after each.  The states after the durations differ only in pos
        and sound_len (see _step), so one stands for all where pos is passed
        apart (the same integer arithmetic as _step's)."""
        sel = allowed[self._dur_idx]
        durs = self._dur_idx[sel]
        if not len(durs):
            return durs, None, None
        after = self._step(s, int(durs[0]))
        pos = s.pos - s.sound_len + self._dur_steps[sel] * s.sound_q // s.sound_p
        return durs, after, pos

    def _closing_sounds(self, s: _State, m: np.ndarray, c: np.ndarray) -> None:
        ids = self._ids[K_PITCH]
        c[ids] |= m[ids]
        if s.has_note and self._rest_id is not None:
            c[self._rest_id] |= m[self._rest_id]

    @staticmethod
    def _closing_kinds(s: _State) -> set:
        """The bar kinds that move towards the end from here."""
        e = s.ending if s.ending is None or s.ending[0] == "in" else None
        if e is not None and e[1] == 1:
            return {B_END, B_END_ENDING}
        if s.rep == "open" and e is None:
            return {B_END}
        if e is not None:
            return {B_FINAL, B_DOUBLE, B_THICK, B_PLAIN}
        return {B_FINAL, B_DOUBLE, B_THICK, B_PLAIN, B_END}

    def _closing_bars(self, s: _State, m: np.ndarray) -> list:
        """Bars that move towards the end: (those that leave no half bar, the others)."""
        kinds = self._closing_kinds(s)
        good, halves = [], []
        for i, b in self._bar_ids:
            if not m[i] or b[0] not in kinds:
                continue
            v = s.rule.verdict(s.pos, b[0], self._filler.fillable_steps)
            (halves if v == "split-strict" else good).append(i)
        return good, halves

    def _closing_goal(self, s: _State):
        """The shortest length from here at which a bar that heads for the end may
        close the piece without leaving half a bar (None: no such target)."""
        r = s.rule
        if r.M is None or r.strict:
            return None
        how, *lengths = r.targets(True)
        if how != "exact":
            return None
        kinds = self._closing_kinds(s)
        fill = self._filler.fillable_steps
        start = s.pos - s.sound_len if s.last in ("sound", "dur") else s.pos   # the sound may shrink
        for length in sorted(lengths[0]):
            if length < start or (length > start and not fill(length - start)):
                continue
            if any(r.verdict(length, k, fill) not in ("wrong", "split-strict") for k in kinds):
                return length
        return None

    def force_end_tokens(self, max_tokens: int = 10000) -> list[int]:
        """One deterministic way to end the tune from here (the state is not
        changed): the ids to feed to advance(), ending with ``</s>``.  It rests
        out the bar (one rest, made as long as fits), then takes the bar that
        ends soonest (``|]`` first), newline and ``</s>``; for a hard cap."""
        sim = self.copy()
        out: list[int] = []
        pref = {B_FINAL: 0, B_END: 1, B_END_ENDING: 1, B_LINE_ENDING: 1, B_DOUBLE: 2,
                B_THICK: 3, B_PLAIN: 4}
        goal = None
        while not sim.done:
            if len(out) >= max_tokens:
                raise RuntimeError("force_end_tokens did not reach the end (grammar bug): ... "
                                   + " ".join(self.vocab.symbols[i] for i in out[-24:]))
            c = sim.closing_allowed()
            ids = np.flatnonzero(c)
            if not len(ids):
                raise RuntimeError(f"no way to end from here ({sim._where(sim._s)})")

            after_rest = sim._s.last == "sound" and sim._s.sound == "rest"
            order_of = {K_EOS: 0, K_NL: 1, K_CLOSE: 2, K_BAR: 3, K_REST: 4, K_DUR: 5,
                        K_PITCH: 6}
            if after_rest:
                order_of[K_DUR], order_of[K_REST] = 4, 5

            st = sim._s
            if not out or st.last in ("bar", "nl"):   # fixed at the start of each piece
                goal = self._closing_goal(st)

            def closes_after(i) -> bool:
                """Duration i keeps the piece within the goal (a repeat that plays a
                pickup again wants a short closing bar: rest up to it, not past it)."""
                return goal is None or sim._step(st, int(i)).pos <= goal

            def rank(i):
                k = sim._kind[i]
                order = order_of.get(int(k), 9)
                sub = 0
                if k == K_BAR:
                    sub = pref.get(sim._info[i][0], 9)
                elif k == K_DUR:
                    sub = (0 if closes_after(i) else 1) - float(sim._info[i]) / 1000.0
                elif k == K_PITCH:
                    sub = len(sim.vocab.symbols[i])
                return order, sub, int(i)

            t = min(ids, key=rank)
            sim.advance(int(t))
            out.append(int(t))
        return out

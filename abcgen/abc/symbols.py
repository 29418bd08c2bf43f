"""What a token of canonical ABC means: token classes, bar kinds, pitches, durations,
tuplets, endings and meters, read from the token's text.  The one reading of token text that
the constraint machine (grammar.py), the bar rule (bars.py) and the tune statistics share."""

from __future__ import annotations

import functools
import re
from fractions import Fraction

# --------------------------------------------------------------------------
# Token classes

(K_PAD, K_BOS, K_EOS, K_NL, K_SPACE, K_PITCH, K_REST, K_OPEN, K_CLOSE, K_DUR,
 K_TIE, K_TUPLET, K_BAR, K_FIELD, K_OTHER) = range(15)

# Bar kinds.  Closing kinds may end a line; opening ones start something.
B_PLAIN, B_DOUBLE, B_FINAL, B_THICK, B_START, B_END, B_ENDSTART, B_ENDING, \
    B_END_ENDING, B_LINE_ENDING = range(10)
CLOSING = frozenset({B_PLAIN, B_DOUBLE, B_FINAL, B_THICK, B_END})
SECTION_CLOSE = frozenset({B_DOUBLE, B_FINAL, B_THICK})   # close a later ending
# Bars after which a new part may open with a pickup (endings go on mid-part).
PART_START = frozenset({B_START, B_ENDSTART, B_DOUBLE, B_FINAL, B_THICK, B_END})

_PITCH_RE = re.compile(r"(\^\^|\^|__|_|=)?([A-Ga-g])('*|,*)$")
_DUR_RE = re.compile(r"(\d+)(?:/(\d+))?$|/(\d+)$")
_TUPLET_RE = re.compile(r"\((\d+)(?::(\d+))?(?::(\d+))?$")
_ENDING_RE = re.compile(r"(:\||\||\[)(\d+(?:[,-]\d+)*)$")
_PLAIN_BARS = {"|": B_PLAIN, "||": B_DOUBLE, "|]": B_FINAL, "[|": B_THICK,
               "|:": B_START, ":|": B_END, "::": B_ENDSTART}
_DEFAULT_Q = {2: 3, 3: 2, 4: 3}


def letter_octave(tok: str):
    p = pitch_of(tok)
    return None if p is None else p[0]


def pitch_of(tok: str):
    """((letter, octave), accidental) of a pitch token, or None."""
    m = _PITCH_RE.match(tok)
    if m is None:
        return None
    letter, marks = m.group(2), m.group(3)
    if letter.isupper():
        octave = 4 - len(marks) if marks.startswith(",") else 4
        if marks.startswith("'"):
            return None
    else:
        octave = 5 + len(marks) if marks.startswith("'") else 5
        if marks.startswith(","):
            return None
    return (letter.upper(), octave), m.group(1) or ""


def duration_of(tok: str) -> Fraction | None:
    m = _DUR_RE.match(tok)
    if m is None:
        return None
    if m.group(3) is not None:
        num, den = 1, int(m.group(3))
    else:
        num, den = int(m.group(1)), int(m.group(2) or 1)
    if num <= 0 or den <= 0:
        return None
    return Fraction(num, den)


def tuplet_of(tok: str):
    """(p, q, r) of a tuplet marker, or None for one whose reading is unsure."""
    m = _TUPLET_RE.match(tok)
    if m is None:
        return None
    p = int(m.group(1))
    q = int(m.group(2)) if m.group(2) else _DEFAULT_Q.get(p)
    r = int(m.group(3)) if m.group(3) else p
    if p < 2 or q is None or q < 1 or r < 1:
        return None
    return p, q, r


def _ending_numbers(text: str):
    nums = []
    for part in text.split(","):
        if "-" in part:
            lo, hi = (int(x) for x in part.split("-", 1))
            if hi < lo:
                return None
            nums.extend(range(lo, hi + 1))
        else:
            nums.append(int(part))
    if nums != list(range(nums[0], nums[0] + len(nums))) or nums[0] < 1:
        return None       # '1,3' would leave an ending no later mark can take
    return nums[0], nums[-1]


def bar_of(tok: str):
    """(kind, first, last) of a bar token, or None when it is no bar."""
    if tok in _PLAIN_BARS:
        return _PLAIN_BARS[tok], 0, 0
    m = _ENDING_RE.match(tok)
    if m is None:
        return None
    nums = _ending_numbers(m.group(2))
    if nums is None:
        return "bad"
    kind = {":|": B_END_ENDING, "|": B_ENDING, "[": B_LINE_ENDING}[m.group(1)]
    return kind, nums[0], nums[1]


def fraction_of(text: str) -> Fraction | None:
    m = re.fullmatch(r"(\d+)/(\d+)", text)
    if m is None or int(m.group(1)) == 0 or int(m.group(2)) == 0:
        return None
    return Fraction(int(m.group(1)), int(m.group(2)))


@functools.lru_cache(maxsize=4096)
def meter_writable(text: str) -> bool:
    """M:a/b with b a power of two (or M:none): the corpus holds meters such as M:1/6 that
    music21 invented for odd bars, which abc2midi rejects ("6 b is not a power of 2")."""
    m = re.fullmatch(r"M:(\d+)/(\d+)", text)
    if m is None:
        return True
    b = int(m.group(2))
    return b > 0 and b & (b - 1) == 0


def meter_value(value: str):
    """The meter as a fraction of a whole note; None for 'none'; 'bad' otherwise."""
    if value == "none":
        return None
    f = fraction_of(value)
    return "bad" if f is None else f

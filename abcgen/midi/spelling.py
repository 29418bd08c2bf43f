"""Key and spelling: the key of a signature in folk modes, and the letter of every pitch.

Key.  The file's first key signature, else music21's key analysis.  MIDI only
knows major and minor, so the mode is then chosen among major, minor, dorian
and mixolydian with that signature by the tune's last note, the tonic in most
folk tunes (``K:Ador`` rather than ``K:Gmaj``).  Pitches are spelled for the
key (D# not Eb in E minor) and chromatic steps the way they move (``G^FG`` but
``G_GF`` in F major): see ``spell_events``.
"""

from __future__ import annotations

_NATURAL = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
_LETTERS = "CDEFGAB"
_FOLK_MODES = {"major": 0, "dorian": 2, "mixolydian": 7, "minor": 9}


def folk_key(sharps: int, mode: str, last_pitch: int | None):
    """The key of a signature, its mode chosen by the last note when it names one (module doc)."""
    from music21 import key as m21key

    ks = m21key.KeySignature(sharps)
    if last_pitch is not None:
        major_pc = ks.asKey("major").tonic.pitchClass
        for m, offset in _FOLK_MODES.items():
            if (major_pc + offset) % 12 == last_pitch % 12:
                return ks.asKey(m)
    return ks.asKey(mode if mode in _FOLK_MODES else "major")


def speller(k) -> dict:
    """Pitch class -> (letter, alteration) for key k, out of context.

    Scale notes keep the key's spelling and other white keys are naturals.
    A black key outside the scale is a sharp in sharp keys (and C major) and
    a flat in flat keys, except that the leading tone of a minor or dorian
    tonic is always a raised seventh (C# in D minor).
    """
    sig = {p.step: int(round(p.alter)) for p in k.alteredPitches}
    out = {}
    for letter in _LETTERS:
        out[(_NATURAL[letter] + sig.get(letter, 0)) % 12] = (letter, sig.get(letter, 0))
    for pc in range(12):
        if pc in out:
            continue
        natural = [x for x in _LETTERS if _NATURAL[x] == pc]
        if natural:
            out[pc] = (natural[0], 0)
        else:
            out[pc] = _black(pc, up=k.sharps >= 0)
    if k.mode in ("minor", "dorian"):
        lt = (k.tonic.pitchClass - 1) % 12
        letter = _LETTERS[(_LETTERS.index(k.tonic.step) - 1) % 7]
        out[lt] = (letter, (lt - _NATURAL[letter] + 6) % 12 - 6)
    return out


def _black(pc: int, up: bool) -> tuple[str, int]:
    """A black key as the sharp of the letter below (``up``) or the flat of the letter above."""
    if up:
        return next((x, 1) for x in _LETTERS if (_NATURAL[x] + 1) % 12 == pc)
    return next((x, -1) for x in _LETTERS if (_NATURAL[x] - 1) % 12 == pc)


def spell_events(events, k) -> list[list]:
    """(letter, alteration) for every pitch of every event, in context.

    On top of ``speller``: a single note on a black key outside the scale is
    spelled the way it moves, a sharp when the next note is higher, a flat
    when it is lower (``G^FG`` and ``G_GF`` in F major), as a player reads
    chromatic steps.  The leading tone of a minor key stays a sharp.
    """
    base = speller(k)
    sig = {p.step: int(round(p.alter)) for p in k.alteredPitches}
    scale = {(_NATURAL[x] + sig.get(x, 0)) % 12 for x in _LETTERS}
    black = {1, 3, 6, 8, 10}
    leading = (k.tonic.pitchClass - 1) % 12 if k.mode in ("minor", "dorian") else None
    out = []
    for i, (_on, _end, pitches) in enumerate(events):
        names = [base[p % 12] for p in pitches]
        pc = pitches[0] % 12
        if (len(pitches) == 1 and i + 1 < len(events) and pc in black
                and pc not in scale and pc != leading):
            nxt = max(events[i + 1][2])
            if nxt != pitches[0]:
                names = [_black(pc, up=nxt > pitches[0])]
        out.append(names)
    return out


def _pitch(midi: int, name: tuple):
    from music21 import pitch

    letter, alter = name
    p = pitch.Pitch()
    p.step = letter
    p.octave = (midi - alter - _NATURAL[letter]) // 12 - 1
    if alter:
        p.accidental = pitch.Accidental(alter)
    return p


"""Transposition of whole tunes, for a common tonic (folk-rnn transposes to C)
or for augmentation (every tune in all 12 keys).

The interval is spelled (a major second down, not "2 semitones"), so the key
signature and every accidental move with it; among enharmonic targets the one
whose key signature has fewer sharps or flats wins (D-flat major, not C-sharp).
"""

from __future__ import annotations

_NAMES = {0: ["C"], 1: ["C#", "D-"], 2: ["D"], 3: ["E-", "D#"], 4: ["E"], 5: ["F"],
          6: ["F#", "G-"], 7: ["G"], 8: ["A-", "G#"], 9: ["A"], 10: ["B-", "A#"], 11: ["B"]}


def _tonic_key(score):
    from music21 import key

    for k in score.recurse().getElementsByClass(key.KeySignature):
        return k if isinstance(k, key.Key) else k.asKey("major")
    return key.Key("C")


def _interval_to(k, target_pc: int):
    """The spelled interval moving key k's tonic to pitch class target_pc, by at most a tritone."""
    from music21 import interval, pitch

    best = None
    for name in _NAMES[target_pc]:
        for octave in (3, 4, 5):
            start = pitch.Pitch(k.tonic.name + "4")
            end = pitch.Pitch(f"{name}{octave}")
            iv = interval.Interval(noteStart=start, noteEnd=end)
            semis = iv.semitones
            if -6 <= semis <= 6:
                new = k.transpose(iv)
                score = (abs(new.sharps), abs(semis))
                if best is None or score < best[0]:
                    best = (score, iv)
    return best[1]


def transpose_to_pc(score, target_pc: int):
    k = _tonic_key(score)
    iv = _interval_to(k, target_pc)
    if iv.semitones == 0 and iv.name == "P1":
        return score
    return score.transpose(iv, inPlace=False)


def transpose_to_c(score):
    """The tune with its tonic moved to C (modes kept: D dorian becomes C dorian)."""
    return transpose_to_pc(score, 0)


def transpose_all(score) -> list:
    """The tune in the 11 other keys (its own key excluded)."""
    own = _tonic_key(score).tonic.pitchClass
    return [transpose_to_pc(score, pc) for pc in range(12) if pc != own]

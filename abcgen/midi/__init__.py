"""Standard MIDI files -> music21 Score ready for the canonical ABC writer.

music21's own MIDI import draws bar lines from tick 0 whatever the tune does
(no pickups), reads every track, and turns a player's timing into odd tuplets,
short rests and chords, so the ABC it gives is not what anyone would write.
This package reads the file itself (through mido) and makes the decisions a
person transcribing a tune by hand would make, one stage per module, each
with its rules in its docstring and testable alone:

- ``io``: reading and writing the file (mido), the notes and meta events kept;
- ``tracks``: the tracks with notes, in quarter notes, and the melody;
- ``meter``: the meter when the file has none, and the pickup (bar phase);
- ``quantize``: bars and the straight-or-triplet grid the notes snap to;
- ``spelling``: the key in folk modes and the letter of every pitch;
- ``repeats``: sections played twice in a row, written once;
- ``transcribe``: ``load_midi``, the stages put together into a Score.
"""

from .io import DRUM_CHANNEL, MidiFile, MidiNote, MidiTrack, jittered, parse_midi_bytes, read_midi
from .meter import METERS, detect_meter, detect_phase, parse_meter
from .quantize import DEFAULT_GRID, GRIDS, parse_grid
from .repeats import Repeat, find_repeats
from .spelling import folk_key, spell_events, speller
from .tracks import choose_melody, note_tracks
from .transcribe import load_midi

__all__ = [
    "DEFAULT_GRID", "DRUM_CHANNEL", "GRIDS", "METERS", "MidiFile", "MidiNote", "MidiTrack", "Repeat",
    "choose_melody", "detect_meter", "detect_phase", "find_repeats", "folk_key", "jittered", "load_midi",
    "note_tracks", "parse_grid", "parse_meter", "parse_midi_bytes", "read_midi", "spell_events", "speller",
]

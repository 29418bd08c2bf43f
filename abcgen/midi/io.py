"""Standard MIDI Files in and out, through mido.

Reading.  mido reads the file (formats 0, 1, 2; running status); this module
keeps what the transcription needs: per track its notes, with a note-on of
velocity 0 taken as a note-off and a note-off paired with the oldest open
note of that channel and pitch (a note never released sounds to the end of
its track), and the tempo, time signature and key signature events wherever
they are (format 1 keeps them in the conductor track).  A track ends at its
End of Track event.  A RIFF RMID wrapper is taken off first.  SMPTE time
(ticks per second) is read as 120 bpm, where a quarter is half a second.
A file that is empty, not MIDI, cut short or corrupt is an InputError naming
the file, in one line.

Writing.  Tracks are lists of (absolute tick, mido message); ``smf`` turns
them into the bytes of a file (mido writes running status).  The tests build
their files with ``conductor`` and ``notes_track`` (note-offs as note-ons of
velocity 0, drum channel, notes off the grid), and ``abcgen check
midi-roundtrip --jitter`` rewrites files with ``jittered``, every note moved
as a player would.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import mido

from ..errors import InputError

DRUM_CHANNEL = 9          # 0-based: MIDI channel 10
TPQ = 480                 # ticks per quarter note of the files written here


@dataclass
class MidiNote:
    on: int
    off: int
    pitch: int
    velocity: int
    channel: int


@dataclass
class MidiTrack:
    index: int                    # chunk index in the file (or channel order, format 0)
    name: str = ""
    notes: list = field(default_factory=list)
    channel: int | None = None    # set for the channel tracks of a format-0 file

    def label(self) -> str:
        bits = [self.name] if self.name else []
        if self.channel is not None:
            bits.append(f"channel {self.channel + 1}")
        bits.append(f"{len(self.notes)} notes")
        return f"{self.index} ({', '.join(bits)})"


@dataclass
class MidiFile:
    format: int
    tpq: Fraction                 # ticks per quarter note
    tracks: list                  # MidiTrack, every chunk (notes or not)
    tempos: list                  # (tick, microseconds per quarter)
    time_sigs: list               # (tick, numerator, denominator)
    key_sigs: list                # (tick, sharps, minor)
    title: str = ""


# Key signatures: mido names keys ("F#", "Ebm"); MIDI files count sharps (negative: flats).
_MAJOR = ("Cb", "Gb", "Db", "Ab", "Eb", "Bb", "F", "C", "G", "D", "A", "E", "B", "F#", "C#")
_MINOR = ("Ab", "Eb", "Bb", "F", "C", "G", "D", "A", "E", "B", "F#", "C#", "G#", "D#", "A#")
_KEY_NAME = {**{(sf - 7, False): k for sf, k in enumerate(_MAJOR)},
             **{(sf - 7, True): k + "m" for sf, k in enumerate(_MINOR)}}
_KEY_SIG = {name: sig for sig, name in _KEY_NAME.items()}


def _text(s: str) -> str:
    """mido's text (bytes read as Latin-1) as UTF-8 where it is UTF-8, spaces tidied."""
    b = s.encode("latin-1", "replace")
    try:
        s = b.decode("utf-8")
    except UnicodeDecodeError:
        pass
    return " ".join(s.replace("\x00", " ").split())


def _raw(s: str) -> str:
    """Text for mido to write (it writes Latin-1): the characters of its UTF-8 bytes."""
    return s.encode("utf-8").decode("latin-1")


def _read_track(track, index: int, mf: MidiFile) -> MidiTrack:
    out = MidiTrack(index)
    tick = 0
    open_notes: dict = {}
    for msg in track:
        tick += msg.time
        kind = msg.type
        if kind == "end_of_track":
            break
        if kind == "note_on" and msg.velocity > 0:
            open_notes.setdefault((msg.channel, msg.note), []).append((tick, msg.velocity))
        elif kind in ("note_on", "note_off"):
            started = open_notes.get((msg.channel, msg.note))
            if started:
                on, vel = started.pop(0)
                out.notes.append(MidiNote(on, tick, msg.note, vel, msg.channel))
        elif kind == "track_name" and not out.name:
            out.name = _text(msg.name)
        elif kind == "set_tempo":
            mf.tempos.append((tick, msg.tempo))
        elif kind == "time_signature":
            if msg.numerator > 0 and msg.denominator < 256:
                mf.time_sigs.append((tick, msg.numerator, msg.denominator))
        elif kind == "key_signature":
            mf.key_sigs.append((tick, *_KEY_SIG[msg.key]))
    for (channel, pitch), started in open_notes.items():
        for on, vel in started:             # never released: sounds to the end
            out.notes.append(MidiNote(on, max(tick, on + 1), pitch, vel, channel))
    out.notes.sort(key=lambda n: (n.on, n.pitch))
    return out


def parse_midi_bytes(data: bytes, file: str = "<bytes>") -> MidiFile:
    """The events of a Standard MIDI File; InputError (naming ``file``) when it is not one."""
    if not data:
        raise InputError("empty file", file=file)
    if data[:4] == b"RIFF" and data[8:12] == b"RMID":
        start = data.find(b"MThd", 12)
        if start < 0:
            raise InputError("RIFF MIDI file without a MThd chunk", file=file)
        data = data[start:]
    if not data.startswith(b"MThd"):
        raise InputError("not a MIDI file (it does not start with MThd)", file=file)
    try:
        mid = mido.MidiFile(file=io.BytesIO(data))
    except EOFError:
        raise InputError("truncated MIDI file (it ends inside a chunk or event)", file=file) from None
    except Exception as e:   # mido raises OSError, ValueError, KeyError, ... on bad bytes
        why = " ".join(str(e).split()) or type(e).__name__
        raise InputError(f"corrupt MIDI data: {why}", file=file) from None
    if not 0 <= mid.type <= 2:
        raise InputError(f"unknown MIDI file format {mid.type}", file=file)
    division = mid.ticks_per_beat & 0xFFFF       # mido reads it as a signed number
    if division & 0x8000:
        fps = 256 - (division >> 8)
        tpq = Fraction(fps * (division & 0xFF), 2)
    else:
        tpq = Fraction(division)
    if tpq <= 0:
        raise InputError("corrupt MIDI header (zero ticks per quarter note)", file=file)
    mf = MidiFile(mid.type, tpq, [], [], [], [])
    for i, track in enumerate(mid.tracks):
        mf.tracks.append(_read_track(track, i, mf))
    if mf.tracks:
        mf.title = mf.tracks[0].name
    mf.tempos.sort()
    mf.time_sigs.sort(key=lambda t: t[0])
    mf.key_sigs.sort(key=lambda t: t[0])
    return mf


def read_midi(path) -> MidiFile:
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read: {e.strerror or e}", file=str(path)) from None
    return parse_midi_bytes(data, file=str(path))


# --------------------------------------------------------------------------
# Writing


def track(events, end: bool = True) -> mido.MidiTrack:
    """A track from (absolute tick, mido message), in tick order (stable); ``end``: End of Track."""
    out, now = mido.MidiTrack(), 0
    for tick, msg in sorted(events, key=lambda e: e[0]):
        out.append(msg.copy(time=tick - now))
        now = tick
    if end:
        out.append(mido.MetaMessage("end_of_track", time=0))
    return out


def smf(tracks, fmt: int = 1, tpq: int = TPQ) -> bytes:
    """The bytes of a whole file of the given tracks (mido.MidiTrack)."""
    mid = mido.MidiFile(type=fmt, ticks_per_beat=tpq)
    mid.tracks.extend(tracks)
    buf = io.BytesIO()
    mid.save(file=buf)
    return buf.getvalue()


def tempo(bpm: float) -> mido.MetaMessage:
    return mido.MetaMessage("set_tempo", tempo=round(60_000_000 / bpm))


def timesig(num: int, den: int) -> mido.MetaMessage:
    return mido.MetaMessage("time_signature", numerator=num, denominator=den)


def keysig(sharps: int, minor: bool = False) -> mido.MetaMessage:
    return mido.MetaMessage("key_signature", key=_KEY_NAME[(sharps, bool(minor))])


def name(text: str) -> mido.MetaMessage:
    return mido.MetaMessage("track_name", name=_raw(text))


def note_messages(notes, ch: int = 0, vel: int = 80, tpq: int = TPQ, jitter=None,
                  zero_off: bool = False) -> list[tuple[int, mido.Message]]:
    """(tick, message) note-ons and note-offs for (onset, length, midi) notes in quarters.

    Rests (midi None) are skipped.  ``jitter()``, when given, is added to every
    note-on and note-off tick (a note keeps at least one tick).  ``zero_off``:
    note-offs as note-ons with velocity 0.  At one tick, note-offs come first.
    """
    ev = []
    for on, length, midi in notes:
        if midi is None:
            continue
        a, b = int(on * tpq), int((on + length) * tpq)
        if jitter:
            a, b = max(a + jitter(), 0), b + jitter()
            b = max(b, a + 1)
        ev.append((a, mido.Message("note_on", channel=ch, note=midi, velocity=vel)))
        off = (mido.Message("note_on", channel=ch, note=midi, velocity=0) if zero_off
               else mido.Message("note_off", channel=ch, note=midi, velocity=64))
        ev.append((b, off))
    ev.sort(key=lambda e: (e[0], e[1].type == "note_on" and e[1].velocity > 0))
    return ev


def notes_track(notes, ch: int = 0, vel: int = 80, title: str = "", jitter=None,
                zero_off: bool = False, tpq: int = TPQ) -> mido.MidiTrack:
    """A track playing (onset, length, midi) notes given in quarter notes (see note_messages)."""
    ev = [(0, name(title))] if title else []
    ev += note_messages(notes, ch, vel, tpq, jitter, zero_off)
    return track(ev)


def conductor(bpm=120, ts=(4, 4), sharps=0, minor=False, title="", extra=()) -> mido.MidiTrack:
    """A conductor track: tempo, time and key signature, sequence name, extra (tick, message)."""
    ev = [(0, tempo(bpm))] if bpm else []
    if ts:
        ev.append((0, timesig(*ts)))
    if sharps is not None:
        ev.append((0, keysig(sharps, minor)))
    if title:
        ev.append((0, name(title)))
    return track(ev + list(extra))


def jittered(mf: MidiFile, ms: float, seed: int) -> bytes:
    """A parsed MidiFile written again with every note-on and note-off moved by up to
    ``ms`` milliseconds (uniform, at the first tempo), as a player would.  Format 1:
    a conductor track with the tempo, time and key signatures and the title, then
    one track per track with notes."""
    rng = random.Random(seed)
    tpq = int(mf.tpq)
    usec = mf.tempos[0][1] if mf.tempos else 500_000
    dev = int(ms / 1000 * 1_000_000 / usec * tpq)
    ev = [(0, mido.MetaMessage("set_tempo", tempo=usec))]
    if mf.title:
        ev.append((0, name(mf.title)))
    ev += [(t, timesig(num, den)) for t, num, den in mf.time_sigs]
    ev += [(t, keysig(sf, minor)) for t, sf, minor in mf.key_sigs]
    tracks = [track(ev)]
    for tr in mf.tracks:
        if not tr.notes:
            continue
        msgs = [(0, name(tr.name))] if tr.name else []
        for n in tr.notes:
            a = max(0, n.on + rng.randint(-dev, dev))
            b = max(a + 1, n.off + rng.randint(-dev, dev))
            msgs.append((a, mido.Message("note_on", channel=n.channel, note=n.pitch, velocity=n.velocity)))
            msgs.append((b, mido.Message("note_off", channel=n.channel, note=n.pitch, velocity=0)))
        msgs.sort(key=lambda e: (e[0], e[1].type == "note_on"))
        tracks.append(track(msgs))
    return smf(tracks, fmt=1, tpq=tpq)

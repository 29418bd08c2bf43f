"""Reading and writing Standard MIDI Files (abcgen.midi.io, on mido).

The odd cases (running status, note-on with velocity 0 as note-off, format 0
with several channels, a RIFF wrapper, SMPTE time) are files written with
mido here; corrupt files are good files with bytes cut or changed.
"""

from __future__ import annotations

from fractions import Fraction

import mido
import pytest

from abcgen.abc.writer import write_abc
from abcgen.errors import InputError
from abcgen.midi import load_midi, parse_midi_bytes
from abcgen.midi.io import (TPQ, conductor, keysig, name, note_messages, notes_track, smf, tempo, timesig,
                            track)
from tests.midi_helpers import abcish, events, jig_file, plain, write


def _track_chunk(data: bytes, k: int) -> bytes:
    """The k-th MTrk chunk of a file, header included."""
    pos = 14
    for _ in range(k):
        pos += 8 + int.from_bytes(data[pos + 4:pos + 8], "big")
    return data[pos:pos + 8 + int.from_bytes(data[pos + 4:pos + 8], "big")]


def test_running_status_and_note_on_velocity_zero(tmp_path):
    notes = abcish("G A B c d2 B2")
    data = smf([conductor(), notes_track(notes, zero_off=True)])
    chunk = _track_chunk(data, 1)
    assert chunk.count(b"\x90") == 1 and b"\x80" not in chunk     # one status byte for all
    mf = parse_midi_bytes(data)
    got = [(n.on, n.off, n.pitch) for n in mf.tracks[1].notes]
    assert got == [(int(on * TPQ), int((on + d) * TPQ), p) for on, d, p in notes]
    assert events(load_midi(write(tmp_path, data))) == plain(notes)


def test_note_off_ends_the_oldest_note_and_an_unreleased_note_sounds_to_the_end():
    on = lambda p: mido.Message("note_on", note=p, velocity=90)        # noqa: E731
    off = lambda p: mido.Message("note_off", note=p, velocity=0)       # noqa: E731
    tr = track([(0, on(60)), (100, on(60)), (200, off(60)), (300, off(60)), (300, on(62)),
                (500, mido.Message("control_change", control=7, value=100))])
    mf = parse_midi_bytes(smf([tr]))
    assert [(n.on, n.off, n.pitch) for n in mf.tracks[0].notes] == [(0, 200, 60), (100, 300, 60), (300, 500, 62)]


def test_meta_events_and_names():
    tr = track([(0, name("Reel à deux")), (0, tempo(90)), (0, timesig(6, 8)), (0, keysig(-3, True)),
                (960, timesig(9, 8)), (960, keysig(2))])
    mf = parse_midi_bytes(smf([tr]))
    assert mf.title == mf.tracks[0].name == "Reel à deux"
    assert mf.tempos == [(0, 666_667)]
    assert mf.time_sigs == [(0, 6, 8), (960, 9, 8)]
    assert mf.key_sigs == [(0, -3, True), (960, 2, False)]


@pytest.mark.parametrize("minor", [False, True])
def test_every_key_signature_round_trips(minor):
    tr = track([(k, keysig(sf, minor)) for k, sf in enumerate(range(-7, 8))])
    assert parse_midi_bytes(smf([tr])).key_sigs == [(k, sf, minor) for k, sf in enumerate(range(-7, 8))]


def test_riff_wrapper_and_smpte_time():
    notes = abcish("G A B c")
    data = smf([conductor(), notes_track(notes)])
    riff = b"RIFF" + (len(data) + 12).to_bytes(4, "little") + b"RMIDdata" + len(data).to_bytes(4, "little") + data
    assert parse_midi_bytes(riff).tracks[1].notes == parse_midi_bytes(data).tracks[1].notes
    smpte = data[:12] + bytes([256 - 25, 40]) + data[14:]       # 25 frames a second, 40 ticks a frame
    assert parse_midi_bytes(smpte).tpq == 500                    # a quarter at 120 bpm: half a second


def test_data_byte_without_a_status_is_corrupt(tmp_path):
    # a data byte first in a track has no status to run on
    good = smf([conductor(), track([])])
    bad = good[:-12] + b"MTrk" + (7).to_bytes(4, "big") + b"\x00\x3c\x40\x00\xff\x2f\x00"
    with pytest.raises(InputError, match="corrupt"):
        load_midi(write(tmp_path, bad))


def test_format_0_with_tempo_time_and_key_in_the_same_track(tmp_path):
    notes = abcish("A B c d e2 e2 f e d c B2 A2", unit=Fraction(1))
    tr = track([(0, tempo(90)), (0, timesig(3, 4)), (0, keysig(0, True))] + note_messages(notes))
    score = load_midi(write(tmp_path, smf([tr], fmt=0)))
    abc = write_abc(score)
    assert "M:3/4\n" in abc and "Q:1/4=90\n" in abc and "K:Amin\n" in abc
    assert events(score) == plain(notes)


def test_format_0_channels_become_tracks(tmp_path):
    melody = abcish("e d c d e e e2", unit=Fraction(1))
    bass = abcish("C, G,, C, G,, C, G,, C,2", unit=Fraction(1))
    tr = track([(0, timesig(4, 4))] + note_messages(melody, ch=0) + note_messages(bass, ch=1))
    path = write(tmp_path, smf([tr], fmt=0))
    assert events(load_midi(path)) == plain(melody)
    assert events(load_midi(path, track=1)) == plain(bass)
    assert len(load_midi(path, all_tracks=True).parts) == 2


# --------------------------------------------------------------------------
# Bad files


def _good(tmp_path) -> bytes:
    return jig_file(tmp_path)[0].read_bytes()


@pytest.mark.parametrize("case", ["empty", "text", "truncated", "truncated header", "corrupt",
                                  "missing track", "no notes", "missing file"])
def test_bad_files_raise_one_line_input_error(tmp_path, case):
    good = _good(tmp_path)
    corrupt = smf([conductor(), track([])])
    data = {
        "empty": b"",
        "text": b"X:1\nT:not midi\nK:G\nGAB|\n",
        "truncated": good[:len(good) - 40],
        "truncated header": good[:10],
        "corrupt": corrupt[:-12] + b"MTrk" + (8).to_bytes(4, "big") + b"\x00\x90\x3c\x90\x00\xff\x2f\x00",
        "missing track": good[:10] + b"\x00\x03" + good[12:],
        "no notes": smf([conductor(), notes_track(abcish("G A B c"), ch=9)]),
    }.get(case)
    path = tmp_path / "bad.mid"
    if data is not None:
        path.write_bytes(data)
    with pytest.raises(InputError) as e:
        load_midi(path)
    msg = str(e.value)
    assert str(path) in msg and "\n" not in msg
    assert e.value.exit_code == 2

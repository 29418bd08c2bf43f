"""Writing Standard MIDI Files byte by byte.

A small assembler for the bytes of a MIDI file, used where the exact bytes
matter: the tests build files music21 would never write (running status,
note-on with velocity 0 as note-off, drum tracks, notes off the grid), and
``abcgen check midi-roundtrip --jitter`` rewrites files with every note
moved as a player would.  Times are in ticks or, for ``notes_track``, in
quarter notes.
"""

from __future__ import annotations

import random

TPQ = 480


def vlq(n: int) -> bytes:
    """A variable-length quantity (delta times, meta lengths)."""
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    return bytes(reversed(out))


def chunk(kind: bytes, body: bytes) -> bytes:
    return kind + len(body).to_bytes(4, "big") + body


def mtrk(events, end: bool = True, running: bool = False) -> bytes:
    """An MTrk chunk from (absolute tick, raw message bytes), in tick order (stable).

    ``running``: leave out a channel message's status byte when it repeats the
    previous one (running status).  ``end``: close with End of Track.
    """
    body, now, status = b"", 0, None
    for tick, msg in sorted(events, key=lambda e: e[0]):
        if running and msg[0] < 0xF0:
            if msg[0] == status:
                msg = msg[1:]
            else:
                status = msg[0]
        elif msg[0] >= 0xF0:
            status = None
        body += vlq(tick - now) + msg
        now = tick
    if end:
        body += vlq(0) + b"\xff\x2f\x00"
    return chunk(b"MTrk", body)


def smf(tracks, fmt: int = 1, tpq: int = TPQ) -> bytes:
    """A whole file: the MThd header and the given MTrk chunks."""
    return chunk(b"MThd", fmt.to_bytes(2, "big") + len(tracks).to_bytes(2, "big")
                 + tpq.to_bytes(2, "big")) + b"".join(tracks)


def meta(kind: int, data: bytes) -> bytes:
    return bytes([0xFF, kind]) + vlq(len(data)) + data


def tempo_usec(usec: int) -> bytes:
    return meta(0x51, int(usec).to_bytes(3, "big"))


def tempo(bpm: float) -> bytes:
    return tempo_usec(round(60_000_000 / bpm))


def timesig(num: int, den: int) -> bytes:
    return meta(0x58, bytes([num, den.bit_length() - 1, 24, 8]))


def keysig(sharps: int, minor: bool = False) -> bytes:
    return meta(0x59, bytes([sharps & 0xFF, int(minor)]))


def name(text: str) -> bytes:
    return meta(0x03, text.encode())


def note_messages(notes, ch: int = 0, vel: int = 80, tpq: int = TPQ, jitter=None,
                  zero_off: bool = False) -> list[tuple[int, bytes]]:
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
        ev.append((a, bytes([0x90 | ch, midi, vel])))
        ev.append((b, bytes([0x90 | ch, midi, 0]) if zero_off else bytes([0x80 | ch, midi, 64])))
    ev.sort(key=lambda e: (e[0], e[1][0] & 0xF0 == 0x90 and e[1][2] > 0))
    return ev


def notes_track(notes, ch: int = 0, vel: int = 80, title: str = "", jitter=None, running: bool = False,
                zero_off: bool = False, tpq: int = TPQ) -> bytes:
    """An MTrk playing (onset, length, midi) notes given in quarter notes (see note_messages)."""
    ev = [(0, name(title))] if title else []
    ev += note_messages(notes, ch, vel, tpq, jitter, zero_off)
    return mtrk(ev, running=running)


def conductor(bpm=120, ts=(4, 4), sharps=0, minor=False, title="", extra=()) -> bytes:
    """A conductor track: tempo, time and key signature, sequence name, extra (tick, message)."""
    ev = [(0, tempo(bpm))] if bpm else []
    if ts:
        ev.append((0, timesig(*ts)))
    if sharps is not None:
        ev.append((0, keysig(sharps, minor)))
    if title:
        ev.append((0, name(title)))
    return mtrk(ev + list(extra))


def jittered(mf, ms: float, seed: int) -> bytes:
    """A parsed MidiFile (abcgen.midi) written again with every note-on and
    note-off moved by up to ``ms`` milliseconds (uniform, at the first tempo),
    as a player would.  Format 1: a conductor track with the tempo, time and
    key signatures and the title, then one track per track with notes."""
    rng = random.Random(seed)
    tpq = int(mf.tpq)
    usec = mf.tempos[0][1] if mf.tempos else 500_000
    dev = int(ms / 1000 * 1_000_000 / usec * tpq)
    ev = [(0, tempo_usec(usec))]
    if mf.title:
        ev.append((0, name(mf.title)))
    ev += [(t, timesig(num, den)) for t, num, den in mf.time_sigs]
    ev += [(t, keysig(sf, minor)) for t, sf, minor in mf.key_sigs]
    tracks = [mtrk(ev)]
    for tr in mf.tracks:
        if not tr.notes:
            continue
        msgs = [(0, name(tr.name))] if tr.name else []
        for n in tr.notes:
            a = max(0, n.on + rng.randint(-dev, dev))
            b = max(a + 1, n.off + rng.randint(-dev, dev))
            msgs.append((a, bytes([0x90 | n.channel, n.pitch, n.velocity])))
            msgs.append((b, bytes([0x80 | n.channel, n.pitch, 0])))
        msgs.sort(key=lambda e: (e[0], e[1][0] & 0xF0 == 0x90))
        tracks.append(mtrk(msgs))
    return smf(tracks, fmt=1, tpq=tpq)

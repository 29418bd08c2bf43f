"""abcgen.midi against midi2abc (Debian abcmidi) on Ryan's Mammoth Collection.

Not a test: a measurement, run by hand from the repository root:

    PYTHONPATH=. /work/venv/bin/python tests/data/midi/compare_midi2abc.py [N] [--jitter MS] [--grid 1/32]

For N tunes (every k-th file of the collection): parse the ABC, let music21
write MIDI (it expands repeats), keep the tune when music21's MIDI holds the
notes music21 reads (grace notes and some repeat structures break that), then
turn the MIDI into ABC both ways, read each ABC back with parse_abc and
compare its note events (onset from the first note, length, pitch; parts
merged) with the source, expanded.  ``--jitter MS`` rewrites each MIDI file
with every note-on and note-off moved by up to MS milliseconds (at the
file's 120 bpm), as a player would, before converting.

Prints, per converter: tunes exact (all of them, and those whose notes lie
on the 1/16-or-triplet grid), notes right (multiset intersection over source
notes), milliseconds per tune (conversion only, reading back excluded; for
midi2abc that includes starting the process).
"""

from __future__ import annotations

import glob
import random
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from fractions import Fraction
from pathlib import Path

from abcgen.abc.reader import parse_abc, parse_tune, read_book
from abcgen.abc.writer import write_abc
from abcgen.errors import AbcgenError
from abcgen.midi import load_midi, read_midi
from abcgen.notes import note_events
from abcgen.roundtrip import midi_notes

CORPUS = "/work/venv/lib/python3.11/site-packages/music21/corpus/ryansMammoth/*.abc"


def norm(ev):
    if not ev:
        return []
    t0 = min(e[0] for e in ev)
    return sorted((on - t0, d, p) for on, d, p in ev)


def on_grid(ev) -> bool:
    ok = lambda x: x % Fraction(1, 4) == 0 or x % Fraction(1, 3) == 0
    return all(ok(on) and ok(on + d) for on, d, _p in ev)


def events_of_abc(text: str):
    return norm([(on, d, p) for _x, on, d, p in note_events(parse_abc(text))])


def vlq(n: int) -> bytes:
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    return bytes(reversed(out))


def jittered(src: Path, dst: Path, ms: float, seed: int) -> None:
    """The notes of src, each end moved by up to ms, as a one-track file with src's meta events."""
    mf = read_midi(src)
    rng = random.Random(seed)
    tpq = int(mf.tpq)
    usec = mf.tempos[0][1] if mf.tempos else 500_000
    dev = int(ms / 1000 * 1_000_000 / usec * tpq)
    ev = [(0, b"\xff\x51\x03" + usec.to_bytes(3, "big"))]
    for t, num, den in mf.time_sigs:
        ev.append((t, b"\xff\x58\x04" + bytes([num, den.bit_length() - 1, 24, 8])))
    for t, sf, minor in mf.key_sigs:
        ev.append((t, b"\xff\x59\x02" + bytes([sf & 0xFF, int(minor)])))
    for tr in mf.tracks:
        for n in tr.notes:
            a = max(0, n.on + rng.randint(-dev, dev))
            b = max(a + 1, n.off + rng.randint(-dev, dev))
            ev.append((a, bytes([0x90 | n.channel, n.pitch, n.velocity])))
            ev.append((b, bytes([0x80 | n.channel, n.pitch, 0])))
    ev.sort(key=lambda e: (e[0], e[1][0] & 0xF0 == 0x90))
    body, now = b"", 0
    for t, msg in ev:
        body += vlq(t - now) + msg
        now = t
    body += b"\x00\xff\x2f\x00"
    head = b"MThd" + (6).to_bytes(4, "big") + bytes([0, 0, 0, 1]) + tpq.to_bytes(2, "big")
    dst.write_bytes(head + b"MTrk" + len(body).to_bytes(4, "big") + body)


def main(argv):
    n = int(argv[0]) if argv and argv[0].isdigit() else 60
    ms = float(argv[argv.index("--jitter") + 1]) if "--jitter" in argv else 0.0
    grid = argv[argv.index("--grid") + 1] if "--grid" in argv else "1/16"
    files = sorted(glob.glob(CORPUS))
    picked = files[::max(1, len(files) // n)][:n]
    tmp = Path(tempfile.mkdtemp())
    stats = {k: Counter() for k in ("abcgen", "midi2abc")}
    skipped = Counter()
    for i, f in enumerate(picked):
        mid = tmp / f"{i}.mid"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                src = parse_tune(read_book(f)[0])
                src.write("midi", fp=str(mid))
                want = norm([(on, d, p) for _x, on, d, p in note_events(src.expandRepeats())])
            except Exception:
                skipped["music21 cannot write the tune as MIDI"] += 1
                continue
        if norm(midi_notes(str(mid))) != want:
            skipped["music21's MIDI holds other notes than the source"] += 1
            continue
        if ms:
            jittered(mid, mid, ms, seed=i)
        for who in stats:
            t = time.perf_counter()
            try:
                if who == "abcgen":
                    abc = write_abc(load_midi(mid, grid=grid))
                else:
                    abc = subprocess.run(["midi2abc", "-f", str(mid)], capture_output=True,
                                         text=True, check=True).stdout
                took = time.perf_counter() - t
                got = events_of_abc(abc)
            except (AbcgenError, subprocess.CalledProcessError) as e:
                stats[who]["failed"] += 1
                print(f"{who} failed on {Path(f).name}: {e}", file=sys.stderr)
                continue
            s = stats[who]
            s["tunes"] += 1
            s["exact"] += got == want
            s["grid tunes"] += on_grid(want)
            s["grid exact"] += on_grid(want) and got == want
            s["notes"] += len(want)
            s["right"] += sum((Counter(want) & Counter(got)).values())
            s["time_us"] += int(took * 1e6)
    print(f"{len(picked)} tunes picked, jitter {ms:g} ms, abcgen grid {grid}; skipped: {dict(skipped)}")
    for who, s in stats.items():
        if not s["tunes"]:
            continue
        print(f"{who:9s} exact {s['exact']}/{s['tunes']} ({s['exact'] / s['tunes']:.0%}), "
              f"on the grid {s['grid exact']}/{s['grid tunes']}  "
              f"notes right {s['right'] / s['notes']:.1%}  "
              f"{s['time_us'] / s['tunes'] / 1000:.1f} ms/tune  failures {s['failed']}")


if __name__ == "__main__":
    main(sys.argv[1:])

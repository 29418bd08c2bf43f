"""Write the round-trip fixtures of tests/test_midi_transcribe.py (run once; the output is committed).

    python tests/data/midi/make_roundtrip.py      (from the repository root, in the venv)

Twenty tunes of Ryan's Mammoth Collection (every k-th file, in name order),
each parsed with parse_abc and written to MIDI by music21, which expands
repeats.  A tune is kept when music21 could write it, its MIDI holds the
notes music21 reads from the ABC (grace notes and some repeat structures
break that) and every note starts and ends on the 1/16 or triplet-eighth
grid.  Beside the .mid files, expected.json keeps each tune's note events
(onset from the first note, length, MIDI pitch; expanded as music21 plays
it), so the test needs neither music21's ABC parser nor its MIDI writer.
"""

from __future__ import annotations

import glob
import json
import warnings
from pathlib import Path

from abcgen.abc.reader import parse_tune, read_book
from abcgen.corpus import music21_collection
from abcgen.midi_check import merged_events, on_grid
from abcgen.roundtrip import midi_notes

OUT = Path(__file__).parent / "roundtrip"
COUNT = 20


def norm(ev):
    t0 = min(e[0] for e in ev)
    return sorted((on - t0, d, p) for on, d, p in ev)


def main():
    OUT.mkdir(exist_ok=True)
    files = sorted(glob.glob(str(music21_collection("ryansMammoth") / "*.abc")))
    expected = {}
    for f in files[::len(files) // (3 * COUNT)]:
        if len(expected) == COUNT:
            break
        mid = OUT / (Path(f).stem + ".mid")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                src = parse_tune(read_book(f)[0])
                src.write("midi", fp=str(mid))
                want = merged_events(src.expandRepeats())
            except Exception:
                mid.unlink(missing_ok=True)
                continue
        if norm(midi_notes(str(mid))) != want or not on_grid(want):
            mid.unlink()
            continue
        expected[mid.name] = [[str(on), str(d), p] for on, d, p in want]
    lines = [f"{json.dumps(k)}: {json.dumps(v, separators=(',', ':'))}" for k, v in expected.items()]
    (OUT / "expected.json").write_text("{\n" + ",\n".join(lines) + "\n}\n")
    print(f"{len(expected)} tunes written to {OUT}")


if __name__ == "__main__":
    main()

"""``abcgen check roundtrip``: the reader and the writer checked over a whole corpus.

For every tune abcgen's reader reads: parse(write(parse(abc))) must give the same
sounding notes as parse(abc) (onset, duration, pitch per part; ties merged,
grace notes aside).  Independently, abc2midi (Debian package abcmidi) must
accept the canonical text without errors, and the notes it plays must be the
notes abcgen reads from that text.  abc2midi plays repeats; the Score keeps
them as marks, so abc2midi is given the canonical text with repeat marks
removed (the notes as written, once).  ``abcgen check played``
(``abcgen.played``) compares the played-out notes with the source's.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections import Counter, defaultdict
from fractions import Fraction

from .abc.reader import parse_abc
from .abc.writer import write_abc
from .errors import AbcgenError
from .sounding import compare_events, note_events


def strip_repeats(abc: str) -> str:
    """Canonical ABC with repeat marks and ending numbers turned into plain bar lines."""
    head, _, body = abc.partition("\nK:")
    kline, _, rest = body.partition("\n")
    rest = re.sub(r"(?m)^\[\d[\d,]*", "", rest)
    rest = re.sub(r"\|\d[\d,]*", "|", rest)
    rest = rest.replace("::", "|").replace(":|", "|").replace("|:", "|")
    return head + "\nK:" + kline + "\n" + rest


def midi_notes(path: str) -> list[tuple[Fraction, Fraction, int]]:
    """(onset, duration, pitch) in quarter notes from a MIDI file, via music21's low-level reader."""
    from music21 import midi

    mf = midi.MidiFile()
    mf.open(path)
    mf.read()
    mf.close()
    tpq = mf.ticksPerQuarterNote
    out = []
    for tr in mf.tracks:
        t = 0
        pending: dict = defaultdict(list)
        for ev in tr.events:
            if isinstance(ev, midi.DeltaTime):
                t += ev.time
                continue
            if ev.channel == 10:
                continue
            if ev.type == midi.ChannelVoiceMessages.NOTE_ON and ev.velocity > 0:
                pending[ev.pitch].append(t)
            elif ev.type in (midi.ChannelVoiceMessages.NOTE_OFF, midi.ChannelVoiceMessages.NOTE_ON):
                if pending[ev.pitch]:
                    start = pending[ev.pitch].pop(0)
                    out.append((Fraction(start, tpq), Fraction(t - start, tpq), ev.pitch))
    out.sort()
    return out


def _clustered(notes, tol):
    """(onset, end, pitch) ordered by onset, where onsets chained within tol count as one chord onset."""
    out, start, prev = [], None, None
    for on, d, p in sorted(notes):
        if prev is None or on - prev > tol:
            start = on
        prev = on
        out.append((start, on + d, p))
    out.sort(key=lambda t: (t[0], t[2]))
    return out


def notes_agree(ours, theirs, tol=Fraction(1, 32)) -> tuple[bool, bool]:
    """(same onsets and pitches, same note ends too), within tol quarter notes.

    abc2midi starts each note a tick late, ends it a tick early and staggers
    the notes of a chord ten ticks apart (at 480 per quarter): onsets chained
    closer than the tolerance (15 ticks, far less than any written note) are
    one chord onset, and a note's end is compared rather than its length.
    """
    if theirs is None or len(ours) != len(theirs):
        return False, False
    a, b = _clustered(ours, tol), _clustered(theirs, tol)
    pitch_ok = all(x[2] == y[2] and abs(x[0] - y[0]) <= tol for x, y in zip(a, b))
    dur_ok = pitch_ok and all(abs(x[1] - y[1]) <= tol for x, y in zip(a, b))
    return pitch_ok, dur_ok


def abc2midi_available() -> bool:
    return shutil.which("abc2midi") is not None


def abc2midi_check(abc: str, workdir: str) -> dict:
    """Run abc2midi on a tune: accepted?, error lines, and the notes it plays."""
    src = os.path.join(workdir, "tune.abc")
    out = os.path.join(workdir, "tune.mid")
    with open(src, "w", encoding="utf-8") as f:
        f.write(abc)
    if os.path.exists(out):
        os.unlink(out)
    p = subprocess.run(["abc2midi", src, "-o", out], capture_output=True, text=True, timeout=60)
    lines = (p.stdout + p.stderr).splitlines()
    errors = [ln for ln in lines if ln.startswith("Error")]
    warns = [ln for ln in lines if ln.startswith("Warning")]
    notes = midi_notes(out) if p.returncode == 0 and os.path.exists(out) else None
    return {"rc": p.returncode, "errors": errors, "warnings": warns, "notes": notes}


def check_tune(tune, use_abc2midi: bool = True, workdir: str | None = None) -> dict:
    """The whole check for one tune; a dict of outcomes (runs in worker processes)."""
    r = {"where": tune.source}
    try:
        src = parse_abc(tune.text, file=tune.file, x=tune.x, line=tune.line)
    except AbcgenError as e:
        r["status"] = "source does not parse"
        r["reason"] = e.message
        return r
    try:
        canon = write_abc(src, index=1, title=tune.title)
    except AbcgenError as e:
        r["status"] = "writer error"
        r["reason"] = e.message
        return r
    try:
        again = parse_abc(canon)
    except AbcgenError as e:
        r["status"] = "canonical text does not parse"
        r["reason"] = e.message
        return r
    a, b = note_events(src), note_events(again)
    diff = compare_events(a, b)
    r["status"] = "exact" if diff is None else diff
    r["notes"] = len(a)
    r["notes_equal"] = sum(1 for x, y in zip(a, b) if x == y) if diff else len(a)
    if use_abc2midi and workdir is None:
        with tempfile.TemporaryDirectory(prefix="abcgen-rt-") as tmp:
            return check_tune(tune, use_abc2midi, tmp)
    if use_abc2midi:
        res = abc2midi_check(canon, workdir)
        r["abc2midi_accepted"] = res["rc"] == 0 and not res["errors"]
        r["abc2midi_errors"] = res["errors"][:2]
        r["abc2midi_warnings"] = len(res["warnings"])
        plain = abc2midi_check(strip_repeats(canon), workdir)
        ours = sorted((on, d, p) for (_pi, on, d, p) in note_events(again))
        theirs = plain["notes"]
        r["abc2midi_pitch_match"], r["abc2midi_duration_match"] = notes_agree(ours, theirs)
    return r


_WORKDIR = None


def _work(args):
    global _WORKDIR
    tune, use_abc2midi, base = args
    # One folder per worker process, inside the run's own temporary folder (removed by run()).
    if _WORKDIR is None or os.path.dirname(_WORKDIR) != base or not os.path.isdir(_WORKDIR):
        _WORKDIR = tempfile.mkdtemp(prefix="w-", dir=base)
    try:
        return check_tune(tune, use_abc2midi, _WORKDIR)
    except Exception as e:  # keep going: one odd tune must not end a corpus-wide check
        return {"where": tune.source, "status": f"crash ({type(e).__name__})", "reason": str(e)[:200]}


def run(spec: str, *, limit: int = 0, use_abc2midi: bool = True, jobs: int = 0, log=None) -> dict:
    from .abc.reader import read_book
    from .corpus import load_manifest, parallel_map, source_files

    if use_abc2midi and not abc2midi_available():
        raise AbcgenError("abc2midi is not installed (Debian: apt-get install abcmidi); "
                          "or pass --no-abc2midi", )
    m = load_manifest(spec)
    tunes = []
    for _label, f in source_files(m):
        if f.suffix.lower() == ".abc":
            tunes.extend(read_book(f))
    if limit:
        tunes = tunes[:limit]
    with tempfile.TemporaryDirectory(prefix="abcgen-rt-") as base:
        results = parallel_map(_work, [(t, use_abc2midi, base) for t in tunes], jobs, progress="roundtrip")
    return summarize(results, m.name, use_abc2midi)


def summarize(results: list[dict], name: str, use_abc2midi: bool) -> dict:
    status = Counter(r["status"] for r in results)
    examples = defaultdict(list)
    for r in results:
        if r["status"] != "exact" and len(examples[r["status"]]) < 3:
            examples[r["status"]].append(r["where"] + (f": {r['reason']}" if r.get("reason") else ""))
    parsed = [r for r in results if r["status"] not in ("source does not parse",)]
    exact = status.get("exact", 0)
    s = {
        "corpus": name,
        "tunes": len(results),
        "source_parsed": len(parsed),
        "exact": exact,
        "exact_pct": round(100 * exact / len(parsed), 3) if parsed else 0.0,
        "notes": sum(r.get("notes", 0) for r in parsed),
        "notes_exact_pct": round(100 * sum(r.get("notes_equal", 0) for r in parsed)
                                 / max(1, sum(r.get("notes", 0) for r in parsed)), 3),
        "mismatch": {k: v for k, v in status.most_common() if k not in ("exact", "source does not parse")},
        "source_does_not_parse": status.get("source does not parse", 0),
    }
    if use_abc2midi:
        checked = [r for r in results if "abc2midi_accepted" in r]
        n = max(1, len(checked))
        s["abc2midi_checked"] = len(checked)
        s["abc2midi_accepted_pct"] = round(100 * sum(r["abc2midi_accepted"] for r in checked) / n, 3)
        s["abc2midi_pitch_match_pct"] = round(100 * sum(r["abc2midi_pitch_match"] for r in checked) / n, 3)
        s["abc2midi_duration_match_pct"] = round(
            100 * sum(r["abc2midi_duration_match"] for r in checked) / n, 3)
        s["abc2midi_tunes_with_warnings"] = sum(1 for r in checked if r["abc2midi_warnings"])
        errs = Counter(re.sub(r"\d+", "N", e) for r in checked for e in r["abc2midi_errors"])
        s["abc2midi_error_kinds"] = dict(errs.most_common(10))
        ex = defaultdict(list)
        for r in checked:
            for e in r["abc2midi_errors"][:1]:
                k = re.sub(r"\d+", "N", e)
                if len(ex[k]) < 3:
                    ex[k].append(f"{r['where']}: {e}")
        s["abc2midi_error_examples"] = dict(ex)
        bad = [r["where"] for r in checked if not r["abc2midi_pitch_match"]][:5]
        s["abc2midi_pitch_mismatch_examples"] = bad
    return {"summary": s, "examples": dict(examples)}


def format_report(rep: dict) -> str:
    s = rep["summary"]
    lines = [f"round trip over corpus {s['corpus']}: {s['tunes']} tunes, "
             f"{s['source_parsed']} read ({s['source_does_not_parse']} do not parse)",
             f"  exact: {s['exact']} tunes = {s['exact_pct']:.2f} % of parsed tunes; "
             f"notes exact {s['notes_exact_pct']:.2f} % of {s['notes']}"]
    for k, v in s["mismatch"].items():
        lines.append(f"  {v:6d}  {k}")
        for ex in rep["examples"].get(k, []):
            lines.append(f"            e.g. {ex}")
    if "abc2midi_checked" in s:
        lines.append(f"abc2midi on the canonical text of {s['abc2midi_checked']} tunes: accepted "
                     f"{s['abc2midi_accepted_pct']:.2f} %, same onsets and pitches as our reading "
                     f"{s['abc2midi_pitch_match_pct']:.2f} %, same durations too "
                     f"{s['abc2midi_duration_match_pct']:.2f} %; tunes with warnings "
                     f"{s['abc2midi_tunes_with_warnings']}")
        for k, v in s["abc2midi_error_kinds"].items():
            lines.append(f"  {v:6d}  {k}")
            for e in s["abc2midi_error_examples"].get(k, []):
                lines.append(f"            e.g. {e}")
        for ex in s["abc2midi_pitch_mismatch_examples"]:
            lines.append(f"  pitch mismatch e.g. {ex}")
    return "\n".join(lines)

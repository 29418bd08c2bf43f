"""``abcgen check midi-roundtrip``: MIDI import measured on corpus tunes, beside midi2abc.

For each sampled tune of a corpus: parse the ABC, render it to MIDI the way
``abcgen convert --to mid`` does (music21's writer, repeats played out), then
turn the MIDI back into ABC (``load_midi`` + the canonical writer), parse that
ABC again and compare its notes with the source's: (onset, duration, pitch)
of every sounding note, ties merged, voices merged, onsets counted from the
first note, repeats expanded as music21 plays them (the source's, and those
the import writes back: see ``abcgen.midi.repeats``).  The report also
counts, of the tunes whose source has repeat marks (``:|``), those whose
converted ABC has them too, and those with as many.  With ``abc2midi`` the
converted ABC of every exact tune also goes through abc2midi, which plays
repeats and endings itself: its notes must be the source's too (onsets and
ends within abc2midi's few ticks, as in ``abcgen.roundtrip``).

A tune is *exact* when the two note lists are equal; *notes exact* is the
multiset intersection over the source's notes.  Tunes are split by whether
the source's notes lie on the default grid: every onset and end a multiple of
a sixteenth or of a triplet eighth, counted from the first note.  A tune
whose rendered MIDI already differs from the source (music21 drops or adds
notes: grace notes, some repeat structures) measures the renderer, not the
import; it is counted apart and left out of the shares.

``jitter`` moves every note-on and note-off of the MIDI by up to that many
milliseconds (uniform, seeded per tune) before converting, as a player would.
With ``midi2abc`` (Debian package abcmidi) the same MIDI file also goes
through ``midi2abc -f FILE`` and its ABC is read back the same way.  Times
are the conversion only (reading the MIDI to writing the ABC; for midi2abc
the whole process, since that is how it runs), per file, in each worker.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import warnings
from collections import Counter, defaultdict
from fractions import Fraction

from .abc.reader import parse_abc
from .abc.writer import write_abc
from .errors import AbcgenError
from .sounding import note_events

CONVERTERS = ("abcgen", "midi2abc")


def merged_events(score) -> list[tuple[Fraction, Fraction, int]]:
    """(onset from the first note, duration, pitch) of every sounding note, voices merged, sorted."""
    ev = [(on, d, p) for _part, on, d, p in note_events(score)]
    if not ev:
        return []
    t0 = min(e[0] for e in ev)
    return sorted((on - t0, d, p) for on, d, p in ev)


def on_grid(events) -> bool:
    """Every onset and end a multiple of a sixteenth or of a triplet eighth (in quarter notes)."""
    def ok(x):
        return x % Fraction(1, 4) == 0 or x % Fraction(1, 3) == 0

    return all(ok(on) and ok(on + d) for on, d, _p in events)


def midi_file_events(data: bytes) -> list[tuple[Fraction, Fraction, int]]:
    """The notes of MIDI bytes in quarter notes, from the first note (drums aside)."""
    from .midi import DRUM_CHANNEL, parse_midi_bytes

    mf = parse_midi_bytes(data)
    ev = [(Fraction(n.on) / mf.tpq, Fraction(n.off - n.on) / mf.tpq, n.pitch)
          for tr in mf.tracks for n in tr.notes if n.channel != DRUM_CHANNEL]
    if not ev:
        return []
    t0 = min(e[0] for e in ev)
    return sorted((on - t0, d, p) for on, d, p in ev)


def difference(want: list, got: list) -> str:
    """The first kind of difference between two sorted note lists (a short category)."""
    if len(want) != len(got):
        return "note count differs"
    for x, y in zip(want, got):
        if x != y:
            if x[0] != y[0]:
                return "onset differs"
            if x[2] != y[2]:
                return "pitch differs"
            return "duration differs"
    return "order differs"


def _notes_right(want: list, got: list) -> int:
    return sum((Counter(want) & Counter(got)).values())


def repeat_ends(score) -> int:
    """How many sections end with a repeat mark (``:|``, ``::``) in the first part."""
    from music21 import bar, stream

    parts = list(score.parts) or [score]
    return sum(1 for m in parts[0].getElementsByClass(stream.Measure)
               if isinstance(m.rightBarline, bar.Repeat) and m.rightBarline.direction == "end")


def check_tune(tune, *, grid: str = "1/16", triplets: bool = True, jitter: float = 0.0,
               use_midi2abc: bool = False, workdir: str, seed: int = 0, repeats: bool = True,
               use_abc2midi: bool = False) -> dict:
    """The whole measurement of one tune; a dict of outcomes (runs in worker processes)."""
    from .convert import score_to_midi
    from .midi import load_midi, parse_midi_bytes
    from .sounding import played
    from .midi import jittered

    r = {"where": tune.source}
    try:
        src = parse_abc(tune.text, file=tune.file, x=tune.x, line=tune.line)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = merged_events(played(src))        # repeats played out, as the MIDI writer does
        data = score_to_midi(src, title=tune.title)
    except AbcgenError as e:
        r["status"] = "source does not parse"
        r["reason"] = e.message
        return r
    except Exception as e:  # music21 cannot expand or write it
        r["status"] = "cannot render to MIDI"
        r["reason"] = f"{type(e).__name__}: {str(e)[:120]}"
        return r
    if midi_file_events(data) != want:
        r["status"] = "rendered MIDI differs from the source"
        return r
    r["status"] = "measured"
    r["notes"] = len(want)
    r["on_grid"] = on_grid(want)
    r["source_repeats"] = repeat_ends(src)
    if jitter:
        data = jittered(parse_midi_bytes(data), jitter, seed)
    path = os.path.join(workdir, "tune.mid")
    with open(path, "wb") as f:
        f.write(data)
    several = len(src.parts) > 1
    for who in CONVERTERS if use_midi2abc else CONVERTERS[:1]:
        t = time.perf_counter()
        try:
            if who == "abcgen":
                abc = write_abc(load_midi(path, grid=grid, triplets=triplets, all_tracks=several,
                                          repeats=repeats))
            else:
                p = subprocess.run(["midi2abc", "-f", path], capture_output=True, text=True, timeout=60)
                if p.returncode != 0:
                    raise RuntimeError(f"midi2abc exit {p.returncode}: {p.stderr.strip()[:100]}")
                abc = p.stdout
            r[f"{who}_s"] = time.perf_counter() - t
            back = parse_abc(abc)
            r[f"{who}_repeats"] = repeat_ends(back)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                got = merged_events(played(back))
        except Exception as e:
            r[f"{who}_s"] = r.get(f"{who}_s", time.perf_counter() - t)
            r[f"{who}_status"] = "conversion or reading back failed"
            r[f"{who}_reason"] = f"{type(e).__name__}: {str(e)[:120]}"
            r[f"{who}_right"] = 0
            continue
        r[f"{who}_status"] = "exact" if got == want else difference(want, got)
        r[f"{who}_right"] = _notes_right(want, got)
        if who == "abcgen" and use_abc2midi:
            r["abc2midi_agrees"] = _abc2midi_agrees(abc, want, workdir)
    return r


def _abc2midi_agrees(abc: str, want: list, workdir: str) -> bool:
    """abc2midi (which plays repeats itself) plays ``abc`` to the notes ``want``, onsets and ends."""
    from .roundtrip import abc2midi_check, notes_agree

    sub = os.path.join(workdir, "abc2midi")
    os.makedirs(sub, exist_ok=True)
    res = abc2midi_check(abc, sub)
    if res["rc"] != 0 or res["errors"] or not res["notes"]:
        return False
    t0 = min(n[0] for n in res["notes"])
    theirs = sorted((on - t0, d, p) for on, d, p in res["notes"])
    return notes_agree(want, theirs) == (True, True)


_WORKDIR = None


def _work(args):
    global _WORKDIR
    tune, opts, seed, base = args
    # One folder per worker process, inside the run's own temporary folder (removed by run()).
    if _WORKDIR is None or os.path.dirname(_WORKDIR) != base or not os.path.isdir(_WORKDIR):
        _WORKDIR = tempfile.mkdtemp(prefix="w-", dir=base)
    try:
        return check_tune(tune, workdir=_WORKDIR, seed=seed, **opts)
    except Exception as e:  # one odd tune must not end a corpus-wide measurement
        return {"where": tune.source, "status": f"crash ({type(e).__name__})", "reason": str(e)[:200]}


def sample_tunes(spec: str, limit: int) -> tuple[str, list, int]:
    """(corpus name, ``limit`` tunes spread evenly over the corpus in file order, corpus size)."""
    from .abc.reader import read_book
    from .corpus import load_manifest, source_files

    m = load_manifest(spec)
    tunes = []
    for _label, f in source_files(m):
        if f.suffix.lower() == ".abc":
            tunes.extend(read_book(f))
    n = len(tunes)
    if limit and limit < n:
        tunes = [tunes[i * n // limit] for i in range(limit)]
    return m.name, tunes, n


def run(spec: str = "folk", *, limit: int = 1000, grid: str = "1/16", triplets: bool = True,
        jitter: float = 0.0, use_midi2abc: bool = True, jobs: int = 0, log=None, repeats: bool = True,
        use_abc2midi: bool = False) -> dict:
    from .corpus import parallel_map
    from .midi import parse_grid

    parse_grid(grid, None)
    if use_midi2abc and shutil.which("midi2abc") is None:
        raise AbcgenError("midi2abc is not installed (Debian: apt-get install abcmidi); or pass --no-midi2abc")
    name, tunes, total = sample_tunes(spec, limit)
    if use_abc2midi and shutil.which("abc2midi") is None:
        raise AbcgenError("abc2midi is not installed (Debian: apt-get install abcmidi); or leave out --abc2midi")
    opts = dict(grid=grid, triplets=triplets, jitter=jitter, use_midi2abc=use_midi2abc, repeats=repeats,
                use_abc2midi=use_abc2midi)
    jobs = jobs or os.cpu_count() or 1
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="abcgen-midi-") as base:
        results = parallel_map(_work, [(t, opts, i, base) for i, t in enumerate(tunes)], jobs, progress="midi")
    wall = time.perf_counter() - t0
    rep = summarize(results, use_midi2abc)
    rep["summary"].update(corpus=name, corpus_tunes=total, sampled=len(tunes), grid=grid, triplets=triplets,
                          jitter_ms=jitter, repeats=repeats, jobs=jobs, wall_s=round(wall, 1))
    return rep


def _share(a: int, b: int) -> float:
    return round(100 * a / b, 2) if b else 0.0


def summarize(results: list[dict], use_midi2abc: bool) -> dict:
    status = Counter(r["status"] for r in results)
    measured = [r for r in results if r["status"] == "measured"]
    s: dict = {"tunes": len(results), "measured": len(measured),
               "left_out": {k: v for k, v in status.most_common() if k != "measured"}}
    examples: dict = defaultdict(list)
    for r in results:
        if r["status"] != "measured" and len(examples[r["status"]]) < 3:
            examples[r["status"]].append(r["where"] + (f": {r['reason']}" if r.get("reason") else ""))
    for who in CONVERTERS if use_midi2abc else CONVERTERS[:1]:
        d: dict = {}
        for part, rows in (("all", measured), ("on_grid", [r for r in measured if r["on_grid"]]),
                           ("off_grid", [r for r in measured if not r["on_grid"]])):
            exact = sum(r[f"{who}_status"] == "exact" for r in rows)
            notes = sum(r["notes"] for r in rows)
            right = sum(r[f"{who}_right"] for r in rows)
            d[part] = {"tunes": len(rows), "exact": exact, "exact_pct": _share(exact, len(rows)),
                       "notes": notes, "notes_exact_pct": _share(right, notes)}
        secs = [r[f"{who}_s"] for r in measured if f"{who}_s" in r]
        d["mean_s_per_file"] = round(sum(secs) / len(secs), 5) if secs else None
        d["files_per_s_per_core"] = round(len(secs) / sum(secs), 2) if secs and sum(secs) else None
        d["repeats"] = _repeat_figures(measured, who)
        if who == "abcgen" and any("abc2midi_agrees" in r for r in measured):
            ex = [r for r in measured if r["abcgen_status"] == "exact"]
            rp = [r for r in ex if r.get("abcgen_repeats")]
            a, b = sum(r["abc2midi_agrees"] for r in ex), sum(r["abc2midi_agrees"] for r in rp)
            d["abc2midi"] = {"exact_tunes": len(ex), "agree": a, "agree_pct": _share(a, len(ex)),
                             "with_repeats": len(rp), "with_repeats_agree": b}
        d["mismatch"] = dict(Counter(r[f"{who}_status"] for r in measured
                                     if r[f"{who}_status"] != "exact").most_common())
        for r in measured:
            st = r[f"{who}_status"]
            key = f"{who}: {st}" + (" (on the grid)" if r["on_grid"] else "")
            if st != "exact" and len(examples[key]) < 5:
                examples[key].append(r["where"] + (f": {r[who + '_reason']}" if r.get(f"{who}_reason") else ""))
        s[who] = d
    return {"summary": s, "examples": dict(examples)}


def _repeat_figures(measured: list[dict], who: str) -> dict:
    """Of the source tunes with repeat marks: how many converted tunes have them too, and as many."""
    ok = [r for r in measured if f"{who}_repeats" in r]
    src = [r for r in ok if r["source_repeats"]]
    kept = sum(1 for r in src if r[f"{who}_repeats"])
    same = sum(1 for r in src if r[f"{who}_repeats"] == r["source_repeats"])
    added = sum(1 for r in ok if not r["source_repeats"] and r[f"{who}_repeats"])
    return {"source_tunes": len(src), "recovered": kept, "recovered_pct": _share(kept, len(src)),
            "same_count": same, "same_count_pct": _share(same, len(src)),
            "no_source_repeats": len(ok) - len(src), "added": added}


def format_report(rep: dict) -> str:
    s = rep["summary"]
    lines = [f"MIDI round trip over corpus {s['corpus']}: {s['sampled']} of {s['corpus_tunes']} tunes "
             f"(spread evenly), grid {s['grid']}{' with triplets' if s['triplets'] else ''}, "
             f"jitter {s['jitter_ms']:g} ms, repeats {'recovered' if s.get('repeats', True) else 'off'}; "
             f"{s['measured']} measured, {s['jobs']} worker(s), "
             f"{s['wall_s']:.0f} s"]
    for k, v in s["left_out"].items():
        lines.append(f"  left out {v:5d}  {k}")
        for ex in rep["examples"].get(k, []):
            lines.append(f"             e.g. {ex}")
    for who in CONVERTERS:
        if who not in s:
            continue
        d = s[who]
        lines.append(f"{who}:")
        for part, label in (("all", "all tunes"), ("on_grid", "on the grid"), ("off_grid", "off the grid")):
            x = d[part]
            lines.append(f"  {label:12s} exact {x['exact']:5d}/{x['tunes']:<5d} = {x['exact_pct']:6.2f} %   "
                         f"notes exact {x['notes_exact_pct']:6.2f} % of {x['notes']}")
        if d["mean_s_per_file"] is not None:
            lines.append(f"  speed: {1000 * d['mean_s_per_file']:.1f} ms per file = "
                         f"{d['files_per_s_per_core']:.1f} files/s per core, "
                         f"{d['files_per_s_per_core'] * s['jobs']:.1f} files/s on {s['jobs']} cores")
        am = d.get("abc2midi")
        if am:
            lines.append(f"  abc2midi plays {am['agree']}/{am['exact_tunes']} = {am['agree_pct']:.2f} % of the exact "
                         f"tunes' ABC to the source's notes ({am['with_repeats_agree']}/{am['with_repeats']} "
                         f"of those with repeat marks)")
        rp = d.get("repeats")
        if rp:
            lines.append(f"  repeats: {rp['recovered']}/{rp['source_tunes']} = {rp['recovered_pct']:.2f} % of the "
                         f"tunes whose source has repeat marks have them ({rp['same_count']} = "
                         f"{rp['same_count_pct']:.2f} % as many :| as the source); "
                         f"{rp['added']} of {rp['no_source_repeats']} tunes without get some")
        for k, v in d["mismatch"].items():
            lines.append(f"    {v:5d}  {k}")
            for grid_note in ("", " (on the grid)"):
                for ex in rep["examples"].get(f"{who}: {k}{grid_note}", []):
                    lines.append(f"             e.g.{grid_note} {ex}")
    if "abcgen" in s and "midi2abc" in s:
        a, b = s["abcgen"], s["midi2abc"]
        if a["files_per_s_per_core"] and b["files_per_s_per_core"]:
            lines.append(f"speed ratio abcgen/midi2abc: {a['files_per_s_per_core'] / b['files_per_s_per_core']:.2f}")
    return "\n".join(lines)

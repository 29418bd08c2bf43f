"""``abcgen check played``: every tune read as abc2midi plays it.

For each tune of a corpus (or tune book, or folder):

* *source*: the notes abc2midi plays from the source text, after chord
  symbols ``"..."``, decorations ``!..!`` ``+..+`` ``~ . H L M O P S T u v``
  and grace notes ``{..}``
  are stripped from its music lines (abcgen drops them; abc2midi would play
  grace notes and some chord symbols);
* *canonical*: the notes abc2midi plays from abcgen's canonical text of the
  tune as the corpus has it (``write_abc`` of ``parse_abc(..., rebar=True)``;
  a tune kept out of training because its bars cannot fit the meter is
  written as the source bars it);
* *ours*: the notes of abcgen's own reading, repeats and endings played out
  (``abcgen.sounding.played``, as the MIDI out does).

A tune *plays identically* when source = canonical and source = ours: the
same notes with the same onsets, pitches and ends, within abc2midi's few
ticks (``abcgen.roundtrip.notes_agree``).  abc2midi plays repeats and
endings itself on both texts.  Every other tune is counted under one
category: which comparison differs first and how.
"""

from __future__ import annotations

import re
import tempfile
import time
from collections import Counter, defaultdict
from fractions import Fraction

from .corpus import KEPT_OUT
from .errors import AbcgenError

_SHORTHAND = re.compile(r"\[[A-Za-z]:[^\]]*\]|[~.HLMOPSTuv]")
_FIELD = re.compile(r"^[A-Za-z]:(?![|:])|^%")


def strip_unplayed(text: str) -> str:
    """The tune with chord symbols, decorations and grace notes removed from its music lines."""
    out, body = [], False
    for ln in text.split("\n"):
        if ln.startswith("R:"):
            continue    # abc2midi swings broken rhythm 2:1 under R:hornpipe; notation says 3:1
        if not body or _FIELD.match(ln):
            if ln.startswith("K:"):
                body = True
            out.append(ln)
            continue
        ln = re.sub(r'"[^"]*"', "", ln)
        ln = re.sub(r"![^!]*!", "", ln)
        ln = re.sub(r"\+[^+\s|]*\+", "", ln)
        ln = re.sub(r"\{[^}]*\}", "", ln)
        # decoration shorthands (abc2midi plays ~ as a roll), but not inside inline fields
        ln = _SHORTHAND.sub(lambda m: m.group(0) if m.group(0).startswith("[") else "", ln)
        out.append(ln)
    return "\n".join(out)


def _kind(a: list, b: list, tol=Fraction(1, 32)) -> str:
    """How two note lists (onset, duration, pitch) differ, as a short category."""
    from .roundtrip import _clustered

    if len(a) != len(b):
        return "more notes" if len(b) > len(a) else "fewer notes"
    x, y = _clustered(a, tol), _clustered(b, tol)
    for p, q in zip(x, y):
        if abs(p[0] - q[0]) > tol:
            return "onset differs"
        if p[2] != q[2]:
            return "pitch differs"
    return "note end differs"


def _first_diff(a: list, b: list, tol=Fraction(1, 32)) -> str:
    from .roundtrip import _clustered

    x, y = _clustered(a, tol), _clustered(b, tol)
    for p, q in zip(x, y):
        if abs(p[0] - q[0]) > tol or p[2] != q[2] or abs(p[1] - q[1]) > tol:
            return f"at quarter {float(p[0]):g}: {p[2]} vs {q[2]}"
    return f"{len(a)} vs {len(b)} notes"


def check_tune(tune, workdir: str, reader: str = "abcgen") -> dict:
    """The three readings of one tune compared; a dict of outcomes (runs in worker processes)."""
    import warnings

    from .abc.reader import parse_abc, parse_abc_music21
    from .abc.writer import write_abc
    from .sounding import note_events
    from .sounding import played
    from .roundtrip import abc2midi_check, notes_agree

    r = {"where": tune.source}
    src = abc2midi_check(strip_unplayed(tune.text), workdir)
    if src["rc"] != 0 or not src["notes"]:
        r["status"] = "abc2midi cannot play the source"
        r["reason"] = (src["errors"] or ["no notes"])[0][:120]
        return r
    want = src["notes"]
    parse = parse_abc if reader == "abcgen" else parse_abc_music21
    t = time.perf_counter()
    try:
        if reader == "abcgen":
            # the corpus form: bars moved to fit the meter (abcgen.abc.rebar); a tune
            # that cannot be re-barred (kept out of training) is checked as written
            try:
                score = parse(tune.text, file=tune.file, x=tune.x, line=tune.line, rebar=True)
            except AbcgenError as e:
                if not e.message.startswith(KEPT_OUT):
                    raise
                r["kept_out"] = True
                score = parse(tune.text, file=tune.file, x=tune.x, line=tune.line)
        else:
            score = parse(tune.text, file=tune.file, x=tune.x, line=tune.line)
    except AbcgenError as e:
        r["status"] = "our reader cannot read the source"
        r["reason"] = e.message
        return r
    r["read_s"] = time.perf_counter() - t
    try:
        canon = write_abc(score, index=1, title=tune.title)
    except AbcgenError as e:
        r["status"] = "writer error"
        r["reason"] = e.message
        return r
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = sorted((on, d, p) for _pi, on, d, p in note_events(played(score)))
    can = abc2midi_check(canon, workdir)
    r["notes"] = len(want)
    if notes_agree(ours, want) != (True, True):
        r["status"] = f"our reading played out: {_kind(want, ours)}"
        if getattr(score, "abc_implied_with_endings", False):
            # abc2midi plays such a section its own way (it skips the first ending, or
            # jumps back to the tune's start): see README, "Reading ABC"
            r["status"] = ("source has an end repeat without a start repeat in a tune with "
                           "endings or voices (abc2midi's own reading)")
        r["reason"] = _first_diff(want, ours)
    elif can["rc"] != 0 or not can["notes"]:
        r["status"] = "abc2midi cannot play the canonical text"
        r["reason"] = (can["errors"] or ["no notes"])[0][:120]
    elif notes_agree(can["notes"], want) != (True, True):
        r["status"] = f"canonical text under abc2midi: {_kind(want, can['notes'])}"
        r["reason"] = _first_diff(want, can["notes"])
    else:
        r["status"] = "identical"
    return r


_WORKDIR = None


def _work(args):
    global _WORKDIR
    tune, reader = args
    if _WORKDIR is None:
        _WORKDIR = tempfile.mkdtemp(prefix="abcgen-played-")
    try:
        return check_tune(tune, _WORKDIR, reader)
    except Exception as e:  # one odd tune must not end a corpus-wide check
        return {"where": tune.source, "status": f"crash ({type(e).__name__})", "reason": str(e)[:200]}


def run(spec: str = "folk", *, limit: int = 0, jobs: int = 0, reader: str = "abcgen") -> dict:
    from .corpus import parallel_map
    from .roundtrip import abc2midi_available

    if not abc2midi_available():
        raise AbcgenError("abc2midi is not installed (Debian: apt-get install abcmidi)")
    name, tunes, total = _tunes(spec, limit)
    t0 = time.perf_counter()
    results = parallel_map(_work, [(t, reader) for t in tunes], jobs, progress="played")
    rep = summarize(results)
    rep["summary"].update(corpus=name, corpus_tunes=total, reader=reader,
                          wall_s=round(time.perf_counter() - t0, 1))
    return rep


def _tunes(spec: str, limit: int):
    """(name, tunes spread evenly over the corpus, corpus size); spec: corpus name, .abc file or folder."""
    from pathlib import Path

    from .abc.reader import read_book
    from .midi_check import sample_tunes

    p = Path(spec)
    if p.is_file() or p.is_dir():
        files = [p] if p.is_file() else sorted(p.rglob("*.abc"))
        tunes = [t for f in files for t in read_book(f)]
        n = len(tunes)
        if limit and limit < n:
            tunes = [tunes[i * n // limit] for i in range(limit)]
        return str(p), tunes, n
    return sample_tunes(spec, limit)


def summarize(results: list[dict]) -> dict:
    status = Counter(r["status"] for r in results)
    examples: dict = defaultdict(list)
    for r in results:
        if r["status"] != "identical" and len(examples[r["status"]]) < 3:
            examples[r["status"]].append(r["where"] + (f": {r['reason']}" if r.get("reason") else ""))
    checked = [r for r in results if r["status"] != "abc2midi cannot play the source"]
    same = status.get("identical", 0)
    secs = [r["read_s"] for r in results if "read_s" in r]
    s = {
        "tunes": len(results),
        "checked": len(checked),
        "identical": same,
        "identical_pct": round(100 * same / len(checked), 2) if checked else 0.0,
        "differences": {k: v for k, v in status.most_common() if k != "identical"},
        "read_ms_per_tune": round(1000 * sum(secs) / len(secs), 2) if secs else None,
        "kept_out": sum(1 for r in results if r.get("kept_out")),
    }
    return {"summary": s, "examples": dict(examples)}


def format_report(rep: dict) -> str:
    s = rep["summary"]
    lines = [f"played over {s['corpus']} ({s['reader']} reader): {s['tunes']} of {s['corpus_tunes']} tunes, "
             f"{s['checked']} that abc2midi plays; identical {s['identical']} = {s['identical_pct']:.2f} %; "
             f"reading {s['read_ms_per_tune']} ms per tune; {s['wall_s']:.0f} s"]
    if s.get("kept_out"):
        lines.append(f"  ({s['kept_out']} tunes whose bars cannot be made to fit the meter, kept out of "
                     "training, are checked as written)")
    for k, v in s["differences"].items():
        lines.append(f"  {v:6d}  {k}")
        for ex in rep["examples"].get(k, []):
            lines.append(f"            e.g. {ex}")
    return "\n".join(lines)

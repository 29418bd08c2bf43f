"""``abcgen convert``: tunes in, canonical ABC (or MIDI, MusicXML) out.

Batch work never stops at one bad file or tune: the rest is converted, every
failure is returned with its reason, and outputs are written atomically.
ABC output is always the canonical ABC of ``abc.writer``; in one output the
tunes are numbered X:1, X:2, ... in input order.
"""

from __future__ import annotations

import glob as globmod
import sys
import warnings
from pathlib import Path

from .abc.reader import parse_tune, read_book
from .abc.writer import write_abc
from .errors import AbcgenError, InputError
from .fileio import AtomicTextWriter, atomic_write_bytes, refuse_overwrite, same_file

ABC_EXTS = {".abc"}
MIDI_EXTS = {".mid", ".midi"}
XML_EXTS = {".musicxml", ".xml", ".mxl"}
IN_EXTS = ABC_EXTS | MIDI_EXTS | XML_EXTS
OUT_FORMATS = {"abc": ".abc", "mid": ".mid", "midi": ".mid", "musicxml": ".musicxml", "xml": ".musicxml",
               "mxl": ".mxl"}


def expand_inputs(inputs: list[str]) -> tuple[list[Path], list[str]]:
    """Files, folders (recursively) and globs -> files; plus one message per input that matched nothing."""
    files, missing = [], []
    for spec in inputs:
        p = Path(spec).expanduser()
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IN_EXTS)
            if not found:
                missing.append(f"{spec}: no .abc, .mid or .musicxml file in this folder")
            files.extend(found)
        elif p.exists():
            files.append(p)
        elif any(ch in spec for ch in "*?["):
            found = sorted(Path(f) for f in globmod.glob(str(p), recursive=True) if Path(f).is_file())
            if not found:
                missing.append(f"{spec}: no file matches")
            files.extend(found)
        else:
            missing.append(f"{spec}: no such file or folder")
    return files, missing


def parse_file_no_pickle(path: Path, fmt: str | None = None, **keywords):
    """music21's parse of a file from its source, never through its pickle cache.

    ``music21.converter.parse`` stores every parsed score as a pickle in a
    shared scratch folder and loads it back on the next parse of the same
    path: a pickle planted there would run its code, and a file replaced by
    an older-dated one would give the old score.  This path neither reads
    nor writes a pickle.
    """
    from music21 import converter

    c = converter.Converter()
    c.parseFileNoPickle(Path(path), format=fmt, forceSource=True, **keywords)
    return c.stream


def load_score(path: Path, midi_options: dict | None = None):
    """A MIDI or MusicXML file as a music21 Score; a one-line InputError when it cannot be read.

    MIDI goes through abcgen.midi (quantized to a grid, melody track, meter,
    key and pickup found); ``midi_options`` are its keyword arguments.
    MusicXML is parsed from source, never from music21's pickle cache.
    """
    ext = path.suffix.lower()
    if ext not in MIDI_EXTS | XML_EXTS:
        raise InputError(f"unsupported input type {ext or '(none)'}; "
                         f"use one of {', '.join(sorted(IN_EXTS))}", file=str(path))
    if not path.is_file() or path.stat().st_size == 0:
        raise InputError("empty or missing file", file=str(path))
    if ext in MIDI_EXTS:
        from .midi import load_midi

        return load_midi(path, **(midi_options or {}))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            score = parse_file_no_pickle(path, "musicxml")
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"cannot read as {ext[1:]} ({type(e).__name__}: {msg})", file=str(path)) from None
    if not score.recurse().notes:
        raise InputError("the file has no notes", file=str(path))
    return score


def _not_binary(path: Path) -> None:
    """An .abc file that holds binary data (a MIDI file renamed, say) fails in one line."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError as e:
        raise InputError(f"cannot read: {e.strerror or e}", file=str(path)) from None
    kind = {b"MThd": "a MIDI file", b"RIFF": "a RIFF file", b"PK\x03\x04": "a zip file (.mxl?)"}
    for magic, what in kind.items():
        if head.startswith(magic):
            raise InputError(f"not ABC text: this is {what}", file=str(path))
    if b"\x00" in head:
        raise InputError("not ABC text: binary data", file=str(path))


def scores_of(path: Path, failures: list[str], midi_options: dict | None = None):
    """(label, score, title) for every readable tune of a file; failures appended as lines."""
    ext = path.suffix.lower()
    if ext in ABC_EXTS:
        try:
            _not_binary(path)
            tunes = read_book(path)
        except AbcgenError as e:
            failures.append(str(e))
            return
        if not tunes:
            failures.append(f"{path}: no tune in this file")
        for t in tunes:
            try:
                score = parse_tune(t)      # its errors name the book line (abc.reader.book_line)
            except AbcgenError as e:
                failures.append(str(e))
                continue
            yield f"{path} X:{t.x}", score, t.title
    else:
        try:
            score = load_score(path, midi_options)
            md = score.metadata
            title = (md.title or md.movementName if md is not None else None) or path.stem
            yield str(path), score, title
        except AbcgenError as e:
            failures.append(str(e))



def output_format(to: str | None, output: Path | None) -> str:
    """The output format: ``--to`` when given, else the extension of ``-o``, else ABC."""
    by_ext = {".abc": "abc", ".mid": "mid", ".midi": "mid", ".musicxml": "musicxml", ".xml": "musicxml",
              ".mxl": "mxl"}
    if to is not None:
        to = to.lower()
        if to not in OUT_FORMATS:
            raise InputError(f"unknown output format {to!r}; use one of abc, mid, musicxml, mxl")
        want = by_ext.get(output.suffix.lower()) if output is not None else None
        if want is not None and OUT_FORMATS[want] != OUT_FORMATS[to]:
            raise InputError(f"--to {to} does not match the extension of -o {output}")
        return to
    if output is not None:
        return by_ext.get(output.suffix.lower(), "abc")
    return "abc"


def check_midi_options(midi_options: dict | None) -> None:
    """Bad --grid or --meter values fail once, before any file is read (exit 2)."""
    from .midi import parse_grid as _parse_grid, parse_meter as _parse_meter

    opts = midi_options or {}
    if opts.get("grid") is not None:
        _parse_grid(opts["grid"], None)
    if opts.get("meter") is not None:
        _parse_meter(opts["meter"], None)


class ConvertFailed(InputError):
    """Nothing was converted: every input failed (exit 2); ``failures`` lists them."""

    def __init__(self, failures: list[str]):
        super().__init__(f"converted 0 file(s), {len(failures)} failure(s)")
        self.failures = failures


def convert(inputs: list[str], *, to: str | None = None, output: Path | None = None,
            outdir: Path | None = None, log=None, midi_options: dict | None = None,
            expand_repeats: bool = True, stdout=None) -> list[str]:
    """Convert every input; returns the list of failures (empty when all went well).

    ``to``: abc, mid, musicxml or mxl; None takes it from the extension of
    ``output`` (ABC when that says nothing).  ``expand_repeats`` (MIDI out):
    play repeats and endings as a musician would; False writes the notes
    once, in the order they are written.  With ``outdir`` two inputs of the
    same name would write the same file: the second is a failure, nothing
    is overwritten.  An output that is one of the input files is refused
    (InputError, exit 2) before anything is read or written.

    ABC out is streamed: each tune is written as soon as it is converted, in
    input order, to a temporary file renamed over the output at the end (or
    to stdout), so memory does not grow with the number of tunes.  When no
    input could be converted, ConvertFailed (exit 2) carries the failures.
    """
    to = output_format(to, output)
    check_midi_options(midi_options)
    files, failures = expand_inputs(inputs)
    if not files and failures:
        raise InputError("; ".join(failures))
    ext = OUT_FORMATS[to]
    if output is not None:
        refuse_overwrite([output], files)
    if outdir is not None:
        refuse_overwrite([outdir / (f.stem + ext) for f in files], files)
    if outdir is None and output is None and to != "abc":
        raise InputError(f"--to {to} writes files: give -o FILE or -O DIR")
    out = stdout if stdout is not None else sys.stdout
    converted = 0
    shared = None        # -o FILE or stdout, ABC: one streamed book, numbered across files
    if outdir is None and to == "abc":
        shared = AtomicTextWriter(output) if output is not None else _StreamOut(out)
    collected = []       # -o FILE, not ABC: a file per tune, named once their number is known
    written: dict = {}   # -O: target -> the input it came from
    index = 0
    try:
        for f in files:
            target = None
            if outdir is not None:
                target = outdir / (f.stem + ext)
                if target in written:
                    failures.append(f"{f}: not written: {target} already holds {written[target]} "
                                    f"(two inputs of the same name)")
                    continue
            if to == "abc":
                sink = shared if shared is not None else AtomicTextWriter(target)
                n = 0
                for label, score, title in scores_of(f, failures, midi_options):
                    k = (index if shared is not None else n) + 1
                    try:
                        text = write_abc(score, index=k, title=title)
                    except AbcgenError as e:
                        failures.append(f"{label}: {e.message}")
                        continue
                    sink.write(("\n" if k > 1 else "") + text)
                    n += 1
                    if shared is not None:
                        index += 1
                if n:
                    converted += 1
                if shared is None:
                    try:
                        if sink.commit():
                            written[target] = f
                    except OSError as e:
                        failures.append(f"{target}: cannot write: {e.strerror or e}")
                        converted -= 1 if n else 0
                continue
            items = list(scores_of(f, failures, midi_options))
            if not items:
                continue
            converted += 1
            if outdir is not None:
                written[target] = f
                _write_items(items, target, to, failures, expand_repeats, files)
            else:
                collected.extend(items)
        if collected:
            _write_items(collected, output, to, failures, expand_repeats, files)
        if shared is not None:
            try:
                shared.commit()
            except OSError as e:
                failures.append(f"{output}: cannot write: {e.strerror or e}")
                converted = 0
    finally:
        if shared is not None:
            shared.discard()
    if log and files:
        log(f"converted {converted} file(s), {len(failures)} failure(s)")
    if converted == 0 and failures:
        raise ConvertFailed(failures)
    return failures


class _StreamOut:
    """stdout with the writer's commit/discard (nothing to commit: each tune is out already)."""

    def __init__(self, f):
        self.f = f

    def write(self, text: str) -> None:
        self.f.write(text)
        self.f.flush()

    def commit(self) -> bool:
        return True

    def discard(self) -> None:
        pass


def _write_items(items, target: Path, to: str, failures: list[str], expand_repeats: bool = True,
                 inputs=()) -> None:
    try:
        fmt = {"mid": "midi", "midi": "midi", "mxl": "mxl"}.get(to, "musicxml")
        for i, (label, score, _title) in enumerate(items, 1):
            t = target if len(items) == 1 else target.with_name(f"{target.stem}-{i}{target.suffix}")
            if any(same_file(t, f) for f in inputs):
                failures.append(f"{label}: not written: {t} is an input file")
                continue
            try:
                if fmt == "midi":
                    data = score_to_midi(score, title=_title, expand_repeats=expand_repeats)
                else:
                    data = _music21_bytes(score, fmt, t.suffix, _title)
                atomic_write_bytes(t, data)
            except Exception as e:
                failures.append(f"{label}: cannot write {t}: {type(e).__name__}: {e}")
    except OSError as e:
        failures.append(f"{target}: cannot write: {e.strerror or e}")


def _music21_bytes(score, fmt: str, suffix: str, title: str | None = None) -> bytes:
    """What music21 writes in ``fmt`` (the title set), by way of a private temporary folder."""
    import tempfile

    from music21 import metadata

    if title:
        if score.metadata is None:
            score.metadata = metadata.Metadata()
        score.metadata.title = title

    with tempfile.TemporaryDirectory(prefix="abcgen-") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = score.write(fmt, fp=str(Path(tmp) / ("out" + suffix)))
        return Path(out).read_bytes()


def _unshare(score) -> None:
    """Give every measure its own copy of an object it shares with another one.

    music21's ABC parser puts one TimeSignature object into every measure where
    a meter comes back after a change; its MIDI writer then fails ("already
    found in this Stream") when it gathers them into the conductor track.
    """
    import copy

    from music21 import stream

    seen: set = set()
    for st in [score, *score.recurse(streamsOnly=True)]:
        for el in list(st.elements):
            if isinstance(el, stream.Stream):
                continue
            if id(el) in seen:
                st.replace(el, copy.deepcopy(el))
            else:
                seen.add(id(el))


def _untie_other_pitches(score) -> None:
    """Drop a tie to a note of another pitch (a slur written as a tie, ``G-E``).

    It joins nothing, as abcgen.sounding and abc2midi read it; music21's MIDI
    writer would hold the first pitch through both notes instead.
    """
    for part in list(score.parts) or [score]:
        notes = list(part.recurse().notes)
        for a, b in zip(notes, notes[1:]):
            if (a.tie is not None and a.tie.type in ("start", "continue") and not a.isChord
                    and not b.isChord and a.pitch.ps != b.pitch.ps):
                a.tie = None
        if notes and notes[-1].tie is not None and notes[-1].tie.type in ("start", "continue"):
            notes[-1].tie = None


def score_to_midi(score, *, title: str | None = None, expand_repeats: bool = True, log=None) -> bytes:
    """A Score as the bytes of a Standard MIDI File, through music21's MIDI writer.

    Format 1: a conductor track (tempo from ``Q:``, 120 bpm when there is
    none; time and key signatures; the title as the sequence name), then one
    track per part (voice, ``V:``), named after the part when it has a name,
    each on its own channel (drum channel 10 left out).  ``expand_repeats``:
    repeats and first/second endings are played out as ``sounding.played``
    does (where music21's expander rejects the marks, the tune is played as
    written, with a warning to ``log``); without it every note is played
    once, as written.  The score itself is not changed.
    """
    import copy

    from music21 import bar, repeat, spanner
    from music21.midi import ChannelVoiceMessages, DeltaTime, MetaEvents, MidiEvent, translate

    from .sounding import played

    if title is None and score.metadata is not None:
        title = score.metadata.title
    if expand_repeats:
        expanded = played(score, log)
        score = expanded if expanded is not score else copy.deepcopy(score)
    else:
        score = copy.deepcopy(score)
    # No repeat marks are left for music21's writer, which would expand them again.
    for s in [score, *score.recurse(streamsOnly=True)]:
        for el in list(s.getElementsByClass((spanner.RepeatBracket, repeat.RepeatExpression))):
            s.remove(el)
        if hasattr(s, "leftBarline"):
            if isinstance(s.leftBarline, bar.Repeat):
                s.leftBarline = None
            if isinstance(s.rightBarline, bar.Repeat):
                s.rightBarline = bar.Barline("regular")
    _unshare(score)
    _untie_other_pitches(score)
    parts = list(score.parts) if score.parts else [score]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mf = translate.streamToMidiFile(score)
    tracks = mf.tracks
    if title and tracks:
        conductor = tracks[0]
        me = MidiEvent(conductor)
        me.type = MetaEvents.SEQUENCE_TRACK_NAME
        me.data = title.encode("utf-8", "ignore")
        conductor.events[0:0] = [DeltaTime(conductor), me]
    channels = [c for c in range(16) if c != 9]
    for i, tr in enumerate(tracks[1:]):
        name = parts[i].partName if i < len(parts) else None
        ch = channels[i % len(channels)] + 1          # music21 counts channels from 1
        named = False
        for ev in tr.events:
            if isinstance(ev, DeltaTime):
                continue
            if ev.type == MetaEvents.SEQUENCE_TRACK_NAME and not named and name:
                ev.data = str(name).encode("utf-8", "ignore")
                named = True
            elif isinstance(ev.type, ChannelVoiceMessages):
                ev.channel = ch
    return mf.writestr()

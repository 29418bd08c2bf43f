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
from .fileio import atomic_write_bytes, atomic_write_text

ABC_EXTS = {".abc"}
MIDI_EXTS = {".mid", ".midi"}
XML_EXTS = {".musicxml", ".xml", ".mxl"}
IN_EXTS = ABC_EXTS | MIDI_EXTS | XML_EXTS
OUT_FORMATS = {"abc": ".abc", "mid": ".mid", "midi": ".mid", "musicxml": ".musicxml"}


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


def load_score(path: Path, midi_options: dict | None = None):
    """A MIDI or MusicXML file as a music21 Score; a one-line InputError when it cannot be read.

    MIDI goes through abcgen.midi (quantized to a grid, melody track, meter,
    key and pickup found); ``midi_options`` are its keyword arguments.
    """
    import music21

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
            fmt = "midi" if ext in MIDI_EXTS else "musicxml"
            score = music21.converter.parse(str(path), format=fmt)
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"cannot read as {ext[1:]} ({type(e).__name__}: {msg})", file=str(path)) from None
    if not score.recurse().notes:
        raise InputError("the file has no notes", file=str(path))
    return score


def scores_of(path: Path, failures: list[str], midi_options: dict | None = None):
    """(label, score, title) for every readable tune of a file; failures appended as lines."""
    ext = path.suffix.lower()
    if ext in ABC_EXTS:
        try:
            tunes = read_book(path)
        except AbcgenError as e:
            failures.append(str(e))
            return
        if not tunes:
            failures.append(f"{path}: no tune in this file")
        for t in tunes:
            try:
                yield f"{path} X:{t.x}", parse_tune(t), t.title
            except AbcgenError as e:
                failures.append(str(e))
    else:
        try:
            score = load_score(path, midi_options)
            title = (score.metadata.title if score.metadata is not None else None) or path.stem
            yield str(path), score, title
        except AbcgenError as e:
            failures.append(str(e))


def _abc_of(items) -> str | None:
    texts = [write_abc(s, index=i, title=title) for i, (_, s, title) in enumerate(items, 1)]
    return "\n".join(texts) if texts else None


def convert(inputs: list[str], *, to: str = "abc", output: Path | None = None,
            outdir: Path | None = None, log=None, midi_options: dict | None = None) -> list[str]:
    """Convert every input; returns the list of failures (empty when all went well)."""
    if output is not None and to == "abc" and output.suffix.lower() in (".mid", ".midi", ".musicxml", ".xml"):
        to = "mid" if output.suffix.lower() in MIDI_EXTS else "musicxml"
    if to not in OUT_FORMATS:
        raise InputError(f"unknown output format {to!r}; use one of abc, mid, musicxml")
    files, failures = expand_inputs(inputs)
    if not files and failures:
        raise InputError("; ".join(failures))
    ext = OUT_FORMATS[to]
    collected = []  # for -o FILE and stdout
    for f in files:
        items = []
        for label, score, title in scores_of(f, failures, midi_options):
            try:
                if to == "abc":
                    write_abc(score, index=1, title=title)  # fail here, per tune, not later
                items.append((label, score, title))
            except AbcgenError as e:
                failures.append(f"{label}: {e.message}")
        if not items:
            continue
        if outdir is not None:
            _write_items(items, outdir / (f.stem + ext), to, failures)
        else:
            collected.extend(items)
    if outdir is None and collected:
        if output is not None:
            _write_items(collected, output, to, failures)
        elif to == "abc":
            sys.stdout.write(_abc_of(collected))
            sys.stdout.flush()
        else:
            raise InputError(f"--to {to} writes files: give -o FILE or -O DIR")
    if log and files:
        log(f"converted {len(files)} file(s), {len(failures)} failure(s)")
    return failures


def _write_items(items, target: Path, to: str, failures: list[str]) -> None:
    try:
        if to == "abc":
            atomic_write_text(target, _abc_of(items))
            return
        fmt = "midi" if to in ("mid", "midi") else "musicxml"
        for i, (label, score, _title) in enumerate(items, 1):
            t = target if len(items) == 1 else target.with_name(f"{target.stem}-{i}{target.suffix}")
            try:
                tmp = score.write(fmt)
                atomic_write_bytes(t, Path(tmp).read_bytes())
            except Exception as e:
                failures.append(f"{label}: cannot write {t}: {type(e).__name__}: {e}")
    except OSError as e:
        failures.append(f"{target}: cannot write: {e.strerror or e}")

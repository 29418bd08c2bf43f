"""ABC tunes -> sheet music (SVG, PNG, PDF), MusicXML, MIDI, WAV and piano rolls.

music21 stays the hub: it parses the ABC and writes MusicXML and MIDI itself,
so what is engraved or played is exactly what the rest of abcgen sees.
Engraving goes through MusicXML into verovio, because music21's own engravers
need MuseScore or LilyPond, which are heavy to install; cairosvg turns
verovio's SVG into PNG and PDF, and pypdf joins single-page PDFs into one
book, as cairo's SVG converter writes one page per document.  Audio is
FluidSynth playing music21's MIDI through a General MIDI soundfont.

File naming, kept predictable so scripts can find the output:

* one tune (a book of one, or ``--tune N``): exactly the ``-o`` path;
* several tunes: ``name-X.ext`` for each tune, X its ``X:`` number (the
  position in the book instead, for every tune, when X numbers repeat or are
  not plain file-name text);
* PDF is the exception: one file, every tune starting on a new A4 page;
* an SVG or PNG tune longer than an A4 page: page 1 at the name above, then
  ``name-p2.ext``, ``name-p3.ext`` ...

MIDI, WAV and the piano roll play the repeats and endings out (music21's
``expandRepeats``), since they are what one hears; MusicXML and sheet music
keep them as notation.  Every file is written to a temporary file in its
folder and then renamed, so a crash never leaves half a file under the name.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import tempfile
import warnings
from math import lcm
from pathlib import Path
from typing import Callable, Optional

from .abc.reader import Tune, parse_tune, read_book
from .errors import AbcgenError, InputError
from .fileio import atomic_path, atomic_write_bytes
from .sounding import played, sounding_events

FORMATS = {
    ".svg": "svg",
    ".png": "png",
    ".pdf": "pdf",
    ".musicxml": "musicxml",
    ".xml": "musicxml",
    ".mid": "midi",
    ".midi": "midi",
    ".wav": "wav",
}

# A4 in verovio's units (tenths of a millimetre), so PDF pages are real A4.
_PAGE_WIDTH, _PAGE_HEIGHT = 2100, 2970
_VEROVIO_SCALE = 40           # SVG px = units * scale / 100: 840 px wide
_PNG_ZOOM = 2                 # 1680 px wide, about 200 dpi across A4
_PDF_DPI = _PAGE_WIDTH * _VEROVIO_SCALE / 100 * 25.4 / 210   # maps 840 px to 210 mm

SOUNDFONTS = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/default-GM.sf2",
    "/usr/share/soundfonts/FluidR3_GM.sf2",
    "/usr/share/soundfonts/default.sf2",
    "/usr/share/sounds/sf2/TimGM6mb.sf2",
)
_AUDIO_HINT = ("WAV output needs the fluidsynth command and a General MIDI soundfont "
               "(Debian/Ubuntu: apt-get install fluidsynth fluid-soundfont-gm; "
               "or set ABCGEN_SOUNDFONT to an .sf2 file)")

Log = Optional[Callable[[str], None]]


def supported_extensions() -> str:
    return ", ".join(FORMATS)


def format_of(path: str | Path) -> str:
    """The output format named by a path's extension; InputError listing the choices otherwise."""
    ext = Path(path).suffix.lower()
    if ext not in FORMATS:
        shown = repr(ext) if ext else "no extension"
        raise InputError(f"cannot tell the output format from {shown} in {str(path)!r}; "
                         f"use one of {supported_extensions()}")
    return FORMATS[ext]


# --------------------------------------------------------------------------- public API


# music21's ABC import beams every measure with a search that rebuilds a tree of the whole part
# (makeBeams -> getContextByClass), so its time grows with the square of the bars: 100 bars
# parse in about 1 s, 400 in 7 s, 2,000 in minutes.  Folk tunes have 8 to 64 bars.
MAX_BARS = 500


def bar_count(tune: Tune) -> int:
    """About how many bars a tune has: its bar lines outside header and comment lines."""
    import re

    n = 0
    for line in tune.text.split("\n"):
        if re.match(r"^\s*(%|[A-Za-z]:)", line):
            continue
        n += len(re.findall(r":*\|+[\]:]*|\[\|", line))
    return n


def check_length(tune: Tune) -> None:
    bars = bar_count(tune)
    if bars > MAX_BARS:
        raise InputError(f"the tune has about {bars} bars; abcgen renders at most {MAX_BARS} "
                         "(music21's reading time grows with the square of the bars: split the tune)",
                         file=tune.file, tune=tune.x, line=tune.line)


class RenderFailed(AbcgenError):
    """Some tunes of a book could not be rendered: the others were written.

    ``written``: the files written; ``failures``: one line per tune that
    failed.  Exit 1 when some tunes were rendered, 2 when none was and
    every failure was bad input.
    """

    def __init__(self, written: list[Path], failures: list[AbcgenError], total: int):
        self.written = written
        self.failures = [str(e) for e in failures]
        ok = total - len(failures)
        self.summary = f"rendered {ok} of {total} tune(s); {len(failures)} failed"
        super().__init__(f"{self.summary}: {self.failures[0]}"
                         + (f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""))
        if ok == 0 and all(isinstance(e, InputError) for e in failures):
            self.exit_code = 2


def render_file(abc_path: str | Path, out_path: str | Path, tune: int | str | None = None,
                pianoroll: bool = False, log: Log = None) -> list[Path]:
    """Render every tune of a book (or only ``X:tune``); return the files written.

    With ``pianoroll`` and a ``.png`` output the PNG is a piano roll instead of
    sheet music; with any other output a piano roll ``name-roll.png`` is drawn
    beside each file as well.  A tune that cannot be read or engraved does not
    stop the others: they are written, and RenderFailed then lists every
    failure.  An output that would be the input file is refused (exit 2)
    before anything is written.
    """
    from .fileio import refuse_overwrite

    out = Path(out_path)
    format_of(out)
    tunes = read_book(abc_path)
    return render_book(tunes, out, str(abc_path), tune=tune, pianoroll=pianoroll, log=log,
                       check=lambda outputs: refuse_overwrite(outputs, [abc_path]))


def render_book(tunes: list[Tune], out_path: str | Path, name: str, tune: int | str | None = None,
                pianoroll: bool = False, log: Log = None, check=None) -> list[Path]:
    """``render_file`` for tunes already in memory (``sample --render`` writes no temporary
    ABC file to read back); ``name`` is how messages call the book, ``check`` sees the output
    paths before anything is written."""
    out = Path(out_path)
    fmt = format_of(out)
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"the output folder {str(folder)!r} does not exist")

    tunes = _select(tunes, name, tune)
    roll_only = pianoroll and fmt == "png"
    paths = _tune_paths(out, tunes)
    roll_base = out if roll_only else out.with_name(out.stem + "-roll.png")
    roll_paths = _tune_paths(roll_base, tunes) if pianoroll else []
    if check is not None:
        check([out, *paths, *roll_paths])

    failures: list[AbcgenError] = []
    parsed = []
    for i, t in enumerate(tunes):
        try:
            check_length(t)
            parsed.append((i, t, parse_tune(t)))
        except AbcgenError as e:          # the reader's errors name the book line
            failures.append(e)

    written: list[Path] = []
    if fmt == "pdf":
        pages = []
        for _i, t, score in parsed:
            try:
                pages.extend(_pdf_pages(score, t))
            except AbcgenError as e:
                failures.append(e)
        if pages:
            _write_atomic(out, _join_pdfs(pages))
            written.append(out)
    elif not roll_only:
        for i, t, score in parsed:
            try:
                written.extend(_render_one(score, paths[i], fmt, t, log))
            except AbcgenError as e:
                failures.append(e)
    if pianoroll:
        for i, t, score in parsed:
            try:
                _write_atomic(roll_paths[i], pianoroll_png(score, title=_display_title(t), log=log))
                written.append(roll_paths[i])
            except AbcgenError as e:
                failures.append(e)
    if failures:
        failures.sort(key=lambda e: next((k for k, t in enumerate(tunes) if t.x == e.tune), len(tunes)))
        if len(failures) == 1 and not written:
            raise failures[0]          # one tune, one error: as it is, with its own exit code
        raise RenderFailed(written, failures, len(tunes))
    return written


def render_tune(score, out_path: str | Path, fmt: str | None = None) -> list[Path]:
    """Write one parsed tune in ``fmt`` (default: from the extension); return the files written.

    The list has more than one path only for SVG or PNG of a tune longer than a page.
    """
    out = Path(out_path)
    if fmt is None:
        fmt = format_of(out)
    elif fmt not in set(FORMATS.values()):
        raise InputError(f"unknown output format {fmt!r}; use one of "
                         f"{', '.join(sorted(set(FORMATS.values())))}")
    return _render_one(score, out, fmt, None, None)


def musicxml_bytes(score) -> bytes:
    """music21's MusicXML without the placeholders it invents for a missing title and composer.

    verovio prints the movement title, so an untitled tune would otherwise be
    headed "Music21 Fragment".
    """
    from music21 import defaults
    from music21.musicxml.m21ToXml import GeneralObjectExporter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = GeneralObjectExporter(score).parse()
    md = score.metadata
    if md is None or not md.title:
        data = data.replace(f"<movement-title>{defaults.title}</movement-title>".encode(), b"")
    if md is None or not md.composer:
        data = data.replace(f'<creator type="composer">{defaults.author}</creator>'.encode(), b"")
    return data


def midi_bytes(score, log: Log = None) -> bytes:
    from .convert import score_to_midi

    return score_to_midi(score, log=log)


def svg_pages(score, *, fit_height: bool = True, where: Tune | None = None) -> list[str]:
    """Engrave a score with verovio on A4-wide pages; one SVG string per page.

    ``fit_height`` trims the last page to the music (for screens); PDF keeps
    full A4 pages.
    """
    import verovio

    verovio.enableLog(verovio.LOG_OFF)   # its warnings would break the one-line CLI contract
    tk = verovio.toolkit()
    # verovio keeps its default resource (font) path per thread, set on import: in
    # any other thread (abcgen serve's workers) a toolkit must be told where they are.
    tk.setResourcePath(str(Path(verovio.__file__).parent / "data"))
    tk.setOptions({
        "pageWidth": _PAGE_WIDTH,
        "pageHeight": _PAGE_HEIGHT,
        "scale": _VEROVIO_SCALE,
        "adjustPageHeight": fit_height,
        "footer": "none",
        "header": "auto",
        "breaks": "auto",
    })
    if not tk.loadData(musicxml_bytes(score).decode("utf-8")):
        raise _runtime("verovio cannot engrave music21's MusicXML of this tune", where)
    n = tk.getPageCount()
    if n < 1:
        raise _runtime("verovio produced no page for this tune", where)
    return [tk.renderToSVG(i) for i in range(1, n + 1)]


def svg_to_png(svg: str) -> bytes:
    import cairosvg

    return cairosvg.svg2png(bytestring=svg.encode("utf-8"), scale=_PNG_ZOOM,
                            background_color="white")


def pianoroll_png(score, title: str = "", log: Log = None) -> bytes:
    """Pitch against time as an image.

    Each note stops a little short of its full length, so that repeated
    notes (``Bdd``) show as separate bars rather than one long one.
    """
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    heard = played(score, log)
    events = sounding_events(heard.stripTies())
    if not events:
        raise InputError("the tune has no notes to draw")
    # The coarsest grid on which every onset and end falls (triplets need
    # thirds, semiquavers quarters), four times finer for the gap; capped so
    # odd tuplets cannot blow it up.
    denom = 1
    for _, on, d in events:
        for q in (on, on + d):
            denom = lcm(denom, q.limit_denominator(48).denominator)
    cells = 4 * min(denom, 48)
    end = max(on + d for _, on, d in events)
    cols = max(1, round(end * cells))
    lo = min(p for p, _, _ in events) - 2
    hi = max(p for p, _, _ in events) + 2
    grid = np.zeros((hi - lo + 1, cols))
    for p, on, d in events:
        a = round(on * cells)
        b = max(a + 1, round((on + d) * cells) - 1)
        grid[p - lo, a:b] = 1.0

    width = float(min(24.0, max(8.0, float(end) * 0.12)))
    fig = Figure(figsize=(width, 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(grid, origin="lower", aspect="auto", interpolation="nearest", cmap="Greys",
              vmin=0.0, vmax=1.0, extent=(0, float(end), lo - 0.5, hi + 0.5))
    bars = _bar_offsets(heard, float(end))
    for x in bars[1:]:
        ax.axvline(x, color="0.75", linewidth=0.6, zorder=0)
    step = 1 if len(bars) <= 32 else 4
    ax.set_xticks(bars[::step], [str(i + 1) for i in range(0, len(bars), step)])
    cs = [m for m in range(lo, hi + 1) if m % 12 == 0]
    ax.set_yticks(cs, [f"C{m // 12 - 1}" for m in cs])
    for y in cs:
        ax.axhline(y, color="0.85", linewidth=0.5, zorder=0)
    ax.set_xlabel("bar (as played)")
    ax.set_ylabel("pitch")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def wav_file(score, out: Path, log: Log = None) -> None:
    """Play music21's MIDI through FluidSynth into a WAV file (44.1 kHz, 16-bit stereo)."""
    exe = shutil.which("fluidsynth")
    if exe is None:
        raise InputError(f"fluidsynth not found: {_AUDIO_HINT}")
    sf2 = find_soundfont()
    with tempfile.TemporaryDirectory(prefix="abcgen-render-") as tmp:
        mid = Path(tmp) / "tune.mid"
        mid.write_bytes(midi_bytes(score, log))
        with atomic_path(out) as tmp_wav:
            try:
                proc = subprocess.run(
                    [exe, "-n", "-i", "-q", "-F", str(tmp_wav), "-T", "wav", "-O", "s16",
                     "-r", "44100", "-g", "0.8", sf2, str(mid)],
                    stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
            except subprocess.TimeoutExpired:
                raise AbcgenError("fluidsynth took over 10 minutes; gave up", file=str(out)) from None
            if proc.returncode != 0 or not tmp_wav.exists() or tmp_wav.stat().st_size <= 44:
                said = (proc.stderr or proc.stdout).strip().splitlines()
                raise AbcgenError("fluidsynth failed" + (f": {said[-1]}" if said else
                                                         f" (exit {proc.returncode})"),
                                  file=str(out))


def find_soundfont() -> str:
    env = os.environ.get("ABCGEN_SOUNDFONT")
    if env:
        if not Path(env).is_file():
            raise InputError(f"ABCGEN_SOUNDFONT={env!r} is not a file")
        return env
    for cand in SOUNDFONTS:
        if Path(cand).is_file():
            return cand
    raise InputError(f"no soundfont found in {', '.join(SOUNDFONTS)}: {_AUDIO_HINT}")


# --------------------------------------------------------------------------- internals


def _render_one(score, out: Path, fmt: str, where: Tune | None, log: Log) -> list[Path]:
    if fmt in ("svg", "png"):
        pages = svg_pages(score, fit_height=True, where=where)
        paths = [out] + [out.with_name(f"{out.stem}-p{k}{out.suffix}")
                         for k in range(2, len(pages) + 1)]
        for svg, path in zip(pages, paths):
            _write_atomic(path, svg.encode("utf-8") if fmt == "svg" else svg_to_png(svg))
        return paths
    if fmt == "musicxml":
        _write_atomic(out, musicxml_bytes(score))
    elif fmt == "midi":
        _write_atomic(out, midi_bytes(score, log))
    elif fmt == "wav":
        wav_file(score, out, log)
    elif fmt == "pdf":
        _write_atomic(out, _join_pdfs(_pdf_pages(score, where)))
    else:  # pragma: no cover - FORMATS and this dispatch disagree
        raise InputError(f"unknown output format {fmt!r}")
    return [out]


def _pdf_pages(score, where: Tune | None) -> list[bytes]:
    import cairosvg

    return [cairosvg.svg2pdf(bytestring=svg.encode("utf-8"), dpi=_PDF_DPI)
            for svg in svg_pages(score, fit_height=False, where=where)]


def _join_pdfs(pages: list[bytes]) -> bytes:
    if len(pages) == 1:
        return pages[0]
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    for data in pages:
        writer.append(PdfReader(io.BytesIO(data)))
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


def _select(tunes: list[Tune], file: str, wanted: int | str | None) -> list[Tune]:
    if not tunes:
        raise InputError("no tunes in this file", file=file)
    if wanted is None:
        return tunes
    chosen = [t for t in tunes if _same_x(t.x, wanted)]
    if not chosen:
        have = ", ".join(f"X:{t.x}" for t in tunes[:20]) + (" ..." if len(tunes) > 20 else "")
        raise InputError(f"no tune X:{wanted} (the file has {have})", file=file)
    return chosen[:1]   # a book that repeats an X number: the first, as abc2midi does


def _same_x(x: str, wanted: int | str) -> bool:
    try:
        return int(x) == int(wanted)
    except (TypeError, ValueError):
        return str(x) == str(wanted)


_SAFE_X = re.compile(r"^[A-Za-z0-9_.]+$")


def _tune_paths(out: Path, tunes: list[Tune]) -> list[Path]:
    if len(tunes) == 1:
        return [out]
    xs = [t.x for t in tunes]
    if len(set(xs)) != len(xs) or not all(_SAFE_X.match(x) for x in xs):
        xs = [str(i) for i in range(1, len(tunes) + 1)]
    return [out.with_name(f"{out.stem}-{x}{out.suffix}") for x in xs]


def _display_title(t: Tune) -> str:
    return f"{t.title}  (X:{t.x})" if t.title else f"X:{t.x}"


def _bar_offsets(stream, end: float) -> list[float]:
    """Where bars start; music21 leaves some tunes unbarred, then the meter decides."""
    from music21 import meter
    from music21 import stream as m21stream

    parts = list(stream.parts) or [stream]
    found = [float(m.getOffsetInHierarchy(stream))
             for m in parts[0].recurse().getElementsByClass(m21stream.Measure)]
    if found:
        return found
    ts = next(iter(stream.recurse().getElementsByClass(meter.TimeSignature)), None)
    bar = float(ts.barDuration.quarterLength) if ts is not None else 4.0
    n = max(1, int(end / bar + 0.999))
    return [i * bar for i in range(n)]


def _runtime(msg: str, where: Tune | None) -> AbcgenError:
    if where is None:
        return AbcgenError(msg)
    return AbcgenError(msg, file=where.file, tune=where.x, line=where.line)


def _write_atomic(path: Path, data: bytes) -> None:
    try:
        atomic_write_bytes(path, data)
    except OSError as e:
        raise InputError(f"cannot write: {e.strerror or e}", file=str(path)) from None

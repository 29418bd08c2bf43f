"""The ``abcgen render`` command.

A module of its own so the rendering options live apart from cli.py; cli.py
imports it at its end, which registers the command on the shared app.
music21, verovio and cairo are imported only when the command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .cli import app, fail, handled, log  # noqa: F401  (fail: same contract as the other commands)


@app.command()
@handled
def render(
    tune_file: Path = typer.Argument(..., help="An ABC file: one tune or a book of tunes."),
    output: Path = typer.Option(
        ..., "-o", "--output",
        help="Output file; its extension picks the format: .svg .png .pdf .musicxml .xml "
             ".mid .midi .wav.  A book writes NAME-X.EXT per tune (X: its X number), "
             "except PDF: one file."),
    tune: Optional[int] = typer.Option(None, "--tune", help="Render only the tune with this X: number."),
    pianoroll: bool = typer.Option(
        False, "--pianoroll",
        help="Draw a piano roll: instead of the sheet music with a .png output, "
             "else as NAME-roll.png beside it."),
):
    """Engrave ABC tunes as sheet music, MusicXML, MIDI or WAV audio."""
    from . import render as render_mod

    try:
        written = render_mod.render_file(tune_file, output, tune=tune, pianoroll=pianoroll, log=log)
    except render_mod.RenderFailed as e:  # the good tunes are written; every failure listed
        for path in e.written:
            log(f"wrote {path}")
        log(f"abcgen: {len(e.failures)} failure(s):")
        for f in e.failures:
            log(f"  {f}")
        fail(f"{tune_file}: {e.summary}", e.exit_code)
    for path in written:
        log(f"wrote {path}")

"""Commands that serve the studio: engrave tunes (render) and the local web studio (serve).

music21, verovio, cairo, FastAPI and uvicorn are imported only when a command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import fail, handled, log


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
    from .. import render as render_mod

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


_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _check_free(host: str, port: int) -> None:
    """Fail with one line now if the address cannot be listened on (uvicorn would print a log line and exit 3)."""
    import socket

    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as e:
        fail(f"cannot listen on {host}:{port}: {e.strerror or e}", 1)


@handled
def serve(
    host: str = typer.Option("127.0.0.1", "--host",
                             help="Address to listen on; anything but 127.0.0.1 lets other machines in."),
    port: int = typer.Option(8000, "--port", "-p", help="TCP port."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Run directory or .npz (default: the shipped model)."),
    timeout: float = typer.Option(60.0, "--timeout", help="Seconds one request may take before it is stopped."),
    workers: int = typer.Option(2, "--workers", help="Threads that sample and render."),
):
    """A local web studio: generate tunes, read the sheet music, hear them, download them."""
    # One BLAS thread per worker: the workers already share the cores (abcgen.threads).
    from ..threads import set_blas_threads

    set_blas_threads(1, shared=True)
    if not 0 < port < 65536:
        fail("--port must be between 1 and 65535")
    if timeout <= 0:
        fail("--timeout must be positive")
    if workers < 1:
        fail("--workers must be at least 1")
    import uvicorn

    from ..serve import create_app

    _check_free(host, port)
    web = create_app(model, timeout=timeout, workers=workers, host=host)
    if host not in _LOOPBACK:
        log(f"abcgen: warning: listening on {host}: other machines can reach the studio")
    shown = f"[{host}]" if ":" in host else host
    log(f"abcgen studio: http://{shown}:{port}/  (model {web.state.studio.model.name}; Ctrl-C stops)")
    uvicorn.run(web, host=host, port=port, log_level="warning")

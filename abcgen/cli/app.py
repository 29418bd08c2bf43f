"""The ``abcgen`` command line.

Thin on purpose: each command parses its options and calls a module.  Heavy
imports (music21, TensorFlow) happen inside the commands, so ``abcgen --help``
is instant.  Tune text goes to stdout; logs and progress go to stderr.
Exit codes: 0 success, 1 failure at run time, 2 bad usage or bad input.
"""

from __future__ import annotations

import typer

from .. import __version__
from . import data, model, studio
from .common import _state

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Learn folk tunes in ABC notation and write new ones.",
)


def _version(value: bool):
    if value:
        print(f"abcgen {__version__}")
        raise typer.Exit(0)


@app.callback()
def main(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
):
    """Learn folk tunes in ABC notation and write new ones."""
    _state["debug"] = debug


# The commands, in the order --help lists them; each module groups the commands of one purpose.
for fn in (data.prepare, data.convert, model.train, model.evaluate, model.sample, model.export,
           studio.render, studio.serve):
    app.command()(fn)
app.add_typer(data.check_app, name="check")
app.add_typer(model.bench_app, name="bench")

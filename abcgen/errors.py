"""One exception class per failure mode; the CLI turns them into one-line messages.

Every error carries where it happened (file, tune, line) so the message can say
it without a traceback.  ``exit_code`` follows the CLI contract: 2 for bad input
or usage, 1 for a failure at run time.
"""

from __future__ import annotations


class AbcgenError(Exception):
    exit_code = 1

    def __init__(self, message: str, *, file: str | None = None,
                 tune: str | int | None = None, line: int | None = None):
        super().__init__(message)
        self.message = message
        self.file = file
        self.tune = tune
        self.line = line

    def where(self) -> str:
        parts = []
        if self.file:
            parts.append(str(self.file) + (f":{self.line}" if self.line else ""))
        elif self.line:
            parts.append(f"line {self.line}")
        if self.tune is not None:
            parts.append(f"tune X:{self.tune}")
        return " ".join(parts)

    def __str__(self) -> str:
        w = self.where()
        return f"{w}: {self.message}" if w else self.message


class InputError(AbcgenError):
    """Bad input from the user: a file that cannot be read, an unknown option value."""
    exit_code = 2


class AbcParseError(InputError):
    """music21 could not parse a tune, or it parsed to no notes."""


class WriterError(AbcgenError):
    """A Stream holds something the canonical writer cannot express in ABC."""
    exit_code = 2


class TokenizeError(InputError):
    """Text holds a symbol outside the grammar or the vocabulary."""

    def __init__(self, message: str, *, position: int | None = None, **kw):
        super().__init__(message, **kw)
        self.position = position


class CorpusError(InputError):
    """A corpus manifest or source that cannot be used."""

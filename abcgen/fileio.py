"""Atomic file writes: a reader never sees a half-written file."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def plain_mode(path: str | Path) -> None:
    """The mode a plain open() gives (0644 under the usual umask): mkstemp makes 0600."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary name beside ``path`` that becomes ``path`` only if the block succeeds.

    The one atomic write of abcgen: same folder (the rename never crosses file systems),
    the target's suffix kept (Keras wants ``.keras``), the mode of a plain open(), and the
    temporary file removed whatever happens.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=folder)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        if tmp.is_file():
            plain_mode(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename over the target."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


class AtomicTextWriter:
    """Text written piece by piece to a temporary file beside ``path``; renamed over it on commit().

    The temporary file is made on the first write, so a writer that never
    writes leaves nothing behind and ``path`` untouched; discard() removes it.
    Streaming: memory does not grow with what is written.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._f = None
        self._tmp = None
        self.written = 0

    def write(self, text: str) -> None:
        if self._f is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, self._tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp",
                                             dir=self.path.parent)
            self._f = os.fdopen(fd, "w", encoding="utf-8", newline="")
        self._f.write(text)
        self.written += 1

    def commit(self) -> bool:
        """Rename the written text over ``path``; False (nothing done) when nothing was written."""
        if self._f is None:
            return False
        try:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
            plain_mode(self._tmp)
            os.replace(self._tmp, self.path)
        except BaseException:
            self.discard()
            raise
        self._f = self._tmp = None
        return True

    def discard(self) -> None:
        if self._f is not None:
            try:
                self._f.close()
            except OSError:
                pass
            try:
                os.unlink(self._tmp)
            except OSError:
                pass
        self._f = self._tmp = None


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name the same file (links and ``..`` resolved); False when either is missing."""
    a, b = Path(a), Path(b)
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def refuse_overwrite(outputs, inputs, what: str = "output") -> None:
    """InputError (exit 2) when an output path names one of the input files: nothing is written."""
    from .errors import InputError

    ins = [Path(i) for i in inputs]
    for out in outputs:
        for i in ins:
            if same_file(out, i):
                raise InputError(f"the {what} {out} is the input file {i}: refusing to write over an "
                                 "input; choose another name", file=None)


def check_writable_dir(path: str | Path, option: str) -> None:
    """InputError (exit 2) now, before any work, when files cannot be written in the folder ``path``.

    The folder need not exist yet: its nearest existing parent must then be a
    writable folder (nothing is created here).
    """
    import tempfile as _tf

    from .errors import InputError

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{option} {path} is a file, not a folder")
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(f"{option} {path}: {probe} is a file, not a folder")
    try:
        with _tf.NamedTemporaryFile(dir=probe, prefix=".write-test-"):
            pass
    except OSError as e:
        raise InputError(f"{option} {path} is not writable: {e.strerror or e}") from None

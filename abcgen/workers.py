"""A pool of worker processes with a time limit per item.

``multiprocessing.Pool`` cannot stop one task: a tune that sends music21 into
a loop would hold its worker, and the whole command, forever.  Here each
worker has its own pipe and gets one item at a time; the parent watches the
clock, and a worker past its item's deadline is killed (with its process
group, so a child such as abc2midi goes too) and replaced, and the item gets
``on_timeout(item, partial)``.  A worker may send partial results before it
finishes (:func:`send_partial`), which then survive a timeout.

Workers are forked (where the platform can), so modules imported by the parent
before the call, such as music21, are not imported again.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections import deque
from typing import Callable

_conn = None          # the worker's pipe, set in the worker process
_index = None         # the item it works on


def send_partial(data: dict) -> None:
    """From inside fn: results so far, kept if the item later times out."""
    if _conn is not None:
        _conn.send(("partial", _index, data))


def _worker(conn, fn) -> None:
    global _conn, _index
    try:
        os.setpgrp()   # its own process group: a kill also ends its children
    except OSError:
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the parent handles Ctrl-C
    _conn = conn
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        _index, item = msg
        try:
            res = ("done", _index, fn(item))
        except Exception as e:  # fn should catch its own; anything else is reported, not fatal
            res = ("error", _index, f"{type(e).__name__}: {e}")
        conn.send(res)


class _Slot:
    def __init__(self, ctx, fn):
        parent, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_worker, args=(child, fn), daemon=True)
        self.proc.start()
        child.close()
        self.conn = parent
        self.index = None
        self.deadline = None

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (OSError, AttributeError):
            self.proc.kill()
        self.proc.join(5)
        self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except (OSError, BrokenPipeError):
            pass
        self.proc.join(2)
        if self.proc.is_alive():
            self.kill()
        else:
            self.conn.close()


def timed_map(fn: Callable, items: list, *, jobs: int = 0, timeout: float | None = 20.0,
              on_timeout: Callable = None, on_error: Callable = None, progress=None) -> list:
    """[fn(item) for item in items], in worker processes, each item within ``timeout`` seconds.

    on_timeout(item, partial) and on_error(item, partial, message) give the result of an
    item that ran out of time or whose worker failed; ``progress`` (if given) is called
    once per finished item.
    """
    import multiprocessing as mp
    from multiprocessing.connection import wait

    if not items:
        return []
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(items)))
    ctx = mp.get_context("fork") if sys.platform != "win32" else mp.get_context()
    results: list = [None] * len(items)
    partial: dict = {}
    todo = deque(range(len(items)))
    slots = [_Slot(ctx, fn) for _ in range(jobs)]
    left = len(items)

    def finish(i, value):
        nonlocal left
        results[i] = value
        left -= 1
        partial.pop(i, None)
        if progress:
            progress()

    def fail(slot, why):
        i = slot.index
        slot.kill()
        if why == "timeout":
            finish(i, on_timeout(items[i], partial.get(i, {})) if on_timeout else None)
        else:
            finish(i, on_error(items[i], partial.get(i, {}), why) if on_error else None)
        return _Slot(ctx, fn)

    try:
        while left:
            for s in slots:
                if s.index is None and todo:
                    s.index = todo.popleft()
                    s.conn.send((s.index, items[s.index]))
                    s.deadline = None if timeout is None else time.monotonic() + timeout
            busy = [s for s in slots if s.index is not None]
            deadlines = [s.deadline for s in busy if s.deadline is not None]
            wait_s = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            ready = wait([s.conn for s in busy], wait_s)
            for k, s in enumerate(slots):
                if s.index is None or s.conn not in ready:
                    continue
                try:
                    kind, i, data = s.conn.recv()
                except (EOFError, OSError):
                    slots[k] = fail(s, "the worker process died (out of memory or a crash)")
                    continue
                if kind == "partial":
                    partial.setdefault(i, {}).update(data)
                elif kind == "done":
                    finish(i, data)
                    s.index = None
                else:             # fn raised: the worker itself is fine
                    finish(i, on_error(items[i], partial.get(i, {}), data) if on_error else None)
                    s.index = None
            now = time.monotonic()
            for k, s in enumerate(slots):
                if s.index is not None and s.deadline is not None and now >= s.deadline:
                    slots[k] = fail(s, "timeout")
    finally:
        for s in slots:
            if s.index is None:
                s.stop()
            else:
                s.kill()
    return results

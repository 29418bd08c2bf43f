"""How many BLAS threads a NumPy sampling process should use, chosen before NumPy loads.

Two BLAS threads on two cores that another process keeps busy spin against each other (a
64 x 512 by 512 x 2048 product went from about 1 ms to 26 ms), and the products of a few tunes
are too small to share.  And the sampler runs its LSTM step in a thread of its own while its
sampling thread builds the masks (abcgen.sample._Pipeline), so that thread keeps a core busy as
the product runs.  So: one thread below a batch of 8 tunes; otherwise one per core that other
processes leave free (measured over 50 ms), less the core of the sampling thread, at least one.
On two idle cores, `OPENBLAS_NUM_THREADS=1 abcgen bench sample --model default` gave 25,100-27,100
tokens/s at 64 tunes, two threads 17,100-18,700.
"""

from __future__ import annotations

import os

BLAS_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

#: Below this many tunes at once, one thread (the per-token products are too small to share).
BATCH_FOR_THREADS = 8


def _cpu_times() -> list[int]:
    """The machine's CPU time counters (user, nice, system, idle, iowait, ...) from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as f:
        return [int(x) for x in f.readline().split()[1:]]


def busy_cores(interval: float = 0.05) -> float | None:
    """How many cores other processes keep busy now, measured over ``interval`` seconds (None
    where /proc/stat is missing).  The load average would say it too, but it trails a process
    that has just started by up to a minute."""
    import time

    try:
        a = _cpu_times()
        time.sleep(interval)
        b = _cpu_times()
    except (OSError, ValueError, IndexError):
        return None
    total = sum(b) - sum(a)
    idle = (b[3] + b[4]) - (a[3] + a[4]) if len(a) > 4 else b[3] - a[3]
    if total <= 0:
        return None
    return (1.0 - idle / total) * (os.cpu_count() or 1)


def free_cores() -> int:
    """Cores not already busy, at least 1: the core count less what other processes use now
    (busy_cores), or less the 1-minute load average where that cannot be measured."""
    cores = os.cpu_count() or 1
    busy = busy_cores()
    if busy is None:
        try:
            busy = os.getloadavg()[0]
        except (OSError, AttributeError):  # not on every platform
            busy = 0.0
    return max(1, min(cores, cores - int(busy + 0.5)))


def _running() -> int:
    """Threads running or ready to run on the machine now (the reader included): the 4th
    field of /proc/loadavg, 'running/total'."""
    with open("/proc/loadavg", encoding="ascii") as f:
        return int(f.read().split()[3].split("/")[0])


def spare_core(reads: int = 3) -> bool:
    """Is a core free beside the one the caller runs on, now?  From the count of threads
    ready to run, read a few times (a snapshot: free, unlike busy_cores' 50 ms; the most
    of the reads, so a busy process that happens to wait at one read still counts).  The
    sampler asks it before it steps one tune's LSTM in a second thread: with no free core
    the two threads would take turns on one and add their handovers.  Where /proc/loadavg
    is missing: whether the machine has two cores."""
    cores = os.cpu_count() or 1
    if cores < 2:
        return False
    try:
        others = max(_running() for _ in range(reads)) - 1
    except (OSError, ValueError, IndexError):
        return True
    return others <= cores - 2


def blas_threads(batch: int) -> int:
    """One below BATCH_FOR_THREADS tunes, else the free cores less the sampling thread's."""
    return 1 if batch < BATCH_FOR_THREADS else max(1, free_cores() - 1)


def set_blas_threads(batch: int) -> int:
    """Set the BLAS thread variables for a batch of ``batch`` tunes unless the user set them.

    Only effective before NumPy is first imported; returns the number chosen."""
    n = blas_threads(batch)
    for var in BLAS_VARS:
        os.environ.setdefault(var, str(n))
    return n

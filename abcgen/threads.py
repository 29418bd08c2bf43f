"""How many BLAS threads a NumPy sampling process should use, chosen before NumPy loads.

Two BLAS threads on two cores that another process keeps busy spin against each other (a
64 x 512 by 512 x 2048 product went from about 1 ms to 26 ms): threads only on free cores.

A batch (FEW_TUNES tunes or more) runs its LSTM step in a thread of its own while its sampling
thread builds the masks (abcgen.sample._Pipeline), so that thread keeps a core busy as the
product runs.  So from BATCH_FOR_THREADS tunes one BLAS thread per core that other processes
leave free (measured over 50 ms), less the core of the sampling thread, at least one; below
it one.  On two idle cores, `OPENBLAS_NUM_THREADS=1 abcgen bench sample --model default` gave
25,100-27,100 tokens/s at 64 tunes, two threads 17,100-18,700.

One to three tunes are the other way round: their product is matrix-vector, bound by memory
(the 4 MB recurrent kernel streamed once a token), and split across two cores each streams
half of it: 40 us against 150 us on one (NumpyLSTM._recurrent_into).  The masks of a few tunes
are a small share of a step, so they run in turn with the product (no step thread) and two
BLAS threads take both cores, where the second is free now (spare_core); where it is not, one.
"""

from __future__ import annotations

import os
import time

BLAS_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

#: Below this many tunes the sampler steps the LSTM in turn with the masks, and two BLAS
#: threads split the products where a core is free (abcgen.sample.OVERLAP_MIN_BATCH).
FEW_TUNES = 4
#: From this many tunes at once, a batch: the free cores less the sampling thread's.
BATCH_FOR_THREADS = 8


def _cpu_times() -> list[int]:
    """The machine's CPU time counters (user, nice, system, idle, iowait, ...) from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as f:
        return [int(x) for x in f.readline().split()[1:]]


def busy_cores(interval: float = 0.05) -> float | None:
    """How many cores other processes keep busy now, measured over ``interval`` seconds (None
    where /proc/stat is missing).  The load average would say it too, but it trails a process
    that has just started by up to a minute."""
    try:
        a, own_a = _cpu_times(), _own_cpu()
        time.sleep(interval)
        b, own_b = _cpu_times(), _own_cpu()
    except (OSError, ValueError, IndexError):
        return None
    total = sum(b) - sum(a)
    idle = (b[3] + b[4]) - (a[3] + a[4]) if len(a) > 4 else b[3] - a[3]
    if total <= 0:
        return None
    # this process's own threads are no other process (a BLAS thread of its own spins on for
    # a while after a product: OpenBLAS waits for the next one busily)
    return max(0.0, 1.0 - (idle + own_b - own_a) / total) * (os.cpu_count() or 1)


def _own_cpu() -> int:
    """This process's CPU time (user + system) in the ticks of /proc/stat, from /proc/self/stat."""
    with open("/proc/self/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


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


def _own_running() -> int:
    """Threads of this process running or ready to run now (the reader included, so at least
    one): the state field of /proc/self/task/*/stat."""
    n = 0
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat", encoding="ascii") as f:
                n += f.read().rsplit(")", 1)[1].split()[0] == "R"
        except OSError:          # the thread ended meanwhile
            continue
    return max(n, 1)


def spare_core(reads: int = 5, gap: float = 0.0) -> bool:
    """Is a core free beside the one the caller runs on, now?  From the count of threads
    ready to run, read a few times (a snapshot: free, unlike busy_cores' 50 ms; the median
    of the reads, so neither a kernel thread that runs at one read nor a busy process that
    happens to wait at one changes the answer; ``gap`` seconds apart, so that neither does
    a process that runs for a moment, such as the reader of this process's output).  The
    sampler asks it before it steps one tune's LSTM in a second thread: with no free core
    the two threads would take turns on one and add their handovers.  The caller's own
    threads do not count (a BLAS thread of its own may spin on after a product).  Where
    /proc/loadavg is missing: whether the machine has two cores."""
    cores = os.cpu_count() or 1
    if cores < 2:
        return False
    try:
        seen = []
        for k in range(reads):
            if k and gap:
                time.sleep(gap)
            seen.append(_running() - _own_running())
        others = sorted(seen)[reads // 2]
    except (OSError, ValueError, IndexError):
        return True
    return others <= cores - 2


def blas_threads(batch: int, shared: bool = False) -> int:
    """Below FEW_TUNES tunes two where a core is free beside the caller's (spare_core, reads
    over 12 ms), else one; up to BATCH_FOR_THREADS one (the step thread runs beside the
    sampling thread: on two cores, two BLAS threads more made 5 and 7 tunes 6 % and 21 %
    slower); a batch the free cores less the sampling thread's.  ``shared``: the process
    samples in several threads at once (the studio's workers), which share the cores
    already: one."""
    if shared:
        return 1
    if batch < FEW_TUNES:
        return 2 if spare_core(gap=0.003) else 1
    if batch < BATCH_FOR_THREADS:
        return 1
    return max(1, free_cores() - 1)


def current_blas_threads() -> int:
    """The BLAS threads this process runs with: the first of BLAS_VARS that is set (as
    set_blas_threads leaves them), else OpenBLAS's default, one per core."""
    for var in BLAS_VARS:
        try:
            return max(1, int(os.environ[var]))
        except (KeyError, ValueError):
            continue
    return os.cpu_count() or 1


def set_blas_threads(batch: int, shared: bool = False) -> int:
    """Set the BLAS thread variables for a batch of ``batch`` tunes (``shared``: see
    blas_threads) unless the user set them.

    Only effective before NumPy is first imported; returns the number chosen."""
    n = blas_threads(batch, shared)
    for var in BLAS_VARS:
        os.environ.setdefault(var, str(n))
    return n

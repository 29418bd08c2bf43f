"""How many BLAS threads a NumPy sampling process should use, chosen before NumPy loads.

Two BLAS threads on two cores that another process keeps busy spin against each other (a
64 x 512 by 512 x 2048 product went from about 1 ms to 26 ms), and the products of a few tunes
are too small to share.  So: one thread below a batch of 8 tunes; otherwise one per core that
the load average leaves free, at least one.
"""

from __future__ import annotations

import os

BLAS_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

#: Below this many tunes at once, one thread (the per-token products are too small to share).
BATCH_FOR_THREADS = 8


def free_cores() -> int:
    """Cores not already busy: the core count less the 1-minute load average, at least 1."""
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):  # not on every platform
        load = 0.0
    return max(1, min(cores, cores - int(load + 0.5)))


def blas_threads(batch: int) -> int:
    return 1 if batch < BATCH_FOR_THREADS else free_cores()


def set_blas_threads(batch: int) -> int:
    """Set the BLAS thread variables for a batch of ``batch`` tunes unless the user set them.

    Only effective before NumPy is first imported; returns the number chosen."""
    n = blas_threads(batch)
    for var in BLAS_VARS:
        os.environ.setdefault(var, str(n))
    return n

"""BLAS thread counts: one for a few tunes, never more than the free cores less the sampler's own."""

import os
import subprocess
import sys

import pytest

from abcgen import threads


@pytest.mark.parametrize("cores,load,spare,batch,want", [
    (2, 0.0, True, 1, 2),      # one tune, a core free beside it: two split its product
    (2, 0.0, False, 1, 1),     # ... none free: one
    (2, 0.0, True, 3, 2),
    (16, 0.0, True, 3, 2),     # a few tunes: two at most
    (2, 0.0, True, 4, 1),      # from four tunes the step thread runs beside the masks: one
    (16, 0.0, True, 7, 1),
    (2, 0.0, True, 64, 1),     # a batch on two idle cores: one, the other runs the sampling thread
    (4, 0.0, True, 64, 3),     # every core but the sampling thread's
    (2, 1.2, False, 64, 1),    # another busy process: still one
    (2, 5.0, False, 64, 1),    # overloaded: still one
    (16, 3.4, True, 64, 12),   # 13 free, less the sampling thread's
])
def test_blas_threads(monkeypatch, cores, load, spare, batch, want):
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    monkeypatch.setattr(threads, "busy_cores", lambda: load)
    monkeypatch.setattr(threads, "spare_core", lambda **kw: spare)
    assert threads.blas_threads(batch) == want
    assert threads.blas_threads(batch, shared=True) == 1     # the studio's workers share the cores
    # where the busy cores cannot be measured, the load average says the same
    monkeypatch.setattr(threads, "busy_cores", lambda: None)
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    assert threads.blas_threads(batch) == want


def test_busy_cores_reads_the_cpu_counters(monkeypatch):
    """Two reads of /proc/stat 50 ms apart: the share of time not idle, in cores."""
    reads = iter([[100, 0, 50, 800, 50, 0, 0], [160, 0, 70, 900, 70, 0, 0]])
    monkeypatch.setattr(threads, "_cpu_times", lambda: next(reads))
    monkeypatch.setattr(threads, "_own_cpu", lambda: 7)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    # 200 ticks passed, 120 of them idle or iowait: 40 % busy of 2 cores
    assert threads.busy_cores(interval=0) == pytest.approx(0.8)
    # 30 of the 80 busy ticks were this process's own: 25 % of 2 cores busy with others
    reads = iter([[100, 0, 50, 800, 50, 0, 0], [160, 0, 70, 900, 70, 0, 0]])
    own = iter([40, 70])
    monkeypatch.setattr(threads, "_cpu_times", lambda: next(reads))
    monkeypatch.setattr(threads, "_own_cpu", lambda: next(own))
    assert threads.busy_cores(interval=0) == pytest.approx(0.5)


def test_own_counters_read_this_process():
    if not os.path.exists("/proc/self/stat"):
        pytest.skip("needs /proc")
    import time

    a = threads._own_cpu()
    end = time.process_time() + 0.1
    while time.process_time() < end:
        pass
    assert threads._own_cpu() - a >= 5         # 0.1 s of CPU at 100 ticks a second, give or take
    assert threads._own_running() == 1         # the reader; no other thread of this test runs


def test_a_spinning_process_is_seen_at_once():
    """A process that has just started spinning counts as a busy core (the load average would
    take a minute to say so)."""
    import time

    if not os.path.exists("/proc/stat") or (os.cpu_count() or 1) < 2:
        pytest.skip("needs /proc/stat and two cores")
    quiet = threads.busy_cores(0.2)
    if quiet > (os.cpu_count() or 1) - 1.2:
        pytest.skip(f"the machine is too busy ({quiet:.1f} cores) to see one more process")
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        busy = threads.busy_cores(0.3)
    finally:
        spin.kill()
        spin.wait()
    assert busy >= quiet + 0.6, (quiet, busy)


def test_the_user_choice_wins_and_numpy_sees_it():
    script = ("import os\nfrom abcgen import threads\n"
              "n = threads.set_blas_threads(64, shared=True)\n"
              "import numpy\n"
              "print(n, os.environ['OPENBLAS_NUM_THREADS'], threads.current_blas_threads())\n")
    env = dict(os.environ)
    for v in threads.BLAS_VARS:
        env.pop(v, None)
    r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert r.stdout.split() == ["1", "1", "1"], r.stderr
    env["OPENBLAS_NUM_THREADS"] = "3"
    r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert r.stdout.split() == ["1", "3", "3"], r.stderr


def test_current_blas_threads_reads_the_first_variable_set(monkeypatch):
    for v in threads.BLAS_VARS:
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert threads.current_blas_threads() == 6            # OpenBLAS's default: every core
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert threads.current_blas_threads() == 4
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    assert threads.current_blas_threads() == 2


@pytest.mark.parametrize("cores,running,own,want", [
    (2, [1, 1, 1], 1, True),        # only the reader runs: the second core is free
    (2, [2, 1, 1], 1, True),        # another thread ran at one of the reads only (a kernel thread)
    (2, [2, 1, 2], 1, False),       # ... at most of them: a busy process
    (2, [3, 3, 3], 1, False),
    (2, [2, 2, 2], 2, True),        # the other one is this process's own (a spinning BLAS thread)
    (1, [1, 1, 1], 1, False),       # one core: nothing beside the reader
    (16, [9, 12, 14], 1, True),     # 13 others: the 16th core is free
    (16, [16, 17, 1], 1, False),
])
def test_spare_core_reads_the_threads_ready_to_run(monkeypatch, cores, running, own, want):
    reads = iter(running)
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    monkeypatch.setattr(threads, "_running", lambda: next(reads))
    monkeypatch.setattr(threads, "_own_running", lambda: own)
    assert threads.spare_core(reads=3) is want


def test_running_is_the_loadavg_field():
    if not os.path.exists("/proc/loadavg"):
        pytest.skip("needs /proc/loadavg")
    assert threads._running() >= 1          # the reader itself runs

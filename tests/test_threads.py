"""BLAS thread counts: one for a few tunes, never more than the free cores."""

import os
import subprocess
import sys

import pytest

from abcgen import threads


@pytest.mark.parametrize("cores,load,batch,want", [
    (2, 0.0, 1, 1),      # one tune: one thread, however idle the machine
    (2, 0.0, 7, 1),
    (2, 0.0, 64, 2),     # a batch on an idle machine: every core
    (2, 1.2, 64, 1),     # another busy process: the free core only
    (2, 5.0, 64, 1),     # overloaded: still one
    (16, 3.4, 64, 13),
])
def test_blas_threads(monkeypatch, cores, load, batch, want):
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    assert threads.blas_threads(batch) == want


def test_the_user_choice_wins_and_numpy_sees_it():
    script = ("import os\nfrom abcgen import threads\n"
              "n = threads.set_blas_threads(1)\n"
              "import numpy\n"
              "print(n, os.environ['OPENBLAS_NUM_THREADS'])\n")
    env = dict(os.environ)
    for v in threads.BLAS_VARS:
        env.pop(v, None)
    r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert r.stdout.split() == ["1", "1"], r.stderr
    env["OPENBLAS_NUM_THREADS"] = "3"
    r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert r.stdout.split() == ["1", "3"], r.stderr

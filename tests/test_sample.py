"""abcgen sample: deterministic, constrained (always valid), fast path free of TensorFlow."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from abcgen import sample as S
from abcgen.abc.reader import parse_abc
from abcgen.corpus import prepare
from abcgen.errors import InputError

MINI = str(Path(__file__).parent / "data" / "minicorpus")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from abcgen import train as T

    d = tmp_path_factory.mktemp("trained") / "run"
    T.train(d, dict(corpus=MINI, hidden=32, embed_dim=8, seq_len=16, batch_size=4, epochs=8, lr=0.02,
                    patience=10, seed=2), log=lambda m: None)
    return d


def _abc2midi_ok(tune: str, tmp_path) -> bool:
    src = tmp_path / "t.abc"
    src.write_text(tune)
    p = subprocess.run(["abc2midi", str(src), "-o", str(tmp_path / "t.mid")], capture_output=True, text=True)
    return p.returncode == 0 and not any(ln.startswith("Error") for ln in (p.stdout + p.stderr).splitlines())


def _book(model_path, **kw):
    m = S.Model(S.resolve_model(str(model_path)))
    opts = S.SampleOptions(**kw)
    return S.tune_book(m, S.sample(m, opts), opts), m


def test_same_seed_same_bytes(random_model):
    a, _ = _book(random_model, count=4, seed=11, max_tokens=200)
    b, _ = _book(random_model, count=4, seed=11, max_tokens=200)
    c, _ = _book(random_model, count=4, seed=12, max_tokens=200)
    assert a == b and a != c
    assert a.count("X:") == 4 and "T:abcgen random seed 11\n" in a
    assert f"T:abcgen random seed {S.tune_seed(11, 2)}\n" in a


@pytest.mark.parametrize("temperature", [0.5, 1.0, 1.5])
def test_every_constrained_tune_is_valid(random_model, temperature, tmp_path):
    from abcgen.abc.grammar import check_bars
    from abcgen.abc.reader import split_book
    from abcgen.abc.writer import model_text

    book, _ = _book(random_model, count=12, seed=3, temperature=temperature, max_tokens=250)
    for tune in split_book(book):
        parse_abc(tune.text)  # raises if music21 cannot parse it or finds no notes
        complete, wrong = check_bars(model_text(tune.text))
        assert wrong == 0, tune.text
        if shutil.which("abc2midi"):
            assert _abc2midi_ok(tune.text, tmp_path), tune.text


def test_header_prompts_and_prime(random_model):
    book, m = _book(random_model, count=3, seed=1, meter="6/8", unit="1/8", key="Gmaj", prime="G", max_tokens=120)
    for entry in book.split("\n\n"):
        lines = entry.split("\n")
        assert lines[2:5] == ["M:6/8", "L:1/8", "K:Gmaj"]
        assert lines[5].startswith("G")


def test_unknown_header_symbol_is_refused(random_model):
    m = S.Model(S.resolve_model(str(random_model)))
    with pytest.raises(InputError, match="M:11/8 is not in the model's vocabulary"):
        S.sample(m, S.SampleOptions(meter="11/8"))
    with pytest.raises(InputError, match="'&'"):
        S.sample(m, S.SampleOptions(meter="6/8", unit="1/8", key="Gmaj", prime="G&"))


def test_no_constraints_path_runs(random_model):
    book, _ = _book(random_model, count=2, seed=5, constraints=False, max_tokens=50)
    assert book.count("X:") == 2


def test_trained_tiny_model_samples_valid_tunes(trained_run, tmp_path):
    book, _ = _book(trained_run, count=6, seed=0, temperature=0.8, max_tokens=200)
    from abcgen.abc.reader import split_book

    for tune in split_book(book):
        parse_abc(tune.text)


def test_filtering():
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))
    p = S._filter_logits(logits, 1.0, 2, 1.0)
    np.testing.assert_allclose(p, [[0.625, 0.375, 0, 0]])
    p = S._filter_logits(logits, 1.0, 0, 0.7)
    np.testing.assert_allclose(p, [[0.625, 0.375, 0, 0]])
    p = S._filter_logits(logits, 1.0, 0, 0.1)
    np.testing.assert_allclose(p, [[1, 0, 0, 0]])
    assert S._draw(np.array([[0.2, 0.3, 0.5]] * 3), np.array([0.1, 0.4, 0.99])).tolist() == [0, 1, 2]


@pytest.mark.parametrize("temperature", [1.0, 0.7, 1.3, 5.0])
@pytest.mark.parametrize("rows", [1, 5, 64])
def test_fused_draw_draws_what_filter_and_draw_draw(temperature, rows):
    """The sampler's in-place draw without top-k/top-p (_draw_plain) gives the very
    indices of _filter_logits + _draw on the same masked logits and uniforms, also
    where a uniform lands within rounding of a cumulative probability."""
    rng = np.random.default_rng(rows * 10 + int(temperature * 10))
    for _ in range(40):
        logits = (rng.standard_normal((rows, 157)) * 4).astype(np.float32).astype(np.float64)
        mask = rng.random((rows, 157)) < rng.uniform(0.01, 0.6)
        mask[np.arange(rows), rng.integers(0, 157, rows)] = True      # never an empty row
        lg = np.where(mask, logits, -np.inf)
        want_p = S._filter_logits(lg, temperature, 0, 1.0)
        cum = np.cumsum(want_p, axis=1)
        u = rng.random(rows)
        u[::2] = cum[::2, rng.integers(0, 156)]                        # on a boundary
        want = S._draw(want_p, u)
        got = S._draw_plain(lg.copy(), temperature, u)
        assert got.tolist() == want.tolist()
        # one row (the sampler's path for a single tune) on its 1-D view: the same draws
        assert [S._draw_row(lg[j].copy(), temperature, float(u[j])) for j in range(rows)] == want.tolist()


def test_cli_without_model_explains_and_imports_no_tensorflow(random_model):
    probe = ("import sys, runpy\n"
             "sys.argv = ['abcgen'] + sys.argv[1:]\n"
             "try:\n    runpy.run_module('abcgen', run_name='__main__')\n"
             "except SystemExit as e:\n    code = e.code\n"
             "print('TF', 'tensorflow' in sys.modules, 'keras' in sys.modules, 'music21' in sys.modules, "
             "'EXIT', code, file=sys.stderr)\n")
    r = subprocess.run([sys.executable, "-c", probe, "sample", "--model", str(random_model), "-n", "2"],
                       capture_output=True, text=True)
    assert "TF False False False EXIT 0" in r.stderr, r.stderr
    assert r.stdout.startswith("X:1\n")
    # the shipped model, as a user runs it: no --model, still no TensorFlow
    r = subprocess.run([sys.executable, "-c", probe, "sample", "-n", "1", "--seed", "4"],
                       capture_output=True, text=True)
    assert "TF False False False EXIT 0" in r.stderr, r.stderr
    assert r.stdout.startswith("X:1\nT:abcgen default seed 4\nM:")


def test_no_shipped_model_says_how_to_get_one(monkeypatch, tmp_path):
    monkeypatch.setattr(S, "DEFAULT_MODEL", tmp_path / "absent.npz")
    with pytest.raises(InputError, match="abcgen train"):
        S.resolve_model(None)


def test_shipped_model_writes_valid_tunes(tmp_path):
    """The model in the package: compact, token level, and its tunes (with the mask) parse
    with music21 and abc2midi and have every complete bar of the meter's length."""
    from abcgen.abc.grammar import check_bars
    from abcgen.abc.reader import split_book
    from abcgen.step import load_npz

    assert S.resolve_model(None) == S.DEFAULT_MODEL
    assert S.DEFAULT_MODEL.stat().st_size < 8_000_000
    weights, meta = load_npz(S.DEFAULT_MODEL)
    assert meta["dtype"] == "float16" and meta["vocab"]["level"] == "token"
    assert "abcgen train" in meta["note"]
    m = S.Model(S.DEFAULT_MODEL)
    book = S.generate(m, S.SampleOptions(count=6, seed=1, max_tokens=600))
    assert book == S.generate(m, S.SampleOptions(count=6, seed=1, max_tokens=600))
    tunes = split_book(book)
    assert len(tunes) == 6
    for t in tunes:
        parse_abc(t.text)
        if shutil.which("abc2midi"):
            assert _abc2midi_ok(t.text, tmp_path), t.text
        body = t.text.split("\n", 2)[2]             # from M: on, as the model wrote it
        complete, wrong = check_bars(body)
        assert complete > 0 and wrong == 0, t.text


def test_sample_render_writes_sheet_music(random_model, tmp_path):
    r = subprocess.run([sys.executable, "-m", "abcgen", "sample", "--model", str(random_model), "-n", "2",
                        "--seed", "9", "--max-tokens", "120", "--render", str(tmp_path / "t.svg")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("X:") == 2
    svgs = sorted(p.name for p in tmp_path.glob("*.svg"))
    assert svgs == ["t-1.svg", "t-2.svg"]
    assert "<svg" in (tmp_path / "t-1.svg").read_text()
    bad = subprocess.run([sys.executable, "-m", "abcgen", "sample", "--model", str(random_model),
                          "--render", str(tmp_path / "t.foo")], capture_output=True, text=True)
    assert bad.returncode == 2 and ".svg" in bad.stderr and bad.stdout == ""


def test_export_float16_is_compact_and_samples_like_float32(random_model, tmp_path):
    """abcgen export: half the bytes, weights within float16 rounding, the same metadata,
    and the next-token distributions of the two files agree closely."""
    from typer.testing import CliRunner

    from abcgen.cli import app
    from abcgen.step import load_npz

    out = tmp_path / "small.npz"
    r = CliRunner().invoke(app, ["export", str(random_model), "-o", str(out), "--note", "test export"])
    assert r.exit_code == 0, r.output
    w32, m32 = load_npz(random_model)
    w16, m16 = load_npz(out)
    assert m16["dtype"] == "float16" and m16["note"] == "test export"
    assert m16["vocab"] == m32["vocab"] and set(w16) == set(w32)
    for k in w32:
        np.testing.assert_allclose(w16[k], w32[k], rtol=1e-3, atol=1e-4)
    assert out.stat().st_size < 0.6 * random_model.stat().st_size
    a, b = S.Model(random_model), S.Model(out)
    ids = np.asarray([a.vocab.bos_id] + a.vocab.encode("M:6/8\nL:1/8\nK:Dmaj\nA2B c2d|")[1:-1])
    la, _ = a.net.run(ids)
    lb, _ = b.net.run(ids)
    pa, pb = np.exp(la - la.max()), np.exp(lb - lb.max())
    assert np.abs(pa / pa.sum() - pb / pb.sum()).max() < 1e-3
    bad = CliRunner().invoke(app, ["export", str(tmp_path / "nope"), "-o", str(tmp_path / "x.npz")])
    assert bad.exit_code == 2 and "nope" in bad.output and not (tmp_path / "x.npz").exists()


@pytest.mark.parametrize("count", [1, 6])
def test_step_thread_changes_nothing(random_model, monkeypatch, count):
    """The LSTM step beside the state machines (its recurrent product started before the
    draw, made again where tunes of a batch ended) gives the same bytes as in turn."""
    m = S.Model(random_model)
    opts = S.SampleOptions(count=count, seed=5, max_tokens=150)
    monkeypatch.setattr(S, "OVERLAP_MIN_BATCH", 1)
    threaded = S.sample(m, opts)
    monkeypatch.setattr(S, "OVERLAP_MIN_BATCH", 10**6)
    monkeypatch.setattr(S, "spare_core", lambda: False)
    inline = S.sample(m, opts)
    assert inline == threaded
    if count > 1:            # tunes of different lengths: rows were dropped on the way
        assert len({len(t) for t in inline}) > 1


@pytest.mark.parametrize("count", [2, 6])            # a few tunes (product started early), a batch
@pytest.mark.parametrize("part", ["finish", "recurrent"])
def test_step_thread_hands_its_error_over(random_model, monkeypatch, count, part):
    """An error in the worker thread reaches the caller, who does not wait for it forever."""
    import threading

    m = S.Model(random_model)
    calls = []

    def broken(*a, **k):
        calls.append(1)
        if len(calls) > 3:
            raise RuntimeError("boom")
        return original(*a, **k)

    original = getattr(m.net, part)
    monkeypatch.setattr(S, "OVERLAP_MIN_BATCH", 1)
    monkeypatch.setattr(m.net, part, broken)
    with pytest.raises(RuntimeError, match="boom"):
        S.sample(m, S.SampleOptions(count=count, seed=1, max_tokens=50))
    assert not [t for t in threading.enumerate() if t.name == "abcgen-step"]


# --------------------------------------------------------------------------
# Form, seeds, conditioning and length (the shipped model: no TensorFlow needed)

def _shipped():
    if not S.DEFAULT_MODEL.is_file():
        pytest.skip("no shipped model in this checkout")
    return S.Model(S.DEFAULT_MODEL)


def _tunes(book: str) -> list[str]:
    from abcgen.tunestats import model_texts_of_book

    return model_texts_of_book(book)


def test_tune_k_of_a_book_is_tune_1_of_its_own_seed():
    m = _shipped()
    opts = S.SampleOptions(count=3, seed=5, max_tokens=300)
    book = S.tune_book(m, S.sample(m, opts), opts)
    tunes = _tunes(book)
    assert len(tunes) == 3
    for k in (1, 2, 3):
        s_k = S.tune_seed(5, k)
        assert f"T:abcgen default seed {s_k}\n" in book
        alone = S.SampleOptions(count=1, seed=s_k, max_tokens=300)
        assert _tunes(S.tune_book(m, S.sample(m, alone), alone)) == [tunes[k - 1]]
    assert S.tune_seed(5, 1) == 5 and len({S.tune_seed(5, k) for k in range(1, 50)}) == 49


def test_no_seed_draws_a_fresh_one_and_names_it():
    m = _shipped()
    seeds = set()
    for _ in range(2):
        opts = S.SampleOptions(count=1, seed=None, max_tokens=80)
        book = S.generate(m, opts)
        assert opts.seed is not None and f"seed {opts.seed}\n" in book
        seeds.add(opts.seed)
    assert len(seeds) == 2


@pytest.mark.parametrize("text,token", [
    ("D", "Dmaj"), ("Dm", "Dmin"), ("Dmin", "Dmin"), ("D minor", "Dmin"), ("Ddor", "Ddor"),
    ("D dorian", "Ddor"), ("Amix", "Amix"), ("A Mixolydian", "Amix"), ("F#m", "F#min"),
    ("Bb", "Bbmaj"), ("K:Gmaj", "Gmaj"), ("e aeolian", "Emin"), ("C major", "Cmaj"),
])
def test_key_spellings(text, token):
    assert S.key_token(text) == token


@pytest.mark.parametrize("text", ["H", "Dxyz", "", "6/8"])
def test_not_a_key(text):
    assert S.key_token(text) is None


def test_orders_are_musical():
    meters = ["6/8", "116/4", "3/4", "2/4", "none", "4/4", "12/8", "2/2", "9/8", "3/8"]
    assert sorted(meters, key=S.meter_order) == ["3/8", "2/4", "3/4", "6/8", "2/2", "4/4", "9/8",
                                                 "12/8", "116/4", "none"]
    keys = ["Gmaj", "Ador", "Cmaj", "Amin", "F#min", "Bbmaj", "Dmix", "Dmaj", "Ebmaj"]
    assert sorted(keys, key=S.key_order) == ["Cmaj", "Dmaj", "Dmix", "Ebmaj", "F#min", "Gmaj",
                                             "Ador", "Amin", "Bbmaj"]


def test_unknown_key_names_the_nearest_in_musical_order():
    m = _shipped()
    with pytest.raises(InputError) as e:
        S.resolve_header(m.vocab, None, None, "C#m")
    msg = str(e.value)
    assert msg.startswith("K:C#min is not in the model's vocabulary (nearest: ")
    near = msg.split("(nearest: ")[1].rstrip(")").split(", ")
    assert near == sorted(near, key=S.key_order) and "F#min" in near and len(near) == 6
    with pytest.raises(InputError, match="not a key"):
        S.resolve_header(m.vocab, None, None, "H")


@pytest.mark.parametrize("kw,header", [
    (dict(key="D"), "K:Dmaj"), (dict(key="A dorian"), "K:Ador"), (dict(unit="1/16"), "L:1/16"),
    (dict(meter="6/8", key="Em"), "M:6/8"), (dict(meter="C"), "M:4/4"),
])
def test_any_subset_of_the_header(kw, header):
    m = _shipped()
    opts = S.SampleOptions(count=3, seed=2, max_tokens=200, **kw)
    for t in _tunes(S.generate(m, opts)):
        assert header + "\n" in t.split("K:")[0] + "K:" + t.split("K:")[1].split("\n")[0] + "\n"
        if "key" in kw:
            assert t.split("\n")[2] == "K:" + S.key_token(kw["key"])


def test_form_of_shipped_samples_read_from_the_text():
    """No meter or key change, no |] before the end, no open first ending, the last
    note on the tonic, read by tunestats (its own token walk, not the mask)."""
    from abcgen.tunestats import form_figures

    m = _shipped()
    opts = S.SampleOptions(count=12, seed=11, max_tokens=600)
    for t in _tunes(S.generate(m, opts)):
        f = form_figures(t)
        assert not (f["meter_change"] or f["key_change"] or f["final_early"] or f["open_first"]), t
        assert f["tonic_end"], t


def test_bars_asks_for_about_that_many_bars():
    from abcgen.abc.grammar import check_bars
    from abcgen.tunestats import tune_stats

    m = _shipped()
    for bars in (8, 16):
        opts = S.SampleOptions(count=6, seed=4, max_tokens=1000, bars=bars)
        for t in _tunes(S.generate(m, opts)):
            # bars as a musician counts them (a pickup and the short bar that completes it make one)
            length = tune_stats(t)["bars"]
            assert check_bars(t)[1] == 0 and bars - 1 <= length <= bars + 1, (bars, length, t)


def test_changes_only_when_asked_and_tonic_can_be_off():
    m = _shipped()
    assert S.SampleOptions().changes is False and S.SampleOptions().tonic is True
    opts = S.SampleOptions(count=2, seed=1, max_tokens=200, changes=True, tonic=False)
    assert len(_tunes(S.generate(m, opts))) == 2


def test_header_menu_lists_what_the_corpus_uses_in_musical_order():
    m = _shipped()
    h = S.header_menu(m)
    assert {"6/8", "3/4", "4/4", "2/4"} <= set(h["meters"]) and "116/4" not in h["meters"]
    assert h["meters"] == sorted(h["meters"], key=S.meter_order)
    assert h["keys"] == sorted(h["keys"], key=S.key_order) and "Dmaj" in h["keys"]
    assert all("K:" + k in m.vocab for k in h["keys"])


def _part_bars(text: str) -> list[int]:
    """Bars of each part of a tune as a musician counts them, the parts split at
    ':|': the part's duration (tunestats' own walk) less its opening pickup, in
    bars, rounded up (a short last bar that pairs with the pickup is a bar)."""
    import math
    import re

    from abcgen.tunestats import tune_stats

    head = "\n".join(text.split("\n", 3)[:3]) + "\n"
    body = text.split("\n", 3)[3]
    out = []
    for c in (c for c in body.split(":|") if c.strip(" \n|")):
        length = tune_stats(head + c + "|\n")["length"]
        first = re.split(r"\||::", c.lstrip("\n|:"), maxsplit=1)[0]
        pickup = tune_stats(head + first + "|\n")["length"] if first.strip() else 0
        pickup = pickup if pickup < 1 else 0
        out.append(math.ceil(length - pickup))
    return out


@pytest.mark.parametrize("meter", ["6/8", "4/4"])
def test_form_aabb_makes_two_repeated_parts_of_eight_bars(meter):
    from abcgen.abc.grammar import check_bars
    from abcgen.tunestats import form_figures

    m = _shipped()
    opts = S.SampleOptions(count=8, seed=21, meter=meter, form="AABB")
    for t in _tunes(S.generate(m, opts)):
        assert t.count(":|") == 2 and "|]" not in t and "||" not in t, t
        assert _part_bars(t) == [8, 8], t
        assert check_bars(t, replay=False)[1] == 0 and form_figures(t)["tonic_end"], t


def test_form_parts():
    assert S.form_parts("AABB") == [True, True]
    assert S.form_parts("AB") == [False, False]
    assert S.form_parts("aabbc") == [True, True, False]
    for bad in ("ABA", "A1", ""):
        with pytest.raises(InputError):
            S.form_parts(bad)
    with pytest.raises(InputError, match="give one"):
        S.check_options(S.SampleOptions(form="AABB", bars=16))


@pytest.mark.slow
def test_bench_sample_times_the_shipped_model_beside_its_step_alone(monkeypatch):
    """bench sample --model default: the sampler with its mask beside the LSTM step alone at the
    same batch (the mask's cost shows as the gap); no Keras model ships, so no naive loop.
    Each batch size runs in a process with the BLAS threads `abcgen sample` picks for it."""
    pytest.importorskip("keras")
    from abcgen.bench import bench_sample
    from abcgen.threads import BLAS_VARS

    for var in BLAS_VARS:
        monkeypatch.delenv(var, raising=False)
    lines = []
    r = bench_sample(model_path="default", tokens=60, min_tokens=200, log=lines.append)
    assert r["model"].endswith("default.npz") and "keras_naive_tokens_per_s" not in r
    for k in ("numpy_1_tokens_per_s", "numpy_64_tokens_per_s", "step_only_1_tokens_per_s",
              "step_only_64_tokens_per_s"):
        assert r[k] > 0
    # the step alone bounds the sampler that runs it (same model, same batch, or fewer rows as
    # tunes end); the sampler overlaps its masks with the step, so it comes close, and the two
    # short timings taken one after the other on a shared machine may swap by some noise
    assert r["step_only_64_tokens_per_s"] * 1.5 > r["numpy_64_tokens_per_s"]
    assert any("not timed" in ln for ln in lines) and r["process_ok"]
    assert r["blas_threads_1"] in ("1", "2") and int(r["blas_threads_64"]) >= 1
    assert any(f"({r['blas_threads_1']} BLAS thread" in ln for ln in lines)


def test_pipeline_hands_a_batch_over_before_the_masks(random_model):
    """A batch's submit() returns once the worker has taken the tokens and is entering the
    recurrent product (which runs without the GIL): were it to return at once, the worker
    would wait for the GIL until the masks were built, and nothing would overlap.  A few
    tunes' product is started before their tokens come, so their submit() does not wait."""
    m = S.Model(random_model)
    for rows, waits, ack_wait in ((6, True, 60.0), (6, False, 0.0), (2, False, 60.0)):
        state = m.net.initial_state(rows)
        pipe = S._Pipeline(m.net, state, threaded=True)
        pipe.ACK_WAIT = ack_wait           # 0: never waits (an ack owed to the next submit)
        try:
            for step in range(3):
                pipe.submit(np.arange(rows) % 7 + 3, None)
                if waits:
                    assert pipe.inbox.empty() and pipe.ack.locked() and not pipe.owed
                logits = pipe.result()
                assert logits.shape == (rows, len(m.vocab))
        finally:
            pipe.close()
        # told that the rows stay, the worker starts the next product before the tokens
        # come; the numbers are the same
        pipe = S._Pipeline(m.net, state, threaded=True)
        try:
            for step in range(3):
                pipe.submit(np.arange(rows) % 7 + 3, None)
                pipe.rows_stay()
                again = pipe.result()
        finally:
            pipe.close()
        np.testing.assert_array_equal(again, logits)
        inline = S._Pipeline(m.net, state, threaded=False)
        for step in range(3):
            inline.submit(np.arange(rows) % 7 + 3, None)
            expect = inline.result()
        np.testing.assert_array_equal(logits, expect)


def test_blas_threads_change_no_tune():
    """One tune's recurrent product splits across two BLAS threads where a core is free
    (abcgen.threads), a batch's across the free cores: the thread count the machine's load
    picks must not change a tune.  The shipped model (512 units: products big enough for
    OpenBLAS to split), one tune and a batch whose rows drop to one, in processes that differ
    only in the thread count."""
    import json
    import os
    import subprocess
    import sys

    from abcgen.threads import BLAS_VARS

    if not S.DEFAULT_MODEL.is_file():
        pytest.skip("no shipped model in this checkout")
    code = ("import json\n"
            "from abcgen import sample as S\n"
            "m = S.Model(S.DEFAULT_MODEL)\n"
            "out = [S.sample(m, S.SampleOptions(count=c, seed=s, max_tokens=120))\n"
            "       for c, s in ((1, 1), (1, 2), (5, 3))]\n"
            "print(json.dumps(out))\n")
    books = []
    for n in ("1", "2"):
        env = {k: v for k, v in os.environ.items() if k not in BLAS_VARS}
        env["OPENBLAS_NUM_THREADS"] = n
        r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        books.append(json.loads(r.stdout))
    assert books[0] == books[1]
    assert len({len(t) for t in books[0][2]}) > 1          # the batch's rows dropped on the way


@pytest.mark.parametrize("count,blas,spare,want", [
    (1, 1, True, True),      # one BLAS thread and a free core: the step beside the masks
    (1, 1, False, False),    # no free core: in turn
    (1, 2, True, False),     # two BLAS threads split the product over both cores: in turn
    (3, 2, True, False),
    (6, 1, False, True),     # a batch: the step thread always
    (6, 2, True, True),
])
def test_step_thread_where_it_pays(random_model, monkeypatch, count, blas, spare, want):
    m = S.Model(random_model)
    seen = []
    real = S._Pipeline

    def spy(net, state, threaded, **kw):
        seen.append(threaded)
        return real(net, state, threaded, **kw)

    monkeypatch.setattr(S, "_Pipeline", spy)
    monkeypatch.setattr(S, "current_blas_threads", lambda: blas)
    monkeypatch.setattr(S, "spare_core", lambda: spare)
    S.sample(m, S.SampleOptions(count=count, seed=1, max_tokens=20))
    assert seen == [want]


@pytest.mark.parametrize("width", [1, 2, 5])
def test_waiting_tunes_take_the_rows_of_ended_ones(random_model, monkeypatch, width):
    """A book longer than the batch keeps the batch full: as tunes end the next ones take
    their rows (with width 1 every row ends at once and the next tune starts afresh), and each
    tune is the one a wide batch makes, in the step thread or in turn."""
    m = S.Model(random_model)
    opts = S.SampleOptions(count=7, seed=3, max_tokens=60)
    wide = S.sample(m, opts)
    assert len(set(wide)) == 7 and len({len(t) for t in wide}) > 1
    monkeypatch.setattr(S, "SAMPLE_BATCH", width)
    rows = []
    real = S._Pipeline.submit

    def spy(self, tokens, sel, add=0):
        rows.append(len(tokens) + add)
        return real(self, tokens, sel, add)

    monkeypatch.setattr(S._Pipeline, "submit", spy)
    for overlap in (1, 10**6):                 # the step thread, then in turn
        monkeypatch.setattr(S, "OVERLAP_MIN_BATCH", overlap)
        monkeypatch.setattr(S, "spare_core", lambda: False)
        rows.clear()
        assert S.sample(m, opts) == wide
        assert max(rows) <= width
        if width > 1:       # the batch stayed full while tunes waited
            assert rows[:20] == [width] * 20


def test_the_forced_end_ends_only_the_tunes_that_reach_it(random_model, monkeypatch):
    """Past --max-tokens plus the closing steps a tune is ended the deterministic way; with
    rows refilled, tunes started later are not ended with it."""
    m = S.Model(random_model)
    monkeypatch.setattr(S, "CLOSING_STEPS", 0)
    monkeypatch.setattr(S, "SAMPLE_BATCH", 2)
    opts = S.SampleOptions(count=5, seed=4, max_tokens=30)
    texts = S.sample(m, opts)
    monkeypatch.setattr(S, "SAMPLE_BATCH", 64)
    assert S.sample(m, opts) == texts
    from abcgen.abc.grammar import AbcConstraint, Form

    for t in texts:                       # each a whole tune the grammar accepts to its end
        c = AbcConstraint(m.vocab, Form())
        c.reset()
        c.advance_all(m.vocab.encode(t, add_markers=False))
        assert c.allowed()[m.vocab.eos_id]

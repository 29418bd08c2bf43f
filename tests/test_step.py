"""The NumPy sampler must give the Keras model's next-token distribution."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest

from abcgen.errors import InputError
from abcgen.step import NumpyLSTM, load_npz, log_softmax, softmax

ROOT = Path(__file__).resolve().parents[1]
VOCAB, EMBED, HIDDEN, T = 20, 8, 16, 15


def _keras_model(layers: int):
    """A small model whose biases are random too: Keras initialises biases to
    zero (forget gate to one), which would hide a wrong gate order or a
    dropped bias."""
    keras = pytest.importorskip("keras")
    from abcgen.model import build_text_model

    keras.utils.set_random_seed(100 + layers)
    model = build_text_model(VOCAB, embed_dim=EMBED, hidden=HIDDEN, layers=layers,
                             dropout=0.5)
    rng = np.random.default_rng(layers)
    for layer in model.layers:
        if layer.weights:
            layer.set_weights([w + rng.normal(0, 0.5, w.shape).astype(np.float32)
                               for w in layer.get_weights()])
    return model


@pytest.fixture(scope="module", params=[1, 2], ids=["1layer", "2layers"])
def exported(request, tmp_path_factory):
    from abcgen.model import export_npz

    model = _keras_model(request.param)
    path = tmp_path_factory.mktemp("m") / f"m{request.param}.npz"
    export_npz(model, path, {"note": "test"}, dtype="float32")
    weights, meta = load_npz(path)
    return model, NumpyLSTM(weights), meta


def _tokens(batch: int, length: int = T, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCAB, (batch, length))


@pytest.mark.parametrize("batch", [1, 3])
def test_step_matches_keras(exported, batch):
    model, net, meta = exported
    assert net.layers == meta["layers"]
    x = _tokens(batch, seed=batch)
    # training=False: dropout (0.5 here) must be the identity, as in NumpyLSTM.
    expected = softmax(np.asarray(model(x, training=False)))
    state = net.initial_state(batch)
    got = []
    for t in range(T):
        logits, state = net.step(x[:, t], state)
        assert logits.shape == (batch, VOCAB) and logits.dtype == np.float32
        got.append(softmax(logits))
    np.testing.assert_allclose(np.stack(got, axis=1), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("batch", [1, 3])
def test_run_matches_keras(exported, batch):
    model, net, _ = exported
    x = _tokens(batch, seed=10 + batch)
    expected = np.asarray(model(x, training=False))
    all_logits, _ = net.run(x, return_all=True)
    assert all_logits.shape == (batch, T, VOCAB)
    np.testing.assert_allclose(softmax(all_logits), softmax(expected), atol=1e-5, rtol=0)
    last, _ = net.run(x)
    np.testing.assert_allclose(softmax(last), softmax(expected[:, -1]), atol=1e-5, rtol=0)


def test_float16_export_close_to_keras(tmp_path):
    from abcgen.model import export_npz

    model = _keras_model(2)
    path = tmp_path / "m16.npz"
    export_npz(model, path, {}, dtype="float16")
    net = NumpyLSTM(load_npz(path)[0])
    x = _tokens(3, seed=7)
    expected = softmax(np.asarray(model(x, training=False)))
    got, _ = net.run(x, return_all=True)
    np.testing.assert_allclose(softmax(got), expected, atol=1e-2, rtol=0)


def test_chunked_run_carries_state(exported):
    """As in torch-rnn's tests: one pass over a sequence and two passes over
    its halves, carrying the state, must end in the same place."""
    _, net, _ = exported
    x = _tokens(3, length=12, seed=5)
    whole_logits, whole = net.run(x)
    _, half = net.run(x[:, :5])
    chunk_logits, chunked = net.run(x[:, 5:], half)
    np.testing.assert_allclose(chunk_logits, whole_logits, atol=1e-6)
    # Stepping token by token from the first chunk's state agrees as well.
    state = half
    for t in range(5, 12):
        _, state = net.step(x[:, t], state)
    for (h1, c1), (h2, c2), (h3, c3) in zip(whole, chunked, state):
        np.testing.assert_allclose(h2, h1, atol=1e-6)
        np.testing.assert_allclose(c2, c1, atol=1e-6)
        np.testing.assert_allclose(h3, h1, atol=1e-6)
        np.testing.assert_allclose(c3, c1, atol=1e-6)


def test_step_does_not_touch_given_state(exported):
    _, net, _ = exported
    _, state = net.run(_tokens(2, length=4))
    before = [(h.copy(), c.copy()) for h, c in state]
    a, s1 = net.step(np.array([1, 2]), state)
    b, s2 = net.step(np.array([1, 2]), state)
    np.testing.assert_array_equal(a, b)
    for (h, c), (h0, c0) in zip(state, before):
        np.testing.assert_array_equal(h, h0)
        np.testing.assert_array_equal(c, c0)
    assert s1[0][0] is not s2[0][0]


def test_initial_state_and_input_checks(exported):
    _, net, _ = exported
    state = net.initial_state(4)
    assert len(state) == net.layers
    assert all(h.shape == c.shape == (4, HIDDEN) and not h.any() and not c.any()
               for h, c in state)
    logits, _ = net.step(np.array([0, 1, 2, 3]))
    assert logits.shape == (4, VOCAB)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        net.step(np.array([VOCAB]), net.initial_state(1))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        net.step(np.array([-1]), net.initial_state(1))
    with pytest.raises(ValueError, match="expected"):
        net.step(np.array([1, 2]), net.initial_state(1))
    with pytest.raises(ValueError, match="shape"):
        net.step(np.array([[1, 2]]))
    with pytest.raises(ValueError, match="integers"):
        net.step(np.array([1.0]))


def test_softmax_helpers_are_stable():
    x = np.array([[1000.0, 0.0, -1000.0], [1.0, 2.0, 3.0]], np.float32)
    p = softmax(x)
    assert np.all(np.isfinite(p))
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(p[0], [1.0, 0.0, 0.0])
    lp = log_softmax(x)
    assert np.all(np.isfinite(lp))
    np.testing.assert_allclose(lp[0], [0.0, -1000.0, -2000.0])
    np.testing.assert_allclose(np.exp(lp[1]), p[1], rtol=1e-6)
    np.testing.assert_allclose(log_softmax(np.array([1, 2, 3])),
                               np.log(softmax(np.array([1.0, 2.0, 3.0]))), rtol=1e-6)


def test_import_does_not_load_tensorflow():
    code = ("import sys, abcgen.step\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('tensorflow', 'keras', 'tf_keras', 'jax', 'torch'))\n"
            "print(bad)\n"
            "sys.exit(1 if bad else 0)\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# -- bad files: no Keras needed to make them -----------------------------------

def _write_npz(path: Path, meta: dict | None, **arrays) -> Path:
    if meta is not None:
        arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(path, **arrays)
    return path


def _good_arrays(hidden: int = 4, vocab: int = 5, embed: int = 3) -> dict:
    rng = np.random.default_rng(0)
    return {"embedding": rng.normal(size=(vocab, embed)).astype(np.float32),
            "lstm_0/kernel": rng.normal(size=(embed, 4 * hidden)).astype(np.float32),
            "lstm_0/recurrent_kernel": rng.normal(size=(hidden, 4 * hidden)).astype(np.float32),
            "lstm_0/bias": np.zeros(4 * hidden, np.float32),
            "logits/kernel": rng.normal(size=(hidden, vocab)).astype(np.float32),
            "logits/bias": np.zeros(vocab, np.float32)}


def _assert_input_error(path: Path, match: str):
    with pytest.raises(InputError, match=match) as info:
        load_npz(path)
    assert str(path) in str(info.value)
    assert info.value.file == str(path)
    assert info.value.exit_code == 2


def test_hand_written_npz_loads(tmp_path):
    path = _write_npz(tmp_path / "ok.npz", {"format_version": 1}, **_good_arrays())
    weights, meta = load_npz(path)
    net = NumpyLSTM(weights)
    logits, _ = net.step(np.array([4]))
    assert logits.shape == (1, 5)


def test_missing_file(tmp_path):
    _assert_input_error(tmp_path / "nope.npz", "not found")


def test_folder_instead_of_file(tmp_path):
    _assert_input_error(tmp_path, "folder")


def test_garbage_file(tmp_path):
    path = tmp_path / "garbage.npz"
    path.write_bytes(b"this is not a zip archive at all\n" * 10)
    _assert_input_error(path, "cannot read")


def test_truncated_file(tmp_path):
    path = _write_npz(tmp_path / "trunc.npz", {"format_version": 1}, **_good_arrays())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _assert_input_error(path, "cannot read")


def test_single_npy_file(tmp_path):
    path = tmp_path / "one.npz"
    with open(path, "wb") as fh:
        np.save(fh, np.zeros(3))
    _assert_input_error(path, "npz")


def test_pickled_meta_refused(tmp_path):
    path = tmp_path / "pickle.npz"
    np.savez(path, __meta__=np.array([{"format_version": 1}], dtype=object),
             **_good_arrays())
    _assert_input_error(path, "cannot read")


def test_no_meta(tmp_path):
    _assert_input_error(_write_npz(tmp_path / "nometa.npz", None, **_good_arrays()),
                        "__meta__")


def test_wrong_version(tmp_path):
    path = _write_npz(tmp_path / "v99.npz", {"format_version": 99}, **_good_arrays())
    _assert_input_error(path, "version 99")


def test_bad_meta_json(tmp_path):
    path = tmp_path / "badjson.npz"
    np.savez(path, __meta__=np.frombuffer(b"{not json", np.uint8), **_good_arrays())
    _assert_input_error(path, "JSON")


def test_missing_array(tmp_path):
    arrays = _good_arrays()
    del arrays["lstm_0/bias"]
    path = _write_npz(tmp_path / "nobias.npz", {"format_version": 1}, **arrays)
    _assert_input_error(path, "lstm_0/bias")


def test_inconsistent_shapes(tmp_path):
    arrays = _good_arrays()
    arrays["logits/kernel"] = arrays["logits/kernel"][:, :3]
    path = _write_npz(tmp_path / "shape.npz", {"format_version": 1}, **arrays)
    _assert_input_error(path, "logits/kernel")


def test_meta_disagrees_with_arrays(tmp_path):
    path = _write_npz(tmp_path / "meta.npz", {"format_version": 1, "hidden": 8},
                      **_good_arrays(hidden=4))
    _assert_input_error(path, "hidden")


# --------------------------------------------------------------------------- vocabulary against weights (issue 17)


def _rewrite(src: Path, dst: Path, edit) -> Path:
    """A copy of an exported model with its meta changed by ``edit(meta)``."""
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays["__meta__"].tobytes())
    edit(meta)
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(dst, **arrays)
    return dst


def _refit(meta):
    from abcgen.abc.tokens import Vocabulary

    v = meta["vocab"]
    v["fingerprint"] = Vocabulary(v["symbols"], v["level"]).fingerprint()


def test_exported_model_binds_its_vocabulary_and_loads(random_model):
    weights, meta = load_npz(random_model)
    assert len(meta["vocab_binding"]) == 64 and len(meta["vocab"]["symbols"]) == meta["vocab_size"]


@pytest.mark.parametrize("what,edit,message", [
    ("one symbol more", lambda m: m["vocab"]["symbols"].append("zz"), "symbols but its weights are for"),
    ("one symbol less", lambda m: m["vocab"]["symbols"].pop(), "symbols but its weights are for"),
    ("labelled char", lambda m: m["vocab"].update(level="char"), "does not match its fingerprint"),
    ("shuffled", lambda m: m["vocab"]["symbols"].__setitem__(slice(5, None), sorted(m["vocab"]["symbols"][5:], reverse=True)),
     "does not match its fingerprint"),
    ("shuffled, fingerprint redone",
     lambda m: (m["vocab"]["symbols"].__setitem__(slice(5, None), sorted(m["vocab"]["symbols"][5:], reverse=True)),
                _refit(m)), "is not the one its weights were trained with"),
    ("labelled char, fingerprint redone", lambda m: (m["vocab"].update(level="char"), _refit(m)),
     "is not the one its weights were trained with"),
    ("not an object", lambda m: m.update(vocab=[1, 2]), "not a JSON object"),
    ("unknown level", lambda m: m["vocab"].update(level="bytes"), "unusable (bad vocabulary: unknown level"),
])
def test_a_vocabulary_that_does_not_fit_the_weights_is_refused(random_model, tmp_path, what, edit, message):
    bad = _rewrite(random_model, tmp_path / "bad.npz", edit)
    with pytest.raises(InputError) as e:
        load_npz(bad)
    assert message in e.value.message and e.value.file == str(bad), (what, e.value.message)
    r = subprocess.run([sys.executable, "-m", "abcgen", "sample", "--model", str(bad)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "internal error" not in r.stderr and message in r.stderr, r.stderr


def test_models_without_a_binding_still_load(random_model, tmp_path):
    old = _rewrite(random_model, tmp_path / "old.npz", lambda m: m.pop("vocab_binding"))
    weights, meta = load_npz(old)
    assert "vocab_binding" not in meta
    from abcgen.sample import DEFAULT_MODEL

    if DEFAULT_MODEL.is_file():
        load_npz(DEFAULT_MODEL)


def test_export_rebinds_in_its_dtype(random_model, tmp_path):
    from abcgen.step import save_npz

    weights, meta = load_npz(random_model)
    out = save_npz(tmp_path / "half.npz", weights, meta, dtype="float16")
    w2, m2 = load_npz(out)
    assert m2["vocab_binding"] != meta["vocab_binding"]       # the float16 arrays are other bytes


# --------------------------------------------------------------------------- bounded memory (issue 17)


def test_scratch_is_one_set_for_the_largest_batch(exported):
    _, shared, _ = exported
    net = NumpyLSTM.__new__(NumpyLSTM)
    net.__dict__.update(shared.__dict__, _buffers={})
    state = None
    for batch in (6, 5, 4, 3, 2, 1):                 # a sampling batch shrinks as tunes end
        state = None if state is None else [(h[:batch], c[:batch]) for h, c in state]
        _, state = net.step(np.arange(batch) % VOCAB, state)
    assert net._buffers["rows"] == 6 and net._buffers["z"].shape[0] == 6
    a, _ = net.step(np.arange(3), None)               # the same numbers as an unused instance
    fresh = NumpyLSTM.__new__(NumpyLSTM)
    fresh.__dict__.update(shared.__dict__, _buffers={})
    b, _ = fresh.step(np.arange(3), None)
    np.testing.assert_array_equal(a, b)


def test_sample_memory_is_flat_in_the_count_beyond_a_batch(random_model):
    import tracemalloc

    from abcgen import sample as S

    m = S.Model(random_model)
    S.generate(m, S.SampleOptions(count=2, seed=1, max_tokens=40))      # grammar tables built
    peaks = {}
    for n in (S.SAMPLE_BATCH * 2, S.SAMPLE_BATCH * 8):
        tracemalloc.start()
        S.generate(m, S.SampleOptions(count=n, seed=7, max_tokens=40))
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    small, large = peaks.values()
    assert large < 2 * small + 2_000_000, peaks     # was about 16 times (scratch per batch size)


def test_batched_sampling_keeps_the_tunes_of_the_first_batch(random_model):
    from abcgen import sample as S

    m = S.Model(random_model)
    one = S.generate(m, S.SampleOptions(count=S.SAMPLE_BATCH, seed=5, max_tokens=40))
    more = S.generate(m, S.SampleOptions(count=S.SAMPLE_BATCH + 3, seed=5, max_tokens=40))
    assert more.startswith(one) and more.count("\nX:") == S.SAMPLE_BATCH + 2
    assert more == S.generate(m, S.SampleOptions(count=S.SAMPLE_BATCH + 3, seed=5, max_tokens=40))


def _naive_lstm(weights, inputs, layers):
    """Keras' LSTM equations written out plainly (gate order i, f, c, o): the oracle for the
    sampler's step, with no TensorFlow."""
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    H = weights["lstm_0/recurrent_kernel"].shape[0]
    hs = [np.zeros(H) for _ in range(layers)]
    cs = [np.zeros(H) for _ in range(layers)]
    outs = []
    for x in inputs:
        for i in range(layers):
            z = x @ weights[f"lstm_{i}/kernel"] + hs[i] @ weights[f"lstm_{i}/recurrent_kernel"] \
                + weights[f"lstm_{i}/bias"]
            ig, fg, gg, og = sig(z[:H]), sig(z[H:2 * H]), np.tanh(z[2 * H:3 * H]), sig(z[3 * H:])
            cs[i] = fg * cs[i] + ig * gg
            hs[i] = og * np.tanh(cs[i])
            x = hs[i]
        outs.append(x @ weights["logits/kernel"] + weights["logits/bias"] if "logits/kernel" in weights else x)
    return np.array(outs)


@pytest.mark.parametrize("dense,output", [(False, True), (True, True), (True, False)])
def test_the_one_numpy_lstm_equals_the_naive_equations(dense, output):
    """Token ids (the text model) or dense frames (the piano roll), with or without an output
    layer (a NADE reads the top state): one NumPy LSTM, checked against the naive one."""
    rng = np.random.default_rng(3)
    V, E, H, layers = 9, 5, 6, 2
    w = {}
    if not dense:
        w["embedding"] = rng.normal(0, 0.5, (V, E))
    for i in range(layers):
        w[f"lstm_{i}/kernel"] = rng.normal(0, 0.5, (E if i == 0 else H, 4 * H))
        w[f"lstm_{i}/recurrent_kernel"] = rng.normal(0, 0.5, (H, 4 * H))
        w[f"lstm_{i}/bias"] = rng.normal(0, 0.5, 4 * H)
    if output:
        w["logits/kernel"] = rng.normal(0, 0.5, (H, V))
        w["logits/bias"] = rng.normal(0, 0.5, V)
    net = NumpyLSTM(w)
    state = net.initial_state(1)
    got = []
    if dense:
        frames = rng.integers(0, 2, (7, E)).astype(float)
        for f in frames:
            out, state = net.step_frames(f[None], state)
            got.append(out[0])
        want = _naive_lstm(w, frames, layers)
    else:
        ids = rng.integers(0, V, 7)
        for t in ids:
            out, state = net.step(np.array([t]), state)
            got.append(out[0])
        want = _naive_lstm(w, w["embedding"][ids], layers)
    np.testing.assert_allclose(np.array(got), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("batch", [1, 3])
def test_step_halves_give_step_numbers_exactly(exported, batch):
    """recurrent() then finish() (the sampler's pipeline) and step_ids() are step() to the bit,
    also as the batch shrinks."""
    _, net, _ = exported
    x = _tokens(batch + 2, seed=7)
    sa = sb = sc = None
    for t in range(T):
        rows = max(batch + 2 - t // 4, 1)            # rows dropped on the way, as tunes end
        if sa is not None:
            sa, sb, sc = ([(h[:rows], c[:rows]) for h, c in s] for s in (sa, sb, sc))
        sa = sa or net.initial_state(rows)
        sb = sb or net.initial_state(rows)
        sc = sc or net.initial_state(rows)
        la, sa = net.step(x[:rows, t], sa)
        net.recurrent(sb)
        lb, sb = net.finish(x[:rows, t], sb)
        lc, sc = net.step_ids(x[:rows, t], sc)
        np.testing.assert_array_equal(la, lb)
        np.testing.assert_array_equal(la, lc)
        for (ha, ca), (hb, cb), (hc, cc) in zip(sa, sb, sc):
            np.testing.assert_array_equal(ha, hb)
            np.testing.assert_array_equal(ca, cb)
            np.testing.assert_array_equal(ha, hc)


@pytest.mark.parametrize("rows", [2, 3])
def test_a_few_rows_step_as_each_alone(exported, rows):
    """Below ROW_BY_ROW rows the products are made row by row: each row of a step of a few
    has exactly the numbers of that row stepped alone (so a tune of a book of two or three
    is the tune sampled alone, to the bit), and a full batch agrees to float32 rounding."""
    from abcgen.step import ROW_BY_ROW

    _, net, _ = exported
    assert rows < ROW_BY_ROW
    rng = np.random.default_rng(rows)
    state = [(rng.standard_normal((rows, HIDDEN)).astype(np.float32),
              rng.standard_normal((rows, HIDDEN)).astype(np.float32)) for _ in range(net.layers)]
    tok = rng.integers(0, VOCAB, rows)
    logits, new = net.step(tok, state)
    for i in range(rows):
        one, s1 = net.step(tok[i:i + 1], [(h[i:i + 1].copy(), c[i:i + 1].copy()) for h, c in state])
        np.testing.assert_array_equal(one[0], logits[i])
        for (h1, c1), (h, c) in zip(s1, new):
            np.testing.assert_array_equal(h1[0], h[i])
            np.testing.assert_array_equal(c1[0], c[i])
    wide = [(np.concatenate([h] * ROW_BY_ROW), np.concatenate([c] * ROW_BY_ROW)) for h, c in state]
    big, _ = net.step(np.concatenate([tok] * ROW_BY_ROW), wide)
    np.testing.assert_allclose(big[:rows], logits, atol=1e-5)

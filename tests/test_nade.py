"""The joint (NADE) output of the piano-roll model: exact likelihood, sampling, Keras = NumPy."""

import itertools
import json

import numpy as np
import pytest

from abcgen.nade import Nade


def random_nade(keys=5, hidden=4, units=3, seed=0, scale=1.5):
    rng = np.random.default_rng(seed)
    return Nade(rng.normal(0, scale, (keys, hidden)), rng.normal(0, scale, (hidden, keys)),
                rng.normal(0, scale, (units, keys)), rng.normal(0, scale, keys),
                rng.normal(0, scale, (units, hidden)), rng.normal(0, scale, hidden))


def chain_logprob(m: Nade, context, frame):
    """The chain rule written out key by key, with nothing shared: the oracle for Nade.nll."""
    bv = context @ m.bv_kernel + m.bv_bias
    total = 0.0
    for d in range(m.keys):
        a = context @ m.bh_kernel + m.bh_bias
        for k in range(d):
            a = a + frame[k] * m.W[k]
        h = 1 / (1 + np.exp(-a))
        p = 1 / (1 + np.exp(-(bv[d] + h @ m.V[:, d])))
        total += np.log(p if frame[d] else 1 - p)
    return total


def test_nll_is_the_chain_rule():
    m = random_nade()
    rng = np.random.default_rng(1)
    ctx = rng.normal(size=(6, 3))
    frames = rng.integers(0, 2, (6, 5)).astype(float)
    want = [-chain_logprob(m, c, f) for c, f in zip(ctx, frames)]
    np.testing.assert_allclose(m.nll(ctx, frames), want, rtol=1e-12)


def test_probabilities_of_all_frames_sum_to_one():
    m = random_nade(keys=6)
    ctx = np.array([0.3, -1.0, 2.0])
    frames = np.array(list(itertools.product([0, 1], repeat=6)), float)
    p = np.exp(-m.nll(np.broadcast_to(ctx, (len(frames), 3)), frames))
    assert p.sum() == pytest.approx(1.0, abs=1e-12)


def test_draw_follows_the_exact_distribution():
    m = random_nade(keys=3, scale=1.0)
    ctx = np.array([0.5, 0.1, -0.4])
    frames = np.array(list(itertools.product([0, 1], repeat=3)), float)
    exact = np.exp(-m.nll(np.broadcast_to(ctx, (8, 3)), frames))
    n = 40_000
    got = m.draw(np.broadcast_to(ctx, (n, 3)), np.random.default_rng(2))
    codes = (got @ np.array([4, 2, 1])).astype(int)
    freq = np.bincount(codes, minlength=8) / n
    order = (frames @ np.array([4, 2, 1])).astype(int)
    np.testing.assert_allclose(freq[order], exact, atol=0.012)


def test_greedy_decision_takes_each_key_at_one_half():
    m = random_nade(keys=5)
    ctx = np.random.default_rng(3).normal(size=(20, 3))
    g = m.draw(ctx, greedy=True)
    z = m.logits(ctx, g)  # each key's logit given the decided keys below it
    assert np.all((z > 0) == (g > 0.5))


def test_weights_that_do_not_fit_are_refused():
    m = random_nade()
    with pytest.raises(ValueError, match="do not fit"):
        Nade(m.W, m.V.T, m.bv_kernel, m.bv_bias, m.bh_kernel, m.bh_bias)


# --------------------------------------------------------------------------
# Decision rules: marginals, MBR


def all_frames(keys):
    return np.array(list(itertools.product([0, 1], repeat=keys)), float)


def exact_distribution(m: Nade, ctx):
    """Every frame of m.keys keys and its probability, by enumeration (the oracle)."""
    frames = all_frames(m.keys)
    return frames, np.exp(-m.nll(np.broadcast_to(ctx, (len(frames), len(ctx))), frames))


def jaccard(a, b):
    a, b = np.asarray(a) > 0.5, np.asarray(b) > 0.5
    union = np.sum(a | b)
    return np.sum(a & b) / union if union else 1.0


def two_frames_nade(p_low=0.6):
    """4 keys; key 0 sounds with p_low, key 1 sounds exactly when key 0 does, keys 2 and 3
    exactly when it does not: frames {0, 1} (p_low) and {2, 3} (1 - p_low), up to e-5 leaks."""
    W = np.zeros((4, 2)); W[0, 0] = 20.0                  # key 0 on -> hidden 0 on
    V = np.zeros((2, 4)); V[0] = [0, 20, -20, -20]
    bv = np.array([np.log(p_low / (1 - p_low)), -10, 10, 10])
    return Nade(W, V, np.zeros((1, 4)), bv, np.zeros((1, 2)), np.array([-10.0, -10.0]))


def test_mean_jaccard_by_hand():
    from abcgen.nade import mbr_choice, mean_jaccard

    cands = np.array([[[1, 1, 0], [0, 0, 0], [1, 0, 0]]])
    samples = np.array([[[1, 0, 0], [1, 1, 0], [0, 0, 0]]])
    # {0,1}: 1/2, 1, 0 -> 1/2;  {}: 0, 0, 1 (empty vs empty) -> 1/3;  {0}: 1, 1/2, 0 -> 1/2
    np.testing.assert_allclose(mean_jaccard(cands, samples), [[1 / 2, 1 / 3, 1 / 2]], rtol=1e-15)
    assert mbr_choice(cands, samples).tolist() == [[1, 1, 0]]          # tie: the first candidate


def test_mbr_picks_the_expected_jaccard_winner_of_two_frames():
    from abcgen.nade import mean_jaccard

    m = two_frames_nade(0.6)
    ctx = np.zeros((1, 1))
    frames, p = exact_distribution(m, ctx[0])
    a, b, both = [1, 1, 0, 0], [0, 0, 1, 1], [1, 1, 1, 1]
    # By hand: E[J(A)] = 0.6, E[J(B)] = 0.4, E[J(all four)] = 0.6/2 + 0.4/2 = 0.5.
    exact = [sum(q * jaccard(c, f) for f, q in zip(frames, p)) for c in (a, b, both)]
    np.testing.assert_allclose(exact, [0.6, 0.4, 0.5], atol=1e-3)
    drawn, _ = m.paths(ctx, 4000, np.random.default_rng(0))
    np.testing.assert_allclose(mean_jaccard(np.array([[a, b, both]]), drawn)[0], exact, atol=0.02)
    assert m.decide(ctx, "mbr-4000").tolist() == [a]
    # Marginals 0.6, 0.6, 0.4, 0.4: above 0.25 all four keys, above 0.5 frame A.
    np.testing.assert_allclose(m.marginals(ctx, 2000, np.random.default_rng(1)), [[.6, .6, .4, .4]], atol=0.03)
    assert m.decide(ctx, "marginal-500>0.25").tolist() == [both]
    assert m.decide(ctx, "marginal-500>0.5").tolist() == [a]
    assert m.decide(np.zeros((1, 1)), "greedy").tolist() == [a]
    assert two_frames_nade(0.3).decide(ctx, "mbr-2000").tolist() == [b]


def test_mbr_with_every_frame_as_a_candidate_finds_the_brute_force_optimum():
    from abcgen.nade import mbr_choice

    m = random_nade(keys=6, scale=2.0, seed=7)
    ctx = np.array([0.4, -0.2, 1.0])
    frames, p = exact_distribution(m, ctx)
    expected = np.array([sum(q * jaccard(c, f) for f, q in zip(frames, p)) for c in frames])
    best, second = np.sort(expected)[::-1][:2]
    assert best - second > 0.01           # a clear winner, so 20,000 samples settle it
    drawn, _ = m.paths(ctx[None], 20_000, np.random.default_rng(3))
    got = mbr_choice(frames[None].astype(np.uint8), drawn)[0]
    assert got.tolist() == frames[expected.argmax()].tolist()


def test_marginals_are_exact_for_independent_keys_and_unbiased_otherwise():
    m = random_nade(keys=6, scale=1.5, seed=2)
    ctx = np.array([[0.3, -1.0, 2.0], [1.0, 0.5, -0.5]])
    free = Nade(np.zeros_like(m.W), m.V, m.bv_kernel, m.bv_bias, m.bh_kernel, m.bh_bias)
    bv, bh = free.biases(ctx)
    want = 1 / (1 + np.exp(-(bv + (1 / (1 + np.exp(-bh))) @ free.V)))
    np.testing.assert_allclose(free.marginals(ctx, 3, np.random.default_rng(0)), want, rtol=1e-12)
    for c, got in zip(ctx, m.marginals(ctx, 20_000, np.random.default_rng(1))):
        frames, p = exact_distribution(m, c)
        np.testing.assert_allclose(got, p @ frames, atol=0.01)


def test_paths_are_draws_with_their_chain_probabilities_seeded_whatever_the_chunk():
    m = random_nade(keys=5, seed=4)
    ctx = np.random.default_rng(5).normal(size=(7, 3))
    f, p = m.paths(ctx, 6, np.random.default_rng(9))
    assert f.shape == p.shape == (7, 6, 5) and set(np.unique(f)) <= {0, 1}
    z = m.logits(np.repeat(ctx, 6, axis=0), f.reshape(-1, 5).astype(float))
    np.testing.assert_allclose(p.reshape(-1, 5), 1 / (1 + np.exp(-z)), rtol=1e-12)
    f2, p2 = m.paths(ctx, 6, np.random.default_rng(9), chunk=5)
    assert np.array_equal(f, f2) and np.array_equal(p, p2)
    assert not np.array_equal(f, m.paths(ctx, 6, np.random.default_rng(10))[0])
    a = m.decide(ctx, "mbr-16@4")
    assert np.array_equal(a, m.decide(ctx, "mbr-16@4"))
    assert np.array_equal(m.decide(ctx, "marginal-8>0.3"), m.decide(ctx, "marginal-8>0.3@0"))


def test_the_threshold_rule_attains_the_best_summed_frame_accuracy():
    """Brute force over every decision of 3 frames x 3 independent keys (2^9): the decision
    that maximises E[sum TP] / E[sum TP + FP + FN] takes the keys of marginal above r/(1+r)."""
    q = np.array([[0.9, 0.3, 0.1], [0.45, 0.2, 0.05], [0.6, 0.35, 0.15]])
    flat = q.ravel()

    def ratio(c):
        return (flat * c).sum() / (c.sum() + (flat * (1 - c)).sum())

    decisions = all_frames(9)
    scores = np.array([ratio(c) for c in decisions])
    r = scores.max()
    assert np.array_equal(decisions[scores.argmax()], (flat > r / (1 + r)).astype(float))
    assert ratio((flat > 0.5).astype(float)) < r - 0.02      # deciding at 0.5 is worse here


def test_decision_names_round_trip_and_bad_ones_are_refused():
    from abcgen.nade import DEFAULT_DECISION, Decision

    for text in ("greedy", "marginal-128>0.25", "mbr-32", "mbr-16@3", "marginal-8>0.3@2"):
        assert Decision.parse(text).name == text
    assert Decision.parse("marginal-64").threshold == 0.25
    assert DEFAULT_DECISION.name == "marginal-128>0.25"
    assert Decision.parse("mbr-8").to_dict() == {"rule": "mbr", "samples": 8, "threshold": 0.5, "seed": 0}
    for bad in ("vote-3", "mbr-", "mbr-x", "marginal-0>0.2", "marginal-8>1.5", "greedy@2", ""):
        with pytest.raises(ValueError, match="decision"):
            Decision.parse(bad)


# --------------------------------------------------------------------------
# Keras


def test_keras_layer_equals_numpy():
    pytest.importorskip("keras")
    from abcgen.nade import keras_layer

    layer = keras_layer()(keys=5, hidden=4)
    rng = np.random.default_rng(4)
    ctx = rng.normal(size=(2, 7, 3)).astype(np.float32)
    frames = rng.integers(0, 2, (2, 7, 5)).astype(np.float32)
    z = np.asarray(layer([ctx, frames]))
    m = Nade.from_arrays(layer.arrays())
    np.testing.assert_allclose(z, m.logits(ctx, frames), rtol=2e-4, atol=2e-5)


def triads(n, rng, keys=24):
    """Frames that are always a major triad (root, +4, +7) on one of 12 roots, roots uniform."""
    roots = rng.integers(0, 12, n)
    y = np.zeros((n, keys), np.float32)
    for off in (0, 4, 7):
        y[np.arange(n), roots + off] = 1
    return y


@pytest.mark.slow
def test_joint_output_learns_triads_the_independent_one_cannot():
    keras = pytest.importorskip("keras")
    from abcgen.nade import keras_layer

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    train, test = triads(4096, rng), triads(1024, rng)
    ones = np.ones((len(train), 1, 1), np.float32)

    def bce(y, z):
        return keras.ops.sum(keras.ops.binary_crossentropy(y, z, from_logits=True), axis=-1)

    # The joint model: context (a constant: the frames are independent of one another) -> NADE.
    c_in = keras.Input((1, 1))
    y_in = keras.Input((1, 24))
    ctx = keras.layers.Dense(8, activation="tanh")(c_in)
    joint = keras.Model([c_in, y_in], keras_layer()(keys=24, hidden=32, name="nade")([ctx, y_in]))
    joint.compile(keras.optimizers.Adam(0.02), loss=bce)
    joint.fit([ones, train[:, None]], train[:, None], batch_size=256, epochs=40, verbose=0)

    indep = keras.Sequential([keras.Input((1, 1)), keras.layers.Dense(24)])
    indep.compile(keras.optimizers.Adam(0.05), loss=bce)
    indep.fit(ones, train[:, None], batch_size=256, epochs=40, verbose=0)

    one = np.ones((1, 1, 1), np.float32)
    context = np.asarray(joint.layers[1](one))[0, 0]          # the Dense after the input
    m = Nade.from_arrays(joint.get_layer("nade").arrays())
    nll_joint = m.nll(np.broadcast_to(context, (len(test), 8)), test).mean()
    z = np.asarray(indep(one))[0, 0].astype(np.float64)
    nll_indep = -(test * -np.logaddexp(0, -z) + (1 - test) * -np.logaddexp(0, z)).sum(axis=1).mean()

    # Best possible: log 12 = 2.48 nats (a uniform root); independent keys cannot go below the
    # sum of the keys' own entropies, about 8.3 nats here.
    print(f"NLL nats per frame: joint {nll_joint:.3f}, independent {nll_indep:.3f}")
    assert nll_indep > 7.5
    assert nll_joint < 3.0, nll_joint
    def is_triad(s):
        on = np.flatnonzero(s)
        return len(on) == 3 and on[1] - on[0] == 4 and on[2] - on[0] == 7

    drawn = m.draw(np.broadcast_to(context, (500, 8)), np.random.default_rng(5))
    assert np.mean([is_triad(s) for s in drawn]) > 0.9
    indep_drawn = np.random.default_rng(6).random((500, 24)) < 1 / (1 + np.exp(-z))
    assert np.mean([is_triad(s) for s in indep_drawn]) < 0.2


# --------------------------------------------------------------------------
# The piano-roll trainer with --output nade

def test_nade_run_trains_exports_and_samples(tmp_path):
    pytest.importorskip("keras")
    import keras

    from abcgen import pianoroll as P
    from abcgen.pianoroll_train import evaluate_run, settle, train_roll
    from abcgen.runs import RollConfig
    from abcgen.errors import InputError
    from tests.test_pianoroll import JSB, TINY

    run = tmp_path / "run"
    state = train_roll(run, dict(TINY, epochs=2, output="nade", nade_hidden=12), log=lambda m: None)
    assert len(state["history"]) == 2
    for name in ("best.keras", "model.npz", "test.json", "metrics.csv"):
        assert (run / name).is_file(), name

    # The NumPy export gives the Keras model's exact NLL: LSTM step + Nade.nll == Keras' logits.
    model = keras.models.load_model(run / "best.keras")
    roll = P.load_jsb(JSB)["test"][0]
    x = np.concatenate([P.model_input(roll), roll.astype(np.float32)], axis=-1)
    z = np.asarray(model(x[None], training=False), np.float64)[0]
    keras_nll = -(roll * -np.logaddexp(0, -z) + (1 - roll) * -np.logaddexp(0, z)).sum()
    m = P.RollLSTM(run / "model.npz")
    assert m.nade is not None and m.meta["output"] == "nade"
    st, ctx = m.initial_state(), []
    for row in P.model_input(roll):
        h, st = m.step(row, st)
        ctx.append(h)
    numpy_nll = m.nade.nll(np.array(ctx), roll).sum()
    assert numpy_nll == pytest.approx(keras_nll, rel=1e-4)
    r = evaluate_run(run, split="test")
    assert r["output"] == "nade"
    written = json.loads((run / "test.json").read_text())
    assert r["nll_per_frame"] == pytest.approx(written["nll_per_frame"])
    # Frame accuracy: the default rule, seeded (the same figure every time), greedy's beside it.
    from abcgen.nade import DEFAULT_DECISION

    assert written["decision"] == r["decision"] == DEFAULT_DECISION.name
    assert written["decision_params"] == DEFAULT_DECISION.to_dict()
    assert written["frame_accuracy_pct"] == r["frame_accuracy_pct"]
    g = evaluate_run(run, split="test", decision="greedy")
    assert g["frame_accuracy_pct"] == g["greedy_frame_accuracy_pct"] == r["greedy_frame_accuracy_pct"]
    assert (g["fp"], g["fn"]) == (r["greedy_fp"], r["greedy_fn"])
    with pytest.raises(InputError, match="decision rule"):
        evaluate_run(run, split="test", decision="vote")
    # The CLI passes --decision through, and refuses it where there is no NADE run to decide for.
    from typer.testing import CliRunner

    from abcgen.cli import app

    cli = CliRunner()
    res = cli.invoke(app, ["evaluate", "--model", str(run), "--split", "test", "--decision", "greedy", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output.strip().splitlines()[-1])
    assert (out["decision"], out["frame_accuracy_pct"]) == ("greedy", g["frame_accuracy_pct"])
    res = cli.invoke(app, ["evaluate", "--model", str(run), "--split", "test", "--decision", "vote"])
    assert res.exit_code != 0 and "decision rule" in res.output and "Traceback" not in res.output
    res = cli.invoke(app, ["evaluate", "--decision", "greedy", str(tmp_path / "none.abc")])
    assert res.exit_code != 0 and "--decision is for --model" in res.output

    # Sampling draws each frame jointly, seeded; the threshold is deterministic.
    a = P.sample_roll(m, roll[:8], 12, seed=4)
    assert a.shape == (12, 88) and np.array_equal(a, P.sample_roll(m, roll[:8], 12, seed=4))
    t = P.sample_roll(m, roll[:8], 6, threshold=0.5, seed=1)
    assert np.array_equal(t, P.sample_roll(m, roll[:8], 6, threshold=0.5, seed=2))

    with pytest.raises(InputError, match="neither"):
        settle(RollConfig(corpus=JSB, output="nade", pos_weight=2.0))
    with pytest.raises(InputError, match="--output must be one of"):
        settle(RollConfig(corpus=JSB, output="rbm"))


@pytest.mark.slow
def test_nade_from_the_command_line_is_quiet_and_samples(tmp_path):
    import subprocess
    import sys

    from tests.test_pianoroll import JSB

    run = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "abcgen", "train", "--format", "pianoroll", "--corpus", JSB,
                        "--output", "nade", "--nade-hidden", "8", "--hidden", "8", "--window", "8",
                        "--batch-size", "4", "--epochs", "1", "--out", str(run)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    for marker in ("I0000", "E0000", "W0000", "cuInit", "oneDNN", "absl"):
        assert marker not in r.stderr, r.stderr          # TensorFlow's start-up lines silenced
    assert "+ NADE 8" in r.stderr and "NADE output" in r.stderr
    out = tmp_path / "s.mid"
    r = subprocess.run([sys.executable, "-m", "abcgen", "sample", "--format", "pianoroll", "--model", str(run),
                        "-o", str(out), "--length", "6", "--seed", "2"], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:4] == b"MThd" and out.with_suffix(".png").is_file()

"""``abcgen bench ...``: speed measured side by side in one process, reported as ratios.

Absolute times on a shared 2-core machine are noisy; the ratio of two
measurements taken back to back in the same process is what to read.
"""

from __future__ import annotations

import time

import numpy as np


def _corpus_stream(corpus: str, level: str, max_tokens: int):
    from .abc.tokens import Vocabulary
    from .corpus import prepare

    prep = prepare(corpus, progress=False)
    texts = prep.texts("train")
    vocab = Vocabulary.build(texts, level)
    ids, n = [], 0
    for t in texts:
        a = np.asarray(vocab.encode(t), np.int32)
        ids.append(a)
        n += len(a)
        if n >= max_tokens:
            break
    return vocab, np.concatenate(ids)[:max_tokens]


def _timed_fit(model, dataset, warmup_batches: int, batches: int) -> float:
    """Seconds per batch of model.fit, after warm-up (tracing) batches."""
    model.fit(dataset.take(warmup_batches), epochs=1, verbose=0)
    t0 = time.perf_counter()
    model.fit(dataset.take(batches), epochs=1, verbose=0)
    return (time.perf_counter() - t0) / batches


def bench_train(*, corpus: str = "folk", level: str = "char", hidden: int = 512, layers: int = 1,
                batches: int = 20, seq_len: int = 256, batch_size: int = 64, log=print) -> dict:
    """Training throughput of the project's model vs the keras-io character-LSTM pattern."""
    from .train import quiet_tensorflow

    quiet_tensorflow()
    import keras
    import tensorflow as tf

    from .model import build_text_model
    from .train import TrainConfig, compile_model, windows

    need = (batches + 3) * batch_size * seq_len + 1
    vocab, stream = _corpus_stream(corpus, level, need)
    V = len(vocab)
    results = {"corpus": corpus, "level": level, "hidden": hidden, "layers": layers, "vocab": V,
               "cpu_threads": tf.config.threading.get_intra_op_parallelism_threads() or "default"}

    # --- the project's model: embedding, sparse targets at every position, packed windows
    keras.utils.set_random_seed(0)
    model = build_text_model(V, hidden=hidden, layers=layers)
    compile_model(model, TrainConfig(hidden=hidden, layers=layers))
    x, y = windows(stream, seq_len)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size, drop_remainder=True).repeat()
    spb = _timed_fit(model, ds, 2, batches)
    ours = batch_size * seq_len / spb
    results["abcgen_tokens_per_s"] = round(ours, 1)
    results["abcgen_timesteps_per_s"] = round(ours, 1)
    log(f"abcgen model ({layers}x{hidden}, windows of {seq_len}, batch {batch_size}): "
        f"{ours:,.0f} training tokens/s")

    # --- the keras-io reference: one-hot windows of 40, step 3, one target per window, fit
    maxlen, step, ref_batch = 40, 3, 128
    n = min((len(stream) - maxlen) // step, (batches + 2) * ref_batch)
    starts = np.arange(n) * step
    xr = np.zeros((n, maxlen, V), dtype=bool)
    yr = np.zeros((n, V), dtype=bool)
    for i, s in enumerate(starts):
        xr[i, np.arange(maxlen), stream[s:s + maxlen]] = True
        yr[i, stream[s + maxlen]] = True
    keras.utils.set_random_seed(0)
    ref = keras.Sequential([keras.Input((maxlen, V)), *[
        keras.layers.LSTM(hidden, return_sequences=(i < layers - 1)) for i in range(layers)],
        keras.layers.Dense(V, activation="softmax")])
    ref.compile(loss="categorical_crossentropy", optimizer=keras.optimizers.RMSprop(learning_rate=0.01))
    ref.fit(xr[:2 * ref_batch], yr[:2 * ref_batch], batch_size=ref_batch, epochs=1, verbose=0)
    m = min(batches, n // ref_batch - 2) * ref_batch
    t0 = time.perf_counter()
    ref.fit(xr[2 * ref_batch:2 * ref_batch + m], yr[2 * ref_batch:2 * ref_batch + m],
            batch_size=ref_batch, epochs=1, verbose=0)
    dt = time.perf_counter() - t0
    ref_tokens = m / dt
    ref_steps = m * maxlen / dt
    results["reference_tokens_per_s"] = round(ref_tokens, 1)
    results["reference_timesteps_per_s"] = round(ref_steps, 1)
    results["ratio_tokens"] = round(ours / ref_tokens, 2)
    results["ratio_timesteps"] = round(ours / ref_steps, 2)
    log(f"keras-io reference (one-hot windows of {maxlen}, step {step}, batch {ref_batch}, one target "
        f"per window): {ref_tokens:,.0f} training tokens/s ({ref_steps:,.0f} LSTM steps/s)")
    log(f"ratio: {results['ratio_tokens']:.1f}x the reference in training tokens (targets) per second, "
        f"{results['ratio_timesteps']:.2f}x in LSTM steps per second")
    return results


def bench_sample(*, corpus: str = "folk", hidden: int = 512, layers: int = 1, tokens: int = 400,
                 naive_tokens: int = 60, model_path: str | None = None, log=print) -> dict:
    """Tokens/s of the NumPy sampler (1 tune, 64 tunes) beside the naive Keras loop, same model."""
    import os
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from .train import quiet_tensorflow

    quiet_tensorflow()
    import keras

    from . import sample as S
    from .abc.tokens import Vocabulary
    from .corpus import prepare
    from .model import build_text_model, export_npz

    tmp = Path(tempfile.mkdtemp(prefix="abcgen-bench-"))
    if model_path:
        npz = S.resolve_model(model_path)
        m = S.Model(npz)
        vocab = m.vocab
        from .train import load_model

        kmodel = load_model(npz.parent / "best.keras") if (npz.parent / "best.keras").is_file() else None
        if kmodel is None:
            raise RuntimeError("the naive Keras loop needs the run's best.keras beside model.npz")
    else:
        vocab = Vocabulary.build(prepare(corpus, progress=False).texts("train"), "token")
        keras.utils.set_random_seed(0)
        kmodel = build_text_model(len(vocab), hidden=hidden, layers=layers)
        npz = tmp / "model.npz"
        export_npz(kmodel, npz, {"vocab": vocab.to_dict()}, dtype="float32")
        m = S.Model(npz)
    r = {"hidden": hidden, "layers": layers, "vocab": len(vocab), "model": str(npz)}

    def timed(count, at_least=2000):
        """Tokens/s over whole samplings (seeds 1, 2, ...) of `count` tunes, until at
        least `at_least` tokens: one short tune is too brief to time."""
        n, dt, seed = 0, 0.0, 1
        while n < at_least:
            opts = S.SampleOptions(count=count, seed=seed, max_tokens=tokens)
            t0 = time.perf_counter()
            texts = S.sample(m, opts)
            dt += time.perf_counter() - t0
            n += sum(len(vocab.encode(t, add_markers=False)) for t in texts)
            seed += 1
        return n / dt, n

    S.sample(m, S.SampleOptions(count=2, seed=0, max_tokens=20))  # warm-up
    r["numpy_1_tokens_per_s"], n1 = timed(1)
    r["numpy_64_tokens_per_s"], n64 = timed(64)
    log(f"NumPy sampler with the ABC mask, 1 tune: {r['numpy_1_tokens_per_s']:,.0f} tokens/s ({n1} tokens)")
    log(f"NumPy sampler with the ABC mask, 64 tunes: {r['numpy_64_tokens_per_s']:,.0f} tokens/s ({n64} tokens)")

    # The naive loop: model.predict on the whole growing window for every token.
    rng = np.random.default_rng(0)
    seq = [vocab.bos_id]
    kmodel.predict(np.asarray([seq]), verbose=0)
    t0 = time.perf_counter()
    for _ in range(naive_tokens):
        logits = kmodel.predict(np.asarray([seq]), verbose=0)[0, -1].astype(np.float64)
        p = np.exp(logits - logits.max())
        p /= p.sum()
        seq.append(int(rng.choice(len(p), p=p)))
    r["keras_naive_tokens_per_s"] = naive_tokens / (time.perf_counter() - t0)
    r["ratio_1"] = r["numpy_1_tokens_per_s"] / r["keras_naive_tokens_per_s"]
    r["ratio_64"] = r["numpy_64_tokens_per_s"] / r["keras_naive_tokens_per_s"]
    log(f"naive Keras loop (model.predict on the growing window, {naive_tokens} tokens): "
        f"{r['keras_naive_tokens_per_s']:,.1f} tokens/s")
    log(f"ratios: {r['ratio_1']:,.0f}x for one tune, {r['ratio_64']:,.0f}x at batch 64")

    # The whole process, as a user runs it.
    # The child reports its own peak RSS as VmHWM, the high-water mark of its own
    # address space: getrusage's ru_maxrss survives exec on Linux, so it would report
    # this TensorFlow-sized parent's size at fork time.
    probe = ("import runpy, sys\n"
             "sys.argv = ['abcgen', 'sample', '--model', sys.argv[1], '--seed', '1']\n"
             "try:\n    runpy.run_module('abcgen', run_name='__main__')\n"
             "finally:\n    hwm = [ln.split()[1] for ln in open('/proc/self/status') if ln.startswith('VmHWM')]\n"
             "    print('PEAK_RSS_KB', hwm[0] if hwm else 'nan', file=sys.stderr)\n")
    cmd = [sys.executable, "-c", probe, str(npz)]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
    r["process_wall_s"] = time.perf_counter() - t0
    kb = [ln.split()[1] for ln in p.stderr.splitlines() if ln.startswith("PEAK_RSS_KB")]
    r["process_peak_rss_mb"] = int(kb[0]) / 1024 if kb and kb[0].isdigit() else float("nan")
    r["process_ok"] = p.returncode == 0
    log(f"whole process 'abcgen sample > tune.abc': {r['process_wall_s']:.2f} s, "
        f"peak memory {r['process_peak_rss_mb']:.0f} MB (exit {p.returncode})")
    for k, v in list(r.items()):
        if isinstance(v, float):
            r[k] = round(v, 2)
    return r

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

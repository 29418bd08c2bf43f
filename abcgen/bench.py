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
    from .runs import quiet_tensorflow

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
                 naive_tokens: int = 60, model_path: str | None = None, min_tokens: int = 2000,
                 log=print) -> dict:
    """Tokens/s of the NumPy sampler (1 tune, 64 tunes) beside the naive Keras loop, same model."""
    import os
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from .runs import quiet_tensorflow

    quiet_tensorflow()
    import keras

    from . import sample as S
    from .abc.tokens import Vocabulary
    from .corpus import prepare
    from .model import build_text_model, export_npz

    tmp = Path(tempfile.mkdtemp(prefix="abcgen-bench-"))
    if model_path:
        npz = S.resolve_model(None if model_path == "default" else model_path)
        vocab = S.Model(npz).vocab
        from .runs import load_model

        # The naive Keras loop needs the run's Keras model; an exported .npz alone (the
        # shipped model) is timed without it.
        kmodel = load_model(npz.parent / "best.keras") if (npz.parent / "best.keras").is_file() else None
    else:
        vocab = Vocabulary.build(prepare(corpus, progress=False).texts("train"), "token")
        keras.utils.set_random_seed(0)
        kmodel = build_text_model(len(vocab), hidden=hidden, layers=layers)
        npz = tmp / "model.npz"
        export_npz(kmodel, npz, {"vocab": vocab.to_dict()}, dtype="float32")
    r = {"hidden": hidden, "layers": layers, "vocab": len(vocab), "model": str(npz)}

    # Each batch size is timed in its own process with the BLAS threads `abcgen sample`
    # would choose for it (abcgen.threads), unless the environment sets them: threads are
    # fixed when NumPy loads, and one count for all sizes would misstate some.
    # 256 tunes: a book longer than the batch, whose waiting tunes take the rows of ended ones
    for count in (1, 64, 256):
        c = _rates_in_child(npz, count, tokens, min_tokens)
        r[f"numpy_{count}_tokens_per_s"] = c["tokens_per_s"]
        r[f"step_only_{count}_tokens_per_s"] = c["step_only_tokens_per_s"]
        r[f"blas_threads_{count}"] = c["blas_threads"]
        at_once = f" ({S.SAMPLE_BATCH} at once)" if count > S.SAMPLE_BATCH else ""
        log(f"NumPy sampler with the ABC mask, {count} tune{'s' if count > 1 else ''}{at_once}: "
            f"{c['tokens_per_s']:,.0f} tokens/s ({c['tokens']} tokens); the LSTM step alone: "
            f"{c['step_only_tokens_per_s']:,.0f} ({c['blas_threads']} BLAS thread{'s' if c['blas_threads'] != '1' else ''})")
    if kmodel is None:
        log("naive Keras loop: not timed (no best.keras beside the model)")

    # The naive loop: model.predict on the whole growing window for every token.
    if kmodel is not None:
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


def sampler_rates(npz: str, count: int, tokens: int = 400, min_tokens: int = 2000) -> dict:
    """Tokens/s of whole samplings of ``count`` tunes (seeds 1, 2, ... until at least
    ``min_tokens`` tokens: one short tune is too brief to time), and of the LSTM step alone at
    the same batch (no mask, no drawing): the GEMM-bound ceiling that the sampler's per-token
    Python work is measured against.  Uses this process's BLAS threads."""
    from pathlib import Path

    from . import sample as S

    m = S.Model(Path(npz))
    vocab = m.vocab
    S.sample(m, S.SampleOptions(count=2, seed=0, max_tokens=20))  # warm-up
    n, dt, seed = 0, 0.0, 1
    while n < min_tokens:
        opts = S.SampleOptions(count=count, seed=seed, max_tokens=tokens)
        t0 = time.perf_counter()
        texts = S.sample(m, opts)
        dt += time.perf_counter() - t0
        n += sum(len(vocab.encode(t, add_markers=False)) for t in texts)
        seed += 1
    steps = max(20, min_tokens // 8)
    rows = min(count, S.SAMPLE_BATCH)           # a longer book runs that many rows at once
    _, state = m.net.run(np.asarray([vocab.bos_id], dtype=np.int64))
    state = [(np.repeat(h, rows, axis=0), np.repeat(c, rows, axis=0)) for h, c in state]
    tok = np.full(rows, vocab.bos_id, dtype=np.int64)
    m.net.step(tok, state)
    t0 = time.perf_counter()
    for _ in range(steps):
        logits, state = m.net.step(tok, state)
        tok = np.asarray(logits).argmax(axis=-1).astype(np.int64)
    step_only = rows * steps / (time.perf_counter() - t0)
    return {"tokens_per_s": n / dt, "tokens": n, "step_only_tokens_per_s": step_only}


def _rates_in_child(npz, count: int, tokens: int, min_tokens: int) -> dict:
    """sampler_rates in a fresh process whose BLAS threads are chosen for ``count`` tunes."""
    import json
    import os
    import subprocess
    import sys

    from .threads import BLAS_VARS, blas_threads

    env = dict(os.environ)
    n = str(blas_threads(count))
    for var in BLAS_VARS:
        env.setdefault(var, n)
    code = ("import json, sys\n"
            "from abcgen.bench import sampler_rates\n"
            "print(json.dumps(sampler_rates(sys.argv[1], *map(int, sys.argv[2:]))))\n")
    p = subprocess.run([sys.executable, "-c", code, str(npz), str(count), str(tokens), str(min_tokens)],
                       capture_output=True, text=True, env=env)
    if p.returncode != 0:
        tail = (p.stderr.strip().splitlines() or ["no output"])[-1]
        from .errors import AbcgenError

        raise AbcgenError(f"the sampler's timing at {count} tune(s) failed: {tail}")
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out["blas_threads"] = env["OPENBLAS_NUM_THREADS"]
    return out


# --------------------------------------------------------------------------- the studio under load

BENCH_TUNE = ("X:1\nT:Bench jig\nM:6/8\nL:1/8\nK:Gmaj\n"
              "|:GAB d2B|c2A B2G|AGE D2E|G3 G2:|\n|:Bcd g2e|dBG A2B|c2A BAG|A3 A2:|\n")
LIMITS_SERVE = {"count": 2000, "concurrency": 64, "time_limit": 1800}


def _quantiles(xs: list[float]) -> dict:
    if not xs:
        return {"p50_s": None, "p95_s": None, "max_s": None}
    ys = sorted(xs)

    def q(p):  # nearest rank
        return ys[min(len(ys) - 1, max(0, int(np.ceil(p * len(ys))) - 1))]

    return {"p50_s": round(q(0.50), 3), "p95_s": round(q(0.95), 3), "max_s": round(ys[-1], 3)}


def _load(url: str, path: str, bodies: list[dict], concurrency: int, stop_at: float, timeout: float) -> dict:
    """POST every body with ``concurrency`` clients; latencies of the answered ones, errors counted."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    lat: list[float] = []
    errors: dict = {}
    lock = threading.Lock()
    local = threading.local()

    def one(body):
        if time.monotonic() > stop_at:
            with lock:
                errors["not sent (time limit)"] = errors.get("not sent (time limit)", 0) + 1
            return
        c = getattr(local, "client", None)
        if c is None:
            c = local.client = httpx.Client(base_url=url, timeout=timeout)
        t0 = time.perf_counter()
        try:
            r = c.post(path, json=body)
            why = None if r.status_code == 200 else f"HTTP {r.status_code}"
        except httpx.HTTPError as e:
            why = type(e).__name__
        dt = time.perf_counter() - t0
        with lock:
            if why is None:
                lat.append(dt)
            else:
                errors[why] = errors.get(why, 0) + 1

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, bodies))
    wall = time.perf_counter() - t0
    return {"requests": len(bodies), "ok": len(lat), "errors": sum(errors.values()), "error_kinds": errors,
            **_quantiles(lat), "wall_s": round(wall, 2), "per_s": round(len(lat) / wall, 2) if wall else None}


def bench_serve(*, model: str | None = None, count: int = 200, renders: int = 100, concurrency: int = 8,
                max_tokens: int = 1000, slow_bars: int = 480, timeout: float = 60.0,
                time_limit: float = 900.0, log=print) -> dict:
    """``/api/sample`` and ``/api/render`` latencies of a real ``abcgen serve`` on loopback.

    Four phases, each ``concurrency`` clients: samples alone, renders alone,
    then each again while a slow render (a tune of ``slow_bars`` bars, fired
    again whenever it ends or times out) is in flight.  The server is a child
    process listening on 127.0.0.1 only, with ``--timeout timeout``; the whole
    run is bounded by ``time_limit`` seconds (requests not sent by then are
    counted as errors) and the counts by LIMITS_SERVE.
    """
    import os
    import socket
    import subprocess
    import sys
    import tempfile
    import threading

    import httpx

    from .errors import InputError

    if not 1 <= count <= LIMITS_SERVE["count"] or not 1 <= renders <= LIMITS_SERVE["count"]:
        raise InputError(f"--count and --renders must be between 1 and {LIMITS_SERVE['count']}")
    if not 1 <= concurrency <= LIMITS_SERVE["concurrency"]:
        raise InputError(f"--concurrency must be between 1 and {LIMITS_SERVE['concurrency']}")
    if not 0 < time_limit <= LIMITS_SERVE["time_limit"]:
        raise InputError(f"--time-limit must be above 0 and at most {LIMITS_SERVE['time_limit']} s")
    from .render import MAX_BARS

    if not 1 <= slow_bars <= MAX_BARS:
        raise InputError(f"--slow-bars must be between 1 and {MAX_BARS} (longer tunes are refused at once)")
    if not 0 < timeout <= 600:
        raise InputError("--timeout must be above 0 and at most 600 s")

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "abcgen", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--timeout", str(timeout)] + (["--model", str(model)] if model else [])
    said = tempfile.TemporaryFile()
    server = subprocess.Popen(cmd, stdout=said, stderr=said, env=dict(os.environ))
    started = time.monotonic()
    deadline = started + time_limit
    try:
        while True:
            if server.poll() is not None:
                said.seek(0)
                lines = said.read().decode("utf-8", "replace").strip().splitlines()
                raise InputError("the studio did not start: "
                                 + (lines[-1] if lines else f"exit {server.returncode}"))
            try:
                info = httpx.get(url + "/api/model", timeout=2).json()
                break
            except httpx.HTTPError:
                if time.monotonic() - started > 120:
                    raise InputError("the studio did not answer within 120 s") from None
                time.sleep(0.2)
        r: dict = {"model": info.get("name"), "count": count, "renders": renders, "concurrency": concurrency,
                   "max_tokens": max_tokens, "slow_bars": slow_bars, "server_timeout_s": timeout}
        samples = [{"seed": i, "count": 1, "max_tokens": max_tokens} for i in range(count)]
        tunes = [{"abc": BENCH_TUNE.replace("X:1", f"X:{i + 1}", 1), "format": "svg"} for i in range(renders)]
        slow = {"abc": "X:1\nT:Slow\nM:4/4\nL:1/8\nK:D\n" + "|".join(["ABcd efga"] * slow_bars) + "|]\n",
                "format": "svg"}
        # warm-up: the engraving process and each sampling thread's model
        _load(url, "/api/render", tunes[:2], 1, deadline, timeout + 30)
        _load(url, "/api/sample", samples[:2], 2, deadline, timeout + 30)

        def phase(name, path, bodies, with_slow):
            stop = threading.Event()
            slow_runs: list = []

            def keep_slow():
                with httpx.Client(base_url=url, timeout=timeout + 30) as c:
                    while not stop.is_set() and time.monotonic() < deadline:
                        t0 = time.perf_counter()
                        try:
                            code = c.post("/api/render", json=slow).status_code
                        except httpx.HTTPError as e:
                            code = type(e).__name__
                        slow_runs.append((code, round(time.perf_counter() - t0, 1)))

            th = None
            if with_slow:
                th = threading.Thread(target=keep_slow, daemon=True)
                th.start()
                time.sleep(1.0)                     # the slow render is under way
            res = _load(url, path, bodies, concurrency, deadline, timeout + 30)
            stop.set()
            if th is not None:
                res["slow_renders"] = slow_runs + (["(in flight at the end)"] if th.is_alive() else [])
                th.join(timeout + 35)
            r[name] = res
            log(f"{name:28s} {res['ok']:4d} ok {res['errors']:3d} errors   p50 {res['p50_s']} s  "
                f"p95 {res['p95_s']} s  max {res['max_s']} s  ({res['per_s']}/s)"
                + (f"   slow renders: {res['slow_renders']}" if with_slow else ""))

        phase("sample", "/api/sample", samples, False)
        phase("render", "/api/render", tunes, False)
        phase("sample_with_slow_render", "/api/sample", samples, True)
        phase("render_with_slow_render", "/api/render", tunes, True)
        for kind in ("sample", "render"):
            a, b = r[kind]["p95_s"], r[f"{kind}_with_slow_render"]["p95_s"]
            r[f"{kind}_p95_ratio_with_slow_render"] = round(b / a, 2) if a and b else None
        log(f"p95 with a slow render in flight / alone: sample {r['sample_p95_ratio_with_slow_render']}x, "
            f"render {r['render_p95_ratio_with_slow_render']}x")
        r["wall_s"] = round(time.monotonic() - started, 1)
        return r
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(5)
        said.close()

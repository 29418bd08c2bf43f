"""``abcgen evaluate``: a tune book's figures beside a corpus's, and a model's held-out bits.

Tunes (:func:`evaluate_tunes`): each tune is checked in a worker process with a
time limit (:mod:`abcgen.workers`): abc2midi's verdict, music21's parse, the
bars of the meter's length, and, for tunes music21 reads, the canonical
rewrite whose figures (:mod:`abcgen.tunestats`) and shared bars
(:mod:`abcgen.novelty`) are compared with the train split of a reference corpus.

Model (:func:`evaluate_model`): held-out bits per character beside the baselines.

All three figures are on the same text: the canonical model texts of one
split.  Bits per character = total bits over the split (each tune from its
``<s>``, the ``</s>`` prediction included) / the characters of the texts, so
character- and token-level models compare directly.

* the LSTM: a run's best checkpoint (best valid loss) run by Keras, or an
  exported ``.npz`` (such as the shipped model) run by the NumPy step;
* an order-5 modified Kneser-Ney n-gram over the same train tokens (same level);
* xz given the training text: bits of xz(train + test) minus bits of xz(train),
  per test character (and xz of the test text alone, a weaker baseline).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import InputError


def evaluate_model(model: Path | str | None, *, corpus: str | None = None, split: str = "test",
                   baselines: bool = True, log=None, decision: str | None = None) -> dict:
    """Held-out bits of a model: a run directory (its best.keras, with Keras) or an exported
    ``.npz`` (NumPy only); ``None`` is the model that ships with abcgen.  ``decision`` is the
    frame decision of a piano-roll NADE run (abcgen.nade.Decision), refused for other models."""
    from .corpus import SPLITS
    from .sample import resolve_model

    if split not in SPLITS:
        raise InputError(f"--split must be one of {', '.join(SPLITS)}, not {split!r}")
    path = resolve_model(None) if model is None else Path(model).expanduser()
    if path.is_dir():
        return _evaluate_run(path, corpus=corpus, split=split, baselines=baselines, log=log,
                             decision=decision)
    if not path.exists():
        raise InputError("no such model file or run directory", file=str(path))
    if decision is not None:
        raise InputError("--decision is for piano-roll runs with a NADE output, not an exported text model",
                         file=str(path))
    return _evaluate_npz(path, corpus=corpus, split=split, baselines=baselines, log=log)


def _evaluate_run(run_dir: Path, *, corpus, split, baselines, log, decision=None) -> dict:
    from .abc.tokens import Vocabulary
    from .corpus import prepare
    from .runs import RunDir, TrainConfig, load_model, quiet_tensorflow
    from .train import tune_bits

    run = RunDir(run_dir)
    if not (run.path / "config.json").is_file():
        raise InputError(f"{run.path} is not a run directory (no config.json); "
                         "train one with: abcgen train --format abc --out RUN_DIR")
    if run.read_json("config.json").get("format") == "pianoroll":
        from .pianoroll_train import evaluate_run

        return evaluate_run(run.path, corpus=corpus, split=split, log=log, decision=decision)
    if decision is not None:
        raise InputError(f"--decision is for piano-roll runs with a NADE output; {run.path} is a text model")
    cfg = TrainConfig.from_dict(run.read_json("config.json"))
    vocab = Vocabulary.load(run.path / "vocab.json")
    corpus = corpus or cfg.corpus
    prep = prepare(corpus, transpose=cfg.transpose, progress=log is not None)
    texts, tunes = _split_tunes(prep, corpus, split, vocab)

    quiet_tensorflow()
    best = run.path / "best.keras"
    if not best.is_file():
        raise InputError(f"{run.path} has no best.keras yet (no epoch finished)")
    model = load_model(best)
    bits, ntok = tune_bits(model, tunes)
    return _model_figures(str(run.path), "keras", corpus, split, cfg.level, cfg.layers, cfg.hidden,
                          prep, texts, bits, ntok, baselines)


def _evaluate_npz(path: Path, *, corpus, split, baselines, log) -> dict:
    from .abc.tokens import Vocabulary
    from .corpus import prepare
    from .step import NumpyLSTM, load_npz

    weights, meta = load_npz(path)
    try:
        vocab = Vocabulary(meta["vocab"]["symbols"], meta["vocab"]["level"])
    except (KeyError, TypeError) as e:
        raise InputError(f"the model has no vocabulary in its metadata ({e})", file=str(path)) from None
    cfg = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    corpus = corpus or cfg.get("corpus") or "folk"
    prep = prepare(corpus, transpose=cfg.get("transpose", "none"), progress=log is not None)
    texts, tunes = _split_tunes(prep, corpus, split, vocab)
    net = NumpyLSTM(weights)
    bits, ntok = numpy_tune_bits(net, tunes)
    return _model_figures(str(path), "numpy", corpus, split, vocab.level, net.layers, net.hidden,
                          prep, texts, bits, ntok, baselines)


def _split_tunes(prep, corpus: str, split: str, vocab) -> tuple[list, list]:
    texts = prep.texts(split)
    if not texts:
        raise InputError(f"corpus {corpus!r} has no tunes in split {split!r}")
    return texts, [np.asarray(vocab.encode(t), np.int32) for t in texts]


def numpy_tune_bits(net, tunes: list, batch_size: int = 64) -> tuple[float, int]:
    """As train.tune_bits, with the NumPy step: total bits of every tune from its <s>
    (the </s> prediction included) and the number of predicted tokens."""
    from .step import log_softmax, padded_batches

    total, count = 0.0, 0
    for x, y, mask in padded_batches(tunes, batch_size):
        n = x.shape[1]
        rows = np.arange(len(x))
        state = net.initial_state(len(x))
        for t in range(n):
            logits, state = net.step(x[:, t], state)
            lp = log_softmax(logits)[rows, y[:, t]].astype(np.float64)
            total -= float(lp[mask[:, t]].sum())
        count += int(mask.sum())
    return total / LN2, count


LN2 = float(np.log(2.0))


def _model_figures(name, engine, corpus, split, level, layers, hidden, prep, texts, bits, ntok,
                   baselines) -> dict:
    from .baselines import ngram_bits_per_char, xz_bits

    chars = sum(len(t) for t in texts)
    out = {
        "model": name, "engine": engine, "corpus": corpus, "split": split, "level": level,
        "layers": layers, "hidden": hidden,
        "test_tunes": len(texts), "test_chars": chars, "test_tokens": ntok,
        "bits_per_char": round(bits / chars, 5),
        "bits_per_token": round(bits / ntok, 5),
        "perplexity": round(2 ** (bits / ntok), 4),
    }
    if baselines:
        train_texts = prep.texts("train")
        ng = ngram_bits_per_char(train_texts, texts, level, order=5)
        out["ngram_order"] = 5
        out["ngram_bits_per_char"] = round(ng["bits_per_char"], 5)
        out["ngram_bits_per_token"] = round(ng["bits_per_token"], 5)
        xz = xz_bits("".join(train_texts), "".join(texts))
        out["xz_bits_per_char"] = round(xz["bits_per_char"], 5)
        out["xz_alone_bits_per_char"] = round(xz["alone_bits_per_char"], 5)
    return out


def format_model_report(r: dict) -> str:
    if r.get("format") == "pianoroll":
        from .pianoroll_train import format_report

        return format_report(r)
    lines = [f"{r['split']} split of {r['corpus']}: {r['test_tunes']} tunes, {r['test_chars']:,} characters, "
             f"{r['test_tokens']:,} {r['level']} tokens",
             f"  LSTM {r['layers']}x{r['hidden']} ({r['level']}, {r['engine']}): {r['bits_per_char']:.4f} bits/char, "
             f"{r['bits_per_token']:.4f} bits/token, perplexity {r['perplexity']:.3f}"]
    if "ngram_bits_per_char" in r:
        lines.append(f"  {r['ngram_order']}-gram Kneser-Ney ({r['level']}): {r['ngram_bits_per_char']:.4f} bits/char, "
                     f"{r['ngram_bits_per_token']:.4f} bits/token")
        lines.append(f"  xz given the train text: {r['xz_bits_per_char']:.4f} bits/char "
                     f"(xz of the test text alone: {r['xz_alone_bits_per_char']:.4f})")
    return "\n".join(lines)


# --------------------------------------------------------------------------
# A tune book


def _check_one(tune) -> dict:
    """One tune, in a worker: abc2midi (accepted? bars it says are wrong), abcgen's reader (the
    bars as read, against the meter), the form figures and the canonical rewrite's figures."""
    import shutil
    import tempfile

    from .abc.reader import parse_abc
    from .abc.writer import model_text, write_abc
    from .errors import AbcgenError
    from .roundtrip import abc2midi_check
    from .tunestats import score_bars, tune_form, tune_stats, wrong_bar_warnings
    from .workers import send_partial

    r = {"music21": False, "reason": None, "abc2midi": None, "abc2midi_wrong_bars": None, "bars": 0,
         "wrong_bars": 0, "stats": None, "form": None}
    if shutil.which("abc2midi"):   # first, so that its verdict survives a time-out of the rest
        with tempfile.TemporaryDirectory() as d:
            try:
                res = abc2midi_check(tune.text, d)
                r["abc2midi"] = res["rc"] == 0 and not res["errors"]
                if r["abc2midi"]:
                    r["abc2midi_wrong_bars"] = wrong_bar_warnings(res["warnings"])
            except Exception:      # a hang (subprocess timeout) or a MIDI file we cannot read
                r["abc2midi"] = False
        send_partial({"abc2midi": r["abc2midi"], "abc2midi_wrong_bars": r["abc2midi_wrong_bars"]})
    score = canonical = None
    try:
        score = parse_abc(tune.text, file=tune.file, x=tune.x, line=tune.line)
        r["music21"] = True
    except AbcgenError as e:
        r["reason"] = e.message
    if score is not None:
        r["bars"], r["wrong_bars"] = score_bars(score)
        try:
            canonical = model_text(write_abc(score))
        except Exception:  # the writer cannot express it: no figures for this tune
            canonical = None
    for text in (model_text(tune.text), canonical):
        if text is None:
            continue
        try:   # the tune's own text when it is canonical, else its canonical rewrite
            r["form"] = tune_form(text)
            break
        except (AbcgenError, ValueError):
            pass
    if canonical is not None:
        try:
            r["stats"] = tune_stats(canonical)
        except AbcgenError:
            pass
    return r


def check_tunes(tunes: list, *, jobs: int = 0, timeout: float | None = 20.0, progress=None) -> list[dict]:
    """_check_one for every tune in worker processes; a tune past ``timeout`` seconds fails."""
    import music21  # noqa: F401  -- imported once here, inherited by the forked workers

    from .workers import timed_map

    def timed_out(tune, partial):
        return {"music21": False, "timeout": True, "abc2midi": partial.get("abc2midi"),
                "abc2midi_wrong_bars": partial.get("abc2midi_wrong_bars"),
                "reason": f"reading did not finish within {timeout:g} s (stopped)",
                "bars": 0, "wrong_bars": 0, "stats": None, "form": None}

    def failed(tune, partial, why):
        return {"music21": False, "abc2midi": partial.get("abc2midi"),
                "abc2midi_wrong_bars": partial.get("abc2midi_wrong_bars"), "reason": why,
                "bars": 0, "wrong_bars": 0, "stats": None, "form": None}

    return timed_map(_check_one, tunes, jobs=jobs, timeout=timeout, on_timeout=timed_out,
                     on_error=failed, progress=progress)


def reference_figures(against: str, *, log=None) -> dict:
    """Histograms and the bar index of a corpus's train split, cached beside the prepared corpus."""
    import json

    from .corpus import prepare
    from .fileio import atomic_write_text
    from .novelty import BarIndex
    from .tunestats import form_summary, histograms, tune_form, tune_stats

    prep = prepare(against, progress=log is not None)
    cache = prep.cache_dir / f"evaluate-reference-{_REF_FORMAT}.json" if prep.cache_dir else None
    data = None
    if cache is not None and cache.is_file():
        try:
            data = json.loads(cache.read_text("utf-8"))
        except (OSError, ValueError):
            data = None
    if data is None:
        stats, forms, skipped = [], [], 0
        for t in prep.split("train"):
            text = _model_text(t["abc"])
            try:
                st = tune_stats(text)
                forms.append(tune_form(text, st))
            except InputError:
                skipped += 1
                continue
            stats.append(st)
        hist = histograms(stats)
        data = {"corpus": prep.name, "tunes": len(stats), "skipped": skipped,
                "histograms": {k: [[key, n] for key, n in v.items()] for k, v in hist.items()},
                "bars": [s["bar_texts"] for s in stats], "form": form_summary(forms)}
        if cache is not None:
            try:
                atomic_write_text(cache, json.dumps(data, ensure_ascii=False))
            except OSError as e:
                if log:
                    log(f"abcgen: warning: cannot cache the reference figures in {cache}: {e}")
    from collections import Counter

    return {"corpus": data["corpus"], "tunes": data["tunes"], "form": data["form"],
            "histograms": {k: Counter({key: n for key, n in v}) for k, v in data["histograms"].items()},
            "index": BarIndex(data["bars"])}


_REF_FORMAT = 2


def _model_text(abc: str) -> str:
    from .abc.writer import model_text

    return model_text(abc)


def evaluate_tunes(path: Path, jobs: int = 0, *, timeout: float | None = 20.0, against: str | None = None,
                   log=None) -> dict:
    """Figures of a tune book: validity, and with ``against`` its histograms, their overlap with the
    reference corpus's train split, structure and novelty (see the module docs)."""
    from .abc.reader import read_book
    from .corpus import Progress
    from .tunestats import HISTOGRAMS, form_summary, histograms, jsonable, overlap, summary

    tunes = read_book(path)
    if not tunes:
        raise InputError("no tune in this file", file=str(path))
    ref = reference_figures(against, log=log) if against else None
    bar = Progress(f"evaluate {Path(path).name}", len(tunes)) if log else None
    rs = check_tunes(tunes, jobs=jobs, timeout=timeout, progress=bar.step if bar else None)
    if bar:
        bar.done()
    n = len(rs)
    bars = sum(r["bars"] for r in rs)
    wrong = sum(r["wrong_bars"] for r in rs)
    failures = [{"x": t.x, "line": t.line, "reason": r["reason"]}
                for t, r in zip(tunes, rs) if not r["music21"]]
    out = {"file": str(path), "tunes": n,
           "music21_parse_pct": round(100 * sum(r["music21"] for r in rs) / n, 3),
           "music21_timeouts": sum(1 for r in rs if r.get("timeout")),
           "music21_failures": failures,
           "complete_bars": bars, "wrong_bars": wrong,
           "bars_right_pct": round(100 * (bars - wrong) / bars, 3) if bars else None}
    if all(r["abc2midi"] is not None for r in rs):
        out["abc2midi_ok_pct"] = round(100 * sum(r["abc2midi"] for r in rs) / n, 3)
        played = [r["abc2midi_wrong_bars"] for r in rs if r["abc2midi_wrong_bars"] is not None]
        out["abc2midi_wrong_bars"] = sum(played)
        out["abc2midi_bars_right_tunes_pct"] = (round(100 * sum(w == 0 for w in played) / len(played), 3)
                                                if played else None)
    out["form"] = form_summary([r["form"] for r in rs if r["form"] is not None])
    stats = [r["stats"] for r in rs if r["stats"] is not None]
    hist = histograms(stats)
    out["measured_tunes"] = len(stats)
    out.update(summary(hist))
    out["histograms"] = {k: jsonable(hist[k]) for k in HISTOGRAMS}
    if ref is not None:
        rh = ref["histograms"]
        out["against"] = against
        out["reference_corpus"] = ref["corpus"]
        out["reference_tunes"] = ref["tunes"]
        out["reference_histograms"] = {k: jsonable(rh[k]) for k in HISTOGRAMS}
        out["reference_form"] = ref["form"]
        out.update({f"reference_{k}": v for k, v in summary(rh).items()})
        for k in HISTOGRAMS:
            ov = overlap(hist[k], rh[k])
            out[f"overlap_{k}"] = None if ov is None else round(ov, 4)
        from .novelty import novelty

        nov = novelty(ref["index"], [s["bar_texts"] for s in stats])
        nov.pop("runs", None)
        out.update(nov)
    return out


def format_tunes_report(r: dict) -> str:
    from collections import Counter

    lines = [f"{r['file']}: {r['tunes']} tunes",
             f"  read by abcgen into a music21 score: {r['music21_parse_pct']:.2f} %"
             + (f" ({r['music21_timeouts']} stopped after the time limit)" if r.get("music21_timeouts") else "")]
    fails = r.get("music21_failures") or []
    if fails:
        why = Counter(_reason_kind(f["reason"]) for f in fails)
        for reason, k in why.most_common(5):
            lines.append(f"    {k:5d} x {reason}")
        for f in fails[:3]:
            lines.append(f"    e.g. line {f['line']} X:{f['x']}: {f['reason']}")
    if "abc2midi_ok_pct" in r:
        lines.append(f"  accepted by abc2midi: {r['abc2midi_ok_pct']:.2f} %")
    if r["bars_right_pct"] is not None:
        lines.append(f"  complete bars with the meter's length, as abcgen reads them: {r['bars_right_pct']:.2f} % "
                     f"({r['wrong_bars']} wrong of {r['complete_bars']})")
    if r.get("abc2midi_bars_right_tunes_pct") is not None:
        lines.append(f"  tunes with no wrong bar as abc2midi plays them: {r['abc2midi_bars_right_tunes_pct']:.2f} % "
                     f"({r['abc2midi_wrong_bars']} wrong bars)")
    lines.extend(_form_lines(r.get("form") or {}, r.get("reference_form"), r.get("reference_corpus")))
    if "measured_tunes" not in r:
        return "\n".join(lines)
    ref = "reference_tunes" in r
    lines.append(f"  figures of the {r['measured_tunes']} tunes read"
                 + (f", beside the train split of {r['reference_corpus']} ({r['reference_tunes']} tunes):"
                    if ref else ":"))

    def fmt(x):
        return "-" if x is None else f"{x:.2f}"

    for label, k in (("mean length in bars", "mean_bars"), ("mean parts", "mean_parts"),
                     ("mean repeat signs", "mean_repeats"), ("mean pitch span (semitones)", "mean_span"),
                     ("mean |interval| (semitones)", "mean_abs_interval")):
        lines.append(f"    {label:<30}{fmt(r.get(k)):>8}" + (f"{fmt(r.get('reference_' + k)):>10}" if ref else ""))
    if ref:
        from .tunestats import HISTOGRAMS

        lines.append("  overlap with the reference (1 - total variation distance): "
                     + ", ".join(f"{k} {fmt(r.get('overlap_' + k))}" for k in HISTOGRAMS))
        if r.get("novelty_tunes"):
            lines.append(f"  novelty: longest run of bars shared with one training tune: mean "
                         f"{r['longest_shared_run_mean']:.2f}, median {r['longest_shared_run_median']:g}, "
                         f"max {r['longest_shared_run_max']}; {r['copies_4_bars_pct']:.2f} % of the tunes "
                         "copy 4 or more consecutive bars")
    return "\n".join(lines)


def _form_lines(form: dict, ref: dict | None, ref_name: str | None) -> list[str]:
    """The form table: the tunes' figures beside the reference corpus's train split."""
    from .tunestats import FORM_ROWS

    if not form.get("tunes"):
        return []

    def cell(d, k, unit):
        v = None if d is None else d.get(k)
        return "-" if v is None else f"{v:g}{' %' if unit else ''}"

    head = f"  form of the {form['tunes']} tunes"
    lines = [head + (f", beside the train split of {ref_name} ({ref['tunes']} tunes):" if ref else ":")]
    for label, k, unit in FORM_ROWS:
        lines.append(f"    {label:<38}{cell(form, k, unit):>9}" + (f"{cell(ref, k, unit):>10}" if ref else ""))
    return lines


def _reason_kind(reason: str) -> str:
    import re

    if "did not finish within" in reason:
        return "music21 time limit"
    m = re.match(r"music21 cannot parse this tune \((\w+)", reason)
    return f"music21 error ({m.group(1)})" if m else reason[:60]


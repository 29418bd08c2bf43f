"""``abcgen evaluate --model RUN_DIR``: held-out bits per character beside the baselines.

All three figures are on the same text: the canonical model texts of one
split.  Bits per character = total bits over the split (each tune from its
``<s>``, the ``</s>`` prediction included) / the characters of the texts, so
character- and token-level models compare directly.

* the LSTM: the run's best checkpoint (best valid loss);
* an order-5 modified Kneser-Ney n-gram over the same train tokens (same level);
* xz given the training text: bits of xz(train + test) minus bits of xz(train),
  per test character (and xz of the test text alone, a weaker baseline).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import InputError


def evaluate_model(run_dir: Path, *, corpus: str | None = None, split: str = "test",
                   baselines: bool = True, log=None) -> dict:
    from .abc.tokens import Vocabulary
    from .baselines import ngram_bits_per_char, xz_bits
    from .corpus import SPLITS, prepare
    from .train import RunDir, TrainConfig, load_model, quiet_tensorflow, tune_bits

    if split not in SPLITS:
        raise InputError(f"--split must be one of {', '.join(SPLITS)}, not {split!r}")
    run = RunDir(run_dir)
    if not (run.path / "config.json").is_file():
        raise InputError(f"{run.path} is not a run directory (no config.json); "
                         "train one with: abcgen train --format abc --out RUN_DIR")
    if run.read_json("config.json").get("format") == "pianoroll":
        from .pianoroll_train import evaluate_run

        return evaluate_run(run.path, corpus=corpus, split=split, log=log)
    cfg = TrainConfig.from_dict(run.read_json("config.json"))
    vocab = Vocabulary.load(run.path / "vocab.json")
    corpus = corpus or cfg.corpus
    prep = prepare(corpus, transpose=cfg.transpose, progress=log is not None)
    texts = prep.texts(split)
    if not texts:
        raise InputError(f"corpus {corpus!r} has no tunes in split {split!r}")
    tunes = [np.asarray(vocab.encode(t), np.int32) for t in texts]
    chars = sum(len(t) for t in texts)

    quiet_tensorflow()
    best = run.path / "best.keras"
    if not best.is_file():
        raise InputError(f"{run.path} has no best.keras yet (no epoch finished)")
    model = load_model(best)
    bits, ntok = tune_bits(model, tunes)
    out = {
        "model": str(run.path), "corpus": corpus, "split": split, "level": cfg.level,
        "layers": cfg.layers, "hidden": cfg.hidden,
        "test_tunes": len(texts), "test_chars": chars, "test_tokens": ntok,
        "bits_per_char": round(bits / chars, 5),
        "bits_per_token": round(bits / ntok, 5),
        "perplexity": round(2 ** (bits / ntok), 4),
    }
    if baselines:
        train_texts = prep.texts("train")
        ng = ngram_bits_per_char(train_texts, texts, cfg.level, order=5)
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
             f"  LSTM {r['layers']}x{r['hidden']} ({r['level']}): {r['bits_per_char']:.4f} bits/char, "
             f"{r['bits_per_token']:.4f} bits/token, perplexity {r['perplexity']:.3f}"]
    if "ngram_bits_per_char" in r:
        lines.append(f"  {r['ngram_order']}-gram Kneser-Ney ({r['level']}): {r['ngram_bits_per_char']:.4f} bits/char, "
                     f"{r['ngram_bits_per_token']:.4f} bits/token")
        lines.append(f"  xz given the train text: {r['xz_bits_per_char']:.4f} bits/char "
                     f"(xz of the test text alone: {r['xz_alone_bits_per_char']:.4f})")
    return "\n".join(lines)



def _validity_one(tune) -> dict:
    """Does one tune parse with music21 and abc2midi, and how many complete bars have the meter's length?"""
    import shutil
    import tempfile

    from .abc.grammar import check_bars
    from .abc.reader import parse_abc
    from .abc.writer import model_text, write_abc
    from .errors import AbcgenError
    from .roundtrip import abc2midi_check

    r = {"music21": False, "abc2midi": None, "bars": 0, "wrong_bars": 0}
    try:
        score = parse_abc(tune.text, file=tune.file, x=tune.x, line=tune.line)
        r["music21"] = True
    except AbcgenError:
        score = None
    if shutil.which("abc2midi"):
        with tempfile.TemporaryDirectory() as d:
            res = abc2midi_check(tune.text, d)
        r["abc2midi"] = res["rc"] == 0 and not res["errors"]
    try:
        r["bars"], r["wrong_bars"] = check_bars(model_text(tune.text))
    except (AbcgenError, ValueError):
        if score is not None:  # not canonical: measure its canonical rewrite
            try:
                r["bars"], r["wrong_bars"] = check_bars(model_text(write_abc(score)))
            except (AbcgenError, ValueError):
                pass
    return r


def evaluate_tunes(path: Path, jobs: int = 0) -> dict:
    """Validity figures of a tune book: parse shares and bar lengths."""
    from .abc.reader import read_book
    from .corpus import parallel_map

    tunes = read_book(path)
    if not tunes:
        raise InputError("no tune in this file", file=str(path))
    rs = parallel_map(_validity_one, tunes, jobs, progress=None)
    n = len(rs)
    bars = sum(r["bars"] for r in rs)
    wrong = sum(r["wrong_bars"] for r in rs)
    out = {"file": str(path), "tunes": n,
           "music21_parse_pct": round(100 * sum(r["music21"] for r in rs) / n, 3),
           "complete_bars": bars, "wrong_bars": wrong,
           "bars_right_pct": round(100 * (bars - wrong) / bars, 3) if bars else None}
    if all(r["abc2midi"] is not None for r in rs):
        out["abc2midi_ok_pct"] = round(100 * sum(r["abc2midi"] for r in rs) / n, 3)
    return out


def format_tunes_report(r: dict) -> str:
    lines = [f"{r['file']}: {r['tunes']} tunes",
             f"  parse with music21: {r['music21_parse_pct']:.2f} %"]
    if "abc2midi_ok_pct" in r:
        lines.append(f"  accepted by abc2midi: {r['abc2midi_ok_pct']:.2f} %")
    if r["bars_right_pct"] is not None:
        lines.append(f"  complete bars with the meter's length: {r['bars_right_pct']:.2f} % "
                     f"({r['wrong_bars']} wrong of {r['complete_bars']})")
    return "\n".join(lines)

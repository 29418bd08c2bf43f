"""Commands that serve the model: train, sample, export, evaluate, and the benchmarks."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from ..runs import default_note as _d
from .common import fail, handled, log, print_json_last, require_train_extra

bench_app = typer.Typer(no_args_is_help=True, help="Speed measured side by side, reported as ratios.")


def _trainer(out: Path, fmt: Optional[str], resume: bool):
    """``--format`` dispatch: the train function of the format asked for (resuming: the run's own)."""
    from ..errors import InputError
    from ..runs import run_format

    fmt = run_format(out, fmt, resume)
    if fmt == "pianoroll":
        from ..pianoroll_train import train_roll

        return train_roll
    if fmt != "abc":
        raise InputError(f"--format must be abc or pianoroll, not {fmt!r}")
    from ..train import train as train_text

    return train_text


@handled
def train(
    out: Path = typer.Option(..., "--out", "-o", help="Run directory (config, vocabulary, checkpoints, metrics)."),
    fmt: Optional[str] = typer.Option(None, "--format", help="abc (the text model) | pianoroll (default abc; "
                                                             "on --resume, the run's)."),
    corpus: Optional[str] = typer.Option(None, "--corpus", "-c", help=f"Corpus name or path {_d('corpus')}."),
    level: Optional[str] = typer.Option(None, "--level", help=f"abc: char | token {_d('level')}."),
    layers: Optional[int] = typer.Option(None, "--layers", help=f"LSTM layers {_d('layers')}."),
    hidden: Optional[int] = typer.Option(None, "--hidden", help=f"LSTM units per layer {_d('hidden')}."),
    embed_dim: Optional[int] = typer.Option(None, "--embed-dim", help=f"abc: embedding size {_d('embed_dim')}."),
    dropout: Optional[float] = typer.Option(None, "--dropout", help=f"Dropout before the output layer "
                                                                    f"{_d('dropout')}."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help=f"Last epoch to train {_d('epochs')}."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help=f"Windows per batch {_d('batch_size')}."),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", help=f"abc: tokens per training window "
                                                                  f"{_d('seq_len')}."),
    lr: Optional[float] = typer.Option(None, "--lr", help=f"Adam learning rate {_d('lr')}."),
    patience: Optional[int] = typer.Option(None, "--patience", help=f"Epochs without valid improvement before "
                                                                    f"stopping {_d('patience')}."),
    seed: Optional[int] = typer.Option(None, "--seed", help=f"Random seed {_d('seed')}."),
    transpose: Optional[str] = typer.Option(None, "--transpose", help=f"abc: none | C | all {_d('transpose')}."),
    max_train_tokens: Optional[int] = typer.Option(None, "--max-train-tokens",
                                                   help="abc: use only this many train tokens per epoch (0: all)."),
    distribute: Optional[str] = typer.Option(None, "--distribute", help="none | mirrored (all GPUs of this host) | "
                                             "multiworker (several hosts: TF_CONFIG, or --workers and --index)."),
    workers: Optional[str] = typer.Option(None, "--workers", help="multiworker: host:port of every worker, worker 0 "
                                                                 "the chief (writes TF_CONFIG; implies "
                                                                 "--distribute multiworker)."),
    index: Optional[int] = typer.Option(None, "--index", help="multiworker: this worker's place in --workers."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    window: Optional[int] = typer.Option(None, "--window", help=f"pianoroll: frames per training window "
                                                                f"{_d('window')}."),
    frames: Optional[str] = typer.Option(None, "--frames", help="pianoroll: frames per second (10) or one "
                                                                "frame per 1/16, 1/8, 1/4 note."),
    pitches: Optional[int] = typer.Option(None, "--pitches", help="pianoroll: 88 keys or 128 MIDI pitches."),
    onsets: Optional[bool] = typer.Option(None, "--onsets/--no-onsets", help="pianoroll: an onset block "
                                                                             "(repeated notes stay distinct)."),
    loss: Optional[str] = typer.Option(None, "--loss", help=f"pianoroll: bce | focal {_d('loss')}."),
    pos_weight: Optional[float] = typer.Option(None, "--pos-weight", help=f"pianoroll: weight of sounding "
                                                                          f"notes in the loss {_d('pos_weight')}."),
    focal_gamma: Optional[float] = typer.Option(None, "--focal-gamma", help=f"pianoroll: focal loss gamma "
                                                                            f"{_d('focal_gamma')}."),
    max_pieces: Optional[int] = typer.Option(None, "--max-pieces", help="pianoroll: first N pieces only (0: all)."),
    output_kind: Optional[str] = typer.Option(None, "--output", help="pianoroll: independent (a sigmoid per key) "
                                                                     "| nade (the keys of a frame jointly) "
                                                                     f"{_d('output')}."),
    nade_hidden: Optional[int] = typer.Option(None, "--nade-hidden", help=f"pianoroll: hidden units of the NADE "
                                                                          f"output {_d('nade_hidden')}."),
):
    """Train the LSTM on a prepared corpus, with a checkpoint every epoch.

    Defaults are given per format where they differ (abc: the text model;
    pianoroll: the piano-roll model)."""
    require_train_extra("train")
    from ..abc.tokens import LEVELS

    if level is not None and level not in LEVELS:
        fail(f"--level must be one of {', '.join(LEVELS)}, not {level!r}")
    if workers is not None or index is not None:
        from ..runs import set_tf_config

        if workers is None:
            fail("--index goes with --workers host:port,host:port,...")
        if distribute not in (None, "multiworker"):
            fail(f"--workers is for --distribute multiworker, not {distribute}")
        distribute = "multiworker"
        set_tf_config(workers, index)  # an InputError: one line, exit 2 (@handled)
    given = dict(format=fmt, corpus=corpus, level=level, layers=layers, hidden=hidden,
                 embed_dim=embed_dim, dropout=dropout, epochs=epochs, batch_size=batch_size,
                 seq_len=seq_len, lr=lr, patience=patience, seed=seed, transpose=transpose,
                 max_train_tokens=max_train_tokens, distribute=distribute)
    roll_opts = dict(window=window, frames=frames, pitches=pitches, onsets=onsets, loss=loss,
                     pos_weight=pos_weight, focal_gamma=focal_gamma, max_pieces=max_pieces,
                     output=output_kind, nade_hidden=nade_hidden)
    given.update({k: v for k, v in roll_opts.items() if v is not None})
    state = _trainer(out, fmt, resume)(out, given, resume=resume, log=log)
    log(f"done: best epoch {state.get('best_epoch')}, run in {out}")


@bench_app.command("train")
@handled
def bench_train(
    corpus: str = typer.Option("folk", "--corpus", "-c", help="Corpus whose train text is used."),
    level: str = typer.Option("char", "--level", help="char | token."),
    hidden: int = typer.Option(512, "--hidden"),
    layers: int = typer.Option(1, "--layers"),
    batches: int = typer.Option(20, "--batches", help="Timed batches per model."),
    json_out: bool = typer.Option(False, "--json", help="Last line of stdout: the figures as JSON."),
):
    """Training tokens/s of abcgen's model beside the keras-io character-LSTM reference."""
    require_train_extra("bench train")
    from .. import bench

    r = bench.bench_train(corpus=corpus, level=level, hidden=hidden, layers=layers, batches=batches,
                          log=lambda m: print(m, flush=True))
    if json_out:
        print_json_last(r)


@handled
def evaluate(
    tunes: Optional[Path] = typer.Argument(None, help="A tune book to check (generated or real)."),
    against: str = typer.Option("folk", "--against", "-a",
                                help="Compare the tunes with this corpus's train split (name or path; "
                                     "'none': no comparison)."),
    report_dir: Optional[Path] = typer.Option(None, "-O", "--report-dir",
                                              help="Write report.md, report.json and PNG plots here."),
    timeout: float = typer.Option(20.0, "--timeout", help="Seconds allowed per tune (music21 parse etc.)."),
    jobs: int = typer.Option(0, "--jobs", "-j", help="Worker processes (0: all cores)."),
    model: Optional[Path] = typer.Option(None, "--model", "-m",
                                         help="A run directory or an exported .npz [the shipped model "
                                              "when --corpus or --split is given]."),
    corpus: Optional[str] = typer.Option(None, "--corpus", "-c", help="Corpus for the bits [the model's]."),
    split: Optional[str] = typer.Option(None, "--split", help="train | valid | test [test]."),
    baselines: bool = typer.Option(True, "--baselines/--no-baselines",
                                   help="Also the 5-gram Kneser-Ney and xz baselines."),
    decision: Optional[str] = typer.Option(None, "--decision",
                                           help="Piano-roll NADE runs: the frame decision behind frame accuracy, "
                                                "marginal-S>T | mbr-S | greedy, optional @SEED [marginal-128>0.25]."),
    json_out: bool = typer.Option(False, "--json", help="Last line of stdout: the figures as JSON."),
):
    """Tunes: validity, histograms, structure and novelty beside a corpus; a model: held-out bits."""
    from .. import evaluate as ev

    use_model = model is not None or corpus is not None or split is not None
    if tunes is None and not use_model:
        fail("give a tune book to check, or --model RUN_DIR|MODEL.npz / --corpus C --split S (or both)")
    if timeout <= 0:
        fail("--timeout must be positive")
    if decision is not None and not use_model:
        fail("--decision is for --model RUN_DIR (a piano-roll run with --output nade)")
    if report_dir is not None and tunes is None:
        fail("-O REPORT_DIR needs a tune book")
    if model is not None and Path(model).expanduser().is_dir():
        require_train_extra("evaluate --model RUN_DIR")
    if report_dir is not None:
        from ..fileio import check_writable_dir, refuse_overwrite

        check_writable_dir(report_dir, "-O")
        refuse_overwrite([report_dir / n for n in ("report.md", "report.json")], [tunes])
    r = {}
    if tunes is not None:
        ref = None if against.lower() == "none" else against
        r.update(ev.evaluate_tunes(tunes, jobs=jobs, timeout=timeout, against=ref, log=log))
        print(ev.format_tunes_report(r))
    if use_model:
        m = ev.evaluate_model(model, corpus=corpus, split=split or "test", baselines=baselines, log=log,
                              decision=decision)
        print(ev.format_model_report(m))
        r.update(m)
    if report_dir is not None:
        from .. import evalreport

        try:
            log(f"wrote {evalreport.write_report(r, report_dir)}")
        except OSError as e:
            fail(f"cannot write the report in {report_dir}: {e.strerror or e}", 1)
    if json_out:
        print_json_last(r)


@handled
def sample(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Run directory or .npz [the shipped model]."),
    count: int = typer.Option(1, "-n", "--count", help="How many tunes (1 to 10000; sampled in batches of 64)."),
    temperature: float = typer.Option(1.0, "--temperature", "-t", help="Below 1: safer; above 1: wilder."),
    top_k: int = typer.Option(0, "--top-k", help="Sample among the K likeliest tokens (0: all)."),
    top_p: float = typer.Option(1.0, "--top-p", help="Nucleus sampling: the likeliest tokens up to this mass."),
    seed: Optional[int] = typer.Option(None, "--seed", "-s",
                                       help="Same seed, same tunes (default: a fresh one, printed on stderr). "
                                            "Each tune's title names its own seed."),
    meter: Optional[str] = typer.Option(None, "--meter", help="The tunes' meter, e.g. 6/8 [the model's choice]."),
    key: Optional[str] = typer.Option(None, "--key", help="The tunes' key: D, Dm, D minor, Ddor, Amix, F#m ..."),
    unit: Optional[str] = typer.Option(None, "--unit", help="The tunes' unit note length, e.g. 1/8."),
    bars: Optional[int] = typer.Option(None, "--bars",
                                       help="About this many bars (default: the corpus's lengths for the meter)."),
    form: Optional[str] = typer.Option(None, "--form",
                                       help="Parts, e.g. AABB: two parts, each repeated (a letter once: not repeated)."),
    part_bars: int = typer.Option(8, "--part-bars", help="Bars per part of --form."),
    changes: bool = typer.Option(False, "--allow-changes/--no-changes",
                                 help="Let the model change meter or key mid-tune."),
    tonic: bool = typer.Option(True, "--tonic-end/--any-end", help="End on the key's tonic."),
    prime: str = typer.Option("", "--prime", help="An opening to continue, e.g. 'A|:B2c def|'."),
    max_tokens: int = typer.Option(1000, "--max-tokens", help="Length cap; the tune is then closed cleanly."),
    constraints: bool = typer.Option(True, "--constraints/--no-constraints",
                                     help="Mask the model with the ABC state machine (valid tunes)."),
    render: Optional[Path] = typer.Option(None, "--render",
                                          help="Also render the tunes, e.g. tune.svg (see abcgen render)."),
    fmt: str = typer.Option("abc", "--format", help="abc | pianoroll (a --format pianoroll run; needs -o)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output",
                                          help="pianoroll: OUT.mid (OUT.abc and OUT.png go beside it)."),
    length: int = typer.Option(200, "--length", help="pianoroll: frames to sample after the prime."),
    threshold: Optional[float] = typer.Option(None, "--threshold",
                                              help="pianoroll: notes above this probability, no draws."),
):
    """Write new tunes as an ABC tune book to stdout (or, --format pianoroll, a MIDI file)."""
    if fmt == "pianoroll":
        from ..pianoroll import write_sample

        if model is None or output is None:
            fail("--format pianoroll needs --model RUN_DIR and -o OUT.mid")
        from ..fileio import refuse_overwrite

        mp = Path(model)
        ins = [mp] if mp.is_file() else [p for p in mp.glob("*") if p.is_file()] if mp.is_dir() else []
        refuse_overwrite([output, output.with_suffix(".abc"), output.with_suffix(".png")], ins)
        for path in write_sample(Path(model), output, length=length, temperature=temperature,
                                 threshold=threshold, seed=seed, log=log):
            log(f"wrote {path}")
        return
    if fmt != "abc":
        fail(f"--format must be abc or pianoroll, not {fmt!r}")
    if output is not None or threshold is not None:
        fail("-o and --threshold are for --format pianoroll; ABC tunes go to stdout")

    # BLAS threads, set before NumPy loads (abcgen.threads): one for a few tunes, for a batch
    # of 8 or more the free cores less the one the sampling thread keeps busy.
    from ..threads import set_blas_threads

    set_blas_threads(count)
    from .. import sample as S

    opts = S.SampleOptions(count=count, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                           meter=meter, key=key, unit=unit, prime=prime, max_tokens=max_tokens,
                           constraints=constraints, changes=changes, tonic=tonic, bars=bars,
                           form=form, part_bars=part_bars)
    S.check_options(opts)
    fresh = opts.seed is None
    if fresh:
        opts.seed = S.fresh_seed()
    if render is not None:
        from ..render import format_of

        format_of(render)  # an unknown extension fails before any sampling
    m = S.Model(S.resolve_model(model))
    book = S.generate(m, opts)
    if fresh:
        log(f"seed {opts.seed} (abcgen sample --seed {opts.seed} makes these tunes again)")
    sys.stdout.write(book)
    sys.stdout.flush()
    if render is not None:
        from .. import render as render_mod
        from ..abc.reader import split_book

        name = render.stem + ".abc"    # how messages call the sampled book
        for path in render_mod.render_book(split_book(book, file=name), render, name, log=log):
            log(f"wrote {path}")


@handled
def export(
    model: str = typer.Argument(..., help="A run directory from abcgen train, or a model .npz."),
    output: Path = typer.Option(..., "-o", "--output", help="The .npz to write."),
    dtype: str = typer.Option("float16", "--dtype", help="float16 (half the size) or float32."),
    card: Optional[str] = typer.Option(None, "--note",
                                       help="A line of provenance stored in the model's metadata."),
):
    """Write a run's sampling model as one compact .npz (what `abcgen sample --model` loads)."""
    from .. import sample as S
    from ..step import load_npz, save_npz

    if dtype not in ("float16", "float32"):
        fail(f"--dtype must be float16 or float32, not {dtype!r}")
    src = S.resolve_model(model)
    from ..fileio import refuse_overwrite

    refuse_overwrite([output], [src])
    weights, meta = load_npz(src)
    if card:
        meta["note"] = card
    save_npz(output, weights, meta, dtype=dtype)
    log(f"wrote {output} ({output.stat().st_size / 1e6:.2f} MB, {dtype}) from {src}")


@bench_app.command("sample")
@handled
def bench_sample(
    corpus: str = typer.Option("folk", "--corpus", "-c", help="Corpus whose vocabulary the random model uses."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="A trained run or .npz instead of a random "
                                                                    "model; 'default': the shipped model."),
    hidden: int = typer.Option(512, "--hidden"),
    layers: int = typer.Option(1, "--layers"),
    tokens: int = typer.Option(400, "--tokens", help="Length cap per sampled tune."),
    json_out: bool = typer.Option(False, "--json", help="Last line of stdout: the figures as JSON."),
):
    """Sampling tokens/s: NumPy sampler (1 and 64 tunes) beside the naive Keras loop."""
    require_train_extra("bench sample")
    from .. import bench

    r = bench.bench_sample(corpus=corpus, hidden=hidden, layers=layers, tokens=tokens, model_path=model,
                           log=lambda m: print(m, flush=True))
    if json_out:
        print_json_last(r)


@bench_app.command("serve")
@handled
def bench_serve(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Run directory or .npz [the shipped model]."),
    count: int = typer.Option(200, "--count", "-n", help="Sample requests per phase (1 tune each)."),
    renders: int = typer.Option(100, "--renders", help="Render requests per phase (a short jig, SVG)."),
    concurrency: int = typer.Option(8, "--concurrency", "-c", help="Concurrent clients."),
    max_tokens: int = typer.Option(1000, "--max-tokens", help="max_tokens of each sample request."),
    slow_bars: int = typer.Option(480, "--slow-bars", help="Bars of the slow render kept in flight "
                                                          "(at most render.MAX_BARS, 500)."),
    timeout: float = typer.Option(60.0, "--timeout", help="The server's --timeout (s)."),
    time_limit: float = typer.Option(900.0, "--time-limit", help="Bound on the whole run (s)."),
    json_out: bool = typer.Option(False, "--json", help="Last line of stdout: the figures as JSON."),
):
    """The studio on loopback: p50/p95/max and errors of /api/sample and /api/render, alone and
    with a slow render in flight."""
    from .. import bench

    r = bench.bench_serve(model=model, count=count, renders=renders, concurrency=concurrency,
                          max_tokens=max_tokens, slow_bars=slow_bars, timeout=timeout,
                          time_limit=time_limit, log=lambda m: print(m, flush=True))
    if json_out:
        print_json_last(r)

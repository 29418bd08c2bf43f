"""``abcgen sample``: new tunes from an exported model, with NumPy only.

This module never imports TensorFlow (or music21): ``abcgen sample`` loads a
``model.npz`` (weights and vocabulary, no pickle), steps the LSTM in NumPy for
all requested tunes at once, and masks every next-token distribution with the
ABC state machine of ``abc.grammar`` so each tune is valid ABC whose complete
bars have the meter's length.

Randomness: one ``numpy.random.Generator`` seeded with ``--seed`` draws one
uniform number per active tune per step, in tune order, so the same seed,
model and options give the same tune book byte for byte.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import AbcgenError, InputError

DEFAULT_MODEL = Path(__file__).parent / "models" / "default.npz"
# Above this the distribution is all but uniform: noise, not tunes (and the studio's bound too).
MAX_TEMPERATURE = 5.0
# -n above this is sampled in batches of this many tunes, one after the other (memory flat in -n);
# up to it the tunes are one batch, as they always were.
SAMPLE_BATCH = 64
# From this many tunes on, the LSTM step runs in a thread beside the state machines.
OVERLAP_MIN_BATCH = 4


@dataclass
class SampleOptions:
    count: int = 1
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    meter: str | None = None
    key: str | None = None
    unit: str | None = None
    prime: str = ""
    max_tokens: int = 1000
    constraints: bool = True


def check_options(opts: SampleOptions) -> None:
    """Refuse option values no sampling can use (InputError naming the option).

    ``abcgen sample`` and ``abcgen serve`` both call this, so both refuse the same values.
    """
    if opts.count < 1 or opts.count > 10000:
        raise InputError("-n must be between 1 and 10000")
    if not 0 < opts.temperature <= MAX_TEMPERATURE:
        raise InputError(f"--temperature must be above 0 and at most {MAX_TEMPERATURE:g}, "
                         f"not {opts.temperature:g}")
    if not 0 <= opts.seed < 2**63:
        raise InputError(f"--seed must be between 0 and 2**63-1, not {opts.seed}")
    if not 0 < opts.top_p <= 1:
        raise InputError("--top-p must be in (0, 1]")
    if opts.top_k < 0:
        raise InputError("--top-k must be 0 (all) or positive")
    if opts.max_tokens < 1:
        raise InputError("--max-tokens must be positive")
    if opts.key is not None and (opts.meter is None or opts.unit is None):
        raise InputError("--key needs --meter and --unit (the header is M:, L:, K: in that order)")
    if opts.unit is not None and opts.meter is None:
        raise InputError("--unit needs --meter (the header is M:, L:, K: in that order)")


def generate(model: "Model", opts: SampleOptions, deadline: float | None = None) -> str:
    """The tune book of ``abcgen sample``: checked options, sampled tunes, X: and T: lines."""
    check_options(opts)
    check_model(model, opts)
    return tune_book(model, sample(model, opts, deadline=deadline), opts)


def check_model(model: "Model", opts: SampleOptions | None = None) -> None:
    """InputError when the model cannot sample with these options (the grammar mask needs tokens)."""
    if model.vocab.level != "token" and (opts is None or opts.constraints):
        how = "sample with --no-constraints" if opts is not None else "the studio always uses the mask"
        raise InputError(f"this is a {model.vocab.level}-level model: the ABC grammar mask works on "
                         f"token-level models only (train with --level token; {how})", file=str(model.path))


def resolve_model(path: str | None) -> Path:
    """A run directory, a .npz file, or the model that ships with abcgen."""
    if path is None:
        if DEFAULT_MODEL.is_file():
            return DEFAULT_MODEL
        raise InputError("no default model ships with this version of abcgen yet: train one with "
                         "'abcgen train --format abc --corpus folk --out RUN_DIR' and pass --model RUN_DIR")
    p = Path(path).expanduser()
    if p.is_dir():
        if (p / "model.npz").is_file():
            return p / "model.npz"
        raise InputError(f"{p} has no model.npz (a run directory writes one after its first epoch)")
    if not p.exists():
        raise InputError("no such model file or run directory", file=str(p))
    return p


class Model:
    """Weights, vocabulary and NumPy LSTM of an exported model."""

    def __init__(self, path: Path):
        from .abc.tokens import Vocabulary
        from .step import NumpyLSTM, load_npz

        weights, meta = load_npz(path)
        try:
            v = meta["vocab"]
            self.vocab = Vocabulary(v["symbols"], v["level"])
        except (KeyError, TypeError) as e:
            raise InputError(f"the model has no vocabulary in its metadata ({e})", file=str(path)) from None
        self.net = NumpyLSTM(weights)
        self.meta = meta
        self.path = path
        self.name = path.parent.name if path.name == "model.npz" else path.stem


def _filter_logits(logits: np.ndarray, temperature: float, top_k: int, top_p: float) -> np.ndarray:
    """Probabilities after temperature, top-k and nucleus (top-p) filtering; rows sum to 1."""
    z = logits / max(temperature, 1e-6)
    if top_k and top_k < z.shape[1]:
        kth = np.partition(z, -top_k, axis=1)[:, -top_k][:, None]
        z = np.where(z < kth, -np.inf, z)
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    if top_p < 1.0:
        order = np.argsort(-p, axis=1, kind="stable")
        sp = np.take_along_axis(p, order, axis=1)
        cum = np.cumsum(sp, axis=1)
        keep_sorted = (cum - sp) < top_p  # always keeps the most likely token
        keep = np.zeros_like(keep_sorted)
        np.put_along_axis(keep, order, keep_sorted, axis=1)
        p = np.where(keep, p, 0.0)
        p /= p.sum(axis=1, keepdims=True)
    return p


def _draw(p: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF draw of one index per row, given one uniform number per row."""
    cum = np.cumsum(p, axis=1)
    cum[:, -1] = 1.0 + 1e-12
    return (cum < u[:, None]).sum(axis=1)


def _header_tokens(model: Model, opts: SampleOptions) -> list[str]:
    """Forced header and prime as tokens of the model's vocabulary; refuse unknown symbols."""
    from .abc.tokens import split_tokens

    vocab = model.vocab
    wanted = []
    for field, val in (("M", opts.meter), ("L", opts.unit), ("K", opts.key)):
        if val is None:
            break  # the header is forced in order up to the first field not given
        sym = f"{field}:{val}"
        text_syms = split_tokens(sym + "\n", vocab.level)
        for s in text_syms:
            if s not in vocab:
                known = sorted(x for x in vocab.symbols if x.startswith(field + ":"))
                raise InputError(f"{sym} is not in the model's vocabulary"
                                 + (f" (it knows {', '.join(known[:20])})" if known else ""))
        wanted.extend(text_syms)
    if opts.prime:
        if any(v is None for v in (opts.meter, opts.unit, opts.key)) and not opts.prime.startswith("M:"):
            raise InputError("--prime continues a tune body: give --meter, --unit and --key with it, "
                             "or start the prime with its own M:, L: and K: lines")
        for i, s in enumerate(split_tokens(opts.prime, vocab.level)):
            if s not in vocab:
                raise InputError(f"the prime's symbol {s!r} (token {i + 1}) is not in the model's vocabulary")
            wanted.append(s)
    return wanted


class SamplingTimeout(AbcgenError):
    """Sampling passed its deadline (``abcgen serve`` bounds each request)."""


def sample(model: Model, opts: SampleOptions, deadline: float | None = None) -> list[str]:
    """The model texts of opts.count tunes (header from M: on, body, no X:/T:).

    ``deadline`` (a ``time.monotonic()`` value) stops a sampling that runs past
    it with SamplingTimeout; it is checked between steps.
    """
    vocab = model.vocab
    rng = np.random.default_rng(opts.seed)
    head = _header_tokens(model, opts)
    head_ids = [vocab.id_of(s) for s in head]

    c0 = None
    if opts.constraints:
        from .abc.grammar import AbcConstraint

        c0 = AbcConstraint(vocab)
        c0.reset()
        try:
            for t in head_ids:
                c0.advance(t)
        except ValueError as e:
            raise InputError(f"the header/prime is not valid canonical ABC here: {e}") from None
    # Batches of at most SAMPLE_BATCH tunes, one after the other from the same generator:
    # memory stays that of one batch however many tunes are asked for.
    out: list[str] = []
    for start in range(0, opts.count, SAMPLE_BATCH):
        n = min(SAMPLE_BATCH, opts.count - start)
        out.extend(_sample_batch(model, opts, n, rng, head_ids, c0, deadline))
    return out


def _sample_batch(model: Model, opts: SampleOptions, n: int, rng, head_ids: list[int], c0,
                  deadline: float | None) -> list[str]:
    """n tunes sampled as one batch (the body of :func:`sample`)."""
    vocab = model.vocab
    bos, eos = vocab.bos_id, vocab.eos_id
    cons = None if c0 is None else [c0.copy() for _ in range(n)]

    # Feed <s> + the forced prefix once and share the state across the batch.
    logits, state = model.net.run(np.asarray([bos] + head_ids, dtype=np.int64))
    logits = np.repeat(np.asarray(logits).reshape(1, -1), n, axis=0)
    state = [(np.repeat(h, n, axis=0), np.repeat(c, n, axis=0)) for h, c in state]
    out = [list(head_ids) for _ in range(n)]
    active = np.arange(n)
    budget = max(opts.max_tokens - len(head_ids), 1)

    def masks(active, steps):
        if cons is None:
            return None
        closing = steps >= budget
        return np.stack([cons[i].mask_view(closing) for i in active])

    # With a batch, the LSTM step of the next tokens runs in a second thread (NumPy's
    # matrix products release the GIL) while this one advances the ABC state machines
    # and builds their masks: on two cores the step and the mask cost the longer of
    # the two, not their sum.  Nothing random happens in the thread, so the output
    # is the same byte for byte either way.
    pool = None
    if cons is not None and n >= OVERLAP_MIN_BATCH:
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(1, thread_name_prefix="abcgen-step")
    mask = masks(active, 0)
    steps = 0
    try:
        while len(active):
            if deadline is not None and time.monotonic() > deadline:
                raise SamplingTimeout(f"sampling stopped after {steps} steps: it ran past its time limit")
            lg = logits.astype(np.float64)
            if mask is not None:
                lg = np.where(mask, lg, -np.inf)
            elif steps >= budget:
                lg = np.full_like(lg, -np.inf)
                lg[:, eos] = 0.0
            p = _filter_logits(lg, opts.temperature, opts.top_k, opts.top_p)
            tok = _draw(p, rng.random(len(active)))
            keep = []
            for j, i in enumerate(active):
                t = int(tok[j])
                if t == eos:
                    continue
                out[i].append(t)
                keep.append(j)
            steps += 1
            if not keep:
                break
            keep = np.asarray(keep)
            before, active = active, active[keep]
            state = [(h[keep], c[keep]) for h, c in state]
            nxt = tok[keep]
            fut = pool.submit(model.net.step, nxt, state) if pool is not None else None
            if cons is not None:
                for j in keep:
                    cons[before[j]].advance(int(tok[j]))
                mask = masks(active, steps)
            logits, state = fut.result() if fut is not None else model.net.step(nxt, state)
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
    return [vocab.decode(ids) for ids in out]


def tune_book(model: Model, texts: list[str], opts: SampleOptions) -> str:
    parts = []
    for i, t in enumerate(texts, 1):
        if not t.endswith("\n"):
            t += "\n"
        title = f"T:abcgen {model.name} seed {opts.seed} tune {i}"
        if opts.temperature != 1.0:
            title += f" temperature {opts.temperature:g}"
        parts.append(f"X:{i}\n{title}\n{t}")
    return "\n".join(parts)


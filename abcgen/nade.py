"""A joint distribution over the keys of one piano-roll frame: a NADE conditioned on the LSTM.

The independent output says p(frame) = prod_d p(v_d | past): every key is drawn on its own, so a
chord is an accident.  A NADE (Larochelle & Murray 2011; as the output of an RNN in
Boulanger-Lewandowski et al. 2012) writes the same probability exactly as a chain, low key to
high, each key conditioned on the keys below it that are already decided:

    a_d     = b_h(t) + sum_{k<d} v_k W[k]          (H,)  running sum, one row per key decided
    h_d     = sigmoid(a_d)
    logit_d = b_v(t)_d + h_d . V[:, d]
    p(v)    = prod_d sigmoid(+-logit_d)

with the frame's biases b_v(t) (K,) and b_h(t) (H,) read from the LSTM's output at step t
(two dense layers), and W (K, H), V (H, K) shared by all frames.  Given the true frame, all K
logits come out in one pass (an exclusive cumulative sum over keys), so the negative
log-likelihood is exact, not a bound; sampling walks the keys one by one.

This module holds the NumPy side (exact NLL, sampling, the model's own decisions) and, built
lazily so that importing it needs no TensorFlow, the Keras layer used in training.
"""

from __future__ import annotations

import numpy as np

#: Names of the NADE arrays in a model file, beside the LSTM's.
ARRAYS = ("nade/W", "nade/V", "nade/bv_kernel", "nade/bv_bias", "nade/bh_kernel", "nade/bh_bias")


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _log_sigmoid(x):
    return -np.logaddexp(0.0, -x)


class Nade:
    """The NADE output's weights, as NumPy arrays (float64 for exact sums)."""

    def __init__(self, W, V, bv_kernel, bv_bias, bh_kernel, bh_bias):
        self.W = np.asarray(W, np.float64)            # (K, H)
        self.V = np.asarray(V, np.float64)            # (H, K)
        self.bv_kernel = np.asarray(bv_kernel, np.float64)  # (U, K)
        self.bv_bias = np.asarray(bv_bias, np.float64)      # (K,)
        self.bh_kernel = np.asarray(bh_kernel, np.float64)  # (U, H)
        self.bh_bias = np.asarray(bh_bias, np.float64)      # (H,)
        k, h = self.W.shape
        if self.V.shape != (h, k) or self.bv_bias.shape != (k,) or self.bh_bias.shape != (h,):
            raise ValueError(f"NADE weights do not fit together: W {self.W.shape}, V {self.V.shape}")

    @classmethod
    def from_arrays(cls, arrays) -> "Nade":
        return cls(*(arrays[name] for name in ARRAYS))

    @property
    def keys(self) -> int:
        return self.W.shape[0]

    def biases(self, context: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """LSTM outputs (..., U) -> the frames' key biases (..., K) and hidden biases (..., H)."""
        c = np.asarray(context, np.float64)
        return c @ self.bv_kernel + self.bv_bias, c @ self.bh_kernel + self.bh_bias

    def logits(self, context: np.ndarray, frames: np.ndarray) -> np.ndarray:
        """Logit of each key given the keys below it in the true frame: (..., K), one pass."""
        bv, bh = self.biases(context)
        v = np.asarray(frames, np.float64)
        contrib = v[..., :, None] * self.W                      # (..., K, H)
        below = np.cumsum(contrib, axis=-2) - contrib           # exclusive: keys k < d
        hid = _sigmoid(below + bh[..., None, :])
        return bv + np.einsum("...dh,hd->...d", hid, self.V)

    def nll(self, context: np.ndarray, frames: np.ndarray) -> np.ndarray:
        """Exact negative log-likelihood of each frame in nats: (...,)."""
        z = self.logits(context, frames)
        v = np.asarray(frames, np.float64)
        return -(v * _log_sigmoid(z) + (1 - v) * _log_sigmoid(-z)).sum(axis=-1)

    def draw(self, context: np.ndarray, rng: np.random.Generator | None = None, *,
             temperature: float = 1.0, threshold: float | None = None,
             greedy: bool = False) -> np.ndarray:
        """Frames drawn jointly, key by key from low to high: context (B, U) -> (B, K) of 0/1.

        ``threshold`` takes each key whose probability, given the keys already decided, is above
        it; ``greedy`` is threshold 0.5, the model's own decision (used for frame accuracy).
        Otherwise each key is a Bernoulli draw of sigmoid(logit / temperature).
        """
        if greedy:
            threshold = 0.5
        cut = None if threshold is None else float(np.log(threshold / (1 - threshold)))
        c = np.atleast_2d(np.asarray(context, np.float64))
        bv, a = self.biases(c)
        out = np.zeros((c.shape[0], self.keys), np.float64)
        for d in range(self.keys):
            z = bv[:, d] + _sigmoid(a) @ self.V[:, d]
            if cut is not None:
                on = z > cut
            else:
                on = rng.random(c.shape[0]) < _sigmoid(z / temperature)
            out[:, d] = on
            a += on[:, None] * self.W[d]
        return out

    def paths(self, context: np.ndarray, samples: int, rng: np.random.Generator,
              chunk: int = 1 << 15) -> tuple[np.ndarray, np.ndarray]:
        """``samples`` frames drawn per context row, and along each drawn frame every key's
        probability of being on given the keys drawn below it.

        context (N, U) -> frames (N, S, K) uint8 and probabilities (N, S, K) float64.  The rows
        are drawn ``chunk`` at a time with one uniform per (row, key) taken row-major from
        ``rng``, so the result does not depend on ``chunk``.  The hidden units are kept as
        sigmoid(a) and only the rows whose key came on are recomputed (about 4 of 88 keys sound).
        """
        c = np.atleast_2d(np.asarray(context, np.float64))
        n, s = c.shape[0], int(samples)
        if s < 1:
            raise ValueError(f"samples must be at least 1, not {samples}")
        bv_all, bh_all = self.biases(c)
        frames = np.zeros((n * s, self.keys), np.uint8)
        probs = np.zeros((n * s, self.keys), np.float64)
        vt = np.ascontiguousarray(self.V.T)                      # (K, H): row d is V[:, d]
        for lo in range(0, n * s, chunk):
            rows = np.arange(lo, min(lo + chunk, n * s)) // s     # the context row of each draw
            bv, a = bv_all[rows], bh_all[rows].copy()
            h = _sigmoid(a)
            u = rng.random((len(rows), self.keys))
            for d in range(self.keys):
                p = _sigmoid(bv[:, d] + h @ vt[d])
                on = u[:, d] < p
                frames[lo:lo + len(rows), d] = on
                probs[lo:lo + len(rows), d] = p
                if on.any():
                    a[on] += self.W[d]
                    h[on] = _sigmoid(a[on])
        return frames.reshape(n, s, -1), probs.reshape(n, s, -1)

    def marginals(self, context: np.ndarray, samples: int, rng: np.random.Generator) -> np.ndarray:
        """Each key's marginal probability of being on, P(v_d = 1 | context): (N, K).

        Not tractable exactly (it sums over the keys below); estimated from ``samples`` drawn
        frames as the mean, over the draws, of p(v_d = 1 | keys drawn below d).  That is unbiased
        (the tower rule) and has less variance than the mean of the 0/1 draws; with W = 0 (keys
        independent) it is exact for any number of samples."""
        return self.paths(context, samples, rng)[1].mean(axis=1)

    def decide(self, context: np.ndarray, decision: "Decision | str",
               rng: np.random.Generator | None = None) -> np.ndarray:
        """The model's own frame for each context row under a decision rule: (N, K) of 0/1.

        ``rng`` defaults to one seeded by the decision's seed; pass one to seed per piece."""
        dec = Decision.parse(decision)
        if dec.rule == "greedy":
            return self.draw(context, greedy=True)
        rng = np.random.default_rng(dec.seed) if rng is None else rng
        c = np.atleast_2d(np.asarray(context, np.float64))
        frames, probs = self.paths(c, dec.samples, rng)
        marg = probs.mean(axis=1)
        if dec.rule == "marginal":
            return (marg > dec.threshold).astype(np.float64)
        cands = mbr_candidates(self.draw(c, greedy=True), marg)
        return mbr_choice(cands, frames).astype(np.float64)


# --------------------------------------------------------------------------
# Decision rules: the model's own frame, for frame accuracy


#: Thresholds and chord sizes of the MBR rule's candidate frames (besides the greedy frame).
MBR_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
MBR_TOP = (1, 2, 3, 4, 5, 6)


class Decision:
    """A rule that turns the NADE's distribution over a frame into one frame (never looking at
    the true frame).  Frame accuracy is sum TP / sum (TP + FP + FN) over all frames.

    ``greedy``: key by key from low to high, each on when p(on | keys decided below) > 0.5.

    ``marginal-S>T``: each key on when its marginal probability P(on), estimated from S drawn
    frames (Nade.marginals), is above T.  Why: summed over frames, the best achievable accuracy r
    is reached by maximising, frame by frame, E[TP] - r E[TP + FP + FN], which is
    sum over chosen keys of ((1 + r) P(on) - r) plus a term no decision changes: so a key is
    worth taking exactly when P(on) > r / (1 + r).  With r about 1/3 on JSB, T = 0.25; T was
    chosen on the valid split (0.2 .. 0.5 tried).

    ``mbr-S``: minimum Bayes risk for each frame's own Jaccard: of the candidates (the greedy
    frame, the keys with marginal above each of MBR_THRESHOLDS, the MBR_TOP likeliest keys by
    marginal), the one whose mean TP / (TP + FP + FN) against the S drawn frames is highest
    (an empty frame against an empty frame scores 1; ties go to the earlier candidate).

    Written as text: ``greedy``, ``marginal-128>0.25``, ``mbr-64``; a ``@SEED`` suffix sets the
    seed of the draws (default 0)."""

    RULES = ("greedy", "marginal", "mbr")

    def __init__(self, rule: str = "greedy", samples: int = 0, threshold: float = 0.5, seed: int = 0):
        if rule not in self.RULES:
            raise ValueError(f"decision rule must be one of {', '.join(self.RULES)}, not {rule!r}")
        if rule != "greedy" and samples < 1:
            raise ValueError(f"the {rule} decision rule needs at least one sample, not {samples}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"decision threshold must be in [0, 1], not {threshold}")
        self.rule, self.samples, self.threshold, self.seed = rule, int(samples), float(threshold), int(seed)
        if rule == "greedy":
            self.samples, self.threshold, self.seed = 0, 0.5, 0

    @classmethod
    def parse(cls, text: "Decision | str") -> "Decision":
        if isinstance(text, Decision):
            return text
        body, _, seed = str(text).strip().partition("@")
        rule, _, rest = body.partition("-")
        try:
            if body == "greedy" and not seed:
                return cls("greedy")
            if rule == "marginal":
                n, _, t = rest.partition(">")
                args = ("marginal", int(n), float(t or 0.25), int(seed or 0))
            elif rule == "mbr":
                args = ("mbr", int(rest), 0.5, int(seed or 0))
            else:
                args = None
        except ValueError:
            args = None
        if args is not None:
            return cls(*args)
        raise ValueError(f"cannot read the decision rule {text!r} "
                         "(greedy, marginal-SAMPLES>THRESHOLD, mbr-SAMPLES; optional @SEED)")

    @property
    def name(self) -> str:
        base = {"greedy": "greedy", "marginal": f"marginal-{self.samples}>{self.threshold:g}",
                "mbr": f"mbr-{self.samples}"}[self.rule]
        return base + (f"@{self.seed}" if self.seed else "")

    def to_dict(self) -> dict:
        return {"rule": self.rule, "samples": self.samples, "threshold": self.threshold, "seed": self.seed}

    def __eq__(self, other):
        return isinstance(other, Decision) and self.to_dict() == other.to_dict()

    def __repr__(self):
        return f"Decision({self.name!r})"


#: The rule behind frame accuracy in evaluate and test.json (chosen on JSB's valid split).
DEFAULT_DECISION = Decision("marginal", 128, 0.25)


def mbr_candidates(greedy: np.ndarray, marginals: np.ndarray) -> np.ndarray:
    """The MBR rule's candidate frames: (N, C, K) of 0/1, the greedy frame first."""
    g = np.asarray(greedy) > 0.5
    m = np.asarray(marginals, np.float64)
    cands = [g] + [m > t for t in MBR_THRESHOLDS]
    order = np.argsort(-m, axis=-1, kind="stable")
    for k in MBR_TOP:
        top = np.zeros(m.shape, bool)
        np.put_along_axis(top, order[:, :k], True, axis=-1)
        cands.append(top)
    return np.stack(cands, axis=1).astype(np.uint8)


def mean_jaccard(candidates: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """Mean over the samples of TP / (TP + FP + FN) for each candidate: (N, C, K), (N, S, K) -> (N, C).
    Empty against empty scores 1."""
    c = np.asarray(candidates, np.float64)
    s = np.asarray(samples, np.float64)
    inter = np.einsum("nck,nsk->ncs", c, s)
    union = c.sum(-1)[:, :, None] + s.sum(-1)[:, None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1.0), 1.0).mean(axis=-1)


def mbr_choice(candidates: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """For each row the candidate of highest mean Jaccard against the samples (first on ties): (N, K)."""
    score = mean_jaccard(candidates, samples)
    best = score.argmax(axis=1)
    return np.asarray(candidates)[np.arange(len(best)), best]


def keras_layer():
    """The Keras layer class (built on first use; importing this module needs no TensorFlow)."""
    return _layers()[0]


def columns_layer():
    """A Keras layer that keeps columns [start, stop) of its input's last axis."""
    return _layers()[1]


_LAYERS = None


def _layers():
    global _LAYERS
    if _LAYERS is None:
        _LAYERS = _build_layers()
    return _LAYERS


def _build_layers():
    import keras
    from keras import ops

    @keras.saving.register_keras_serializable(package="abcgen", name="Columns")
    class Columns(keras.layers.Layer):
        """Columns [start, stop) of the last axis (the model's one input holds the past frames
        and, for the NADE, the true frame to condition each key on)."""

        def __init__(self, start: int, stop: int, **kw):
            super().__init__(**kw)
            self.start, self.stop = int(start), int(stop)

        def call(self, x):
            return x[..., self.start:self.stop]

        def compute_output_shape(self, shape):
            return tuple(shape[:-1]) + (self.stop - self.start,)

        def get_config(self):
            return dict(super().get_config(), start=self.start, stop=self.stop)

    @keras.saving.register_keras_serializable(package="abcgen", name="NadeOutput")
    class NadeOutput(keras.layers.Layer):
        """[LSTM outputs (B, T, U), true frames (B, T, K)] -> each key's logit given the keys below."""

        def __init__(self, keys: int, hidden: int = 150, **kw):
            super().__init__(**kw)
            self.keys = int(keys)
            self.hidden = int(hidden)

        def build(self, shapes):
            units = int(shapes[0][-1])
            k, h = self.keys, self.hidden
            init = keras.initializers.RandomNormal(stddev=0.01)
            self.W = self.add_weight(name="W", shape=(k, h), initializer=init)
            self.V = self.add_weight(name="V", shape=(h, k), initializer=init)
            self.bv_kernel = self.add_weight(name="bv_kernel", shape=(units, k), initializer="glorot_uniform")
            self.bv_bias = self.add_weight(name="bv_bias", shape=(k,), initializer="zeros")
            self.bh_kernel = self.add_weight(name="bh_kernel", shape=(units, h), initializer="glorot_uniform")
            self.bh_bias = self.add_weight(name="bh_bias", shape=(h,), initializer="zeros")

        def call(self, inputs):
            context, frames = inputs
            v = ops.cast(frames, self.compute_dtype)
            bv = ops.matmul(context, self.bv_kernel) + self.bv_bias
            bh = ops.matmul(context, self.bh_kernel) + self.bh_bias
            contrib = ops.expand_dims(v, -1) * self.W                  # (B, T, K, H)
            below = ops.cumsum(contrib, axis=-2) - contrib
            hid = ops.sigmoid(below + ops.expand_dims(bh, -2))
            return bv + ops.sum(hid * ops.transpose(self.V), axis=-1)

        def get_config(self):
            return dict(super().get_config(), keys=self.keys, hidden=self.hidden)

        def arrays(self) -> dict:
            """The weights under the model file's names (see ARRAYS)."""
            return {f"nade/{w}": np.asarray(getattr(self, w).numpy(), np.float32)
                    for w in ("W", "V", "bv_kernel", "bv_bias", "bh_kernel", "bh_bias")}

    return NadeOutput, Columns

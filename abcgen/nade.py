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

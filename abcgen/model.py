"""Keras side of the network: the trainable model and its export to plain arrays.

Only training code imports this module, because importing Keras pulls in
TensorFlow (seconds of start-up and hundreds of MB).  Sampling runs on the
exported ``.npz`` through :mod:`abcgen.step`, which needs NumPy alone.
"""

from __future__ import annotations

import os
from pathlib import Path

import keras
import numpy as np

# Bumped whenever the array names or the meta layout change, so that
# abcgen.step can refuse a file it would misread instead of sampling garbage.
FORMAT_VERSION = 1

_DTYPES = ("float16", "float32")


def build_text_model(vocab_size: int, *, embed_dim: int = 128, hidden: int = 512,
                     layers: int = 1, dropout: float = 0.2, stateful: bool = False,
                     batch_size: int | None = None) -> keras.Model:
    """Token ids in, next-token logits out.

    The output is logits rather than probabilities so that training can use
    ``from_logits=True`` cross-entropy (more stable than log of a softmax) and
    sampling can apply a temperature before its own softmax.

    A stateful model keeps the LSTM state between batches, which Keras only
    allows with a fixed batch size, hence ``batch_size`` is required then.
    """
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    if layers < 1:
        raise ValueError(f"layers must be at least 1, got {layers}")
    if embed_dim < 1 or hidden < 1:
        raise ValueError("embed_dim and hidden must be positive")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if stateful and batch_size is None:
        raise ValueError("a stateful model needs a fixed batch_size")

    inputs = keras.Input(batch_shape=(batch_size, None), dtype="int32", name="tokens")
    x = keras.layers.Embedding(vocab_size, embed_dim, name="embedding")(inputs)
    for i in range(layers):
        # These are exactly the settings under which Keras may hand the layer
        # to the fused cuDNN kernel on a GPU (several times faster to train):
        # tanh / sigmoid activations, no recurrent dropout, no unrolling, and
        # a bias.  Changing any of them silently falls back to the slow
        # generic loop, so keep them as they are.  abcgen.step mirrors the
        # same equations in NumPy.
        x = keras.layers.LSTM(
            hidden,
            activation="tanh",
            recurrent_activation="sigmoid",
            recurrent_dropout=0.0,
            unroll=False,
            use_bias=True,
            return_sequences=True,
            stateful=stateful,
            name=f"lstm_{i}",
        )(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(vocab_size, name="logits")(x)
    return keras.Model(inputs, outputs, name="abcgen_lstm")


def _lstm_layers(model: keras.Model) -> list:
    found = []
    i = 0
    while True:
        try:
            found.append(model.get_layer(f"lstm_{i}"))
        except ValueError:
            return found
        i += 1


def _array(variable) -> np.ndarray:
    # Variable.numpy() rather than keras.ops.convert_to_numpy, which trips a
    # NumPy 2 DeprecationWarning inside Keras' TensorFlow backend.
    return np.array(variable.numpy(), dtype=np.float32)


def export_weights(model: keras.Model) -> dict[str, np.ndarray]:
    """The weights under stable names, so the NumPy sampler never depends on
    Keras' internal variable paths (which changed between Keras 2 and 3)."""
    out: dict[str, np.ndarray] = {}
    emb = model.get_layer("embedding")
    out["embedding"] = _array(emb.embeddings)
    lstms = _lstm_layers(model)
    if not lstms:
        raise ValueError("model has no layer named lstm_0; was it built by build_text_model?")
    for i, layer in enumerate(lstms):
        cell = layer.cell
        out[f"lstm_{i}/kernel"] = _array(cell.kernel)
        out[f"lstm_{i}/recurrent_kernel"] = _array(cell.recurrent_kernel)
        out[f"lstm_{i}/bias"] = _array(cell.bias)
    dense = model.get_layer("logits")
    out["logits/kernel"] = _array(dense.kernel)
    out["logits/bias"] = _array(dense.bias)
    return out


def export_npz(model: keras.Model, path: str | os.PathLike, meta: dict,
               dtype: str = "float16") -> Path:
    """Write the weights and ``meta`` to one ``.npz`` the sampler can load.

    float16 halves the file at a cost of about 1e-3 relative error per weight,
    which is far below what changes a sampled tune; float32 is for exact
    comparisons.  The meta is stored as UTF-8 JSON bytes in a uint8 array so
    that the file loads with ``allow_pickle=False`` (pickled objects in a
    downloaded model would be a code-execution hole).  The write goes to a
    temporary file first so an interrupted export never leaves a truncated
    model where a good one was.
    """
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {_DTYPES}, got {dtype!r}")
    weights = export_weights(model)
    lstms = _lstm_layers(model)
    full_meta = dict(meta)
    full_meta.update(
        format_version=FORMAT_VERSION,
        layers=len(lstms),
        hidden=int(lstms[0].units),
        embed_dim=int(weights["embedding"].shape[1]),
        vocab_size=int(weights["embedding"].shape[0]),
        dtype=dtype,
    )
    from .step import save_npz   # the one .npz writer (dtype, vocabulary binding, atomic)

    return save_npz(path, weights, full_meta, dtype=dtype)

"""Run an exported model one token at a time with NumPy alone.

Sampling feeds one token, reads one distribution, picks the next token and
repeats.  Keras pays milliseconds of dispatch per call for that, and importing
TensorFlow costs seconds and hundreds of MB, so the sampler works on the
``.npz`` written by :func:`abcgen.model.export_npz` instead.  This module must
never import TensorFlow or Keras (a test checks it).

The equations are the Keras LSTM's, so a model gives the same next-token
distribution here as in Keras (to float32 rounding).
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

from abcgen.errors import InputError

# Must match abcgen.model.FORMAT_VERSION; repeated here because importing
# abcgen.model would drag in Keras.
FORMAT_VERSION = 1

State = list[tuple[np.ndarray, np.ndarray]]

# Below this many rows, layer 0's recurrent product is made row by row (_recurrent_into).
ROW_BY_ROW = 4


# --------------------------------------------------------------------------
# Probability helpers
# --------------------------------------------------------------------------

def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Subtracting the max first keeps exp() from overflowing on large logits
    (low temperatures divide logits by small numbers)."""
    x = np.asarray(logits)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    shifted = x - np.max(x, axis=axis, keepdims=True)
    e = np.exp(shifted)
    e /= np.sum(e, axis=axis, keepdims=True)
    return e


def log_softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Computed directly rather than as log(softmax) so that tokens whose
    probability underflows to 0 still get a finite log-probability, which
    scoring and beam search need."""
    x = np.asarray(logits)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    shifted = x - np.max(x, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------

def _layer_count(weights: dict[str, np.ndarray]) -> int:
    n = 0
    while f"lstm_{n}/kernel" in weights:
        n += 1
    return n


def check_weights(weights: dict[str, np.ndarray]) -> tuple[int, int, int, int]:
    """Shape errors caught here name the array at fault; caught later they
    would surface as an unexplained broadcasting error mid-sampling.

    Returns ``(layers, vocab_size, embed_dim, hidden)``.
    """
    # Dense input frames (the piano roll) have no embedding, and their output layer is
    # optional (a NADE output reads the top LSTM's state instead).
    dense = "embedding" not in weights and "lstm_0/kernel" in weights
    if dense:
        k0 = weights["lstm_0/kernel"]
        if k0.ndim != 2:
            raise ValueError(f"'lstm_0/kernel' must be 2-D, got shape {k0.shape}")
        embed_dim = k0.shape[0]
        vocab = weights["logits/kernel"].shape[-1] if "logits/kernel" in weights else 0
    else:
        for name in ("embedding", "logits/kernel", "logits/bias"):
            if name not in weights:
                raise ValueError(f"missing array {name!r}")
        emb = weights["embedding"]
        if emb.ndim != 2:
            raise ValueError(f"'embedding' must be 2-D, got shape {emb.shape}")
        vocab, embed_dim = emb.shape
    layers = _layer_count(weights)
    if layers == 0:
        raise ValueError("missing array 'lstm_0/kernel'")
    hidden = None
    in_dim = embed_dim
    for i in range(layers):
        p = f"lstm_{i}/"
        for part in ("kernel", "recurrent_kernel", "bias"):
            if p + part not in weights:
                raise ValueError(f"missing array {p + part!r}")
        k, r, b = weights[p + "kernel"], weights[p + "recurrent_kernel"], weights[p + "bias"]
        if hidden is None:
            if r.ndim != 2 or r.shape[1] % 4:
                raise ValueError(f"{p}recurrent_kernel has shape {r.shape}, "
                                 "expected (hidden, 4*hidden)")
            hidden = r.shape[1] // 4
        h4 = 4 * hidden
        if k.shape != (in_dim, h4):
            raise ValueError(f"{p}kernel has shape {k.shape}, expected {(in_dim, h4)}")
        if r.shape != (hidden, h4):
            raise ValueError(f"{p}recurrent_kernel has shape {r.shape}, "
                             f"expected {(hidden, h4)}")
        if b.shape != (h4,):
            raise ValueError(f"{p}bias has shape {b.shape}, expected {(h4,)}")
        in_dim = hidden
    if "logits/kernel" in weights:
        if weights["logits/kernel"].shape != (hidden, vocab):
            raise ValueError(f"logits/kernel has shape {weights['logits/kernel'].shape}, "
                             f"expected {(hidden, vocab)}")
        if weights.get("logits/bias", np.zeros(0)).shape != (vocab,):
            raise ValueError(f"logits/bias has shape {weights['logits/bias'].shape}, "
                             f"expected {(vocab,)}")
    return layers, int(vocab), int(embed_dim), int(hidden)


def load_npz(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    """Read an exported model; every way the file can be unusable becomes an
    InputError naming it, because the path usually comes from the command line.

    ``allow_pickle=False`` makes loading a model from an untrusted source safe:
    the meta is JSON bytes, never a pickled object.
    """
    p = Path(path)
    fname = str(p)
    if not p.exists():
        raise InputError("model file not found", file=fname)
    if p.is_dir():
        raise InputError("model path is a folder, not an .npz file", file=fname)
    try:
        data = np.load(p, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise InputError("not an .npz model archive (looks like a single .npy array)",
                             file=fname)
        try:
            # Read every member now: members decompress lazily, and a corrupt
            # one would otherwise fail later, far from the file name.
            raw = {name: data[name] for name in data.files}
        finally:
            data.close()
    except InputError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
        raise InputError(f"cannot read model archive ({type(e).__name__}: {e})",
                         file=fname) from None

    if "__meta__" not in raw:
        raise InputError("not an abcgen model: no __meta__ entry", file=fname)
    meta_arr = raw.pop("__meta__")
    if meta_arr.dtype != np.uint8 or meta_arr.ndim != 1:
        raise InputError("__meta__ entry is not a byte array", file=fname)
    try:
        meta = json.loads(meta_arr.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"__meta__ entry is not valid JSON ({e})", file=fname) from None
    if not isinstance(meta, dict):
        raise InputError("__meta__ entry is not a JSON object", file=fname)
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise InputError(f"unsupported model format version {version!r} "
                         f"(this abcgen reads version {FORMAT_VERSION}); "
                         "re-export the model with this version", file=fname)

    weights: dict[str, np.ndarray] = {}
    for name, arr in raw.items():
        if not np.issubdtype(arr.dtype, np.floating):
            raise InputError(f"array {name!r} has dtype {arr.dtype}, expected float",
                             file=fname)
        weights[name] = np.ascontiguousarray(arr, dtype=np.float32)
    try:
        layers, vocab, embed_dim, hidden = check_weights(weights)
    except ValueError as e:
        raise InputError(f"inconsistent model arrays: {e}", file=fname) from None
    for key, actual in (("layers", layers), ("vocab_size", vocab),
                        ("embed_dim", embed_dim), ("hidden", hidden)):
        if key in meta and meta[key] != actual:
            raise InputError(f"meta says {key}={meta[key]!r} but the arrays give {actual}",
                             file=fname)
    if "vocab" in meta:
        check_vocab_meta(meta, raw, vocab, fname)
    return weights, meta


def vocab_binding(arrays: dict[str, np.ndarray], fingerprint: str) -> str:
    """A digest that ties a vocabulary (its fingerprint) to the weight arrays as stored.

    Stored in the meta at export and checked on load: a vocabulary shuffled,
    or taken from another model, no longer matches the weights, even when its
    own fingerprint was recomputed.
    """
    import hashlib

    h = hashlib.sha256(fingerprint.encode("ascii"))
    for name in sorted(arrays):
        if name == "__meta__":
            continue
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape}".encode("ascii"))
        h.update(a.tobytes())
    return h.hexdigest()


def check_vocab_meta(meta: dict, raw: dict[str, np.ndarray], vocab_size: int, fname: str) -> None:
    """The meta's vocabulary must be usable, as large as the weights' and the one they were trained with."""
    from .abc.tokens import Vocabulary

    v = meta["vocab"]
    if not isinstance(v, dict):
        raise InputError("the model's vocabulary is not a JSON object", file=fname)
    try:
        voc = Vocabulary(v.get("symbols"), v.get("level"))
    except InputError as e:
        raise InputError(f"the model's vocabulary is unusable ({e.message})", file=fname) from None
    if len(voc) != vocab_size:
        raise InputError(f"the model's vocabulary has {len(voc)} symbols but its weights are for "
                         f"{vocab_size}: the vocabulary belongs to another model", file=fname)
    if "fingerprint" in v and v["fingerprint"] != voc.fingerprint():
        raise InputError("the model's vocabulary does not match its fingerprint (reordered or edited)",
                         file=fname)
    if "vocab_binding" in meta and meta["vocab_binding"] != vocab_binding(raw, voc.fingerprint()):
        raise InputError("the model's vocabulary is not the one its weights were trained with "
                         "(reordered, edited or from another model)", file=fname)


# --------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------

def _prepare_gates(mat: np.ndarray, hidden: int) -> np.ndarray:
    """Reorder Keras' gate blocks (i, f, g, o) to (i, f, o, g) and halve the
    sigmoid gates' columns.

    With the three sigmoid gates adjacent, and sigmoid(x) = 0.5*tanh(x/2)+0.5,
    one tanh over all 4*hidden pre-activations followed by one affine on the
    first 3*hidden does every gate nonlinearity in three array operations.
    Halving is exact in binary floating point, so no accuracy is lost, and the
    tanh form never overflows (unlike 1/(1+exp(-x)) for large negative x).
    """
    H = hidden
    i, f, g, o = (mat[..., k * H:(k + 1) * H] for k in range(4))
    out = np.concatenate([i * 0.5, f * 0.5, o * 0.5, g], axis=-1)
    return np.ascontiguousarray(out, dtype=np.float32)


class NumpyLSTM:
    """Embedding -> stacked LSTM -> Dense logits, the inference half of
    :func:`abcgen.model.build_text_model` (dropout is the identity there).

    Weights are rearranged once at construction so each step is one matrix
    product per layer plus a handful of in-place elementwise operations:

    * layer 0's input product ``embedding @ kernel + bias`` is tabulated per
      token, so feeding a token is a row lookup and only ``h @ recurrent_kernel``
      is left to multiply;
    * deeper layers multiply ``[x, h]`` by the stacked ``[kernel;
      recurrent_kernel]`` in a single call, which halves the BLAS call
      overhead that dominates at batch 1.

    One set of scratch buffers (for the largest batch so far) is reused, so one instance must
    not be stepped from two threads at once.  Returned logits and states are
    always fresh arrays: callers may keep old states (beam search does).
    """

    def __init__(self, weights: dict[str, np.ndarray]):
        w = {k: np.asarray(v, dtype=np.float32) for k, v in weights.items()}
        self.layers, self.vocab_size, self.embed_dim, self.hidden = check_weights(w)
        H = self.hidden
        self.dense = "embedding" not in w        # inputs are frames, not token ids
        k0 = _prepare_gates(w["lstm_0/kernel"], H)
        b0 = _prepare_gates(w["lstm_0/bias"], H)
        # Row t holds token t's full input contribution to layer 0's gates.
        self._table0 = (None if self.dense else
                        np.ascontiguousarray(w["embedding"] @ k0 + b0, dtype=np.float32))
        self._rec0 = _prepare_gates(w["lstm_0/recurrent_kernel"], H)
        self._rec0T: np.ndarray | None = None      # made at the first few rows (_recurrent_into)
        # Keep the plain per-part matrices too: run() multiplies whole
        # sequences by the input kernels at once.
        self._kernel = [k0]
        self._recurrent = [self._rec0]
        self._bias = [b0]
        self._fused: list[np.ndarray | None] = [None]
        for i in range(1, self.layers):
            k = _prepare_gates(w[f"lstm_{i}/kernel"], H)
            r = _prepare_gates(w[f"lstm_{i}/recurrent_kernel"], H)
            b = _prepare_gates(w[f"lstm_{i}/bias"], H)
            self._kernel.append(k)
            self._recurrent.append(r)
            self._bias.append(b)
            self._fused.append(np.ascontiguousarray(np.concatenate([k, r], axis=0)))
        # No output layer (a NADE reads the top state): step returns the top LSTM's h.
        self._out_kernel = np.ascontiguousarray(w["logits/kernel"]) if "logits/kernel" in w else None
        self._out_bias = np.ascontiguousarray(w["logits/bias"]) if "logits/bias" in w else None
        self._embedding = None if self.dense else np.ascontiguousarray(w["embedding"])
        self._buffers: dict = {}
        self._views: tuple | None = None     # (batch, views of _buffers) of the last call

    @classmethod
    def from_npz(cls, path: str | os.PathLike) -> tuple["NumpyLSTM", dict]:
        weights, meta = load_npz(path)
        return cls(weights), meta

    # -- state -------------------------------------------------------------

    def initial_state(self, batch: int = 1) -> State:
        """Zeros, as Keras starts every non-stateful sequence."""
        if batch < 1:
            raise ValueError(f"batch must be positive, got {batch}")
        return [(np.zeros((batch, self.hidden), np.float32),
                 np.zeros((batch, self.hidden), np.float32))
                for _ in range(self.layers)]

    def _check_state(self, state: State, batch: int) -> None:
        if len(state) != self.layers:
            raise ValueError(f"state has {len(state)} layers, model has {self.layers}")
        shape = (batch, self.hidden)
        for i, (h, c) in enumerate(state):
            # Checked because a (1, hidden) state would otherwise broadcast
            # silently against a larger batch.
            if h.shape != shape or c.shape != shape:
                raise ValueError(f"state of layer {i} has shapes {h.shape}, {c.shape}; "
                                 f"expected {shape}")

    def _state_for(self, batch: int, state: State | None) -> State:
        """The given state checked against the batch, or zeros when there is none."""
        if state is None:
            return self.initial_state(batch)
        self._check_state(state, batch)
        return state

    def _scratch(self, batch: int) -> dict[str, np.ndarray]:
        """Scratch arrays for ``batch`` rows: views of one set sized for the largest batch so far.

        A sampling batch shrinks by one tune at a time as tunes end; one set of
        buffers per batch size would hold memory quadratic in the batch.  Here
        it is one set, as large as the largest batch stepped (the leading rows
        of a C-ordered array are contiguous, so the views serve as ``out=``).
        """
        views = self._views
        if views is not None and views[0] == batch:      # the last batch's views: most calls
            return views[1]
        if self._buffers.get("rows", 0) < batch:
            H = self.hidden
            self._buffers = {
                "rows": batch,
                "z": np.empty((batch, 4 * H), np.float32),
                "x0": np.empty((batch, 4 * H), np.float32),
                "xh": np.empty((batch, 2 * H), np.float32),
                "tmp": np.empty((batch, H), np.float32),
            }
        out = {k: v[:batch] for k, v in self._buffers.items() if k != "rows"}
        self._views = (batch, out)
        return out

    def _check_tokens(self, tokens: np.ndarray) -> None:
        if tokens.size and (tokens.min() < 0 or tokens.max() >= self.vocab_size):
            bad = tokens[(tokens < 0) | (tokens >= self.vocab_size)][0]
            raise ValueError(f"token id {int(bad)} outside the vocabulary "
                             f"(0..{self.vocab_size - 1})")

    # -- the cell ----------------------------------------------------------

    def _cell(self, z: np.ndarray, c: np.ndarray, tmp: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
        """Gate pre-activations z (prepared column order i, f, o, g) and the old
        cell state in; fresh (h, c) out.  z is overwritten."""
        H = self.hidden
        np.tanh(z, out=z)
        sig = z[:, :3 * H]
        sig *= 0.5
        sig += 0.5
        i, f, o, g = z[:, :H], z[:, H:2 * H], z[:, 2 * H:3 * H], z[:, 3 * H:]
        c_new = np.multiply(f, c)
        c_new += np.multiply(i, g, out=tmp)
        h_new = np.tanh(c_new)
        h_new *= o
        return h_new, c_new

    # -- public stepping ---------------------------------------------------

    def step(self, token_ids, state: State | None = None) -> tuple[np.ndarray, State]:
        """Feed one token per sequence; return next-token logits and new state.

        ``token_ids`` has shape (batch,); logits have shape (batch, vocab).
        """
        tokens = np.asarray(token_ids)
        if tokens.ndim != 1:
            raise ValueError(f"token_ids must have shape (batch,), got {tokens.shape}")
        if not np.issubdtype(tokens.dtype, np.integer):
            raise ValueError(f"token_ids must be integers, got dtype {tokens.dtype}")
        state = self._state_for(tokens.shape[0], state)
        self._check_tokens(tokens)
        buf = self._scratch(tokens.shape[0])
        # the rows gathered by indexing: np.take with out= costs four times as much
        return self._advance(self._table0[tokens], state, buf)

    def step_frames(self, frames, state: State | None = None) -> tuple[np.ndarray, State]:
        """Feed one dense input frame per sequence (a model without an embedding: the piano
        roll); return the output layer's logits, or the top LSTM's h when there is none."""
        x = np.asarray(frames, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.embed_dim:
            raise ValueError(f"frames must have shape (batch, {self.embed_dim}), got {x.shape}")
        state = self._state_for(x.shape[0], state)
        buf = self._scratch(x.shape[0])
        x0 = np.matmul(x, self._kernel[0], out=buf["x0"])
        x0 += self._bias[0]
        return self._advance(x0, state, buf)

    # -- the step in two halves (the sampler's pipeline) ---------------------

    def recurrent(self, state: State) -> None:
        """The first half of ``step_ids``: layer 0's recurrent product ``h @ recurrent_kernel``,
        which needs the state but not the token, into the scratch buffer.  The sampler runs it
        while the next tokens are still being drawn; ``finish`` then adds the tokens' rows.
        The two halves do exactly step()'s arithmetic, in its order (so the same numbers), and
        share its scratch buffers: both must run in one thread, ``recurrent`` right before
        ``finish`` on the same state."""
        h0 = state[0][0]
        self._recurrent_into(h0, self._scratch(h0.shape[0])["z"])

    def _recurrent_into(self, h0: np.ndarray, z: np.ndarray) -> None:
        """z = h0 @ recurrent_kernel.  One row is a matrix-vector product, memory-bound (the
        kernel is 4 MB at 512 units): it is made with the kernel transposed, row-major
        (BLAS's untransposed gemv), which splits across BLAS threads so that each core
        streams only its share of the rows, from its own cache (on two cores 40 us against
        150 us on one; the row-major gemv of ``h0 @ kernel`` splits less well, 55 us).  The
        copy is made at the first such row.  A few rows (below ROW_BY_ROW) are made one by
        one the same way: OpenBLAS's product of 2 or 3 rows costs nearly a full batch's
        (on two threads 2 rows 202 us, 3 rows 208 us; row by row 83 and 119 us), and each
        row then has the numbers it has alone (the deeper layers and output_layer do the
        same).  All forms are exact to float32 rounding, the same numbers for any number
        of BLAS threads."""
        rows = h0.shape[0]
        if rows < ROW_BY_ROW:
            if self._rec0T is None:
                self._rec0T = np.ascontiguousarray(self._rec0.T)
            for i in range(rows):
                np.dot(self._rec0T, h0[i], out=z[i])
        else:
            np.matmul(h0, self._rec0, out=z)

    def finish(self, token_ids: np.ndarray, state: State, output: bool = True
               ) -> tuple[np.ndarray, State]:
        """The second half of ``step_ids`` (after ``recurrent`` on the same state): the
        tokens' input rows, the gates, the deeper layers and the logits (without
        ``output``: the top layer's h, for ``output_layer`` to make the logits of, maybe
        in another thread).  Token ids are not checked (the sampler draws them from the
        vocabulary)."""
        buf = self._scratch(token_ids.shape[0])
        z = buf["z"]
        z += self._table0[token_ids]
        return self._rest(z, state, buf, output)

    def output_layer(self, h: np.ndarray) -> np.ndarray:
        """The logits of the top layer's h (what step() returns; h itself for a model
        without an output layer)."""
        if self._out_kernel is None:
            return h.copy()
        if 1 < h.shape[0] < ROW_BY_ROW:      # a few rows one by one, as _recurrent_into
            logits = np.concatenate([h[i:i + 1] @ self._out_kernel for i in range(h.shape[0])])
        else:
            logits = h @ self._out_kernel
        logits += self._out_bias
        return logits

    def step_ids(self, token_ids: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        """step() without the argument checks, for a caller whose ids and state are known
        good (the sampler): the same numbers."""
        self.recurrent(state)
        return self.finish(token_ids, state)

    def _advance(self, x0: np.ndarray, state: State, buf: dict) -> tuple[np.ndarray, State]:
        """One step of every layer, given layer 0's input contribution x0 (batch, 4H)."""
        z = buf["z"]
        self._recurrent_into(state[0][0], z)
        z += x0
        return self._rest(z, state, buf)

    def _rest(self, z: np.ndarray, state: State, buf: dict, output: bool = True
              ) -> tuple[np.ndarray, State]:
        """The step after layer 0's pre-activations z (batch, 4H): its gates, the deeper
        layers and the output layer (without ``output``: the top layer's h instead)."""
        tmp, xh = buf["tmp"], buf["xh"]
        H = self.hidden

        new_state: State = []
        c0 = state[0][1]
        h, c = self._cell(z, c0, tmp)
        new_state.append((h, c))
        for layer in range(1, self.layers):
            h_prev, c_prev = state[layer]
            xh[:, :H] = h
            xh[:, H:] = h_prev
            rows = xh.shape[0]
            if 1 < rows < ROW_BY_ROW:          # one by one, as _recurrent_into
                for i in range(rows):
                    np.matmul(xh[i:i + 1], self._fused[layer], out=z[i:i + 1])
            else:
                np.matmul(xh, self._fused[layer], out=z)
            z += self._bias[layer]
            h, c = self._cell(z, c_prev, tmp)
            new_state.append((h, c))
        if not output:
            return h, new_state
        return self.output_layer(h), new_state

    def run(self, token_ids, state: State | None = None, *, return_all: bool = False
            ) -> tuple[np.ndarray, State]:
        """Feed whole sequences, e.g. a prime before sampling starts.

        ``token_ids`` has shape (T,) for one sequence or (batch, T).  Returns
        the logits after the last token, shape (batch, vocab), or for every
        position, shape (batch, T, vocab), with ``return_all``; and the state
        after the last token, so sampling can continue from it.

        Each layer's input product is done for all T positions in one large
        matrix product (far better BLAS efficiency than T small ones); only
        the recurrent part has to go position by position.
        """
        tokens = np.asarray(token_ids)
        if tokens.ndim == 1:
            tokens = tokens[None, :]
        if tokens.ndim != 2:
            raise ValueError(f"token_ids must have shape (T,) or (batch, T), got {tokens.shape}")
        if not np.issubdtype(tokens.dtype, np.integer):
            raise ValueError(f"token_ids must be integers, got dtype {tokens.dtype}")
        batch, T = tokens.shape
        if state is None:
            state = self.initial_state(batch)
        else:
            self._check_state(state, batch)
        if T == 0:
            raise ValueError("run() needs at least one token")
        self._check_tokens(tokens)
        buf = self._scratch(batch)
        z, tmp = buf["z"], buf["tmp"]
        H = self.hidden

        # (T, batch, 4H): time-major so each step reads a contiguous slab.
        proj = np.take(self._table0, tokens.T, axis=0)
        seq = np.empty((T, batch, H), np.float32)
        new_state: State = []
        for layer in range(self.layers):
            if layer > 0:
                proj = seq @ self._kernel[layer]
                proj += self._bias[layer]
            rec = self._recurrent[layer]
            h, c = state[layer]
            for t in range(T):
                if layer == 0:
                    self._recurrent_into(h, z)          # the numbers of step()
                else:
                    np.matmul(h, rec, out=z)
                z += proj[t]
                h, c = self._cell(z, c, tmp)
                seq[t] = h
            new_state.append((h, c))
        if return_all:
            logits = seq @ self._out_kernel
            logits += self._out_bias
            return np.ascontiguousarray(logits.transpose(1, 0, 2)), new_state
        logits = h @ self._out_kernel
        logits += self._out_bias
        return logits, new_state


def _benchmark(vocab: int = 140, embed_dim: int = 128, hidden: int = 512,
               layers: int = 1, seconds: float = 1.0) -> dict[int, float]:
    """Tokens per second of step() on random weights, so a change to the hot
    path can be checked against the sampling-speed goals without a trained
    model: ``python -m abcgen.step``."""
    import time

    rng = np.random.default_rng(0)
    w = {"embedding": rng.normal(0, 0.1, (vocab, embed_dim)),
         "logits/kernel": rng.normal(0, 0.05, (hidden, vocab)),
         "logits/bias": np.zeros(vocab)}
    in_dim = embed_dim
    for i in range(layers):
        w[f"lstm_{i}/kernel"] = rng.normal(0, 0.05, (in_dim, 4 * hidden))
        w[f"lstm_{i}/recurrent_kernel"] = rng.normal(0, 0.05, (hidden, 4 * hidden))
        w[f"lstm_{i}/bias"] = np.zeros(4 * hidden)
        in_dim = hidden
    net = NumpyLSTM(w)
    rates = {}
    for batch in (1, 64):
        state = net.initial_state(batch)
        tokens = rng.integers(0, vocab, batch)
        for _ in range(10):
            _, state = net.step(tokens, state)
        n, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            for _ in range(50):
                _, state = net.step(tokens, state)
            n += 50
        rates[batch] = batch * n / elapsed
    return rates


if __name__ == "__main__":
    for b, rate in _benchmark().items():
        print(f"NumpyLSTM.step 1x512 (vocab 140, embed 128), batch {b:>2}: "
              f"{rate:,.0f} tokens/s")


def save_npz(path: str | os.PathLike, weights: dict[str, np.ndarray], meta: dict,
             dtype: str = "float16") -> Path:
    """Write weights and JSON meta as one compressed ``.npz``, atomically (NumPy only).

    The counterpart of :func:`load_npz`; ``abcgen export`` uses it to make the
    compact float16 copy of a run's model that ships with the package.
    """
    import io

    from .fileio import atomic_write_bytes

    if dtype not in ("float16", "float32"):
        raise ValueError(f"dtype must be float16 or float32, got {dtype!r}")
    arrays = {name: np.asarray(a).astype(dtype) for name, a in weights.items()}
    meta = dict(meta, dtype=dtype)
    meta.pop("vocab_binding", None)
    if isinstance(meta.get("vocab"), dict):
        from .abc.tokens import Vocabulary

        v = meta["vocab"]
        meta["vocab_binding"] = vocab_binding(arrays, Vocabulary(v["symbols"], v["level"]).fingerprint())
    arrays["__meta__"] = np.frombuffer(json.dumps(meta, sort_keys=True, ensure_ascii=False)
                                       .encode("utf-8"), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def padded_batches(tunes: list, batch_size: int):
    """Tunes of token ids, shortest first, as (x, y, mask) batches for teacher
    forcing: x the inputs, y the next tokens, mask True where y is a real token.
    Shared by the Keras and the NumPy held-out evaluations, so both score the
    same predictions."""
    order = sorted(range(len(tunes)), key=lambda i: len(tunes[i]))
    for start in range(0, len(order), batch_size):
        batch = [tunes[i] for i in order[start:start + batch_size]]
        n = max(len(t) for t in batch) - 1
        x = np.zeros((len(batch), n), np.int64)
        y = np.zeros((len(batch), n), np.int64)
        mask = np.zeros((len(batch), n), bool)
        for r, t in enumerate(batch):
            x[r, :len(t) - 1] = t[:-1]
            y[r, :len(t) - 1] = t[1:]
            mask[r, :len(t) - 1] = True
        yield x, y, mask

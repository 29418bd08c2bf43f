"""Baselines that the LSTM's held-out bits per character are compared against.

A bits-per-character figure means little alone: it needs a yardstick that
knows nothing about music but is good at text.  Two are offered here.

* :class:`KneserNey`, an interpolated modified Kneser-Ney n-gram model (the
  strongest classical count-based language model), run at the same tokenizer
  levels as the LSTM and scored with the same definition of bits per
  character (:func:`ngram_bits_per_char`).
* :func:`xz_bits`, conditional compression: what xz pays for the test text
  once it has seen the training text.  A model that cannot beat a general
  purpose compressor has learnt nothing a dictionary coder could not.

This module is deliberately free of tensorflow and music21 so that the
baselines can be computed (and tested) without the heavy stack.
"""

from __future__ import annotations

import lzma
import math
from typing import Hashable, Iterable, Sequence

import numpy as np

from .abc.tokens import BOS, EOS, split_tokens

__all__ = ["KneserNey", "xz_bits", "ngram_bits_per_char", "estimate_discounts"]

LN2 = math.log(2.0)

# Internal symbol ids.  The start marker is context only (never predicted), the
# unknown id never occurs in training, so every context holding it is unseen
# and its probability is exactly the mass that reaches the uniform floor.
_BOS_ID, _EOS_ID, _UNK_ID = 0, 1, 2
_FIRST_ID = 3


def estimate_discounts(n1: int, n2: int, n3: int, n4: int) -> tuple[float, float, float]:
    """Chen & Goodman's modified Kneser-Ney discounts (D1, D2, D3+) from the
    numbers of n-grams seen exactly 1, 2, 3 and 4 times.

    Y = n1 / (n1 + 2 n2);  D1 = 1 - 2Y n2/n1;  D2 = 2 - 3Y n3/n2;  D3+ = 3 - 4Y n4/n3.

    On a corpus too small for all four count-of-counts to be non-zero, or when
    an estimate leaves its valid range 0 < Dk <= k, the three discounts fall
    back to the single original Kneser-Ney discount Y (which equals D1), or
    to 0.5 if there are no singletons at all.  A discount must stay positive:
    with D = 0 a seen history would give no mass to the lower orders and an
    unseen symbol would cost infinitely many bits.
    """
    if n1 > 0 and n2 > 0 and n3 > 0 and n4 > 0:
        y = n1 / (n1 + 2.0 * n2)
        d = (1.0 - 2.0 * y * n2 / n1, 2.0 - 3.0 * y * n3 / n2, 3.0 - 4.0 * y * n4 / n3)
        if all(0.0 < dk <= k for k, dk in zip((1, 2, 3), d)):
            return d
    y = n1 / (n1 + 2.0 * n2) if n1 > 0 else 0.5
    return (y, y, y)


def _find(keys: np.ndarray, hid: np.ndarray, sym: np.ndarray, base: int) -> np.ndarray:
    """Dense index of (context id, symbol) in the sorted ``keys``, or -1.

    Contexts are numbered by order of their keys, so an n-gram is one int64
    (context id * base + symbol): no tuples, and lookups of a whole test set
    are one searchsorted per order.  An unseen context (-1) stays unseen.
    """
    q = hid * base + sym
    idx = np.searchsorted(keys, q)
    np.minimum(idx, len(keys) - 1, out=idx)
    ok = (hid >= 0) & (keys[idx] == q)
    return np.where(ok, idx, -1)


class KneserNey:
    """Interpolated modified Kneser-Ney n-gram model over any hashable symbols.

    Each training sequence is one tune, framed as ``order - 1`` start markers
    ``<s>``, its symbols, and ``</s>``: the first symbol is predicted from the
    tune start, the end of the tune is predicted like any symbol, the start
    marker never is.

    Estimation (Chen & Goodman 1998, "interpolated modified Kneser-Ney"):

    * Highest order: raw counts.  Lower orders: continuation counts, the
      number of distinct symbols seen to the left of the n-gram; except for
      n-grams that begin with ``<s>``, which keep their raw counts (as in
      KenLM).  Their left neighbour is always another ``<s>``, so their
      continuation count would be 1 whatever the data; and the only full
      history they ever back off from is the same tune start padded with more
      ``<s>``, whose events are exactly their raw counts.
    * Three discounts per order, D1, D2 and D3+, from that order's
      count-of-counts (:func:`estimate_discounts`), unless ``discounts`` fixes
      one (D1, D2, D3+) triple for every order.
    * P(w | h) = max(c(h w) - D(c), 0) / c(h) + gamma(h) P(w | h'), with
      gamma(h) = (D1 N1(h .) + D2 N2(h .) + D3+ N3+(h .)) / c(h); a history
      never seen at an order passes the lower order through unchanged.
    * Below the unigrams: the uniform distribution over the vocabulary, the
      symbols seen in training plus ``</s>`` plus one slot shared by all
      unknown symbols, so an unseen test symbol costs finitely many bits and
      the probabilities over the vocabulary and the unknown slot sum to 1.

    Counts are numpy arrays keyed by integer-coded contexts, so fitting 3.5
    million symbols at order 5 takes seconds rather than the minutes and
    gigabytes of dicts of tuples.
    """

    def __init__(self, order: int = 5, discounts: Sequence[float] | None = None):
        if int(order) != order or order < 1:
            raise ValueError(f"order must be a positive integer, not {order!r}")
        if discounts is not None:
            discounts = tuple(float(d) for d in discounts)
            if len(discounts) != 3 or not all(0.0 < d <= k for k, d in zip((1, 2, 3), discounts)):
                raise ValueError("discounts must be (D1, D2, D3+) with 0 < Dk <= k")
        self.order = int(order)
        self.fixed_discounts = discounts
        self._ids: dict | None = None

    # ------------------------------------------------------------------
    # fitting

    @property
    def fitted(self) -> bool:
        return self._ids is not None

    @property
    def vocab_size(self) -> int:
        """Symbols of the uniform floor: seen symbols, ``</s>``, the unknown slot."""
        self._check_fitted()
        return len(self._ids)          # every id but <s>, plus the unknown slot

    @property
    def symbols(self) -> list:
        """The predictable symbols seen in training, and ``</s>``."""
        self._check_fitted()
        return [s for s, i in self._ids.items() if i != _BOS_ID]

    def _check_fitted(self) -> None:
        if self._ids is None:
            raise RuntimeError("KneserNey model is not fitted; call fit() first")

    def _frame(self, sequences: Iterable[Sequence[Hashable]], ids: dict,
               grow: bool) -> np.ndarray:
        """All tunes as one id array, each framed by start markers and ``</s>``.

        With ``grow`` new symbols get ids (training); otherwise they map to the
        unknown id.  Markers inside a tune are refused: a literal ``<s>`` would
        be confused with the framing, and the tokenizers never produce them.
        """
        pad = [_BOS_ID] * (self.order - 1)
        out: list[int] = []
        for seq in sequences:
            out.extend(pad)
            for s in seq:
                i = ids.get(s)
                if i is None:
                    if grow:
                        i = ids[s] = len(ids) + 1      # ids skip the unknown id
                    else:
                        i = _UNK_ID
                elif i < _FIRST_ID:
                    raise ValueError(f"the marker {s!r} cannot be a symbol of a sequence")
                out.append(i)
            out.append(_EOS_ID)
        return np.asarray(out, dtype=np.int64)

    def fit(self, sequences: Iterable[Sequence[Hashable]]) -> "KneserNey":
        """Count and estimate from scratch (a refit forgets the earlier data).
        A sequence may be a string: its characters are then the symbols."""
        n_order = self.order
        self._ids = None               # unfitted until the end: a failed fit leaves no half model
        ids = {BOS: _BOS_ID, EOS: _EOS_ID}
        x = self._frame(sequences, ids, grow=True)
        if not len(x):
            raise ValueError("no training sequences")
        base = len(ids) + 1
        if base * (len(x) + 1) >= 2 ** 62:
            raise ValueError("corpus too large for 64-bit n-gram keys")
        pos = np.flatnonzero(x != _BOS_ID)       # the predicted positions
        w = x[pos]

        # Per order n: sorted n-gram keys, raw counts, one position of each,
        # and the dense n-gram id of every position (for continuation counts).
        ngram_keys, raw, first_pos, gid = [], [], [], []
        hist_keys = [np.zeros(1, dtype=np.int64)]   # the empty context, id 0
        hid = np.zeros(len(pos), dtype=np.int64)
        for n in range(1, n_order + 1):
            keys, at, inv, cnt = np.unique(hid * base + w, return_index=True,
                                           return_inverse=True, return_counts=True)
            ngram_keys.append(keys)
            raw.append(cnt)
            first_pos.append(at)
            gid.append(inv.reshape(-1))
            if n < n_order:                   # extend the contexts one symbol left
                hk, hid = np.unique(hid * base + x[pos - n], return_inverse=True)
                hid = hid.reshape(-1)
                hist_keys.append(hk)
        del hid

        self._base = base
        self._hist_keys = hist_keys
        self._ngram_keys = ngram_keys
        self._alpha: list[np.ndarray] = []
        self._gamma: list[np.ndarray] = []
        self.discounts: list[tuple[float, float, float]] = []
        self.count_of_counts: list[tuple[int, int, int, int]] = []
        for n in range(1, n_order + 1):
            k = n - 1
            if n == n_order:
                adj = raw[k]
            else:
                # distinct left extensions: each (n+1)-gram type names its suffix once
                cont = np.bincount(gid[k][first_pos[k + 1]], minlength=len(raw[k]))
                if n >= 2:
                    starts = x[pos[first_pos[k]] - (n - 1)] == _BOS_ID
                    adj = np.where(starts, raw[k], cont)
                else:
                    adj = cont
            coc = np.bincount(np.minimum(adj, 5), minlength=6)
            n1, n2, n3, n4 = (int(v) for v in coc[1:5])
            d = self.fixed_discounts or estimate_discounts(n1, n2, n3, n4)
            self.count_of_counts.append((n1, n2, n3, n4))
            self.discounts.append(d)
            dvec = np.array((0.0,) + tuple(d))
            disc = dvec[np.minimum(adj, 3)]
            h = ngram_keys[k] // base             # the history id of each n-gram
            n_hist = len(hist_keys[k])
            c_h = np.bincount(h, weights=adj, minlength=n_hist)
            lost = np.bincount(h, weights=disc, minlength=n_hist)
            self._alpha.append((adj - disc) / c_h[h])
            self._gamma.append(lost / c_h)
            raw[k] = None
        self.train_tokens = int(len(pos))
        self._ids = ids
        return self

    # ------------------------------------------------------------------
    # scoring

    def _logp(self, ctx: list[np.ndarray], w: np.ndarray) -> np.ndarray:
        """Natural log probabilities of ``w`` given contexts ``ctx[k-1]`` = the
        symbol k places back; bottom-up, so each order interpolates the one
        below it exactly as in training."""
        base = self._base
        p = np.full(len(w), 1.0 / self.vocab_size)
        hid = np.zeros(len(w), dtype=np.int64)
        for n in range(1, self.order + 1):
            k = n - 1
            if n >= 2:
                hid = _find(self._hist_keys[k], hid, ctx[k - 1], base)
            g = _find(self._ngram_keys[k], hid, w, base)
            alpha = np.where(g >= 0, self._alpha[k][np.maximum(g, 0)], 0.0)
            gamma = np.where(hid >= 0, self._gamma[k][np.maximum(hid, 0)], 1.0)
            p = alpha + gamma * p
        return np.log(p)

    def _encode_symbol(self, s: Hashable) -> int:
        i = self._ids.get(s, _UNK_ID)
        if i == _BOS_ID:
            raise ValueError("the start marker is never predicted")
        return i

    def logprob(self, symbol: Hashable, history: Sequence[Hashable] = ()) -> float:
        """Natural log P(symbol | history).

        ``history`` is the tune so far: a history shorter than ``order - 1``
        is taken to be at the start of a tune and padded with ``<s>`` (which
        may also be given explicitly).  ``</s>`` as the symbol asks for the end
        of the tune; any symbol not seen in training gets the unknown slot.
        """
        self._check_fitted()
        m = self.order - 1
        h = list(history)[-m:] if m else []
        hist = [_BOS_ID] * (m - len(h)) + [self._ids.get(s, _UNK_ID) for s in h]
        ctx = [np.array([hist[-j]], dtype=np.int64) for j in range(1, m + 1)]
        return float(self._logp(ctx, np.array([self._encode_symbol(symbol)], dtype=np.int64))[0])

    def _token_logps(self, sequences: Iterable[Sequence[Hashable]]) -> np.ndarray:
        self._check_fitted()
        x = self._frame(sequences, self._ids, grow=False)
        pos = np.flatnonzero(x != _BOS_ID)
        ctx = [x[pos - j] for j in range(1, self.order)]
        return self._logp(ctx, x[pos])

    def bits(self, sequences: Iterable[Sequence[Hashable]]) -> float:
        """Total bits of the tunes, every symbol and each tune's ``</s>``."""
        return float(-self._token_logps(sequences).sum() / LN2)

    def sequence_bits(self, sequence: Sequence[Hashable]) -> float:
        return self.bits([sequence])


def xz_bits(train_text: str, test_text: str, preset: int = 9 | lzma.PRESET_EXTREME,
            separator: str = "\n") -> dict:
    """Conditional compression baseline: bits xz spends on ``test_text`` after
    ``train_text``, i.e. bits(xz(train + separator + test)) - bits(xz(train +
    separator)), per test character; plus xz of the test text alone, the
    weaker baseline of a compressor that never saw the corpus.

    The separator defaults to a newline: model texts end in one, so it leaves a
    blank line between the last training tune and the first test tune, as in
    an ABC file.  It is charged to the training side.

    Raw LZMA2 streams (FORMAT_RAW, no integrity check) with the same filter for
    every call: the xz container adds some 60 bytes of headers, index and
    CRC64 that say nothing about the text.  They mostly cancel in the
    conditional difference but would inflate the alone figure for a short
    test text.

    LZMA can only refer back as far as its dictionary: preset 9 has 64 MiB,
    plenty for the folk corpus (a few MB), but the dictionary is enlarged to
    cover the whole joint text when it is bigger, up to LZMA2's 1.5 GiB
    limit, beyond which the figure would silently measure forgetting.
    """
    if not test_text:
        raise ValueError("empty test text")
    head = (train_text + separator).encode("utf-8")
    test = test_text.encode("utf-8")
    dict_size = _preset_dict_size(preset)
    need = len(head) + len(test)
    if need > dict_size:
        dict_size = need
    if dict_size > _MAX_DICT:
        raise ValueError(f"train and test text ({need} bytes) exceed the largest "
                         f"LZMA2 dictionary ({_MAX_DICT} bytes)")
    filters = [{"id": lzma.FILTER_LZMA2, "preset": preset, "dict_size": dict_size}]

    def size(data: bytes) -> int:
        return len(lzma.compress(data, format=lzma.FORMAT_RAW, filters=filters))

    head_bytes = size(head)
    joint_bytes = size(head + test)
    alone_bytes = size(test)
    chars = len(test_text)
    bits = 8.0 * (joint_bytes - head_bytes)
    return {
        "bits": bits,
        "bits_per_char": bits / chars,
        "alone_bits": 8.0 * alone_bytes,
        "alone_bits_per_char": 8.0 * alone_bytes / chars,
        "test_chars": chars,
        "train_chars": len(train_text),
        "dict_size": dict_size,
    }


_MAX_DICT = 1536 << 20          # LZMA2's largest dictionary


def _preset_dict_size(preset: int) -> int:
    """liblzma's dictionary size for a preset level (xz(1) table)."""
    level = preset & ~lzma.PRESET_EXTREME
    sizes = {0: 256 << 10, 1: 1 << 20, 2: 2 << 20, 3: 4 << 20, 4: 4 << 20,
             5: 8 << 20, 6: 8 << 20, 7: 16 << 20, 8: 32 << 20, 9: 64 << 20}
    if level not in sizes:
        raise ValueError(f"xz preset must be 0-9 (optionally | PRESET_EXTREME), not {preset!r}")
    return sizes[level]


def ngram_bits_per_char(train_texts: Sequence[str], test_texts: Sequence[str], level: str,
                        order: int = 5) -> dict:
    """Kneser-Ney bits on the test tunes, measured the way the LSTM is: total
    bits over every test tune including its end-of-tune prediction, divided
    by the characters of the test texts (markers carry no characters).  Per
    character, not per token, so the two tokenizer levels are comparable."""
    train = [split_tokens(t, level) for t in train_texts]
    test = [split_tokens(t, level) for t in test_texts]
    if not test:
        raise ValueError("no test texts")
    model = KneserNey(order).fit(train)
    total = model.bits(test)
    tokens = sum(len(t) + 1 for t in test)
    chars = sum(len(t) for t in test_texts)
    return {
        "bits": total,
        "bits_per_token": total / tokens,
        "bits_per_char": total / chars if chars else float("inf"),
        "test_tokens": tokens,
        "test_chars": chars,
        "train_tokens": model.train_tokens,
        "vocab_size": model.vocab_size,
        "order": order,
        "level": level,
        "discounts": model.discounts,
    }

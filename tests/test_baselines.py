"""Kneser-Ney and xz baselines for bits per character."""

from __future__ import annotations

import math
import random
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

from abcgen.abc.tokens import split_tokens
from abcgen.baselines import KneserNey, estimate_discounts, ngram_bits_per_char, xz_bits

TUNES = [
    "M:6/8\nL:1/8\nK:Dmix\n"
    "A|:B2c def|(3gfe[DFA]2z^c-|c3 c2B|1A3 A2:|\n"
    "[2A3 A3|]\n",
    "M:4/4\nL:1/8\nK:Gmaj\n"
    "|:G2BG dGBG|c2ec BdBG|A2cA FAcA|BGAF G4:|\n"
    "|:g2bg d2gd|e2ce d2Bd|c2ec BdBG|A2F2 G4:|\n",
    "M:3/4\nL:1/8\nK:Ador\n"
    "E2 A2 A2|B2 c2 d2|e2 d2 c2|B4 A2|\n"
    "E2 A2 A2|B2 c2 d2|e2 d2 B2|A6|]\n",
    "M:2/4\nL:1/16\nK:Emin\n"
    "(3B,CD|E2EF G2FE|D2B,D A,2D2|E2EF GABc|d2B2 A4|\n"
    "E2EF G2FE|D2B,D A,2D2|GFED B,2D2|E4 E2:|\n",
]


def _corpus(n: int, seed: int, length=(0, 12), alphabet="abcde") -> list[list[str]]:
    rng = random.Random(seed)
    return [[rng.choice(alphabet) for _ in range(rng.randint(*length))] for _ in range(n)]


def _markov(n: int, seed: int) -> list[list[str]]:
    """Tunes from a fixed first-order chain: structure an n-gram model can learn."""
    table = random.Random(99)
    succ = {a: table.sample("abcdefgh", 3) for a in "abcdefgh"}
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        s = [rng.choice("abcdefgh")]
        while len(s) < 40:
            s.append(rng.choice(succ[s[-1]]))
        out.append(s)
    return out


def _total(model: KneserNey, history) -> float:
    """Probability mass over the whole vocabulary plus the unknown slot."""
    return (sum(math.exp(model.logprob(w, history)) for w in model.symbols)
            + math.exp(model.logprob("<unseen>", history)))


# --------------------------------------------------------------------------
# Kneser-Ney: normalization


HISTORIES = [(), ("a",), ("a", "b"), ("e", "b", "a", "d"), ("c", "c", "c", "c", "c"),
             ("<s>", "<s>", "a"), ("x", "y"), ("a", "x", "b"), ("</s>",), tuple("abcdeabcde")]


@pytest.mark.parametrize("order", [1, 2, 3, 4, 5])
def test_probabilities_sum_to_one(order):
    model = KneserNey(order).fit(_corpus(60, seed=order))
    assert model.vocab_size == len(model.symbols) + 1 == 5 + 1 + 1
    for h in HISTORIES:
        assert _total(model, h) == pytest.approx(1.0, abs=1e-9), h


@pytest.mark.parametrize("order", [1, 3, 5])
def test_probabilities_sum_to_one_with_fixed_discounts(order):
    model = KneserNey(order, discounts=(0.3, 1.2, 2.9)).fit(_corpus(20, seed=7))
    for h in HISTORIES:
        assert _total(model, h) == pytest.approx(1.0, abs=1e-9), h


@settings(max_examples=25, deadline=None)
@given(order=st.integers(1, 5), seed=st.integers(0, 10_000), n=st.integers(1, 15),
       history=st.lists(st.sampled_from("abcz"), max_size=6))
def test_property_probabilities_sum_to_one(order, seed, n, history):
    model = KneserNey(order).fit(_corpus(n, seed, length=(0, 8), alphabet="abc"))
    assert _total(model, history) == pytest.approx(1.0, abs=1e-9)


# --------------------------------------------------------------------------
# Kneser-Ney: values derived by hand


def test_hand_computed_bigram_fixed_discount():
    # Tunes <s> a b </s> and <s> a c </s>, order 2, D1 = D2 = D3+ = 0.5.
    # Vocabulary a b c </s> + unknown slot: V = 5, uniform 1/5.
    # Unigrams use continuation counts (distinct left neighbours):
    #   a {<s>} 1, b {a} 1, c {a} 1, </s> {b, c} 2; total 5; gamma = 0.5 * 4 / 5 = 0.4
    #   P1(a) = P1(b) = P1(c) = 0.5/5 + 0.4/5 = 0.18
    #   P1(</s>) = 1.5/5 + 0.08 = 0.38, P1(unknown) = 0.08
    # Bigrams use raw counts: (<s> a) 2, (a b) 1, (a c) 1, (b </s>) 1, (c </s>) 1.
    #   h = <s>: c = 2, gamma = 0.5/2 = 0.25: P(a) = 1.5/2 + 0.25 * 0.18 = 0.795
    #            P(b) = 0.25 * 0.18 = 0.045, P(</s>) = 0.25 * 0.38 = 0.095
    #   h = a:   c = 2, gamma = 2 * 0.5/2 = 0.5: P(b) = 0.5/2 + 0.5 * 0.18 = 0.34
    #            P(</s>) = 0.5 * 0.38 = 0.19, P(unknown) = 0.5 * 0.08 = 0.04
    #   h = b:   c = 1, gamma = 0.5: P(</s>) = 0.5 + 0.5 * 0.38 = 0.69
    #   h unseen (z): the unigram distribution itself.
    m = KneserNey(2, discounts=(0.5, 0.5, 0.5)).fit([["a", "b"], ["a", "c"]])
    expect = {
        (): {"a": 0.795, "b": 0.045, "c": 0.045, "</s>": 0.095, "q": 0.02},
        ("a",): {"a": 0.09, "b": 0.34, "c": 0.34, "</s>": 0.19, "q": 0.04},
        ("b",): {"a": 0.09, "b": 0.09, "</s>": 0.69, "q": 0.04},
        ("z",): {"a": 0.18, "b": 0.18, "c": 0.18, "</s>": 0.38, "q": 0.08},
    }
    for h, probs in expect.items():
        for w, p in probs.items():
            assert math.exp(m.logprob(w, h)) == pytest.approx(p, abs=1e-12), (h, w)
    # Whole tune <s> a b </s>: 0.795 * 0.34 * 0.69
    assert m.sequence_bits(["a", "b"]) == pytest.approx(-math.log2(0.795 * 0.34 * 0.69), abs=1e-9)


def test_hand_computed_bigram_estimated_discounts():
    # Same corpus, discounts estimated.  Bigram count-of-counts n1 = 4, n2 = 1,
    # n3 = 0: too few for three discounts, so D = Y = 4 / (4 + 2) = 2/3.
    # Unigram continuation counts 1, 1, 1, 2: n1 = 3, n2 = 1, D = 3/5.
    #   unigram gamma = 0.6 * 4 / 5 = 0.48; floor 0.48/5 = 0.096
    #   P1(a) = 0.4/5 + 0.096 = 0.176; P1(</s>) = 1.4/5 + 0.096 = 0.376
    #   h = <s>: gamma = (2/3)/2 = 1/3:  P(a) = (4/3)/2 + 0.176/3 = 0.725333...
    #   h = a:   gamma = (4/3)/2 = 2/3:  P(b) = (1/3)/2 + 2/3 * 0.176 = 0.284
    #   h = b:   gamma = 2/3:            P(</s>) = 1/3 + 2/3 * 0.376 = 0.584
    m = KneserNey(2).fit([["a", "b"], ["a", "c"]])
    assert m.discounts[1] == pytest.approx((2 / 3,) * 3)
    assert m.discounts[0] == pytest.approx((0.6,) * 3)
    assert math.exp(m.logprob("a")) == pytest.approx(2 / 3 + 0.176 / 3, abs=1e-12)
    assert math.exp(m.logprob("b", ["a"])) == pytest.approx(0.284, abs=1e-12)
    assert math.exp(m.logprob("</s>", ["a", "b"])) == pytest.approx(0.584, abs=1e-12)
    assert math.exp(m.logprob("zz", ["q"])) == pytest.approx(0.096, abs=1e-12)


def test_start_ngrams_keep_raw_counts():
    # Order 3, D = 0.5.  The bigram (<s> a) begins with <s>: its continuation
    # count would be 1 (always after another <s>); it keeps its raw count 3.
    # Bigram level below h = (<s>): c(<s> a) = 3, c(<s> b) = 1 -> total 4,
    # gamma = 2 * 0.5 / 4 = 0.25.  Unigram continuation counts a {<s>} 1,
    # b {<s>, a} 2, </s> {a, b} 2: total 5, gamma = 0.5 * 3 / 5 = 0.3, V = 4:
    #   P1(a) = 0.5/5 + 0.3/4 = 0.175
    #   P2(a | <s>) = 2.5/4 + 0.25 * 0.175 = 0.66875
    # The trigram history (<s> <s>) has c = 4 with raw counts 3 and 1 as well:
    #   P3(a | <s> <s>) = 2.5/4 + 0.25 * 0.66875 = 0.7921875
    m = KneserNey(3, discounts=(0.5, 0.5, 0.5)).fit([["a"], ["a", "b"], ["a"], ["b"]])
    assert math.exp(m.logprob("a", ["z"])) == pytest.approx(0.175, abs=1e-12)
    assert math.exp(m.logprob("a")) == pytest.approx(0.7921875, abs=1e-12)


def test_estimate_discounts():
    # Y = 10/20 = 0.5; D1 = 1 - 2*0.5*5/10 = 0.5; D2 = 2 - 3*0.5*3/5 = 1.1;
    # D3+ = 3 - 4*0.5*2/3 = 5/3
    assert estimate_discounts(10, 5, 3, 2) == pytest.approx((0.5, 1.1, 5 / 3))
    assert estimate_discounts(4, 1, 0, 0) == pytest.approx((2 / 3,) * 3)   # too few counts
    assert estimate_discounts(0, 3, 2, 1) == (0.5, 0.5, 0.5)              # no singletons
    # D2 = 2 - 3 * (1/3) * 100/1 < 0: out of range, falls back to Y = 1/3
    assert estimate_discounts(1, 1, 100, 1) == pytest.approx((1 / 3,) * 3)


def _reference_logprob(train, order, symbol, history):
    """The textbook recursion over dicts of tuples, slow but obviously right."""
    m = order - 1
    framed = [["<s>"] * m + list(s) + ["</s>"] for s in train]
    events = [(tuple(f[i - m:i]), f[i]) for f in framed for i in range(m, len(f))]
    vocab = {w for _, w in events}
    counts = []                               # counts[n - 1][(h, w)], order n
    for n in range(1, order + 1):
        raw, left = {}, {}
        for h, w in events:
            g = h[len(h) - n + 1:] + (w,)
            raw[g] = raw.get(g, 0) + 1
            left.setdefault(g, set()).add(h[len(h) - n] if n < order else None)
        counts.append({g: (c if n == order or g[0] == "<s>" else len(left[g]))
                       for g, c in raw.items()})
    h = (["<s>"] * m + list(history))[len(history):] if m else []
    p = 1 / (len(vocab) + 1)
    for n in range(1, order + 1):
        table = counts[n - 1]
        coc = [sum(1 for c in table.values() if c == k) for k in (1, 2, 3, 4)]
        d = estimate_discounts(*coc)
        ctx = tuple(h[len(h) - n + 1:]) if n > 1 else ()
        row = {g[-1]: c for g, c in table.items() if g[:-1] == ctx}
        if not row:
            continue
        total = sum(row.values())
        lost = sum(d[min(c, 3) - 1] for c in row.values())
        c = row.get(symbol, 0)
        p = (c - d[min(c, 3) - 1] if c else 0) / total + lost / total * p
    return math.log(p)


@pytest.mark.parametrize("order", [1, 2, 3, 4, 5])
def test_matches_reference_implementation(order):
    train = _corpus(25, seed=10 + order, alphabet="abcd")
    model = KneserNey(order).fit(train)
    for h in [(), ("a",), ("b", "a"), ("d", "c", "b", "a"), ("a", "x"), ("c",) * 6]:
        for w in ["a", "b", "c", "d", "</s>", "x"]:
            assert model.logprob(w, h) == pytest.approx(
                _reference_logprob(train, order, w, list(h)), abs=1e-12), (h, w)


# --------------------------------------------------------------------------
# Kneser-Ney: behaviour


def test_bits_agree_with_logprob_chain():
    train = _corpus(40, seed=3)
    model = KneserNey(4).fit(train)
    test = _corpus(5, seed=4) + [["a", "zz", "b"]]
    total = 0.0
    for seq in test:
        bits = -sum(model.logprob(w, seq[:i]) for i, w in enumerate(seq))
        bits -= model.logprob("</s>", seq)
        bits /= math.log(2)
        assert model.sequence_bits(seq) == pytest.approx(bits, rel=1e-12)
        total += bits
    assert model.bits(test) == pytest.approx(total, rel=1e-12)


def test_more_training_data_gives_fewer_bits():
    test = _markov(30, seed=1)
    bits = [KneserNey(3).fit(_markov(n, seed=2)).bits(test) for n in (5, 40, 300)]
    assert bits[0] > bits[1] > bits[2]
    # 3 successors each: about log2(3) = 1.58 bits a symbol once the chain is learnt
    assert bits[2] / sum(len(s) + 1 for s in test) < 1.8


def test_seen_sequence_costs_far_less_than_random():
    # A random tune hidden once in a structured corpus: its 5-grams are
    # singletons, discounted by D1 (about 0.5 here) but still dominant.  (In a
    # corpus of nothing but random tunes almost every 5-gram is a singleton,
    # D1 -> 1 and memorising is rightly worth little: not what is tested.)
    rng = random.Random(5)
    hidden = [rng.choice("abcdefgh") for _ in range(60)]
    fresh = [rng.choice("abcdefgh") for _ in range(60)]
    model = KneserNey(5).fit(_markov(200, seed=3) + [hidden])
    seen = model.sequence_bits(hidden)
    assert 0 < seen < 0.25 * model.sequence_bits(fresh)


def test_unseen_symbol_has_finite_cost():
    model = KneserNey(5).fit(_corpus(30, seed=8))
    lp = model.logprob("never-seen", ["a", "b", "c", "d"])
    assert math.isfinite(lp) and lp < model.logprob("a", ["a", "b", "c", "d"])
    # in the history too: it just makes the context unseen
    assert math.isfinite(model.sequence_bits(["a", "Q", "b", "Q", "Q", "c"]))
    # the unknown slot is shared: every unseen symbol costs the same
    assert model.logprob("x") == model.logprob(("any", "thing"))


def test_integer_symbols_and_string_sequences():
    ids = KneserNey(3).fit([[5, 6, 7], [5, 7]])
    assert _total(ids, [5, 6]) == pytest.approx(1.0, abs=1e-9)
    chars = KneserNey(3).fit(["abc", "ac"])
    listed = KneserNey(3).fit([list("abc"), list("ac")])
    assert chars.bits(["abca"]) == pytest.approx(listed.bits([list("abca")]), rel=1e-15)


def test_empty_tunes_predict_only_the_end():
    model = KneserNey(2).fit([[], [], ["a"]])
    assert model.train_tokens == 4
    assert model.sequence_bits([]) == pytest.approx(-math.log2(math.exp(model.logprob("</s>"))))
    assert model.sequence_bits([]) < model.sequence_bits(["a"])


def test_errors():
    with pytest.raises(ValueError):
        KneserNey(0)
    with pytest.raises(ValueError):
        KneserNey(3, discounts=(0.5, 2.5, 1.0))      # D2 > 2
    with pytest.raises(ValueError):
        KneserNey(3, discounts=(0.0, 1.0, 1.0))      # a zero discount starves unseen symbols
    model = KneserNey(3)
    with pytest.raises(RuntimeError):
        model.logprob("a")
    with pytest.raises(ValueError):
        model.fit([])
    with pytest.raises(ValueError):
        model.fit([["a", "<s>", "b"]])
    assert not model.fitted                           # a failed fit leaves no half model
    model.fit([["a"]])
    with pytest.raises(ValueError):
        model.logprob("<s>", ["a"])
    with pytest.raises(ValueError):
        model.bits([["a", "</s>"]])


# --------------------------------------------------------------------------
# xz


def test_xz_conditional_beats_alone():
    train = "".join(TUNES * 3)
    test = TUNES[1].replace("G4:|", "G3A:|")
    r = xz_bits(train, test)
    assert r["test_chars"] == len(test)
    assert r["train_chars"] == len(train)
    assert 0 < r["bits_per_char"] < r["alone_bits_per_char"]
    assert r["bits"] == pytest.approx(r["bits_per_char"] * len(test))
    assert r["dict_size"] == 64 << 20


def test_xz_dictionary_covers_a_long_train_text():
    # Preset 0 has a 256 KiB dictionary; the train text is longer, and the
    # test tune only occurs at its very start.  Only a dictionary enlarged to
    # the joint text can still refer back to it.
    rng = random.Random(3)
    filler = "".join(rng.choice("abcdefgh |\n") for _ in range(400_000))
    test = "".join(TUNES)
    r = xz_bits(test + filler, test, preset=0)
    assert r["dict_size"] >= len(test) * 2 + len(filler) + 1
    assert r["bits_per_char"] < 0.2 * r["alone_bits_per_char"]


def test_xz_rejects_bad_input():
    with pytest.raises(ValueError):
        xz_bits("abc", "")
    with pytest.raises(ValueError):
        xz_bits("abc", "abc", preset=12)


# --------------------------------------------------------------------------
# ngram_bits_per_char


@pytest.mark.parametrize("level", ["char", "token"])
def test_ngram_bits_per_char_counts(level):
    train, test = TUNES[:3] * 2, TUNES[2:]
    r = ngram_bits_per_char(train, test, level, order=4)
    assert r["test_chars"] == sum(len(t) for t in test)
    assert r["test_tokens"] == sum(len(split_tokens(t, level)) + 1 for t in test)
    if level == "char":
        assert r["test_tokens"] == r["test_chars"] + len(test)
    assert r["bits"] > 0
    assert r["bits_per_char"] == pytest.approx(r["bits"] / r["test_chars"])
    assert r["bits_per_token"] == pytest.approx(r["bits"] / r["test_tokens"])
    # the seen tune is cheap, the unseen one is not
    model = KneserNey(4).fit([split_tokens(t, level) for t in train])
    seen, unseen = (model.sequence_bits(split_tokens(t, level)) for t in test)
    assert seen + unseen == pytest.approx(r["bits"])
    assert seen < unseen


def test_no_heavy_imports():
    code = ("import sys, abcgen.baselines; "
            "print(any(m in sys.modules for m in ('tensorflow', 'music21', 'keras')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

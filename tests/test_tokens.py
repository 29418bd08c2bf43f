"""Tokenizers and vocabulary for canonical ABC model text."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from abcgen.abc.tokens import (
    BOS_ID, EOS_ID, LEVELS, PAD_ID, SPECIALS, Vocabulary, count_tokens, split_tokens,
)
from abcgen.errors import InputError, TokenizeError

JIG = ("M:6/8\nL:1/8\nK:Dmix\n"
       "A|:B2c def|(3gfe[DFA]2z^c-|c3 c2B|1A3 A2:|\n"
       "[2A3 A3|]\n")

JIG_TOKENS = [
    "M:6/8", "\n", "L:1/8", "\n", "K:Dmix", "\n",
    "A", "|:", "B", "2", "c", " ", "d", "e", "f", "|",
    "(3", "g", "f", "e", "[", "D", "F", "A", "]", "2", "z", "^c", "-", "|",
    "c", "3", " ", "c", "2", "B", "|1", "A", "3", " ", "A", "2", ":|", "\n",
    "[2", "A", "3", " ", "A", "3", "|]", "\n",
]


# --------------------------------------------------------------------------
# split_tokens


def test_jig_token_level():
    assert split_tokens(JIG, "token") == JIG_TOKENS


def test_jig_char_level():
    assert split_tokens(JIG, "char") == list(JIG)
    assert count_tokens(JIG, "char") == len(JIG)
    assert count_tokens(JIG, "token") == len(JIG_TOKENS)


def test_accidentals_octaves_durations():
    text = "M:none\nL:1/16\nK:Ebmaj\n^^f/2__e'3/2=F,,7/4_B,/4 c''12 C,,|]\n"
    assert split_tokens(text, "token") == [
        "M:none", "\n", "L:1/16", "\n", "K:Ebmaj", "\n",
        "^^f", "/2", "__e'", "3/2", "=F,,", "7/4", "_B,", "/4", " ",
        "c''", "12", " ", "C,,", "|]", "\n"]


def test_bars_repeats_and_endings():
    text = "M:4/4\nL:1/8\nK:Cmaj\n[|C4 D4::E8|1,2F8:|2G8||[3A8|]\n"
    assert split_tokens(text, "token")[6:] == [
        "[|", "C", "4", " ", "D", "4", "::", "E", "8", "|1,2", "F", "8",
        ":|2", "G", "8", "||", "[3", "A", "8", "|]", "\n"]


def test_tuplets_rests_chords_ties():
    text = "K:F#min\n(3:2:2A2B (5:4:5cdefg (2z3[CEG]2-[CEG]|(4[C^E]/2z/2A-A|\n"
    assert split_tokens(text, "token") == [
        "K:F#min", "\n",
        "(3:2:2", "A", "2", "B", " ", "(5:4:5", "c", "d", "e", "f", "g", " ",
        "(2", "z", "3", "[", "C", "E", "G", "]", "2", "-", "[", "C", "E", "G", "]", "|",
        "(4", "[", "C", "^E", "]", "/2", "z", "/2", "A", "-", "A", "|", "\n"]


def test_field_lines_in_body_and_voices():
    text = ("M:4/4\nL:1/8\nK:Gmaj\nV:1\nG4 A4|\nM:3/4\nK:Dmaj\nd6|]\n"
            "V:2\nB,4 C4|\nM:3/4\nK:Dmaj\nF6|]\n")
    toks = split_tokens(text, "token")
    assert toks == [
        "M:4/4", "\n", "L:1/8", "\n", "K:Gmaj", "\n", "V:1", "\n",
        "G", "4", " ", "A", "4", "|", "\n", "M:3/4", "\n", "K:Dmaj", "\n",
        "d", "6", "|]", "\n", "V:2", "\n", "B,", "4", " ", "C", "4", "|", "\n",
        "M:3/4", "\n", "K:Dmaj", "\n", "F", "6", "|]", "\n"]


def test_note_before_repeat_at_line_start_is_not_a_field():
    # 'A:|' at the start of a line is a note and a bar, never an 'A:' field.
    assert split_tokens("A:|\nB::c|\n", "token") == ["A", ":|", "\n", "B", "::", "c", "|", "\n"]


def test_text_without_final_newline_and_empty():
    assert split_tokens("K:Cmaj\nC", "token") == ["K:Cmaj", "\n", "C"]
    assert split_tokens("K:Cmaj", "token") == ["K:Cmaj"]
    assert split_tokens("", "token") == [] == split_tokens("", "char")


@pytest.mark.parametrize("text, symbol, pos, line", [
    ("K:Dmaj\nAB&c|\n", "&", 9, 2),
    ("M:6/8\nK:Dmaj\nABc||2d\n", "2", 18, 3),           # a duration after a bar
    ("K:Dmaj\n[CE|G]\n", "|", 10, 2),                     # a bar inside a chord
    ("K:Dmaj\nA B]\n", "]", 10, 2),                        # close without open
    ("K:Dmaj\nz-A\n", "-", 8, 2),                          # a tie after a rest
    ("K:Dmaj\nAB K:Gmaj\n", "K:", 10, 2),                  # a field mid-line
    ("K:Dmaj\nA[K:G]B\n", "[K:", 8, 2),                    # inline field
    ("W:words\n", "W:", 0, 1),                             # a field the canonical form lacks
    ("K:Dmaj\nAB\r\n", "\r", 9, 2),
])
def test_grammar_errors_name_symbol_position_and_line(text, symbol, pos, line):
    for level in LEVELS:
        with pytest.raises(TokenizeError) as ei:
            split_tokens(text, level)
        e = ei.value
        assert e.position == pos
        assert repr(symbol) in e.message
        assert f"at position {pos} (line {line})" in e.message
        assert isinstance(e, InputError)


def test_unknown_symbol_message_format():
    with pytest.raises(TokenizeError, match=r"^unknown symbol '&' at position 12 \(line 2\)$"):
        split_tokens("K:Dmaj\nABcde&f\n", "token")


def test_unclosed_chord():
    with pytest.raises(TokenizeError, match=r"unclosed chord '\[' at position 7"):
        split_tokens("K:Dmaj\n[CEG", "token")
    with pytest.raises(TokenizeError, match=r"inside the chord opened at position 7"):
        split_tokens("K:Dmaj\n[CEG\n]", "token")


def test_unknown_level():
    with pytest.raises(InputError, match="unknown tokenizer level 'word'"):
        split_tokens("C", "word")


# --------------------------------------------------------------------------
# Vocabulary


@pytest.mark.parametrize("level", LEVELS)
def test_vocabulary_round_trip(level):
    other = "M:3/4\nL:1/8\nK:Gmaj\nG2 B2 d2|[GBd]6|]\n"
    v = Vocabulary.build([JIG, other], level)
    assert v.symbols[:3] == list(SPECIALS)
    assert v.symbols[3:] == sorted(v.symbols[3:])
    assert (v.id_of("<pad>"), v.id_of("<s>"), v.id_of("</s>")) == (PAD_ID, BOS_ID, EOS_ID)
    ids = v.encode(JIG)
    assert ids[0] == BOS_ID and ids[-1] == EOS_ID
    assert len(ids) == count_tokens(JIG, level) + 2
    assert v.decode(ids) == JIG
    assert v.decode(v.encode(other, add_markers=False)) == other
    assert v.decode([PAD_ID, *ids, PAD_ID, PAD_ID]) == JIG
    assert v.level == level


def test_token_vocabulary_contents():
    v = Vocabulary.build([JIG], "token")
    assert len(v) == 3 + len(set(JIG_TOKENS))
    assert "K:Dmix" in v and "(3" in v and "|1" in v and "[2" in v
    assert v.id_of("K:Dmix") == v.symbols.index("K:Dmix")


def test_build_is_deterministic_and_eq():
    a = Vocabulary.build([JIG, "K:Cmaj\nC|\n"], "token")
    b = Vocabulary.build(["K:Cmaj\nC|\n", JIG, JIG], "token")
    assert a == b and hash(a) == hash(b) and a.fingerprint() == b.fingerprint()
    c = Vocabulary.build([JIG], "token")
    assert a != c and a.fingerprint() != c.fingerprint()
    char = Vocabulary(a.symbols, "char")
    assert char != a and char.fingerprint() != a.fingerprint()
    assert len(a.fingerprint()) == 64


def test_oov_error_names_symbol_and_position():
    v = Vocabulary.build([JIG], "token")
    text = "M:6/8\nL:1/8\nK:C#loc\nA|\n"
    with pytest.raises(TokenizeError) as ei:
        v.encode(text)
    assert ei.value.position == 12
    assert ei.value.message == (f"symbol 'K:C#loc' at position 12 is not in the vocabulary "
                                f"(token level, {len(v)} symbols)")
    with pytest.raises(TokenizeError, match=r"symbol '&' at position 3 \(line 1\)"):
        v.encode("ABc&")   # grammar errors come first, at both levels


def test_char_level_oov():
    v = Vocabulary.build(["K:Dmaj\nABC|\n"], "char")
    with pytest.raises(TokenizeError, match=r"^symbol 'z' at position 9 is not in the vocabulary "
                                            r"\(char level, \d+ symbols\)$"):
        v.encode("K:Dmaj\nABz|\n")


def test_decode_rejects_bad_ids():
    v = Vocabulary.build([JIG], "token")
    with pytest.raises(TokenizeError, match=f"id {len(v)} at position 1"):
        v.decode([BOS_ID, len(v)])
    with pytest.raises(TokenizeError, match="id -1 at position 0"):
        v.decode([-1])


def test_id_of_unknown_and_bad_constructions():
    v = Vocabulary.build([JIG], "token")
    with pytest.raises(TokenizeError, match="'K:Cmaj' is not in the vocabulary"):
        v.id_of("K:Cmaj")
    with pytest.raises(InputError, match="first symbols"):
        Vocabulary(["A", "<pad>", "<s>", "</s>"], "token")
    with pytest.raises(InputError, match="repeated"):
        Vocabulary([*SPECIALS, "A", "A"], "token")
    with pytest.raises(InputError, match="unknown level"):
        Vocabulary(list(SPECIALS), "word")


def test_save_load_round_trip(tmp_path):
    v = Vocabulary.build([JIG], "token")
    path = tmp_path / "vocab.json"
    v.save(path)
    assert Vocabulary.load(path) == v
    assert Vocabulary.load(str(path)).fingerprint() == v.fingerprint()
    assert [p.name for p in tmp_path.iterdir()] == ["vocab.json"]   # no temp file left
    d = json.loads(path.read_text())
    assert d["level"] == "token" and d["symbols"] == v.symbols
    v2 = Vocabulary.build(["K:Cmaj\nC|\n"], "char")
    v2.save(path)                                                   # overwrite in place
    assert Vocabulary.load(path) == v2


def test_save_to_missing_folder_fails_cleanly(tmp_path):
    from abcgen.errors import AbcgenError

    with pytest.raises(AbcgenError, match="cannot write vocabulary"):
        Vocabulary.build([JIG], "token").save(tmp_path / "nope" / "v.json")


def _saved(tmp_path, mutate):
    path = tmp_path / "vocab.json"
    Vocabulary.build([JIG], "token").save(path)
    d = json.loads(path.read_text())
    mutate(d)
    path.write_text(json.dumps(d))
    return path


@pytest.mark.parametrize("mutate, why", [
    (lambda d: d.update(version=99), "format version 99"),
    (lambda d: d.pop("format"), "format tag"),
    (lambda d: d.update(level="word"), "unknown level"),
    (lambda d: d["symbols"].append("A"), "repeated symbols"),
    (lambda d: d["symbols"].reverse(), "first symbols"),
    (lambda d: d.update(symbols="abc"), "list of strings"),
    (lambda d: d["symbols"].insert(3, "^^g"), "fingerprint does not match"),
])
def test_load_rejects_bad_content(tmp_path, mutate, why):
    path = _saved(tmp_path, mutate)
    with pytest.raises(InputError, match=why) as ei:
        Vocabulary.load(path)
    assert ei.value.file == str(path)
    assert str(path) in str(ei.value)


def test_load_corrupted_json_names_file(tmp_path):
    path = tmp_path / "vocab.json"
    Vocabulary.build([JIG], "token").save(path)
    path.write_text(path.read_text()[:40])
    with pytest.raises(InputError, match="invalid JSON") as ei:
        Vocabulary.load(path)
    assert str(ei.value).startswith(str(path) + ":")


def test_load_missing_file(tmp_path):
    with pytest.raises(InputError, match="cannot read vocabulary") as ei:
        Vocabulary.load(tmp_path / "missing.json")
    assert "missing.json" in str(ei.value)


# --------------------------------------------------------------------------
# Property: any text assembled from the token grammar splits and round-trips

_acc = st.sampled_from(["", "^", "^^", "_", "__", "="])
_low = st.builds(lambda l, o: l + o, st.sampled_from("abcdefg"), st.sampled_from(["", "'", "''"]))
_high = st.builds(lambda l, o: l + o, st.sampled_from("ABCDEFG"), st.sampled_from(["", ",", ",,"]))
_pitch = st.builds(lambda a, p: a + p, _acc, st.one_of(_low, _high))
_dur = st.sampled_from(["", "", "2", "3", "4", "12", "3/2", "7/4", "/2", "/4"])
_chord = st.builds(lambda ps: "[" + "".join(ps) + "]", st.lists(_pitch, min_size=1, max_size=4))
_tie = st.sampled_from(["", "", "-"])
_note = st.builds(lambda p, d, t: p + d + t, st.one_of(_pitch, _chord), _dur, _tie)
_rest = st.builds(lambda d: "z" + d, _dur)
_tuplet = st.sampled_from(["(3", "(2", "(4", "(3:2:2", "(5:4:5"])
_BARS = ("|", "||", "|]", "[|", "|:", ":|", "::", "|1", ":|2", "|1,2", "[1", "[2")
_bar = st.sampled_from(_BARS)
_item = st.one_of(_note, _note, _rest, _tuplet, st.just(" "), _bar)
_field = st.one_of(
    st.sampled_from(["M:none", "L:1/8", "L:1/16", "K:Ebmaj", "K:F#min", "V:1", "V:2"]),
    st.builds(lambda a, b: f"M:{a}/{b}", st.integers(1, 12), st.sampled_from([2, 4, 8, 16])))


def _body_line(items: list[str]) -> str:
    # Two bar symbols side by side can read as one ('|' '|1' is '||' '1');
    # the writer never puts them together, so neither does the generator.
    out, prev_bar = [], False
    for it in items:
        is_bar = it in _BARS
        if is_bar and prev_bar:
            continue
        out.append(it)
        prev_bar = is_bar
    return "".join(out)


_line = st.one_of(_field, st.builds(_body_line, st.lists(_item, max_size=20)))
_text = st.builds(lambda ls, end: "\n".join(ls) + end,
                  st.lists(_line, max_size=8), st.sampled_from(["\n", ""]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_text, min_size=1, max_size=3))
def test_property_split_and_round_trip(texts):
    for level in LEVELS:
        vocab = Vocabulary.build(texts, level)
        for t in texts:
            toks = split_tokens(t, level)
            assert "".join(toks) == t
            assert all(tok in vocab for tok in toks)
            assert vocab.decode(vocab.encode(t)) == t
    # A token never starts mid-field-line and fields keep their whole line.
    for t in texts:
        for tok in split_tokens(t, "token"):
            assert "\n" not in tok or tok == "\n"
            if tok[:2] in ("M:", "L:", "K:", "V:"):
                assert any(line == tok for line in t.split("\n"))

"""abcgen evaluate on tune books: figures, overlap, structure, novelty, time limits, report."""

import json
import time
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from abcgen import evaluate as ev
from abcgen.novelty import BarIndex, novelty
from abcgen.tunestats import histograms, key_alterations, overlap, tune_stats
from abcgen.workers import send_partial, timed_map

# Hand-written canonical model texts; every figure below was worked out by hand.
A = "M:4/4\nL:1/8\nK:Gmaj\nG|:ABcd e2d2|1 f4 g4:|2 f4 (3gag e2||\n[DF]2-[DFA]2 z4|]\n"
B = "M:6/8\nL:1/8\nK:Ador\n|:EAA ABc|1 BAG E3:|\n[2 BAG A3||\nM:3/4\nc2 =f2 ^g2|]\n"
C = "M:2/4\nL:1/8\nK:Cmaj\nV:1\ncdef|g4|]\nV:2\nC2E2|G,4|]\n"


def test_key_signatures():
    assert key_alterations("Cmaj") == {}
    assert key_alterations("Gmaj") == key_alterations("Ador") == key_alterations("Emin") == {"F": 1}
    assert key_alterations("Dmix") == {"F": 1}
    assert key_alterations("Bbmaj") == {"B": -1, "E": -1}
    assert key_alterations("Gdor") == {"B": -1}             # G dorian = F major
    assert key_alterations("F#min") == {"F": 1, "C": 1, "G": 1}
    assert key_alterations("Flyd") == {}
    assert key_alterations("C#maj") == {L: 1 for L in "FCGDAEB"}
    assert key_alterations("G#maj") == {"F": 2, "C": 1, "G": 1, "D": 1, "A": 1, "E": 1, "B": 1}
    assert key_alterations("none") == {}


def test_tune_a_endings_triplet_tied_chord():
    s = tune_stats(A)
    assert (s["meter"], s["key"]) == ("4/4", "Gmaj")
    # f is F#; the tied [DF] does not sound again in [DFA]: only its A is a new note
    assert s["pitches"] == [67, 69, 71, 72, 74, 76, 74, 78, 79, 78, 79, 81, 79, 76, 62, 66, 69]
    # a chord moves the melody to its top note: e(76) -> F(66) = -10, then F -> A = 3
    assert s["intervals"] == [2, 2, 1, 2, 2, -2, 4, 1, -1, 1, 2, -2, -3, -10, 3]
    assert (s["low"], s["high"], s["span"]) == (62, 81, 19)
    # 1 + 8 + 8 + 8 + 8 eighths = 4.125 bars -> 4; the pickup G alone is no part; :|2 is a repeat
    assert (s["bars"], s["repeats"], s["parts"]) == (4, 1, 2)
    assert s["bar_texts"] == ["G", "ABcde2d2", "f4g4", "f4(3gage2", "[DF]2-[DFA]2z4"]


def test_tune_b_line_ending_meter_change_accidentals():
    s = tune_stats(B)
    assert (s["meter"], s["key"]) == ("6/8", "Ador")
    assert s["pitches"] == [64, 69, 69, 69, 71, 72, 71, 69, 67, 64, 71, 69, 67, 69, 72, 77, 80]
    assert s["intervals"] == [5, 0, 0, 2, 1, -1, -2, -2, -3, 7, -2, -2, 2, 3, 5, 3]
    assert s["span"] == 16
    # the second ending on its own line continues the first section: 2 parts, not 3
    assert (s["bars"], s["repeats"], s["parts"]) == (4, 1, 2)
    assert s["bar_texts"] == ["EAAABc", "BAGE3", "BAGA3", "c2=f2^g2"]


def test_tune_c_two_voices():
    s = tune_stats(C)
    assert s["pitches"] == [72, 74, 76, 77, 79, 60, 64, 55]
    assert s["intervals"] == [2, 2, 1, 2, 4, -9]      # no interval across voices
    assert (s["span"], s["bars"], s["repeats"], s["parts"]) == (24, 2, 0, 1)   # structure: voice 1
    assert s["bar_texts"] == ["cdef", "g4", "C2E2", "G,4"]


def test_histograms_and_overlap():
    h = histograms([tune_stats(t) for t in (A, B, C)])
    assert h["meter"] == Counter({"4/4": 1, "6/8": 1, "2/4": 1})
    assert h["parts"] == Counter({2: 2, 1: 1})
    assert h["repeats"] == Counter({1: 2, 0: 1})
    assert h["bars"] == Counter({4: 2, 2: 1})
    assert h["span"] == Counter({19: 1, 16: 1, 24: 1})
    assert sum(h["pitch"].values()) == 17 + 17 + 8
    assert h["pitch_class"][9] == 3 + 6 + 0      # the A's: 69, 81, 69 in A; six 69 in B
    assert h["interval"][0] == 2
    assert overlap(Counter({"a": 1, "b": 1}), Counter({"a": 3, "c": 1})) == pytest.approx(0.5)
    assert overlap(Counter({1: 2, 2: 2}), Counter({1: 1, 2: 1})) == pytest.approx(1.0)
    assert overlap(Counter({1: 1}), Counter({2: 5})) == 0
    assert overlap(Counter(), Counter({2: 5})) is None
    x, y = Counter({0: 3, 1: 1, 5: 4}), Counter({0: 1, 5: 1, 7: 2})
    tvd = 0.5 * sum(abs(x[k] / 8 - y[k] / 4) for k in set(x) | set(y))
    assert overlap(x, y) == pytest.approx(1 - tvd)


def test_novelty_exact_runs():
    train = [list("abcdefgh"), list("xyzabq"), list("mnop")]
    idx = BarIndex(train)
    assert idx.longest_run(list("abcdefgh")) == 8         # a whole training tune
    assert idx.longest_run(list("QQcdefRR")) == 4         # 4 bars in the middle
    assert idx.longest_run(list("Qzab")) == 3             # z a b of the second tune
    assert idx.longest_run(list("abq")) == 3              # the end of the second tune
    assert idx.longest_run(list("mQ")) == 1
    assert idx.longest_run(list("QRS")) == 0
    assert idx.longest_run([]) == 0
    # runs never join two training tunes: 'g h' ends tune 1, 'x y' starts tune 2
    assert idx.longest_run(list("ghxy")) == 2
    # a run that appears twice in the query, and a repeated bar
    assert idx.longest_run(list("mnopQmnop")) == 4
    assert idx.longest_run(list("aaaa")) == 1
    nv = novelty(idx, [list("abcdefgh"), list("QQcdefRR"), list("QRS"), list("mnQ")])
    assert nv["runs"] == [8, 4, 0, 2]
    assert nv["copies_4_bars_pct"] == 50.0
    assert nv["longest_shared_run_max"] == 8
    assert nv["longest_shared_run_mean"] == 3.5
    assert nv["longest_shared_run_hist"] == {"0": 1, "2": 1, "4": 1, "8": 1}


def test_novelty_repeated_training_material():
    # the same 5 bars in two training tunes, and a tune that repeats its own bars
    train = [list("abcde"), list("zabcdez"), list("ababab")]
    idx = BarIndex(train)
    assert idx.longest_run(list("Qabcde")) == 5
    assert idx.longest_run(list("abababab")) == 6
    assert idx.longest_run(list("zabcdezab")) == 7


def _slow_or_fast(item):
    send_partial({"seen": item})
    if item == "slow":
        time.sleep(30)
    if item == "boom":
        raise ValueError("bad item")
    return item.upper()


def test_timed_map_stops_a_slow_item():
    t0 = time.monotonic()
    out = timed_map(_slow_or_fast, ["a", "slow", "b", "boom", "c"], jobs=2, timeout=1.0,
                    on_timeout=lambda item, p: ("timeout", p),
                    on_error=lambda item, p, why: ("error", why))
    assert time.monotonic() - t0 < 15
    assert out == ["A", ("timeout", {"seen": "slow"}), "B", ("error", "ValueError: bad item"), "C"]


def _write(path: Path, tunes: list[str]) -> Path:
    path.write_text("".join(f"X:{i}\nT:t{i}\n{t}\n" for i, t in enumerate(tunes, 1)), encoding="utf-8")
    return path


def _all_train_corpus(tmp_path: Path, tunes: list[str]) -> str:
    """A corpus manifest whose every tune is in the train split."""
    _write(tmp_path / "ref.abc", tunes)
    (tmp_path / "ref.toml").write_text('name = "ref"\ndescription = "test reference"\n'
                                       'sources = [{ path = "ref.abc" }]\n'
                                       '[split]\nvalid = 0.0\ntest = 0.0\nsalt = "x"\n')
    return str(tmp_path / "ref.toml")


REF_1 = "M:6/8\nL:1/8\nK:Gmaj\n|:GAB cde|dBG A3|GAB cde|dBG G3:|\n"
REF_2 = "M:4/4\nL:1/8\nK:Dmaj\nDFAd f2ed|cABc d4|]\n"
# copies REF_1's first 4 bars, then one of its own
GEN_1 = "M:6/8\nL:1/8\nK:Gmaj\nGAB cde|dBG A3|GAB cde|dBG G3|c3 c3|]\n"
# REF_2 a fifth lower, and one bar of REF_1
GEN_2 = "M:4/4\nL:1/8\nK:Gmaj\nGBdg b2ag|fdef g4|\nM:6/8\ndBG A3|]\n"


def test_evaluate_against_a_corpus(tmp_path):
    ref = _all_train_corpus(tmp_path, [REF_1, REF_2])
    book = _write(tmp_path / "gen.abc", [GEN_1, GEN_2, "M:4/4\nK:Cmaj\n"])
    r = ev.evaluate_tunes(book, jobs=2, against=ref)
    assert r["tunes"] == 3 and r["measured_tunes"] == 2
    assert r["music21_parse_pct"] == pytest.approx(200 / 3, abs=1e-3)
    assert r["music21_failures"] == [{"x": "3", "line": 17, "reason": "the tune has no notes"}]
    assert r["reference_tunes"] == 2
    assert r["histograms"]["meter"] == {"4/4": 1, "6/8": 1}
    assert r["reference_histograms"]["key"] == {"Dmaj": 1, "Gmaj": 1}
    assert r["overlap_meter"] == 1.0
    assert r["overlap_key"] == 0.5                  # Gmaj, Gmaj vs Gmaj, Dmaj
    assert r["histograms"]["bars"] == {"3": 1, "5": 1}
    assert r["reference_histograms"]["bars"] == {"2": 1, "4": 1}
    assert r["overlap_bars"] == 0.0
    assert r["histograms"]["repeats"] == {"0": 2}
    assert r["reference_histograms"]["repeats"] == {"0": 1, "1": 1}
    assert r["overlap_repeats"] == 0.5
    assert (r["mean_bars"], r["reference_mean_bars"]) == (4.0, 3.0)
    # novelty: GEN_1 shares 4 bars of REF_1; GEN_2 only 'dBG A3' (its transposed bars do not count)
    assert r["longest_shared_run_hist"] == {"1": 1, "4": 1}
    assert r["copies_4_bars_pct"] == 50.0
    assert r["longest_shared_run_max"] == 4
    # the reference figures come from the cache the second time, unchanged
    r2 = ev.evaluate_tunes(book, jobs=1, against=ref)
    assert r2 == r


def test_a_tune_past_the_time_limit_is_a_failure(tmp_path, monkeypatch):
    import abcgen.abc.reader as reader

    real = reader.parse_abc

    def slow_on_x2(text, **kw):
        if kw.get("x") == "2":
            time.sleep(60)
        return real(text, **kw)

    monkeypatch.setattr(reader, "parse_abc", slow_on_x2)   # inherited by the forked workers
    book = _write(tmp_path / "b.abc", [REF_2, REF_2.replace("K:Dmaj", "K:Gmaj"), REF_1])
    t0 = time.monotonic()
    r = ev.evaluate_tunes(book, jobs=2, timeout=1.0)
    assert time.monotonic() - t0 < 30
    assert r["music21_timeouts"] == 1
    assert r["music21_parse_pct"] == pytest.approx(200 / 3, abs=1e-3)
    assert [f["x"] for f in r["music21_failures"]] == ["2"]
    assert "did not finish within 1 s" in r["music21_failures"][0]["reason"]
    if "abc2midi_ok_pct" in r:   # abc2midi's verdict was sent before music21 started
        assert r["abc2midi_ok_pct"] == 100.0


def test_cli_json_and_report(tmp_path):
    from abcgen.cli import app

    ref = _all_train_corpus(tmp_path, [REF_1, REF_2])
    book = _write(tmp_path / "gen.abc", [GEN_1, GEN_2])
    out = tmp_path / "rep"
    res = CliRunner().invoke(app, ["evaluate", str(book), "--against", ref, "-O", str(out), "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output.strip().splitlines()[-1])
    for k in ("tunes", "music21_parse_pct", "complete_bars", "wrong_bars", "bars_right_pct",
              "overlap_pitch_class", "overlap_interval", "overlap_span", "copies_4_bars_pct",
              "longest_shared_run_max", "mean_bars", "mean_parts", "mean_repeats"):
        assert k in d, k
    assert d["tunes"] == 2 and d["copies_4_bars_pct"] == 50.0
    assert json.loads((out / "report.json").read_text()) == d
    md = (out / "report.md").read_text()
    assert "| tunes copying 4 or more consecutive bars | 50.00 % |" in md
    for png in ("meter", "key", "pitch_class", "pitch", "span", "interval", "bars", "repeats", "parts",
                "novelty"):
        assert f"![{png}.png]({png}.png)" in md
        assert (out / f"{png}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]   # no temporary files left


def test_cli_against_none_and_bad_options(tmp_path):
    from abcgen.cli import app

    book = _write(tmp_path / "gen.abc", [GEN_1])
    res = CliRunner().invoke(app, ["evaluate", str(book), "--against", "none", "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output.strip().splitlines()[-1])
    assert "overlap_meter" not in d and d["histograms"]["meter"] == {"6/8": 1}
    res = CliRunner().invoke(app, ["evaluate", str(book), "--timeout", "0"])
    assert res.exit_code == 2 and "--timeout must be positive" in res.output
    res = CliRunner().invoke(app, ["evaluate", str(tmp_path / "missing.abc"), "--against", "none"])
    assert res.exit_code == 2 and "missing.abc" in res.output

"""Corpus preparation: manifests, canonical tunes, duplicates, stable split, cache."""

import json
from pathlib import Path

import pytest

from abcgen import corpus
from abcgen.abc.writer import model_text
from abcgen.errors import CorpusError

MINI = Path(__file__).parent / "data" / "minicorpus"


def test_builtin_manifests():
    names = corpus.builtin_names()
    assert {"folk", "essenFolksong", "oneills1850", "ryansMammoth", "airdsAirs", "miscFolk"} <= set(names)
    m = corpus.load_manifest("folk")
    assert [s["music21"] for s in m.sources] == ["essenFolksong", "oneills1850", "ryansMammoth",
                                                  "airdsAirs", "miscFolk"]
    files = corpus.source_files(corpus.load_manifest("miscFolk"))
    assert len(files) == 2 and all(f.suffix == ".abc" for _, f in files)


def test_unknown_corpus_names_the_choices():
    with pytest.raises(CorpusError, match="unknown corpus 'nosuch'.*folk"):
        corpus.load_manifest("nosuch")


def test_bad_manifest(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("name = 'x'\nsources = [{ ftp = 'x' }]\n")
    with pytest.raises(CorpusError, match="bad.toml"):
        corpus.load_manifest(str(p))


def test_prepare_folder(tmp_path):
    prep = corpus.prepare(str(MINI), jobs=1, progress=False)
    st = prep.stats
    assert st["tunes_found"] == 6
    assert st["parsed"] == 5 and st["failed"] == 1
    (fail,) = st["failures"]
    assert fail["x"] == "4" and fail["file"].endswith("book.abc") and "no notes" in fail["reason"]
    assert st["duplicates"] == 1  # X:2 is X:1 under another title
    assert st["unique_tunes"] == 4
    assert sum(s["tunes"] for s in st["splits"].values()) == 4
    assert st["meters"] == {"6/8": 1, "4/4": 1, "3/4": 1, "2/4": 1}
    assert st["keys"]["Ador"] == 1 and st["keys"]["Amaj"] == 1
    for s in corpus.SPLITS:
        d = st["splits"][s]
        texts = prep.texts(s)
        assert d["chars"] == sum(len(t) for t in texts) == d["char_tokens"]
    assert st["vocab_size"]["char"] > 10


def test_split_is_by_content_not_order(tmp_path):
    m = corpus.Manifest(name="x", description="", sources=[], valid=0.3, test=0.3)
    texts = [f"M:4/4\nL:1/8\nK:Cmaj\nC{n}|\n" for n in range(2, 200)]
    a = [corpus.split_of(t, m) for t in texts]
    b = [corpus.split_of(t, m) for t in reversed(texts)][::-1]
    assert a == b
    assert {"train", "valid", "test"} == set(a)
    m2 = corpus.Manifest(name="x", description="", sources=[], valid=0.3, test=0.3, salt="other")
    assert [corpus.split_of(t, m2) for t in texts] != a


def test_cache_hit_and_key(tmp_path):
    folder = tmp_path / "tunes"
    folder.mkdir()
    (folder / "a.abc").write_text((MINI / "more.abc").read_text())
    first = corpus.prepare(str(folder), jobs=1, progress=False)
    assert first.stats["cache"]["hit"] is False
    second = corpus.prepare(str(folder), jobs=1, progress=False)
    assert second.stats["cache"]["hit"] is True
    assert second.tunes == first.tunes
    # the cache is keyed by content: an edited source is prepared again
    (folder / "a.abc").write_text((MINI / "more.abc").read_text().replace("A3|]", "A2 z|]"))
    third = corpus.prepare(str(folder), jobs=1, progress=False)
    assert third.stats["cache"]["hit"] is False
    cache_files = {p.name for p in Path(third.cache_dir).iterdir()}
    assert cache_files == {"tunes.json", "stats.json"}  # JSON only, no pickle
    json.loads((Path(third.cache_dir) / "tunes.json").read_text())


def test_transpose_to_c():
    prep = corpus.prepare(str(MINI / "more.abc"), transpose="C", jobs=1, progress=False)
    keys = sorted(model_text(t["abc"]).split("\n")[2] for t in prep.tunes)
    assert keys == ["K:Cdor", "K:Cmaj"]


def test_transpose_all_augments_train_only(tmp_path):
    man = tmp_path / "m.toml"
    man.write_text(f'name = "m"\nsources = [{{ path = "{MINI / "more.abc"}" }}]\n'
                   '[split]\nvalid = 0.0\ntest = 0.5\nsalt = "t"\n')
    prep = corpus.prepare(str(man), transpose="all", jobs=1, progress=False)
    originals = [t for t in prep.tunes if not t.get("transposed")]
    assert sorted(t["split"] for t in originals) == ["test", "train"]
    assert len(prep.split("train")) == 12 and len(prep.split("test")) == 1
    keys = {model_text(t["abc"]).split("\n")[2][2:-3] for t in prep.split("train")}
    assert len(keys) == 12  # twelve different tonics
    assert all(t["split"] == "train" for t in prep.tunes if t.get("transposed"))


def test_book_entry():
    t = {"abc": "X:1\nT:Air\nM:3/4\nL:1/4\nK:Ador\nA B c|\n", "title": "Air"}
    assert corpus.book_entry(t, 7) == "X:7\nT:Air\nM:3/4\nL:1/4\nK:Ador\nA B c|\n"


def test_code_closure_covers_every_module_canonicalization_runs(tmp_path):
    """The cache key hashes the reader, writer and whatever they import: every abcgen module that
    canonicalizing a tune loads, also inside functions, must be in the closure it hashes."""
    import subprocess
    import sys

    script = (
        "import sys, json\n"
        "from abcgen import corpus\n"
        "from abcgen.abc.reader import Tune\n"
        "before = set(sys.modules)\n"
        "corpus.canonicalize_item(('tune', Tune('X:1\\nM:6/8\\nK:G\\nGAB c2d|]\\n', 'f.abc', '1', 1)))\n"
        "print(json.dumps(sorted(m for m in set(sys.modules) - before if m.startswith('abcgen'))))\n"
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    loaded = {m.split(".", 1)[1].replace(".", "/") for m in json.loads(r.stdout.strip().splitlines()[-1])}
    closure = corpus.code_closure(corpus.CANON_CODE)
    assert "abc/reader.py" in closure and "abc/writer.py" in closure and not any(m.startswith("cli/") for m in closure)
    for m in loaded:
        assert f"{m}.py" in closure or f"{m}/__init__.py" in closure or m in ("abc",), m


def test_shipped_corpus_is_taken_only_under_its_own_key(tmp_path, monkeypatch):
    folder = tmp_path / "tunes"
    folder.mkdir()
    for f in ("more.abc", "book.abc"):
        (folder / f).write_text((MINI / f).read_text())
    cold = corpus.prepare(str(folder), jobs=1, use_cache=False, progress=False)
    shipped = corpus.ship(str(folder), tmp_path / "tunes.prepared.json.xz", jobs=1)
    assert shipped.read_bytes()[:6] == b"\xfd7zXZ\x00"  # xz, no pickle
    monkeypatch.setattr(corpus, "shipped_path", lambda name: shipped)
    monkeypatch.setenv("ABCGEN_CACHE", str(tmp_path / "cache"))
    warm = corpus.prepare(str(folder), jobs=1, progress=False)
    assert warm.stats["cache"]["shipped"] is True
    assert warm.tunes == cold.tunes                       # file paths restored from indices
    assert warm.stats["failures"] == cold.stats["failures"]
    assert {k: v for k, v in warm.stats.items() if k not in ("cache", "wall_s")} == \
        {k: v for k, v in cold.stats.items() if k not in ("cache", "wall_s")}
    assert corpus.prepare(str(folder), jobs=1, progress=False).stats["cache"]["hit"] is True
    # another source (or code) is another key: prepared from the sources, not the shipped file
    (folder / "more.abc").write_text((MINI / "more.abc").read_text().replace("A3|]", "A2 z|]"))
    again = corpus.prepare(str(folder), jobs=1, progress=False)
    assert "shipped" not in again.stats["cache"] and again.stats["cache"]["hit"] is False


@pytest.mark.parametrize("elapsed,done,total,want", [
    (0.5, 10, 100, ""),                       # too early to say
    (10.0, 0, 100, ""),
    (10.0, 50, 100, "about 10 s left"),
    (30.0, 10, 100, "about 4 min 30 s left"),
    (60.0, 1, 200, "about 3 h 19 min left"),
    (10.0, 100, 100, ""),
])
def test_time_left(elapsed, done, total, want):
    assert corpus.time_left(elapsed, done, total) == want


def test_prepare_rebars_and_keeps_out_by_reason(tmp_path):
    folder = tmp_path / "tunes"
    folder.mkdir()
    (folder / "book.abc").write_text(
        "X:1\nT:Jig in 12/8 bars\nM:6/8\nL:1/8\nK:D\n|:ABc def ABc def:|\n\n"
        "X:2\nT:Shifted\nM:3/4\nL:1/8\nK:C\nC2 D2 E2 F2|G2 A2 B2 c2|d4 e2|]\n\n"
        "X:3\nT:Meter change in the source\nM:2/4\nL:1/8\nK:G\nGABc|d4|\nM:3/4\nd2 c2 B2|A6|]\n")
    prep = corpus.prepare(str(folder), jobs=1, progress=False, use_cache=False)
    st = prep.stats
    assert (st["tunes_found"], st["parsed"], st["unique_tunes"]) == (3, 2, 2)
    assert st["kept_out"] == {"bars do not fit the meter and new bar lines would shift the rest of a section": 1}
    assert st["meter_changes"] == 1 and st["key_changes"] == 0
    jig = next(t["abc"] for t in prep.tunes if "12/8" in t["abc"])
    assert jig.endswith("K:Dmaj\n|:ABc def|ABc def:|\n")


def test_the_shipped_folk_corpus_is_current_and_is_what_prepare_makes():
    """The package ships the prepared built-in corpus (corpora/folk.prepared.json.xz) so that a
    fresh install needs no cold prepare; it must be keyed by today's sources and code, and its
    tunes must be what canonicalizing their sources gives now (a sample of 60)."""
    import lzma

    path = corpus.shipped_path("folk")
    assert path.is_file()
    assert path.stat().st_size < 3_000_000                    # compact
    m = corpus.load_manifest("folk")
    files = corpus.source_files(m)
    data = json.loads(lzma.decompress(path.read_bytes()))
    assert data["fingerprint"] == corpus.fingerprint(m, files, "none"), (
        "the reader, writer or the sources changed: regenerate the shipped corpus with "
        "python -c \"from abcgen.corpus import ship; ship('folk')\"")
    tunes = data["tunes"]
    assert len(tunes) == data["stats"]["unique_tunes"] > 10_000
    books: dict = {}
    for t in tunes[:: len(tunes) // 60][:60]:
        f = files[t["file"]][1]
        if f not in books:
            books[f] = {(tune.x, tune.line): tune for tune in corpus.read_book(f)}
        r = corpus.canonicalize_item(("tune", books[f][(t["x"], t["line"])]))
        assert r["ok"] and r["abc"] == t["abc"], (t["x"], t["line"])
        assert corpus.split_of(model_text(t["abc"]), m) == t["split"]

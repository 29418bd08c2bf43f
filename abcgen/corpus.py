"""Corpora: sources -> canonical tunes -> train/valid/test, cached.

A corpus is named by a manifest in ``corpora/`` (installed as ``abcgen.corpora``)
or given as a folder, file or glob.  ``prepare`` parses every tune in parallel,
writes it as canonical ABC, drops exact duplicates, splits by a stable hash of
the canonical text, and caches the result as JSON in the user's cache
directory, keyed by the bytes of the sources, the manifest, the options and the
abcgen version, so a second run only reads the cache.
"""

from __future__ import annotations

import glob as globmod
import hashlib
import json
import os
import re
import sys
import time
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from . import __version__
from .abc.reader import Tune, read_book
from .abc.writer import model_text
from .errors import AbcgenError, CorpusError
from .fileio import atomic_write_text

SPLITS = ("train", "valid", "test")
ABC_EXTS = {".abc"}
SCORE_EXTS = {".mid", ".midi", ".musicxml", ".xml", ".mxl"}
TRANSPOSE_CHOICES = ("none", "C", "all")
CACHE_FORMAT = 1
# The modules whose code decides a tune's canonical text, with everything they import from
# abcgen (see code_closure): a change to any of them makes a new cache instead of stale tunes.
CANON_CODE = ("abc/reader.py", "abc/writer.py", "abc/tokens.py", "transpose.py")
# ... and, for a corpus with MIDI or MusicXML files, the code that reads those.
SCORE_CODE = ("convert.py",)


@dataclass
class Manifest:
    name: str
    description: str
    sources: list
    valid: float = 0.05
    test: float = 0.05
    salt: str = "abcgen-1"
    base: Path = field(default_factory=Path.cwd)
    text: str = ""


def builtin_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("abcgen.corpora").iterdir()
                  if p.name.endswith(".toml"))


def _manifest_from_toml(text: str, origin: str, base: Path) -> Manifest:
    try:
        d = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise CorpusError(f"bad manifest: {e}", file=origin) from None
    sources = d.get("sources")
    if not isinstance(sources, list) or not sources:
        raise CorpusError("a manifest needs a non-empty 'sources' list", file=origin)
    for s in sources:
        if not isinstance(s, dict) or len(s) != 1 or next(iter(s)) not in ("music21", "path", "glob"):
            raise CorpusError(f"a source is one of {{music21 = ...}}, {{path = ...}}, {{glob = ...}}; "
                              f"got {s!r}", file=origin)
    split = d.get("split", {})
    valid, test = float(split.get("valid", 0.05)), float(split.get("test", 0.05))
    if not (0 <= valid < 1 and 0 <= test < 1 and valid + test < 1):
        raise CorpusError("split shares must be in [0, 1) and sum below 1", file=origin)
    return Manifest(name=str(d.get("name", Path(origin).stem)), description=str(d.get("description", "")),
                    sources=sources, valid=valid, test=test, salt=str(split.get("salt", "abcgen-1")),
                    base=base, text=text)


def load_manifest(spec: str) -> Manifest:
    """A corpus name, a manifest file, or a folder/file/glob of tunes."""
    if spec in builtin_names():
        res = resources.files("abcgen.corpora") / f"{spec}.toml"
        return _manifest_from_toml(res.read_text("utf-8"), f"corpora/{spec}.toml", Path.cwd())
    p = Path(spec).expanduser()
    if p.suffix == ".toml" and p.is_file():
        return _manifest_from_toml(p.read_text("utf-8"), str(p), p.parent)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(p).strip("/")) or "corpus"
    if p.exists():
        return Manifest(name=name, description=f"tunes under {p}", sources=[{"path": str(p)}], text=str(p))
    if any(ch in spec for ch in "*?["):
        return Manifest(name=name, description=f"tunes matching {spec}", sources=[{"glob": spec}], text=spec)
    raise CorpusError(f"unknown corpus {spec!r}: not one of {', '.join(builtin_names())}, "
                      "nor an existing file, folder or glob")


def music21_collection(name: str) -> Path:
    import music21

    d = Path(music21.__file__).parent / "corpus" / name
    if not d.is_dir():
        raise CorpusError(f"music21's corpus has no collection {name!r} (looked in {d})")
    return d


def _tune_files(p: Path) -> list[Path]:
    exts = ABC_EXTS | SCORE_EXTS
    if p.is_dir():
        return sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in exts)
    return [p]


def source_files(m: Manifest) -> list[tuple[str, Path]]:
    """(source label, file) in manifest order, files sorted within a source."""
    out = []
    for s in m.sources:
        kind, val = next(iter(s.items()))
        if kind == "music21":
            files = [f for f in _tune_files(music21_collection(val)) if f.suffix.lower() in ABC_EXTS]
            label = val
        elif kind == "path":
            p = Path(val).expanduser()
            p = p if p.is_absolute() else (m.base / p)
            if not p.exists():
                raise CorpusError(f"source path does not exist: {p}")
            files, label = _tune_files(p), str(val)
        else:
            pattern = str(Path(val).expanduser())
            if not os.path.isabs(pattern):
                pattern = str(m.base / pattern)
            files = sorted(Path(f) for f in globmod.glob(pattern, recursive=True) if Path(f).is_file())
            if not files:
                raise CorpusError(f"no file matches {val!r}")
            label = str(val)
        out.extend((label, f) for f in files)
    if not out:
        raise CorpusError(f"corpus {m.name!r} has no tune files")
    return out


# --------------------------------------------------------------------------
# Work done in the worker processes


def _category(reason: str) -> str:
    """A failure reason without its specifics, for counting."""
    m = re.match(r"music21 cannot parse this tune \((\w+)", reason)
    if m:
        return f"music21 parse error ({m.group(1)})"
    return re.sub(r"\d+", "N", reason.split(":")[0])[:80]


def canonicalize_item(item: tuple, transpose: str = "none") -> dict:
    """One tune (or score file) -> canonical ABC, or the reason it failed.  Runs in workers."""
    kind, payload = item
    try:
        if kind == "tune":
            from .abc.reader import parse_tune

            tune: Tune = payload
            score = parse_tune(tune, rebar=True)   # bars moved to fit M:, or kept out
            title = tune.title
        else:
            from .convert import load_score

            score = load_score(Path(payload))
            title = Path(payload).stem
        from .abc.writer import write_abc
        from .transpose import transpose_all, transpose_to_c

        if transpose == "C":
            score = transpose_to_c(score)
        abc = write_abc(score, index=1, title=title)
        extra = []
        if transpose == "all":
            extra = [write_abc(s, index=1, title=title) for s in transpose_all(score)]
        from .abc.tokens import split_tokens

        # A tune the tokenizers cannot read would stop training on the whole corpus:
        # it fails here, counted and listed like a tune music21 cannot parse.
        for text in [abc] + extra:
            split_tokens(model_text(text), "token")
        return {"ok": True, "abc": abc, "extra": extra}
    except AbcgenError as e:
        return {"ok": False, "reason": e.message, "category": _category(e.message)}
    except Exception as e:  # a music21 failure outside the parser (e.g. transposition)
        msg = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        return {"ok": False, "reason": msg, "category": f"error ({type(e).__name__})"}


def _work(args):
    item, transpose = args
    return canonicalize_item(item, transpose)


def parallel_map(fn, items: list, jobs: int = 0, progress: str | None = None, chunksize: int = 8):
    """Ordered map over worker processes with a progress line on stderr."""
    import multiprocessing as mp

    jobs = jobs or os.cpu_count() or 1
    bar = Progress(progress, len(items)) if progress else None
    results = []
    if jobs == 1 or len(items) < 2 * chunksize:
        for it in items:
            results.append(fn(it))
            if bar:
                bar.step()
    else:
        ctx = mp.get_context("fork") if sys.platform != "win32" else mp.get_context()
        with ctx.Pool(jobs) as pool:
            for r in pool.imap(fn, items, chunksize=chunksize):
                results.append(r)
                if bar:
                    bar.step()
    if bar:
        bar.done()
    return results


def time_left(elapsed: float, done: int, total: int) -> str:
    """The rest of the work at the rate so far, for a progress line: '', 'about 40 s left', ..."""
    if done <= 0 or elapsed < 1.0 or done >= total:
        return ""
    rest = elapsed / done * (total - done)
    if rest < 60:
        return f"about {max(1, round(rest))} s left"
    if rest < 3600:
        return f"about {int(rest // 60)} min {int(rest % 60):02d} s left"
    return f"about {int(rest // 3600)} h {int(rest % 3600 // 60):02d} min left"


class Progress:
    """A one-line progress bar with the time left on stderr; when stderr is not a terminal
    (a log), a line every 30 s and a final line."""

    def __init__(self, label: str, total: int):
        self.label, self.total, self.n = label, total, 0
        self.t0 = self.last = time.monotonic()
        self.tty = sys.stderr.isatty()

    def step(self, k: int = 1):
        self.n += k
        now = time.monotonic()
        every = 0.1 if self.tty else 30.0
        if now - self.last > every or (self.tty and self.n == self.total):
            self.last = now
            frac = self.n / self.total if self.total else 1
            fill = int(30 * frac)
            left = time_left(now - self.t0, self.n, self.total)
            line = (f"{self.label} [{'#' * fill}{'.' * (30 - fill)}] {self.n}/{self.total} "
                    f"{now - self.t0:5.1f}s" + (f", {left}" if left else ""))
            sys.stderr.write(f"\r{line:<90}" if self.tty else line + "\n")
            sys.stderr.flush()

    def done(self):
        t = time.monotonic() - self.t0
        if self.tty:
            sys.stderr.write("\n")
        else:
            sys.stderr.write(f"{self.label}: {self.n}/{self.total} in {t:.1f}s\n")
        sys.stderr.flush()


# --------------------------------------------------------------------------
# Prepare


@dataclass
class Prepared:
    name: str
    tunes: list  # dicts: abc, split, source, file, x, line, title
    stats: dict
    cache_dir: Path | None = None

    def split(self, name: str) -> list[dict]:
        return [t for t in self.tunes if t["split"] == name]

    def texts(self, name: str) -> list[str]:
        """The model texts of one split (header without X:, T:, Q:)."""
        return [model_text(t["abc"]) for t in self.split(name)]


def cache_root() -> Path:
    base = os.environ.get("ABCGEN_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "abcgen")
    return Path(base)


def fingerprint(m: Manifest, files: list, transpose: str) -> str:
    h = hashlib.sha256()
    h.update(f"abcgen {__version__} cache {CACHE_FORMAT} transpose {transpose}\n".encode())
    scores = any(f.suffix.lower() != ".abc" for _, f in files)
    h.update(_code_fingerprint(CANON_CODE + (SCORE_CODE if scores else ())))
    h.update(m.text.encode())
    h.update(json.dumps([m.valid, m.test, m.salt]).encode())
    for label, f in files:
        h.update(f"{label}\0{f.name}\0".encode())
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def code_closure(modules) -> list[str]:
    """The given package files (paths relative to abcgen/) and every abcgen module they import,
    directly or through others, anywhere in their code (imports inside functions too)."""
    import ast

    here = Path(__file__).parent
    todo, seen = list(modules), set()
    while todo:
        rel = todo.pop()
        if rel in seen:
            continue
        seen.add(rel)
        pkg = Path(rel).parent.parts            # the package the file is in, below abcgen
        for node in ast.walk(ast.parse((here / rel).read_text("utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:      # relative: from the file's package, up level - 1
                    base = list(pkg[:len(pkg) - node.level + 1])
                    mod = base + (node.module.split(".") if node.module else [])
                elif (node.module or "").split(".")[0] == "abcgen":
                    mod = node.module.split(".")[1:]
                else:
                    continue
                targets = [mod] + [mod + [a.name] for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name.split(".")[1:] for a in node.names
                           if a.name.split(".")[0] == "abcgen"]
            else:
                continue
            for t in targets:
                for cand in ("/".join(t) + ".py", "/".join(t + ["__init__.py"])):
                    if cand and not cand.startswith("/") and (here / cand).is_file():
                        todo.append(cand)
    return sorted(seen)


def _code_fingerprint(modules) -> bytes:
    """The bytes of the code that turns a source into canonical text: a change to the
    reader, writer or tokenizer (or anything they import) makes a new cache."""
    here = Path(__file__).parent
    h = hashlib.sha256()
    for rel in code_closure(modules):
        h.update(rel.encode() + b"\0" + (here / rel).read_bytes())
    return h.digest()


def split_of(text: str, m: Manifest) -> str:
    """train/valid/test by SHA-256 of the salted canonical text: stable, order-free."""
    u = int(hashlib.sha256((m.salt + "\0" + text).encode()).hexdigest()[:12], 16) / 16 ** 12
    if u < m.test:
        return "test"
    if u < m.test + m.valid:
        return "valid"
    return "train"


def book_entry(t: dict, index: int) -> str:
    """A prepared tune as an entry of a tune book: X:, T:, then what the model sees."""
    head = f"X:{index}\n" + (f"T:{t['title']}\n" if t.get("title") else "")
    return head + model_text(t["abc"])


def prepare(spec: str = "folk", *, transpose: str = "none", jobs: int = 0,
            use_cache: bool = True, progress: bool = True) -> Prepared:
    if transpose not in TRANSPOSE_CHOICES:
        raise CorpusError(f"--transpose must be one of {', '.join(TRANSPOSE_CHOICES)}, not {transpose!r}")
    m = load_manifest(spec)
    t0 = time.monotonic()
    files = source_files(m)
    fp = fingerprint(m, files, transpose)
    cdir = cache_root() / f"{m.name}-{fp[:16]}"
    if use_cache and (cdir / "tunes.json").is_file() and (cdir / "stats.json").is_file():
        try:
            tunes = json.loads((cdir / "tunes.json").read_text("utf-8"))
            stats = json.loads((cdir / "stats.json").read_text("utf-8"))
            stats["cache"] = {"dir": str(cdir), "hit": True, "wall_s": round(time.monotonic() - t0, 2)}
            return Prepared(m.name, tunes, stats, cdir)
        except (OSError, ValueError):
            pass  # a damaged cache is rebuilt

    shipped = load_shipped(m, files, fp) if use_cache else None
    if shipped is not None:
        tunes, stats = shipped
        stats["wall_s"] = round(time.monotonic() - t0, 1)
        stats["cache"] = {"dir": str(cdir), "hit": False, "shipped": True}
        _write_cache(cdir, tunes, stats)
        return Prepared(m.name, tunes, stats, cdir)

    items, origin = [], []
    per_source: dict = {}
    read_failures = []
    for label, f in files:
        src = per_source.setdefault(label, {"files": 0, "tunes": 0, "parsed": 0, "failed": 0})
        src["files"] += 1
        if f.suffix.lower() in ABC_EXTS:
            try:
                book = read_book(f)
            except AbcgenError as e:
                read_failures.append({"file": str(f), "x": None, "line": None, "reason": e.message,
                                      "category": "unreadable file"})
                src["failed"] += 1
                continue
            for tune in book:
                items.append((("tune", tune), transpose))
                origin.append((label, str(f), tune.x, tune.line, tune.title))
        else:
            items.append((("score", str(f)), transpose))
            origin.append((label, str(f), "1", None, f.stem))
    for label in per_source:
        per_source[label]["tunes"] = sum(1 for o in origin if o[0] == label)

    results = parallel_map(_work, items, jobs, progress=f"prepare {m.name}" if progress else None)

    tunes, failures, seen = [], list(read_failures), {}
    dups = 0
    for (label, f, x, line, title), r in zip(origin, results):
        if not r["ok"]:
            per_source[label]["failed"] += 1
            failures.append({"file": f, "x": x, "line": line, "reason": r["reason"],
                             "category": r["category"]})
            continue
        per_source[label]["parsed"] += 1
        text = model_text(r["abc"])
        if text in seen:
            dups += 1
            continue
        seen[text] = True
        split = split_of(text, m)
        tunes.append({"abc": r["abc"], "split": split, "source": label, "file": f, "x": x,
                      "line": line, "title": title})
        if split == "train":
            for e in r.get("extra", []):
                et = model_text(e)
                if et not in seen:
                    seen[et] = True
                    tunes.append({"abc": e, "split": "train", "source": label, "file": f, "x": x,
                                  "line": line, "title": title, "transposed": True})

    stats = corpus_stats(m, tunes, per_source, failures, dups, transpose)
    stats["wall_s"] = round(time.monotonic() - t0, 1)
    stats["cache"] = {"dir": str(cdir), "hit": False}
    if use_cache:
        _write_cache(cdir, tunes, stats)
    return Prepared(m.name, tunes, stats, cdir)


def _write_cache(cdir: Path, tunes: list, stats: dict) -> None:
    try:
        atomic_write_text(cdir / "tunes.json", json.dumps(tunes, ensure_ascii=False))
        atomic_write_text(cdir / "stats.json", json.dumps(stats, indent=1, ensure_ascii=False))
    except OSError as e:
        print(f"abcgen: warning: cannot write the cache in {cdir}: {e}", file=sys.stderr)


# --------------------------------------------------------------------------
# The prepared built-in corpus shipped in the package
#
# A cold `prepare --corpus folk` reads and rewrites about 12,900 tunes (minutes of CPU).  The
# package ships its result, compressed, under the same cache key: when the key of this machine's
# sources and code equals the shipped one, prepare takes the shipped tunes (seconds) and builds
# nothing; any other source file, manifest or reader/writer code gives another key and the tunes
# are prepared from the sources as before.  File paths are stored as indices into the manifest's
# file list, so the data does not depend on where music21 is installed.


def shipped_path(name: str) -> Path:
    return Path(str(resources.files("abcgen.corpora"))) / f"{name}.prepared.json.xz"


def load_shipped(m: Manifest, files: list, fp: str, path: Path | None = None):
    """(tunes, stats) of the shipped corpus when its key is ``fp``, else None."""
    import lzma

    p = path or shipped_path(m.name)
    try:
        data = json.loads(lzma.decompress(p.read_bytes()))
    except (OSError, ValueError, lzma.LZMAError):
        return None
    if not isinstance(data, dict) or data.get("fingerprint") != fp:
        return None
    paths = [str(f) for _, f in files]
    tunes, stats = data["tunes"], data["stats"]
    for item in tunes + stats.get("failures", []):
        if isinstance(item.get("file"), int):
            item["file"] = paths[item["file"]]
    return tunes, stats


def ship(spec: str = "folk", path: Path | None = None, *, jobs: int = 0) -> Path:
    """Prepare a built-in corpus and write it, compressed, where the package ships it.

    For the maintainers: run after any change to the reader or writer (a test says when).
    """
    import lzma

    from .fileio import atomic_write_bytes

    m = load_manifest(spec)
    files = source_files(m)
    fp = fingerprint(m, files, "none")
    prep = prepare(spec, jobs=jobs, use_cache=False)
    index = {str(f): i for i, (_, f) in enumerate(files)}
    tunes = [dict(t, file=index.get(t["file"], t["file"])) for t in prep.tunes]
    stats = {k: v for k, v in prep.stats.items() if k not in ("cache", "wall_s")}
    stats["failures"] = [dict(f, file=index.get(f["file"], f["file"])) for f in stats["failures"]]
    blob = json.dumps({"fingerprint": fp, "tunes": tunes, "stats": stats},
                      ensure_ascii=False, separators=(",", ":")).encode()
    out = path or shipped_path(m.name)
    atomic_write_bytes(out, lzma.compress(blob, preset=9 | lzma.PRESET_EXTREME))
    return out


def _header_value(abc: str, field_name: str) -> str:
    for ln in abc.split("\n"):
        if ln.startswith(field_name + ":"):
            return ln[len(field_name) + 1:]
    return "?"


KEPT_OUT = "bars do not fit the meter"


def _body_field(abc: str, field_name: str) -> bool:
    """Whether a canonical tune has a field line after its header (a change mid-tune)."""
    body = abc.split("\nK:", 1)[1].split("\n", 1)[1] if "\nK:" in abc else ""
    return any(ln.startswith(field_name + ":") for ln in body.split("\n"))


def corpus_stats(m: Manifest, tunes, per_source, failures, dups, transpose) -> dict:
    from .abc import tokens

    splits = {}
    vocab = {}
    for s in SPLITS:
        texts = [model_text(t["abc"]) for t in tunes if t["split"] == s]
        splits[s] = {"tunes": len(texts), "chars": sum(len(x) for x in texts)}
        for level in tokens.LEVELS:
            n = 0
            for x in texts:
                try:
                    n += tokens.count_tokens(x, level)
                except AbcgenError:
                    pass
            splits[s][f"{level}_tokens"] = n
    train = [model_text(t["abc"]) for t in tunes if t["split"] == "train"]
    for level in tokens.LEVELS:
        try:
            vocab[level] = len(tokens.Vocabulary.build(train, level))
        except AbcgenError as e:
            vocab[level] = f"error: {e}"
    cats = Counter(f["category"] for f in failures)
    kept_out = Counter(f["category"] for f in failures if f["category"].startswith(KEPT_OUT))
    return {
        "corpus": m.name, "description": m.description, "abcgen": __version__,
        "transpose": transpose,
        "sources": per_source,
        "tunes_found": sum(s["tunes"] for s in per_source.values()),
        "parsed": sum(s["parsed"] for s in per_source.values()),
        "failed": len(failures),
        "failure_reasons": dict(cats.most_common()),
        # tunes that parse but whose bars cannot be made to fit their meter (abcgen.abc.rebar)
        "kept_out": dict(kept_out.most_common()),
        # canonical tunes that change meter or key mid-tune (only where the source writes it)
        "meter_changes": sum(1 for t in tunes if _body_field(t["abc"], "M")),
        "key_changes": sum(1 for t in tunes if _body_field(t["abc"], "K")),
        "failures": failures,
        "duplicates": dups,
        "unique_tunes": len(tunes),
        "splits": splits,
        "vocab_size": vocab,
        "meters": dict(Counter(_header_value(t["abc"], "M") for t in tunes).most_common()),
        "keys": dict(Counter(_header_value(t["abc"], "K") for t in tunes).most_common()),
    }


def format_stats(st: dict) -> str:
    lines = [f"corpus {st['corpus']}: {st['description']}"]
    lines.append(f"{'source':<22}{'files':>7}{'tunes':>8}{'parsed':>8}{'failed':>8}")
    for label, s in st["sources"].items():
        lines.append(f"{label[:22]:<22}{s['files']:>7}{s['tunes']:>8}{s['parsed']:>8}{s['failed']:>8}")
    lines.append(f"tunes found {st['tunes_found']}, parsed {st['parsed']}, failed {st['failed']}, "
                 f"exact duplicates dropped {st['duplicates']}, unique {st['unique_tunes']}")
    if st["failed"]:
        lines.append("failures by reason:")
        for r, n in st["failure_reasons"].items():
            lines.append(f"  {n:6d}  {r}")
        for f in st["failures"][:5]:
            where = f["file"] + (f":{f['line']}" if f.get("line") else "") + (f" X:{f['x']}" if f.get("x") else "")
            lines.append(f"  e.g. {where}: {f['reason']}")
        lines.append(f"  (every failure is listed in {st['cache']['dir']}/stats.json)")
    lines.append(f"{'split':<8}{'tunes':>8}{'chars':>11}{'char tok':>11}{'tokens':>11}")
    for s, d in st["splits"].items():
        lines.append(f"{s:<8}{d['tunes']:>8}{d['chars']:>11}{d['char_tokens']:>11}{d['token_tokens']:>11}")
    lines.append(f"vocabulary (train): char {st['vocab_size'].get('char')}, token {st['vocab_size'].get('token')}")
    if st.get("kept_out"):
        lines.append("kept out of training (parsed, but bars cannot be made to fit the meter): "
                     + ", ".join(f"{v} {k}" for k, v in st["kept_out"].items()))
    if "meter_changes" in st:
        lines.append(f"canonical tunes with a meter change {st['meter_changes']}, "
                     f"with a key change {st['key_changes']}")
    lines.append("meters: " + ", ".join(f"{k} {v}" for k, v in list(st["meters"].items())[:10]))
    lines.append("keys: " + ", ".join(f"{k} {v}" for k, v in list(st["keys"].items())[:12]))
    c = st.get("cache", {})
    how = "hit" if c.get("hit") else ("from the prepared corpus shipped in the package"
                                       if c.get("shipped") else "built")
    lines.append(f"cache: {c.get('dir')} ({how}; "
                 f"{c.get('wall_s', st.get('wall_s'))} s)")
    return "\n".join(lines)

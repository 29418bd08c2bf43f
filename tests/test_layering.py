"""The package's layering, read from its imports (ast, nothing is imported).

Every import counts, the ones inside functions too: a lazy import still
ties two modules together.  An import circle is a set of modules that
import each other, directly or through others (a strongly connected
component of the import graph).  The circles known today are listed in
KNOWN_CIRCLES, to be removed as they are undone; any other circle, or a
known one that grows, fails.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "abcgen"

# Circles that other work is undoing: none left (issue 14 undid cli <-> cli_render/cli_serve,
# convert <-> render and train <-> pianoroll_train).
KNOWN_CIRCLES: list = []


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports (``from . import x`` counts x when x is a module)."""
    is_pkg = path.name == "__init__.py"
    here = name.split(".") if is_pkg else name.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [f"{mod}.{a.name}" for a in node.names]   # a name that is no module: mod itself
        else:
            continue
        for t in targets:
            # the deepest module of the package the name points at
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {m: imports_of(m, p, known) for m, p in mods.items()}


def circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict = {}
    low: dict = {}
    stack: list = []
    on_stack: set = set()
    out: list = []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_circle_finder_on_a_known_graph():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": {"e"}, "e": {"d"}, "f": {"a"}}
    assert sorted(map(sorted, circles(g))) == [["a", "b", "c"], ["d", "e"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_the_import_reader_resolves_relative_and_lazy_imports(tmp_path):
    pkg = tmp_path / "abcgen"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "sub" / "__init__.py").write_text("from .one import x\n")
    (pkg / "sub" / "one.py").write_text("from ..errors import E\nfrom . import two\n"
                                        "def f():\n    from abcgen.cli import app\n")
    known = {"abcgen.sub", "abcgen.sub.one", "abcgen.sub.two", "abcgen.errors", "abcgen.cli"}
    assert imports_of("abcgen.sub.one", pkg / "sub" / "one.py", known) == {
        "abcgen.errors", "abcgen.sub.two", "abcgen.cli"}
    assert imports_of("abcgen.sub", pkg / "sub" / "__init__.py", known) == {"abcgen.sub.one"}


def test_no_import_circle_but_the_known_ones():
    found = circles(import_graph())
    new = [sorted(c) for c in found if not any(c <= known for known in KNOWN_CIRCLES)]
    assert not new, f"import circles beyond the known ones: {new}"


@pytest.mark.parametrize("module,forbidden", [
    ("abcgen.runs", {"abcgen.train", "abcgen.pianoroll_train", "abcgen.pianoroll", "abcgen.cli.app"}),
    ("abcgen.train", {"abcgen.pianoroll_train", "abcgen.cli.app"}),
    ("abcgen.pianoroll_train", {"abcgen.train", "abcgen.cli.app"}),
    # the command modules share abcgen.cli.common; nothing imports back into the app
    ("abcgen.cli.common", {"abcgen.cli.app", "abcgen.cli.data", "abcgen.cli.model", "abcgen.cli.studio"}),
    ("abcgen.cli.data", {"abcgen.cli.app", "abcgen.cli.model", "abcgen.cli.studio"}),
    ("abcgen.cli.model", {"abcgen.cli.app", "abcgen.cli.data", "abcgen.cli.studio"}),
    ("abcgen.cli.studio", {"abcgen.cli.app", "abcgen.cli.data", "abcgen.cli.model"}),
    ("abcgen.midi.io", {"abcgen.midi.tracks", "abcgen.midi.meter", "abcgen.midi.quantize",
                        "abcgen.midi.spelling", "abcgen.midi.repeats", "abcgen.midi.transcribe"}),
])
def test_lower_layers_do_not_import_upper_ones(module, forbidden):
    graph = import_graph()
    assert not graph[module] & forbidden, sorted(graph[module] & forbidden)


def test_the_corpus_cache_fingerprints_existing_code():
    """The corpus cache key hashes the code that makes canonical text, found from its imports:
    every file it names exists, and for scores it takes in the whole MIDI package."""
    from abcgen.corpus import CANON_CODE, SCORE_CODE, code_closure

    closure = code_closure(CANON_CODE + SCORE_CODE)
    missing = [rel for rel in CANON_CODE + SCORE_CODE + tuple(closure) if not (PACKAGE / rel).is_file()]
    assert not missing
    midi = sorted(p.relative_to(PACKAGE).as_posix() for p in (PACKAGE / "midi").glob("*.py"))
    assert sorted(rel for rel in closure if rel.startswith("midi/")) == midi

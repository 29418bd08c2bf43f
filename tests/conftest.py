import os
from pathlib import Path

import pytest

RYAN = sorted((Path(__import__("music21").__file__).parent / "corpus" / "ryansMammoth").glob("*.abc"))[:60]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own cache directory: no test reads another's (or the user's) cache."""
    monkeypatch.setenv("ABCGEN_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield


@pytest.fixture(scope="session")
def random_model(tmp_path_factory):
    """A randomly initialised 1x32 model over the vocabulary of 60 real tunes, as .npz."""
    import keras

    from abcgen.abc.reader import parse_abc, read_book
    from abcgen.abc.tokens import Vocabulary
    from abcgen.abc.writer import model_text, write_abc
    from abcgen.model import build_text_model, export_npz

    texts = [model_text(write_abc(parse_abc(t.text))) for f in RYAN for t in read_book(f)]
    vocab = Vocabulary.build(texts, "token")
    keras.utils.set_random_seed(0)
    m = build_text_model(len(vocab), hidden=32, embed_dim=16)
    path = tmp_path_factory.mktemp("rnd") / "random.npz"
    export_npz(m, path, {"vocab": vocab.to_dict()}, dtype="float32")
    return path

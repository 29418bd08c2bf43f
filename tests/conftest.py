import os

import pytest


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own cache directory: no test reads another's (or the user's) cache."""
    monkeypatch.setenv("ABCGEN_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield
